"""Comparison statistics over a study's results: targets, profiles, tuning budgets, paired tests.

Pure functions over the results model's frames (`lanes`: one row per lane; `curves`: one row per lane and
evaluation), each returning a pandas DataFrame. SciPy and NumPy do the statistics; no JAX here.
Conventions: `config` names the columns that tell an optimizer's configurations apart (NaN equals NaN
when grouping); a configuration's value is its median over seeds, and the best configuration has the best
median; a non-finite value (a diverged lane's NaN) counts as the worst (`+inf` in mode "min", `-inf` in
mode "max").

References: Dolan & Moré (2002), performance profiles; Moré & Wild (2009), data profiles; MLCommons
AlgoPerf, `scoring/performance_profile.py`; Sivaprasad et al. (2020), expected best of k; Agarwal et al.
(2021), rliable.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gdjax.study.config import halton_grid  # noqa: F401  (search spaces live with the grids; re-exported)

DEFAULT_EPS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)
UNITS = ("steps", "epochs", "gradient_evaluations", "seconds")
MODES = ("min", "max")
VARIANTS = ("tuned", "default", "both")
MAX_TAU = 4.0
# Columns time_to_target adds that name a target; the profiles keep one profile per combination.
TARGET_KEYS = ("metric", "threshold", "eps", "unit")
_NUM_RESAMPLES = 9999
_BLOCK = 256  # k values per block in expected_best_of_k: bounds memory at _BLOCK x m


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
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {known}"
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


# --- targets ------------------------------------------------------------------------------------


def _unit_factor(lanes: pd.DataFrame, unit: str) -> tuple[np.ndarray, str]:
    """Time per step in `unit` for each lane, and the column it comes from."""
    if unit in ("steps", "gradient_evaluations"):
        return np.ones(len(lanes)), "steps"
    if unit == "seconds":
        _require(lanes, ["seconds_per_step"], "lanes (unit='seconds')")
        return lanes["seconds_per_step"].to_numpy(dtype=float), "seconds_per_step"
    b = lanes["batch_size"].to_numpy(dtype=float) if "batch_size" in lanes else np.full(len(lanes), np.nan)
    full = ~np.isfinite(b)  # full batch: one epoch per step, whatever n is (a test function has none)
    if full.all():
        return np.ones(len(lanes)), "num_examples"
    _require(lanes, ["num_examples"], "lanes (unit='epochs')")
    n = lanes["num_examples"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):  # checked below where a time needs it
        factor = np.where(full, 1.0, b / n)
    return np.where(full | (n > 0), factor, np.nan), "num_examples"


def _f_star(lanes, problem_of_row, values, counts, f_star) -> tuple[np.ndarray, np.ndarray]:
    """f* per lane and where it came from."""
    n = len(lanes)
    finite = counts & np.isfinite(values)
    best = pd.Series(values[finite]).groupby(problem_of_row[finite]).min()
    best_found = lanes["problem"].map(best).to_numpy(dtype=float)
    if isinstance(f_star, str):
        _check_choice(f_star, ("auto", "best found"), "f_star")
        given = np.full(n, np.nan)
        if f_star == "auto" and "f_star" in lanes:
            given = lanes["f_star"].to_numpy(dtype=float)
        use = np.isfinite(given)
        if "f_star_source" in lanes:
            source = lanes["f_star_source"].astype(object).to_numpy()
        else:
            source = np.full(n, "given", dtype=object)
        return np.where(use, given, best_found), np.where(use, source, "best found")
    if isinstance(f_star, Mapping):
        missing = sorted(set(lanes["problem"]) - set(f_star))
        if missing:
            raise ValueError(f"f_star has no value for problem(s) {missing}")
        given = lanes["problem"].map(lambda p: float(f_star[p])).to_numpy(dtype=float)
    elif isinstance(f_star, numbers.Real) and not isinstance(f_star, bool):
        given = np.full(n, float(f_star))
    else:
        raise ValueError(f"f_star must be 'auto', 'best found', a number or a mapping; got {f_star!r}")
    if not np.all(np.isfinite(given)):
        raise ValueError(f"f_star must be finite; got {f_star!r}")
    return given, np.full(n, "given", dtype=object)


def time_to_target(
    lanes: pd.DataFrame,
    curves: pd.DataFrame,
    *,
    eps: float | Sequence[float] | None = None,
    threshold: float | None = None,
    metric: str | None = None,
    mode: str = "min",
    unit: str = "steps",
    f_star="auto",
) -> pd.DataFrame:
    """Time each lane takes to reach a target, in steps, epochs, gradient evaluations or seconds.

    A loss target (Moré & Wild's convergence test) is met at the first evaluation with

        loss <= f_star + eps * (f0 - f_star),

    where `f0` is the lane's loss at its first evaluation (step 0). `f_star` comes from the `f_star`
    column of `lanes`; where that is NaN (or `f_star="best found"`) it is the lowest loss any given lane
    of the problem reached (`f_star_source` then reads "best found"). A metric target is met at the first
    evaluation with `metric >= threshold` (mode "max") or `metric <= threshold` (mode "min").

    The time is the step of the first evaluation meeting the target, times the step's cost in `unit`:
    "steps" and "gradient_evaluations" (one per update) count steps; "epochs" count examples processed
    over the problem's examples, `step * batch_size / num_examples` (a NaN batch size is full batch: one
    epoch per step); "seconds" is `step * seconds_per_step`. With a sparse evaluation schedule this is the
    first *evaluation* meeting the target, so the time is rounded up to the schedule. A lane that never
    meets the target has time `inf`; evaluations after a lane's last step (`steps`), such as those
    recorded after a divergence, do not count, and an "invalid" lane never reaches a target.

    Args:
        lanes: one row per lane: `lane`, `problem`, `optimizer`, `seed`, and as the unit needs them
            `num_examples`, `batch_size`, `seconds_per_step`; `steps`, `status`, `f_star` and
            `f_star_source` are used where present.
        curves: one row per lane and evaluation: `lane`, `step`, and `loss` (or the `metric` column).
        eps: one or several relative tolerances in (0, 1); several give one row per lane and `eps`.
            Default (with no `threshold`): `DEFAULT_EPS`.
        threshold: a metric target instead of a loss target; needs `metric`.
        metric: the curves column the threshold applies to.
        mode: "max" when a larger metric is better, "min" when smaller is (metric targets only).
        unit: "steps", "epochs", "gradient_evaluations" or "seconds".
        f_star: "auto", "best found", one number, or a mapping from problem to number.

    Returns:
        One row per lane (and `eps`): `problem`, `optimizer`, `seed`, `lane`, the target columns (`eps`,
        `f_star`, `f_star_source`, or `metric`, `threshold`) and `unit`, then `time` (float, `inf` when
        not reached) and `reached` (bool), then every other column of `lanes` (the configuration's
        hyperparameters, `final_loss`, `is_default`, ...).

    Example:
        >>> ttt = time_to_target(lanes, curves, eps=[1e-2, 1e-4], unit="epochs")
    """
    _require(lanes, ["lane", "problem", "optimizer", "seed"], "lanes")
    _check_choice(unit, UNITS, "unit")
    _check_choice(mode, MODES, "mode")
    if (threshold is None) != (metric is None):
        raise ValueError("threshold and metric go together: a metric target needs both")
    if threshold is not None and eps is not None:
        raise ValueError("eps and threshold exclude each other: give a loss target or a metric target")
    if threshold is not None and not _is_number(threshold):
        raise ValueError(f"threshold must be a finite number; got {threshold!r}")
    column = "loss" if metric is None else metric
    _require(curves, ["lane", "step", column], "curves", rows=False)
    if lanes["lane"].duplicated().any():
        raise ValueError("lanes has duplicate `lane` ids")
    lanes = lanes.reset_index(drop=True)
    factor, factor_column = _unit_factor(lanes, unit)

    row = pd.Index(lanes["lane"]).get_indexer(curves["lane"])
    known = row >= 0
    row = row[known]
    step = curves["step"].to_numpy(dtype=float)[known]
    values = curves[column].to_numpy(dtype=float)[known]
    counts = np.ones(row.size, dtype=bool)
    if "steps" in lanes:
        counts &= step <= lanes["steps"].to_numpy(dtype=float)[row]
    if "status" in lanes:
        counts &= (lanes["status"] != "invalid").to_numpy()[row]

    head = pd.DataFrame({"row": row, "step": step, "value": values}).sort_values(["row", "step"])
    head = head.drop_duplicates("row")
    f0 = np.full(len(lanes), np.nan)
    f0[head["row"].to_numpy()] = head["value"].to_numpy()

    out = lanes.drop(columns=[c for c in ("time", "reached") if c in lanes])
    if metric is None:
        problem_of_row = lanes["problem"].to_numpy()[row]
        fs, source = _f_star(lanes, problem_of_row, values, counts, f_star)
        targets = [({"eps": e}, fs + e * (f0 - fs)) for e in _check_eps(DEFAULT_EPS if eps is None else eps)]
        out = out.assign(f_star=fs, f_star_source=source)
        target_columns = ["eps", "f_star", "f_star_source"]
    else:
        targets = [({"metric": metric, "threshold": float(threshold)}, None)]
        target_columns = ["metric", "threshold"]

    frames = []
    for keys, target in targets:
        if target is None:
            meets = values >= threshold if mode == "max" else values <= threshold
        else:
            meets = values <= target[row]
        meets &= counts
        first = np.full(len(lanes), np.inf)
        np.minimum.at(first, row[meets], step[meets])
        reached = np.isfinite(first)
        bad = reached & ~np.isfinite(factor)
        if bad.any():
            lanes_bad = lanes["lane"].to_numpy()[bad][:5].tolist()
            raise ValueError(f"unit={unit!r} needs a finite {factor_column}; lanes {lanes_bad} lack one")
        time = np.full(len(lanes), np.inf)
        time[reached] = first[reached] * factor[reached]
        frames.append(out.assign(**keys, unit=unit, time=time, reached=reached))
    result = pd.concat(frames, ignore_index=True)
    lead = ["problem", "optimizer", "seed", "lane", *target_columns, "unit", "time", "reached"]
    return result[lead + [c for c in result.columns if c not in lead]]


# --- profiles -----------------------------------------------------------------------------------


def _variant_rows(ttt: pd.DataFrame, variant: str) -> list[tuple[str, pd.DataFrame]]:
    _check_choice(variant, VARIANTS, "variant")
    chosen = []
    if variant in ("tuned", "both"):
        chosen.append(("tuned", ttt))
    if variant in ("default", "both"):
        if "is_default" not in ttt:
            raise ValueError(f"variant={variant!r} needs an `is_default` column in ttt (or lanes)")
        rows = ttt[ttt["is_default"].eq(True)]
        if rows.empty:
            raise ValueError(f"variant={variant!r} finds no lane with `is_default` true")
        chosen.append(("default", rows))
    return chosen


def profile_ratios(
    ttt: pd.DataFrame,
    *,
    config: Sequence[str],
    variant: str = "tuned",
    lanes: pd.DataFrame | None = None,
    tuning_seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The table behind the profiles: each optimizer's time `t[p, s]` and ratio `r[p, s]` per problem.

    `t[p, s]` is the median over seeds of the time of optimizer s's best configuration on problem p: the
    configuration with the smallest median time, ties broken by the smallest median `final_loss` (then by
    the configuration's values). A miss (`inf`) stays a miss, and an optimizer with no lanes on a problem
    misses it. The ratio is `r[p, s] = t[p, s] / min_s t[p, s]`; where every optimizer misses p, every
    ratio is `inf` (p is unsolved for all). Where the best time is 0 (the target held at the start), the
    optimizers with time 0 have ratio 1 and the others `inf`.

    Variant "tuned" uses every configuration; "default" only the lanes with `is_default` true (an
    optimizer without such lanes is left out); "both" puts each optimizer's two variants side by side as
    separate solvers, their ratios taken against the best of all.

    Args:
        ttt: a `time_to_target` frame; one table per combination of its target columns (`eps`, `unit`,
            `metric`, `threshold`).
        config: the columns that tell configurations apart.
        variant: "tuned", "default" or "both".
        lanes: where `ttt` lacks them, `final_loss` and `is_default` are taken from `lanes` by `lane`.
        tuning_seeds: choose each configuration on these seeds' lanes, and take `t[p, s]` (and
            `final_loss`) as the median over the other, fresh seeds' lanes of the chosen configuration.

    Returns:
        The target columns present, `problem`, `optimizer`, `variant`, `time`, `ratio`, `final_loss`
        (the chosen configuration's median) and the config columns (NaN for a miss by absence).
    """
    _require(ttt, ["problem", "optimizer", "time"], "ttt")
    config = _check_config(ttt, config, "ttt")
    if lanes is not None:
        _require(lanes, ["lane"], "lanes")
        _require(ttt, ["lane"], "ttt")
        extra = [c for c in ("final_loss", "is_default") if c in lanes]
        ttt = ttt.drop(columns=[c for c in extra if c in ttt])
        ttt = ttt.merge(lanes[["lane", *extra]], on="lane", how="left")
    keys = [k for k in TARGET_KEYS if k in ttt]
    final = _worst(ttt["final_loss"], "min") if "final_loss" in ttt else np.zeros(len(ttt))
    ttt = ttt.assign(_final=final, time=ttt["time"].astype(float))

    group = [*keys, "problem", "optimizer"]
    if tuning_seeds is not None:
        _require(ttt, ["seed"], "ttt")
        tuning_seeds = check_tuning_seeds(ttt["seed"], tuning_seeds)
    chosen = []
    for name, rows in _variant_rows(ttt, variant):
        tuning, reporting = _split_seeds(rows, tuning_seeds)

        def medians(frame):
            return frame.groupby(group + config, dropna=False, as_index=False, sort=True).agg(
                time=("time", "median"), final_loss=("_final", "median")
            )

        best = medians(tuning).sort_values([*group, "time", "final_loss", *config], kind="stable")
        best = best.drop_duplicates(group)
        if tuning_seeds is not None:  # the chosen configuration's time on the fresh seeds
            best = best[group + config].merge(medians(reporting), on=group + config, how="left")
        chosen.append(best.assign(variant=name))
    chosen = pd.concat(chosen, ignore_index=True)

    # Complete the grid: an optimizer without lanes on a problem misses it.
    grid = ttt[keys].drop_duplicates() if keys else pd.DataFrame(index=[0])
    grid = grid.merge(pd.DataFrame({"problem": ttt["problem"].unique()}), how="cross")
    grid = grid.merge(chosen[["optimizer", "variant"]].drop_duplicates(), how="cross")
    table = grid.merge(chosen, on=[*keys, "problem", "optimizer", "variant"], how="left")
    t = table["time"].to_numpy(dtype=float)
    t = np.where(np.isnan(t), np.inf, t)
    best_time = pd.Series(t).groupby([table[k] for k in [*keys, "problem"]], dropna=False).transform("min")
    best_time = best_time.to_numpy()
    ratio = np.full(t.size, np.inf)
    ok = np.isfinite(t) & (best_time > 0)
    ratio[ok] = t[ok] / best_time[ok]
    ratio[t == 0] = 1.0
    table = table.assign(time=t, ratio=ratio)
    columns = [*keys, "problem", "optimizer", "variant", "time", "ratio", "final_loss", *config]
    return table[columns].sort_values([*keys, "problem", "optimizer", "variant"], ignore_index=True)


def external_tuning(
    ttt: pd.DataFrame, *, config: Sequence[str], trials: int = 5, studies: int = 3, seed: int = 0
) -> pd.DataFrame:
    """AlgoPerf's external-tuning protocol on a grid: per problem and optimizer, `studies` independent
    studies, each the fastest of `trials` configurations drawn without replacement from the grid.

    Study j runs on the j-th seed of its problem (cycling when there are fewer seeds than studies; a
    lane without a seed is deterministic and serves every study), draws its trials with a generator
    seeded by `seed` (reproducible), and takes the smallest time among them; the optimizer's time on
    the problem is then the median over the studies, as in AlgoPerf's scoring (`time` of the returned
    frame, with `seed` holding the study's index). Pass it to `profile_ratios` /
    `performance_profile` with `config=[]`: each study is one "seed" of a single configuration.

    Returns:
        The target columns, `problem`, `optimizer`, `seed` (the study), `time`, `final_loss` (the
        fastest trial's) and `trials` (how many configurations the study tried).
    """
    _require(ttt, ["problem", "optimizer", "seed", "time"], "ttt")
    config = _check_config(ttt, config, "ttt")
    for name, value in (("trials", trials), ("studies", studies)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    keys = [k for k in TARGET_KEYS if k in ttt]
    final = _worst(ttt["final_loss"], "min") if "final_loss" in ttt else np.zeros(len(ttt))
    frame = ttt.assign(_final=final, time=ttt["time"].astype(float))
    rng = np.random.default_rng(seed)
    rows = []
    for key, group in frame.groupby([*keys, "problem", "optimizer"], dropna=False, sort=True):
        key = dict(zip([*keys, "problem", "optimizer"], key, strict=True))
        per = (
            group.groupby([*config, "seed"], dropna=False, sort=True)
            .agg(time=("time", "median"), _final=("_final", "median"))
            .reset_index()
        )
        configs = per[config].drop_duplicates().reset_index(drop=True) if config else pd.DataFrame(index=[0])
        seeds = sorted(per["seed"].dropna().unique()) or [pd.NA]
        for j in range(studies):
            s = seeds[j % len(seeds)]
            pick = configs.iloc[rng.choice(len(configs), size=min(trials, len(configs)), replace=False)]
            at = per[per["seed"].isna() | (per["seed"] == s)] if not pd.isna(s) else per
            tried = at.merge(pick, on=config) if config else at
            best = tried.sort_values(["time", "_final"], kind="stable").head(1)
            time = float(best["time"].iloc[0]) if len(best) else np.inf
            final_loss = float(best["_final"].iloc[0]) if len(best) else np.inf
            rows.append({**key, "seed": j, "time": time, "final_loss": final_loss, "trials": len(pick)})
    return pd.DataFrame(rows)


def _solvers(table: pd.DataFrame):
    keys = [k for k in TARGET_KEYS if k in table]
    for key, rows in table.groupby([*keys, "optimizer", "variant"], dropna=False, sort=True):
        yield dict(zip([*keys, "optimizer", "variant"], key, strict=True)), rows


def _steps(table: pd.DataFrame, column: str, points: np.ndarray, name: str, share: str) -> pd.DataFrame:
    """Share of a solver's problems with `column <= point`, for each point."""
    frames = []
    for key, rows in _solvers(table):
        values = np.sort(rows[column].to_numpy())
        counts = np.searchsorted(values, points, side="right")
        frames.append(pd.DataFrame({**key, name: points, share: counts / values.size}))
    return pd.concat(frames, ignore_index=True)


def _points(points, default: np.ndarray, argument: str) -> np.ndarray:
    if points is None:
        return np.unique(default)
    points = np.asarray(points, dtype=float).ravel()
    if points.size == 0 or not np.all(np.isfinite(points)) or np.any(points < 0):
        raise ValueError(f"{argument} must be finite, non-negative numbers; got {points!r}")
    return np.unique(points)


def performance_profile(
    ttt: pd.DataFrame,
    *,
    config: Sequence[str],
    taus: Sequence[float] | None = None,
    variant: str = "tuned",
    lanes: pd.DataFrame | None = None,
    tuning_seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Dolan–Moré performance profiles: the share of problems each optimizer solves within tau of the best.

        rho_s(tau) = |{p : r[p, s] <= tau}| / |P|,

    with `r[p, s] = t[p, s] / min_s t[p, s]` from `profile_ratios` (a miss is `inf`, so it never counts).

    Args:
        ttt, config, variant, lanes, tuning_seeds: as for `profile_ratios`.
        taus: where to evaluate rho; default 1, `MAX_TAU` and every finite ratio (all the steps).

    Returns:
        The target columns present, `optimizer`, `variant`, `tau`, `rho`.
    """
    table = profile_ratios(ttt, config=config, variant=variant, lanes=lanes, tuning_seeds=tuning_seeds)
    finite = table["ratio"].to_numpy()[np.isfinite(table["ratio"].to_numpy())]
    points = _points(taus, np.concatenate([[1.0, MAX_TAU], finite]), "taus")
    return _steps(table, "ratio", points, "tau", "rho")


def data_profile(
    ttt: pd.DataFrame,
    *,
    config: Sequence[str],
    budgets: Sequence[float] | None = None,
    variant: str = "tuned",
    lanes: pd.DataFrame | None = None,
    tuning_seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Moré–Wild data profiles: the share of problems each optimizer solves within a budget.

        d_s(budget) = |{p : t[p, s] <= budget}| / |P|,

    with `t[p, s]` from `profile_ratios` and the budget in the unit of `ttt` (steps, epochs, gradient
    evaluations or seconds).

    Args:
        ttt, config, variant, lanes, tuning_seeds: as for `profile_ratios`.
        budgets: where to evaluate; default 0 and every finite `t[p, s]` (all the steps).

    Returns:
        The target columns present, `optimizer`, `variant`, `budget`, `solved`.
    """
    table = profile_ratios(ttt, config=config, variant=variant, lanes=lanes, tuning_seeds=tuning_seeds)
    times = table["time"].to_numpy()
    points = _points(budgets, np.concatenate([[0.0], times[np.isfinite(times)]]), "budgets")
    return _steps(table, "time", points, "budget", "solved")


def score(
    ratios: pd.DataFrame, *, max_tau: float = MAX_TAU, confidence: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """AlgoPerf's score: the area under rho_s(tau) for tau in [1, max_tau], over max_tau - 1.

    rho_s is a step function, so the integral is exact: problem p contributes
    `max(0, max_tau - r[p, s])` (a miss, `inf`, contributes 0), and

        score_s = mean_p clip((max_tau - r[p, s]) / (max_tau - 1), 0, 1).

    The interval is a percentile bootstrap over problems (`scipy.stats.bootstrap`, resampling problems
    with replacement, seeded); it is NaN with fewer than two problems.

    Args:
        ratios: the `profile_ratios` table (`problem`, `optimizer`, `variant`, `ratio`); the per-problem
            ratios are needed for the interval, which a profile no longer holds.
        max_tau: the upper end of the integral (AlgoPerf: 4).
        confidence, seed: the interval's level and the bootstrap's seed.

    Returns:
        The target columns present, `optimizer`, `variant`, `score`, `ci_low`, `ci_high`.
    """
    _require(ratios, ["problem", "optimizer", "variant", "ratio"], "ratios (the profile_ratios table)")
    _check_confidence(confidence)
    if not (_is_number(max_tau) and max_tau > 1):
        raise ValueError(f"max_tau must be a finite number above 1; got {max_tau!r}")
    rng = np.random.default_rng(seed)
    rows = []
    for key, group in _solvers(ratios):
        area = np.clip((max_tau - group["ratio"].to_numpy(dtype=float)) / (max_tau - 1.0), 0.0, 1.0)
        low = high = np.nan
        if area.size >= 2:
            ci = stats.bootstrap(
                (area,), np.mean, confidence_level=confidence, method="percentile", rng=rng
            ).confidence_interval
            low, high = float(ci.low), float(ci.high)
        rows.append({**key, "score": float(area.mean()), "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


# --- tuning budgets -----------------------------------------------------------------------------


def _expected_best(values: np.ndarray) -> np.ndarray:
    """E[best of k] for k = 1..m from m values sorted best first: sum_i v_i C(m-i, k-1) / C(m, k).

    The weights w_i = C(m-i, k-1) / C(m, k) come from w_1 = k / m and w_{i+1} / w_i = (m-i-k+1) / (m-i),
    a running product of factors in [0, 1]: no factorials, so nothing overflows, and the relative error
    stays below m ulp.
    """
    m = values.size
    finite = np.isfinite(values)
    v = np.where(finite, values, 0.0)
    worst = values[~finite][0] if (~finite).any() else 0.0
    j = np.arange(1, m)
    out = np.empty(m)
    for start in range(0, m, _BLOCK):
        k = np.arange(start + 1, min(start + _BLOCK, m) + 1)[:, None]
        factors = np.clip((m - j - k + 1) / (m - j), 0.0, None)  # zero once fewer than k - 1 remain
        w = (k / m) * np.concatenate([np.ones_like(k, dtype=float), np.cumprod(factors, axis=1)], axis=1)
        on_worst = w[:, ~finite].sum(axis=1)
        out[start : start + k.shape[0]] = w @ v + np.where(on_worst > 0, worst, 0.0)
    return out


def expected_best_of_k(
    lanes: pd.DataFrame, *, config: Sequence[str], by: str = "final_loss", mode: str = "min"
) -> pd.DataFrame:
    """The expected best result after trying k of an optimizer's configurations, for k = 1..m (exact).

    Each configuration's value is its median of `by` over seeds. With the m values sorted best first,
    the best of k configurations drawn without replacement is the i-th with probability
    `C(m-i, k-1) / C(m, k)`, so

        E[best of k] = sum_i v_i C(m-i, k-1) / C(m, k),

    computed by a running product of ratios, so m in the tens of thousands neither overflows nor loses
    precision.
    A non-finite value (a diverged configuration) is the worst, so E is infinite for those k at which all
    k draws could be such configurations (Sivaprasad et al., 2020).

    Args:
        lanes: one row per lane: `problem`, `optimizer`, `by` (e.g. "final_loss") and the `config` columns.
        mode: "min" when smaller `by` is better, "max" when larger is.

    Returns:
        `problem`, `optimizer`, `k`, `expected`, `num_configs` (m).
    """
    _check_choice(mode, MODES, "mode")
    _require(lanes, ["problem", "optimizer", by], "lanes")
    config = _check_config(lanes, config, "lanes")
    lanes = lanes.assign(_value=_worst(lanes[by], mode))
    grouped = lanes.groupby(["problem", "optimizer", *config], dropna=False, as_index=False)
    medians = grouped["_value"].median()
    frames = []
    for (problem, optimizer), rows in medians.groupby(["problem", "optimizer"], sort=True):
        values = np.sort(rows["_value"].to_numpy())
        values = values if mode == "min" else values[::-1]
        k = np.arange(1, values.size + 1)
        columns = dict(k=k, expected=_expected_best(values), num_configs=values.size)
        frames.append(pd.DataFrame(dict(problem=problem, optimizer=optimizer, **columns)))
    return pd.concat(frames, ignore_index=True)


# --- uncertainty --------------------------------------------------------------------------------


def summarize(
    frame: pd.DataFrame,
    column: str,
    *,
    by: Sequence[str] = (),
    stratify: str | None = None,
    mode: str = "min",
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Median, interquartile range, interquartile mean and a bootstrap interval of the median, per group.

    The interquartile mean is `scipy.stats.trim_mean(x, 0.25)`, the mean of the middle half (rliable's
    robust aggregate). The interval is a percentile bootstrap of the median (`scipy.stats.bootstrap`,
    seeded); with `stratify` (e.g. "problem" for a suite-level number) values are resampled within each
    stratum. NaN values count as the worst (`+inf` in mode "min", `-inf` in mode "max").

    Args:
        frame, column: the values, e.g. `lanes` and "final_loss", or a `time_to_target` frame and "time".
        by: the grouping columns (none: one row for the whole frame).
        stratify, mode, confidence, seed: as above; `seed` seeds the bootstrap.

    Returns:
        The `by` columns, `count`, `median`, `q25`, `q75`, `iqr`, `iqm`, `ci_low`, `ci_high` (NaN with
        fewer than two values).
    """
    by = list(by)
    _check_choice(mode, MODES, "mode")
    _check_confidence(confidence)
    _require(frame, [column, *by] + ([stratify] if stratify is not None else []), "frame")
    frame = frame.assign(_value=_worst(frame[column], mode))
    groups = frame.groupby(by, dropna=False, sort=True) if by else [((), frame)]
    rows = []
    for key, part in groups:
        x = part["_value"].to_numpy()
        proxy, back = _proxy(x)
        q25, median, q75 = back(np.quantile(proxy, [0.25, 0.5, 0.75]))
        iqr = q75 - q25 if np.isfinite(q25) and np.isfinite(q75) else (np.nan if q25 == q75 else np.inf)
        if stratify is None:
            strata = [x]
        else:
            labels = part[stratify].to_numpy()
            strata = [x[labels == s] for s in pd.unique(labels)]
        low, high = _median_ci(strata, confidence, seed)
        spread = dict(median=float(median), q25=float(q25), q75=float(q75), iqr=float(iqr))
        iqm = float(stats.trim_mean(x, 0.25))
        rows.append(
            dict(zip(by, key, strict=True)) | dict(count=x.size, **spread, iqm=iqm, ci_low=low, ci_high=high)
        )
    return pd.DataFrame(rows)


# --- paired comparisons -------------------------------------------------------------------------


def _chosen(lanes, optimizer, config, by, mode, tuning_seeds) -> pd.DataFrame:
    """The optimizer's value per (problem, seed) for its configuration chosen on the tuning seeds."""
    rows = lanes[lanes["optimizer"] == optimizer]
    rows = rows.assign(_value=_worst(rows[by], mode))
    tuning, reporting = _split_seeds(rows, tuning_seeds)
    medians = tuning.groupby(["problem", *config], dropna=False, as_index=False)["_value"].median()
    order = ["problem", "_value", *config]
    ascending = [True, mode == "min"] + [True] * len(config)
    best = medians.sort_values(order, ascending=ascending, kind="stable").drop_duplicates("problem")
    reporting = reporting.merge(best[["problem", *config]], on=["problem", *config])
    # Several lanes of one configuration and seed (starts) count as their median.
    return reporting.groupby(["problem", "seed"], as_index=False, dropna=False)["_value"].median()


def _broadcast(values: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    """A deterministic value (seed <NA>: a full-batch run from a fixed start, nothing random) is the
    same on every seed, so it stands once for each seed the other optimizer has on that problem; two
    deterministic values make one pair."""
    missing = values["seed"].isna()
    if not missing.any():
        return values
    parts = [values[~missing]]
    for _, row in values[missing].iterrows():
        seeds = other.loc[(other["problem"] == row["problem"]) & other["seed"].notna(), "seed"]
        if len(seeds):
            parts.append(
                pd.DataFrame({"problem": row["problem"], "seed": seeds.array, "_value": row["_value"]})
            )
        else:
            parts.append(values.loc[[row.name]])
    return pd.concat(parts, ignore_index=True)


def _pairs(lanes, a, b, config, by, mode, tuning_seeds) -> pd.DataFrame:
    _check_choice(mode, MODES, "mode")
    _require(lanes, ["problem", "optimizer", "seed", by], "lanes")
    config = _check_config(lanes, config, "lanes")
    _check_optimizer(lanes, a, "a")
    _check_optimizer(lanes, b, "b")
    if a == b:
        raise ValueError(f"a and b name the same optimizer {a!r}")
    tuning_seeds = check_tuning_seeds(lanes["seed"], tuning_seeds)
    va = _chosen(lanes, a, config, by, mode, tuning_seeds)
    vb = _chosen(lanes, b, config, by, mode, tuning_seeds)
    va, vb = _broadcast(va, vb), _broadcast(vb, va)
    return va.merge(vb, on=["problem", "seed"], suffixes=("_a", "_b")).sort_values(["problem", "seed"])


def compare(
    lanes: pd.DataFrame,
    a: str,
    b: str,
    *,
    config: Sequence[str],
    by: str = "final_loss",
    mode: str = "min",
    tuning_seeds: Sequence[int] | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Paired comparison of optimizer `a` against `b` on the (problem, seed) pairs both ran.

    Each optimizer's configuration per problem is the one with the best median of `by` over the tuning
    seeds (default: all seeds). Given `tuning_seeds`, the pairs reported are those on the *other* seeds,
    so the selection does not bias the comparison (Schmidt et al., 2021). Per pair, `d = v_a - v_b`
    (in `by`'s units; negative favours `a` in mode "min", positive in mode "max"):

    - `median_difference`: the median of d over all pairs;
    - `ci_low`, `ci_high`: a percentile bootstrap interval of that median (`scipy.stats.bootstrap`,
      seeded), resampling seeds within each problem (stratified) when there are several problems;
    - `probability_of_improvement`: P(a better than b) on a pair, ties counting 1/2, averaged over
      problems (each problem weighs the same);
    - `p_value`: the two-sided Wilcoxon signed-rank test of d (`scipy.stats.wilcoxon`); 1.0 when every
      difference is zero.

    A non-finite value (a diverged lane) is the worst; two such values tie.

    Args:
        lanes: one row per lane: `problem`, `optimizer`, `seed`, `by` and the `config` columns.
        a, b: the optimizers' labels.
        mode: "min" when smaller `by` is better, "max" when larger is.
        tuning_seeds: seeds on which configurations are chosen; the others are reported.
        confidence, seed: the interval's level and the bootstrap's seed.

    Returns:
        One row: `a`, `b`, `by`, `mode`, `median_difference`, `ci_low`, `ci_high`,
        `probability_of_improvement`, `p_value`, `num_pairs`, `num_problems`.
    """
    _check_confidence(confidence)
    pairs = _pairs(lanes, a, b, config, by, mode, tuning_seeds)
    if pairs.empty:
        where = " on seeds outside tuning_seeds" if tuning_seeds is not None else ""
        raise ValueError(f"a={a!r} and b={b!r} share no (problem, seed) pairs{where}")
    x, y = pairs["_value_a"].to_numpy(), pairs["_value_b"].to_numpy()
    d = np.zeros(x.size)
    differ = x != y
    d[differ] = x[differ] - y[differ]
    better = (x < y) if mode == "min" else (x > y)
    wins = pd.Series(better + 0.5 * (x == y)).groupby(pairs["problem"].to_numpy()).mean()

    proxy, back = _proxy(d)
    p_value = 1.0 if np.all(d == 0) else float(stats.wilcoxon(proxy).pvalue)
    problems = pairs["problem"].to_numpy()
    strata = [d[problems == p] for p in pd.unique(problems)]
    low, high = _median_ci(strata, confidence, seed)
    median = float(back(np.median(proxy)))
    row = dict(a=a, b=b, by=by, mode=mode, median_difference=median, ci_low=low, ci_high=high)
    row |= dict(probability_of_improvement=float(wins.mean()), p_value=p_value, num_pairs=int(d.size))
    return pd.DataFrame([row | dict(num_problems=len(strata))])


def is_significant(comparison: pd.DataFrame | pd.Series, *, alpha: float = 0.05) -> bool:
    """Whether a `compare` row shows `a` better than `b`: p < alpha and the interval excludes 0 on a's side.

    The interval side is `ci_high < 0` in mode "min" and `ci_low > 0` in mode "max".
    """
    row = comparison.iloc[0] if isinstance(comparison, pd.DataFrame) else comparison
    missing = [c for c in ("mode", "ci_low", "ci_high", "p_value") if c not in row.index]
    if missing:
        raise ValueError(f"comparison is missing {missing}: pass a row of `compare`")
    side = row["ci_high"] < 0 if row["mode"] == "min" else row["ci_low"] > 0
    return bool(row["p_value"] < alpha and side)


def best_statement(
    lanes: pd.DataFrame,
    *,
    config: Sequence[str],
    by: str = "final_loss",
    mode: str = "min",
    tuning_seeds: Sequence[int] | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> str | None:
    """A "best optimizer" sentence, or None when the paired comparisons do not support one.

    The candidate is the optimizer with the best median of `by` over its (problem, seed) values (chosen
    configurations, as in `compare`). It is named best only if `compare` finds it significantly better
    (`is_significant`) than every other optimizer, at a Bonferroni-corrected level
    `alpha = (1 - confidence) / (number of others)` with intervals at `1 - alpha`.

    Returns:
        The sentence, or None (fewer than two optimizers, no shared pairs, or any comparison not
        significant).
    """
    _check_confidence(confidence)
    _check_choice(mode, MODES, "mode")
    _require(lanes, ["problem", "optimizer", "seed", by], "lanes")
    names = sorted(str(o) for o in lanes["optimizer"].unique())
    if len(names) < 2:
        return None
    seeds = check_tuning_seeds(lanes["seed"], tuning_seeds)
    config = _check_config(lanes, config, "lanes")
    values = {n: _chosen(lanes, n, config, by, mode, seeds)["_value"].to_numpy() for n in names}
    if any(v.size == 0 for v in values.values()):
        return None  # an optimizer with no reporting seeds
    medians = {n: np.median(v) for n, v in values.items()}  # infinities share one sign: no inf - inf
    best = min(names, key=lambda n: medians[n] if mode == "min" else -medians[n])
    others = [n for n in names if n != best]
    alpha = (1.0 - confidence) / len(others)
    parts = []
    for other in others:
        if _pairs(lanes, best, other, config, by, mode, seeds).empty:
            return None
        options = dict(config=config, by=by, mode=mode, tuning_seeds=seeds, seed=seed)
        row = compare(lanes, best, other, confidence=1 - alpha, **options).iloc[0]
        if not is_significant(row, alpha=alpha):
            return None
        parts.append(
            f"{other} (median difference {row['median_difference']:.3g} "
            f"[{row['ci_low']:.3g}, {row['ci_high']:.3g}], "
            f"P(improvement) {row['probability_of_improvement']:.2f}, "
            f"p = {row['p_value']:.2g}, {row['num_pairs']} pairs)"
        )
    return (
        f"{best} is the best optimizer by {by} ({'lower' if mode == 'min' else 'higher'} is better): "
        f"better than {'; '.join(parts)}. Paired Wilcoxon signed-rank tests, Bonferroni-corrected to "
        f"alpha = {alpha:.3g} each."
    )
