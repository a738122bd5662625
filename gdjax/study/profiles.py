"""Targets and profiles: time to a target, Dolan–Moré and Moré–Wild profiles, AlgoPerf's score.

Pure functions over the results model's frames (see `statistics`, which re-exports every public name
here); each returns a pandas DataFrame. References: Dolan & Moré (2002); Moré & Wild (2009); MLCommons
AlgoPerf, `scoring/performance_profile.py`.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gdjax.study.statbase import (
    MODES,
    _check_choice,
    _check_confidence,
    _check_config,
    _check_eps,
    _is_number,
    _require,
    _split_seeds,
    _worst_of,
    check_tuning_seeds,
)

DEFAULT_EPS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-6)
UNITS = ("steps", "epochs", "gradient_evaluations", "seconds")
VARIANTS = ("tuned", "default", "both")
MAX_TAU = 4.0
# Columns time_to_target adds that name a target; the profiles keep one profile per combination.
TARGET_KEYS = ("metric", "threshold", "eps", "unit")

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
        extra = [c for c in ("final_loss", "is_default", "status") if c in lanes]
        ttt = ttt.drop(columns=[c for c in extra if c in ttt])
        ttt = ttt.merge(lanes[["lane", *extra]], on="lane", how="left")
    keys = [k for k in TARGET_KEYS if k in ttt]
    final = _worst_of(ttt, "final_loss", "min") if "final_loss" in ttt else np.zeros(len(ttt))
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
    final = _worst_of(ttt, "final_loss", "min") if "final_loss" in ttt else np.zeros(len(ttt))
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


def _profile(table, column: str, points, start: list[float], argument: str, name: str, share: str):
    """The share of problems solved at each point of `points` (checked), by default at `start` and every
    finite value of `column` (all the steps): the body of both profiles."""
    values = table[column].to_numpy()
    points = _points(points, np.concatenate([start, values[np.isfinite(values)]]), argument)
    return _steps(table, column, points, name, share)


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
    return _profile(table, "ratio", taus, [1.0, MAX_TAU], "taus", "tau", "rho")


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
    return _profile(table, "time", budgets, [0.0], "budgets", "budget", "solved")


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
