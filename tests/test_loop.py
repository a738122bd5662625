"""The core run: one compiled scan, judged against oracles it cannot influence.

Oracles: a plain NumPy re-implementation of the tutorials' gradient-descent loop, the closed-form
least-squares optimum, and the curvature bound 2/L from `gdjax.reference`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import atol, count_compilations, rtol

import gdjax
from gdjax import Status, reference, rules
from gdjax.loop import run
from gdjax.options import Execution, Stopping

COST = gdjax.make_cost(gdjax.linear, gdjax.mse)


def numpy_gd(X, y, lr, num_steps):
    """The tutorials' loop, written out in NumPy float64: the oracle for full-batch GD."""
    n, d = X.shape
    w, b = np.zeros(d), 0.0
    losses = []
    for _ in range(num_steps):
        r = X @ w + b - y
        losses.append(np.mean(r**2))
        dw, db = 2.0 / n * X.T @ r, 2.0 / n * r.sum()
        w, b = w - lr * dw, b - lr * db
    r = X @ w + b - y
    losses.append(np.mean(r**2))
    return w, b, np.array(losses)


def house():
    X, y = gdjax.data.house_prices()
    return X, y


def synthetic(n=200, d=4, condition_number=10.0, noise=0.1):
    s = gdjax.data.synthetic(0, n, d, noise=noise, condition_number=condition_number)
    return s.X, s.y


PROBLEMS = [
    # (name, data factory, learning rate as a fraction of 2/L, steps)
    ("house", house, 0.5, 500),
    ("synthetic", synthetic, 0.9, 300),
]


@pytest.mark.parametrize("name,make,frac,num_steps", PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_full_batch_gd_matches_numpy_loop(name, make, frac, num_steps):
    X, y = make()
    lr = frac * reference.curvature(X).max_stable_lr
    w, b, losses = numpy_gd(X, y, lr, num_steps)
    trace = run(COST, rules.sgd(lr), gdjax.init_linear(X.shape[1]), (X, y), num_steps=num_steps)
    np.testing.assert_allclose(trace.loss_history, losses, rtol=1e-10)
    np.testing.assert_allclose(trace.params["w"], w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(trace.params["b"], b, rtol=1e-10, atol=1e-12)
    assert int(trace.status) == Status.MAX_STEPS
    assert int(trace.steps) == num_steps and int(trace.stop_step) == -1
    assert trace.loss_history.shape == (num_steps + 1,)
    assert trace.params_history["w"].shape == (num_steps + 1, X.shape[1])
    np.testing.assert_allclose(trace.params_history["w"][-1], trace.params["w"])


def test_optax_and_hand_written_rule_run_the_same_loop():
    X, y = synthetic()
    p0 = gdjax.init_linear(X.shape[1])
    a = run(COST, rules.adam(0.05), p0, (X, y), num_steps=200)
    b = run(COST, optax.adam(0.05), p0, (X, y), num_steps=200)
    np.testing.assert_allclose(a.loss_history, b.loss_history, rtol=1e-9)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_reaches_least_squares_optimum(dtype):
    X, y = house()
    Xs = gdjax.data.Standardizer.fit(X)
    Z = Xs.transform(X)
    ls = reference.least_squares(Z, y, full_output=True)
    lr = reference.curvature(Z).best_lr
    trace = run(COST, rules.sgd(lr), gdjax.init_linear(1, dtype), (Z, y), num_steps=300)
    assert trace.params["w"].dtype == dtype and trace.loss_history.dtype == dtype
    np.testing.assert_allclose(trace.params["w"], ls.params["w"], rtol=100 * rtol(dtype))
    np.testing.assert_allclose(trace.params["b"], ls.params["b"], rtol=100 * rtol(dtype))
    np.testing.assert_allclose(trace.final_loss, ls.f_star, rtol=100 * rtol(dtype))


# --------------------------------------------------------------------- learning-rate regimes
def _error_along_top_eigenvector(X, y, params_history):
    H = reference.mse_hessian(X)
    v = np.linalg.eigh(H)[1][:, -1]
    opt = reference.least_squares(X, y)
    theta = np.concatenate([np.asarray(params_history["w"]), np.asarray(params_history["b"])[:, None]], 1)
    return (theta - np.concatenate([opt["w"], [opt["b"]]])) @ v


REGIMES = [
    # (regime, lr as a fraction of 2/L, expected status, oscillates along the stiff direction)
    ("crawls", 0.002, Status.MAX_STEPS, False),
    ("good", 0.5, Status.CONVERGED, False),
    ("oscillates_yet_converges", 0.9, Status.CONVERGED, True),
    ("diverges", 1.05, Status.DIVERGED, True),
]


@pytest.mark.parametrize("regime,frac,status,oscillates", REGIMES, ids=[r[0] for r in REGIMES])
def test_learning_rate_regimes(regime, frac, status, oscillates):
    X, y = house()
    bound = reference.curvature(X).max_stable_lr
    trace = run(COST, rules.sgd(frac * bound), gdjax.init_linear(1), (X, y), num_steps=3000, tol=1e-6)
    assert Status(int(trace.status)) == status
    err = _error_along_top_eigenvector(X, y, trace.params_history)[:20]
    signs = np.sign(err[1:]) * np.sign(err[:-1])
    assert bool(np.all(signs < 0)) == oscillates
    if status == Status.CONVERGED:
        ls = reference.least_squares(X, y)
        np.testing.assert_allclose(trace.params["w"], ls["w"], rtol=1e-3)
    if status == Status.DIVERGED:
        assert 0 < int(trace.stop_step) < 3000
        assert np.all(np.isfinite(np.asarray(trace.params["w"])))
        # Frozen after the stop: the history repeats the value at the stop.
        tail = trace.loss_history[int(trace.stop_step) :]
        assert np.all(tail == tail[0])


@pytest.mark.parametrize("frac,status", [(0.99, Status.MAX_STEPS), (1.01, Status.DIVERGED)])
def test_divergence_boundary_is_two_over_L(frac, status):
    X, y = synthetic(condition_number=4.0)
    bound = reference.curvature(X).max_stable_lr
    trace = run(COST, rules.sgd(frac * bound), gdjax.init_linear(X.shape[1]), (X, y), num_steps=2000)
    assert Status(int(trace.status)) == status


def test_nonfinite_is_a_status_not_an_exception():
    X, y = house()
    trace = run(
        COST,
        rules.sgd(1e6),
        gdjax.init_linear(1),
        (X, y),
        num_steps=200,
        stopping=Stopping(divergence_factor=None),
    )
    assert Status(int(trace.status)) == Status.NONFINITE
    assert np.all(np.isfinite(np.asarray(trace.params["w"])))
    assert int(trace.steps) == int(trace.stop_step) < 200


# ---------------------------------------------------------------------------------- stopping
STOPPING = [
    # (criterion kwargs, expected status)
    ({"tol": 1e-4}, Status.CONVERGED),
    ({"grad_tol": 1e-3}, Status.CONVERGED),
    ({"patience": 5, "min_delta": 1e-6}, Status.CONVERGED),
    ({}, Status.MAX_STEPS),
]


@pytest.mark.parametrize("kwargs,status", STOPPING, ids=[str(s[0]) for s in STOPPING])
def test_stopping_criteria_freeze_the_run(kwargs, status):
    X, y = synthetic()
    lr = 0.5 * reference.curvature(X).max_stable_lr
    stopping = Stopping(**kwargs)
    trace = run(COST, rules.sgd(lr), gdjax.init_linear(X.shape[1]), (X, y), num_steps=4000, stopping=stopping)
    assert Status(int(trace.status)) == status
    if status == Status.CONVERGED:
        k = int(trace.stop_step)
        assert 0 < k < 4000 and int(trace.steps) == k
        assert np.all(trace.loss_history[k:] == trace.loss_history[k])
        np.testing.assert_array_equal(trace.params_history["w"][-1], trace.params["w"])
        np.testing.assert_array_equal(trace.params_history["w"][k], trace.params["w"])


def test_tol_is_the_tutorials_parameter_change_rule():
    X, y = synthetic()
    lr = 0.5 * reference.curvature(X).max_stable_lr
    trace = run(COST, rules.sgd(lr), gdjax.init_linear(X.shape[1]), (X, y), num_steps=4000, tol=1e-5)
    k = int(trace.stop_step)
    hist = np.concatenate([trace.params_history["w"], trace.params_history["b"][:, None]], 1)
    change = np.linalg.norm(np.diff(hist, axis=0), axis=1)
    assert change[k - 1] < 1e-5 and np.all(change[: k - 1] >= 1e-5)


# ------------------------------------------------------------------------------- stochastic
@pytest.mark.parametrize("batch_size", [1, 8])
def test_minibatch_reaches_optimum_within_noise_and_is_reproducible(batch_size):
    X, y = synthetic(n=256, d=3, condition_number=2.0, noise=0.1)
    ls = reference.least_squares(X, y, full_output=True)
    lr = 0.02
    kwargs = dict(num_steps=3000, batch_size=batch_size, key=jax.random.key(1))
    a = run(COST, rules.sgd(lr, schedule="inverse_sqrt"), gdjax.init_linear(3), (X, y), **kwargs)
    b = run(COST, rules.sgd(lr, schedule="inverse_sqrt"), gdjax.init_linear(3), (X, y), **kwargs)
    np.testing.assert_array_equal(a.loss_history, b.loss_history)
    assert float(a.final_loss) - ls.f_star < 0.05 * ls.f_star
    c = run(COST, rules.sgd(lr), gdjax.init_linear(3), (X, y), **{**kwargs, "key": jax.random.key(2)})
    assert not np.array_equal(a.loss_history, c.loss_history)


def test_sampling_is_without_replacement_within_an_epoch():
    # cost = -<p, mean of the batch's one-hot rows>: one SGD step with lr 1 adds 1/bs to each
    # sampled index, so after one epoch every example has been seen exactly once.
    n, bs = 12, 3
    cost = lambda p, batch: -jnp.sum(p * jnp.mean(batch, axis=0))
    trace = run(cost, rules.sgd(1.0), jnp.zeros(n), jnp.eye(n), num_steps=n // bs, batch_size=bs, key=0)
    np.testing.assert_allclose(trace.params, np.full(n, 1.0 / bs))


def test_decaying_step_converges_where_constant_step_stalls():
    X, y = synthetic(n=128, d=2, condition_number=2.0, noise=0.5)
    f_star = reference.optimal_cost(X, y)
    common = dict(num_steps=4000, batch_size=1, key=jax.random.key(0), eval_every=1)
    constant = run(COST, rules.sgd(0.1), gdjax.init_linear(2), (X, y), **common)
    decaying = run(COST, rules.sgd(0.1, schedule="inverse_time"), gdjax.init_linear(2), (X, y), **common)
    gap_const = np.mean(np.asarray(constant.loss_history[-500:])) - f_star
    gap_decay = np.mean(np.asarray(decaying.loss_history[-500:])) - f_star
    assert gap_decay < 0.2 * gap_const


# ------------------------------------------------------------------------------ compilation
def test_new_learning_rate_or_tolerance_does_not_recompile():
    X, y = synthetic()
    p0 = gdjax.init_linear(X.shape[1])
    run(COST, rules.sgd(0.01), p0, (X, y), num_steps=50, tol=1e-6)
    with count_compilations() as c:
        run(COST, rules.sgd(0.01), p0, (X, y), num_steps=50, tol=1e-6)
        run(COST, rules.sgd(0.02), p0, (X, y), num_steps=50, tol=1e-3)
        run(COST, rules.sgd(0.03), p0, (X * 2, y), num_steps=50, tol=1e-3)
    assert c.count == 0


def test_params_can_be_any_pytree():
    X, y = synthetic(d=2)

    def cost(params, batch):
        X, y = batch
        (w1, (w2,)), b = params["layers"], params["bias"]
        return jnp.mean((X[:, 0] * w1 + X[:, 1] * w2 + b - y) ** 2)

    p0 = {"layers": (jnp.zeros(()), (jnp.zeros(()),)), "bias": jnp.zeros(())}
    trace = run(cost, rules.momentum(0.05, 0.9), p0, (X, y), num_steps=500)
    ls = reference.least_squares(X, y)
    np.testing.assert_allclose(trace.params["layers"][0], ls["w"][0], rtol=1e-6)
    assert trace.params_history["layers"][1][0].shape == (501,)


def test_record_every_thins_params_history():
    X, y = synthetic()
    full = run(COST, rules.sgd(0.01), gdjax.init_linear(4), (X, y), num_steps=100)
    thin = run(
        COST,
        rules.sgd(0.01),
        gdjax.init_linear(4),
        (X, y),
        num_steps=100,
        execution=Execution(record_every=10),
    )
    assert thin.params_history["w"].shape == (11, 4)
    np.testing.assert_array_equal(thin.params_history["w"], full.params_history["w"][::10])
    np.testing.assert_array_equal(thin.loss_history, full.loss_history)


def test_cost_without_data():
    trace = run(gdjax.costs.shifted_quadratic, rules.sgd(0.1), jnp.array(10.0), None, num_steps=200)
    np.testing.assert_allclose(trace.params, 3.0, atol=atol(jnp.float64) * 1e3)
    np.testing.assert_allclose(trace.final_loss, 1.0)


# -------------------------------------------------------------------------------- bad input
def _bad(**overrides):
    X, y = house()
    args = dict(cost=COST, rule=rules.sgd(0.01), params0=gdjax.init_linear(1), data=(X, y))
    kwargs = dict(num_steps=10)
    for k, v in overrides.items():
        (args if k in args else kwargs)[k] = v
    return args, kwargs


BAD_INPUT = [
    ("num_steps_zero", dict(num_steps=0), "num_steps"),
    ("batch_too_large", dict(batch_size=8), "larger than the data"),
    ("batch_zero", dict(batch_size=0), "batch_size"),
    ("missing_key", dict(batch_size=2), "key="),
    ("nan_in_X", dict(data=(np.array([[1.0], [np.nan]]), np.array([1.0, 2.0]))), "non-finite"),
    ("inf_in_y", dict(data=(np.array([[1.0], [2.0]]), np.array([1.0, np.inf]))), "non-finite"),
    ("length_mismatch", dict(data=(np.ones((3, 1)), np.ones(4))), "number of examples"),
    ("params_mismatch", dict(params0=gdjax.init_linear(3)), "failed for params with shapes"),
    ("y_column", dict(data=(np.ones((3, 1)), np.ones((3, 1)))), "shape"),
    ("empty", dict(data=(np.ones((0, 1)), np.ones(0))), "empty"),
    ("not_a_rule", dict(rule="sgd"), "GradientTransformation"),
    ("bad_tol", dict(tol=-1.0), "tol"),
]


@pytest.mark.parametrize("name,overrides,match", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_a_clear_error_before_compiling(name, overrides, match):
    args, kwargs = _bad(**overrides)
    with count_compilations() as c, pytest.raises(ValueError, match=match):
        run(**args, **kwargs)
    assert c.count == 0


@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_learning_rate(lr):
    with pytest.raises(ValueError, match="learning_rate"):
        rules.sgd(lr)
