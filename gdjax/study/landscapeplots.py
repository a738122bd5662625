"""Figures in parameter space: a cost's contour with trajectories (`plots.contour`) and fitted lines
of a linear model (`plots.fitted_line`). Re-exported by `plots`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.io import BLEW_UP
from gdjax.study.plotstyle import (
    STATUS_STYLES,
    _group_colors,
    _is_sweep_result,
    _is_trace,
    _legend,
    _new_axes,
    _per_run,
    _status_handles,
    _status_names,
    config_labels,
)
from gdjax.types import PyTree

if TYPE_CHECKING:  # only for annotations: importing this module must not import matplotlib
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


_LOG_LEVEL_DEPTH = 1e-5  # lowest log-spaced contour level, as a fraction of the cost's range


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
