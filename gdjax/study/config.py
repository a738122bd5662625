"""Experiment configs: TOML read into frozen dataclasses and checked at the edge.

A config names the data, the cost, one or more optimizers with their hyperparameter grids, the run
settings (steps, batch sizes, evaluation schedule), when runs stop (`[stopping]`, read into a
`gdjax.Stopping`) and how they are carried out (`[execution]`, read into a `gdjax.Execution`), seeds,
precision and outputs. `load(path)` reads
and checks everything a person can get wrong before anything is traced, and raises one `ConfigError`
naming the key (`optimizers[1].grid.learnig_rate`), the line of the TOML file it is on, and the
nearest valid name. What can only be checked against the data (a batch size larger than the data
set, a plot the cost cannot have, a data file's contents) is checked by `gdjax.study.experiment`
when it loads the data, before any sweep runs, with the same `ConfigError` and line numbers; the
dataclasses themselves stay dumb (scikit-learn's rule: configuration only stores settings).

`ExperimentConfig.to_dict()` gives the resolved config (defaults filled in, `logspace` expanded, file
paths absolute) and `dumps(config)` writes it back as TOML; `loads(dumps(c)) == c`.

Example:
  >>> from gdjax.study import config
  >>> cfg = config.loads('''
  ... name = "demo"
  ... [data]
  ... source = "house_prices"
  ... standardize = true
  ... [cost]
  ... model = "linear"
  ... [run]
  ... num_steps = 100
  ... [[optimizers]]
  ... rule = "gd"
  ... grid.learning_rate = { logspace = [0.01, 1.0, 3] }
  ... ''')
  >>> cfg.optimizers[0].axes()
  {'learning_rate': (0.01, 0.1, 1.0)}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from gdjax import data, rules
from gdjax import io as gdjax_io
from gdjax.options import Execution, Stopping
from gdjax.validation import nearest

__all__ = [
    "COST_FUNCTIONS",
    "DATA_SOURCES",
    "LOSSES",
    "MODELS",
    "PLOTS",
    "EXECUTION_KEYS",
    "STOPPING_KEYS",
    "ConfigError",
    "CostConfig",
    "DataConfig",
    "ExperimentConfig",
    "GradcheckConfig",
    "OptimizerConfig",
    "OutputsConfig",
    "RunConfig",
    "default_path",
    "dumps",
    "from_dict",
    "load",
    "load_default",
    "loads",
]

MODELS = ("linear", "polynomial")
LOSSES = ("mse", "logistic", "cross_entropy")
CLASSIFICATION_LOSSES = ("logistic", "cross_entropy")
COST_FUNCTIONS = ("quadratic", "shifted_quadratic", "ill_conditioned_quadratic", "rosenbrock")
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
_LABEL = re.compile(r"[A-Za-z0-9_+-]+")  # whole string (fullmatch): "adam\n" is no label


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


# ------------------------------------------------------------------------------------- dataclasses
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
    `"logistic"` for 0/1 targets or `"cross_entropy"` for class indices), `function` (one of
    `COST_FUNCTIONS`, with `dim`, `start` and for the ill-conditioned quadratic its
    `condition_number`) and `callable` is set. Models start at zero; test functions at `start`.

    `callable` is `"/abs/path/file.py:function"` (relative paths in a file are resolved against the
    config's folder when it is read) or `"module:function"`: `function(params, data) -> scalar`,
    with `data` the `(X, y)` of `[data]` (None without it). Its start `params0` is a list of numbers
    (a vector) or `"file.py:init"` naming `init()` or `init(data)` that returns the params pytree;
    `analytic` optionally names a hand-derived gradient `grad(params, data)` for the gradient check.

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
    """The gradient check run before any optimisation."""

    enabled: bool = True
    num_points: int = 3


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
                if f.name in ("source", "legacy_keys") and isinstance(obj, ExperimentConfig):
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


# ------------------------------------------------------------------------ locating keys in the text
_BARE = r"[A-Za-z0-9_-]+"
_KEY_PART = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")
_KEYLINE_RE = re.compile(rf"^\s*({_DOTTED})\s*=")
_TOKEN_RE = re.compile(rf'"""|\'\'\'|"(?:[^"\\]|\\.)*"|\'[^\']*\'|#.*$|[{{}}\[\],]|({_DOTTED})\s*=')


def _split_dotted(text: str) -> tuple[str, ...]:
    return tuple(
        p.strip()[1:-1] if p.strip()[:1] in "\"'" else p.strip() for p in re.findall(_KEY_PART, text)
    )


def _fmt_path(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _key_lines(text: str) -> dict[str, int]:
    """Maps dotted key paths (`optimizers[1].grid.learning_rate`) to the line that defines them.

    A light scan of the TOML text (headers, `key =` lines and keys inside inline tables) that only
    has to be right for text `tomllib` already accepted.
    """
    lines: dict[str, int] = {}
    arrays: dict[tuple, int] = {}  # array-of-tables path -> index of its latest element
    current: tuple = ()
    stack: list[tuple] = []  # open brackets of a value spanning lines: the path each belongs to

    def resolve(parts: tuple[str, ...]) -> tuple:
        out: tuple = ()
        for p in parts:
            out += (p,)
            if out in arrays:
                out += (arrays[out],)
        return out

    def scan_value(text: str, lineno: int, last):
        for m in _TOKEN_RE.finditer(text):
            tok = m.group(0)
            if tok.startswith("#") or tok in ('"""', "'''"):
                break
            if m.group(1):
                base = stack[-1] if stack else current
                last = base + _split_dotted(m.group(1))
                lines.setdefault(_fmt_path(last), lineno)
            elif tok in "{[":
                stack.append(last if last is not None else (stack[-1] if stack else current))
            elif tok in "}]":
                if stack:
                    stack.pop()
            elif tok == ",":
                last = None
        return last

    for lineno, raw in enumerate(text.splitlines(), 1):
        if stack:
            scan_value(raw, lineno, None)
            continue
        m = _HEADER_RE.match(raw)
        if m:
            parts = _split_dotted(m.group(2))
            if m.group(1) == "[[":
                base = resolve(parts[:-1]) + (parts[-1],)
                arrays[base] = arrays.get(base, -1) + 1
                current = base + (arrays[base],)
                lines.setdefault(_fmt_path(base), lineno)
            else:
                current = resolve(parts)
            lines.setdefault(_fmt_path(current), lineno)
            continue
        m = _KEYLINE_RE.match(raw)
        if m:
            path = current + _split_dotted(m.group(1))
            lines.setdefault(_fmt_path(path), lineno)
            scan_value(raw[m.end() :], lineno, path)
    return lines


class _Source:
    """The TOML text a config came from, for error messages."""

    def __init__(self, text: str | None, name: str | None, base_dir: str | None):
        self.text, self.name, self.base_dir = text, name, base_dir
        self._lines: dict[str, int] | None = None

    def line(self, path: tuple) -> int | None:
        if self.text is None:
            return None
        if self._lines is None:
            self._lines = _key_lines(self.text)
        path = tuple(path)
        while path:
            line = self._lines.get(_fmt_path(path))
            if line is not None:
                return line
            path = path[:-1]
        return None

    def error(self, path: tuple, message: str) -> ConfigError:
        return ConfigError(message, key=_fmt_path(path) or None, line=self.line(path), source=self.name)


# ------------------------------------------------------------------------------------ typed reading
_REQUIRED = object()


def _toml_type(value) -> str:
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


class _Table:
    """One TOML table being read: typed getters that remember which keys were used."""

    def __init__(self, src: _Source, path: tuple, values: dict):
        self.src, self.path, self.values = src, path, values
        self.known: list[str] = []

    def fail(self, key, message: str):
        path = self.path + ((key,) if isinstance(key, str | int) else tuple(key or ()))
        raise self.src.error(path, message)

    def take(self, key: str, default=_REQUIRED):
        self.known.append(key)
        if key in self.values:
            return self.values[key]
        if default is _REQUIRED:
            # A misspelt required key reads better as "unknown key, did you mean" than as missing.
            unknown = [k for k in self.values if k not in self.known]
            if nearest(key, unknown):
                typo = next(k for k in unknown if nearest(k, [key]))
                where = f"[{_fmt_path(self.path)}]" if self.path else "the top level"
                self.fail(typo, f"unknown key {typo!r} in {where} (did you mean {key!r}?)")
            where = f"[{_fmt_path(self.path)}]" if self.path else "the top level"
            self.fail(key, f"missing required key {key!r} in {where}")
        return default

    def finish(self, hint: str = ""):
        for key in self.values:
            if key not in self.known:
                where = f"[{_fmt_path(self.path)}]" if self.path else "the top level"
                self.fail(key, f"unknown key {key!r} in {where}{hint}{nearest(key, self.known)}")

    # typed getters ---------------------------------------------------------------------------
    def str(self, key, default=_REQUIRED, *, choices=None, what="value"):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        if not isinstance(v, str):
            self.fail(key, f"expected a string, got {_toml_type(v)}")
        if choices is not None and v not in choices:
            self.fail(key, f"unknown {what} {v!r}{nearest(v, choices)}; choose from {', '.join(choices)}")
        return v

    def bool(self, key, default=_REQUIRED):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        if not isinstance(v, bool):
            self.fail(key, f"expected true or false, got {_toml_type(v)}")
        return v

    def int(self, key, default=_REQUIRED, *, minimum=None):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        return self.check_int(key, v, minimum=minimum)

    def check_int(self, key, v, *, minimum=None):
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(key, f"expected an integer, got {_toml_type(v)}")
        if minimum is not None and v < minimum:
            self.fail(key, f"must be an integer >= {minimum}, got {v}")
        return v

    def float(self, key, default=_REQUIRED, *, positive=False, minimum=None, above=None):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        return self.check_float(key, v, positive=positive, minimum=minimum, above=above)

    def check_float(self, key, v, *, positive=False, minimum=None, above=None):
        if isinstance(v, bool) or not isinstance(v, int | float):
            self.fail(key, f"expected a number, got {_toml_type(v)}")
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

    def table(self, key, default=_REQUIRED) -> _Table | None:
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        if not isinstance(v, dict):
            self.fail(key, f"expected a table ([{_fmt_path(self.path + (key,))}]), got {_toml_type(v)}")
        return _Table(self.src, self.path + (key,), v)

    def list(self, key, default=_REQUIRED, *, scalar_ok=False):
        if key not in self.values:
            return self.take(key, default)
        v = self.take(key, default)
        if scalar_ok and not isinstance(v, list | dict):
            return [v]
        if not isinstance(v, list):
            self.fail(key, f"expected an array, got {_toml_type(v)}")
        return v


# ---------------------------------------------------------------------------------------- sections
_SYNTHETIC_DEFAULTS = {
    "num_examples": 200,
    "num_features": 5,
    "noise": 0.1,
    "condition_number": 1.0,
    "intercept": 1.0,
    "seed": 0,
}


def _read_data(t: _Table) -> DataConfig:
    source = t.str("source", choices=DATA_SOURCES, what="data source")
    standardize = t.bool("standardize", False)
    kw: dict[str, Any] = {}
    if source == "synthetic":
        kw["num_examples"] = t.int("num_examples", _SYNTHETIC_DEFAULTS["num_examples"], minimum=1)
        kw["num_features"] = t.int("num_features", _SYNTHETIC_DEFAULTS["num_features"], minimum=1)
        kw["noise"] = t.float("noise", _SYNTHETIC_DEFAULTS["noise"], minimum=0.0)
        kw["condition_number"] = t.float("condition_number", 1.0, minimum=1.0)
        kw["intercept"] = t.float("intercept", 1.0)
        kw["seed"] = t.int("seed", 0, minimum=0)
    elif source in FILE_SOURCES:
        path = t.str("path")
        if not os.path.isabs(path) and t.src.base_dir is not None:
            path = os.path.join(t.src.base_dir, path)
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            if os.path.exists(path):  # a folder, a FIFO, a device: never opened (a FIFO would block)
                t.fail("path", f"{path} is not a regular file, so not a data file")
            t.fail("path", f"data file not found: {path}")
        kw["path"] = path
        if source == "csv":
            kw["target"] = _column(t, "target", t.take("target", -1))
            features = t.list("features", None)
            if features is not None:
                if not features:
                    t.fail("features", "needs at least one column (or leave it out for all others)")
                kw["features"] = tuple(_column(t, ("features", i), c) for i, c in enumerate(features))
            exclude = t.list("exclude", None)
            if exclude is not None:
                if features is not None:
                    t.fail(
                        "exclude",
                        "give either features (the columns to use) or exclude (the columns to leave out)",
                    )
                kw["exclude"] = tuple(_column(t, ("exclude", i), c) for i, c in enumerate(exclude)) or None
        else:
            kw["x_key"] = t.str("x_key", "X")
            kw["y_key"] = t.str("y_key", "y")
    classes = t.list("classes", None)
    if classes is not None:
        values = tuple(t.check_float(("classes", i), c) for i, c in enumerate(classes))
        if len(values) < 2:
            t.fail("classes", f"needs at least two target values to tell apart, got {classes}")
        if len(set(values)) != len(values):
            t.fail("classes", f"lists a class twice: {classes}")
        kw["classes"] = values
    test_fraction = t.float("test_fraction", None)
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        t.fail(
            "test_fraction",
            f"is the fraction of the examples held out for testing, strictly between 0 and 1 "
            f"(e.g. 0.25), got {test_fraction!r}",
        )
    kw["test_fraction"] = test_fraction
    kw["split_per_seed"] = t.bool("split_per_seed", False)
    if kw["split_per_seed"] and test_fraction is None:
        t.fail("split_per_seed", "draws a held-out split per seed: give test_fraction too (e.g. 0.25)")
    hint = f" for source {source!r}" if source else ""
    t.finish(hint)
    return DataConfig(source=source, standardize=standardize, **kw)


def _read_reference(t: _Table, key: str, what: str) -> str:
    """A `"file.py:name"` (a path, relative to the config's folder) or `"module:name"` reference.

    Files are resolved to absolute paths and must exist; modules are imported later, when the
    problem is built (importing runs the user's code).
    """
    value = t.str(key)
    usage = f'{key} = "file.py:{what}" (a path relative to this config) or "module:{what}"'
    target, sep, name = value.rpartition(":")
    if not sep or not target.strip() or not name.strip():
        t.fail(key, f"expected {usage}, got {value!r}")
    if not all(part.isidentifier() for part in name.split(".")):
        t.fail(key, f"{name!r} is not a Python name; expected {usage}")
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = target
        if not os.path.isabs(path) and t.src.base_dir is not None:
            path = os.path.join(t.src.base_dir, path)
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            t.fail(
                key, f"file not found: {path} (from {value!r}; relative paths start at the config's folder)"
            )
        return f"{path}:{name}"
    if not all(part.isidentifier() for part in target.split(".")):
        t.fail(key, f"{target!r} is neither a .py file nor a module name; expected {usage}")
    return value


def _column(t: _Table, key, value):
    if isinstance(value, bool) or not isinstance(value, int | str):
        t.fail(key, f"a column is a header name or an index, got {_toml_type(value)}")
    return value


_DEFAULT_START = {"quadratic": 10.0, "shifted_quadratic": 10.0, "ill_conditioned_quadratic": 1.0}


def _read_problem(t: _Table, default_data: DataConfig | None) -> CostConfig:
    """A `[[problems]]` entry: a cost table's keys (`label` required) and optionally its own `data`
    table; without one it reads the study's `[data]`."""
    if "label" not in t.values:
        t.take("label", None)
        t.fail("label", 'each problem of a suite needs a label = "..." (its name in every table and figure)')
    data_table = t.table("data", None)
    data_cfg = _read_data(data_table) if data_table is not None else None
    cost = _read_cost(t, (data_cfg or default_data) is not None)
    if data_cfg is not None and cost.function is not None:
        t.fail("data", "test functions take no data: remove this problem's data table")
    return dataclasses.replace(cost, data=data_cfg)


def _read_cost(t: _Table, has_data: bool) -> CostConfig:
    kinds = [k for k in ("model", "function", "callable") if k in t.values]
    if len(kinds) != 1:
        t.fail(
            None,
            "a cost needs exactly one of 'model' (linear, polynomial), 'function' "
            f"({', '.join(COST_FUNCTIONS)}) or 'callable' (\"file.py:function\", your own cost)"
            + (f"; got {' and '.join(map(repr, kinds))}" if kinds else ""),
        )
    init_noise = t.float("init_noise", 0.0, minimum=0.0)
    init = _read_reference(t, "init", "init") if "init" in t.values else None
    t.take("init", None)
    if init is not None and init_noise:
        t.fail("init_noise", "init(key) draws each seed's start: put the noise in it, or drop init")
    if kinds[0] == "callable":
        callable_ = _read_reference(t, "callable", "cost")
        if init is not None and "params0" in t.values:
            t.fail("params0", "give either params0 (one start) or init (a start per seed), not both")
        if "params0" not in t.values and init is None:
            t.take("params0", None)
            t.fail(
                "params0",
                "a callable cost needs its start: params0 = [0.0, 0.0] (a vector) or params0 = "
                '"file.py:init" (a function init() or init(data) returning the params pytree), or '
                'init = "file.py:init" (init(key), a start per seed)',
            )
        raw = t.values.get("params0")
        if raw is None:
            params0 = None
        elif isinstance(raw, str):
            params0 = _read_reference(t, "params0", "init")
        else:
            values = t.list("params0", scalar_ok=True)
            if not values:
                t.fail("params0", "needs at least one number")
            params0 = tuple(t.check_float(("params0", i), v) for i, v in enumerate(values))
        analytic = _read_reference(t, "analytic", "grad") if "analytic" in t.values else None
        t.take("analytic", None)
        label = t.str("label", callable_.rpartition(":")[2].replace(".", "_"))
        t.finish(" for a callable cost")
        cfg = CostConfig(
            label=label, callable=callable_, params0=params0, analytic=analytic, init_noise=init_noise
        )
    elif kinds[0] == "model":
        model = t.str("model", choices=MODELS, what="model")
        degree = t.int("degree", minimum=1) if model == "polynomial" else None
        loss = t.str("loss", "mse", choices=LOSSES, what="loss")
        if loss in CLASSIFICATION_LOSSES and model != "linear":
            t.fail("loss", f'loss = "{loss}" fits a linear model (set model = "linear"), not a {model} one')
        label = t.str("label", model if degree is None else f"{model}{degree}")
        l2 = t.float("l2", None, minimum=0.0)
        if not has_data:
            t.fail("model", "a model cost needs a [data] table to fit")
        t.finish(f" for model {model!r}")
        cfg = CostConfig(
            label=label, model=model, degree=degree, loss=loss, init_noise=init_noise, l2=l2 or None
        )
    else:
        function = t.str("function", choices=COST_FUNCTIONS, what="test function")
        condition_number = None
        if function == "ill_conditioned_quadratic":
            condition_number = t.float("condition_number", minimum=1.0)
        raw_start = t.take("start", None)
        dim = t.int("dim", None, minimum=2 if function == "rosenbrock" else 1)
        if raw_start is None:
            dim = dim or 2
            start = _default_start(function, dim)
        else:
            values = raw_start if isinstance(raw_start, list) else [raw_start]
            start = tuple(t.check_float(("start", i), v) for i, v in enumerate(values))
            if not start:
                t.fail("start", "needs at least one coordinate")
            if not isinstance(raw_start, list):
                start = start * (dim or 1)
            if dim is not None and len(start) != dim:
                t.fail("start", f"has {len(start)} coordinates but dim = {dim}")
            dim = len(start)
            if function == "rosenbrock" and dim < 2:
                t.fail("start", "rosenbrock needs at least 2 coordinates")
        label = t.str("label", function)
        t.finish(f" for function {function!r}")
        cfg = CostConfig(
            label=label,
            function=function,
            dim=dim,
            condition_number=condition_number,
            start=start,
            init_noise=init_noise,
        )
    if not _LABEL.fullmatch(cfg.label):
        t.fail("label", f"labels use letters, digits, '_', '+' and '-' only, got {cfg.label!r}")
    return dataclasses.replace(cfg, init=init)


def _default_start(function: str, dim: int) -> tuple[float, ...]:
    if function == "rosenbrock":
        return tuple(-1.2 if i % 2 == 0 else 1.0 for i in range(dim))
    return (_DEFAULT_START[function],) * dim


def _read_batch_sizes(t: _Table, key: str, default) -> tuple[int | None, ...] | None:
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


def _read_run(t: _Table) -> RunConfig:
    cfg = RunConfig(
        num_steps=t.int("num_steps", minimum=1),
        batch_size=_read_batch_sizes(t, "batch_size", (None,)),
        target=t.float("target", None, positive=True),
        eval_every=t.int("eval_every", None, minimum=1),
    )
    t.known.extend(LEGACY_RUN_KEYS)  # read by _read_options
    _belongs_elsewhere(t, "run")
    t.finish()
    return cfg


OFF_KEYS = ("divergence_factor",)  # stopping keys that `false` turns off (None in `gdjax.Stopping`)
_TABLE_KEYS = {"run": RUN_KEYS, "stopping": STOPPING_KEYS, "execution": EXECUTION_KEYS}


def _belongs_elsewhere(t: _Table, table: str) -> None:
    """Fails on a key of another of [run], [stopping], [execution] (saying which), or one that only
    Python can set (devices, progress)."""
    for key in t.values:
        if key in t.known:
            continue
        if key in ("devices", "progress"):
            t.fail(
                key,
                f"{key} is a Python object: set it with gdjax.sweep(execution=gdjax.Execution({key}=...)), "
                "not in a config",
            )
        homes = [name for name, keys in _TABLE_KEYS.items() if key in keys and name != table]
        if homes:
            t.fail(key, f"unknown key {key!r} in [{table}]: it belongs in [{homes[0]}]")


def _is_float_field(cls, name: str) -> bool:
    return "float" in str(next(f for f in dataclasses.fields(cls) if f.name == name).type)


def _read_options(top: _Table, run: _Table, table: str, cls, keys: tuple[str, ...], defaults: dict):
    """Reads [stopping] or [execution] (and the same keys under [run], the old placement) into the
    core's option object `cls`; its own `__post_init__` validates, and a ValueError it raises is
    turned into a ConfigError at the key's line.

    Returns `(options, where)`: the object and, for each key the file gave, its path in the file.
    """
    t = top.table(table, None)
    values: dict[str, Any] = {}
    where: dict[str, tuple] = {}
    for key, home in LEGACY_RUN_KEYS.items():
        if home == table and key in run.values:
            values[key], where[key] = run.values[key], ("run", key)
    if t is not None:
        t.known.extend(keys)
        _belongs_elsewhere(t, table)
        t.finish()
        for key in keys:
            if key not in t.values:
                continue
            if key in values:
                line = run.src.line(("run", key))
                at = f" (line {line})" if line else ""
                t.fail(
                    key,
                    f"{key} is given twice, as run.{key}{at} and as {table}.{key}: keep the one in "
                    f"[{table}] and remove run.{key}",
                )
            values[key], where[key] = t.values[key], (table, key)
    kwargs = {}
    for key, value in values.items():
        if key in OFF_KEYS and value is False:
            kwargs[key] = None  # TOML has no null: `divergence_factor = false` turns detection off
            continue
        if _is_float_field(cls, key):
            if key in OFF_KEYS and isinstance(value, bool):
                top.fail(where[key], f"expected a number, or false to turn it off, got {value}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                top.fail(where[key], f"expected a number, got {_toml_type(value)}")
            value = float(value)
        elif isinstance(value, list | dict):
            top.fail(where[key], f"expected a single value, got {_toml_type(value)}")
        elif isinstance(value, int) and not isinstance(value, bool) and value >= _INT32:
            top.fail(where[key], f"must be below 2**31 = {_INT32} (a 32-bit step count), got {value}")
        kwargs[key] = value
    try:
        return cls(**{**defaults, **kwargs}), where
    except ValueError as err:
        message = str(err)
        culprit = None
        for key in kwargs:  # the key whose value alone is refused
            try:
                cls(**{key: kwargs[key]})
            except ValueError:
                culprit = key
                break
        if culprit is None:
            culprit = next((k for k in kwargs if re.search(rf"\b{re.escape(k)}\b", message)), None)
        if culprit is None:
            top.fail((table,) if t is not None else ("run",), message)
        if message.startswith(f"{culprit} "):
            message = message[len(culprit) + 1 :]
        top.fail(where[culprit], message)


# Size limits checked before anything is allocated (issue 12): values on one grid axis, and the bytes
# of the loss / gradient-norm histories every lane keeps (as a fraction of the host's memory).
MAX_AXIS = 100_000
_MEMORY_FRACTION = 0.5


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def _gb(n: float) -> str:
    return f"{n / 1024**3:.3g} GB"


def _check_sizes(top: _Table, cfg: ExperimentConfig) -> None:
    """Refuses what cannot fit in memory, with numbers and advice that can work, before allocation."""
    budget = _MEMORY_FRACTION * _host_memory()
    itemsize = 8 if cfg.precision == "float64" else 4
    for c in cfg.costs:
        d = cfg.data_of(c)
        if d is None or d.source != "synthetic":
            continue
        need = 8 * d.num_examples * (d.num_features + 2)  # float64 X, y and noise
        if need > budget:
            fit = max(1, int(budget // (8 * (d.num_features + 2))))
            at = (
                ("problems", cfg.costs.index(c), "data", "num_examples")
                if c.data is not None
                else ("data", "num_examples")
            )
            top.fail(
                at,
                f"{d.num_examples} examples x {d.num_features} features need about {_gb(need)} of memory, "
                f"more than the {_gb(budget)} gdjax allows itself here; use num_examples <= {fit}",
            )
    series = 2 + _num_metrics(cfg)  # loss, gradient norm and the metrics, at every evaluation
    every = cfg.run.eval_every or 1
    for i, o in enumerate(cfg.optimizers):
        axes = o.axes()
        lengths = [len(v) for v in axes.values()]
        configs = (lengths[0] if lengths else 1) if o.zip_grid else math.prod(lengths)
        batch_sizes = len(o.batch_size or cfg.run.batch_size)
        lanes = configs * len(cfg.seeds) * batch_sizes * len(cfg.costs)
        num_steps = o.num_steps or cfg.run.num_steps
        num_evals = -(-num_steps // every) + 1
        per_lane = series * num_evals * itemsize
        need = lanes * per_lane
        if need > budget:
            evals_fit = int(budget // (series * itemsize * max(lanes, 1)))  # evaluations per lane that fit
            max_steps = (evals_fit - 1) * every
            max_lanes = int(budget // per_lane)
            advice = []
            if max_steps >= 1:
                advice.append(f"num_steps <= {max_steps} for this grid")
            if evals_fit >= 2:
                advice.append(f"[run] eval_every >= {-(-num_steps // (evals_fit - 1))}")
            if max_lanes >= 1:
                advice.append(f"at most {max_lanes} lanes (fewer grid values, seeds or batch sizes)")
            key = ("optimizers", i, "grid") if max_lanes < lanes and max_steps < 1 else None
            if key is None:
                key = ("optimizers", i, "num_steps") if o.num_steps else ("run", "num_steps")
                key = key if max_lanes < 1 else ("optimizers", i, "grid")
            top.fail(
                key,
                f"{o.label}: {lanes} lanes x {num_evals} evaluations keep about {_gb(need)} of loss, "
                f"gradient-norm and metric histories, more than the {_gb(budget)} gdjax allows itself "
                "here; use " + " or ".join(advice),
            )


def _num_metrics(cfg: ExperimentConfig) -> int:
    """Metric histories each lane keeps: accuracy for classification, test loss / accuracy."""
    counts = []
    for c in cfg.costs:
        d = cfg.data_of(c)
        held_out = d is not None and d.test_fraction is not None
        counts.append((c.loss in CLASSIFICATION_LOSSES) * (1 + held_out) + (held_out and c.function is None))
    return max(counts)


def _read_axis(t: _Table, key: str, value) -> Any:
    """A grid entry: a scalar (fixed), an array (an axis), or `{ logspace = [lo, hi, num] }`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return t.check_float(key, value)
    if isinstance(value, list):
        if not value:
            t.fail(key, "an empty array sweeps nothing; give at least one value")
        return tuple(t.check_float((key, i), v) for i, v in enumerate(value))
    if isinstance(value, dict):
        spec = _Table(t.src, t.path + (key,), value)
        kinds = ("logspace", "linspace")
        present = [k for k in kinds if k in value]
        if not present:
            spec.known.extend(kinds)
            spec.finish()
        if len(present) != 1:
            t.fail(key, "give exactly one of logspace = [lo, hi, num] or linspace = [lo, hi, num]")
        kind = present[0]
        raw = spec.take(kind)
        spec.finish()
        usage = f"{kind} = [lo, hi, num] with lo, hi numbers and num an integer >= 2"
        if not isinstance(raw, list) or len(raw) != 3:
            spec.fail(kind, f"expected {usage}, got {raw!r}")
        lo, hi, num = raw
        lo, hi = spec.check_float(kind, lo), spec.check_float(kind, hi)
        if isinstance(num, bool) or not isinstance(num, int) or num < 2:
            spec.fail(kind, f"expected {usage}; num must be an integer >= 2, got {num!r}")
        if num > MAX_AXIS:
            spec.fail(
                kind,
                f"num = {num} values on one axis is more than gdjax sweeps ({MAX_AXIS} at most per axis); "
                f"a few dozen values usually find the regime: try num = 32, then refine around the best",
            )
        if kind == "logspace":
            if not (lo > 0 and hi > 0):
                spec.fail(
                    kind,
                    f"logspace endpoints are the values themselves and must be > 0, got "
                    f"[{lo!r}, {hi!r}, {num}] (for 10**-3 .. 10**0 write [0.001, 1.0, {num}])",
                )
            ratio = (hi / lo) ** (1.0 / (num - 1))
            values = [lo * ratio**i for i in range(num)]
        else:
            values = [lo + (hi - lo) * i / (num - 1) for i in range(num)]
        values[0], values[-1] = lo, hi
        return tuple(float(f"{v:.12g}") for v in values)
    t.fail(
        key,
        f"a grid value is a number, an array of numbers or {{ logspace = [lo, hi, num] }}, "
        f"got {_toml_type(value)}",
    )


def _read_optimizer(t: _Table, callable_costs: tuple[bool, ...] = ()) -> OptimizerConfig:
    rule = t.str("rule")
    try:
        rules.hyperparameters(rule)
    except ValueError as err:
        if rule.startswith("optax."):
            t.fail("rule", str(err))
        options = list(rules.names())
        t.fail(
            "rule",
            f"unknown rule {rule!r}{nearest(rule, options)}; choose from "
            f"{', '.join(options)}, or 'optax.<name>' for any Optax optimizer",
        )
    hand_written = rule in rules.names()
    schedule = None
    if hand_written:
        schedule = t.str("schedule", "constant", choices=rules.schedule_names(), what="schedule")
    elif "schedule" in t.values:
        t.fail(
            "schedule",
            f"schedules apply to the hand-written rules ({', '.join(rules.names())}); "
            f"{rule!r} is an Optax optimizer",
        )
    # "optax.lion" -> "lion": a label is a file-name-safe word (an explicit label is checked as given)
    label = t.str("label", rule.rpartition(".")[2])
    if not _LABEL.fullmatch(label):
        t.fail("label", f"labels use letters, digits, '_', '+' and '-' only, got {label!r}")
    zip_grid = t.bool("zip_grid", False)
    num_steps = t.int("num_steps", None, minimum=1)
    batch_size = _read_batch_sizes(t, "batch_size", None)
    search = t.table("search", None)
    g = t.table("grid", None if search is not None else _REQUIRED)
    if g is None:
        g = _Table(t.src, (*t.path, "grid"), {})
    names = rules.hyperparameters(rule, schedule) if hand_written else rules.hyperparameters(rule)
    grid = []
    for key, value in g.values.items():
        g.known.append(key)
        parsed = _read_axis(g, key, value)
        if key not in names and not isinstance(parsed, bool):
            # A key the rule does not take may name a hyperparameter of a callable cost (a keyword
            # parameter with a numeric default); the cost is imported when the problem is built,
            # which checks the name then. A near miss of the rule's own names is a typo now.
            if not (callable_costs and all(callable_costs) and not nearest(key, names)):
                g.fail(key, _unknown_hyperparameter(key, rule, schedule, names, callable_costs))
        grid.append((key, parsed))
    if search is not None:
        axes = _read_search(search, names, {k for k, v in grid if isinstance(v, tuple)})
        grid += axes
        zip_grid = True
    t.finish()
    cfg = OptimizerConfig(
        rule=rule,
        label=label,
        schedule=schedule,
        grid=tuple(grid),
        zip_grid=zip_grid,
        num_steps=num_steps,
        batch_size=batch_size,
    )
    axes = cfg.axes()
    if zip_grid and len({len(v) for v in axes.values()}) > 1:
        g.fail(
            None,
            "zip_grid pairs the axes element by element, so they need equal lengths; got "
            + ", ".join(f"{k}: {len(v)}" for k, v in axes.items()),
        )
    _check_values(g, cfg)
    return cfg


MAX_SEARCH_POINTS = 100_000  # the one limit on a grid axis (gdjax.sweep.MAX_AXIS)


def _read_search(s: _Table, names, swept: set[str]) -> list[tuple[str, tuple]]:
    """`search = { points = 16, seed = 0, learning_rate = [1e-4, 1.0, "log"], momentum = [0.5, 0.99] }`:
    quasi-random search (a scrambled Halton sequence, reproducible from `seed`) as zipped grid axes."""
    points = s.int("points", minimum=1)
    if points > MAX_SEARCH_POINTS:
        s.fail("points", f"at most {MAX_SEARCH_POINTS} points, got {points}")
    seed = s.int("seed", 0, minimum=0)
    space = {}
    for key in list(s.values):
        if key in ("points", "seed"):
            continue
        spec = s.take(key)
        if key not in names:
            s.fail(
                key,
                f"unknown hyperparameter {key!r} of this rule{nearest(key, names)}; "
                f"the rule takes {list(names)}",
            )
        if key in swept:
            s.fail(key, f"{key} is a grid axis too: give it in grid or in search, not both")
        space[key] = spec
    if not space:
        s.fail(
            None, 'a search needs at least one hyperparameter range, e.g. learning_rate = [1e-4, 1.0, "log"]'
        )
    s.finish()
    try:
        grid = halton_grid(points, space, seed)
    except ValueError as err:
        s.fail(None, str(err))
    return [(k, tuple(float(v) for v in values)) for k, values in grid.items()]


def _finite_number(x) -> bool:
    return (
        isinstance(x, int | float | np.integer | np.floating)
        and not isinstance(x, bool)
        and bool(np.isfinite(x))
    )


def halton_grid(num_points: int, space: Mapping[str, tuple], seed: int = 0) -> dict[str, np.ndarray]:
    """Quasi-random search points: a scrambled Halton sequence mapped onto each hyperparameter's range.

    Each hyperparameter maps a coordinate u in [0, 1) onto `low + u (high - low)` ("linear") or
    `exp(log low + u (log high - log low))` ("log", a log-uniform learning rate). The same seed gives the
    same points (`scipy.stats.qmc.Halton(scramble=True, rng=seed)`).

    Args:
        space: hyperparameter name to `(low, high)` (linear) or `(low, high, "log" | "linear")`.

    Returns:
        A dict of equal-length float arrays, one per hyperparameter, in the order of `space`: a zipped
        grid (point j is the j-th entry of every array).

    Example:
        >>> halton_grid(16, {"learning_rate": (1e-4, 1.0, "log"), "momentum": (0.0, 0.99)}, seed=0)
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int | np.integer) or num_points < 1:
        raise ValueError(f"num_points must be a positive integer; got {num_points!r}")
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"space must map at least one hyperparameter to a range; got {space!r}")
    ranges = []
    for name, spec in space.items():
        spec = tuple(spec) if isinstance(spec, tuple | list) else (spec,)
        low, high, scale = (*spec, "linear") if len(spec) == 2 else (*spec, None, None, None)[:3]
        valid = _finite_number(low) and _finite_number(high) and low < high
        if len(spec) not in (2, 3) or scale not in ("log", "linear") or not valid:
            raise ValueError(f"space[{name!r}] must be (low, high[, 'log' | 'linear']); got {spec!r}")
        if scale == "log" and low <= 0:
            raise ValueError(f"space[{name!r}] is log-scaled and needs low > 0; got {spec!r}")
        ranges.append((name, float(low), float(high), scale))
    from scipy.stats import qmc  # SciPy only when a search space is used

    u = qmc.Halton(d=len(ranges), scramble=True, rng=np.random.default_rng(seed)).random(num_points)
    grid = {}
    for j, (name, low, high, scale) in enumerate(ranges):
        if scale == "log":
            grid[name] = np.exp(np.log(low) + u[:, j] * (np.log(high) - np.log(low)))
        else:
            grid[name] = low + u[:, j] * (high - low)
    return grid


def _unknown_hyperparameter(key: str, rule: str, schedule: str | None, names, callable_costs=()) -> str:
    message = f"unknown hyperparameter {key!r} of rule {rule!r}"
    if schedule is not None and schedule != "constant":
        message += f" with schedule {schedule!r}"
    owners = []
    if schedule is not None:
        own = set(rules.hyperparameters(rule, "constant"))
        owners = [s for s in rules.schedule_names() if key in set(rules.hyperparameters(rule, s)) - own]
    if owners:
        return (
            message
            + f": it belongs to schedule {' / '.join(map(repr, owners))} (set schedule = {owners[0]!r})"
        )
    message += f"{nearest(key, names)}; valid: {', '.join(names)}"
    if any(callable_costs) and not all(callable_costs) and not nearest(key, names):
        message += (
            " (a cost hyperparameter can be swept only when every [[cost]] is a callable that takes it, "
            "and " + ", ".join(f"cost[{i}]" for i, c in enumerate(callable_costs) if not c) + " is not one)"
        )
    return message


def _check_values(g: _Table, opt: OptimizerConfig) -> None:
    """Builds the rule at each value of each axis so that a bad value names its key now."""
    cost_keys = set(opt.cost_keys())  # checked against the cost when it is loaded
    fixed = {k: v for k, v in opt.fixed().items() if k not in cost_keys}
    first = {k: v[0] for k, v in opt.axes().items() if k not in cost_keys}
    extra = {"schedule": opt.schedule} if opt.schedule is not None else {}
    try:
        rules.get(opt.rule, **fixed, **first, **extra)
    except ValueError as err:
        key = next((k for k, _ in opt.grid if re.search(rf"\b{re.escape(k)}\b", str(err))), None)
        g.fail(key, str(err))
    for name, values in opt.axes().items():
        if name in cost_keys:
            continue
        for i, v in enumerate(values[1:], 1):
            try:
                rules.get(opt.rule, **fixed, **{**first, name: v}, **extra)
            except ValueError as err:
                g.fail((name, i), str(err))


def _read_gradcheck(t: _Table | None) -> GradcheckConfig:
    if t is None:
        return GradcheckConfig()
    cfg = GradcheckConfig(enabled=t.bool("enabled", True), num_points=t.int("num_points", 3, minimum=1))
    t.finish()
    return cfg


def _read_outputs(t: _Table | None, seeds: tuple[int, ...] = (0,)) -> OutputsConfig:
    if t is None:
        return OutputsConfig()
    plots = t.list("plots", list(OutputsConfig.plots))
    for i, p in enumerate(plots):
        if not isinstance(p, str):
            t.fail(("plots", i), f"expected a plot name, got {_toml_type(p)}")
        if p not in PLOTS:
            t.fail(("plots", i), f"unknown plot {p!r}{nearest(p, PLOTS)}; choose from {', '.join(PLOTS)}")
    cfg = OutputsConfig(
        plots=tuple(dict.fromkeys(plots)),
        x_axis=t.str("x_axis", "steps", choices=X_AXES, what="x axis"),
        dir=t.str("dir", "runs"),
        rank_by=t.str("rank_by", "final_loss", choices=RANK_BY, what="ranking column"),
        tuning_seeds=_read_tuning_seeds(t, seeds),
    )
    t.finish()
    return cfg


def _read_tuning_seeds(t: _Table, seeds: tuple[int, ...]) -> tuple[int, ...] | None:
    """`[outputs] tuning_seeds`: some of the study's seeds, leaving at least one fresh seed to report."""
    raw = t.list("tuning_seeds", None, scalar_ok=True)
    if raw is None:
        return None
    if not raw:
        t.fail("tuning_seeds", "needs at least one seed (or leave it out to choose and report on every seed)")
    values = tuple(t.check_int(("tuning_seeds", i), v, minimum=0) for i, v in enumerate(raw))
    if len(set(values)) != len(values):
        t.fail("tuning_seeds", f"seeds repeat: {list(values)}")
    unknown = [v for v in values if v not in seeds]
    if unknown:
        t.fail("tuning_seeds", f"{unknown} are not among the study's seeds {list(seeds)}")
    if len(values) == len(seeds):
        t.fail(
            "tuning_seeds",
            f"covers every seed {list(seeds)}: no fresh seeds are left to report on; add seeds to the "
            "study's seeds = [...] or tune on fewer",
        )
    return values


_TOP_LEVEL = (
    "name",
    "description",
    "precision",
    "seeds",
    "data",
    "cost",
    "problems",
    "run",
    "stopping",
    "execution",
    "optimizers",
    "gradcheck",
    "outputs",
)


# TOML integers are unbounded; gdjax's are 64-bit at most (seeds, counts), and the step counts of
# [stopping] and [execution] are 32-bit on the device (issue 19: OverflowError tracebacks).
_INT64 = 2**63
_INT32 = 2**31


def _check_integers(values, src: _Source) -> None:
    """Refuses any integer beyond 64 bits, naming its key and line (an iterative walk)."""
    stack = [((), values)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, dict):
            stack.extend((path + (k,), x) for k, x in v.items())
        elif isinstance(v, list):
            stack.extend((path + (i,), x) for i, x in enumerate(v))
        elif isinstance(v, int) and not isinstance(v, bool) and not -_INT64 <= v < _INT64:
            shown = str(v) if len(str(v)) <= 24 else f"{str(v)[:12]}...({len(str(v))} digits)"
            raise src.error(path, f"integer {shown} is beyond 64 bits; gdjax's integers are below 2**63")


def _read(values: dict, src: _Source) -> ExperimentConfig:
    _check_integers(values, src)
    top = _Table(src, (), values)
    top.known.extend(_TOP_LEVEL)
    top.finish()
    top.known.clear()
    name = top.str("name")
    if not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        top.fail(
            "name", f"the name becomes a folder name: use letters, digits, '_', '.', '+', '-'; got {name!r}"
        )
    description = top.str("description", "")
    precision = top.str("precision", "float32", choices=PRECISIONS, what="precision")
    seeds = top.list("seeds", [0])
    if not seeds:
        top.fail("seeds", "needs at least one seed")
    seeds = tuple(top.check_int(("seeds", i), s, minimum=0) for i, s in enumerate(seeds))
    if len(set(seeds)) != len(seeds):
        top.fail("seeds", f"seeds repeat: {list(seeds)}")
    data_table = top.table("data", None)
    data_cfg = _read_data(data_table) if data_table is not None else None

    raw_problems = top.take("problems", None)
    raw_cost = top.take("cost", None) if raw_problems is not None else top.take("cost")
    if raw_problems is not None:
        if raw_cost is not None:
            top.fail("problems", "give either [[problems]] (a suite) or [cost] / [[cost]], not both")
        if (
            not isinstance(raw_problems, list)
            or not raw_problems
            or not all(isinstance(p, dict) for p in raw_problems)
        ):
            top.fail("problems", f"expected [[problems]] tables, got {_toml_type(raw_problems)}")
        cost_cfgs = tuple(
            _read_problem(_Table(src, ("problems", i), p), data_cfg) for i, p in enumerate(raw_problems)
        )
        labels = [c.label for c in cost_cfgs]
        for i, lab in enumerate(labels):
            if labels.index(lab) != i:
                top.fail(
                    ("problems", i, "label"), f"two problems are labelled {lab!r}: give each a distinct label"
                )
    elif isinstance(raw_cost, dict):
        cost_cfgs = (_read_cost(_Table(src, ("cost",), raw_cost), data_cfg is not None),)
    elif isinstance(raw_cost, list) and raw_cost and all(isinstance(c, dict) for c in raw_cost):
        cost_cfgs = tuple(
            _read_cost(_Table(src, ("cost", i), c), data_cfg is not None) for i, c in enumerate(raw_cost)
        )
        labels = [c.label for c in cost_cfgs]
        for i, lab in enumerate(labels):
            if labels.index(lab) != i:
                top.fail(("cost", i), f'two costs are labelled {lab!r}: give each a distinct label = "..."')
    else:
        top.fail("cost", f"expected a [cost] table or [[cost]] tables, got {_toml_type(raw_cost)}")
    if data_cfg is not None and all(c.function is not None or c.data is not None for c in cost_cfgs):
        top.fail("data", "test functions take no data, and no problem reads the study's [data]: remove it")

    run_table = top.table("run")
    run = _read_run(run_table)
    stopping, stopping_at = _read_options(top, run_table, "stopping", Stopping, STOPPING_KEYS, {})
    execution, execution_at = _read_options(
        top, run_table, "execution", Execution, EXECUTION_KEYS, {"record_every": run.eval_every or 1}
    )
    if run.eval_every is not None and execution.record_every % run.eval_every:
        top.fail(
            execution_at["record_every"],
            f"iterates are recorded at evaluations: record_every = {execution.record_every} must be a "
            f"multiple of eval_every = {run.eval_every}",
        )
    legacy = frozenset(k for k, at in (stopping_at | execution_at).items() if at[0] == "run")
    raw_opts = top.take("optimizers")
    if not isinstance(raw_opts, list) or not all(isinstance(o, dict) for o in raw_opts):
        top.fail("optimizers", f"expected [[optimizers]] tables, got {_toml_type(raw_opts)}")
    if not raw_opts:
        top.fail("optimizers", "needs at least one [[optimizers]] entry")
    callable_costs = tuple(c.callable is not None for c in cost_cfgs)
    opts = tuple(
        _read_optimizer(_Table(src, ("optimizers", i), o), callable_costs) for i, o in enumerate(raw_opts)
    )
    labels = [o.label for o in opts]
    for i, lab in enumerate(labels):
        if labels.index(lab) != i:
            top.fail(
                ("optimizers", i, "label"),
                f'two optimizers are labelled {lab!r}: give each a distinct label = "..."',
            )
    gradcheck = _read_gradcheck(top.table("gradcheck", None))
    outputs = _read_outputs(top.table("outputs", None), seeds)
    top.finish()
    cfg = ExperimentConfig(
        name=name,
        description=description,
        precision=precision,
        seeds=seeds,
        data=data_cfg,
        costs=cost_cfgs,
        run=run,
        stopping=stopping,
        execution=execution,
        optimizers=opts,
        gradcheck=gradcheck,
        outputs=outputs,
        source=src.name,
        legacy_keys=legacy,
    )
    _check_sizes(top, cfg)
    return cfg


# ------------------------------------------------------------------------------------- public API
def loads(text: str, *, source: str | None = None, base_dir: str | None = None) -> ExperimentConfig:
    """Parses and validates TOML text.

    Args:
      text: the TOML.
      source: a name for messages (the file path); default `<string>`.
      base_dir: folder that relative data paths are resolved against (default: the cwd).

    Raises:
      ConfigError: anything that cannot be run, with key, line and a suggestion.
    """
    src = _Source(text, source or "<string>", base_dir)
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        m = re.search(r"\(at line (\d+), column \d+\)", str(err))
        raise ConfigError(
            f"not valid TOML: {err}", line=int(m.group(1)) if m else None, source=src.name
        ) from None
    except RecursionError:  # tomllib recurses per nesting level (issue 19)
        raise ConfigError(
            "not a usable TOML config: arrays or tables nested too deeply", source=src.name
        ) from None
    return _read(values, src)


_MAX_CONFIG_BYTES = 16 * 1024 * 1024


def load(path: str | os.PathLike) -> ExperimentConfig:
    """Reads and validates a TOML config file; relative data paths are taken from its folder."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}", source=path)
    try:  # a regular file: a FIFO or a folder is refused without blocking on it
        fd = gdjax_io.open_regular(path, what="TOML config")
    except gdjax_io.FileFormatError as err:
        raise ConfigError(str(err).removeprefix(path).lstrip(" ,:"), source=path) from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(_MAX_CONFIG_BYTES + 1)
    if len(raw) > _MAX_CONFIG_BYTES:
        raise ConfigError(f"larger than {_MAX_CONFIG_BYTES} bytes; not a config file", source=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"not UTF-8 text (byte {err.start}); TOML files are UTF-8: save it as UTF-8",
            line=raw[: err.start].count(b"\n") + 1,
            source=path,
        ) from None
    return loads(text, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def from_dict(values: dict, *, source: str | None = None, base_dir: str | None = None) -> ExperimentConfig:
    """Validates a config given as a dict (the shape `tomllib` returns, or `to_dict()`'s)."""
    return _read(values, _Source(None, source or "<dict>", base_dir))


def default_path():
    """The embedded default study (`gdjax/study/defaults/default.toml`), as a `Traversable`."""
    return resources.files("gdjax.study") / "defaults" / "default.toml"


def load_default() -> ExperimentConfig:
    """The default study that `gdjax run` runs without a config."""
    return loads(default_path().read_text(encoding="utf-8"), source="<default study>")


# -------------------------------------------------------------------------------------- TOML writer
def _toml_key(key: str) -> str:
    return key if re.fullmatch(_BARE, key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} to TOML: {value!r}")


def _is_table_array(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def dumps(values: dict | ExperimentConfig) -> str:
    """Writes a dict of TOML-able values (or a config) as TOML.

    Covers the subset configs use: strings, integers, floats (incl. `inf`/`nan`), booleans,
    arrays, tables and arrays of tables. `tomllib.loads(dumps(d)) == d`.
    """
    if isinstance(values, ExperimentConfig):
        values = values.to_dict()
    out: list[str] = []

    def emit(path: tuple, table: dict, header: str | None):
        if header is not None:
            if out:
                out.append("")
            out.append(header)
        subtables = []
        for k, v in table.items():
            if v is None:
                continue
            if isinstance(v, dict) or _is_table_array(v):
                subtables.append((k, v))
            else:
                out.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in subtables:
            p = path + (k,)
            dotted = ".".join(_toml_key(x) for x in p)
            if isinstance(v, dict):
                emit(p, v, f"[{dotted}]")
            else:
                for item in v:
                    emit(p, item, f"[[{dotted}]]")

    emit((), values, None)
    return "\n".join(out) + "\n"
