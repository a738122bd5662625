"""The cost registry (issue 17 item 4): one entry makes a loss usable from configs and `gdjax list`;
a config's own metrics (`[cost] metrics`) on a callable cost, held-out versions included; errors at
the key and line of the text the config was read from (the file is not read again)."""

import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from gdjax import costs
from gdjax.study import config, experiment, preflight, problems, summary
from gdjax.study.config import ConfigError
from tests.helpers import run_cli

USER = """\
import jax.numpy as jnp


def cost(params, data):  # the logistic loss, written by the user
    X, y = data
    z = X @ params["w"] + params["b"]
    return jnp.mean(jnp.logaddexp(0.0, z) - y * z)


def init(data):
    return {"w": jnp.zeros(data[0].shape[1]), "b": jnp.zeros(())}


def accuracy(params, data):
    X, y = data
    return jnp.mean(((X @ params["w"] + params["b"]) > 0) == (y > 0.5))


def margin(params, data):
    X, y = data
    return jnp.mean((2.0 * y - 1.0) * (X @ params["w"] + params["b"]))


def vector(params, data):
    return params["w"]


def steps(params, data):
    return jnp.sum(params["w"])
"""

STUDY = """\
name = "metrics"
precision = "float64"
seeds = [0]

[data]
source = "csv"
path = "points.csv"
target = "label"
test_fraction = 0.25

[cost]
callable = "user.py:cost"
params0 = "user.py:init"
metrics = {metrics}

[run]
num_steps = 5

[[optimizers]]
rule = "gd"
grid.learning_rate = [0.5, 1.0]

[gradcheck]
enabled = false
"""


def _points(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = np.round(rng.normal(size=(n, 2)), 6)
    return X, (X[:, 0] - 0.3 * X[:, 1] > 0).astype(np.float64)


@pytest.fixture
def folder(tmp_path: pathlib.Path) -> pathlib.Path:
    X, y = _points()
    rows = [f"{a:.6f},{b:.6f},{int(c)}" for (a, b), c in zip(X, y, strict=True)]
    (tmp_path / "points.csv").write_text("x1,x2,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "user.py").write_text(USER)
    return tmp_path


def _study(folder, metrics='["user.py:accuracy", "user.py:margin"]', **replace) -> str:
    text = STUDY.replace("{metrics}", metrics)
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


def test_a_callable_cost_records_its_metrics_on_both_splits(folder):
    cfg = config.loads(_study(folder), base_dir=str(folder))
    (p,) = preflight.build_problems(cfg)
    assert list(p.metrics) == ["test_loss", "accuracy", "test_accuracy", "margin", "test_margin"]
    X, y = _points()
    train, test = problems.split(len(y), 0.25, seed=0)
    w, b = np.array([0.7, -1.1]), 0.2
    params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    for name, rows in (("", train), ("test_", test)):  # NumPy on the split, the oracle
        z = X[rows] @ w + b
        assert float(p.metrics[f"{name}accuracy"](params)) == pytest.approx(
            np.mean((z > 0) == (y[rows] > 0.5))
        )
        assert float(p.metrics[f"{name}margin"](params)) == pytest.approx(np.mean((2 * y[rows] - 1) * z))
    z = X[test] @ w + b
    assert float(p.metrics["test_loss"](params)) == pytest.approx(np.mean(np.logaddexp(0, z) - y[test] * z))


def test_a_run_ranks_and_writes_the_metrics_as_outcomes(folder):
    cfg = config.loads(_study(folder), base_dir=str(folder))
    outcome = experiment.run_experiment(cfg, str(folder / "run"))
    assert outcome.metric_names == ("test_loss", "accuracy", "test_accuracy", "margin", "test_margin")
    row = outcome.rows[0]
    assert list(row)[-2:] == ["margin", "test_margin"]  # after the built-in outcomes
    best = summary.best_configurations(outcome.rows, metrics=outcome.metric_names)
    assert len(best) == 1 and best[0]["seeds"] == 1 and "margin" in best[0]
    table = summary.format_summary(outcome.rows, metrics=outcome.metric_names)
    assert "test margin" in table.splitlines()[0]


def test_a_metric_is_an_outcome_not_a_coordinate():
    base = {"optimizer": "gd", "learning_rate": 0.1, "final_loss": 1.0, "suboptimality": None}
    base |= {"status": "max_steps", "steps": 5}
    rows = [{**base, "lane": i, "seed": i, "margin": 0.1 * i} for i in range(3)]
    (best,) = summary.best_configurations(rows, metrics=("margin",))
    assert best["seeds"] == 3 and best["margin"] == pytest.approx(0.1)  # the median over seeds
    assert len({summary.config_key(r, ("margin",)) for r in rows}) == 1
    assert len({summary.config_key(r) for r in rows}) == 3  # unnamed, each lane would be its own


@pytest.mark.parametrize(
    "metrics, key, says",
    [
        ('["user.py:vector"]', "cost.metrics[0]", "the metric must return a scalar"),
        ('["user.py:steps"]', "cost.metrics[0]", "a summary column has that name"),
        ('["user.py:margin", "user.py:margin"]', "cost.metrics[1]", "two metrics are named 'margin'"),
        ('["user.py:nothing"]', "cost.metrics[0]", "has no function 'nothing'"),
        ("[3]", "cost.metrics[0]", "expected a"),
    ],
)
def test_a_bad_metric_is_refused_at_its_key_and_line(folder, metrics, key, says):
    text = _study(folder, metrics)
    line = text.splitlines().index(f"metrics = {metrics}") + 1
    with pytest.raises(ConfigError) as err:  # a name that is no file: the line comes from the text kept
        preflight.build_problems(config.loads(text, source="not-on-disk.toml", base_dir=str(folder)))
    assert (err.value.key, err.value.line) == (key, line)
    assert says in err.value.message


def _squared_hinge(params, data):
    X, y = data
    return jnp.mean(jnp.maximum(0.0, 1.0 - (2.0 * y - 1.0) * costs.linear(params, X)) ** 2)


def test_one_registry_entry_makes_a_loss_usable_from_configs(folder, monkeypatch):
    text = _study(folder, "[]").replace(
        'callable = "user.py:cost"\nparams0 = "user.py:init"', 'model = "linear"'
    )
    text = text.replace("metrics = []\n", 'loss = "squared_hinge"\n')
    with pytest.raises(ConfigError, match="unknown loss 'squared_hinge'"):
        config.loads(text, base_dir=str(folder))
    spec = problems.classifier(
        "squared_hinge",
        _squared_hinge,
        None,
        problems.logistic_accuracy,
        binary=True,
        description="squared hinge loss of a linear model on 0/1 targets",
    )
    monkeypatch.setitem(problems.COSTS, "squared_hinge", spec)
    (p,) = preflight.build_problems(config.loads(text, base_dir=str(folder)))
    assert set(p.metrics) == {"accuracy", "test_loss", "test_accuracy"}
    X, y = _points()
    train, _ = problems.split(len(y), 0.25, seed=0)
    w, b = np.array([0.4, 0.3]), -0.1
    hinge = np.maximum(0.0, 1.0 - (2 * y[train] - 1) * (X[train] @ w + b)) ** 2
    params = {"w": jnp.asarray(w), "b": jnp.asarray(b)}
    assert float(p.cost(params, p.data)) == pytest.approx(np.mean(hinge))
    code, out, _ = run_cli("list")
    assert code == 0 and "loss squared_hinge" in out and "squared hinge loss of a linear model" in out
    with pytest.raises(ConfigError, match="fits a linear model"):
        config.loads(
            text.replace('model = "linear"', 'model = "polynomial"\ndegree = 2'), base_dir=str(folder)
        )
