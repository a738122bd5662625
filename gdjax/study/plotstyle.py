"""What the figures of `plots` share: status styles and colours, labels, log axes, legends, `save`.

Matplotlib is imported inside the functions (see `plots`, which re-exports the public names here).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from gdjax.io import BLEW_UP, atomic_write, format_number
from gdjax.study.palette import PALETTE, RULE_COLORS, color_for, rule_key
from gdjax.types import Status, Trace

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
_SEQUENTIAL_FROM = 4  # settings of one rule drawn along a colormap rather than in its shades
_STATUS_NAMES = tuple(str(s) for s in Status)
_LR_ABBREV = {"learning_rate": "lr"}
_SEED_KEYS = ("seed", "start")  # replicates of one configuration: banded, not separate lines


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
def _per_run(name: str, values, n: int) -> list:
    values = list(values)
    if len(values) != n:
        raise ValueError(f"got {len(values)} {name} for {n} runs")
    return values


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
