"""Every study in configs/ runs through `gdjax run` (in-process, without plots) and shows what it is
meant to show, checked against closed-form answers where there are some.

The configs are small enough to run as they are (a few seconds each on a CPU; the two optimizer
studies share their compiled programs), so what is tested is exactly what the README reports.
"""

import io
import json
import pathlib

import jax
import numpy as np
import pytest

from gdjax import data, reference
from gdjax.study import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.toml"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs each config once (lazily) and returns its folder."""
    base = tmp_path_factory.mktemp("studies")
    done = {}

    def get(name):
        if name not in done:
            folder = base / name
            out, err = io.StringIO(), io.StringIO()
            before = jax.config.jax_enable_x64
            try:
                code = cli.main(
                    ["run", str(ROOT / "configs" / f"{name}.toml"), "--out", str(folder), "-q", "--no-plots"],
                    stdout=out,
                    stderr=err,
                )
            finally:
                jax.config.update("jax_enable_x64", before)
            assert code == 0, err.getvalue()
            done[name] = folder
        return done[name]

    return get


class Run:
    """A run folder's summary rows, manifest and histories."""

    def __init__(self, folder):
        self.folder = folder
        self.rows = json.loads((folder / "summary.json").read_text())
        self.manifest = json.loads((folder / "manifest.json").read_text())
        with np.load(folder / "histories.npz", allow_pickle=False) as z:
            self.arrays = {k: z[k] for k in z.files}

    def of(self, optimizer, cost=None):
        return [
            r for r in self.rows if r["optimizer"] == optimizer and (cost is None or r.get("cost") == cost)
        ]

    def problem(self, label=None):
        problems = self.manifest["problems"]
        return problems[label] if label else next(iter(problems.values()))

    def median_sub(self, optimizer, **coords):
        rows = [r for r in self.of(optimizer) if all(np.isclose(r[k], v) for k, v in coords.items())]
        return float(np.median([r["suboptimality"] for r in rows]))


def check_written(run):
    """What every study writes: a complete folder, a passed gradient check, one row per lane."""
    folder = run.folder
    assert run.manifest["status"] == "complete"
    assert all(v.startswith("PASS") for v in run.manifest["gradcheck"].values())
    assert len(run.rows) == sum(u["lanes"] for u in run.manifest["units"].values())
    for unit in run.manifest["units"]:
        assert run.arrays[f"{unit}/loss_history"].shape[0] == run.manifest["units"][unit]["lanes"]
    assert "PASS" in (folder / "gradcheck.txt").read_text()


# ------------------------------------------------------------------------------- what each shows
def check_lr_regimes(run):
    # The four regimes, in the order of the grid: crawling, good, oscillating, divergent.
    regimes = sorted(run.of("regimes"), key=lambda r: r["learning_rate"])
    assert [r["status"] for r in regimes] == ["max_steps", "converged", "converged", "diverged"]
    assert regimes[2]["steps"] < regimes[1]["steps"]  # oscillating but faster than "good"
    # The observed divergence boundary brackets 2/L within a factor of 1.1.
    bound = run.problem()["max_stable_lr"]
    X, _ = data.house_prices()
    assert bound == pytest.approx(reference.curvature(X).max_stable_lr)
    sweep = run.of("sweep")
    stable = max(r["learning_rate"] for r in sweep if r["status"] != "diverged")
    diverged = min(r["learning_rate"] for r in sweep if r["status"] == "diverged")
    assert stable < bound < diverged
    assert diverged / stable <= 1.1
    assert all(r["status"] == "diverged" for r in sweep if r["learning_rate"] > bound)


def check_house_prices(run):
    X, y = data.house_prices()
    exact = reference.least_squares(X, y)
    z = data.Standardizer.fit(X)
    for name in ("gd", "momentum"):
        (row,) = run.of(name)
        assert row["status"] == "converged"
        fit = z.unstandardize(
            {
                "w": run.arrays[f"{name}/params/w"][row["lane"]],
                "b": run.arrays[f"{name}/params/b"][row["lane"]],
            }
        )
        np.testing.assert_allclose(fit["w"], exact["w"], rtol=1e-8)
        np.testing.assert_allclose(fit["b"], exact["b"], rtol=1e-8)
    assert run.problem()["minimizer_original_scale"]["w"] == pytest.approx(exact["w"].tolist())


def check_quadratics(run):
    # The error shrinks by |1 - 2 lr| per step from x = 10: lr = 1 bounces forever, lr = 1.1 diverges.
    expected = ["max_steps", "converged", "converged", "converged", "max_steps", "diverged"]
    for cost, x_star in (("quadratic", 0.0), ("shifted", 3.0)):
        rows = sorted(run.of("gd", cost=cost), key=lambda r: r["learning_rate"])
        assert [r["status"] for r in rows] == expected, cost
        one_step = next(r for r in rows if r["learning_rate"] == 0.5)
        assert run.arrays[f"{cost}.gd/params/x"][one_step["lane"]] == pytest.approx([x_star], abs=1e-12)
        bounce = next(r for r in rows if r["learning_rate"] == 1.0)
        # x* + (10 - x*) (-1)^t: back at the start after an even number of steps.
        assert run.arrays[f"{cost}.gd/params/x"][bounce["lane"]] == pytest.approx([10.0])


def check_batch_vs_stochastic(run):
    # The same budget of examples for each, and only full batch converges to f*.
    budgets = {(r["optimizer"], r["steps"] * (r["batch_size"] or 100)) for r in run.rows}
    assert {b for _, b in budgets} == {5000}
    full = min(run.median_sub("full_batch", learning_rate=lr) for lr in (0.03, 0.06, 0.1))
    noisy = min(run.median_sub("stochastic", learning_rate=lr) for lr in (0.0003, 0.001, 0.003))
    assert full < 1e-6 < 1e-5 < noisy
    assert all(r["status"] == "max_steps" for r in run.rows)


def check_optimizers_well(run):
    for name in ("gd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        best = min(r["suboptimality"] for r in run.of(name) if r["status"] != "diverged")
        assert best < 1e-2, name
    assert run.problem()["condition_number"] < 3


def check_optimizers_ill(run):
    bound = run.problem()["max_stable_lr"]
    gd = run.of("gd")
    assert all(r["status"] == "diverged" for r in gd if r["learning_rate"] > bound)
    best = {
        name: min(r["suboptimality"] for r in run.of(name) if r["status"] != "diverged")
        for name in ("gd", "momentum", "adam")
    }
    # Ill-conditioning stalls GD; momentum and (per-coordinate) Adam get much further.
    assert best["gd"] > 1.0
    assert best["momentum"] < best["gd"] / 100 and best["adam"] < best["gd"] / 100
    assert run.problem()["condition_number"] > 500


def check_decay(run):
    constant = {lr: run.median_sub("constant", learning_rate=lr) for lr in (0.001, 0.003, 0.01)}
    assert constant[0.001] < constant[0.003] < constant[0.01]  # the noise floor grows with the step
    decayed = run.median_sub("inverse_time", learning_rate=0.01, decay_rate=0.01)
    assert decayed < min(constant.values()) / 10
    assert run.median_sub("inverse_sqrt") < min(constant.values())
    # The large constant step has stalled: no better at the end than a fifth of the way in.
    rows = [r for r in run.of("constant") if r["learning_rate"] == 0.01]
    losses = run.arrays["constant/loss_history"][[r["lane"] for r in rows]]
    f_star = run.problem()["f_star"]
    assert np.median(losses[:, -1]) - f_star > 0.3 * (np.median(losses[:, 1000]) - f_star)


def check_digits(run):
    # A quarter of the 1797 images held out; the softmax classifier generalises to about 95% on them.
    p = run.problem()
    assert p["num_examples"] == 1797 - round(0.25 * 1797) and p["num_params"] == 650
    assert p["f_star"] is None
    for name in ("gd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"):
        rows = run.of(name)
        assert {"accuracy", "test_loss", "test_accuracy", "suboptimality_vs_best"} <= set(rows[0])
        best = min(rows, key=lambda r: r["test_loss"])
        assert best["test_accuracy"] > 0.93, name
        assert best["accuracy"] >= best["test_accuracy"], name
        assert all(r["suboptimality_vs_best"] >= 0 for r in rows)
        # The held-out curves are in the histories, one entry per evaluation.
        history = run.arrays[f"{name}/metrics/test_accuracy"]
        assert history.shape == run.arrays[f"{name}/loss_history"].shape
        assert history[best["lane"], -1] == pytest.approx(best["test_accuracy"])
    # The training loss keeps falling with the step size while the held-out loss turns back up:
    # the best learning rate by test loss is inside the grid, not at its edge.
    gd = sorted(run.of("gd"), key=lambda r: r["learning_rate"])
    test = [r["test_loss"] for r in gd]
    assert 0 < int(np.argmin(test)) < len(test) - 1
    assert gd[-1]["final_loss"] < gd[int(np.argmin(test))]["final_loss"]


def check_suite(run):
    # Nine problems, each with an exact f* and where it came from (closed form, known minimum, Newton).
    problems = run.manifest["problems"]
    assert len(problems) == 9 and run.manifest["suite"] is True
    assert all(p["f_star"] is not None and p["f_star_source"] for p in problems.values())
    # ridge: the float64 Newton solve against the closed form (centred normal equations)
    X, y = data.synthetic(2, 100, 30, noise=1.0, condition_number=100.0)[:2]
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    Xc, yc = X - X.mean(0), y - y.mean()
    w = np.linalg.solve(2 * Xc.T @ Xc / 100 + 0.1 * np.eye(30), 2 * Xc.T @ yc / 100)
    b = y.mean() - X.mean(0) @ w
    f_ridge = np.mean((X @ w + b - y) ** 2) + 0.05 * w @ w
    assert problems["ridge"]["f_star"] == pytest.approx(f_ridge, rel=1e-13)
    # no lane of any optimizer gets below f* by more than rounding
    for label, p in problems.items():
        losses = [float(r["final_loss"]) for r in run.rows if r.get("cost") == label]  # "inf" read as text
        assert min(losses) >= p["f_star"] - 1e-9 * max(1.0, abs(p["f_star"])), label
    # the comparison the suite exists for: Results, a performance profile and the scores
    from gdjax import study

    results = study.load(run.folder)
    assert sorted(results.problems["problem"]) == sorted(problems)  # a suite's problems by their labels
    profile = results.performance_profile(1e-3, unit="steps")
    assert set(profile["optimizer"]) == {"gd", "momentum", "nesterov", "adam"}
    assert profile["rho"].between(0, 1).all()
    scores = results.scores(1e-3, unit="steps").set_index("optimizer")["score"]
    # on ill-conditioned problems plain GD is the slowest to reach a tight target
    assert scores["gd"] < max(scores["momentum"], scores["nesterov"], scores["adam"])


# (config, check of what it is meant to show)
STUDIES = [
    ("suite", check_suite),
    ("digits", check_digits),
    ("lr_regimes", check_lr_regimes),
    ("house_prices", check_house_prices),
    ("quadratics", check_quadratics),
    ("batch_vs_stochastic", check_batch_vs_stochastic),
    ("optimizers_well", check_optimizers_well),
    ("optimizers_ill", check_optimizers_ill),
    ("decay", check_decay),
]


def test_every_config_has_a_study_check():
    assert sorted(name for name, _ in STUDIES) == CONFIGS


@pytest.mark.slow
@pytest.mark.parametrize(("name", "check"), STUDIES, ids=[s[0] for s in STUDIES])
def test_study_runs_and_shows_what_it_is_meant_to(runs, name, check):
    # One test per study, so that under `pytest -n auto` no two workers run the same study.
    run = Run(runs(name))
    check_written(run)
    check(run)
