"""Classification losses in the core (issue 11): `costs.logistic` and `costs.cross_entropy` as losses
of `make_cost`, their accuracies, the float64 oracles of `gdjax.reference`, and a logistic regression
on the bundled digits that records a held-out accuracy during `run` and `sweep` and ranks a sweep by it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax
from gdjax import costs, reference

# (name, loss, its accuracy, the float64 oracles of its value and gradient, number of classes)
CLASSIFIERS = [
    ("logistic", costs.logistic, costs.binary_accuracy, reference.logistic_cost, reference.logistic_grad, 2),
    (
        "cross_entropy",
        costs.cross_entropy,
        costs.categorical_accuracy,
        reference.cross_entropy_cost,
        reference.cross_entropy_grad,
        4,
    ),
]
IDS = [c[0] for c in CLASSIFIERS]


def classification_data(k: int, n: int = 40, d: int = 5, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, size=n).astype(np.float64)
    return X, y


def random_params(k: int, d: int = 5, seed: int = 2):
    """Zero-mean normal params of the linear classifier: one output for two classes, else k."""
    params0 = gdjax.init_linear(d, jnp.float64, num_outputs=None if k == 2 else k)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params0)


@pytest.mark.parametrize(("name", "loss", "acc", "value", "grad", "k"), CLASSIFIERS, ids=IDS)
def test_loss_value_gradient_and_accuracy_against_float64_oracles(name, loss, acc, value, grad, k):
    X, y = classification_data(k)
    cost = gdjax.make_cost(gdjax.linear, loss)
    assert cost == gdjax.make_cost(gdjax.linear, loss)  # built again: the same compiled program
    zero = gdjax.init_linear(5, jnp.float64, num_outputs=None if k == 2 else k)
    assert float(cost(zero, (X, y))) == pytest.approx(np.log(k), rel=1e-15)  # every class equally likely
    params = random_params(k)
    assert float(cost(params, (X, y))) == pytest.approx(value(params, (X, y)), rel=1e-13)
    # The feature-major form (what run uses for full batch) is the same function.
    assert float(cost.feature_major(params, (X.T, y))) == pytest.approx(value(params, (X, y)), rel=1e-13)
    report = gdjax.check_grad(cost, params, (X, y), analytic=grad, num_points=3)
    assert report.ok, report
    # Accuracy against NumPy.
    Z = X @ np.asarray(params["w"]) + np.asarray(params["b"])
    predicted = (Z > 0).astype(float) if k == 2 else Z.argmax(axis=1)
    expected = np.mean(predicted == y)
    assert float(costs.accuracy(cost)(params, (X, y))) == pytest.approx(expected)
    assert costs.accuracy(cost) == gdjax.make_cost(gdjax.linear, acc)


BIG = 1e4
# (name, loss, value and gradient oracles, logits, targets predicted right, wrong, loss when wrong)
EXTREMES = [
    (
        "logistic",
        costs.logistic,
        reference.logistic_cost,
        reference.logistic_grad,
        [BIG, -BIG],
        [1.0, 0.0],
        [0.0, 1.0],
        BIG,
    ),
    (
        "cross_entropy",
        costs.cross_entropy,
        reference.cross_entropy_cost,
        reference.cross_entropy_grad,
        [[BIG, 0.0, -BIG, 0.0], [0.0, -BIG, 0.0, BIG]],
        [0.0, 3.0],
        [2.0, 1.0],
        2 * BIG,
    ),
]


@pytest.mark.parametrize(
    ("name", "loss", "value", "grad", "logits", "right", "wrong", "loss_wrong"), EXTREMES, ids=IDS
)
def test_losses_are_stable_at_huge_logits(name, loss, value, grad, logits, right, wrong, loss_wrong):
    logits, right, wrong = np.asarray(logits), np.asarray(right), np.asarray(wrong)
    # Confident and right: loss 0; confident and wrong: loss |logit|; never inf or nan.
    assert float(loss(jnp.asarray(logits), jnp.asarray(right))) == 0.0
    assert float(loss(jnp.asarray(logits), jnp.asarray(wrong))) == pytest.approx(loss_wrong)
    g = jax.grad(loss)(jnp.asarray(logits), jnp.asarray(wrong))
    assert bool(jnp.all(jnp.isfinite(g)))
    # The oracles on a linear model whose logits these are: X = I, w = logits, b = 0.
    params = {"w": logits, "b": np.zeros(logits.shape[1:])}
    X = np.eye(len(right))
    assert value(params, (X, right)) == 0.0
    assert value(params, (X, wrong)) == pytest.approx(loss_wrong)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grad(params, (X, wrong))))


def test_shape_errors_name_the_loss_and_the_fix():
    with pytest.raises(
        ValueError, match=r"logistic: predictions have shape \(3,\) but targets have shape \(3, 1\)"
    ):
        costs.logistic(jnp.zeros(3), jnp.zeros((3, 1)))
    with pytest.raises(ValueError, match=r"cross_entropy: needs \(n, k\) logits.*num_outputs=k"):
        costs.cross_entropy(jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match="accuracy needs make_cost"):
        costs.accuracy(gdjax.make_cost(gdjax.linear, gdjax.mse))
    with pytest.raises(ValueError, match="num_outputs"):
        gdjax.init_linear(3, num_outputs=0)


# ------------------------------------------------------------------ the digits, held-out accuracy
@pytest.fixture(scope="module")
def digits_3_vs_8():
    """Digits 3 and 8 (label 1 for an 8), pixels scaled to [0, 1], a seeded held-out quarter."""
    X, y = gdjax.data.digits()
    keep = np.isin(y, (3.0, 8.0))
    X, y = X[keep] / 16.0, (y[keep] == 8.0).astype(np.float64)
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[: len(y) // 4], order[len(y) // 4 :]
    return (X[train], y[train]), (X[test], y[test])


def numpy_accuracy(params, X, y) -> float:
    z = X @ np.asarray(params["w"], np.float64) + float(params["b"])
    return float(np.mean((z > 0) == (y > 0.5)))


def test_logistic_regression_on_digits_records_held_out_accuracy_in_run_and_sweep(digits_3_vs_8):
    (X, y), (X_test, y_test) = digits_3_vs_8
    cost = gdjax.make_cost(gdjax.linear, gdjax.logistic)
    test = (jnp.asarray(X_test), jnp.asarray(y_test))
    metrics = {
        "test_loss": costs.on_data(cost, test),
        "test_accuracy": costs.on_data(costs.accuracy(cost), test),
    }
    params0 = gdjax.init_linear(X.shape[1], jnp.float64)

    trace = gdjax.run(
        cost, gdjax.rules.sgd(1.0), params0, (X, y), num_steps=200, eval_every=20, metrics=metrics
    )
    acc = np.asarray(trace.metrics["test_accuracy"])
    assert acc.shape == np.asarray(trace.eval_steps).shape == (11,)
    assert acc[0] == pytest.approx(np.mean(y_test == 0.0))  # z = 0 predicts class 0 everywhere
    assert acc[-1] == numpy_accuracy(trace.params, X_test, y_test)
    assert acc[-1] > 0.9
    assert float(trace.metrics["test_loss"][-1]) == pytest.approx(
        reference.logistic_cost(trace.params, (X_test, y_test)), rel=1e-12
    )

    lrs = [0.01, 0.1, 1.0]
    result = gdjax.sweep(
        cost,
        "gd",
        params0,
        (X, y),
        grid={"learning_rate": lrs},
        num_steps=200,
        eval_every=20,
        metrics=metrics,
    )
    finals = np.asarray(result.trace.metrics["test_accuracy"])[:, -1]
    assert finals.shape == (3,)
    best = result.best(by="test_accuracy", mode="max")[0]
    assert best["test_accuracy"] == finals.max()
    assert best["learning_rate"] == lrs[int(np.argmax(finals))]
    # The sweep's lane at the run's learning rate records the run's accuracy history.
    np.testing.assert_allclose(np.asarray(result.trace.metrics["test_accuracy"])[2], acc, atol=1e-12)
    worst = result.best(by="test_accuracy", mode="min")[0]
    assert worst["test_accuracy"] == finals.min() < finals.max()
