"""Matplotlib figures for comparing runs: loss curves, learning-rate sweeps, contours, fitted lines.

Matplotlib is imported inside the functions, so `import gdjax.study.plots` stays cheap and a headless
library user who never plots never loads it. Every function builds a `matplotlib.figure.Figure`
with the object-oriented API (no `pyplot`, no global state, no GUI backend) and returns it;
`save(fig, path)` writes it atomically. Pass `ax=` to draw into an axes of your own figure instead.

Inputs are plain: loss arrays, `Trace`s (one run, or a sweep's with a leading lane axis), lists of
summary dicts. A sweep result is accepted by duck typing (`.trace`, `.coords`, `.summary()`), so
this module does not depend on `gdjax.sweep`. What `gdjax.sweep` itself returned can also be drawn
as `gdjax report` draws a study: `loss_curves(result)` of several optimizers (or of more
configurations than a legend holds) builds `gdjax.study.results(result)` and draws
`gdjax.study.figures.loss_curves` (each optimizer's best configuration, seeds as a band).

Colours are consistent across figures: a rule name (`sgd`, `momentum`, `adam`, ...) always gets the
colour in `RULE_COLORS`; diverged and non-finite runs are always drawn with the red markers of
`STATUS_STYLES`, so "red x" means "blew up" in every figure.

Example:
  >>> import gdjax
  >>> from gdjax import rules
  >>> from gdjax.study import plots
  >>> from gdjax.loop import run
  >>> X, y = gdjax.data.house_prices()
  >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
  >>> trace = run(cost, rules.sgd(0.05), gdjax.init_linear(1), (X, y), num_steps=500)
  >>> fig = plots.loss_curves({"sgd": trace}, f_star=gdjax.reference.optimal_cost(X, y))
  >>> plots.save(fig, "/tmp/loss.png")
  '/tmp/loss.png'
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.io import BLEW_UP, atomic_write, format_number
from gdjax.study.palette import PALETTE, RULE_COLORS, color_for, rule_key
from gdjax.types import PyTree, Status, Trace

if TYPE_CHECKING:  # only for annotations: importing this module must not import matplotlib
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# ------------------------------------------------------------------------------------------ palette
# The optimizers' colours live in gdjax.study.palette (figures.py uses them too); kept here by name.


class StatusStyle(NamedTuple):
    """How a run's status is marked: `color` None means the run's own (rule) colour."""

    marker: str
    color: str | None
    label: str


STATUS_STYLES: dict[str, StatusStyle] = {
    "converged": StatusStyle("o", None, "converged"),
    "max_steps": StatusStyle("o", None, "max_steps (budget used)"),
    "diverged": StatusStyle("x", "#d62728", "diverged"),
    "nonfinite": StatusStyle("^", "#7b0a0a", "nonfinite (NaN/inf)"),
    "invalid": StatusStyle("s", "#9467bd", "invalid (a value outside its domain; no step)"),
}
# For colouring by status (tables, scatter plots of a sweep); the figures here colour by rule and
# keep the status in the marker, except for the red of runs that blew up.
STATUS_COLORS: dict[str, str] = {
    "converged": "#2ca02c",
    "max_steps": "#7f7f7f",
    "diverged": STATUS_STYLES["diverged"].color,
    "nonfinite": STATUS_STYLES["nonfinite"].color,
    "invalid": STATUS_STYLES["invalid"].color,
}
_BLOWUP_DECADES = 3  # how far above the calm runs a loss-curve axis follows a blow-up
_SEQUENTIAL_FROM = 4  # settings of one rule drawn along a colormap rather than in its shades
_LOG_LEVEL_DEPTH = 1e-5  # lowest log-spaced contour level, as a fraction of the cost's range
_STATUS_NAMES = tuple(str(s) for s in Status)
_LR_ABBREV = {"learning_rate": "lr"}
_SEED_KEYS = ("seed", "start")  # replicates of one configuration: banded, not separate lines
_SUMMARY_KEYS = frozenset(
    {"lane", "rule", "seed", "start", "batch_size", "final_loss", "suboptimality", "steps_to_target"}
    | {"status", "steps", "stop_step", "suboptimality_vs_best"}
)
_MAX_CONFIGURATION_LINES = 8  # more configurations of a sweep than this: its optimizers' best ones


def status_colors(statuses) -> list[str]:
    """`STATUS_COLORS` for a sequence of statuses (`Status` codes, ints or lower-case names)."""
    return [STATUS_COLORS[s] for s in _status_names(statuses, None)]


def _shade(color: str, t: float) -> tuple[float, float, float]:
    """`color` mixed towards black (t < 0) or white (t > 0) by |t|."""
    from matplotlib.colors import to_rgb

    rgb = np.asarray(to_rgb(color))
    target = 1.0 if t > 0 else 0.0
    return tuple(float(c) for c in rgb + abs(t) * (target - rgb))


def _group_colors(names: Sequence[str | None]) -> list:
    """One colour per group: the rule's colour; several configurations of one rule get its shades.

    A figure of a single rule at `_SEQUENTIAL_FROM` or more settings uses the `plasma` colormap
    instead (dark to bright in the order given), which stays readable for long sweeps.

    An unknown name gets its `color_for` colour (the same as in every other figure) unless another
    group of the figure has that colour already; then the next palette colour not in use, so a
    figure of `run 0, run 1, ...` has distinct colours.
    """
    keys = [rule_key(n) if n is not None else None for n in names]
    if len(keys) >= _SEQUENTIAL_FROM and len(set(keys)) == 1 and keys[0] in RULE_COLORS:
        # One rule at many settings (a learning-rate sweep): shades of one hue blur together, so
        # the settings run along a sequential colormap in the order given.
        from matplotlib import colormaps

        return [colormaps["plasma"](0.85 * i / (len(keys) - 1)) for i in range(len(keys))]
    used = {RULE_COLORS[k] for k in keys if k in RULE_COLORS}
    base: dict[str | None, str] = {}
    for k in keys:
        if k in base:
            continue
        if k in RULE_COLORS:
            base[k] = RULE_COLORS[k]
            continue
        own = color_for(k) if k is not None else PALETTE[0]
        spare = [c for c in PALETTE if c not in used]
        base[k] = own if own not in used else (spare[0] if spare else PALETTE[len(base) % len(PALETTE)])
        used.add(base[k])
    counts = {k: keys.count(k) for k in base}
    seen: dict[str | None, int] = {}
    colors = []
    for k in keys:
        i = seen.get(k, 0)
        seen[k] = i + 1
        n = counts[k]
        # Dark to light within one rule: shades stay recognisably the rule's colour.
        colors.append(base[k] if n == 1 else _shade(base[k], -0.55 + 1.0 * i / (n - 1)))
    return colors


# ----------------------------------------------------------------------------------- small helpers
def _new_axes(ax: Axes | None, figsize=(7.0, 4.5)) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    # Constrained layout: tight packing that also makes room for legends and colour bars.
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _status_name(s: Any) -> str:
    if isinstance(s, str):
        name = s.strip().lower()
        if name.startswith("status."):
            name = name[len("status.") :]
        if name not in _STATUS_NAMES:
            raise ValueError(f"unknown status {s!r}; statuses are {', '.join(_STATUS_NAMES)}")
        return name
    try:
        return str(Status(int(s)))
    except (TypeError, ValueError):
        raise ValueError(
            f"unknown status {s!r}; use a gdjax.Status code (0-{len(_STATUS_NAMES) - 1}) or one of "
            f"{', '.join(_STATUS_NAMES)}"
        ) from None


def _status_names(statuses, n: int | None) -> list[str]:
    if statuses is None:
        return ["max_steps"] * (n or 0)
    if isinstance(statuses, str | int | np.integer):
        statuses = [statuses]
    names = [_status_name(s) for s in np.asarray(statuses, dtype=object).ravel().tolist()]
    if n is not None and len(names) != n:
        raise ValueError(f"got {len(names)} statuses for {n} runs")
    return names


def _is_trace(obj) -> bool:
    return isinstance(obj, Trace) or all(
        hasattr(obj, a) for a in ("loss_history", "params_history", "status", "stop_step")
    )


def _is_sweep_result(obj) -> bool:
    return hasattr(obj, "trace") and hasattr(obj, "coords") and _is_trace(obj.trace)


def _fmt(v: Any) -> str:
    return format_number(v, 3)


def abbreviate(name: str) -> str:
    """The short name of a hyperparameter in legends and labels (`learning_rate` -> `lr`)."""
    return _LR_ABBREV.get(name, name)


def config_labels(coords: Sequence[Mapping[str, Any]]) -> list[str]:
    """Legend labels for sweep lanes: the rule plus the settings that vary, seeds and starts left out.

    `[{"rule": "sgd", "learning_rate": 0.01, "seed": 0}, {"rule": "sgd", "learning_rate": 0.1, ...}]`
    gives `["sgd lr=0.01", "sgd lr=0.1"]`; lanes differing only in seed or start share a label.
    """
    coords = [dict(c) for c in coords]
    keys = [k for k in dict.fromkeys(k for c in coords for k in c) if k not in _SEED_KEYS and k != "rule"]
    # None marks a setting a lane's rule does not have: it neither varies nor gets printed.
    varying = [k for k in keys if len({repr(c[k]) for c in coords if c.get(k) is not None}) > 1]
    labels = []
    for c in coords:
        parts = [str(c["rule"])] if "rule" in c else []
        parts += [f"{abbreviate(k)}={_fmt(c[k])}" for k in varying if c.get(k) is not None]
        labels.append(" ".join(parts) or "run")
    return labels


def _summary_rows(result) -> list[dict]:
    if hasattr(result, "summary") and callable(result.summary):
        result = result.summary()
    rows = [dict(r) for r in result]
    if not rows:
        raise ValueError("the sweep summary is empty: nothing to plot")
    return rows


def _f_star_from_rows(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The f* a sweep knew, recovered as `final_loss - suboptimality` (None if it knew none)."""
    for r in rows:
        sub, final = r.get("suboptimality"), r.get("final_loss")
        if sub is not None and final is not None and np.isfinite(sub) and np.isfinite(final):
            return float(final) - float(sub)
    return None


def _sweep_f_star(result) -> float | None:
    """The f* a sweep result knew: its `f_star` attribute, else recovered from its summary."""
    f_star = getattr(result, "f_star", None)
    if f_star is not None:
        return float(f_star)
    return _f_star_from_rows(_summary_rows(result)) if hasattr(result, "summary") else None


def _floor_for(values: np.ndarray, f_star: float | None, dtype, floor: float | None) -> float:
    """The smallest value drawn on a log axis.

    With f* known, `loss - f*` below the loss dtype's resolution at f* (`eps * |f*|`) is rounding
    noise, not progress; otherwise the smallest positive value plotted.
    """
    if floor is not None:
        if not floor > 0:
            raise ValueError(f"floor must be > 0 for a log axis, got {floor}")
        return float(floor)
    if f_star is not None and f_star != 0:
        eps = np.finfo(dtype).eps if np.issubdtype(dtype, np.floating) else np.finfo(float).eps
        return float(eps * abs(f_star))
    positive = values[np.isfinite(values) & (values > 0)]
    return float(positive.min()) if positive.size else 1.0


def _log_limits(values: np.ndarray, *, pad_low=0.05, pad_high=0.05) -> tuple[float, float]:
    """Log-axis limits around positive finite values, padded by fractions of the decade span."""
    v = values[np.isfinite(values) & (values > 0)]
    if not v.size:
        return 1e-1, 1e1
    lo, hi = math.log10(v.min()), math.log10(v.max())
    span = max(hi - lo, 1.0)
    return 10 ** (lo - pad_low * span), 10 ** (hi + pad_high * span)


def _plain_log_ticks(axis, lo: float, hi: float) -> None:
    """Log-axis tick labels as plain numbers (0.01, not 10^-2); 2 and 5 labelled on short ranges."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    if math.log10(hi / lo) < 2.5:

        def minor(v, _):
            mantissa = v / 10 ** math.floor(math.log10(v) + 1e-9)
            return f"{v:g}" if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""

        axis.set_minor_formatter(FuncFormatter(minor))
    else:
        axis.set_minor_formatter(NullFormatter())


def _legend(ax: Axes, handles=None, **kwargs):
    """A legend that stays readable: small font, moved outside the axes when it is long."""
    if handles is None:
        handles, _ = ax.get_legend_handles_labels()
    if not handles:
        return None
    if len(handles) > 8:
        kwargs.setdefault("loc", "upper left")
        kwargs.setdefault("bbox_to_anchor", (1.02, 1.0))
        kwargs.setdefault("borderaxespad", 0.0)
    return ax.legend(handles=handles, fontsize="small", framealpha=0.9, **kwargs)


def _status_handles(present: Sequence[str], *, prefix: str = "", blown_suffix: str = "") -> list:
    """Legend entries for the status markers present (`prefix` on each, `blown_suffix` on the red)."""
    from matplotlib.lines import Line2D

    handles = []
    for name in ("converged", "max_steps", "diverged", "nonfinite"):
        if name not in present:
            continue
        style = STATUS_STYLES[name]
        color = style.color or "#333333"
        hollow = name == "max_steps"
        label = prefix + style.label + (blown_suffix if name in BLEW_UP else "")
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker=style.marker,
                color=color,
                markerfacecolor="none" if hollow else color,
                markeredgewidth=2 if name == "diverged" else 1,
                markersize=7,
                label=label,
            )
        )
    return handles


# ------------------------------------------------------------------------------------- loss curves
class _Run(NamedTuple):
    loss: np.ndarray  # (num_evals,): at every step, or at the trace's eval_steps
    status: str
    stop_step: int  # -1: did not stop
    label: str
    group: str | None
    x: np.ndarray | None = None  # the steps of `loss` (a trace's eval_steps); None: 0, 1, 2, ...
    known_steps: bool = True  # False: a bare loss array, whose x is only the evaluation's index

    def steps(self) -> np.ndarray:
        return np.arange(len(self.loss)) if self.x is None else self.x

    def stop_index(self) -> int:
        """Index into `loss` of the stop: the first evaluation at or after `stop_step`."""
        if self.x is None:
            return self.stop_step
        return int(min(np.searchsorted(self.x, self.stop_step, side="left"), len(self.x) - 1))


def _eval_steps(trace, length: int) -> np.ndarray | None:
    """A trace's evaluation steps when they are not simply 0, 1, 2, ... (an `eval_every` > 1)."""
    steps = getattr(trace, "eval_steps", None)
    if steps is None:
        return None
    steps = np.asarray(steps).reshape(-1, np.shape(steps)[-1])[0] if np.ndim(steps) else None
    if steps is None or len(steps) != length or np.array_equal(steps, np.arange(length)):
        return None
    return steps.astype(np.int64)


def _lanes(obj, label: str, group: str | None) -> list[_Run]:
    """Runs from a Trace (one or many lanes) or a loss array (1-D: one run, 2-D: rows are runs)."""
    if _is_trace(obj):
        loss = np.asarray(obj.loss_history)
        lead = loss.shape[:-1]
        loss = loss.reshape(-1, loss.shape[-1])
        status = _status_names(np.broadcast_to(np.asarray(obj.status), lead), loss.shape[0])
        stop = np.broadcast_to(np.asarray(obj.stop_step), lead).reshape(-1).tolist()
        x = _eval_steps(obj, loss.shape[-1])
    else:
        loss = np.asarray(obj)
        if loss.ndim not in (1, 2) or loss.shape[-1] == 0:
            raise ValueError(
                f"a loss curve must be a non-empty 1-D array (or 2-D, one row per run), got shape "
                f"{loss.shape}"
            )
        loss = loss.reshape(-1, loss.shape[-1])
        status, stop = ["max_steps"] * loss.shape[0], [-1] * loss.shape[0]
        x = None
    known = _is_trace(obj)
    if not np.issubdtype(loss.dtype, np.number):
        raise ValueError(f"loss values must be numbers, got dtype {loss.dtype}")
    many = loss.shape[0] > 1
    return [
        _Run(loss[i], status[i], int(stop[i]), f"{label} [{i}]" if many else label, group, x, known)
        for i in range(loss.shape[0])
    ]


def _collect_runs(curves) -> tuple[list[_Run], float | None]:
    """Normalises every accepted `curves` input to runs; also returns a sweep's f* if it knew one."""
    if _is_sweep_result(curves):
        runs = _lanes(curves.trace, "run", None)
        coords = list(curves.coords)
        if len(coords) != len(runs):
            raise ValueError(f"sweep result has {len(coords)} coords for {len(runs)} lanes")
        names = config_labels(coords)
        runs = [r._replace(label=n, group=n) for r, n in zip(runs, names, strict=True)]
        return runs, _sweep_f_star(curves)
    if isinstance(curves, Mapping):
        runs = []
        for name, value in curves.items():
            runs += _lanes(value, str(name), str(name))
        return runs, None
    if _is_trace(curves) or isinstance(curves, np.ndarray | jax.Array):
        return _lanes(curves, "run", None), None
    if isinstance(curves, Sequence) and not isinstance(curves, str):
        if (
            curves
            and all(np.ndim(c) == 0 for c in curves if not _is_trace(c))
            and not any(_is_trace(c) for c in curves)
        ):
            return _lanes(np.asarray(curves), "run", None), None  # one run given as a list of numbers
        runs = []
        for i, c in enumerate(curves):
            runs += _lanes(c, f"run {i}", None)
        return runs, None
    raise ValueError(
        "curves must be a Trace, a sweep result, a loss array, a list of those, or a dict "
        f"{{label: Trace or losses}}; got {type(curves).__name__}"
    )


def _per_run(name: str, values, n: int) -> list:
    values = list(values)
    if len(values) != n:
        raise ValueError(f"got {len(values)} {name} for {n} runs")
    return values


def _marker_y(y: np.ndarray, step: int) -> float | None:
    """Where a stop marker sits: the value at the stop, or the last finite value before it."""
    step = min(max(step, 0), len(y) - 1)
    finite = np.flatnonzero(np.isfinite(y[: step + 1]))
    return float(y[finite[-1]]) if finite.size else None


def loss_curves(
    curves,
    *,
    f_star: float | None = None,
    labels: Sequence[str] | None = None,
    groups: Sequence[str] | None = None,
    statuses=None,
    stop_steps=None,
    band: str = "minmax",
    title: str | None = None,
    logy: bool = True,
    floor: float | None = None,
    ax: Axes | None = None,
    steps=None,
    configurations: str = "auto",
) -> Figure:
    """Loss (or suboptimality `loss - f*`) against step, one line per run or per group of runs.

    Runs sharing a group (the seeds or starting points of one configuration) are drawn as the
    group's median line with a shaded band over the runs (min to max, or 25th to 75th percentile),
    so a comparison of optimizers is not a tangle of seed lines. A run that stopped gets a marker
    at its stop step in its status's shape (`STATUS_STYLES`): a circle where it converged, a red
    `x` where it diverged, a dark-red triangle where the loss went NaN / infinite. The frozen tail
    after a diverged or non-finite stop is not drawn: it measures nothing. On the log axis a
    blow-up is followed at most three decades above the other runs (and every run's start); past
    that its line leaves through the top and its marker sits on the top edge, so one run that
    overflowed to 1e300 does not flatten the comparison.

    Args:
      curves: what to plot: a `Trace` (one run, or a sweep's with a leading lane axis); a sweep
        result (`.trace`, `.coords`: grouped by rule and hyperparameters, banded over seeds and
        starts, labelled with what varies); a loss array (1-D, or 2-D with one row per run); a list
        of Traces / loss arrays; or a dict `{label: Trace or losses}` whose entries with several
        lanes are each one banded group.
      f_star: the optimal loss; plots `loss - f_star` instead of the loss. A sweep result that knew
        f* (its summary has a `suboptimality`) uses it by default.
      labels: one legend label per run (after lists and lanes are expanded).
      groups: one group name per run; runs with the same name become one banded line.
      statuses, stop_steps: per run, for loss arrays (Traces carry their own).
      band: `"minmax"` or `"iqr"` (25th-75th percentile).
      title: optional axes title.
      logy: log y axis (default). Values at or below zero are raised to `floor`.
      floor: smallest value drawn on the log axis; default the loss dtype's resolution at f*
        (`eps * |f*|`, below which `loss - f*` is rounding noise), or the smallest positive value.
      ax: draw into this axes instead of a new figure.
      steps: `(num_evals,)` the steps at which loss arrays were evaluated (e.g. `<unit>/eval_steps`
        of a run folder's `histories.npz`, one row of it); without it a bare array is drawn against
        its evaluation index and the axis says "evaluation". Traces carry their own steps.
      configurations: for a `gdjax.sweep` result: `"all"` draws one line per configuration (banded
        over seeds and starts); `"best"` draws each optimizer's best configuration (median final
        loss over seeds) as `gdjax.study.figures.loss_curves` does for `gdjax report`: the colour of
        each optimizer as in every figure, the interquartile band over seeds, epochs on the axis when
        the lanes used mini-batches; `"auto"` (default) is `"best"` when the sweep ran several
        optimizers or more than 8 configurations, and `"all"` otherwise or when `labels`, `groups`,
        `statuses` or `stop_steps` are given. `band` and `floor` apply to `"all"`.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    if band not in ("minmax", "iqr"):
        raise ValueError(f"band must be 'minmax' or 'iqr', got {band!r}")
    if configurations not in ("auto", "all", "best"):
        raise ValueError(f"configurations must be 'auto', 'all' or 'best', got {configurations!r}")
    custom = any(v is not None for v in (labels, groups, statuses, stop_steps))
    if configurations == "best" and not _python_sweep(curves):
        raise ValueError(
            f"configurations='best' needs what gdjax.sweep returned, got {type(curves).__name__}"
        )
    if configurations == "best" and custom:
        raise ValueError(
            "configurations='best' draws one line per optimizer: labels, groups, statuses "
            "and stop_steps apply to configurations='all'"
        )
    if configurations == "best" or (configurations == "auto" and not custom and _crowded(curves)):
        return _best_loss_curves(curves, f_star=f_star, title=title, logy=logy, ax=ax)
    runs, sweep_f_star = _collect_runs(curves)
    if not runs:
        raise ValueError("no runs to plot")
    n = len(runs)
    if steps is not None:
        steps = np.asarray(steps)
        if steps.ndim != 1 or not np.issubdtype(steps.dtype, np.number):
            raise ValueError(
                f"steps must be a 1-D array of step numbers, got shape {steps.shape} {steps.dtype}"
            )
        for r in runs:
            if not r.known_steps and len(r.loss) != len(steps):
                raise ValueError(f"steps has {len(steps)} entries but a loss curve has {len(r.loss)}")
        runs = [r if r.known_steps else r._replace(x=steps.astype(np.int64), known_steps=True) for r in runs]
    f_star = sweep_f_star if f_star is None else f_star
    if labels is not None:
        runs = [r._replace(label=str(v)) for r, v in zip(runs, _per_run("labels", labels, n), strict=True)]
    if groups is not None:
        runs = [r._replace(group=str(v)) for r, v in zip(runs, _per_run("groups", groups, n), strict=True)]
    if statuses is not None:
        runs = [r._replace(status=s) for r, s in zip(runs, _status_names(statuses, n), strict=True)]
    if stop_steps is not None:
        runs = [
            r._replace(stop_step=int(s))
            for r, s in zip(runs, _per_run("stop_steps", stop_steps, n), strict=True)
        ]

    dtype = np.result_type(*[r.loss.dtype for r in runs])
    ys = []
    for r in runs:
        y = r.loss.astype(np.float64)
        if f_star is not None:
            y = y - float(f_star)
        if r.status in BLEW_UP and r.stop_step >= 0:
            y[r.stop_index() + 1 :] = np.nan  # the frozen tail of a blown-up run is not a measurement
        ys.append(np.where(np.isfinite(y), y, np.nan))
    if logy:
        lo = _floor_for(np.concatenate(ys), f_star, dtype, floor)
        ys = [np.where(y > lo, y, np.where(np.isnan(y), np.nan, lo)) for y in ys]

    # Groups in order of first appearance; an ungrouped run is its own group.
    order: dict[Any, list[int]] = {}
    for i, r in enumerate(runs):
        order.setdefault(("g", r.group) if r.group is not None else ("r", i), []).append(i)
    names = [runs[m[0]].group if k[0] == "g" else runs[m[0]].label for k, m in order.items()]
    colors = _group_colors(names)

    # A blow-up to 1e177 would flatten every other curve: show at most _BLOWUP_DECADES above
    # the runs that did not blow up (and every run's start); the rest leaves through the top.
    top = None
    if logy:
        values = np.concatenate(ys)
        values = values[np.isfinite(values)]
        calm = [y for r, y in zip(runs, ys, strict=True) if r.status not in BLEW_UP]
        calm = np.concatenate([*calm, np.array([y[0] for y in ys])])
        calm = calm[np.isfinite(calm)]
        if calm.size and values.size and values.max() > calm.max() * 10**_BLOWUP_DECADES:
            top = float(calm.max() * 10**_BLOWUP_DECADES)

    fig, ax = _new_axes(ax)
    if logy:
        ax.set_yscale("log")
        if top is not None:
            bottom, _ = _log_limits(values[values <= top], pad_low=0.05)
            ax.set_ylim(bottom, top)
    banded = False
    for (_, members), name, color in zip(order.items(), names, colors, strict=True):
        length = max(len(ys[i]) for i in members)
        block = np.full((len(members), length), np.nan)
        for j, i in enumerate(members):
            block[j, : len(ys[i])] = ys[i]
        longest = max(members, key=lambda i: len(ys[i]))
        steps = runs[longest].steps()[:length]
        if len(members) == 1:
            ax.plot(steps, block[0], color=color, lw=1.6, label=name)
        else:
            q = (0, 100) if band == "minmax" else (25, 75)
            with warnings.catch_warnings():
                # Steps where every run of the group has stopped are NaN on purpose (line ends).
                warnings.simplefilter("ignore", RuntimeWarning)
                mid = np.nanmedian(block, axis=0)
                low, high = np.nanpercentile(block, q, axis=0)
            ax.plot(steps, mid, color=color, lw=1.8, label=f"{name} (median of {len(members)})")
            ax.fill_between(steps, low, high, color=color, alpha=0.2, lw=0)
            banded = True
        for i in members:
            r = runs[i]
            if r.status == "max_steps" or r.stop_step < 0:
                continue
            y_at = _marker_y(ys[i], r.stop_index())
            if y_at is None:
                continue
            if top is not None:
                y_at = min(y_at, top)
            style = STATUS_STYLES[r.status]
            mcolor = style.color or color
            ax.plot(
                [r.steps()[min(r.stop_index(), len(ys[i]) - 1)]],
                [y_at],
                ls="none",
                marker=style.marker,
                markersize=8,
                markeredgewidth=2 if r.status == "diverged" else 1,
                color=mcolor,
                zorder=4,
                clip_on=False,  # a blown-up run's marker may sit on the capped top edge
                gid=f"stop:{r.status}",
            )

    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    # A bare loss array has no steps: its x is the index of the evaluation, which is a step only
    # when every step was evaluated.
    ax.set_xlabel("step" if all(r.known_steps for r in runs) else "evaluation")
    if f_star is None:
        ax.set_ylabel("loss")
    else:
        ax.set_ylabel(f"loss − f*   (f* = {float(f_star):.6g})")
    ax.set_xlim(0, max(int(r.steps()[-1]) for r in runs) or 1)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    if banded:
        from matplotlib.patches import Patch

        what = "min–max" if band == "minmax" else "25–75%"
        handles.append(Patch(color="#555555", alpha=0.2, label=f"band: {what} over runs"))
    stopped = sorted({r.status for r in runs if r.stop_step >= 0 and r.status != "max_steps"})
    handles += _status_handles(stopped, prefix="stopped: ")
    _legend(ax, handles)
    return fig


def _python_sweep(obj) -> bool:
    """Whether `obj` is what `gdjax.sweep` returned (not only its duck type: the results model needs it)."""
    module = sys.modules.get("gdjax.sweep")  # not loaded: nothing can be one of its results
    return module is not None and isinstance(obj, module.SweepResult)


def _crowded(curves) -> bool:
    """A sweep with several optimizers, or too many configurations for one line each."""
    if not _python_sweep(curves):
        return False
    configurations = {tuple((k, repr(v)) for k, v in c.items() if k not in _SEED_KEYS) for c in curves.coords}
    return len({c["rule"] for c in curves.coords}) > 1 or len(configurations) > _MAX_CONFIGURATION_LINES


def _best_loss_curves(result, *, f_star, title, logy, ax) -> Figure:
    """`gdjax.study.figures.loss_curves` of a sweep: each optimizer's best configuration."""
    from gdjax.study import figures
    from gdjax.study.results_model import results

    if f_star is not None:
        result = result.with_f_star(f_star)
    r = results(result, problem=title or "sweep")
    with warnings.catch_warnings(action="ignore", category=RuntimeWarning):  # medians of blown-up lanes
        fig = figures.loss_curves(r, ax=ax)
    if not logy:
        for a in fig.axes:
            a.set_yscale("linear")
    return fig


# ---------------------------------------------------------------------------------- metric curves
def metric_curves(
    curves: Mapping[str, Trace],
    metric: str,
    *,
    title: str | None = None,
    ylabel: str | None = None,
    logy: bool = False,
    linestyle: str = "-",
    label_suffix: str = "",
    legend: bool = True,
    ax: Axes | None = None,
) -> Figure:
    """A user metric's history (`trace.metrics[metric]`, e.g. a held-out accuracy) against step.

    One line per entry of `curves`, the median over its lanes with a min-max band when it has
    several, in the colour `loss_curves` gives the same label, so that a metric drawn into the loss
    figure (`ax=`, `linestyle="--"`) pairs with its loss curve. A lane's values after a diverged or
    non-finite stop are left out. Entries without the metric are skipped.

    What `gdjax.sweep` returned is drawn as `gdjax report` draws it
    (`gdjax.study.figures.metric_curves`): the metric of each optimizer's best configuration (by
    median final loss), median over seeds with the interquartile band, against steps or epochs.

    Args:
      curves: `{label: Trace}` (one run, or a sweep's lanes), or a `gdjax.sweep` result.
      metric: the metric's name.
      title, ylabel: axes texts (`ylabel` defaults to the metric's name).
      logy: log y axis.
      linestyle, label_suffix: how the lines are drawn and what their legend labels end with.
      legend: draw the legend (off to add the lines to a legend of your own).
      ax: draw into this axes instead of a new figure.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    if _python_sweep(curves):
        from gdjax.study import figures
        from gdjax.study.results_model import results

        r = results(curves, problem=title or "sweep")
        fig, ax = _new_axes(ax)
        with warnings.catch_warnings(action="ignore", category=RuntimeWarning):  # blown-up lanes' medians
            figures.metric_curves(r, metrics=[metric], ax=ax)
        ax.set_ylabel(ylabel or metric)
        if logy:
            ax.set_yscale("log")
        return fig
    if not isinstance(curves, Mapping):
        raise ValueError(
            f"curves must be a dict {{label: Trace}} or a gdjax.sweep result, got {type(curves).__name__}"
        )
    fig, ax = _new_axes(ax)
    names = list(curves)
    colors = _group_colors([str(n) for n in names])
    drawn = False
    for name, color in zip(names, colors, strict=True):
        trace = curves[name]
        values = (getattr(trace, "metrics", None) or {}).get(metric)
        if values is None:
            continue
        values = np.asarray(values, np.float64)
        block = values.reshape(-1, values.shape[-1]).copy()
        runs = _lanes(trace, str(name), str(name))
        for j, r in enumerate(runs):
            if r.status in BLEW_UP and r.stop_step >= 0:
                block[j, r.stop_index() + 1 :] = np.nan
        block[~np.isfinite(block)] = np.nan
        steps = runs[0].steps()[: block.shape[1]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # steps where every lane stopped are NaN
            mid = np.nanmedian(block, axis=0)
            low, high = np.nanmin(block, axis=0), np.nanmax(block, axis=0)
        many = block.shape[0] > 1
        label = f"{name}{label_suffix}" + (f" (median of {block.shape[0]})" if many else "")
        ax.plot(steps, mid, color=color, lw=1.6, ls=linestyle, label=label)
        if many:
            ax.fill_between(steps, low, high, color=color, alpha=0.15, lw=0)
        drawn = True
    if not drawn:
        raise ValueError(f"no curve has the metric {metric!r}")
    if logy:
        ax.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel or metric)
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if legend:
        _legend(ax)
    return fig


# ------------------------------------------------------------------------------ learning-rate sweep
def learning_rate_sweep(
    learning_rates,
    final_losses,
    statuses=None,
    *,
    max_stable_lr: float | None = None,
    f_star: float | None = None,
    groups: Sequence[str] | None = None,
    title: str | None = None,
    floor: float | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Final loss (or suboptimality) against learning rate, with the diverged region marked.

    Both axes are logarithmic. Each group (an optimizer) is one line through the median final loss
    at each learning rate, with every run as a marker: filled where it converged, hollow where it
    used its whole budget. Runs that diverged or went non-finite have no meaningful final loss, so
    they are drawn as red `x` (diverged) or dark-red triangles (non-finite) in a row at the top of
    the axes (one row per group), joined to their group's curve by a dotted line; the region from
    the smallest learning rate at which any run blew up is shaded red. The constant-step stability
    bound `2/L` (from `gdjax.reference.curvature(X).max_stable_lr`) is a dashed vertical line.

    Args:
      learning_rates: `(n,)` positive learning rates, one per run.
      final_losses: `(n,)` final losses.
      statuses: `(n,)` `Status` codes or names; None means every run used its budget.
      max_stable_lr: draw the predicted stability bound `2/L` here.
      f_star: plot `final_loss - f_star` (suboptimality).
      groups: `(n,)` group names (e.g. rule names); one line per group.
      title: optional axes title.
      floor: smallest value drawn (see `loss_curves`).
      ax: draw into this axes instead of a new figure.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    from matplotlib.patches import Patch

    lrs = np.asarray(learning_rates, dtype=np.float64).ravel()
    losses_in = np.asarray(final_losses)
    losses = np.asarray(losses_in, dtype=np.float64).ravel()
    n = lrs.size
    if n == 0:
        raise ValueError("no runs to plot")
    if losses.size != n:
        raise ValueError(f"got {losses.size} final losses for {n} learning rates")
    if not np.all(np.isfinite(lrs) & (lrs > 0)):
        raise ValueError(f"learning rates must be finite and > 0 for a log axis, got {lrs.tolist()}")
    if max_stable_lr is not None and not (np.isfinite(max_stable_lr) and max_stable_lr > 0):
        raise ValueError(f"max_stable_lr must be a finite number > 0, got {max_stable_lr}")
    status = _status_names(statuses, n)
    group_of = [None] * n if groups is None else [str(g) for g in _per_run("groups", groups, n)]
    names = list(dict.fromkeys(group_of))
    colors = dict(zip(names, _group_colors(names), strict=True))

    y = losses - (float(f_star) if f_star is not None else 0.0)
    blew = np.array([s in BLEW_UP for s in status])
    good = ~blew & np.isfinite(y)
    y = np.where(good, y, np.nan)
    lo = _floor_for(y[good], f_star, losses_in.dtype, floor)
    y = np.where(good & (y <= lo), lo, y)

    # Limits first: the markers for blown-up runs sit in a reserved strip at the top.
    rows = [g for g in names if any(blew[i] for i in range(n) if group_of[i] == g)]
    ylo, yhi = _log_limits(y[good], pad_low=0.08, pad_high=0.08)
    strip = 0.08 * max(len(rows), 1) + 0.04
    decades = math.log10(yhi / ylo)
    ytop = 10 ** (math.log10(yhi) + decades * strip / (1 - strip))
    xs = lrs if max_stable_lr is None else np.append(lrs, max_stable_lr)
    xlo, xhi = _log_limits(xs, pad_low=0.06, pad_high=0.12 if blew.any() else 0.06)

    fig, ax = _new_axes(ax, figsize=(8.5, 4.5))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(xlo, xhi)
    ax.set_ylim(ylo, ytop)
    _plain_log_ticks(ax.xaxis, xlo, xhi)
    if math.log10(yhi / ylo) <= 3 and ylo >= 1e-4 and yhi <= 1e6:
        _plain_log_ticks(ax.yaxis, ylo, yhi)  # a short range of everyday numbers reads better plain

    def row_y(k: int) -> float:
        # Row k of the top strip (rows 0.08 of the axes height apart), in data coordinates.
        frac = 1 - (0.04 + 0.08 * (k + 0.5))
        return 10 ** (math.log10(ylo) + frac * math.log10(ytop / ylo))

    handles = []
    if blew.any():
        first = float(lrs[blew].min())
        ax.axvspan(first, xhi, color=STATUS_COLORS["diverged"], alpha=0.08, lw=0, zorder=0)
        handles.append(
            Patch(color=STATUS_COLORS["diverged"], alpha=0.15, label=f"diverged region (lr ≥ {first:.3g})")
        )
        # The strip above this line holds runs without a final loss: its ticks would lie.
        ax.axhline(yhi, color="#888888", lw=0.8, zorder=1)
    for g in names:
        idx = np.array([i for i in range(n) if group_of[i] == g])
        color = colors[g]
        ulr = np.unique(lrs[idx])
        med = np.full(ulr.shape, np.nan)
        for j, lr in enumerate(ulr):
            v = y[idx][(lrs[idx] == lr) & good[idx]]
            if v.size:
                med[j] = np.median(v)
        label = g if g is not None else ("final loss" if f_star is None else "final loss − f*")
        (line,) = ax.plot(ulr, med, color=color, lw=1.6, label=label, zorder=2)
        handles.append(line)
        for s, face in (("converged", color), ("max_steps", "none")):
            sel = idx[[status[i] == s for i in idx] & good[idx]]
            if sel.size:
                ax.plot(
                    lrs[sel],
                    y[sel],
                    ls="none",
                    marker="o",
                    color=color,
                    markerfacecolor=face,
                    markersize=6,
                    zorder=3,
                    gid=f"lanes:{s}",
                )
        if g in rows:
            yk = row_y(rows.index(g))
            for s in BLEW_UP:
                sel = idx[[status[i] == s for i in idx]]
                if sel.size:
                    style = STATUS_STYLES[s]
                    ax.plot(
                        lrs[sel],
                        np.full(sel.size, yk),
                        ls="none",
                        marker=style.marker,
                        color=style.color,
                        markersize=9,
                        markeredgewidth=2.2 if s == "diverged" else 1,
                        zorder=4,
                        clip_on=False,
                        gid=f"blown:{s}",
                    )
            # Dotted jump from the last stable learning rate to the first one that blew up.
            finite = np.isfinite(med)
            blown_lrs = lrs[idx][blew[idx]]
            if finite.any():
                last = ulr[finite][-1]
                after = blown_lrs[blown_lrs > last]
                if after.size:
                    ax.plot(
                        [last, after.min()],
                        [med[finite][-1], yk],
                        ls=":",
                        color=color,
                        lw=1.4,
                        zorder=2,
                    )
    if max_stable_lr is not None:
        handles.append(
            ax.axvline(
                max_stable_lr,
                ls="--",
                color="black",
                lw=1.3,
                zorder=1,
                label=f"2/L = {max_stable_lr:.3g} (predicted stable bound)",
            )
        )
    present = sorted(set(status), key=_STATUS_NAMES.index)
    handles += _status_handles(present, blown_suffix=", top strip")
    if rows:
        for minor in (False, True):
            ticks = [t for t in ax.get_yticks(minor=minor) if ylo <= t <= yhi]
            ax.set_yticks(ticks, minor=minor)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final loss" if f_star is None else f"final loss − f*   (f* = {float(f_star):.6g})")
    if title:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    # Outside the axes: a sweep's points can fill any corner.
    _legend(ax, handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return fig


def learning_rate_sweep_from(
    result,
    *,
    max_stable_lr: float | None = None,
    f_star: float | None = None,
    group_by: Sequence[str] | None = None,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """`learning_rate_sweep` from a sweep result or its summary (a list of dicts, one per lane).

    Each row needs `learning_rate`, `final_loss` and `status`. Lanes are grouped by rule plus every
    other hyperparameter that varies (seeds and starts are pooled into the median), or by the keys
    in `group_by`: a sweep result names its hyperparameters (`hyperparameter_names`); in bare rows
    every key is one except the summary's outcomes and the metrics `summary()` puts after
    `stop_step`. f* defaults to the one the sweep knew (from the rows' `suboptimality`).
    """
    if f_star is None and _is_sweep_result(result):
        f_star = _sweep_f_star(result)
    names = getattr(result, "hyperparameter_names", None)
    rows = _summary_rows(result)
    missing = {"learning_rate", "final_loss", "status"} - set(rows[0])
    if missing:
        raise ValueError(
            f"summary rows need {sorted(missing)} to plot a learning-rate sweep; they have {sorted(rows[0])}"
        )
    if f_star is None:
        f_star = _f_star_from_rows(rows)
    if group_by is None:
        outcomes = _SUMMARY_KEYS
        if names is None:
            from gdjax.study.summary import SUMMARY_KEYS  # a study's rows: its metrics are outcomes

            keys = list(rows[0])
            names = keys[: keys.index("stop_step")] if "stop_step" in keys else keys  # metrics follow it
            outcomes = outcomes | SUMMARY_KEYS
        hyper = [k for k in names if k not in outcomes and k != "learning_rate"]
        varying = [
            k for k in ["batch_size", *hyper] if len({repr(r[k]) for r in rows if r.get(k) is not None}) > 1
        ]
        group_by = ["rule", *varying] if "rule" in rows[0] else varying
    coords = [{k: r.get(k) for k in group_by} for r in rows]
    groups = config_labels(coords) if group_by else None
    return learning_rate_sweep(
        [r["learning_rate"] for r in rows],
        [np.nan if r["final_loss"] is None else r["final_loss"] for r in rows],
        [r["status"] for r in rows],
        max_stable_lr=max_stable_lr,
        f_star=f_star,
        groups=groups,
        title=title,
        ax=ax,
    )


# ------------------------------------------------------------------------------------------ contour
class _Flattener(NamedTuple):
    """Maps a two-number parameter pytree to a point `(x, y)` of the plane and back."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]
    order: tuple[int, int]  # plane axis k shows flat element order[k]
    names: tuple[str, str]

    def points(self, history: PyTree) -> np.ndarray:
        """`(T, 2)` points from a pytree whose leaves have a leading record axis."""
        leaves = jax.tree.leaves(history)
        if jax.tree.structure(history) != self.treedef:
            raise ValueError("every trajectory must have the same parameter structure")
        t = np.shape(leaves[0])[0]
        flat = np.concatenate([np.asarray(x, np.float64).reshape(t, -1) for x in leaves], axis=1)
        return flat[:, list(self.order)]

    def to_params(self, v: jax.Array) -> PyTree:
        flat = jnp.stack([v[self.order.index(0)], v[self.order.index(1)]])
        leaves, start = [], 0
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            size = math.prod(shape)
            leaves.append(flat[start : start + size].reshape(shape).astype(dtype))
            start += size
        return jax.tree.unflatten(self.treedef, leaves)


def _key_name(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _flattener(record: PyTree) -> _Flattener:
    """The plane of a two-number parameter pytree (one record, no leading axis).

    The linear model `{"w": (1,), "b": ()}` puts `w` on x and `b` on y; anything else follows leaf
    order (`x[0]`, `x[1]` for a bare vector of length 2).
    """
    with_path, treedef = jax.tree_util.tree_flatten_with_path(record)
    shapes = tuple(tuple(np.shape(x)) for _, x in with_path)
    sizes = [math.prod(s) for s in shapes]
    if sum(sizes) != 2:
        raise ValueError(
            f"contour plots need exactly two parameters; these params have {sum(sizes)} numbers "
            f"(shapes {list(shapes)}). Pass to_params/from_params to pick a 2-D slice."
        )
    names = []
    for (path, _), size in zip(with_path, sizes, strict=True):
        base = ".".join(_key_name(p) for p in path) or "x"
        names += [base] if size == 1 else [f"{base}[{i}]" for i in range(size)]
    order = (0, 1)
    if isinstance(record, Mapping) and set(record) == {"w", "b"}:
        order = (names.index("w"), names.index("b")) if "w" in names else (0, 1)
    # Canonical: float64 NumPy trajectories map to float32 params when x64 is off.
    dtypes = tuple(jax.dtypes.canonicalize_dtype(np.result_type(x)) for _, x in with_path)
    return _Flattener(treedef, shapes, dtypes, order, (names[order[0]], names[order[1]]))


class _Path(NamedTuple):
    points: np.ndarray  # (T, 2)
    label: str | None
    status: str


def _trajectories(trajectories, flat_from: Callable | None) -> tuple[list[_Path], _Flattener | None]:
    """Normalises trajectories to `(T, 2)` point arrays; returns the flattener of pytree inputs."""
    if _is_sweep_result(trajectories):
        paths, fl = _trajectories(trajectories.trace, flat_from)
        names = config_labels(list(trajectories.coords))
        return [p._replace(label=n) for p, n in zip(paths, names, strict=True)], fl
    if (
        isinstance(trajectories, Mapping)
        and trajectories
        and all(_is_trace(v) for v in trajectories.values())
    ):
        paths, fl = [], None
        for name, trace in trajectories.items():
            sub, fl = _trajectories(trace, flat_from)
            paths += [p._replace(label=str(name)) for p in sub]
        return paths, fl
    if isinstance(trajectories, list | tuple) and not _is_trace(trajectories):
        paths, fl = [], None
        for t in trajectories:
            sub, f = _trajectories(t, flat_from)
            paths += sub
            fl = fl or f
        return paths, fl
    if _is_trace(trajectories):
        history = trajectories.params_history
        lead = np.shape(trajectories.loss_history)[:-1]
        statuses = _status_names(np.broadcast_to(np.asarray(trajectories.status), lead), None)
        if lead:  # a sweep's trace: leaves are (lanes..., records, ...)
            nl = math.prod(lead)
            history = jax.tree.map(lambda x: np.asarray(x).reshape(nl, *np.shape(x)[len(lead) :]), history)
            paths, fl = [], None
            for i in range(nl):
                sub, fl = _trajectories(jax.tree.map(lambda x, i=i: x[i], history), flat_from)
                paths += [p._replace(status=statuses[i]) for p in sub]
            return paths, fl
        sub, fl = _trajectories(history, flat_from)
        return [p._replace(status=statuses[0]) for p in sub], fl
    leaves = jax.tree.leaves(trajectories)
    if not leaves:
        raise ValueError("empty trajectory")
    if flat_from is not None:
        pts = np.asarray(jax.vmap(flat_from)(trajectories), np.float64)
        return [_Path(pts.reshape(-1, 2), None, "max_steps")], None
    fl = _flattener(jax.tree.map(lambda x: np.asarray(x)[0], trajectories))
    return [_Path(fl.points(trajectories), None, "max_steps")], fl


def _default_bounds(points: np.ndarray, margin: float = 0.15):
    """Limits covering `points` with a margin on each side (a unit box around a single point)."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    span = hi - lo
    pad = np.where(span > 0, margin * span, np.maximum(np.abs(lo), 1.0) * 0.5)
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


def _distinct_labels(values: np.ndarray) -> list[str]:
    """The shortest `%g` labels (3 to 10 significant digits) that tell every value apart.

    Log-spaced levels above a large minimum (an MSE of 5691.7) differ in the fifth digit.
    """
    for digits in range(3, 11):
        labels = [f"{v:.{digits}g}" for v in values]
        if len(set(labels)) == len(labels):
            break
    return labels


def _cast_data(data: PyTree, dtype) -> PyTree:
    def cast(x):
        x = jnp.asarray(x)
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(cast, data)


def contour(
    cost: Callable[[PyTree, PyTree], jax.Array],
    trajectories,
    *,
    data: PyTree = None,
    labels: Sequence[str] | None = None,
    bounds: tuple[tuple[float, float], tuple[float, float]] | None = None,
    levels: int | Sequence[float] = 30,
    log_levels: bool = True,
    minimizer: PyTree | None = None,
    param_names: tuple[str, str] | None = None,
    to_params: Callable[[jax.Array], PyTree] | None = None,
    from_params: Callable[[PyTree], jax.Array] | None = None,
    resolution: int = 160,
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Contours of a two-parameter cost with optimisation paths drawn over them.

    The cost is evaluated on a `resolution x resolution` grid by one `jax.vmap` over the grid
    points (each mapped to a params pytree by `to_params`). Levels are log-spaced above the
    minimum by default: costs spanning many orders of magnitude (Rosenbrock, badly scaled least
    squares) would otherwise show one flat band where all the interesting motion happens.
    Each trajectory is a line (with a dot per iterate when there are few) from a hollow circle at
    its start to a filled square at its end; the minimizer is a star.

    Args:
      cost: `cost(params, data) -> scalar`.
      trajectories: a `Trace` (its `params_history`; a sweep's gives one path per lane), a sweep
        result, a params-history pytree with a leading record axis, a `(T, 2)` array, a list of
        those, or a dict `{label: Trace}`. Params must hold exactly two numbers: the linear model
        `{"w": (1,), "b": ()}` is drawn with `w` on x and `b` on y; other pytrees in leaf order.
      data: the batch passed to `cost` (e.g. `(X, y)`).
      labels: one legend label per trajectory.
      bounds: `((x_min, x_max), (y_min, y_max))`; default covers the paths and minimizer with a
        15% margin.
      levels: number of contour levels, or the levels themselves.
      log_levels: space the levels geometrically in the height above the grid's minimum (from
        1e-5 of the range to all of it) rather than evenly, so that valley floors and the
        neighbourhood of the minimizer show; for costs whose range spans many decades.
      minimizer: a params pytree (e.g. `gdjax.reference.least_squares(X, y)`) or a point `(2,)`.
      param_names: axis labels; default the parameter names (`w`, `b`; `x[0]`, `x[1]`).
      to_params: maps a point `(2,)` to the params `cost` takes; default inverts the trajectories'
        structure (a bare vector for `(T, 2)` arrays).
      from_params: maps params to a point `(2,)`, for trajectories whose params hold more than two
        numbers (pair with `to_params` to plot a 2-D slice).
      resolution: grid points per axis.
      title: optional axes title.
      ax: draw into this axes instead of a new figure.

    Returns:
      The `matplotlib.figure.Figure`.
    """
    from matplotlib import colormaps
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    paths, fl = _trajectories(trajectories, from_params)
    if not paths:
        raise ValueError("no trajectories to plot")
    if labels is not None:
        paths = [
            p._replace(label=str(v))
            for p, v in zip(paths, _per_run("labels", labels, len(paths)), strict=True)
        ]
    if to_params is None:
        if fl is None:
            raise ValueError("pass to_params: the trajectories came through from_params")
        to_params = fl.to_params
    if param_names is None:
        param_names = fl.names if fl is not None else ("x[0]", "x[1]")

    star = None
    if minimizer is not None:
        if jax.tree.structure(minimizer).num_leaves == 1 and np.size(jax.tree.leaves(minimizer)[0]) == 2:
            star = np.asarray(jax.tree.leaves(minimizer)[0], np.float64).reshape(2)
            if fl is not None and isinstance(minimizer, Mapping):
                star = fl.points(jax.tree.map(lambda x: np.asarray(x)[None], minimizer))[0]
        elif from_params is not None:
            star = np.asarray(from_params(minimizer), np.float64).reshape(2)
        elif fl is not None:
            star = fl.points(jax.tree.map(lambda x: np.asarray(x)[None], minimizer))[0]
        else:
            raise ValueError("cannot place the minimizer: pass it as a point (2,) or pass from_params")

    if bounds is None:
        pts = np.concatenate([p.points for p in paths] + ([star[None]] if star is not None else []))
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if not pts.size:
            raise ValueError("no finite trajectory points: pass bounds")
        bounds = _default_bounds(pts)
    (x0, x1), (y0, y1) = bounds
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"bounds must be ((x_min, x_max), (y_min, y_max)) with min < max, got {bounds}")

    dtype = jnp.result_type(float)
    gx = np.linspace(x0, x1, resolution)
    gy = np.linspace(y0, y1, resolution)
    U, V = np.meshgrid(gx, gy)
    grid = jnp.asarray(np.stack([U.ravel(), V.ravel()], axis=1), dtype)
    values = jax.jit(jax.vmap(lambda v, d: cost(to_params(v), d), in_axes=(0, None)))(
        grid, _cast_data(data, dtype)
    )
    Z = np.asarray(values, np.float64).reshape(U.shape)
    finite = Z[np.isfinite(Z)]
    if not finite.size:
        raise ValueError("the cost is not finite anywhere inside the bounds")
    zmin, zmax = float(finite.min()), float(finite.max())
    if zmax <= zmin:  # a flat cost: one band around its value
        zmin, zmax = zmin - 0.5 * max(abs(zmin), 1.0), zmax + 0.5 * max(abs(zmax), 1.0)
    if isinstance(levels, int | np.integer):
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        if log_levels:
            # Geometric in the height above the lowest grid value: the floor of a narrow valley
            # (Rosenbrock) or of a badly conditioned bowl gets as many levels as its rim.
            rise = (zmax - zmin) * np.geomspace(_LOG_LEVEL_DEPTH, 1.0, levels - 1)
            lv = np.concatenate([[zmin], zmin + rise])
        else:
            lv = np.linspace(zmin, zmax, levels)
    else:
        lv = np.unique(np.asarray(levels, np.float64))
        if lv.size < 2:
            raise ValueError(f"need at least two distinct contour levels, got {levels!r}")
    labels_of = dict(zip(lv.tolist(), _distinct_labels(lv), strict=True))
    fig, ax = _new_axes(ax, figsize=(7.0, 5.5))
    Zm = np.ma.masked_invalid(Z)
    # A light grey surface, white at the bottom: the paths keep their rule colours and stand out.
    cmap = ListedColormap(colormaps["Greys"](np.linspace(0.0, 0.6, 256)))
    filled = ax.contourf(U, V, Zm, levels=lv, cmap=cmap, norm=BoundaryNorm(lv, cmap.N), extend="neither")
    ax.contour(U, V, Zm, levels=lv[1::3], colors="#666666", linewidths=0.5, alpha=0.7)
    fig.colorbar(
        filled,
        ax=ax,
        label="cost" + (" (levels log-spaced above the minimum)" if log_levels else ""),
        format=FuncFormatter(lambda v, _: labels_of.get(float(v), f"{v:.3g}")),
    )

    # Paths sharing a label (the seeds of one sweep configuration) share a colour and an entry.
    paths = [p if p.label is not None else p._replace(label=f"path {k}") for k, p in enumerate(paths)]
    names = list(dict.fromkeys(p.label for p in paths))
    color_of = dict(zip(names, _group_colors(names), strict=True))
    handles, entered = [], set()
    for p in paths:
        color = color_of[p.label]
        pts = p.points[np.all(np.isfinite(p.points), axis=1)]
        if not pts.size:
            continue
        few = len(pts) <= 60
        (line,) = ax.plot(
            pts[:, 0],
            pts[:, 1],
            color=color,
            lw=1.6,
            marker="." if few else None,
            markersize=4,
            label=p.label,
            zorder=3,
        )
        if p.label not in entered:
            handles.append(line)
            entered.add(p.label)
        ax.plot(*pts[0], ls="none", marker="o", markersize=8, markerfacecolor="white", color=color, zorder=4)
        end_style = STATUS_STYLES[p.status]
        end_color = end_style.color or color
        ax.plot(
            *pts[-1],
            ls="none",
            marker="s" if p.status not in BLEW_UP else end_style.marker,
            markersize=7,
            markeredgewidth=2 if p.status == "diverged" else 1,
            color=end_color,
            markeredgecolor="black" if p.status not in BLEW_UP else end_color,
            zorder=6,  # above the minimizer's star: a converged path ends right on it
        )
    if star is not None:
        ax.plot(
            *star,
            ls="none",
            marker="*",
            markersize=16,
            color="gold",
            markeredgecolor="black",
            zorder=5,
            label="minimizer",
        )
    handles += [
        Line2D([], [], ls="none", marker="o", color="#333333", markerfacecolor="white", label="start"),
        Line2D([], [], ls="none", marker="s", color="#333333", markeredgecolor="black", label="end"),
    ]
    if star is not None:
        handles.append(
            Line2D(
                [],
                [],
                ls="none",
                marker="*",
                markersize=12,
                color="gold",
                markeredgecolor="black",
                label="minimizer",
            )
        )
    blown = sorted({p.status for p in paths if p.status in BLEW_UP})
    handles += _status_handles(blown, prefix="ended: ")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel(param_names[0])
    ax.set_ylabel(param_names[1])
    if title:
        ax.set_title(title)
    _legend(ax, handles, loc="best")
    return fig


# ------------------------------------------------------------------------------------- fitted line
def _as_linear_params(p) -> tuple[float, float]:
    if _is_trace(p):
        p = p.params
    if not (isinstance(p, Mapping) and "w" in p and "b" in p):
        raise ValueError(f"fitted_line takes linear-model params {{'w': (1,), 'b': ()}}, got {p!r}")
    w, b = np.asarray(p["w"], np.float64), np.asarray(p["b"], np.float64)
    if w.size != 1 or b.size != 1:
        raise ValueError(
            f"fitted_line draws one-feature models: w must have one entry and b be a scalar, got "
            f"shapes {w.shape} and {b.shape} (a sweep's params? pick one lane)"
        )
    return float(w.ravel()[0]), float(b.ravel()[0])


def fitted_line(
    X,
    y,
    params_list,
    *,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    xlabel: str = "x",
    ylabel: str = "y",
    ax: Axes | None = None,
) -> Figure:
    """The data of a one-feature regression and the fitted lines `y = w x + b` over it.

    Args:
      X: `(n, 1)` (or `(n,)`) feature; y: `(n,)` targets.
      params_list: linear-model params `{"w": (1,), "b": ()}` (or a `Trace`, whose final params are
        used), a list of them, or a dict `{label: params}`, e.g.
        `{"gdjax sgd": trace.params, "least squares": gdjax.reference.least_squares(X, y)}`.
      labels: one legend label per line (the dict keys by default).
      title, xlabel, ylabel: text for the axes.
      ax: draw into this axes instead of a new figure.

    Returns:
      The `matplotlib.figure.Figure`; each line's legend entry gives its equation.
    """
    x = np.asarray(X, np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"fitted_line draws one feature: X must be (n,) or (n, 1), got shape {np.shape(X)}")
    t = np.asarray(y, np.float64).ravel()
    if t.shape != x.shape:
        raise ValueError(f"X has {x.size} points but y has {t.size}")
    if isinstance(params_list, Mapping) and not ("w" in params_list and "b" in params_list):
        names, items = [str(k) for k in params_list], list(params_list.values())
    elif isinstance(params_list, list | tuple) and not _is_trace(params_list):
        items = list(params_list)
        names = [f"fit {i + 1}" for i in range(len(items))] if len(items) > 1 else ["fit"]
    else:
        items, names = [params_list], ["fit"]
    if labels is not None:
        names = [str(v) for v in _per_run("labels", labels, len(items))]
    lines = [_as_linear_params(p) for p in items]

    fig, ax = _new_axes(ax, figsize=(6.5, 4.5))
    pad = 0.05 * (x.max() - x.min() or 1.0)
    xs = np.linspace(x.min() - pad, x.max() + pad, 2)
    styles = ["-", "--", ":", "-."]
    for k, ((w, b), name, color) in enumerate(zip(lines, names, _group_colors(names), strict=True)):
        sign = "−" if b < 0 else "+"
        ax.plot(
            xs,
            w * xs + b,
            ls=styles[k % len(styles)],
            lw=2.6 if k == 0 else 1.8,
            color=color,
            label=f"{name}: y = {w:.4g} x {sign} {abs(b):.4g}",
            zorder=2,
        )
    ax.scatter(x, t, color="#333333", s=30, zorder=3, label=f"data ({x.size} points)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend(ax, loc="best")
    return fig


# --------------------------------------------------------------------------------------------- save
def save(fig: Figure, path: str | os.PathLike, *, dpi: int = 150, **savefig_kwargs) -> str:
    """Writes `fig` to `path` atomically: to a temporary file in the same folder, then `os.replace`.

    A reader never sees a half-written image, and an error leaves any earlier file in place. The
    format comes from the suffix (`.png`, `.pdf`, `.svg`, ...); missing folders are created.

    Returns:
      The path written, as a string.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    supported = fig.canvas.get_supported_filetypes()
    if suffix not in supported:
        raise ValueError(
            f"cannot tell the image format of {path!r}: use one of the suffixes "
            f"{', '.join('.' + s for s in sorted(supported))}"
        )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format=suffix, dpi=dpi, **savefig_kwargs))
    return path


__all__ = [
    "PALETTE",
    "RULE_COLORS",
    "STATUS_COLORS",
    "STATUS_STYLES",
    "StatusStyle",
    "color_for",
    "config_labels",
    "contour",
    "fitted_line",
    "learning_rate_sweep",
    "learning_rate_sweep_from",
    "loss_curves",
    "save",
    "status_colors",
]
