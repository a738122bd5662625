"""Loss and metric curves of runs, traces and sweeps (`plots.loss_curves`, `plots.metric_curves`).

A `gdjax.sweep` result of several optimizers, or of more configurations than a legend holds, is drawn
through `gdjax.study.figures` from `gdjax.study.results(result)`. Re-exported by `plots`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np

from gdjax.io import BLEW_UP
from gdjax.study.plotstyle import (
    _SEED_KEYS,
    STATUS_STYLES,
    _floor_for,
    _group_colors,
    _is_sweep_result,
    _is_trace,
    _legend,
    _log_limits,
    _new_axes,
    _per_run,
    _status_handles,
    _status_names,
    _sweep_f_star,
    config_labels,
)
from gdjax.types import Trace

if TYPE_CHECKING:  # only for annotations: importing this module must not import matplotlib
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


_BLOWUP_DECADES = 3  # how far above the calm runs a loss-curve axis follows a blow-up
_MAX_CONFIGURATION_LINES = 8  # more configurations of a sweep than this: its optimizers' best ones


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
