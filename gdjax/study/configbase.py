"""What a config is: `ConfigError`, the names a config may use, and the frozen dataclasses it is read into.

The dataclasses stay dumb (scikit-learn's rule: configuration only stores settings); `Source` and
`Table` are the typed reading of a TOML table that every section reader (`gdjax.study.configcosts`,
`configgrids`, `config`) shares: a getter per type, the keys used remembered, an unknown key refused
with the nearest valid name, every error a `ConfigError` at the key's line.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gdjax import data, rules
from gdjax.options import Execution, Stopping
from gdjax.study.tomltext import dumps, fmt_path, key_lines, line_of
from gdjax.validation import nearest

MODELS = ("linear", "polynomial")


# The losses and test functions a cost names are the cost registry's (gdjax.study.problems.COSTS),
# read when a config is: a cost registered before that is accepted like a built-in one.
FILE_SOURCES = ("csv", "npz")


DATA_SOURCES = (*data.DATASETS, "synthetic", *FILE_SOURCES)


PRECISIONS = ("float32", "float64")


PLOTS = (
    "loss_curves",
    "loss_curves_grid",
    "lr_sweep",
    "contour",
    "contour_grid",
    "fitted_line",
    "accuracy",
)


X_AXES = ("steps", "epochs")


# The [stopping] table is `gdjax.Stopping` key for key; [execution] holds the `gdjax.Execution` fields
# that a file can say (devices and a progress callback are Python objects, set from Python).
STOPPING_KEYS = tuple(f.name for f in dataclasses.fields(Stopping))


EXECUTION_KEYS = ("record_every", "unroll", "layout", "chunk_size", "memory_budget")


RUN_KEYS = ("num_steps", "batch_size", "target", "eval_every")


# Configs written before [stopping] and [execution] existed put these under [run]; they still may.
LEGACY_RUN_KEYS = {
    "tol": "stopping",
    "grad_tol": "stopping",
    "patience": "stopping",
    "divergence_factor": "stopping",
    "record_every": "execution",
    "chunk_size": "execution",
}


RANK_BY = ("final_loss", "test_loss", "accuracy", "test_accuracy")


LABEL = re.compile(r"[A-Za-z0-9_+-]+")  # whole string (fullmatch): "adam\n" is no label


def label_error(label: str) -> str | None:
    """Why `label` cannot name an optimizer or a problem, or None. A label is a file-name-safe word;
    "nan", "inf" and "-inf" are refused too: gdjax's JSON files keep non-finite numbers as those
    strings, so a run's summary would read such a label back as a number."""
    if not LABEL.fullmatch(label):
        return f"labels use letters, digits, '_', '+' and '-' only, got {label!r}"
    if label in ("nan", "inf", "-inf"):
        return f"{label!r} cannot be a label: run files keep non-finite numbers as that string"
    return None


class ConfigError(ValueError):
    """A config that cannot be run, with the key and TOML line it is about.

    `str(err)` reads `FILE:LINE: KEY: MESSAGE`, e.g.
    `lr.toml:12: optimizers[1].grid.learnig_rate: unknown hyperparameter of rule 'momentum'
    (did you mean 'learning_rate'?)`.

    Attributes:
      message: what is wrong and what to do.
      key: dotted path of the offending key (`None` for the file as a whole).
      line: 1-based line in the TOML text where the key (or its table) is, if found.
      source: the file name, or `<string>`.
    """

    def __init__(self, message: str, *, key: str | None = None, line: int | None = None, source=None):
        self.message, self.key, self.line, self.source = message, key, line, source
        where = str(source or "<config>") + (f":{line}" if line else "")
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


ConfigError.__module__ = "gdjax.study.config"  # its public home, where users import it from


@dataclass(frozen=True)
class DataConfig:
    """Where `(X, y)` comes from.

    `source` is an embedded set (`data.DATASETS`), `"synthetic"` (`data.synthetic` with the
    generator fields) or `"csv"` / `"npz"` (a file at the absolute `path`, with column choices).
    Fields that do not apply to the source are `None`.

    `classes` keeps the examples whose target is one of these values and relabels them `0, 1, ...`
    in that order (two digits for a logistic regression). `test_fraction` holds out that fraction
    of the examples, drawn with the study's first seed, as a test set: the runs never see it, and
    its loss (and accuracy) are recorded at every evaluation (`test_loss`, `test_accuracy`). With
    `split_per_seed`, each seed draws its own held-out split instead (its lanes train on their own
    training split).
    """

    source: str
    standardize: bool = False
    path: str | None = None
    target: str | int | None = None
    features: tuple[str | int, ...] | None = None
    exclude: tuple[str | int, ...] | None = None
    x_key: str | None = None
    y_key: str | None = None
    num_examples: int | None = None
    num_features: int | None = None
    noise: float | None = None
    condition_number: float | None = None
    intercept: float | None = None
    seed: int | None = None
    classes: tuple[float, ...] | None = None
    test_fraction: float | None = None
    split_per_seed: bool = False


@dataclass(frozen=True)
class CostConfig:
    """What is minimised: a model with a loss on the data, a classic test function, or the user's own.

    Exactly one of `model` (`"linear"` / `"polynomial"` with `degree`, and `loss`: `"mse"`,
    `"logistic"` for 0/1 targets, `"cross_entropy"` for class indices, or another registered loss),
    `function` (a registered test function, with `dim`, `start` and for the ill-conditioned
    quadratic its `condition_number`) and `callable` is set (`gdjax.study.problems.COSTS` lists them).
    Models start at zero; test functions at `start`.

    `callable` is `"/abs/path/file.py:function"` (relative paths in a file are resolved against the
    config's folder when it is read) or `"module:function"`: `function(params, data) -> scalar`,
    with `data` the `(X, y)` of `[data]` (None without it). Its start `params0` is a list of numbers
    (a vector) or `"file.py:init"` naming `init()` or `init(data)` that returns the params pytree;
    `analytic` optionally names a hand-derived gradient `grad(params, data)` for the gradient check.
    `metrics` names the user's own metrics `metric(params, data) -> scalar` the same way (any kind of
    cost): each is recorded on the training data under its function's name, and with a held-out
    split also as `test_<name>` (a classification callable names its `accuracy` this way).

    `init` (any cost kind) names `init(key) -> params`, a pure JAX function of a PRNG key: every lane
    of seed `s` starts at `init(gdjax.init_key(s))` (`gdjax.Init`). For a model or a test
    function the result must have the shapes of its usual start; a callable cost may give `init`
    instead of `params0`.
    """

    label: str
    model: str | None = None
    degree: int | None = None
    loss: str | None = None
    function: str | None = None
    dim: int | None = None
    condition_number: float | None = None
    start: tuple[float, ...] | None = None
    init_noise: float = 0.0
    callable: str | None = None
    params0: str | tuple[float, ...] | None = None
    analytic: str | None = None
    l2: float | None = None  # model costs: + l2/2 ||w||^2 (ridge, L2-regularised logistic / softmax)
    init: str | None = None  # "file.py:init" / "module:init": init(key) -> params, drawn per seed
    data: DataConfig | None = None  # a suite's problem brings its own data; None: the study's [data]
    metrics: tuple[str, ...] | None = None  # "file.py:fn" / "module:fn" references


@dataclass(frozen=True)
class OptimizerConfig:
    """One update rule and its hyperparameter grid.

    Attributes:
      rule: a name for `rules.get` (`"gd"`, `"adam"`, `"optax.lamb"`, ...).
      label: unique name of this entry in outputs (defaults to the rule's name).
      schedule: step-size schedule of a hand-written rule (`rules.schedule_names()`).
      grid: `(name, value)` pairs; a tuple value is a grid axis (axes are crossed, or zipped with
        `zip_grid`), a scalar is fixed.
      zip_grid: pair the axes element by element instead of crossing them.
      num_steps, batch_size: per-optimizer overrides of `run.num_steps` / `run.batch_size`.
    """

    rule: str
    label: str
    schedule: str | None = None
    grid: tuple[tuple[str, Any], ...] = ()
    zip_grid: bool = False
    num_steps: int | None = None
    batch_size: tuple[int | None, ...] | None = None

    def axes(self) -> dict[str, tuple]:
        """The swept hyperparameters: name -> values."""
        return {k: v for k, v in self.grid if isinstance(v, tuple)}

    def fixed(self) -> dict[str, Any]:
        """The fixed hyperparameters: name -> value."""
        return {k: v for k, v in self.grid if not isinstance(v, tuple)}

    def rule_hyperparameters(self) -> tuple[str, ...]:
        """The names the rule (with its schedule) takes."""
        if self.rule in rules.names():
            return rules.hyperparameters(self.rule, self.schedule)
        return rules.hyperparameters(self.rule)

    def cost_keys(self) -> tuple[str, ...]:
        """Grid keys that are not the rule's: hyperparameters of a callable cost (`costs.hyperparameters`)."""
        names = self.rule_hyperparameters()
        return tuple(k for k, v in self.grid if k not in names and not isinstance(v, bool))

    def sweep_grid(self) -> dict[str, Any]:
        """The grid as `gdjax.sweep` takes it: axes as lists, the schedule as a scalar, a `gdjax.Zip`
        when zipped."""
        from gdjax.sweep import Zip

        grid: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.grid}
        if self.schedule is not None:
            grid["schedule"] = self.schedule
        return Zip(grid) if self.zip_grid else grid

    def num_points(self) -> int:
        """Grid points (before seeds, starts and batch sizes)."""
        sizes = [len(v) for v in self.axes().values()]
        if not sizes:
            return 1
        return sizes[0] if self.zip_grid else math.prod(sizes)


@dataclass(frozen=True)
class RunConfig:
    """Step budget, sampling and the evaluation schedule, shared by every optimizer unless overridden.

    `batch_size` entries are example counts; `None` is the full batch (`"full"` in TOML). `target`
    is a suboptimality `f - f*` for `steps_to_target`. `eval_every` is the evaluation schedule
    (full-data loss, gradient norm, accuracy and test metrics every `eval_every` steps; `None`:
    every step). When runs stop is `ExperimentConfig.stopping`, how they are carried out (recorded
    iterates, chunking, ...) `ExperimentConfig.execution`.
    """

    num_steps: int
    batch_size: tuple[int | None, ...] = (None,)
    target: float | None = None
    eval_every: int | None = None


@dataclass(frozen=True)
class GradcheckConfig:
    """The gradient check run before any optimisation.

    Attributes:
      enabled: whether it runs.
      num_points: the start plus `num_points - 1` random points (every seed's start is added).
      max_examples: the check uses at most this many training examples, drawn without replacement
        with the first seed (what is checked is the cost's gradient code, which a subset exercises
        as the whole does; the step ladder costs 25 evaluations of the cost per coordinate).
    """

    enabled: bool = True
    num_points: int = 3
    max_examples: int = 4096


@dataclass(frozen=True)
class OutputsConfig:
    """Plots to draw and where run folders go.

    Attributes:
      plots: names from `PLOTS`: `loss_curves` / `contour` show the best configuration of each
        optimizer; `loss_curves_grid` / `contour_grid` one figure per optimizer with every grid point
        (for grids of at most 12 points); `lr_sweep` final loss against learning rate; `fitted_line`
        the fitted lines against least squares (one-feature linear models).
      x_axis: `"steps"`, or `"epochs"` (examples processed / number of examples) to compare batch
        sizes at an equal budget of gradient evaluations.
      dir: the folder that holds run folders, relative to the working directory.
      rank_by: the column that picks each optimizer's best configuration (summary table, plots):
        `final_loss` (lowest training loss, the default), `test_loss` (lowest held-out loss), or
        `accuracy` / `test_accuracy` (highest), each a median over seeds.
      tuning_seeds: seeds (a subset of the study's) on which each optimizer's best configuration is
        chosen; the tables, comparisons and profiles then report the chosen configuration on the
        other, fresh seeds only (no selection bias). None: choose and report on every seed.
    """

    plots: tuple[str, ...] = ("loss_curves",)
    x_axis: str = "steps"
    dir: str = "runs"
    rank_by: str = "final_loss"
    tuning_seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment, validated. Build with `load`, `loads` or `from_dict`.

    `stopping` and `execution` are the core's own option objects, read from the `[stopping]` and
    `[execution]` tables key for key (and passed to `gdjax.sweep` as they are). Without a
    `record_every`, iterates are recorded at every evaluation (`eval_every`, else every step).
    `legacy_keys` names the stopping and execution keys the file gave under `[run]`, where configs
    written before those tables existed put them (still accepted).
    """

    name: str
    costs: tuple[CostConfig, ...]
    optimizers: tuple[OptimizerConfig, ...]
    run: RunConfig
    data: DataConfig | None = None
    description: str = ""
    seeds: tuple[int, ...] = (0,)
    precision: str = "float32"
    stopping: Stopping = Stopping()
    execution: Execution = Execution(record_every=1)
    gradcheck: GradcheckConfig = GradcheckConfig()
    outputs: OutputsConfig = OutputsConfig()
    source: str | None = field(default=None, compare=False)
    legacy_keys: frozenset[str] = field(default=frozenset(), compare=False, repr=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)  # key -> line

    def error(self, key: str, message: str) -> ConfigError:
        """A `ConfigError` about `key` (dotted: `"optimizers[1].grid"`) at its line in the text the
        config was read from (`lines`, kept from reading: the file is not read again)."""
        path = tuple(int(p) if p.isdigit() else p for p in key.replace("[", ".").replace("]", "").split("."))
        return ConfigError(message, key=key, line=line_of(self.lines, path), source=self.source or "<config>")

    def key_path(self, name: str) -> str:
        """Where the file sets the stopping or execution key `name`: `"run.<name>"` when it was given
        under `[run]` (the old placement), else `"stopping.<name>"` / `"execution.<name>"`."""
        if name in self.legacy_keys:
            return f"run.{name}"
        return f"stopping.{name}" if name in STOPPING_KEYS else f"execution.{name}"

    @property
    def cost(self) -> CostConfig:
        """The first (usually the only) cost."""
        return self.costs[0]

    @property
    def is_suite(self) -> bool:
        """Whether the config lists `[[problems]]`, each with its own data (a suite)."""
        return any(c.data is not None for c in self.costs)

    def data_of(self, cost: CostConfig) -> DataConfig | None:
        """The data a cost reads: its problem's own `data`, else the study's `[data]`."""
        return cost.data if cost.data is not None else self.data

    def data_key(self, cost: CostConfig) -> str:
        """Where that data is in the config (`data`, or `problems[2].data`), for error messages."""
        return f"problems[{self.costs.index(cost)}].data" if cost.data is not None else "data"

    def to_dict(self) -> dict:
        """The resolved config as plain TOML-able values (`None` fields left out)."""

        def clean(obj) -> dict:
            out = {}
            for f in dataclasses.fields(obj):
                if f.name in ("source", "legacy_keys", "lines") and isinstance(obj, ExperimentConfig):
                    continue
                value = getattr(obj, f.name)
                if value is None:
                    continue
                if dataclasses.is_dataclass(value):
                    value = clean(value)
                elif isinstance(value, tuple):
                    value = list(value)
                out[f.name] = value
            return out

        d = {"name": self.name}
        if self.description:
            d["description"] = self.description
        d["precision"] = self.precision
        d["seeds"] = list(self.seeds)
        if self.data is not None:
            d["data"] = clean(self.data)
        if self.is_suite:
            d["problems"] = [clean(c) for c in self.costs]
        else:
            d["cost"] = [clean(c) for c in self.costs] if len(self.costs) > 1 else clean(self.cost)
        d["run"] = clean(self.run)
        d["run"]["batch_size"] = [_batch_to_toml(b) for b in self.run.batch_size]
        d["stopping"] = clean(self.stopping)
        for key in OFF_KEYS:
            if getattr(self.stopping, key) is None:
                d["stopping"][key] = False  # written as `false`, read back as None
        d["execution"] = {k: v for k, v in clean(self.execution).items() if k in EXECUTION_KEYS}
        d["optimizers"] = []
        for opt in self.optimizers:
            o = clean(opt)
            o["grid"] = {k: list(v) if isinstance(v, tuple) else v for k, v in opt.grid}
            if opt.batch_size is not None:
                o["batch_size"] = [_batch_to_toml(b) for b in opt.batch_size]
            if not opt.zip_grid:
                del o["zip_grid"]
            d["optimizers"].append(o)
        d["gradcheck"] = clean(self.gradcheck)
        d["outputs"] = clean(self.outputs)
        return d

    def to_toml(self) -> str:
        """`dumps(self)`: the resolved config as TOML text."""
        return dumps(self.to_dict())


def _batch_to_toml(b):
    return "full" if b is None else b


OFF_KEYS = ("divergence_factor",)  # stopping keys that `false` turns off (None in `gdjax.Stopping`)


class Source:
    """The TOML text a config came from, for error messages."""

    def __init__(self, text: str | None, name: str | None, base_dir: str | None):
        self.text, self.name, self.base_dir = text, name, base_dir
        self._lines: dict[str, int] | None = None

    @property
    def lines(self) -> dict[str, int]:
        """Each key's line in the text (`{}` without text), computed once."""
        if self._lines is None:
            self._lines = {} if self.text is None else key_lines(self.text)
        return self._lines

    def line(self, path: tuple) -> int | None:
        return line_of(self.lines, path)

    def error(self, path: tuple, message: str) -> ConfigError:
        return ConfigError(message, key=fmt_path(path) or None, line=self.line(path), source=self.name)


REQUIRED = object()


def toml_type(value) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value!r})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__} ({value})"


class Table:
    """One TOML table being read: typed getters that remember which keys were used."""

    def __init__(self, src: Source, path: tuple, values: dict):
        self.src, self.path, self.values = src, path, values
        self.known: list[str] = []

    def fail(self, key, message: str):
        path = self.path + ((key,) if isinstance(key, str | int) else tuple(key or ()))
        raise self.src.error(path, message)

    def take(self, key: str, default=REQUIRED):
        self.known.append(key)
        if key in self.values:
            return self.values[key]
        if default is REQUIRED:
            # A misspelt required key reads better as "unknown key, did you mean" than as missing.
            unknown = [k for k in self.values if k not in self.known]
            if nearest(key, unknown):
                typo = next(k for k in unknown if nearest(k, [key]))
                where = f"[{fmt_path(self.path)}]" if self.path else "the top level"
                self.fail(typo, f"unknown key {typo!r} in {where} (did you mean {key!r}?)")
            where = f"[{fmt_path(self.path)}]" if self.path else "the top level"
            self.fail(key, f"missing required key {key!r} in {where}")
        return default

    def finish(self, hint: str = ""):
        for key in self.values:
            if key not in self.known:
                where = f"[{fmt_path(self.path)}]" if self.path else "the top level"
                self.fail(key, f"unknown key {key!r} in {where}{hint}{nearest(key, self.known)}")

    # typed getters ---------------------------------------------------------------------------
    def str(self, key, default=REQUIRED, *, choices=None, what="value"):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        if not isinstance(v, str):
            self.fail(key, f"expected a string, got {toml_type(v)}")
        if choices is not None and v not in choices:
            self.fail(key, f"unknown {what} {v!r}{nearest(v, choices)}; choose from {', '.join(choices)}")
        return v

    def bool(self, key, default=REQUIRED):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        if not isinstance(v, bool):
            self.fail(key, f"expected true or false, got {toml_type(v)}")
        return v

    def int(self, key, default=REQUIRED, *, minimum=None, maximum=None):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        return self.check_int(key, v, minimum=minimum, maximum=maximum)

    def check_int(self, key, v, *, minimum=None, maximum=None):
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, f"expected an integer, got {toml_type(v)}")
        if minimum is not None and v < minimum:
            self.fail(key, f"must be an integer >= {minimum}, got {v}")
        if maximum is not None and v > maximum:
            self.fail(key, f"must be an integer <= {maximum}, got {v}")
        return v

    def float(self, key, default=REQUIRED, *, positive=False, minimum=None, above=None):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        return self.check_float(key, v, positive=positive, minimum=minimum, above=above)

    def check_float(self, key, v, *, positive=False, minimum=None, above=None):
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.fail(key, f"expected a number, got {toml_type(v)}")
        v = float(v)
        if not math.isfinite(v):
            self.fail(key, f"must be finite, got {v}")
        if positive and not v > 0:
            self.fail(key, f"must be > 0, got {v!r}")
        if minimum is not None and v < minimum:
            self.fail(key, f"must be >= {minimum}, got {v!r}")
        if above is not None and not v > above:
            self.fail(key, f"must be > {above}, got {v!r}")
        return v

    def table(self, key, default=REQUIRED) -> Table | None:
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        if not isinstance(v, dict):
            self.fail(key, f"expected a table ([{fmt_path(self.path + (key,))}]), got {toml_type(v)}")
        return Table(self.src, self.path + (key,), v)

    def list(self, key, default=REQUIRED, *, scalar_ok=False):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        if scalar_ok and not isinstance(v, list | dict):
            return [v]
        if not isinstance(v, list):
            self.fail(key, f"expected an array, got {toml_type(v)}")
        return v


def read_batch_sizes(t: Table, key: str, default) -> tuple[int | None, ...] | None:
    raw = t.list(key, default, scalar_ok=True)
    if raw is None or raw is default:
        return raw
    if not raw:
        t.fail(key, "needs at least one batch size")
    out = []
    for i, b in enumerate(raw):
        where = (key, i) if len(raw) > 1 else key
        if b == "full":
            out.append(None)
        elif isinstance(b, str):
            t.fail(where, f'a batch size is an integer >= 1 or "full", got {b!r}')
        else:
            out.append(t.check_int(where, b, minimum=1))
    return tuple(out)
