"""The figures of a finished run: `draw_plots` writes the plots a config names into its run folder.

The command calls `draw_plots` after `gdjax.study.experiment.run_experiment`, drawing into the
finished folder's staging area (`runfolder.PlotStage`); the figures come from `gdjax.study.plots`.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from gdjax import reference
from gdjax.io import BLEW_UP, format_number
from gdjax.study import plots
from gdjax.study.preflight import is_line
from gdjax.study.summary import METRIC_NAMES, best_configurations, config_key
from gdjax.types import Status

__all__ = ["draw_plots"]


def _lanes_of(trace, lanes: list[int]):
    idx = np.asarray(lanes)
    eval_steps = trace.eval_steps  # shared by every lane: kept whole
    out = jax.tree.map(lambda x: np.asarray(x)[idx], trace._replace(eval_steps=None))
    return out._replace(eval_steps=eval_steps)


def _best_curves(mine, best, results, p, x_axis) -> dict:
    """The traces of each optimizer's best configuration, by label, on the figure's x axis."""
    curves = {}
    for u in mine:
        b = best.get(u.optimizer.label)
        if b is not None:
            trace = _lanes_of(results[u.key].trace, b["lanes"])
            curves[_best_label(b)] = _on_x_axis(trace, b.get("batch_size"), p, x_axis)
    return curves


def _best_label(b: dict) -> str:
    skip = {"optimizer", "cost", "rule", "final_loss", "suboptimality", "steps_to_target", "status", "steps"}
    skip |= {"seeds", "lanes", "schedule", "batch_size", "suboptimality_vs_best", *METRIC_NAMES}
    parts = [
        f"{plots.abbreviate(k)}={format_number(v)}" for k, v in b.items() if k not in skip and v is not None
    ]
    if b.get("batch_size") is not None:
        parts.append(f"batch={b['batch_size']}")
    return f"{b['optimizer']} ({', '.join(parts)})" if parts else b["optimizer"]


_PLAIN_GD = ("sgd", "gd")


def _lr_sweep_figure(cfg, p, swept, results, title_cost: str):
    """Final loss against learning rate, one panel per optimizer (their learning rates are not on
    one scale: Adam's step is about `learning_rate` per coordinate, GD's `learning_rate * grad`).

    The predicted bound `2/L` is drawn on the panels of plain gradient descent with a constant step,
    the rule it is the bound of.
    """
    from matplotlib.figure import Figure

    cols = min(len(swept), 2)
    nrows = -(-len(swept) // cols)
    fig = Figure(figsize=(8.5 * cols, 4.5 * nrows), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    for ax, u in zip(axes, swept, strict=False):
        rows = [dict(r, rule=u.optimizer.label) for r in results[u.key].rows]
        varying = [
            k for k in u.optimizer.axes() if k != "learning_rate" and len({repr(r.get(k)) for r in rows}) > 1
        ]
        if len({repr(r.get("batch_size")) for r in rows}) > 1:
            varying.append("batch_size")
        plain = u.optimizer.rule in _PLAIN_GD and u.optimizer.schedule == "constant"
        plain = plain and all(b is None for b in u.batch_size)
        test = "test_loss" in (p.metrics or {})
        if test:  # training and held-out loss on one axis: raw losses, no f*
            rows = [dict(r, rule=f"{u.optimizer.label} (training)") for r in rows]
            rows += [
                dict(r, rule=f"{u.optimizer.label} (test)", final_loss=r.get("test_loss"))
                for r in results[u.key].rows
            ]
        plots.learning_rate_sweep_from(
            rows,
            group_by=["rule", *varying],
            max_stable_lr=p.curvature.get("max_stable_lr") if plain else None,
            f_star=None if test else p.f_star,
            title=u.optimizer.label,
            ax=ax,
        )
        if test:
            ax.set_ylabel("final loss (training, held-out test)")
    for ax in axes[len(swept) :]:
        ax.set_visible(False)
    fig.suptitle(f"{cfg.name}: final loss vs learning rate{title_cost}")
    return fig


_MAX_GRID_LINES = 12


def _suffix(cfg, p) -> str:
    return f"-{p.label}" if len(cfg.costs) > 1 else ""


def _grid_label(u, row: dict) -> str:
    """`lr=0.1, momentum=0.9`: the values of the swept hyperparameters of one lane."""
    parts = [f"{plots.abbreviate(k)}={format_number(row.get(k))}" for k in u.optimizer.axes()]
    if len(u.batch_size) > 1:
        parts.append(f"batch={row.get('batch_size') or 'full'}")
    return ", ".join(parts) or u.optimizer.label


def _on_x_axis(trace, batch_size: int | None, p, x_axis: str):
    """The trace as the x axis wants it: per step, or resampled at whole epochs (examples / n)."""
    if x_axis == "steps" or p.dataset is None:
        return trace
    n = p.dataset.X.shape[0]
    per_epoch = n / (batch_size or n)  # steps per epoch
    loss = np.asarray(trace.loss_history)
    evals = np.arange(loss.shape[-1]) if trace.eval_steps is None else np.asarray(trace.eval_steps)
    evals = evals.reshape(-1, evals.shape[-1])[0]
    num_epochs = int(evals[-1] / per_epoch)
    wanted = np.round(np.arange(num_epochs + 1) * per_epoch)
    idx = np.minimum(np.searchsorted(evals, wanted, side="left"), loss.shape[-1] - 1)
    stop = np.asarray(trace.stop_step)
    stop = np.where(stop >= 0, np.ceil(stop / per_epoch), stop).astype(stop.dtype)
    metrics = {k: np.asarray(v)[..., idx] for k, v in (trace.metrics or {}).items()} or None
    return trace._replace(loss_history=loss[..., idx], stop_step=stop, eval_steps=None, metrics=metrics)


def _has(curves: dict, metric: str) -> bool:
    return any(metric in (getattr(t, "metrics", None) or {}) for t in curves.values())


def _loss_figure(cfg, p, curves: dict, title: str):
    """Training loss (or loss - f*) per step; with a held-out split, the raw training loss (solid) and
    the test loss (dashed, same colour) on one axis."""
    test = _has(curves, "test_loss")
    f_star = None if test else p.f_star
    fig = plots.loss_curves(curves, f_star=f_star, title=title)
    ax = fig.axes[0]
    ax.set_ylabel("loss - f*" if f_star is not None else "loss")
    if test:
        old = ax.get_legend()
        handles = list(old.legend_handles) if old is not None else []
        plots.metric_curves(curves, "test_loss", ax=ax, linestyle="--", legend=False)
        if old is not None:
            old.remove()
        plots._legend(ax, handles + _style_handles())
        ax.set_ylabel("loss")
    if cfg.outputs.x_axis == "epochs" and p.dataset is not None:
        ax.set_xlabel("epochs (examples processed / number of examples)")
    return fig


def _style_handles() -> list:
    from matplotlib.lines import Line2D

    return [
        Line2D([], [], color="#555555", lw=1.6, ls="-", label="training data"),
        Line2D([], [], color="#555555", lw=1.6, ls="--", label="held-out test data"),
    ]


def _accuracy_figure(cfg, p, curves: dict, title: str):
    """Training accuracy (solid) and, with a held-out split, test accuracy (dashed) per step."""
    fig = plots.metric_curves(curves, "accuracy", title=title, legend=False)
    ax = fig.axes[0]
    handles, _ = ax.get_legend_handles_labels()
    if _has(curves, "test_accuracy"):
        plots.metric_curves(curves, "test_accuracy", ax=ax, linestyle="--", legend=False)
        handles += _style_handles()
    ax.set_ylabel("accuracy")
    # The first steps climb from chance; the comparison is in the last percents.
    late = [
        np.asarray(line.get_ydata(), np.float64)[len(line.get_ydata()) // 10 :] for line in ax.get_lines()
    ]
    late = np.concatenate(late) if late else np.zeros(0)
    late = late[np.isfinite(late)]
    if late.size:
        lo = float(late.min())
        ax.set_ylim(max(0.0, lo - 0.1 * (1.0 - lo) - 0.005), 1.0 + 0.02 * (1.0 - lo) + 0.002)
    plots._legend(ax, handles)
    if cfg.outputs.x_axis == "epochs" and p.dataset is not None:
        ax.set_xlabel("epochs (examples processed / number of examples)")
    return fig


def draw_plots(cfg, problems, unit_list, results, folder: str) -> list[str]:
    """Draws `cfg.outputs.plots` into the run folder; returns the paths written.

    Files are `<plot>.png`, `<plot>-<optimizer>.png` for the per-optimizer `*_grid` plots, with
    `-<cost>` added when the config has several costs.
    """
    written = []
    x_axis = cfg.outputs.x_axis
    for pi, p in enumerate(problems):
        mine = [u for u in unit_list if u.problem == pi and u.key in results]
        if not mine:
            continue
        rows = [r for u in mine for r in results[u.key].rows]
        metrics = tuple(p.metrics or ())
        chosen = best_configurations(rows, cfg.outputs.rank_by, metrics, cfg.outputs.tuning_seeds)
        best = {b["optimizer"]: b for b in chosen}
        title_cost = f" ({p.label})" if len(cfg.costs) > 1 else ""
        sfx = _suffix(cfg, p)
        small = [u for u in mine if 2 <= _num_configs(results[u.key].rows, metrics) <= _MAX_GRID_LINES]
        figs: list[tuple[str, Any]] = []
        for name in cfg.outputs.plots:
            if name == "loss_curves":
                curves = _best_curves(mine, best, results, p, x_axis)
                if curves:
                    title = f"{cfg.name}: best of each optimizer{title_cost}"
                    figs.append((f"loss_curves{sfx}.png", _loss_figure(cfg, p, curves, title)))
            elif name == "loss_curves_grid":
                for u in small:
                    r = results[u.key]
                    groups: dict[str, list[int]] = {}
                    for row in r.rows:
                        groups.setdefault(_grid_label(u, row), []).append(row["lane"])
                    curves = {}
                    for label, lanes in groups.items():
                        bs = r.rows[lanes[0]].get("batch_size")
                        curves[label] = _on_x_axis(_lanes_of(r.trace, lanes), bs, p, x_axis)
                    title = f"{cfg.name}: {u.optimizer.label}, every grid point{title_cost}"
                    figs.append(
                        (f"loss_curves-{u.optimizer.label}{sfx}.png", _loss_figure(cfg, p, curves, title))
                    )
            elif name == "accuracy" and "accuracy" in (p.metrics or {}):
                curves = _best_curves(mine, best, results, p, x_axis)
                if curves:
                    title = f"{cfg.name}: accuracy of the best of each optimizer{title_cost}"
                    figs.append((f"accuracy{sfx}.png", _accuracy_figure(cfg, p, curves, title)))
            elif name == "lr_sweep":
                swept = [u for u in mine if len(u.optimizer.axes().get("learning_rate", ())) >= 2]
                if swept:
                    figs.append((f"lr_sweep{sfx}.png", _lr_sweep_figure(cfg, p, swept, results, title_cost)))
            elif name == "contour" and p.num_params == 2:
                paths = {}
                for u in mine:
                    b = best.get(u.optimizer.label)
                    if b:
                        paths[_best_label(b)] = _lanes_of(results[u.key].trace, b["lanes"][:1])
                if paths:
                    title = f"{cfg.name}: paths of the best runs{title_cost}"
                    figs.append((f"contour{sfx}.png", _contour_figure(p, paths, title)))
            elif name == "contour_grid" and p.num_params == 2:
                for u in small:
                    r = results[u.key]
                    paths = {}
                    for row in r.rows:
                        paths.setdefault(_grid_label(u, row), _lanes_of(r.trace, [row["lane"]]))
                    title = f"{cfg.name}: {u.optimizer.label} paths{title_cost}"
                    figs.append((f"contour-{u.optimizer.label}{sfx}.png", _contour_figure(p, paths, title)))
            elif name == "fitted_line" and is_line(p):
                ds = p.dataset
                lines = {}
                for u in mine:
                    b = best.get(u.optimizer.label)
                    if not b:
                        continue
                    params = jax.tree.map(
                        lambda x, i=b["lanes"][0]: np.asarray(x)[i], results[u.key].trace.params
                    )
                    if ds.standardizer is not None:
                        params = ds.standardizer.unstandardize(params)
                    lines[_best_label(b)] = params
                lines["least squares"] = reference.least_squares(ds.X_raw, ds.y)
                fig = plots.fitted_line(
                    ds.X_raw,
                    ds.y,
                    lines,
                    title=f"{cfg.name}: fitted lines vs least squares",
                    xlabel=ds.feature_names[0],
                    ylabel=ds.feature_names[1],
                )
                figs.append((f"fitted_line{sfx}.png", fig))
        for fname, fig in figs:
            written.append(plots.save(fig, os.path.join(folder, fname)))
    return written


def _num_configs(rows: list[dict], metrics) -> int:
    return len({config_key(r, metrics) for r in rows})


def _contour_figure(p, paths: dict, title: str):
    minimizer = p.minimizer
    if isinstance(minimizer, dict):
        minimizer = {k: np.asarray(v) for k, v in minimizer.items()}
    return plots.contour(
        p.cost,
        list(paths.values()),
        labels=list(paths),
        data=p.data,
        minimizer=minimizer,
        bounds=_contour_bounds(p, paths.values()),
        title=title,
    )


def _plane(params_history) -> np.ndarray:
    """`(T, 2)` points of a two-number params history: `(w, b)` for the linear model, else in order."""
    if isinstance(params_history, dict) and set(params_history) == {"w", "b"}:
        w = np.asarray(params_history["w"]).reshape(np.shape(params_history["b"])[0], -1)[:, 0]
        return np.stack([w, np.asarray(params_history["b"])], axis=1)
    leaves = [np.asarray(x).reshape(np.shape(x)[0], -1) for x in jax.tree.leaves(params_history)]
    return np.concatenate(leaves, axis=1)[:, :2]


def _contour_bounds(p, traces) -> tuple | None:
    """Bounds covering the paths that did not blow up and the minimizer (a diverged path is left to
    run off the picture instead of shrinking everything else to a dot); None: the plot's default."""
    points = []
    for t in traces:
        for lane in range(np.shape(t.status)[0]):
            if str(Status(int(t.status[lane]))) in BLEW_UP:
                continue
            points.append(_plane(jax.tree.map(lambda x, i=lane: np.asarray(x)[i], t.params_history)))
    if not points:
        return None
    if p.minimizer is not None:
        points.append(_plane(jax.tree.map(lambda x: np.asarray(x)[None], p.minimizer)))
    pts = np.concatenate(points)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.maximum(hi - lo, 1e-3 * np.maximum(1.0, np.abs(hi)))
    lo, hi = lo - 0.15 * span, hi + 0.15 * span
    return ((float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1])))
