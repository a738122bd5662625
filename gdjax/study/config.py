"""Experiment configs: TOML read into frozen dataclasses and checked at the edge.

A config names the data, the cost, one or more optimizers with their hyperparameter grids, the run
settings (steps, batch sizes, evaluation schedule), when runs stop (`[stopping]`, read into a
`gdjax.Stopping`) and how they are carried out (`[execution]`, read into a `gdjax.Execution`), seeds,
precision and outputs. `load(path)` reads
and checks everything a person can get wrong before anything is traced, and raises one `ConfigError`
naming the key (`optimizers[1].grid.learnig_rate`), the line of the TOML file it is on, and the
nearest valid name. What can only be checked against the data (a batch size larger than the data
set, a plot the cost cannot have, a data file's contents) is checked by `gdjax.study.preflight`
when it loads the data, before any sweep runs, with the same `ConfigError` and line numbers (the
key-to-line map is kept on the config: `ExperimentConfig.error`); the dataclasses themselves stay
dumb (scikit-learn's rule: configuration only stores settings).

The types live in `configbase`, the data and cost tables are read by `configcosts`, the optimizer
tables by `configgrids`, the TOML text is scanned and written by `tomltext`; this module reads the
rest and is where all of them are imported from.

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
import math
import os
import re
import tomllib
from importlib import resources
from typing import Any

from gdjax import io as gdjax_io
from gdjax.options import Execution, Stopping
from gdjax.study import problems as problems_lib
from gdjax.study.configbase import (
    DATA_SOURCES,
    EXECUTION_KEYS,
    LEGACY_RUN_KEYS,
    MODELS,
    OFF_KEYS,
    PLOTS,
    PRECISIONS,
    RANK_BY,
    RUN_KEYS,
    STOPPING_KEYS,
    X_AXES,
    ConfigError,
    CostConfig,
    DataConfig,
    ExperimentConfig,
    GradcheckConfig,
    OptimizerConfig,
    OutputsConfig,
    RunConfig,
    Source,
    Table,
    read_batch_sizes,
    toml_type,
)
from gdjax.study.configcosts import read_cost_table, read_data_table, read_problem_table
from gdjax.study.configgrids import MAX_AXIS, MAX_SEARCH_POINTS, halton_grid, read_optimizer_table
from gdjax.study.tomltext import dumps
from gdjax.validation import nearest

# The config's types and readers live in configbase, configcosts, configgrids and tomltext; this module
# reads a whole config and is where they are imported from.
__all__ = [
    "DATA_SOURCES",
    "MAX_AXIS",
    "MAX_SEARCH_POINTS",
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
    "halton_grid",
    "load",
    "load_default",
    "loads",
]


# ---------------------------------------------------------------------------------------- sections
def _read_run(t: Table) -> RunConfig:
    cfg = RunConfig(
        num_steps=t.int("num_steps", minimum=1),
        batch_size=read_batch_sizes(t, "batch_size", (None,)),
        target=t.float("target", None, positive=True),
        eval_every=t.int("eval_every", None, minimum=1, maximum=2**31 - 1),  # an int32 step count
    )
    t.known.extend(LEGACY_RUN_KEYS)  # read by _read_options
    _belongs_elsewhere(t, "run")
    t.finish()
    return cfg


_TABLE_KEYS = {"run": RUN_KEYS, "stopping": STOPPING_KEYS, "execution": EXECUTION_KEYS}


def _belongs_elsewhere(t: Table, table: str) -> None:
    """Fails on a key of another of [run], [stopping], [execution] (saying which), or one that only
    Python can set (devices, the progress callbacks)."""
    for key in t.values:
        if key in t.known:
            continue
        if key in ("devices", "progress", "step_progress"):
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


def _read_options(top: Table, run: Table, table: str, cls, keys: tuple[str, ...], defaults: dict):
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
                top.fail(where[key], f"expected a number, got {toml_type(value)}")
            value = float(value)
        elif isinstance(value, list | dict):
            top.fail(where[key], f"expected a single value, got {toml_type(value)}")
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


# The bytes of the loss / gradient-norm histories every lane keeps may take this much of the host's
# memory (issue 12), checked before anything is allocated.
MEMORY_FRACTION = 0.5


def host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 1024**3


def gb(n: float) -> str:
    return f"{n / 1024**3:.3g} GB"


def _check_sizes(top: Table, cfg: ExperimentConfig) -> None:
    """Refuses what cannot fit in memory, with numbers and advice that can work, before allocation."""
    budget = MEMORY_FRACTION * host_memory()
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
                f"{d.num_examples} examples x {d.num_features} features need about {gb(need)} of memory, "
                f"more than the {gb(budget)} gdjax allows itself here; use num_examples <= {fit}",
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
            from gdjax.sweep import MAX_LANES  # noqa: PLC0415  (the sweep's own cap on one call)

            max_lanes = min(int(budget // per_lane), MAX_LANES)
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
                f"{o.label}: {lanes} lanes x {num_evals} evaluations keep about {gb(need)} of loss, "
                f"gradient-norm and metric histories, more than the {gb(budget)} gdjax allows itself "
                "here; use " + " or ".join(advice),
            )


def _num_metrics(cfg: ExperimentConfig) -> int:
    """Metric histories each lane keeps: the cost kind's and the config's own metrics on the training
    data, and with a held-out split each of them again and the test loss."""
    counts = []
    for c in cfg.costs:
        d = cfg.data_of(c)
        held_out = d is not None and d.test_fraction is not None
        own = len(problems_lib.spec_of(c).metrics) + len(c.metrics or ())
        counts.append(own * (1 + held_out) + (held_out and c.function is None))
    return max(counts)


def _read_gradcheck(t: Table | None) -> GradcheckConfig:
    if t is None:
        return GradcheckConfig()
    cfg = GradcheckConfig(
        enabled=t.bool("enabled", True),
        num_points=t.int("num_points", 3, minimum=1),
        max_examples=t.int("max_examples", GradcheckConfig.max_examples, minimum=1),
    )
    t.finish()
    return cfg


def _read_outputs(t: Table | None, seeds: tuple[int, ...] = (0,)) -> OutputsConfig:
    if t is None:
        return OutputsConfig()
    plots = t.list("plots", list(OutputsConfig.plots))
    for i, p in enumerate(plots):
        if not isinstance(p, str):
            t.fail(("plots", i), f"expected a plot name, got {toml_type(p)}")
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


def _read_tuning_seeds(t: Table, seeds: tuple[int, ...]) -> tuple[int, ...] | None:
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


def _check_integers(values, src: Source) -> None:
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


def _distinct_labels(top: Table, items, what: str, key) -> None:
    """Refuses a label used twice among `items` (costs, problems or optimizers), at `key(i)`."""
    labels = [x.label for x in items]
    for i, lab in enumerate(labels):
        if labels.index(lab) != i:
            top.fail(key(i), f'two {what} are labelled {lab!r}: give each a distinct label = "..."')


def _read(values: dict, src: Source) -> ExperimentConfig:
    _check_integers(values, src)
    top = Table(src, (), values)
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
    data_cfg = read_data_table(data_table) if data_table is not None else None

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
            top.fail("problems", f"expected [[problems]] tables, got {toml_type(raw_problems)}")
        cost_cfgs = tuple(
            read_problem_table(Table(src, ("problems", i), p), data_cfg) for i, p in enumerate(raw_problems)
        )
        _distinct_labels(top, cost_cfgs, "problems", lambda i: ("problems", i, "label"))
    elif isinstance(raw_cost, dict):
        cost_cfgs = (read_cost_table(Table(src, ("cost",), raw_cost), data_cfg is not None),)
    elif isinstance(raw_cost, list) and raw_cost and all(isinstance(c, dict) for c in raw_cost):
        cost_cfgs = tuple(
            read_cost_table(Table(src, ("cost", i), c), data_cfg is not None) for i, c in enumerate(raw_cost)
        )
        _distinct_labels(top, cost_cfgs, "costs", lambda i: ("cost", i))
    else:
        top.fail("cost", f"expected a [cost] table or [[cost]] tables, got {toml_type(raw_cost)}")
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
        top.fail("optimizers", f"expected [[optimizers]] tables, got {toml_type(raw_opts)}")
    if not raw_opts:
        top.fail("optimizers", "needs at least one [[optimizers]] entry")
    callable_costs = tuple(c.callable is not None for c in cost_cfgs)
    opts = tuple(
        read_optimizer_table(Table(src, ("optimizers", i), o), callable_costs) for i, o in enumerate(raw_opts)
    )
    _distinct_labels(top, opts, "optimizers", lambda i: ("optimizers", i, "label"))
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
        lines=src.lines,
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
    src = Source(text, source or "<string>", base_dir)
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
        text = raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # a byte-order mark (Windows editors)
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"not UTF-8 text (byte {err.start}); TOML files are UTF-8: save it as UTF-8",
            line=raw[: err.start].count(b"\n") + 1,
            source=path,
        ) from None
    return loads(text, source=path, base_dir=os.path.dirname(os.path.abspath(path)))


def from_dict(values: dict, *, source: str | None = None, base_dir: str | None = None) -> ExperimentConfig:
    """Validates a config given as a dict (the shape `tomllib` returns, or `to_dict()`'s)."""
    return _read(values, Source(None, source or "<dict>", base_dir))


def default_path():
    """The embedded default study (`gdjax/study/defaults/default.toml`), as a `Traversable`."""
    return resources.files("gdjax.study") / "defaults" / "default.toml"


def load_default() -> ExperimentConfig:
    """The default study that `gdjax run` runs without a config."""
    return loads(default_path().read_text(encoding="utf-8"), source="<default study>")
