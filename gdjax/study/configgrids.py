"""The config's optimizer tables: rules, schedules, grids (values, arrays, `logspace`), zipped grids and
quasi-random search (`search = { points, seed, name = [low, high, "log"] }`), checked against each
rule's and cost's hyperparameters with the nearest valid name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gdjax import rules
from gdjax.study.configbase import REQUIRED, OptimizerConfig, Table, label_error, read_batch_sizes, toml_type
from gdjax.sweep import GridError, check_grid
from gdjax.validation import nearest

__all__ = ["MAX_AXIS", "MAX_SEARCH_POINTS", "halton_grid", "read_optimizer_table"]


# The most values on one grid axis, checked before anything is allocated (issue 12).
MAX_AXIS = 100_000


def _read_axis(t: Table, key: str, value) -> Any:
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
        spec = Table(t.src, t.path + (key,), value)
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
        f"got {toml_type(value)}",
    )


def read_optimizer_table(t: Table, callable_costs: tuple[bool, ...] = ()) -> OptimizerConfig:
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
    if (why := label_error(label)) is not None:
        t.fail("label", why)
    zip_grid = t.bool("zip_grid", False)
    num_steps = t.int("num_steps", None, minimum=1)
    batch_size = read_batch_sizes(t, "batch_size", None)
    search = t.table("search", None)
    g = t.table("grid", None if search is not None else REQUIRED)
    if g is None:
        g = Table(t.src, (*t.path, "grid"), {})
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
        # Any key of the grid, a single value too: the search would replace it silently.
        axes = _read_search(search, names, {k for k, _ in grid})
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


def _read_search(s: Table, names, swept: set[str]) -> list[tuple[str, tuple]]:
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


def _check_values(g: Table, opt: OptimizerConfig) -> None:
    """Asks the sweep's own validator (`gdjax.sweep.check_grid`, the one `check_sweep` and `sweep`
    use) whether it takes every value, so that a bad value names its key and line now."""
    try:
        check_grid(opt.rule, opt.sweep_grid(), cost_names=opt.cost_keys())
    except GridError as err:
        axis = isinstance(dict(opt.grid).get(err.key), tuple)
        g.fail((err.key, err.index) if axis and err.index is not None else err.key, err.reason)
    except ValueError as err:
        g.fail(None, str(err))
