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

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from gdjax.study.profiles import (  # noqa: F401  (re-exported: targets and profiles live there)
    DEFAULT_EPS,
    MAX_TAU,
    TARGET_KEYS,
    UNITS,
    VARIANTS,
    data_profile,
    external_tuning,
    performance_profile,
    profile_ratios,
    score,
    time_to_target,
)
from gdjax.study.statbase import (  # noqa: F401  (re-exported: the shared conventions live there)
    MODES,
    _check_choice,
    _check_confidence,
    _check_config,
    _check_optimizer,
    _median_ci,
    _proxy,
    _require,
    _split_seeds,
    _worst,
    _worst_of,
    check_tuning_seeds,
)

_BLOCK = 256  # k values per block in expected_best_of_k: bounds memory at _BLOCK x m


def __getattr__(name: str):
    # `halton_grid` lives with the grids (`gdjax.study.config`), which import the core and JAX: re-exported
    # on first use, so that reading results and drawing their figures (`gdjax.study.drawing`) does not.
    if name == "halton_grid":
        from gdjax.study.config import halton_grid

        return halton_grid
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    lanes = lanes.assign(_value=_worst_of(lanes, by, mode))
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
    frame = frame.assign(_value=_worst_of(frame, column, mode))
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
    rows = rows.assign(_value=_worst_of(rows, by, mode))
    tuning, reporting = _split_seeds(rows, tuning_seeds)
    # Ties go to the configuration listed first, as in `Results.best_configurations` and the table
    # `gdjax run` prints (grouped in the lanes' order, and a stable sort).
    medians = tuning.groupby(["problem", *config], dropna=False, as_index=False, sort=False)[
        "_value"
    ].median()
    best = medians.sort_values(["problem", "_value"], ascending=[True, mode == "min"], kind="stable")
    best = best.drop_duplicates("problem")
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
    per_problem: bool = False,
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

    A non-finite value (a diverged lane) is the worst; two such values tie. Pooled over problems, d is
    in each problem's units, so a problem of large losses weighs most in the median and the ranks:
    `per_problem=True` gives one row per problem (the same statistics on its pairs alone), where a
    conclusion that holds on one problem and flips on another shows.

    Args:
        lanes: one row per lane: `problem`, `optimizer`, `seed`, `by` and the `config` columns.
        a, b: the optimizers' labels.
        mode: "min" when smaller `by` is better, "max" when larger is.
        tuning_seeds: seeds on which configurations are chosen; the others are reported.
        confidence, seed: the interval's level and the bootstrap's seed.
        per_problem: one row per problem instead of one pooled row.

    Returns:
        One row (or one per problem, with a leading `problem` column): `a`, `b`, `by`, `mode`,
        `median_difference`, `ci_low`, `ci_high`, `probability_of_improvement`, `p_value`,
        `num_pairs`, `num_problems`.
    """
    _check_confidence(confidence)
    pairs = _pairs(lanes, a, b, config, by, mode, tuning_seeds)
    if pairs.empty:
        where = " on seeds outside tuning_seeds" if tuning_seeds is not None else ""
        raise ValueError(f"a={a!r} and b={b!r} share no (problem, seed) pairs{where}")
    head = dict(a=a, b=b, by=by, mode=mode)
    if not per_problem:
        return pd.DataFrame([head | _paired_statistics(pairs, mode, confidence, seed)])
    rows = [
        dict(problem=problem) | head | _paired_statistics(group, mode, confidence, seed)
        for problem, group in pairs.groupby("problem", sort=False)
    ]
    return pd.DataFrame(rows)


def _paired_statistics(pairs: pd.DataFrame, mode: str, confidence: float, seed: int) -> dict:
    """`compare`'s statistics of these (problem, seed) pairs."""
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
    row = dict(median_difference=median, ci_low=low, ci_high=high)
    row |= dict(probability_of_improvement=float(wins.mean()), p_value=p_value, num_pairs=int(d.size))
    return row | dict(num_problems=len(strata))


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
    `alpha = (1 - confidence) / (number of others)` with intervals at `1 - alpha`. `verdict` says the
    same sentence, or why there is none.

    Returns:
        The sentence, or None (fewer than two optimizers, no shared pairs, or any comparison not
        significant).
    """
    statement, _ = _verdict(lanes, config, by, mode, tuning_seeds, confidence, seed)
    return statement


def verdict(
    lanes: pd.DataFrame,
    *,
    config: Sequence[str],
    by: str = "final_loss",
    mode: str = "min",
    tuning_seeds: Sequence[int] | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> str:
    """`best_statement`'s sentence where the comparisons support one, else why they do not.

    The reason names the first comparison of the candidate (the best median) that fails, and says
    whether the data could have supported a verdict at all: a two-sided Wilcoxon signed-rank test of
    m differing pairs cannot give a p-value below 2 / 2^m (0.25 at 3 pairs, 0.0625 at 5), so with
    three optimizers (alpha = 0.025 each) fewer than 7 differing pairs per comparison never name a
    best optimizer, however clear the differences. That case says how many pairs are needed,
    rather than reading as a tie.
    """
    statement, reason = _verdict(lanes, config, by, mode, tuning_seeds, confidence, seed)
    return statement if statement is not None else f"No best optimizer: {reason}."


def min_wilcoxon_p(num_pairs: int) -> float:
    """The smallest two-sided p-value `scipy.stats.wilcoxon` gives `num_pairs` differing pairs (exact
    below 51 pairs: 2 / 2^num_pairs; zero differences are dropped, so count only the pairs that differ)."""
    if num_pairs < 1:
        return 1.0
    return float(stats.wilcoxon(np.arange(1.0, num_pairs + 1)).pvalue)


def pairs_needed(alpha: float) -> int:
    """The fewest differing pairs whose Wilcoxon test can give p < alpha (7 at alpha = 0.025)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    n = 1
    while min_wilcoxon_p(n) >= alpha:
        n += 1
    return n


def _more_pairs(lanes, a, b, config, by, mode, seeds) -> str:
    """How a comparison of a and b gets more pairs: seeds, unless both ran deterministically."""
    fixed = all(_chosen(lanes, n, config, by, mode, seeds)["seed"].isna().all() for n in (a, b))
    if fixed:  # full batch from one start: every seed is the same run, one pair per problem
        return (
            "more problems or starts: both ran full batch from one start, which draws nothing at "
            "random, so every seed is the same run and each problem gives one pair"
        )
    return "more seeds, or more problems"


def _verdict(lanes, config, by, mode, tuning_seeds, confidence, seed) -> tuple[str | None, str]:
    """(the best-optimizer sentence or None, why there is none)."""
    _check_confidence(confidence)
    _check_choice(mode, MODES, "mode")
    _require(lanes, ["problem", "optimizer", "seed", by], "lanes")
    names = sorted(str(o) for o in lanes["optimizer"].unique())
    if len(names) < 2:
        return None, "one optimizer, nothing to compare it with"
    seeds = check_tuning_seeds(lanes["seed"], tuning_seeds)
    config = _check_config(lanes, config, "lanes")
    values = {n: _chosen(lanes, n, config, by, mode, seeds)["_value"].to_numpy() for n in names}
    for n, v in values.items():
        if v.size == 0:
            return None, f"{n} has no values on the reported seeds"
    medians = {n: np.median(v) for n, v in values.items()}  # infinities share one sign: no inf - inf
    best = min(names, key=lambda n: medians[n] if mode == "min" else -medians[n])
    others = [n for n in names if n != best]
    alpha = (1.0 - confidence) / len(others)
    level = f"alpha = {alpha:.3g}"
    if len(others) > 1:
        level += f", Bonferroni-corrected over {len(others)} comparisons"
    parts = []
    for other in others:
        pairs = _pairs(lanes, best, other, config, by, mode, seeds)
        if pairs.empty:
            return None, f"{best} (the best median {by}) and {other} share no (problem, seed) pairs"
        options = dict(config=config, by=by, mode=mode, tuning_seeds=seeds, seed=seed)
        row = compare(lanes, best, other, confidence=1 - alpha, **options).iloc[0]
        if not is_significant(row, alpha=alpha):
            differ = int(np.sum(pairs["_value_a"].to_numpy() != pairs["_value_b"].to_numpy()))
            head = f"{best} has the best median {by}, but"
            if differ == 0:
                return None, f"{head} it ties with {other} on every one of their {row['num_pairs']} pair(s)"
            if (smallest := min_wilcoxon_p(differ)) >= alpha:
                more = _more_pairs(lanes, best, other, config, by, mode, seeds)
                return None, (
                    f"{head} its comparison with {other} has {differ} differing pair(s) of "
                    f"{row['num_pairs']}: a Wilcoxon test of so few pairs cannot give a p-value below "
                    f"{smallest:.3g}, and a verdict needs p < {level}. It needs at least "
                    f"{pairs_needed(alpha)} differing pairs ({more})"
                )
            return None, (
                f"{head} it is not significantly better than {other} (median difference "
                f"{row['median_difference']:.3g} [{row['ci_low']:.3g}, {row['ci_high']:.3g}], "
                f"p = {row['p_value']:.2g}, {row['num_pairs']} pairs; {level})"
            )
        parts.append(
            f"{other} (median difference {row['median_difference']:.3g} "
            f"[{row['ci_low']:.3g}, {row['ci_high']:.3g}], "
            f"P(improvement) {row['probability_of_improvement']:.2f}, "
            f"p = {row['p_value']:.2g}, {row['num_pairs']} pairs)"
        )
    statement = (
        f"{best} is the best optimizer by {by} ({'lower' if mode == 'min' else 'higher'} is better): "
        f"better than {'; '.join(parts)}. Paired Wilcoxon signed-rank tests, Bonferroni-corrected to "
        f"alpha = {alpha:.3g} each."
    )
    return statement, ""
