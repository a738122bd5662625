"""What the comparison statistics share: their conventions, checks at the edge and bootstrap helpers.

The conventions (`statistics`' docstring says them in full): a non-finite value counts as the worst
(`_worst`); a configuration is told apart by its `config` columns; seeds split into tuning and
reporting seeds (`_split_seeds`); intervals are seeded percentile bootstraps (`_median_ci`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gdjax import spelling
from gdjax.io import BLEW_UP

MODES = ("min", "max")
_NUM_RESAMPLES = 9999


# --- checks at the edge -------------------------------------------------------------------------


def _require(frame: pd.DataFrame, columns: Sequence[str], argument: str, *, rows: bool = True) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{argument} is missing column(s) {missing}; it has {list(frame.columns)}")
    if rows and frame.empty:
        raise ValueError(f"{argument} has no rows")


def _is_number(x) -> bool:
    """A finite real number (NumPy scalars included, booleans not)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and bool(np.isfinite(x))


def _check_choice(value, choices: Sequence[str], argument: str) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{argument}={value!r} is not one of {list(choices)}")


def _check_config(frame: pd.DataFrame, config, argument: str) -> list[str]:
    if isinstance(config, str):
        raise ValueError(f"config must be a list of column names, not the string {config!r}")
    config = list(config)
    missing = [c for c in config if c not in frame.columns]
    if missing:
        raise ValueError(f"config names column(s) {missing} that {argument} lacks")
    return config


def _check_confidence(confidence) -> None:
    if not (_is_number(confidence) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a number in (0, 1); got {confidence!r}")


def _check_eps(eps) -> list[float]:
    values = [eps] if np.ndim(eps) == 0 else list(eps)
    if not values or not all(_is_number(e) and 0.0 < e < 1.0 for e in values):
        raise ValueError(f"eps must be a number or list of numbers in (0, 1); got {eps!r}")
    return [float(e) for e in values]


def _check_optimizer(lanes: pd.DataFrame, name, argument: str) -> None:
    known = sorted(str(o) for o in lanes["optimizer"].unique())
    if name not in known:
        close = spelling.closest(name, known)
        hint = f"did you mean {close!r}?" if close else f"known: {known}"
        raise ValueError(f"{argument}={name!r} is not an optimizer in lanes; {hint}")


def check_tuning_seeds(seeds: pd.Series, tuning_seeds) -> list[int] | None:
    """`tuning_seeds` as a list, checked against the seeds present: each one is among them, and at least
    one seed is left over (fresh) to report on. None stays None (choose and report on every seed)."""
    if tuning_seeds is None:
        return None
    if isinstance(tuning_seeds, str) or np.ndim(tuning_seeds) != 1:
        raise ValueError(f"tuning_seeds must be a list of seeds; got {tuning_seeds!r}")
    values = list(tuning_seeds)
    if not values or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in values):
        raise ValueError(f"tuning_seeds must be a non-empty list of integer seeds; got {tuning_seeds!r}")
    present = sorted(int(v) for v in pd.unique(seeds.dropna()))
    unknown = sorted({int(v) for v in values} - set(present))
    if unknown:
        raise ValueError(f"tuning_seeds {unknown} are not among the seeds of the lanes {present}")
    if not set(present) - {int(v) for v in values}:
        raise ValueError(
            f"tuning_seeds {sorted(int(v) for v in values)} cover every seed of the lanes: no fresh seeds "
            "are left to report on; run more seeds or tune on fewer"
        )
    return [int(v) for v in values]


def _split_seeds(rows: pd.DataFrame, tuning_seeds) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows to choose configurations on and the rows to report: the tuning seeds' and the others'.

    A row without a seed (a deterministic lane: full batch from a fixed start) is the same run on every
    seed, so it counts on both sides. Without `tuning_seeds`, every row is on both sides.
    """
    if tuning_seeds is None:
        return rows, rows
    seedless = rows["seed"].isna()
    tuning = rows["seed"].isin(tuning_seeds)
    return rows[tuning | seedless], rows[~tuning | seedless]


def _worst(values, mode: str) -> np.ndarray:
    """Non-finite values count as the worst possible for `mode`."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v), v, np.inf if mode == "min" else -np.inf)


def _worst_of(frame: pd.DataFrame, column: str, mode: str) -> np.ndarray:
    """`frame[column]` with non-finite values and the lanes that blew up (status diverged or
    nonfinite, where the frame has a `status`) as the worst possible for `mode`: a diverged lane's
    last loss is finite (1e248, frozen where it stopped) and must not count as a result."""
    v = np.asarray(frame[column], dtype=float)
    if "status" in frame:
        v = np.where(frame["status"].astype(str).isin(BLEW_UP).to_numpy(), np.nan, v)
    return _worst(v, mode)


def _proxy(x: np.ndarray):
    """A finite, order-preserving stand-in for `x` and the map back.

    Infinities become +-(2 max|finite| + 1), beyond every finite value and larger in magnitude, so order
    statistics, percentiles and signed ranks computed on the proxy never meet `inf - inf`; a result
    beyond the finite range maps back to the infinity it came from.
    """
    finite = x[np.isfinite(x)]
    lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 0.0)
    big = 2.0 * max(abs(lo), abs(hi)) + 1.0
    proxy = np.where(x == np.inf, big, np.where(x == -np.inf, -big, x))

    def back(y):
        y = np.asarray(y, dtype=float)
        return np.where(y > hi, np.inf, np.where(y < lo, -np.inf, y))

    return proxy, back


def _median_ci(strata: list[np.ndarray], confidence: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of the pooled strata, resampling within each stratum.

    `scipy.stats.bootstrap` resamples each of several samples independently, which is a stratified
    bootstrap when each stratum is passed as its own sample. Strata of one value cannot be resampled
    (and need not be: a resample of one value is that value); they enter the statistic as constants.
    """
    proxy, back = _proxy(np.concatenate(strata))
    parts = np.split(proxy, np.cumsum([s.size for s in strata])[:-1])
    varying = [p for p in parts if p.size >= 2]
    fixed = np.concatenate([p for p in parts if p.size < 2] + [np.empty(0)])
    if not varying:
        return np.nan, np.nan

    def statistic(*samples, axis=-1):
        shape = np.broadcast_shapes(*(s.shape[:-1] for s in samples))
        arrays = [np.broadcast_to(s, shape + s.shape[-1:]) for s in samples]
        arrays.append(np.broadcast_to(fixed, shape + fixed.shape))
        return np.median(np.concatenate(arrays, axis=-1), axis=-1)

    rng = np.random.default_rng(seed)
    options = dict(vectorized=True, axis=-1, confidence_level=confidence, method="percentile", rng=rng)
    ci = stats.bootstrap(tuple(varying), statistic, n_resamples=_NUM_RESAMPLES, **options).confidence_interval
    return float(back(ci.low)), float(back(ci.high))
