"""A run is a JAX function (issue 20): `gdjax.run` inside `jax.jit`, `vmap`, `grad`, `jvp`, `hessian`.

With respect to rule hyperparameters, cost hyperparameters (`gdjax.bind`), `params0`, data and
metrics; full batch and mini-batch; through stopping and divergence. Oracles: the closed form of the
least-squares hypergradient (the Hessian's eigendecomposition), central differences elsewhere, and
`sweep`'s lanes for `vmap`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax
from gdjax import rules

NUM_STEPS = 60
LR = 0.1


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * rng.normal(size=40)
    return X, y


COST = gdjax.make_cost(gdjax.linear, gdjax.mse)


def _ridge(params, data, l2=0.0):
    X, y = data
    r = X @ params["w"] + params["b"] - y
    return jnp.mean(r * r) + l2 * jnp.sum(params["w"] ** 2)


def _flat(params):
    return np.r_[np.asarray(params["w"]), np.asarray(params["b"])[None]]


def _central(f, x, h):
    """Central difference of a scalar function of a scalar, with Richardson extrapolation (O(h^4))."""
    d = lambda h: (f(x + h) - f(x - h)) / (2 * h)
    return (4 * d(h / 2) - d(h)) / 3


def _final_loss(problem, lr, num_steps=NUM_STEPS, **kw):
    return gdjax.run(
        COST, rules.sgd(lr), gdjax.init_linear(3), problem, num_steps=num_steps, **kw
    ).loss_history[-1]


# --------------------------------------------------------------------------------------------------
# Closed form: GD on least squares is linear in the error, e_T = (I - lr H)^T e_0 in H's eigenbasis.


def _closed_form(problem, lr, num_steps):
    X, y = problem
    A = np.c_[X, np.ones(len(y))]
    H = 2 * A.T @ A / len(y)  # Hessian of mean((A theta - y)^2)
    theta_star = np.linalg.lstsq(A, y, rcond=None)[0]
    f_star = np.mean((A @ theta_star - y) ** 2)
    lam, Q = np.linalg.eigh(H)
    e = Q.T @ (np.zeros(4) - theta_star)
    decay = 1 - lr * lam
    loss = f_star + 0.5 * np.sum(lam * e**2 * decay ** (2 * num_steps))
    dloss = -num_steps * np.sum(lam**2 * e**2 * decay ** (2 * num_steps - 1))
    d2loss = num_steps * (2 * num_steps - 1) * np.sum(lam**3 * e**2 * decay ** (2 * num_steps - 2))
    return loss, dloss, d2loss


def test_hypergradient_of_least_squares_equals_closed_form(problem):
    loss, dloss, d2loss = _closed_form(problem, LR, NUM_STEPS)
    f = lambda lr: _final_loss(problem, lr)
    value, grad = jax.value_and_grad(f)(LR)
    np.testing.assert_allclose(value, loss, rtol=1e-12)
    np.testing.assert_allclose(grad, dloss, rtol=1e-8)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(LR), dloss, rtol=1e-8)
    # Forward mode and second order agree with the closed form too.
    _, tangent = jax.jvp(f, (LR,), (1.0,))
    np.testing.assert_allclose(tangent, dloss, rtol=1e-8)
    np.testing.assert_allclose(jax.jit(jax.hessian(f))(LR), d2loss, rtol=1e-8)


def test_run_inside_jit_equals_run(problem):
    trace = gdjax.run(COST, rules.sgd(LR), gdjax.init_linear(3), problem, num_steps=NUM_STEPS)
    jitted = jax.jit(
        lambda lr: gdjax.run(COST, rules.sgd(lr), gdjax.init_linear(3), problem, num_steps=NUM_STEPS)
    )(LR)
    np.testing.assert_allclose(jitted.loss_history, trace.loss_history, rtol=1e-12)
    assert int(jitted.status) == int(trace.status)
    assert int(jitted.steps) == int(trace.steps)


def test_vmap_of_run_equals_sweep_lanes(problem):
    lrs = np.array([0.01, 0.05, 0.1, 0.3])

    def one(lr):
        t = gdjax.run(COST, rules.sgd(lr), gdjax.init_linear(3), problem, num_steps=NUM_STEPS)
        return t.loss_history, t.status, t.steps

    losses, status, steps = jax.jit(jax.vmap(one))(jnp.asarray(lrs))
    lanes = gdjax.sweep(
        COST, "sgd", gdjax.init_linear(3), problem, grid={"learning_rate": lrs}, num_steps=NUM_STEPS
    ).trace
    np.testing.assert_allclose(losses, lanes.loss_history, rtol=1e-9)
    np.testing.assert_array_equal(status, lanes.status)
    np.testing.assert_array_equal(steps, lanes.steps)


# --------------------------------------------------------------------------------------------------
# Central differences: one row per (what is differentiated, how the run is configured).


def _momentum_final(problem, x, **kw):
    return gdjax.run(
        COST, rules.momentum(LR, momentum=x), gdjax.init_linear(3), problem, num_steps=NUM_STEPS, **kw
    ).loss_history[-1]


def _adam_final(problem, x, **kw):
    return gdjax.run(
        COST, rules.adam(x), gdjax.init_linear(3), problem, num_steps=NUM_STEPS, **kw
    ).loss_history[-1]


def _ridge_final(problem, x, **kw):
    cost = gdjax.bind(_ridge, l2=x)
    return gdjax.run(
        cost, rules.sgd(LR), gdjax.init_linear(3), problem, num_steps=NUM_STEPS, **kw
    ).loss_history[-1]


def _start_final(problem, x, **kw):
    params0 = {"w": jnp.full(3, x), "b": jnp.asarray(0.0)}
    return gdjax.run(COST, rules.sgd(LR), params0, problem, num_steps=NUM_STEPS, **kw).loss_history[-1]


def _data_final(problem, x, **kw):
    X, y = problem
    return gdjax.run(
        COST, rules.sgd(LR), gdjax.init_linear(3), (X, y + x), num_steps=NUM_STEPS, **kw
    ).loss_history[-1]


def _metric_final(problem, x, **kw):
    X, y = problem
    held_out = lambda p: jnp.mean((X[:10] @ p["w"] + p["b"] - y[:10]) ** 2)
    trace = gdjax.run(
        COST,
        rules.sgd(x),
        gdjax.init_linear(3),
        problem,
        num_steps=NUM_STEPS,
        metrics={"held_out": held_out},
        **kw,
    )
    return trace.metrics["held_out"][-1]


def _optax_final(problem, x, **kw):
    rule = rules.get("optax.adamw", learning_rate=x)
    return gdjax.run(COST, rule, gdjax.init_linear(3), problem, num_steps=NUM_STEPS, **kw).loss_history[-1]


# (id, function of (problem, x, **run keywords), point, finite-difference step)
TARGETS = [
    ("sgd-learning_rate", lambda p, x, **kw: _final_loss(p, x, **kw), 0.1, 1e-4),
    ("momentum-momentum", _momentum_final, 0.5, 1e-4),
    ("adam-learning_rate", _adam_final, 0.05, 1e-5),
    ("optax.adamw-learning_rate", _optax_final, 0.05, 1e-5),
    ("cost-l2", _ridge_final, 0.1, 1e-4),
    ("params0", _start_final, 0.3, 1e-4),
    ("data", _data_final, 0.2, 1e-4),
    ("metric", _metric_final, 0.1, 1e-4),
]
# Run settings: full batch, mini-batch (fixed key), stopping by tol.
SETTINGS = [
    ("full", {}),
    ("minibatch", {"batch_size": 8, "key": 3}),
    ("tol", {"tol": 1e-3}),
]


# Mini-batch programs take the longest to compile: one mini-batch row runs by default, the rest with
# the slow tests. A rule's own hyperparameters (momentum, adam's, optax's) meet mini-batches nowhere
# that sgd's learning rate does not: those crosses are left out. What the batch sampling touches stays:
# the cost's hyperparameter, params0, the data (gathered into batches) and a metric.
RULE_ONLY = {"momentum-momentum", "adam-learning_rate", "optax.adamw-learning_rate"}
CENTRAL = [
    pytest.param(
        target,
        setting,
        id=f"{target[0]}-{label}",
        marks=[pytest.mark.slow] if label == "minibatch" and target[0] != "sgd-learning_rate" else [],
    )
    for target in TARGETS
    for label, setting in SETTINGS
    if not (label == "minibatch" and target[0] in RULE_ONLY)
]


@pytest.mark.parametrize("target, setting", CENTRAL)
def test_gradient_equals_central_differences(problem, target, setting):
    _, fn, x, h = target
    f = lambda x: fn(problem, x, **setting)
    grad = jax.jit(jax.grad(f))(x)
    # One compiled forward-mode program gives the tangent and, as its primal output, the values the
    # finite differences need (a plain call's values equal a jitted run's: test_run_inside_jit_equals_run).
    jvp = jax.jit(lambda x: jax.jvp(f, (x,), (1.0,)))
    fd = _central(lambda x: float(jvp(x)[0]), x, h)
    assert np.isfinite(grad)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-9)
    _, tangent = jvp(x)
    np.testing.assert_allclose(tangent, grad, rtol=1e-10, atol=1e-14)


def test_stopped_run_is_piecewise_smooth(problem):
    """A run stopped by `tol` is frozen after its stop step: the gradient is that of the frozen
    iterate's loss, where the stop step does not change under the perturbation."""
    trace = gdjax.run(COST, rules.sgd(LR), gdjax.init_linear(3), problem, num_steps=500, tol=1e-3)
    assert gdjax.Status(int(trace.status)) == gdjax.Status.CONVERGED
    f = jax.jit(lambda lr: _final_loss(problem, lr, num_steps=500, tol=1e-3))
    np.testing.assert_allclose(jax.jit(jax.grad(f))(LR), _central(lambda x: float(f(x)), LR, 1e-6), rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# Finite gradients through frozen lanes: stopped, diverged, non-finite.


def _exploding(params, data):
    # Overflows to inf (and its derivatives with it) once |x| passes about 26.
    return jnp.sum(jnp.exp(params**2))


FROZEN = [
    ("diverged-sgd", COST, "sgd", 5.0, {}, gdjax.Status.DIVERGED),
    ("diverged-adam", COST, "adam", 50.0, {}, None),
    (
        "nonfinite-sgd",
        COST,
        "sgd",
        5.0,
        {"stopping": gdjax.Stopping(divergence_factor=None)},
        gdjax.Status.NONFINITE,
    ),
    ("converged-sgd", COST, "sgd", 0.1, {"tol": 1e-2}, gdjax.Status.CONVERGED),
    (
        "converged-adam",
        COST,
        "adam",
        0.1,
        {"stopping": gdjax.Stopping(grad_tol=1e-1)},
        gdjax.Status.CONVERGED,
    ),
]


@pytest.mark.parametrize("case", FROZEN, ids=[c[0] for c in FROZEN])
def test_gradients_are_finite_through_frozen_lanes(problem, case):
    _, cost, name, lr, kw, status = case

    def final_params(lr):
        trace = gdjax.run(
            cost, rules.get(name, learning_rate=lr), gdjax.init_linear(3), problem, num_steps=300, **kw
        )
        return jnp.sum(trace.params["w"]) + trace.params["b"], trace.status

    grad, got = jax.jit(jax.grad(final_params, has_aux=True))(lr)
    if status is not None:
        assert gdjax.Status(int(got)) == status
    assert np.isfinite(grad)


def test_gradient_is_finite_where_the_cost_overflows():
    """The step that overflows is not taken, and the lane freezes; the cotangent of the untaken step
    is zero, and zero times the cost's infinite second derivative would be NaN without the
    double-where guard."""

    def final(lr):
        trace = gdjax.run(_exploding, rules.sgd(lr), jnp.asarray([1.0, -0.5]), None, num_steps=50)
        return jnp.sum(trace.params), trace.status

    grad, status = jax.jit(jax.grad(final, has_aux=True))(0.5)
    assert gdjax.Status(int(status)) in (gdjax.Status.NONFINITE, gdjax.Status.DIVERGED)
    assert np.isfinite(grad)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "rmsprop", "adagrad"])
def test_gradient_is_finite_at_a_stationary_start(name):
    """A zero gradient (a start at the minimiser) must not make `sqrt(0)`'s infinite derivative
    leak into the hypergradient."""
    cost = lambda p, d: jnp.sum(p**2)
    f = lambda lr: gdjax.run(
        cost, rules.get(name, learning_rate=lr), jnp.zeros(2), None, num_steps=10
    ).loss_history[-1]
    assert np.isfinite(jax.jit(jax.grad(f))(0.1))
    g = lambda p: gdjax.run(cost, rules.get(name, learning_rate=0.1), p, None, num_steps=10).loss_history[-1]
    assert np.all(np.isfinite(jax.jit(jax.grad(g))(jnp.zeros(2))))


def test_vmap_of_grad_over_learning_rates(problem):
    lrs = jnp.asarray([0.05, 0.1, 0.2])
    grads = jax.jit(jax.vmap(jax.grad(lambda lr: _final_loss(problem, lr))))(lrs)
    expected = [_closed_form(problem, float(lr), NUM_STEPS)[1] for lr in lrs]
    np.testing.assert_allclose(grads, expected, rtol=1e-8)


def test_hessian_with_respect_to_params0(problem):
    def f(w0):
        return gdjax.run(
            COST, rules.sgd(LR), {"w": w0, "b": jnp.asarray(0.0)}, problem, num_steps=20
        ).loss_history[-1]

    H = jax.jit(jax.hessian(f))(jnp.zeros(3))
    assert H.shape == (3, 3)
    np.testing.assert_allclose(H, H.T, rtol=1e-10, atol=1e-14)
    assert np.all(np.linalg.eigvalsh(np.asarray(H)) > 0)  # a convex quadratic through a linear map


# --------------------------------------------------------------------------------------------------
# Checks under a trace: a value `get` would refuse is `invalid` inside the program, with no step.

INVALID = [
    ("sgd-negative-lr", lambda x: rules.sgd(x), -1.0, "learning_rate"),
    ("sgd-nan-lr", lambda x: rules.sgd(x), float("nan"), "learning_rate"),
    ("momentum-1", lambda x: rules.momentum(0.1, momentum=x), 1.0, "momentum"),
    ("adam-b2-inf", lambda x: rules.adam(0.1, b2=x), float("inf"), "b2"),
    ("optax.adam-negative-lr", lambda x: rules.get("optax.adam", learning_rate=x), -0.1, "learning_rate"),
    ("sgd_hd-negative-beta", lambda x: rules.sgd_hd(0.1, hypergradient_lr=x), -1e-3, "hypergradient_lr"),
]


@pytest.mark.parametrize("case", INVALID, ids=[c[0] for c in INVALID])
def test_a_traced_value_outside_its_domain_is_invalid(problem, case):
    _, make, bad, name = case
    with pytest.raises(ValueError, match=name):
        make(bad)  # refused on the host
    run = jax.jit(lambda x: gdjax.run(COST, make(x), gdjax.init_linear(3), problem, num_steps=NUM_STEPS))
    trace = run(bad)
    assert gdjax.Status(int(trace.status)) == gdjax.Status.INVALID
    assert trace.status_name() == "invalid"
    assert int(trace.steps) == 0 and int(trace.stop_step) == 0
    assert bool(trace.invalid[name])
    assert not any(bool(v) for k, v in trace.invalid.items() if k != name)
    np.testing.assert_array_equal(trace.params["w"], np.zeros(3))
    # A valid value through the same program runs as usual.
    good = run(0.5 if name != "b2" else 0.999)
    assert gdjax.Status(int(good.status)) != gdjax.Status.INVALID
    assert not any(bool(v) for v in good.invalid.values())


def test_invalid_lanes_under_vmap_and_a_non_finite_cost_value(problem):
    lrs = jnp.asarray([0.1, -0.1, jnp.inf])
    status = jax.vmap(
        lambda lr: gdjax.run(COST, rules.sgd(lr), gdjax.init_linear(3), problem, num_steps=10).status
    )(lrs)
    assert [gdjax.Status(int(s)) for s in status] == [
        gdjax.Status.MAX_STEPS,
        gdjax.Status.INVALID,
        gdjax.Status.INVALID,
    ]
    trace = jax.jit(
        lambda l2: gdjax.run(
            gdjax.bind(_ridge, l2=l2), rules.sgd(LR), gdjax.init_linear(3), problem, num_steps=10
        )
    )(jnp.nan)
    assert gdjax.Status(int(trace.status)) == gdjax.Status.INVALID
    assert bool(trace.invalid["cost.l2"])


def test_a_plain_call_checks_on_the_host_and_carries_no_invalid_field(problem):
    trace = gdjax.run(COST, rules.sgd(LR), gdjax.init_linear(3), problem, num_steps=5)
    assert trace.invalid is None


def test_gradient_through_an_invalid_lane_is_zero(problem):
    def final(lr):
        return gdjax.run(COST, rules.sgd(lr), gdjax.init_linear(3), problem, num_steps=10).loss_history[-1]

    assert float(jax.grad(final)(-0.1)) == 0.0


# --------------------------------------------------------------------------------------------------
# Memory-bounded reverse mode: Execution(checkpoint_every=k).

CHECKPOINTED = [
    ("full-k7", {}, 7),
    ("full-k1", {}, 1),
    ("minibatch-k10", {"batch_size": 8, "key": 1, "eval_every": 5}, 10),
    ("tol-k16", {"tol": 1e-3}, 16),
]


@pytest.mark.parametrize("case", CHECKPOINTED, ids=[c[0] for c in CHECKPOINTED])
def test_checkpointing_changes_no_forward_result_and_no_gradient(problem, case):
    _, kw, every = case

    def trace_of(lr, execution=None):
        rule = rules.momentum(lr, momentum=0.5)
        return gdjax.run(COST, rule, gdjax.init_linear(3), problem, num_steps=101, execution=execution, **kw)

    plain = jax.jit(trace_of)(LR)
    checked = jax.jit(lambda lr: trace_of(lr, gdjax.Execution(checkpoint_every=every)))(LR)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(checked), strict=True):
        np.testing.assert_array_equal(a, b)  # bit for bit
    grad = jax.jit(jax.grad(lambda lr: trace_of(lr).loss_history[-1]))(LR)
    grad_checked = jax.jit(
        jax.grad(lambda lr: trace_of(lr, gdjax.Execution(checkpoint_every=every)).loss_history[-1])
    )(LR)
    np.testing.assert_allclose(grad_checked, grad, rtol=1e-12)


def test_checkpointing_bounds_reverse_mode_memory(problem):
    X, y = problem

    def temp_bytes(execution):
        def final(lr):
            return gdjax.run(
                COST,
                rules.sgd(lr),
                gdjax.init_linear(3),
                (X, y),
                num_steps=2000,
                execution=execution,
            ).loss_history[-1]

        compiled = jax.jit(jax.grad(final)).lower(0.05).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    plain = temp_bytes(gdjax.Execution(record_every=2000))
    checked = temp_bytes(gdjax.Execution(record_every=2000, checkpoint_every=50))
    assert checked < plain / 4


def test_checkpointing_a_plain_call_is_bit_identical_on_rosenbrock():
    """Rosenbrock amplifies any change of rounding over the steps: none shows."""
    rosenbrock = lambda x, data: (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2
    plain = gdjax.run(rosenbrock, rules.adam(0.1), jnp.zeros(2), None, num_steps=3000)
    checked = gdjax.run(
        rosenbrock,
        rules.adam(0.1),
        jnp.zeros(2),
        None,
        num_steps=3000,
        execution=gdjax.Execution(checkpoint_every=64),
    )
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(checked), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_every_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="checkpoint_every"):
        gdjax.Execution(checkpoint_every=0)


# --------------------------------------------------------------------------------------------------
# Bad input gets a clear error.


def test_differentiating_with_respect_to_an_integer_says_so(problem):
    with pytest.raises(TypeError, match="grad requires real- or complex-valued inputs"):
        jax.grad(lambda lr: _final_loss(problem, lr))(1)


def test_a_hyperparameter_name_the_rule_does_not_have_is_named():
    with pytest.raises(ValueError, match="rule 'sgd' has no hyperparameter 'momentum'"):
        rules.get("sgd", learning_rate=0.1, momentum=0.9)
    with pytest.raises(
        ValueError, match=r"has no numeric hyperparameter 'lr'; its hyperparameters are \['learning_rate'"
    ):
        rules.sgd_hd(0.1).replace(lr=0.2)


# --------------------------------------------------------------------------------------------------
# Evaluation at an average of the iterates: rules.average(rule, decay=...) or (rule, start=...).


def _iterates(problem, num_steps):
    trace = gdjax.run(
        COST,
        rules.momentum(LR, momentum=0.5),
        gdjax.init_linear(3),
        problem,
        num_steps=num_steps,
        execution=gdjax.Execution(record_every=1),
    )
    return np.c_[np.asarray(trace.params_history["w"]), np.asarray(trace.params_history["b"])]


AVERAGES = [
    ("ema-0.9", {"decay": 0.9}),
    ("polyak-from-0", {"start": 0}),
    ("polyak-from-10", {"start": 10}),
]


def _numpy_average(x, decay=None, start=None):
    out = [x[0]]
    for t in range(1, len(x)):
        if decay is not None:
            out.append(decay * out[-1] + (1 - decay) * x[t])
        else:
            out.append(x[t] if t <= start else x[start : t + 1].mean(axis=0))
    return np.array(out)


@pytest.mark.parametrize("case", AVERAGES, ids=[c[0] for c in AVERAGES])
def test_average_of_iterates_equals_numpy(problem, case):
    _, kw = case
    num_steps = 40
    x = _iterates(problem, num_steps)
    expected = _numpy_average(x, **kw)
    rule = rules.average(rules.momentum(LR, momentum=0.5), **kw)
    trace = gdjax.run(COST, rule, gdjax.init_linear(3), problem, num_steps=num_steps)
    assert trace.evaluated_at == "average_eval_params"
    got = np.c_[np.asarray(trace.params_history["w"]), np.asarray(trace.params_history["b"])]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)
    X, y = problem
    losses = [np.mean((X @ a[:3] + a[3] - y) ** 2) for a in expected]
    np.testing.assert_allclose(trace.loss_history, losses, rtol=1e-10)


def test_a_new_averaging_value_never_recompiles(problem):
    from helpers import count_compilations

    run = lambda d: gdjax.run(
        COST, rules.average(rules.sgd(LR), decay=d), gdjax.init_linear(3), problem, num_steps=20
    )
    first = run(0.9)
    with count_compilations() as c:
        second = run(0.5)
    assert c.count == 0
    assert not np.array_equal(first.loss_history, second.loss_history)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, float("nan")])
def test_averaging_decay_outside_the_open_unit_interval_is_refused(decay):
    with pytest.raises(ValueError, match=r"average_decay must be a finite number in \(0, 1\)"):
        rules.average(rules.sgd(0.1), decay=decay)


def test_average_needs_exactly_one_kind_and_a_gdjax_rule():
    with pytest.raises(ValueError, match="exactly one of decay="):
        rules.average(rules.sgd(0.1))
    with pytest.raises(ValueError, match="exactly one of decay="):
        rules.average(rules.sgd(0.1), decay=0.9, start=3)
    import optax

    with pytest.raises(ValueError, match="average takes a gdjax rule"):
        rules.average(optax.sgd(0.1), decay=0.9)


# --- an outside audit of run under transformations ------------------------------------------------
def test_traced_data_mini_batches_plain_optax_and_eval_params_rules_run_under_transformations():
    X, y = gdjax.data.synthetic(0, 40, 3)[:2]
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    p0 = gdjax.init_linear(3)

    def mini(X, y):  # every data leaf traced: the example count comes from the tracers' shapes
        return gdjax.run(cost, gdjax.rules.sgd(0.05), p0, (X, y), num_steps=20, batch_size=8, key=1)

    assert jax.jit(lambda X, y: mini(X, y).loss_history)(X, y).tolist() == mini(X, y).loss_history.tolist()
    averaged = jax.jit(lambda lr: gdjax.run(cost, gdjax.rules.average(gdjax.rules.sgd(lr), decay=0.9), p0,
                                            (X, y), num_steps=10))(0.05)  # fmt: skip
    assert averaged.evaluated_at is None  # a string is no output of a jitted function
    by_hand = jax.vmap(lambda lr: gdjax.run(cost, optax.adam(lr), p0, (X, y), num_steps=10).loss_history[-1])
    alone = [gdjax.run(cost, optax.adam(lr), p0, (X, y), num_steps=10).loss_history[-1] for lr in (0.01, 0.1)]
    np.testing.assert_allclose(by_hand(jnp.array([0.01, 0.1])), alone, rtol=1e-12)


def test_what_cannot_be_traced_or_checkpointed_says_so():
    X, y = gdjax.data.synthetic(0, 40, 3)[:2]
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    p0 = gdjax.init_linear(3)
    with pytest.raises(ValueError, match=r"checkpoint_every=10 is less than eval_every=50"):
        gdjax.run(cost, gdjax.rules.sgd(0.01), p0, (X, y), num_steps=200, batch_size=8, key=0,
                  execution=gdjax.Execution(checkpoint_every=10))  # fmt: skip

    def ridge(p, d, l2):
        return cost(p, d) + l2 * jnp.sum(p["w"] ** 2)

    closure = lambda l2: gdjax.run(  # noqa: E731
        lambda p, d: ridge(p, d, l2), gdjax.rules.sgd(0.05), p0, (X, y), num_steps=10
    ).loss_history[-1]
    with pytest.raises(ValueError, match=r"closes over a value that is being differentiated.*gdjax.bind"):
        jax.grad(closure)(0.1)
    with pytest.raises(ValueError, match=r"Stopping\(grad_tol=...\) got a traced value"):
        jax.jit(lambda g: gdjax.run(cost, gdjax.rules.sgd(0.05), p0, (X, y), num_steps=10,
                                    stopping=gdjax.Stopping(grad_tol=g)).loss_history[-1])(1e-3)  # fmt: skip


def test_raw_uint32_keys_can_be_vmapped_as_outside_vmap():
    X, y = gdjax.data.synthetic(0, 40, 3)[:2]
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    keys = jnp.stack([jax.random.PRNGKey(i) for i in range(3)])

    def final(k):
        return gdjax.run(
            cost, rules.sgd(0.05), gdjax.init_linear(3), (X, y), num_steps=10, batch_size=8, key=k
        )

    batched = jax.vmap(lambda k: final(k).loss_history[-1])(keys)
    np.testing.assert_array_equal(batched, [final(np.asarray(k)).loss_history[-1] for k in keys])
