"""The figures of a comparison, drawn from `Results` only (a registry: one function per figure).

A figure is registered once with its name, what it applies to and how it is drawn:

    @figure("loss_curves", applies=lambda r: True, doc="...")
    def loss_curves(r: Results) -> matplotlib.figure.Figure: ...

`gdjax report`, `gdjax list` and the Python API all read `FIGURES`, so a new figure is one function
in this file. Each optimizer keeps one colour in every figure (`palette.color_for`); seeds are drawn
as a median line with an interquartile band, never as separate lines; the x axis is in epochs when
any lane used mini-batches (a full-batch step is one epoch) and in steps otherwise.
"""

from __future__ import annotations

import dataclasses
import io
import math
import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd

from gdjax import spelling
from gdjax.io import format_number
from gdjax.study.palette import color_for
from gdjax.study.results_model import Results

__all__ = ["FIGURES", "FigureSpec", "applicable", "draw", "figure", "render"]

_BLEW_UP = ("diverged", "nonfinite", "invalid")
PAGE_DPI = 110  # the report page's PNGs
_EPS_LIST = (1e-1, 1e-3, 1e-6)  # the targets of the profile figures: f <= f* + eps (f0 - f*)


@dataclasses.dataclass(frozen=True)
class FigureSpec:
    """A registered figure: `draw(results)` returns a matplotlib Figure, when `applies(results)`."""

    name: str
    applies: Callable[[Results], bool]
    draw: Callable[[Results], object]
    doc: str


FIGURES: dict[str, FigureSpec] = {}


def figure(name: str, *, applies: Callable[[Results], bool], doc: str):
    """Registers the decorated `fn(results) -> Figure` as the figure `name`."""

    def register(fn):
        FIGURES[name] = FigureSpec(name, applies, fn, doc)
        return fn

    return register


def applicable(results: Results) -> list[str]:
    """The names of the registered figures that apply to `results`, in the registry's order."""
    return [n for n, spec in FIGURES.items() if spec.applies(results)]


def draw(results: Results, names=None) -> dict[str, object]:
    """The figures `names` (default: every registered figure that applies), by name."""
    if names is None:
        names = applicable(results)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(
            f"unknown figure {unknown[0]!r}{spelling.nearest(unknown[0], FIGURES)}; "
            f"figures: {', '.join(FIGURES)}"
        )
    with warnings.catch_warnings(
        action="ignore", category=RuntimeWarning
    ):  # NaN and infinite medians of blown-up lanes are expected while drawing
        return {n: FIGURES[n].draw(results) for n in names}


def render(results: Results, names=None, *, dpi: int = PAGE_DPI) -> dict[str, bytes]:
    """The figures `names` (default: every one that applies) as PNG bytes, by name: what the report
    page embeds and writes. `gdjax run` calls it in its drawing process (`gdjax.study.drawing`),
    which imports this module and the statistics but not JAX."""
    pngs = {}
    for name, fig in draw(results, names).items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        pngs[name] = buffer.getvalue()
    return pngs


# ------------------------------------------------------------------------------------- helpers
def _problem_panels(r: Results):
    """A figure with a panel per problem, and `(axis, problem, its lanes, whether its f* is known)` each."""
    problems = r.problems["problem"].tolist()
    fig, axes = _panels(len(problems))
    mine = [r.lanes[r.lanes["problem"] == p] for p in problems]
    return fig, [
        (ax, p, lanes, bool(lanes["f_star"].notna().any()))
        for ax, p, lanes in zip(axes, problems, mine, strict=True)
    ]


def _panels(n: int, *, width: float = 6.5, height: float = 4.2, cols: int = 3):
    from matplotlib.figure import Figure

    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _panels_or(ax, problems: list[str]):
    """`_panels` for the problems, or the given axes when the results hold one problem."""
    if ax is None:
        return _panels(len(problems))
    if len(problems) != 1:
        raise ValueError(f"ax= draws one problem; these results hold {len(problems)}: {', '.join(problems)}")
    return ax.figure, [ax]


def _x_column(r: Results) -> str:
    """Epochs when a lane used mini-batches (and the problem's size is known), else steps."""
    minibatch = r.lanes["batch_size"].notna().any()
    return "epoch" if minibatch and r.curves["epoch"].notna().all() else "step"


def _order(r: Results) -> list[str]:
    return list(dict.fromkeys(r.lanes["optimizer"].tolist()))


def _best_lanes(r: Results, by: str = "final_loss", mode: str = "min") -> dict[tuple[str, str], pd.DataFrame]:
    """The lanes (every seed; the fresh seeds under `tuning_seeds`) of each problem's and optimizer's best
    configuration."""
    best = r.best_configurations(by=by, mode=mode)
    out = {}
    for _, row in best.iterrows():
        mine = r.lanes[(r.lanes["problem"] == row["problem"]) & (r.lanes["optimizer"] == row["optimizer"])]
        for c in r.config_columns:
            value = row[c]
            mine = mine[mine[c].isna()] if pd.isna(value) else mine[mine[c] == value]
        if r.tuning_seeds is not None:  # the chosen configuration as reported: on the fresh seeds
            mine = mine[mine["seed"].isna() | ~mine["seed"].isin(list(r.tuning_seeds))]
        out[(row["problem"], row["optimizer"])] = mine
    return out


def _config_text(r: Results, lanes: pd.DataFrame) -> str:
    first = lanes.iloc[0]
    parts = []
    for c in r.hyperparameters:
        v = first[c]
        if isinstance(v, str) or pd.isna(v) or lanes[c].nunique(dropna=True) > 1:
            continue
        parts.append(f"{'lr' if c == 'learning_rate' else c}={format_number(float(v))}")
    if pd.notna(first["batch_size"]):
        parts.append(f"batch={int(first['batch_size'])}")
    return ", ".join(parts)


def _band(ax, x, values: np.ndarray, color, label, log: bool):
    """Median over rows (seeds) with the interquartile band."""
    values = np.asarray(values, np.float64)
    if log:
        values = np.where(values > 0, values, np.nan)
    with np.errstate(invalid="ignore"):
        med = np.nanmedian(values, axis=0)
        lo, hi = np.nanquantile(values, [0.25, 0.75], axis=0)
    ax.plot(x, med, color=color, label=label, lw=1.8)
    if values.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)


def _curve_matrix(r: Results, lanes: pd.DataFrame, column: str):
    curves = r.curves[r.curves["lane"].isin(lanes["lane"])]
    table = curves.pivot(index="lane", columns="step", values=column)
    x_table = curves.pivot(index="lane", columns="step", values=_x_column(r))
    return x_table.iloc[0].to_numpy(np.float64), table.to_numpy(np.float64)


_CEILING = 1e100  # a log axis shows at most this: a lane far past divergence is drawn at the top


def _floored(values, f_star: float = 0.0) -> np.ndarray:
    """`values` (f - f*) on a log axis: at or below the rounding of f* they are drawn at that floor
    (`eps * max(1, |f*|)`), not dropped, so a run that reached f* shows as reaching it; above
    `_CEILING` at the ceiling (matplotlib cannot place ticks up to 1e300)."""
    values = _capped(values)
    floor = np.finfo(np.float64).eps * max(1.0, abs(f_star) if np.isfinite(f_star) else 1.0)
    return np.where(np.isnan(values) | (values > floor), values, floor)


def _capped(values) -> np.ndarray:
    values = np.asarray(values, np.float64)
    return np.where(np.isfinite(values) & (values > _CEILING), _CEILING, values)


def _f_star_of(r: Results, problem: str) -> float:
    value = r.problems.set_index("problem").loc[problem, "f_star"]
    return float(value) if pd.notna(value) else 0.0


def _finish(ax, xlabel: str, ylabel: str, title: str, n: int) -> None:
    """A panel's labels, title, grid and legend (the same in every figure)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, n)


def _finish_share(ax, r: Results, eps: float, xlabel: str) -> None:
    """A profile panel: the share of problems solved, 0 to 1, at target `eps`."""
    ax.set_ylim(-0.02, 1.02)
    _finish(ax, xlabel, "share of problems solved", f"eps = {eps:g}", r.lanes["optimizer"].nunique())


def _legend(ax, n: int):
    """A legend of the labelled lines, if any (a panel where nothing reached the target has none)."""
    if n and ax.get_legend_handles_labels()[1]:
        ax.legend(fontsize=8, loc="best", ncols=1 if n <= 6 else 2, framealpha=0.8)


# ------------------------------------------------------------------------------------- figures
@figure(
    "loss_curves",
    applies=lambda r: len(r.curves) > 0,
    doc="each optimizer's best configuration per problem: f - f* (or loss) against steps or epochs, "
    "median over seeds with the interquartile band",
)
def loss_curves(r: Results, *, ax=None):
    """One panel per problem; `ax`: draw the one problem of `r` into this axes instead (its figure is
    returned, without the figure title)."""
    problems = r.problems["problem"].tolist()
    own = ax is None
    fig, axes = _panels_or(ax, problems)
    best = _best_lanes(r)
    xcol = _x_column(r)
    for ax, p in zip(axes, problems, strict=True):
        info = r.problems.set_index("problem").loc[p]
        known = pd.notna(info["f_star"])
        shown = 0
        for opt in _order(r):
            lanes = best.get((p, opt))
            if lanes is None or lanes.empty:
                continue
            x, y = _curve_matrix(r, lanes, "loss")
            y = _floored(y - float(info["f_star"]), float(info["f_star"])) if known else _capped(y)
            label = f"{opt} ({_config_text(r, lanes)})" if _config_text(r, lanes) else opt
            _band(ax, x, y, color_for(opt), label, log=known or bool(np.nanmin(y) > 0))
            shown += 1
        ax.set_yscale("log")
        _finish(ax, xcol, "f - f*" if known else "loss", p, shown)
    if own:
        fig.suptitle(
            "Best configuration of each optimizer (median over seeds, interquartile band)", fontsize=10
        )
    return fig


@figure(
    "metric_curves",
    applies=lambda r: bool(r.metrics),
    doc="each metric of each optimizer's best configuration (by final loss) against steps or epochs",
)
def metric_curves(r: Results, *, metrics=None, ax=None):
    """One panel per problem and metric (`metrics`: these only); `ax`: draw the one panel there."""
    problems = r.problems["problem"].tolist()
    names = list(r.metrics if metrics is None else metrics)
    unknown = [m for m in names if m not in r.metrics]
    if unknown:
        raise ValueError(
            f"no metric {unknown[0]!r} in these results; metrics: {', '.join(r.metrics) or 'none'}"
        )
    has = r.lanes.groupby("problem")[names].apply(lambda t: t.notna().any())
    pairs = [(p, m) for p in problems for m in names if has.loc[p, m]]  # where the metric was measured
    own = ax is None
    if own:
        fig, axes = _panels(len(pairs))
    else:
        fig, axes = _panels_or(ax, [f"{p}: {m}" for p, m in pairs])
    best = _best_lanes(r)
    for ax, (p, m) in zip(axes, pairs, strict=True):
        drawn = []
        for opt in _order(r):
            lanes = best.get((p, opt))
            if lanes is not None and not lanes.empty:
                drawn.append((opt, *_curve_matrix(r, lanes, m)))
        # A positive metric spanning orders of magnitude (a held-out loss with a spike, or beside a
        # diverged optimizer's band) on a log axis: linear, one curve at 1e230 flattened the others.
        values = np.concatenate([y[np.isfinite(y)].ravel() for _, _, y in drawn] + [np.empty(0)])
        log = values.size > 0 and values.min() > 0 and values.max() / values.min() > 1e3
        for opt, x, y in drawn:
            _band(ax, x, _capped(y) if log else y, color_for(opt), opt, log=log)
        if log:
            ax.set_yscale("log")
        _finish(ax, _x_column(r), m, p, len(drawn))
    if own:
        fig.suptitle(
            "Metrics of each optimizer's best configuration (median over seeds, interquartile band)",
            fontsize=10,
        )
    return fig


def _has_learning_rates(r: Results) -> bool:
    return "learning_rate" in r.hyperparameters and r.lanes["learning_rate"].nunique() > 1


@figure(
    "lr_sensitivity",
    applies=_has_learning_rates,
    doc="final f - f* (or loss) against the learning rate, best over the other hyperparameters, median "
    "over seeds with the interquartile band; diverged configurations marked x at the top",
)
def lr_sensitivity(r: Results):
    from matplotlib.transforms import blended_transform_factory

    fig, panels = _problem_panels(r)
    for ax, p, mine, known in panels:
        column = "suboptimality" if known else "final_loss"
        top = []
        shown = 0
        for opt in _order(r):
            lanes = mine[(mine["optimizer"] == opt) & mine["learning_rate"].notna()]
            if lanes.empty:
                continue
            value = lanes[column].where(~lanes["status"].isin(_BLEW_UP), np.inf)
            keys = ["learning_rate", *[c for c in r.config_columns if c != "learning_rate"]]
            per_config = lanes.assign(_v=value).groupby(keys, dropna=False)["_v"]
            stats = pd.DataFrame(
                {
                    "median": per_config.median(),
                    "q25": per_config.quantile(0.25) if len(lanes) else np.nan,
                    "q75": per_config.quantile(0.75) if len(lanes) else np.nan,
                }
            ).reset_index()
            best = stats.sort_values("median", kind="stable").groupby("learning_rate").head(1)
            best = best.sort_values("learning_rate")
            for c in ("median", "q25", "q75"):
                best[c] = _floored(best[c], _f_star_of(r, p)) if known else _capped(best[c])
            finite = np.isfinite(best["median"].to_numpy())
            color = color_for(opt)
            ax.plot(best["learning_rate"][finite], best["median"][finite], "o-", color=color, label=opt, ms=3)
            ok = finite & np.isfinite(best["q75"].to_numpy())
            ax.fill_between(
                best["learning_rate"][ok], best["q25"][ok], best["q75"][ok], color=color, alpha=0.2
            )
            top.append((opt, best["learning_rate"][~finite].to_numpy()))
            shown += 1
        ax.set_xscale("log")
        ax.set_yscale("log")
        # Each optimizer's diverged learning rates on a row of its own above the axes: on one row, a
        # learning rate where two optimizers diverged showed only the marker drawn last.
        above = blended_transform_factory(ax.transData, ax.transAxes)
        rows = [(opt, lrs) for opt, lrs in top if len(lrs)]
        for k, (opt, lrs) in enumerate(rows):
            y = np.full(len(lrs), 1.0 + 0.035 * (k - (len(rows) - 1) / 2))
            ax.plot(lrs, y, "x", color=color_for(opt), ms=7, clip_on=False, transform=above)
        _finish(ax, "learning rate", "final f - f*" if known else "final loss", p, shown)
        if rows:  # the title clears the rows of markers above the axes
            ax.set_title(ax.get_title(), pad=6 + 9 * len(rows))
    fig.suptitle(
        "Learning-rate sensitivity (median over seeds, interquartile band; x: diverged)", fontsize=10
    )
    return fig


def _grids_2d(r: Results) -> list[tuple[str, str, str, str]]:
    """(problem, optimizer, x, y): optimizers with two numeric hyperparameters of several values."""
    out = []
    for (p, opt), lanes in r.lanes.groupby(["problem", "optimizer"], sort=False):
        axes = [
            h
            for h in r.hyperparameters
            if pd.api.types.is_numeric_dtype(lanes[h]) and lanes[h].nunique(dropna=True) > 1
        ]
        if len(axes) >= 2:
            x = "learning_rate" if "learning_rate" in axes else axes[0]
            y = next(a for a in axes if a != x)
            out.append((p, opt, x, y))
    return out


@figure(
    "heatmap",
    applies=lambda r: bool(_grids_2d(r)),
    doc="median final f - f* (or loss) over two hyperparameters (learning rate x momentum, x L2 ...)",
)
def heatmap(r: Results):
    from matplotlib.colors import LogNorm

    grids = _grids_2d(r)
    fig, axes = _panels(len(grids), width=5.5, height=4.5)
    for ax, (p, opt, xname, yname) in zip(axes, grids, strict=True):
        lanes = r.lanes[(r.lanes["problem"] == p) & (r.lanes["optimizer"] == opt)]
        column = "suboptimality" if lanes["f_star"].notna().any() else "final_loss"
        value = lanes[column].where(~lanes["status"].isin(_BLEW_UP), np.nan)
        table = lanes.assign(_v=value).groupby([yname, xname])["_v"].median().unstack(xname)
        data = _capped(table.to_numpy(np.float64))
        positive = data[np.isfinite(data) & (data > 0)]
        norm = (
            LogNorm(positive.min(), positive.max())
            if positive.size and positive.min() < positive.max()
            else None
        )
        image = ax.imshow(
            np.where(data > 0, data, np.nan), origin="lower", aspect="auto", norm=norm, cmap="viridis_r"
        )
        ax.set_xticks(
            range(len(table.columns)), [format_number(float(v)) for v in table.columns], rotation=45
        )
        ax.set_yticks(range(len(table.index)), [format_number(float(v)) for v in table.index])
        for (i, j), v in np.ndenumerate(data):
            if not np.isfinite(v):
                ax.text(j, i, "div", ha="center", va="center", fontsize=7, color="crimson")
        ax.set_xlabel(xname)
        ax.set_ylabel(yname)
        ax.set_title(f"{p}: {opt}", fontsize=10)
        fig.colorbar(image, ax=ax, label=f"median final {'f - f*' if column == 'suboptimality' else 'loss'}")
    fig.suptitle(
        "Two hyperparameters at once (median over seeds; div: diverged on the median seed)", fontsize=10
    )
    return fig


@figure(
    "tuning_rank",
    applies=lambda r: r.lanes.groupby(["problem", "optimizer"]).size().max() > 1,
    doc="final metric against tuning rank: each optimizer's configurations sorted best first (DeepOBS)",
)
def tuning_rank(r: Results):
    fig, panels = _problem_panels(r)
    for ax, p, mine, known in panels:
        column = "suboptimality" if known else "final_loss"
        shown = 0
        for opt in _order(r):
            lanes = mine[mine["optimizer"] == opt]
            if lanes.empty:
                continue
            value = lanes[column].where(~lanes["status"].isin(_BLEW_UP), np.inf)
            medians = lanes.assign(_v=value).groupby(r.config_columns, dropna=False)["_v"].median()
            ranked = np.sort(medians.to_numpy(np.float64))
            ranked = _floored(ranked, _f_star_of(r, p)) if known else _capped(ranked)
            finite = np.isfinite(ranked)
            ax.plot(
                np.arange(1, len(ranked) + 1)[finite],
                ranked[finite],
                "o-",
                color=color_for(opt),
                ms=3,
                label=opt,
            )
            shown += 1
        ax.set_yscale("log")
        _finish(
            ax,
            "tuning rank (1 = best configuration)",
            "median final f - f*" if known else "median final loss",
            p,
            shown,
        )
    fig.suptitle("Final result against tuning rank (diverged configurations left out)", fontsize=10)
    return fig


def _several_optimizers(r: Results) -> bool:
    return r.lanes["optimizer"].nunique() > 1


@figure(
    "performance_profile",
    applies=_several_optimizers,
    doc="Dolan-Moré performance profiles at eps = 0.1, 0.001 and 1e-6, time in epochs: the share of problems "
    "each optimizer solves within tau times the fastest (tuned solid, defaults dashed)",
)
def performance_profile(r: Results):
    eps_list = _EPS_LIST
    fig, axes = _panels(len(eps_list), width=5.5)
    default = "is_default" in r.lanes.columns and r.lanes["is_default"].any()
    for ax, eps in zip(axes, eps_list, strict=True):
        # One profile of both variants: the defaults' ratios are taken against the best of all, tuned
        # included, as in the page's scores (drawn apart, "default" measured the defaults only against
        # the fastest defaults, and a line sat at 0.67 where the table said 0).
        prof = r.performance_profile(eps, unit="epochs", variant="both" if default else "tuned")
        for variant, style in (("tuned", "-"), ("default", "--")):
            for opt in _order(r):
                mine = prof[(prof["optimizer"] == opt) & (prof["variant"] == variant)]
                if mine.empty:
                    continue
                label = opt if variant == "tuned" else f"{opt} (defaults)"
                ax.step(mine["tau"], mine["rho"], where="post", ls=style, color=color_for(opt), label=label)
        ax.set_xscale("log", base=2)
        _finish_share(ax, r, eps, "tau (time / fastest optimizer's time, epochs)")
    fig.suptitle("Performance profiles: target f <= f* + eps (f0 - f*)", fontsize=10)
    return fig


@figure(
    "data_profile",
    applies=lambda r: len(r.curves) > 0,
    doc="Moré-Wild data profiles at eps = 0.1, 0.001 and 1e-6: the share of problems each optimizer "
    "solves within a budget of epochs",
)
def data_profile(r: Results):
    eps_list = _EPS_LIST
    fig, axes = _panels(len(eps_list), width=5.5)
    end = float(r.curves["epoch"].max()) if len(r.curves) else 1.0  # the lines run to the longest run
    for ax, eps in zip(axes, eps_list, strict=True):
        prof = r.data_profile(eps, unit="epochs")
        prof = prof[(prof["budget"] > 0) & np.isfinite(prof["budget"])]
        for opt in _order(r):
            mine = prof[prof["optimizer"] == opt]
            if not mine.empty:
                x = np.append(mine["budget"].to_numpy(np.float64), max(end, mine["budget"].max()))
                y = np.append(mine["solved"].to_numpy(np.float64), mine["solved"].iloc[-1])
                ax.step(x, y, where="post", color=color_for(opt), label=opt)
        if prof.empty:
            ax.text(0.5, 0.5, "no optimizer reached this target", ha="center", transform=ax.transAxes)
        else:
            ax.set_xscale("log")
        _finish_share(ax, r, eps, "budget (epochs)")
    fig.suptitle("Data profiles (tuned: each optimizer's fastest configuration per problem)", fontsize=10)
    return fig


@figure(
    "best_of_k",
    applies=lambda r: r.lanes.groupby(["problem", "optimizer"]).size().max() > 1,
    doc="expected best final f - f* (or loss) after trying k configurations drawn at random from each "
    "optimizer's grid (exact, from the grid's order statistics)",
)
def best_of_k(r: Results):
    problems = r.problems["problem"].tolist()
    fig, axes = _panels(len(problems))
    known = r.lanes["f_star"].notna().any()
    table = r.expected_best_of_k(by="suboptimality", mode="min")
    for ax, p in zip(axes, problems, strict=True):
        mine = table[table["problem"] == p].assign(
            # Against the best found too, a best lane's 0 is drawn at the floor (a log axis has no
            # 0: one configuration, or all at the best, warned "no positive values" and drew nothing).
            expected=lambda t, p=p: _floored(t["expected"], _f_star_of(r, p))
        )
        for opt in _order(r):
            rows = mine[mine["optimizer"] == opt]
            finite = np.isfinite(rows["expected"].to_numpy(np.float64))
            if finite.any():
                ax.plot(
                    rows["k"][finite], rows["expected"][finite], "o-", color=color_for(opt), ms=3, label=opt
                )
        ax.set_yscale("log")
        _finish(
            ax,
            "configurations tried (k)",
            "expected best f - f*" if known else "expected best (loss - best found)",
            p,
            r.lanes["optimizer"].nunique(),
        )
    fig.suptitle("Tuning budget: expected best result after k random configurations", fontsize=10)
    return fig
