"""Suites: `[[problems]]` configs, L2 penalties on model costs, float64 reference optima, and the
config edges that came with them (CSV `exclude`, default labels of `optax.*` rules)."""

import numpy as np
import pytest

import gdjax
from gdjax.study import config, experiment, problems
from gdjax.study.config import ConfigError

SUITE = """
name = "mini_suite"
precision = "float64"
seeds = [0, 1]

[[problems]]
label = "ls"
model = "linear"
data = { source = "synthetic", num_examples = 50, num_features = 3, seed = 0 }

[[problems]]
label = "ridge"
model = "linear"
l2 = 0.5
data = { source = "synthetic", num_examples = 40, num_features = 4, seed = 1 }

[[problems]]
label = "rosen"
function = "rosenbrock"
init_noise = 0.1

[run]
num_steps = 20

[[optimizers]]
rule = "gd"
grid.learning_rate = [0.001, 0.01]
"""


def test_problems_bring_their_own_data_and_round_trip():
    cfg = config.loads(SUITE)
    assert cfg.is_suite and [c.label for c in cfg.costs] == ["ls", "ridge", "rosen"]
    assert cfg.costs[1].l2 == 0.5 and cfg.data_of(cfg.costs[1]).num_examples == 40
    assert cfg.data_of(cfg.costs[2]) is None
    assert config.loads(cfg.to_toml()) == cfg  # what the run folder keeps reads back the same
    built = experiment.build_problems(cfg)
    assert [p.data[0].shape for p in built[:2]] == [(50, 3), (40, 4)]
    assert [p.f_star_source.split(" ")[0] for p in built] == ["closed", "Newton,", "known"]


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (('label = "ls"\n', ""), "needs a label"),
        (('label = "ridge"', 'label = "ls"'), "two problems are labelled 'ls'"),
        (("[run]", '[cost]\nmodel = "linear"\n\n[run]'), "either [[problems]]"),
        (("l2 = 0.5", "l2 = -1.0"), "l2"),
        (('function = "rosenbrock"', 'function = "rosenbrock"\ndata = { source = "line" }'), "take no data"),
    ],
)
def test_suite_config_errors_name_the_key(edit, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
        config.loads(SUITE.replace(*edit))


def _ridge_closed_form(X, y, l2):
    n, d = X.shape
    Xc, yc = X - X.mean(0), y - y.mean()
    w = np.linalg.solve(2 * Xc.T @ Xc / n + l2 * np.eye(d), 2 * Xc.T @ yc / n)
    b = y.mean() - X.mean(0) @ w
    return np.mean((X @ w + b - y) ** 2) + 0.5 * l2 * w @ w, w


def test_ridge_optimum_matches_the_closed_form():
    X, y = (np.asarray(a, np.float64) for a in gdjax.data.synthetic(3, 60, 5, condition_number=50.0)[:2])
    cost, grad = problems.with_l2(gdjax.make_cost(gdjax.linear, gdjax.mse), gdjax.reference.mse_grad, 0.3)
    f_star, params, how = problems.reference_optimum(cost, gdjax.init_linear(5, np.float64), (X, y))
    expected, w = _ridge_closed_form(X, y, 0.3)
    assert f_star == pytest.approx(expected, rel=1e-14) and how.startswith("Newton, float64")
    np.testing.assert_allclose(params["w"], w, rtol=1e-10)
    # the penalised gradient is the autodiff one
    p = {"w": np.ones(5), "b": np.asarray(0.5)}
    auto = gdjax.check_grad(cost, p, (X, y), analytic=grad)
    assert auto.ok


def test_newton_and_lbfgs_agree_on_l2_logistic_regression(monkeypatch):
    X, y = gdjax.data.digits()
    keep = np.isin(y, (3, 8))
    X, y = X[keep] / 16.0, (y[keep] == 8).astype(np.float64)
    cost, _ = problems.with_l2(problems.logistic_cost, problems.logistic_grad, 1e-2)
    start = problems.init_classifier("logistic", 64, 2, np.float64)
    newton = problems.reference_optimum(cost, start, (X, y))
    monkeypatch.setattr(problems, "_NEWTON_MAX_PARAMS", 10)  # force L-BFGS on the same problem
    lbfgs = problems.reference_optimum(cost, start, (X, y))
    assert newton[2].startswith("Newton") and lbfgs[2].startswith("L-BFGS")
    assert lbfgs[0] == pytest.approx(newton[0], rel=1e-12)


def test_a_classifier_without_l2_keeps_f_star_unknown():
    # Without L2 a separable training set has no minimiser (the loss only tends to its infimum), so
    # the study solves for f* only where the penalty makes the cost strictly convex.
    text = """
name = "t"
[data]
source = "digits"
classes = [3, 8]
[cost]
model = "linear"
loss = "logistic"
[run]
num_steps = 5
[[optimizers]]
rule = "gd"
grid.learning_rate = 0.1
"""
    plain = experiment.build_problems(config.loads(text))[0]
    penalised = experiment.build_problems(
        config.loads(text.replace('loss = "logistic"', 'loss = "logistic"\nl2 = 0.01'))
    )[0]
    assert plain.f_star is None and plain.f_star_source == ""
    assert penalised.f_star is not None and penalised.f_star_source.startswith("Newton")


def test_csv_exclude_and_optax_default_labels(tmp_path):
    (tmp_path / "d.csv").write_text("id,name,x1,x2,y\n1,a,0.5,1.0,2.0\n2,b,1.5,0.0,1.0\n3,c,2.0,1.0,4.0\n")
    X, y = gdjax.data.load_csv(tmp_path / "d.csv", target="y", exclude=["id", "name"])
    assert X.shape == (3, 2) and y.tolist() == [2.0, 1.0, 4.0]
    with pytest.raises(ValueError, match="leave this one out with exclude"):
        gdjax.data.load_csv(tmp_path / "d.csv", target="y")
    text = f"""
name = "t"
[data]
source = "csv"
path = "{tmp_path / "d.csv"}"
target = "y"
exclude = ["id", "name"]
[cost]
model = "linear"
[run]
num_steps = 5
[[optimizers]]
rule = "optax.lion"
grid.learning_rate = 0.01
"""
    cfg = config.loads(text)
    assert cfg.data.exclude == ("id", "name") and cfg.optimizers[0].label == "lion"
    assert experiment.build_problems(cfg)[0].data[0].shape == (3, 2)
    with pytest.raises(ConfigError, match="either features"):
        config.loads(text.replace('exclude = ["id", "name"]', 'exclude = ["id"]\nfeatures = ["x1"]'))


SEARCH = """
name = "t"
precision = "float64"
[data]
source = "line"
[cost]
model = "linear"
[run]
num_steps = 50
[[optimizers]]
rule = "momentum"
search = { points = 8, seed = 0, learning_rate = [1e-3, 0.5, "log"], momentum = [0.5, 0.99] }
"""


def test_quasi_random_search_is_a_zipped_grid_reproducible_from_its_seed():
    from scipy.stats import qmc

    cfg = config.loads(SEARCH)
    opt = cfg.optimizers[0]
    assert opt.zip_grid and [k for k, _ in opt.grid] == ["learning_rate", "momentum"]
    u = qmc.Halton(d=2, scramble=True, rng=np.random.default_rng(0)).random(8)  # the oracle
    lr, m = (np.asarray(v) for _, v in opt.grid)
    np.testing.assert_allclose(lr, np.exp(np.log(1e-3) + u[:, 0] * (np.log(0.5) - np.log(1e-3))), rtol=1e-15)
    np.testing.assert_allclose(m, 0.5 + u[:, 1] * (0.99 - 0.5), rtol=1e-15)
    assert config.loads(cfg.to_toml()) == cfg  # the run folder's config.toml holds the points
    assert config.loads(SEARCH.replace("seed = 0", "seed = 1")).optimizers[0].grid != opt.grid


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            ('learning_rate = [1e-3, 0.5, "log"]', 'learning_rat = [1e-3, 0.5, "log"]'),
            "did you mean 'learning_rate'",
        ),
        (('learning_rate = [1e-3, 0.5, "log"]', 'learning_rate = [0.0, 0.5, "log"]'), "needs low > 0"),
        (("points = 8", "points = 0"), "points"),
        (('rule = "momentum"', 'rule = "momentum"\ngrid.learning_rate = [0.1, 0.2]'), "not both"),
    ],
)
def test_search_errors_name_the_key(edit, words):
    with pytest.raises(ConfigError, match=words):
        config.loads(SEARCH.replace(*edit))
