"""Final loss against learning rate (`plots.learning_rate_sweep`, `plots.learning_rate_sweep_from`).

Re-exported by `plots`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from gdjax.io import BLEW_UP
from gdjax.study.plotstyle import (
    _STATUS_NAMES,
    STATUS_COLORS,
    STATUS_STYLES,
    _f_star_from_rows,
    _floor_for,
    _group_colors,
    _is_sweep_result,
    _legend,
    _log_limits,
    _new_axes,
    _per_run,
    _plain_log_ticks,
    _status_handles,
    _status_names,
    _summary_rows,
    _sweep_f_star,
    config_labels,
)

if TYPE_CHECKING:  # only for annotations: importing this module must not import matplotlib
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


_SUMMARY_KEYS = frozenset(
    {"lane", "rule", "seed", "start", "batch_size", "final_loss", "suboptimality", "steps_to_target"}
    | {"status", "steps", "stop_step", "suboptimality_vs_best"}
)


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
