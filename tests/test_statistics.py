"""gdjax.study.statistics against independent computations: brute-force enumeration of subsets for the
expected best of k, `scipy.stats` called directly for the paired test, profiles and scores computed by
hand on a three-problem toy, and times to target read off hand-made curves."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gdjax.study import statistics as st

INF = np.inf


# --- time_to_target -----------------------------------------------------------------------------


def _lanes_and_curves():
    """Two problems: "ls" with f* = 0 known, "nn" with f* unknown; sparse evaluations, a stop."""
    lanes = pd.DataFrame(
        {
            "lane": [0, 1, 2, 3, 4, 5],
            "problem": ["ls", "ls", "ls", "ls", "nn", "nn"],
            "optimizer": ["sgd", "gd", "sgd", "sgd", "adam", "sgd"],
            "learning_rate": [0.1, 0.5, 2.0, 5.0, 0.01, 0.1],
            "batch_size": [10.0, np.nan, 10.0, 10.0, 25.0, 25.0],
            "seed": [0, 0, 0, 0, 0, 0],
            "status": ["max_steps", "converged", "diverged", "nonfinite", "max_steps", "max_steps"],
            "steps": [40, 5, 10, 10, 2, 2],
            "final_loss": [1e-4, 0.09, np.nan, np.nan, 0.5, 0.55],
            "f_star": [0.0, 0.0, 0.0, 0.0, np.nan, np.nan],
            "f_star_source": ["closed form"] * 4 + ["unknown"] * 2,
            "num_examples": [100, 100, 100, 100, 50, 50],
            "seconds_per_step": [0.5, 2.0, 0.5, 0.5, 1.0, 1.0],
        }
    )
    rows = [
        # lane 0: evaluations every 10 steps
        *[(0, s, v) for s, v in zip([0, 10, 20, 30, 40], [1.0, 0.5, 0.05, 0.005, 1e-4], strict=True)],
        (1, 0, 1.0),
        (1, 5, 0.09),
        # lane 2 diverged at step 10; a row recorded after its stop does not count
        (2, 0, 1.0),
        (2, 10, 2.0),
        (2, 20, 0.0),
        (3, 0, 1.0),
        (3, 10, np.nan),
        (4, 0, 2.0),
        (4, 1, 1.0),
        (4, 2, 0.5),
        (5, 0, 2.0),
        (5, 1, 0.6),
        (5, 2, 0.55),
    ]
    curves = pd.DataFrame(rows, columns=["lane", "step", "loss"])
    accuracy = {4: [0.5, 0.8, 0.9], 5: [0.5, 0.6, 0.7]}
    curves["test_accuracy"] = [
        accuracy[lane][step] if lane in accuracy else np.nan
        for lane, step in zip(curves["lane"], curves["step"], strict=True)
    ]
    return lanes, curves


def _times(ttt, eps=None):
    rows = ttt if eps is None else ttt[ttt["eps"] == eps]
    return dict(zip(rows["lane"], rows["time"], strict=True))


# eps -> time per lane in steps, read off the curves by hand:
# ls: target 0.1 eps (f0 = 1, f* = 0); nn: f* = best found 0.5, target 0.5 + eps * 1.5.
TTT_STEPS = {
    1e-1: {0: 20, 1: 5, 2: INF, 3: INF, 4: 2, 5: 1},
    1e-2: {0: 30, 1: INF, 2: INF, 3: INF, 4: 2, 5: INF},
    1e-3: {0: 40, 1: INF, 2: INF, 3: INF, 4: 2, 5: INF},
    1e-6: {0: INF, 1: INF, 2: INF, 3: INF, 4: 2, 5: INF},
}


@pytest.mark.parametrize("eps", sorted(TTT_STEPS))
def test_time_to_target_steps_read_off_sparse_curves(eps):
    lanes, curves = _lanes_and_curves()
    ttt = st.time_to_target(lanes, curves, eps=eps)
    assert _times(ttt) == TTT_STEPS[eps]
    assert list(ttt["reached"]) == [np.isfinite(t) for t in TTT_STEPS[eps].values()]


def test_time_to_target_long_format_over_eps():
    lanes, curves = _lanes_and_curves()
    ttt = st.time_to_target(lanes, curves, eps=sorted(TTT_STEPS))
    assert len(ttt) == len(lanes) * len(TTT_STEPS)
    for eps, expected in TTT_STEPS.items():
        assert _times(ttt, eps) == expected
    assert list(ttt.columns[:10]) == [
        "problem", "optimizer", "seed", "lane", "eps", "f_star", "f_star_source", "unit", "time", "reached",
    ]  # fmt: skip
    assert "learning_rate" in ttt and "final_loss" in ttt  # the configuration travels along
    default = st.time_to_target(lanes, curves)
    assert sorted(default["eps"].unique()) == sorted(st.DEFAULT_EPS)


# unit -> time of lanes 0 (batch 10 of n = 100), 1 (full batch) and 4 (batch 25 of n = 50) at eps 0.1
UNIT_TIMES = {
    "steps": {0: 20, 1: 5, 4: 2},
    "gradient_evaluations": {0: 20, 1: 5, 4: 2},
    "epochs": {0: 20 * 10 / 100, 1: 5, 4: 2 * 25 / 50},
    "seconds": {0: 20 * 0.5, 1: 5 * 2.0, 4: 2 * 1.0},
}


@pytest.mark.parametrize("unit", sorted(UNIT_TIMES))
def test_time_to_target_units(unit):
    lanes, curves = _lanes_and_curves()
    ttt = st.time_to_target(lanes, curves, eps=0.1, unit=unit)
    times = _times(ttt)
    for lane, expected in UNIT_TIMES[unit].items():
        assert times[lane] == pytest.approx(expected, rel=1e-15)
    assert (ttt["unit"] == unit).all()


def test_time_to_target_f_star_sources():
    lanes, curves = _lanes_and_curves()
    ttt = st.time_to_target(lanes, curves, eps=0.1).set_index("lane")
    assert list(ttt.loc[[0, 4], "f_star"]) == [0.0, 0.5]  # given; lowest loss any nn lane reached
    assert list(ttt.loc[[0, 4], "f_star_source"]) == ["closed form", "best found"]
    # "best found" everywhere: on ls the lowest loss reached is lane 0's 1e-4 (lane 2's 0.0 came after
    # its stop), so the 0.1 target is 1e-4 + 0.1 (1 - 1e-4).
    found = st.time_to_target(lanes, curves, eps=0.1, f_star="best found").set_index("lane")
    assert found.loc[0, "f_star"] == 1e-4
    assert (found["f_star_source"] == "best found").all()
    given = st.time_to_target(lanes, curves, eps=0.5, f_star={"ls": 0.0, "nn": 0.0}).set_index("lane")
    assert given.loc[4, "time"] == 1  # target 0 + 0.5 * 2 = 1.0


@pytest.mark.parametrize(
    ("threshold", "mode", "expected"),
    [(0.85, "max", {4: 2, 5: INF}), (0.65, "max", {4: 1, 5: 2}), (0.6, "min", {4: 0, 5: 0})],
)
def test_time_to_target_metric_threshold(threshold, mode, expected):
    lanes, curves = _lanes_and_curves()
    nn = lanes[lanes["problem"] == "nn"]
    ttt = st.time_to_target(nn, curves, metric="test_accuracy", threshold=threshold, mode=mode)
    assert _times(ttt) == expected
    assert (ttt["metric"] == "test_accuracy").all() and (ttt["threshold"] == threshold).all()


# --- expected best of k -------------------------------------------------------------------------


def _brute_force_best_of_k(values, mode):
    pick = min if mode == "min" else max
    return [np.mean([pick(c) for c in itertools.combinations(values, k)]) for k in range(1, len(values) + 1)]


BEST_OF_K_CASES = [
    ([3.0], "min"),
    ([1.0, 2.0, 3.0], "min"),
    ([2.0, 2.0, 1.0, 5.0], "min"),
    ([1.0, 1.0, 1.0, 1.0], "min"),
    ([5.0, 3.0, 3.0, 1.0, 4.0, 4.0, 2.0], "min"),
    ([0.9, 0.7, 0.7, 0.95, 0.2, 0.9], "max"),
    ([0.5, 0.25, 0.125, 2.0, 0.25, 7.0, 0.5], "max"),
]


@pytest.mark.parametrize(("values", "mode"), BEST_OF_K_CASES)
def test_expected_best_of_k_matches_enumeration_of_subsets(values, mode):
    # Two seeds per configuration, symmetric around the value, so the median over seeds is the value.
    lanes = pd.DataFrame(
        {
            "problem": "p",
            "optimizer": "sgd",
            "learning_rate": np.repeat(np.arange(len(values), dtype=float), 2),
            "seed": np.tile([0, 1], len(values)),
            "final_loss": np.repeat(values, 2) + np.tile([-0.125, 0.125], len(values)),
        }
    )
    result = st.expected_best_of_k(lanes, config=["learning_rate"], mode=mode)
    assert list(result["k"]) == list(range(1, len(values) + 1))
    np.testing.assert_allclose(result["expected"], _brute_force_best_of_k(values, mode), rtol=1e-12)


def test_expected_best_of_k_diverged_configurations_are_worst():
    values = [0.5, np.nan, 0.25, np.nan, 1.0]
    lanes = pd.DataFrame(
        {"problem": "p", "optimizer": "sgd", "learning_rate": np.arange(5.0), "seed": 0, "final_loss": values}
    )
    result = st.expected_best_of_k(lanes, config=["learning_rate"])
    oracle = _brute_force_best_of_k([INF if np.isnan(v) else v for v in values], "min")
    assert list(result["expected"][:2]) == [INF, oracle[1]]  # two draws can both have diverged... not one
    np.testing.assert_allclose(result["expected"], oracle, rtol=1e-12)


def test_a_diverged_lanes_finite_last_loss_counts_as_worst():
    """A diverged lane is frozen where it stopped: its last loss is finite (1e248) and counted as a
    result it made E[best of 1] 5e247 and entered medians and paired differences."""
    values = [0.5, 2.3e248, 0.25, 8.7e93, 1.0]
    status = ["max_steps", "diverged", "max_steps", "nonfinite", "max_steps"]
    lanes = pd.DataFrame(
        {"problem": "p", "optimizer": "sgd", "learning_rate": np.arange(5.0), "seed": 0, "final_loss": values}
    )
    kept = [v if s == "max_steps" else np.nan for v, s in zip(values, status, strict=True)]
    as_nan = lanes.assign(final_loss=kept)
    with_status = lanes.assign(status=status)
    for fn in (
        lambda f: st.expected_best_of_k(f, config=["learning_rate"])["expected"],
        lambda f: st.summarize(f, "final_loss", by=["optimizer"])[["median", "iqm"]].to_numpy().ravel(),
    ):
        np.testing.assert_array_equal(fn(with_status), fn(as_nan))
    assert st.expected_best_of_k(with_status, config=["learning_rate"])["expected"][0] == INF


def test_expected_best_of_k_groups_nan_hyperparameters_per_optimizer():
    lanes = pd.DataFrame(
        {
            "problem": "p",
            "optimizer": ["adam", "adam", "momentum", "momentum", "momentum"],
            "learning_rate": [0.1, 0.01, 0.1, 0.1, 0.01],
            "momentum": [np.nan, np.nan, 0.9, 0.5, 0.9],
            "seed": 0,
            "final_loss": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    result = st.expected_best_of_k(lanes, config=["learning_rate", "momentum"])
    assert result.groupby("optimizer")["num_configs"].first().to_dict() == {"adam": 2, "momentum": 3}


def test_expected_best_of_k_large_grid_against_closed_forms():
    m = 3000
    values = np.sort(np.random.default_rng(0).uniform(size=m))
    lanes = pd.DataFrame(
        {"problem": "p", "optimizer": "sgd", "lr": np.arange(m), "seed": 0, "final_loss": values}
    )
    expected = st.expected_best_of_k(lanes, config=["lr"])["expected"].to_numpy()
    # Closed forms: best of 1 is the mean, best of m the minimum, best of 2 weighs v_i by (m - i) / C(m, 2).
    pairs = np.sum(values * (m - np.arange(1, m + 1))) / math.comb(m, 2)
    np.testing.assert_allclose(expected[[0, 1, m - 1]], [values.mean(), pairs, values[0]], rtol=1e-12)
    assert np.all(np.diff(expected) <= 1e-12)


# --- performance and data profiles --------------------------------------------------------------


def _toy_ttt():
    """Three problems, three optimizers. Best configurations' median times t[p, s]:

    | problem | A  | B   | C   |
    |---------|----|-----|-----|
    | P1      | 10 | 20  | inf |  A: lr 0.1 over 3 seeds [8, 10, 40] beats lr 1.0 [5, inf, inf]
    | P2      | 30 | 10  | 10  |  C: two configs tie at 10, final loss picks lr 0.05
    | P3      | inf| inf | --  |  nobody solves P3; C has no lanes there
    """
    rows = [
        ("P1", "A", 0.1, 0, 8, 0.1, False),
        ("P1", "A", 0.1, 1, 10, 0.1, False),
        ("P1", "A", 0.1, 2, 40, 0.1, False),
        ("P1", "A", 1.0, 0, 5, 0.2, True),
        ("P1", "A", 1.0, 1, INF, np.nan, True),
        ("P1", "A", 1.0, 2, INF, np.nan, True),
        ("P1", "B", 0.5, 0, 20, 0.1, True),
        ("P1", "C", 0.5, 0, INF, 0.3, False),
        ("P2", "A", 0.1, 0, 30, 0.1, False),
        ("P2", "B", 0.5, 0, 10, 0.1, True),
        ("P2", "C", 0.5, 0, 10, 0.2, False),
        ("P2", "C", 0.05, 0, 10, 0.1, False),
        ("P3", "A", 0.1, 0, INF, 1.0, False),
        ("P3", "B", 0.5, 0, INF, 1.0, True),
    ]
    columns = ["problem", "optimizer", "learning_rate", "seed", "time", "final_loss", "is_default"]
    ttt = pd.DataFrame(rows, columns=columns)
    return ttt.assign(lane=np.arange(len(ttt)), time=ttt["time"].astype(float))


RATIOS = {("P1", "A"): 1, ("P1", "B"): 2, ("P1", "C"): INF, ("P2", "A"): 3, ("P2", "B"): 1, ("P2", "C"): 1}
RHO = {  # tau -> rho, written from the table above
    "A": {1: 1 / 3, 2: 1 / 3, 3: 2 / 3, 4: 2 / 3},
    "B": {1: 1 / 3, 2: 2 / 3, 3: 2 / 3, 4: 2 / 3},
    "C": {1: 1 / 3, 2: 1 / 3, 3: 1 / 3, 4: 1 / 3},
}
SOLVED = {  # budget -> share solved
    "A": {0: 0, 10: 1 / 3, 20: 1 / 3, 30: 2 / 3},
    "B": {0: 0, 10: 1 / 3, 20: 2 / 3, 30: 2 / 3},
    "C": {0: 0, 10: 1 / 3, 20: 1 / 3, 30: 1 / 3},
}
# Area under rho on [1, 4] over 3: A 1/3 on [1, 3) and 2/3 on [3, 4]; B 1/3 on [1, 2), 2/3 on [2, 4].
SCORES = {"A": (2 * 1 / 3 + 1 * 2 / 3) / 3, "B": (1 * 1 / 3 + 2 * 2 / 3) / 3, "C": 1 / 3}


def test_profile_ratios_choose_best_configuration_and_break_ties():
    table = st.profile_ratios(_toy_ttt(), config=["learning_rate"])
    got = {(p, s): r for p, s, r in zip(table["problem"], table["optimizer"], table["ratio"], strict=True)}
    assert got == {**RATIOS, ("P3", "A"): INF, ("P3", "B"): INF, ("P3", "C"): INF}
    chosen = table.set_index(["problem", "optimizer"])["learning_rate"]
    assert chosen[("P1", "A")] == 0.1 and chosen[("P2", "C")] == 0.05
    assert table.set_index(["problem", "optimizer"]).loc[("P1", "A"), "time"] == 10


def test_performance_profile_by_hand():
    profile = st.performance_profile(_toy_ttt(), config=["learning_rate"])
    assert sorted(profile["tau"].unique()) == [1, 2, 3, 4]
    got = {s: dict(zip(rows["tau"], rows["rho"], strict=True)) for s, rows in profile.groupby("optimizer")}
    assert got == RHO  # counts over 3 problems: exact fractions
    assert (profile["variant"] == "tuned").all()


def test_data_profile_by_hand():
    profile = st.data_profile(_toy_ttt(), config=["learning_rate"])
    got = {
        s: dict(zip(rows["budget"], rows["solved"], strict=True)) for s, rows in profile.groupby("optimizer")
    }
    assert got == SOLVED
    at = st.data_profile(_toy_ttt(), config=["learning_rate"], budgets=[15.0])
    assert dict(zip(at["optimizer"], at["solved"], strict=True)) == pytest.approx(
        {"A": 1 / 3, "B": 1 / 3, "C": 1 / 3}
    )


def test_score_is_the_exact_area_by_hand():
    ratios = st.profile_ratios(_toy_ttt(), config=["learning_rate"])
    scores = st.score(ratios, seed=0)
    assert dict(zip(scores["optimizer"], scores["score"], strict=True)) == pytest.approx(SCORES, rel=1e-15)
    assert (scores["ci_low"] <= scores["score"]).all() and (scores["score"] <= scores["ci_high"]).all()
    pd.testing.assert_frame_equal(scores, st.score(ratios, seed=0))
    one = st.score(ratios[ratios["problem"] == "P1"])
    assert one["ci_low"].isna().all()


def test_default_variant_and_both_side_by_side():
    ttt = _toy_ttt()
    default = st.profile_ratios(ttt, config=["learning_rate"], variant="default")
    assert set(default["optimizer"]) == {"A", "B"}  # C has no default lanes
    got = {
        (p, s): r for p, s, r in zip(default["problem"], default["optimizer"], default["ratio"], strict=True)
    }
    # A's default (lr 1.0) misses P1 (median of [5, inf, inf]) and has no lanes on P2, P3.
    assert got == {
        ("P1", "A"): INF,
        ("P1", "B"): 1,
        ("P2", "A"): INF,
        ("P2", "B"): 1,
        ("P3", "A"): INF,
        ("P3", "B"): INF,
    }
    both = st.performance_profile(ttt, config=["learning_rate"], variant="both")
    rho = both.set_index(["optimizer", "variant", "tau"])["rho"]
    assert rho[("B", "default", 2.0)] == pytest.approx(2 / 3)  # P1: 20 / 10 (A tuned), P2: 10 / 10
    assert rho[("A", "tuned", 1.0)] == pytest.approx(1 / 3)


def test_zero_best_time_gives_ratio_one_to_the_tied_and_inf_to_others():
    ttt = pd.DataFrame(
        {"problem": "p", "optimizer": ["A", "B", "C"], "lr": 0.1, "seed": 0, "time": [0.0, 0.0, 5.0]}
    )
    table = st.profile_ratios(ttt, config=["lr"])
    assert list(table["ratio"]) == [1.0, 1.0, INF]


def test_profiles_from_time_to_target_keep_one_profile_per_eps():
    lanes, curves = _lanes_and_curves()
    ttt = st.time_to_target(lanes, curves, eps=[1e-1, 1e-2], unit="epochs")
    profile = st.performance_profile(ttt, config=["learning_rate", "batch_size"])
    assert set(profile["eps"]) == {1e-1, 1e-2} and (profile["unit"] == "epochs").all()
    at_one = profile[(profile["eps"] == 1e-1) & (profile["tau"] == 1.0)].set_index("optimizer")["rho"]
    # eps 0.1: ls: sgd 2 epochs, gd 5 -> sgd best; nn: sgd 1 * 25 / 50 beats adam 2 * 25 / 50.
    assert at_one.to_dict() == pytest.approx({"adam": 0.0, "gd": 0.0, "sgd": 1.0})


# --- paired comparisons -------------------------------------------------------------------------


def _paired_lanes(a_values, b_values, problem="p"):
    n = len(a_values)
    return pd.DataFrame(
        {
            "problem": problem,
            "optimizer": ["adam"] * n + ["sgd"] * n,
            "learning_rate": [0.01] * n + [0.1] * n,
            "seed": list(range(n)) * 2,
            "final_loss": np.concatenate([a_values, b_values]),
        }
    )


A_VALUES = np.array([0.10, 0.20, 0.30, 0.25, 0.40, 0.35, 0.22, 0.50, 0.31, 0.27, 0.18, 0.30])
B_VALUES = np.array([0.15, 0.20, 0.28, 0.35, 0.47, 0.45, 0.30, 0.52, 0.41, 0.26, 0.25, 0.30])


def test_compare_against_scipy_and_a_direct_count():
    row = st.compare(_paired_lanes(A_VALUES, B_VALUES), "adam", "sgd", config=["learning_rate"]).iloc[0]
    d = A_VALUES - B_VALUES
    assert row["p_value"] == stats.wilcoxon(d).pvalue
    wins = np.sum(A_VALUES < B_VALUES) + 0.5 * np.sum(A_VALUES == B_VALUES)
    assert row["probability_of_improvement"] == wins / len(d)
    assert row["median_difference"] == np.median(d)
    assert row["ci_low"] <= row["median_difference"] <= row["ci_high"]
    assert (row["num_pairs"], row["num_problems"], row["a"], row["b"]) == (12, 1, "adam", "sgd")


def test_compare_interval_covers_the_true_median_and_is_reproducible():
    # d = 0.5 + symmetric offsets: the median difference is 0.5 by construction.
    offsets = np.linspace(-0.2, 0.2, 41)
    lanes = _paired_lanes(0.5 + offsets, np.zeros(41))
    first = st.compare(lanes, "adam", "sgd", config=["learning_rate"], seed=3)
    assert first.loc[0, "ci_low"] < 0.5 < first.loc[0, "ci_high"]
    pd.testing.assert_frame_equal(first, st.compare(lanes, "adam", "sgd", config=["learning_rate"], seed=3))


def test_compare_stratifies_over_problems_and_weighs_problems_equally():
    lanes = pd.concat(
        [_paired_lanes(A_VALUES, B_VALUES, "p"), _paired_lanes(B_VALUES[:4], A_VALUES[:4], "q")],
        ignore_index=True,
    )
    row = st.compare(lanes, "adam", "sgd", config=["learning_rate"]).iloc[0]
    per_problem = [
        np.mean((A_VALUES < B_VALUES) + 0.5 * (A_VALUES == B_VALUES)),
        np.mean((B_VALUES[:4] < A_VALUES[:4]) + 0.5 * (A_VALUES[:4] == B_VALUES[:4])),
    ]
    assert row["probability_of_improvement"] == pytest.approx(np.mean(per_problem), rel=1e-15)
    d = np.concatenate([A_VALUES - B_VALUES, B_VALUES[:4] - A_VALUES[:4]])
    assert row["p_value"] == stats.wilcoxon(d).pvalue
    assert (row["num_pairs"], row["num_problems"]) == (16, 2)


def test_compare_chooses_configurations_on_tuning_seeds_and_reports_the_others():
    lanes = _paired_lanes(A_VALUES, B_VALUES)
    worse = lanes[lanes["optimizer"] == "adam"].assign(
        learning_rate=1.0, final_loss=lambda f: f["final_loss"] + 1
    )
    lanes = pd.concat([lanes, worse], ignore_index=True)
    row = st.compare(lanes, "adam", "sgd", config=["learning_rate"], tuning_seeds=[0, 1, 2]).iloc[0]
    d = (A_VALUES - B_VALUES)[3:]
    assert row["num_pairs"] == 9 and row["p_value"] == stats.wilcoxon(d).pvalue


def test_compare_pairs_a_deterministic_lane_with_every_seed_and_two_of_them_once():
    # sgd ran full batch from a fixed start: one lane without a seed, the same run on every seed
    lanes = _paired_lanes(A_VALUES, B_VALUES)
    lanes = lanes[(lanes["optimizer"] == "adam") | (lanes["seed"] == 0)].astype({"seed": "Int64"})
    lanes.loc[lanes["optimizer"] == "sgd", "seed"] = pd.NA
    row = st.compare(lanes, "adam", "sgd", config=["learning_rate"]).iloc[0]
    d = A_VALUES - B_VALUES[0]
    assert row["num_pairs"] == len(A_VALUES) and row["p_value"] == stats.wilcoxon(d).pvalue
    # two deterministic optimizers: one pair per problem, not one per seed of a third optimizer
    both = pd.concat(
        [
            lanes[lanes["optimizer"] == "sgd"],
            lanes[lanes["optimizer"] == "sgd"].assign(optimizer="gd", final_loss=0.5),
        ],
        ignore_index=True,
    )
    both = pd.concat([both, lanes[lanes["optimizer"] == "adam"]], ignore_index=True)
    row = st.compare(both, "gd", "sgd", config=["learning_rate"]).iloc[0]
    assert row["num_pairs"] == 1 and row["median_difference"] == 0.5 - B_VALUES[0]


def test_compare_equal_values_and_diverged_lanes():
    same = st.compare(_paired_lanes(A_VALUES, A_VALUES), "adam", "sgd", config=["learning_rate"]).iloc[0]
    assert (same["p_value"], same["median_difference"], same["probability_of_improvement"]) == (1.0, 0.0, 0.5)
    b = A_VALUES.copy()
    b[:3] = np.nan  # sgd diverged on three seeds: adam is better there
    row = st.compare(_paired_lanes(A_VALUES, b), "adam", "sgd", config=["learning_rate"]).iloc[0]
    assert row["probability_of_improvement"] == pytest.approx((3 + 0.5 * 9) / 12)


def test_compare_mode_max_and_infinite_differences():
    accuracy_a, accuracy_b = A_VALUES + 0.5, B_VALUES + 0.5
    lanes = _paired_lanes(accuracy_a, accuracy_b).rename(columns={"final_loss": "test_accuracy"})
    row = st.compare(lanes, "adam", "sgd", config=["learning_rate"], by="test_accuracy", mode="max").iloc[0]
    wins = np.sum(accuracy_a > accuracy_b) + 0.5 * np.sum(accuracy_a == accuracy_b)
    assert row["probability_of_improvement"] == wins / 12 and row["mode"] == "max"
    assert row["median_difference"] == pytest.approx(np.median(accuracy_a - accuracy_b), abs=1e-15)
    # adam diverged on 3 of 5 seeds: the median difference is infinite, the test still ranks.
    a = np.array([np.nan, np.nan, np.nan, 0.1, 0.2])
    row = st.compare(_paired_lanes(a, np.full(5, 0.3)), "adam", "sgd", config=["learning_rate"]).iloc[0]
    assert (row["median_difference"], row["ci_high"], row["probability_of_improvement"]) == (INF, INF, 0.4)
    assert row["p_value"] == stats.wilcoxon([1e9, 1e9, 1e9, -0.2, -0.1]).pvalue  # ranks only


def test_profile_ratios_take_final_loss_from_lanes():
    ttt = _toy_ttt()
    lanes = ttt[["lane", "final_loss"]].assign(
        final_loss=lambda f: np.where(f["lane"] == 10, 0.0, f["final_loss"])
    )
    table = st.profile_ratios(ttt.drop(columns="final_loss"), config=["learning_rate"], lanes=lanes)
    assert table.set_index(["problem", "optimizer"]).loc[("P2", "C"), "learning_rate"] == 0.5  # lane 10 now


def test_best_statement_only_when_supported():
    clear = _paired_lanes(A_VALUES, A_VALUES + 0.1 + 0.01 * np.arange(12))
    sentence = st.best_statement(clear, config=["learning_rate"])
    assert sentence is not None and sentence.startswith("adam is the best optimizer by final_loss")
    comparison = st.compare(clear, "adam", "sgd", config=["learning_rate"])
    assert st.is_significant(comparison) and not st.is_significant(
        st.compare(clear, "sgd", "adam", config=["learning_rate"])
    )
    assert st.best_statement(_paired_lanes(A_VALUES, B_VALUES[::-1]), config=["learning_rate"]) is None


def test_per_problem_comparisons_are_each_problems_own():
    """Pooled over problems, d is in each problem's units (here 1000x apart): one row per problem
    shows that adam wins on the large problem and loses on the small one."""
    big = _paired_lanes(A_VALUES * 1000, A_VALUES * 1000 + 100, problem="big")
    small = _paired_lanes(A_VALUES + 0.01, A_VALUES, problem="small")
    lanes = pd.concat([big, small], ignore_index=True)
    pooled = st.compare(lanes, "adam", "sgd", config=["learning_rate"])
    rows = st.compare(lanes, "adam", "sgd", config=["learning_rate"], per_problem=True)
    assert rows["problem"].tolist() == ["big", "small"] and (rows["num_problems"] == 1).all()
    for _, row in rows.iterrows():
        alone = st.compare(lanes[lanes["problem"] == row["problem"]], "adam", "sgd", config=["learning_rate"])
        pd.testing.assert_series_equal(
            row.drop("problem"), alone.iloc[0], check_names=False, check_index=False
        )
    assert rows.set_index("problem")["median_difference"].tolist() == pytest.approx([-100.0, 0.01])
    assert pooled["num_pairs"].iloc[0] == 24 and pooled["num_problems"].iloc[0] == 2


def test_verdict_says_why_no_optimizer_is_named():
    """Three seeds cannot name a best optimizer, however clear the differences: a Wilcoxon test of 3
    pairs gives p >= 0.25. The verdict says so (and how many pairs would do), not a silent tie."""
    clear = _paired_lanes(A_VALUES, A_VALUES + 0.1 + 0.01 * np.arange(12))
    assert st.verdict(clear, config=["learning_rate"]) == st.best_statement(clear, config=["learning_rate"])
    few = _paired_lanes(A_VALUES[:3], A_VALUES[:3] + 1.0)
    third = few[few["optimizer"] == "sgd"].assign(
        optimizer="momentum", final_loss=lambda f: f["final_loss"] + 1
    )
    text = st.verdict(pd.concat([few, third], ignore_index=True), config=["learning_rate"])
    assert st.best_statement(pd.concat([few, third]), config=["learning_rate"]) is None
    assert text.startswith("No best optimizer: adam has the best median final_loss, but its comparison with")
    assert "3 differing pair(s) of 3" in text and "below 0.25" in text and "p < alpha = 0.025" in text
    assert "at least 7 differing pairs" in text
    # Enough pairs, no clear difference: the comparison that fails, with its numbers.
    mixed = _paired_lanes(A_VALUES, B_VALUES[::-1])
    row = st.compare(mixed, "adam", "sgd", config=["learning_rate"]).iloc[0]
    text = st.verdict(mixed, config=["learning_rate"])
    assert "is not significantly better than sgd" in text and f"p = {row['p_value']:.2g}" in text
    tied = _paired_lanes(A_VALUES, A_VALUES)
    assert st.verdict(tied, config=["learning_rate"]).endswith(
        "it ties with sgd on every one of their 12 pair(s)."
    )
    assert st.verdict(mixed[mixed["optimizer"] == "adam"], config=["learning_rate"]).endswith(
        "one optimizer, nothing to compare it with."
    )


def test_smallest_wilcoxon_p_value_and_pairs_needed_against_the_exact_distribution():
    for n in range(1, 16):
        assert st.min_wilcoxon_p(n) == pytest.approx(2.0 / 2**n, rel=1e-12)  # all signs alike: 1 of 2^n
    assert st.min_wilcoxon_p(0) == 1.0
    for alpha in (0.05, 0.025, 0.0167, 0.01, 0.001):
        n = st.pairs_needed(alpha)
        assert 2.0 / 2**n < alpha <= 2.0 / 2 ** (n - 1)
    with pytest.raises(ValueError, match="alpha"):
        st.pairs_needed(0.0)


# --- uncertainty and search spaces --------------------------------------------------------------


def test_summarize_against_numpy_and_scipy():
    values = np.array([0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 0.5, 0.8])
    frame = pd.DataFrame({"optimizer": ["a"] * 8 + ["b"] * 3, "problem": list("pq" * 4) + ["p"] * 3})
    frame["final_loss"] = np.concatenate([values, [1.0, np.nan, 2.0]])
    summary = st.summarize(frame, "final_loss", by=["optimizer"]).set_index("optimizer")
    q25, q75 = np.quantile(values, [0.25, 0.75])
    expected = [np.median(values), q25, q75, q75 - q25, stats.trim_mean(values, 0.25)]
    np.testing.assert_allclose(
        summary.loc["a", ["median", "q25", "q75", "iqr", "iqm"]].to_numpy(float), expected
    )
    assert summary.loc["a", "ci_low"] <= summary.loc["a", "median"] <= summary.loc["a", "ci_high"]
    assert (summary.loc["b", "median"], summary.loc["b", "q75"]) == (2.0, INF)  # NaN counts as the worst
    stratified = st.summarize(frame, "final_loss", stratify="problem", seed=1)
    pd.testing.assert_frame_equal(stratified, st.summarize(frame, "final_loss", stratify="problem", seed=1))
    assert stratified.loc[0, "count"] == 11


def test_halton_grid_reproducible_and_in_range():
    space = {"learning_rate": (1e-4, 1.0, "log"), "momentum": (0.0, 0.99)}
    grid = st.halton_grid(256, space, seed=0)
    assert list(grid) == ["learning_rate", "momentum"]
    np.testing.assert_array_equal(grid["learning_rate"], st.halton_grid(256, space, seed=0)["learning_rate"])
    assert not np.array_equal(grid["momentum"], st.halton_grid(256, space, seed=1)["momentum"])
    log_lr = np.log10(grid["learning_rate"])
    assert log_lr.min() >= -4 and log_lr.max() <= 0 and abs(log_lr.mean() + 2) < 0.05  # log-uniform
    assert (
        grid["momentum"].min() >= 0
        and grid["momentum"].max() <= 0.99
        and abs(grid["momentum"].mean() - 0.495) < 0.02
    )


# --- bad input ----------------------------------------------------------------------------------


def _bad_calls():
    lanes, curves = _lanes_and_curves()
    ttt = _toy_ttt()
    paired = _paired_lanes(A_VALUES, B_VALUES)
    apart = pd.concat(
        [_paired_lanes(A_VALUES, B_VALUES, "p").iloc[:12], _paired_lanes(A_VALUES, B_VALUES, "q").iloc[12:]]
    )
    no_seconds = lanes.assign(seconds_per_step=np.nan)
    return {
        "eps zero": (lambda: st.time_to_target(lanes, curves, eps=0.0), "eps"),
        "eps one": (lambda: st.time_to_target(lanes, curves, eps=[0.1, 1.0]), "eps"),
        "eps negative": (lambda: st.time_to_target(lanes, curves, eps=-0.1), "eps"),
        "eps nan": (lambda: st.time_to_target(lanes, curves, eps=np.nan), "eps"),
        "eps inf": (lambda: st.time_to_target(lanes, curves, eps=np.inf), "eps"),
        "eps text": (lambda: st.time_to_target(lanes, curves, eps="small"), "eps"),
        "eps empty": (lambda: st.time_to_target(lanes, curves, eps=[]), "eps"),
        "unit": (lambda: st.time_to_target(lanes, curves, unit="minutes"), "unit"),
        "mode": (
            lambda: st.time_to_target(lanes, curves, metric="test_accuracy", threshold=0.9, mode="up"),
            "mode",
        ),
        "metric alone": (lambda: st.time_to_target(lanes, curves, metric="test_accuracy"), "threshold"),
        "eps and threshold": (
            lambda: st.time_to_target(lanes, curves, eps=0.1, metric="test_accuracy", threshold=0.9),
            "eps",
        ),
        "f_star": (lambda: st.time_to_target(lanes, curves, f_star="exact"), "f_star"),
        "f_star mapping": (lambda: st.time_to_target(lanes, curves, f_star={"ls": 0.0}), "f_star"),
        "lanes column": (lambda: st.time_to_target(lanes.drop(columns="problem"), curves), "lanes"),
        "curves column": (lambda: st.time_to_target(lanes, curves.drop(columns="loss")), "curves"),
        "metric column": (lambda: st.time_to_target(lanes, curves, metric="f1", threshold=0.5), "curves"),
        "epochs column": (
            lambda: st.time_to_target(lanes.drop(columns="num_examples"), curves, unit="epochs"),
            "lanes",
        ),
        "seconds missing": (lambda: st.time_to_target(no_seconds, curves, unit="seconds"), "unit"),
        "config column": (lambda: st.performance_profile(ttt, config=["momentum"]), "config"),
        "config string": (lambda: st.performance_profile(ttt, config="learning_rate"), "config"),
        "variant": (lambda: st.performance_profile(ttt, config=["learning_rate"], variant="best"), "variant"),
        "no is_default": (
            lambda: st.profile_ratios(
                ttt.drop(columns="is_default"), config=["learning_rate"], variant="default"
            ),
            "variant",
        ),
        "no default lanes": (
            lambda: st.performance_profile(ttt.assign(is_default=False), config=[], variant="default"),
            "variant",
        ),
        "empty lanes": (lambda: st.time_to_target(lanes.iloc[:0], curves), "lanes has no rows"),
        "empty ttt": (lambda: st.data_profile(ttt.iloc[:0], config=[]), "ttt has no rows"),
        "taus": (lambda: st.performance_profile(ttt, config=["learning_rate"], taus=[1.0, np.inf]), "taus"),
        "budgets": (lambda: st.data_profile(ttt, config=["learning_rate"], budgets=[-1.0]), "budgets"),
        "score table": (lambda: st.score(st.performance_profile(ttt, config=["learning_rate"])), "ratios"),
        "score confidence": (
            lambda: st.score(st.profile_ratios(ttt, config=[]), confidence=95),
            "confidence",
        ),
        "unknown a": (
            lambda: st.compare(paired, "adamw", "sgd", config=["learning_rate"]),
            "did you mean 'adam'",
        ),
        "unknown b": (lambda: st.compare(paired, "adam", "lion", config=["learning_rate"]), "b='lion'"),
        "same": (lambda: st.compare(paired, "adam", "adam", config=["learning_rate"]), "same optimizer"),
        "no shared pairs": (lambda: st.compare(apart, "adam", "sgd", config=["learning_rate"]), "share no"),
        "all seeds tuning": (
            lambda: st.compare(paired, "adam", "sgd", config=["learning_rate"], tuning_seeds=range(12)),
            "tuning_seeds",
        ),
        "compare by": (lambda: st.compare(paired, "adam", "sgd", config=[], by="accuracy"), "lanes"),
        "compare confidence": (
            lambda: st.compare(paired, "adam", "sgd", config=[], confidence=0.0),
            "confidence",
        ),
        "best of k mode": (lambda: st.expected_best_of_k(paired, config=[], mode="median"), "mode"),
        "summarize column": (lambda: st.summarize(paired, "loss"), "frame"),
        "num_points": (lambda: st.halton_grid(0, {"learning_rate": (1e-3, 1.0, "log")}), "num_points"),
        "empty space": (lambda: st.halton_grid(8, {}), "space"),
        "log low": (lambda: st.halton_grid(8, {"learning_rate": (0.0, 1.0, "log")}), "space"),
        "scale": (lambda: st.halton_grid(8, {"learning_rate": (1e-3, 1.0, "cubic")}), "space"),
        "order": (lambda: st.halton_grid(8, {"momentum": (0.9, 0.1)}), "space"),
    }


BAD = _bad_calls()


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_raises_a_one_line_error_naming_the_argument(case):
    call, words = BAD[case]
    with pytest.raises(ValueError, match=None) as info:
        call()
    message = str(info.value)
    assert words in message and "\n" not in message


# --- AlgoPerf's external tuning ---------------------------------------------------------------


def _protocol_ttt():
    # one problem, optimizer "a": three learning rates x two seeds, with hand-picked times
    times = {(0.1, 0): 5.0, (0.1, 1): 9.0, (0.3, 0): 7.0, (0.3, 1): 4.0, (1.0, 0): INF, (1.0, 1): 6.0}
    return pd.DataFrame(
        [
            {"problem": "p", "optimizer": "a", "learning_rate": lr, "seed": s, "time": t, "final_loss": 0.0}
            for (lr, s), t in times.items()
        ]
    )


def test_external_tuning_with_every_trial_is_the_median_over_studies_of_the_per_seed_best():
    table = st.external_tuning(_protocol_ttt(), config=["learning_rate"], trials=3, studies=3)
    # studies run on seeds 0, 1, 0: the fastest of all three configurations at that seed
    assert table["time"].tolist() == [5.0, 4.0, 5.0] and (table["trials"] == 3).all()
    ratios = st.profile_ratios(table, config=[])
    assert ratios["time"].tolist() == [5.0]  # the median over the three studies


def test_external_tuning_draws_reproducibly_without_replacement():
    ttt = _protocol_ttt()
    first = st.external_tuning(ttt, config=["learning_rate"], trials=1, studies=4, seed=7)
    again = st.external_tuning(ttt, config=["learning_rate"], trials=1, studies=4, seed=7)
    pd.testing.assert_frame_equal(first, again)
    allowed = {0: {5.0, 7.0, INF}, 1: {9.0, 4.0, 6.0}}  # one configuration's time at the study's seed
    for j, t in enumerate(first["time"]):
        assert t in allowed[[0, 1][j % 2]]
    with pytest.raises(ValueError, match="trials"):
        st.external_tuning(ttt, config=["learning_rate"], trials=0)


def test_the_printed_table_and_compare_choose_the_same_configuration():
    """The table `gdjax run` prints ranked any configuration with one diverged lane last; the page and
    `compare` take the median with the diverged lane as worst: the table showed one configuration
    while the paired test used another, and the direction of the comparison flipped."""
    from gdjax.study import summary

    cases = [("sgd", 0.1, [0.01, 0.011, 1e30], ["max_steps", "max_steps", "diverged"])]
    cases += [("sgd", 0.01, [0.5] * 3, ["max_steps"] * 3), ("adam", 0.01, [0.2] * 3, ["max_steps"] * 3)]
    rows = [
        dict(optimizer=o, rule=o, learning_rate=lr, seed=i, final_loss=v, status=status, steps=10)
        for o, lr, values, statuses in cases
        for i, (v, status) in enumerate(zip(values, statuses, strict=True))
    ]
    for lane, r in enumerate(rows):
        r.update(lane=lane, suboptimality=r["final_loss"])
    table = {r["optimizer"]: r["learning_rate"] for r in summary.best_configurations(rows)}
    assert table == {"sgd": 0.1, "adam": 0.01}
    lanes = pd.DataFrame(rows).assign(problem="p")
    (cmp,) = st.compare(lanes, "sgd", "adam", config=["learning_rate"], by="final_loss").itertuples()
    assert cmp.median_difference < 0  # sgd at 0.1 (0.011 on the median seed) beats adam (0.2)
