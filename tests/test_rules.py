"""Tests for `gdjax.rules`: hand-written rules against Optax, schedules, the contract every rule keeps,
and the registry.

Oracles the code cannot influence: Optax's own optimizers and schedules for the same algorithm,
NumPy loops for the textbook (velocity) forms, and closed formulas for the schedules.
"""

import functools
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import atol, count_compilations, rtol
from jax import lax

from gdjax import rules, testing

# --------------------------------------------------------------------------------------------------
# Tables.


class RuleCase(NamedTuple):
    id: str
    name: str  # registry name of the hand-written rule
    kwargs: dict[str, Any]  # factory arguments besides learning_rate and schedule
    optax_fn: Callable[[Any], optax.GradientTransformation]  # learning rate or schedule -> Optax
    learning_rate: float  # base step on the least-squares problem


RULES = [
    RuleCase("sgd", "sgd", {}, lambda lr: optax.sgd(lr), 0.1),
    RuleCase("momentum", "momentum", {}, lambda lr: optax.sgd(lr, momentum=0.9), 0.05),
    RuleCase(
        "momentum_0.5",
        "momentum",
        {"momentum": 0.5},
        lambda lr: optax.sgd(lr, momentum=0.5),
        0.1,
    ),
    RuleCase(
        "nesterov",
        "nesterov",
        {"momentum": 0.9},
        lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
        0.05,
    ),
    RuleCase("adagrad", "adagrad", {}, lambda lr: optax.adagrad(lr), 0.3),
    RuleCase(
        "adagrad_zero_init",
        "adagrad",
        {"initial_accumulator_value": 0.0, "eps": 1e-6},
        lambda lr: optax.adagrad(lr, initial_accumulator_value=0.0, eps=1e-6),
        0.3,
    ),
    RuleCase("rmsprop", "rmsprop", {}, lambda lr: optax.rmsprop(lr), 0.01),
    RuleCase(
        "rmsprop_centered_nesterov",
        "rmsprop",
        {"decay": 0.95, "centered": True, "momentum": 0.5, "nesterov": True},
        lambda lr: optax.rmsprop(lr, decay=0.95, centered=True, momentum=0.5, nesterov=True),
        0.01,
    ),
    RuleCase(
        "rmsprop_eps_outside_debiased",
        "rmsprop",
        {"eps_in_sqrt": False, "bias_correction": True, "initial_scale": 0.1, "momentum": 0.3},
        lambda lr: optax.rmsprop(
            lr, eps_in_sqrt=False, bias_correction=True, initial_scale=0.1, momentum=0.3
        ),
        0.01,
    ),
    RuleCase("adam", "adam", {}, lambda lr: optax.adam(lr), 0.02),
    RuleCase(
        "adam_eps_root",
        "adam",
        {"b1": 0.8, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-8},
        lambda lr: optax.adam(lr, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
        0.02,
    ),
    RuleCase(
        "nadam",
        "adam",
        {"nesterov": True},
        lambda lr: optax.adam(lr, nesterov=True),
        0.02,
    ),
]


def make_rule(case: RuleCase, learning_rate=None, schedule="constant"):
    lr = case.learning_rate if learning_rate is None else learning_rate
    return rules.get(case.name, learning_rate=lr, schedule=schedule, **case.kwargs)


def _least_squares_data(seed: int, n: int = 20, d: int = 3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.7 + 0.1 * rng.normal(size=n)
    return X, y


_X, _Y = _least_squares_data(seed=0)


def least_squares(params):
    w = params["w"]
    # `X @ w` written as a broadcast product: XLA's CPU dot is the slowest thing to compile here.
    prediction = jnp.sum(jnp.asarray(_X, w.dtype) * w[None, :], axis=1) + params["b"]
    return 0.5 * jnp.mean((prediction - jnp.asarray(_Y, w.dtype)) ** 2)


def rosenbrock(params):
    # Nested pytree on purpose: a tuple holding an array and a dict.
    (x, inner) = params
    y = inner["y"]
    return (1 - x) ** 2 + 10 * (y - x**2) ** 2


class Problem(NamedTuple):
    id: str
    loss: Callable
    params0: Callable[[Any], Any]  # dtype -> starting parameters
    lr_scale: float  # multiplies RuleCase.learning_rate


PROBLEMS = [
    Problem(
        "least_squares",
        least_squares,
        lambda dtype: {"w": jnp.zeros(3, dtype), "b": jnp.zeros((), dtype)},
        1.0,
    ),
    Problem(
        "rosenbrock",
        rosenbrock,
        lambda dtype: (jnp.array(-0.5, dtype), {"y": jnp.array(1.0, dtype)}),
        0.1,
    ),
]
LSQ = PROBLEMS[0]


class ScheduleCase(NamedTuple):
    id: str
    schedule: rules.Schedule
    optax_schedule: Callable[[float], Any]  # base learning rate -> Optax learning_rate argument
    formula: Callable[[float, np.ndarray], np.ndarray]  # closed form in NumPy, t = updates done


SCHEDULES = [
    ScheduleCase("constant", rules.constant(), lambda lr: lr, lambda lr, t: np.full(t.shape, lr)),
    ScheduleCase(
        "inverse_sqrt",
        rules.inverse_sqrt(),
        lambda lr: lambda count: lr / jnp.sqrt(count + 1),
        lambda lr, t: lr / np.sqrt(t + 1),
    ),
    ScheduleCase(
        "inverse_time",
        rules.inverse_time(decay_rate=0.5),
        lambda lr: lambda count: lr / (1 + 0.5 * count),
        lambda lr, t: lr / (1 + 0.5 * t),
    ),
    ScheduleCase(
        "exponential_decay",
        rules.exponential_decay(0.99, transition_steps=10),
        lambda lr: optax.exponential_decay(lr, transition_steps=10, decay_rate=0.99),
        lambda lr, t: lr * 0.99 ** (t / 10),
    ),
]
SCHEDULES_BY_ID = {s.id: s for s in SCHEDULES}


def at_float_count(learning_rate, dtype):
    """An Optax schedule evaluated on a float count of `dtype` (a constant passes through).

    Optax calls schedules with an int32 count, which JAX promotes to *float32* even with x64 on, so
    `optax.exponential_decay` and `lambda t: lr / jnp.sqrt(t + 1)` are only float32-accurate
    (~1e-8 relative). The hand-written schedules compute in the params' dtype; feeding the Optax
    schedule the count in that dtype makes it a float64 oracle.
    """
    if not callable(learning_rate):
        return learning_rate
    return lambda count: learning_rate(jnp.asarray(count).astype(dtype))


class Comparison(NamedTuple):
    """One hand-written-vs-Optax trajectory comparison, built from a rule row."""

    id: str
    # case -> (hand-written transformation, Optax transformation, problem, dtype, num_steps)
    build: Callable[[RuleCase], tuple]


def _on_problem(problem: Problem):
    def build(case):
        lr = case.learning_rate * problem.lr_scale
        return make_rule(case, lr), case.optax_fn(lr), problem, jnp.float64, 200

    return build


def _with_schedule(schedule_id: str, dtype, num_steps: int):
    def build(case):
        sched = SCHEDULES_BY_ID[schedule_id]
        oracle = case.optax_fn(at_float_count(sched.optax_schedule(case.learning_rate), dtype))
        return make_rule(case, schedule=sched.schedule), oracle, LSQ, dtype, num_steps

    return build


def _in_chain(case):
    clip = optax.clip_by_global_norm(1.0)
    ours = optax.chain(clip, make_rule(case))
    theirs = optax.chain(clip, case.optax_fn(case.learning_rate))
    return ours, theirs, LSQ, jnp.float64, 50


COMPARISONS = [
    Comparison("least_squares", _on_problem(PROBLEMS[0])),
    Comparison("rosenbrock", _on_problem(PROBLEMS[1])),
    Comparison("inverse_sqrt", _with_schedule("inverse_sqrt", jnp.float64, 200)),
    Comparison("inverse_time", _with_schedule("inverse_time", jnp.float64, 200)),
    Comparison("exponential_decay", _with_schedule("exponential_decay", jnp.float64, 200)),
    # float32: a short run, to the float32 tolerance.
    Comparison("exponential_decay_float32", _with_schedule("exponential_decay", jnp.float32, 20)),
    Comparison("in_optax_chain", _in_chain),
]

DTYPES = [jnp.float32, jnp.float64]

rule_params = pytest.mark.parametrize("case", RULES, ids=[c.id for c in RULES])
schedule_params = pytest.mark.parametrize("sched", SCHEDULES, ids=[s.id for s in SCHEDULES])
dtype_params = pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
comparison_params = pytest.mark.parametrize("comparison", COMPARISONS, ids=[c.id for c in COMPARISONS])


# --------------------------------------------------------------------------------------------------
# Helpers.


def _fast_compile_options() -> dict:
    """The first set of XLA options this jaxlib accepts, from fastest to compile to none at all.

    XLA's CPU compile time, not run time, dominates this file: every rule and oracle is its own
    small program. LLVM optimisation off and the classic (non-MLIR) fusion emitters cut it about
    four-fold. These are debug flags that come and go between jaxlib versions, hence the probe.
    Both sides of every comparison are compiled with the same options.
    """
    candidates = (
        {"xla_backend_optimization_level": 0, "xla_cpu_use_fusion_emitters": False},
        {"xla_backend_optimization_level": 0},
    )
    for options in candidates:
        try:
            jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
        except Exception:  # an option this jaxlib does not know
            continue
        return options
    return {}


fast_compile_jit = functools.partial(jax.jit, compiler_options=_fast_compile_options())


def scan_trajectory(tx, loss, params0, num_steps: int) -> jax.Array:
    """Parameters after each of `num_steps` full-gradient updates, flattened: (num_steps, n)."""

    def body(carry, _):
        params, state = carry
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(params)])

    return lax.scan(body, (params0, tx.init(params0)), None, length=num_steps)[1]


def trajectories(pairs: dict) -> dict:
    """{key: (tx_a, tx_b, problem, dtype, num_steps)} -> {key: (trajectory_a, trajectory_b)}.

    Everything runs in one compiled program: compile time, not run time, dominates these tests.
    """

    @fast_compile_jit
    def run_all():
        return {
            key: tuple(
                scan_trajectory(tx, problem.loss, problem.params0(dtype), num_steps) for tx in (tx_a, tx_b)
            )
            for key, (tx_a, tx_b, problem, dtype, num_steps) in pairs.items()
        }

    return jax.tree.map(np.asarray, run_all())


RULES_BY_ID = {c.id: c for c in RULES}


@functools.cache
def optax_comparisons(case_id: str) -> dict:
    """Every `COMPARISONS` entry for one rule row, computed once and shared by the tests."""
    case = RULES_BY_ID[case_id]
    return trajectories({c.id: c.build(case) for c in COMPARISONS})


def assert_trajectories_close(actual, expected):
    assert np.all(np.isfinite(expected)), "oracle diverged: pick a smaller learning rate"
    assert actual.dtype == expected.dtype
    np.testing.assert_allclose(actual, expected, rtol=rtol(actual.dtype), atol=atol(actual.dtype))


def avals(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype, x.weak_type), tree)


def _step(update, params, state):
    updates, state = update(jax.grad(least_squares)(params), state, params)
    return optax.apply_updates(params, updates), state, updates


# `update` is a static argument: a cached update object hits this jit's cache for any value.
jitted_step = fast_compile_jit(_step, static_argnums=0)


def run_steps(rule, params, num_steps: int):
    state = rule.init(params)
    for _ in range(num_steps):
        params, state, _ = jitted_step(rule.update, params, state)
    return params, state


# --------------------------------------------------------------------------------------------------
# Numerics: trajectories against Optax and NumPy.


@rule_params
@comparison_params
def test_trajectory_matches_optax(case, comparison):
    ours, theirs = optax_comparisons(case.id)[comparison.id]
    assert_trajectories_close(ours, theirs)
    assert not np.allclose(ours[-1], ours[0], rtol=1e-3)  # the run actually moved


def _numpy_heavy_ball(step_size, momentum, look_ahead, num_steps):
    """Textbook velocity form on the least-squares problem, in NumPy: v = m v - lr_t g."""
    A = np.concatenate([np.ones((len(_X), 1)), _X], axis=1)  # (b, w): jax's leaf order
    x = np.zeros(A.shape[1])
    v = np.zeros_like(x)
    history = []
    for t in range(num_steps):
        g = A.T @ (A @ x - _Y) / len(_Y)
        v = momentum * v - step_size(t) * g
        x = x + (momentum * v - step_size(t) * g if look_ahead else v)
        history.append(x.copy())
    return np.array(history)


class VelocityCase(NamedTuple):
    id: str
    factory: Callable
    look_ahead: bool  # Nesterov's extra momentum * v term in the oracle


VELOCITY = [
    VelocityCase("momentum", rules.momentum, False),
    VelocityCase("nesterov", rules.nesterov, True),
]


@pytest.mark.parametrize("vcase", VELOCITY, ids=[v.id for v in VELOCITY])
def test_velocity_form(vcase):
    sched = SCHEDULES_BY_ID["inverse_time"]
    runs = trajectories(
        {
            "constant": (
                vcase.factory(0.05, 0.9, velocity_form=True),
                vcase.factory(0.05, 0.9),
                LSQ,
                jnp.float64,
                200,
            ),
            "scheduled": (
                vcase.factory(0.05, 0.9, velocity_form=True, schedule=sched.schedule),
                vcase.factory(0.05, 0.9, schedule=sched.schedule),
                LSQ,
                jnp.float64,
                100,
            ),
        }
    )
    # Constant step: the velocity form is Optax's trace form in other variables.
    np.testing.assert_allclose(*runs["constant"], rtol=1e-9, atol=1e-12)
    # Under a schedule it is the textbook heavy ball, a different algorithm from the trace form.
    velocity, trace = runs["scheduled"]
    expected = _numpy_heavy_ball(lambda t: sched.formula(0.05, t), 0.9, vcase.look_ahead, 100)
    np.testing.assert_allclose(velocity, expected, rtol=1e-9, atol=1e-12)
    assert not np.allclose(velocity, trace, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# Schedules.


@schedule_params
def test_schedule_step_size_matches_closed_form(sched):
    t = np.arange(300)
    np.testing.assert_allclose(
        np.asarray(sched.schedule.step_size(0.3, t)), sched.formula(0.3, t), rtol=1e-12
    )


@schedule_params
def test_rule_applies_schedule_with_count_before_increment(sched):
    # With a gradient of ones, sgd's update is exactly -learning_rate_t; no params needed.
    rule = rules.sgd(0.3, schedule=sched.schedule)
    grads = {"w": jnp.ones(2)}

    def body(state, _):
        updates, state = rule.update(grads, state)
        return state, updates["w"][0]

    state, steps = fast_compile_jit(lambda s: lax.scan(body, s, None, length=50))(rule.init(grads))
    np.testing.assert_allclose(-np.asarray(steps), sched.formula(0.3, np.arange(50)), rtol=1e-12)
    assert int(state.count) == 50


@schedule_params
def test_schedule_by_name_equals_schedule_object(sched):
    by_name = rules.get("momentum", learning_rate=0.05, schedule=sched.id, **sched.schedule.hyperparams)
    by_object = rules.momentum(0.05, schedule=sched.schedule)
    assert by_name.update == by_object.update
    params = LSQ.params0(jnp.float64)
    assert jax.tree.map(float, by_name.init(params).hyperparams) == jax.tree.map(
        float, by_object.init(params).hyperparams
    )


def test_schedule_is_hashable_static_description():
    assert rules.inverse_time(0.5) == rules.inverse_time(0.5)
    assert hash(rules.inverse_time(0.5)) == hash(rules.inverse_time(0.5))
    assert rules.exponential_decay(0.9).hyperparams == {"decay_rate": 0.9, "transition_steps": 1}
    assert rules.schedule_names() == tuple(s.id for s in SCHEDULES)


def test_schedule_values_are_swept_from_the_state():
    # Same update object for two decay rates; the value read from the state makes the difference.
    slow = rules.sgd(0.1, schedule=rules.inverse_time(0.5))
    fast = rules.sgd(0.1, schedule=rules.inverse_time(2.0))
    assert slow.update == fast.update
    params = LSQ.params0(jnp.float64)
    run_steps(slow, params, 1)
    with count_compilations() as compiles:
        p_slow, _ = run_steps(slow, params, 3)
        p_fast, _ = run_steps(fast, params, 3)
    assert compiles.count == 0
    assert not np.allclose(p_slow["w"], p_fast["w"])


# --------------------------------------------------------------------------------------------------
# Contract every rule keeps.


@rule_params
def test_update_is_equal_per_static_configuration(case):
    first = make_rule(case, 0.01)
    second = make_rule(case, 0.02)
    assert first.update == second.update
    assert first.update == getattr(rules, case.name)(0.5, **case.kwargs).update
    scheduled = make_rule(case, 0.01, schedule="inverse_sqrt")
    assert scheduled.update != first.update  # the schedule kind is static


@rule_params
def test_new_hyperparameter_value_does_not_recompile(case):
    params = LSQ.params0(jnp.float64)
    first, second = make_rule(case, 0.01), make_rule(case, 0.03)
    run_steps(first, params, 1)  # compiles (or hits the cache of an earlier test)
    with count_compilations() as compiles:
        p1, _ = run_steps(first, params, 2)  # a second call
        p2, _ = run_steps(second, params, 2)  # a new value
    assert compiles.count == 0
    assert not np.allclose(p1["w"], p2["w"])  # the value came from the state


@rule_params
@dtype_params
def test_state_dtypes_and_shapes_are_stable(case, dtype):
    params = LSQ.params0(dtype)
    rule = make_rule(case)
    state0 = rule.init(params)
    params1, state1, updates1 = jitted_step(rule.update, params, state0)
    params2, state2, updates2 = jitted_step(rule.update, params1, state1)
    assert avals(state2) == avals(state1) == avals(state0)
    assert avals(params2) == avals(params1) == avals(params)
    assert avals(updates2) == avals(updates1) == avals(params)
    assert state0.count.dtype == jnp.int32 and state0.count.shape == ()
    assert int(state2.count) == 2
    assert {v.dtype for v in state0.hyperparams.values()} == {jnp.dtype(dtype)}
    assert all(v.shape == () for v in state0.hyperparams.values())


@rule_params
def test_state_holds_every_numeric_hyperparameter(case):
    rule = make_rule(case, 0.07, schedule=rules.exponential_decay(0.9, transition_steps=4))
    hp = rule.init(LSQ.params0(jnp.float64)).hyperparams
    assert set(hp) <= set(rules.hyperparameters(case.name, schedule="exponential_decay"))
    expected = {"learning_rate": 0.07, "decay_rate": 0.9, "transition_steps": 4.0}
    expected.update({k: v for k, v in case.kwargs.items() if not isinstance(v, bool)})
    assert {k: float(v) for k, v in hp.items() if k in expected} == expected


@rule_params
def test_vmap_over_learning_rates_compiles_once(case):
    params0 = LSQ.params0(jnp.float64)
    learning_rates = jnp.linspace(0.2, 1.0, 16) * case.learning_rate

    def final_params(lr):
        rule = make_rule(case, lr)  # the factory sees a traced scalar
        carry = (params0, rule.init(params0))
        return lax.fori_loop(0, 10, lambda _, c: _step(rule.update, *c)[:2], carry)[0]

    sweep = fast_compile_jit(jax.vmap(final_params))
    with count_compilations() as compiles:
        lanes = sweep(learning_rates)
        jax.block_until_ready(lanes)
    assert compiles.count == 1
    # A lane of a sweep gives the same numbers as the same configuration run alone.
    for i in (0, 15):
        alone, _ = run_steps(make_rule(case, learning_rates[i]), params0, 10)
        np.testing.assert_allclose(lanes["w"][i], alone["w"], rtol=1e-9, atol=1e-12)


def test_vmap_over_init_with_traced_learning_rates():
    params = LSQ.params0(jnp.float64)
    learning_rates = jnp.linspace(0.01, 0.16, 16)
    states = jax.vmap(lambda lr: rules.sgd(lr).init(params))(learning_rates)
    np.testing.assert_array_equal(states.hyperparams["learning_rate"], learning_rates)
    assert states.count.shape == (16,)


def test_mixed_precision_pytree_keeps_each_leaf_dtype():
    params = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(3, jnp.float64)}
    rule = rules.adam(0.1, schedule="inverse_sqrt")
    state = rule.init(params)
    assert state.hyperparams["learning_rate"].dtype == jnp.float64  # promoted, like result_type
    updates, new_state = fast_compile_jit(rule.update)(params, state)
    assert avals(updates) == avals(params)
    assert avals(new_state) == avals(state)


# --------------------------------------------------------------------------------------------------
# Registry.

HAND_WRITTEN = ["sgd", "gd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "sgd_hd", "adam_hd"]

HYPERPARAMETERS = [
    ("sgd", "constant", ("learning_rate",)),
    ("gd", "inverse_sqrt", ("learning_rate",)),
    ("momentum", "inverse_time", ("learning_rate", "momentum", "decay_rate")),
    ("nesterov", "constant", ("learning_rate", "momentum")),
    ("adagrad", "constant", ("learning_rate", "initial_accumulator_value", "eps")),
    ("rmsprop", "constant", ("learning_rate", "decay", "eps", "initial_scale", "momentum")),
    (
        "adam",
        "exponential_decay",
        ("learning_rate", "b1", "b2", "eps", "eps_root", "decay_rate", "transition_steps"),
    ),
    ("optax.adam", "constant", ("learning_rate", "b1", "b2", "eps", "eps_root")),
    ("optax.lamb", "constant", ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay")),
]


def test_names_lists_hand_written_rules():
    assert rules.names() == tuple(HAND_WRITTEN)


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_get_resolves_hand_written_names(name):
    rule = rules.get(name, learning_rate=0.1)
    assert isinstance(rule, optax.GradientTransformation)
    assert rule.update == rules.get(name, learning_rate=0.2).update


def test_gd_is_an_alias_of_sgd():
    assert rules.get("gd", learning_rate=0.1).update == rules.sgd(0.3).update


@pytest.mark.parametrize("name, schedule, expected", HYPERPARAMETERS)
def test_hyperparameters(name, schedule, expected):
    assert rules.hyperparameters(name, schedule=schedule) == expected


@pytest.mark.parametrize("name", HAND_WRITTEN + ["optax.adam", "optax.lamb"])
def test_describe_is_one_line(name):
    text = rules.describe(name)
    assert text and "\n" not in text and len(text) < 120


def test_get_takes_schedule_hyperparameters_flat():
    rule = rules.get(
        "sgd",
        learning_rate=0.1,
        schedule="exponential_decay",
        decay_rate=0.9,
        transition_steps=5,
    )
    hp = rule.init(LSQ.params0(jnp.float64)).hyperparams
    assert {k: float(v) for k, v in hp.items()} == {
        "learning_rate": 0.1,
        "decay_rate": 0.9,
        "transition_steps": 5.0,
    }


REGISTRY_ERRORS = [
    ("adma", {"learning_rate": 0.1}, r"unknown rule 'adma'.*optax\.<name>.*did you mean 'adam'\?"),
    ("optax.adamm", {"learning_rate": 0.1}, r"'optax\.adamm'.*did you mean 'optax\.adam'\?"),
    ("SGD", {"learning_rate": 0.1}, r"unknown rule 'SGD'.*did you mean 'sgd'\?"),
    ("optax.adam", {"learning_rate": 0.1, "b1": 2.0}, r"b1 must be a finite number in \[0, 1\), got 2.0"),
    ("optax.lamb", {"learning_rate": 0.1, "weight_decay": -1.0}, r"weight_decay must be .* >= 0"),
    ("optax.ADAM", {"learning_rate": 0.1}, r"did you mean 'optax\.adam'\?"),
    ("adam", {"learning_rate": 0.1, "bb1": 0.9}, r"no hyperparameter 'bb1'.*did you mean 'b1'\?"),
    ("momentum", {"learning_rate": 0.1, "momentun": 0.9}, r"did you mean 'momentum'\?"),
    ("optax.lamb", {"learning_rate": 0.1, "weight_decai": 0.1}, r"did you mean 'weight_decay'\?"),
    ("sgd", {"learning_rate": 0.1, "decay_rate": 0.5}, r"'decay_rate' belongs to schedule"),
    ("sgd", {}, r"rule 'sgd' needs learning_rate"),
    ("optax.adam", {}, r"needs learning_rate"),
    ("sgd", {"learning_rate": 0.1, "schedule": "inv_sqrt"}, r"did you mean 'inverse_sqrt'\?"),
    ("sgd", {"learning_rate": 0.1, "schedule": "exponential_decay"}, r"needs decay_rate"),
    ("sgd", {"learning_rate": 0.1, "schedule": optax.constant_schedule(0.1)}, r"schedule must be"),
]


@pytest.mark.parametrize("name, kwargs, message", REGISTRY_ERRORS)
def test_registry_errors(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        rules.get(name, **kwargs)


def test_an_optax_default_outside_the_usual_domain_is_its_own():
    """`optax.scale_by_sm3` defaults `b2` to 1.0: its b2 is not held to [0, 1)."""
    assert dict(rules.get("optax.scale_by_sm3", b2=1.0).spec.domain)["b2"] == ""
    assert dict(rules.get("optax.adam", learning_rate=0.1).spec.domain)["b1"] == "in [0, 1)"


BAD_LEARNING_RATES = [-0.1, 0.0, float("nan"), float("inf"), np.float32(-1.0), jnp.array(-2.0)]


@pytest.mark.parametrize("name", HAND_WRITTEN + ["optax.adam"])
@pytest.mark.parametrize("lr", BAD_LEARNING_RATES, ids=["neg", "zero", "nan", "inf", "np", "jax"])
def test_bad_learning_rate_raises(name, lr):
    message = f"learning_rate must be a finite number > 0, got {float(lr)!r}"
    with pytest.raises(ValueError, match=re.escape(message)):
        rules.get(name, learning_rate=lr)


BAD_VALUES = [
    ("momentum", {"momentum": 1.0}, "momentum must be a finite number in [0, 1), got 1.0"),
    ("nesterov", {"momentum": -0.1}, "momentum must be a finite number in [0, 1), got -0.1"),
    ("rmsprop", {"decay": 1.5}, "decay must be a finite number in [0, 1], got 1.5"),
    ("rmsprop", {"momentum": float("nan")}, "momentum must be a finite number in [0, 1), got nan"),
    ("adagrad", {"eps": -1.0}, "eps must be a finite number >= 0, got -1.0"),
    (
        "adagrad",
        {"initial_accumulator_value": -0.1},
        "initial_accumulator_value must be a finite number >= 0, got -0.1",
    ),
    ("adam", {"b1": 1.0}, "b1 must be a finite number in [0, 1), got 1.0"),
    ("adam", {"b2": float("inf")}, "b2 must be a finite number in [0, 1), got inf"),
    ("adam", {"eps_root": -1e-8}, "eps_root must be a finite number >= 0, got -1e-08"),
    ("optax.adam", {"b1": float("nan")}, "b1 must be a finite number in [0, 1), got nan"),
    (
        "sgd",
        {"schedule": "inverse_time", "decay_rate": -1.0},
        "decay_rate must be a finite number >= 0, got -1.0",
    ),
    (
        "sgd",
        {"schedule": "exponential_decay", "decay_rate": 1.5},
        "decay_rate must be a finite number in (0, 1], got 1.5",
    ),
    (
        "sgd",
        {"schedule": "exponential_decay", "decay_rate": 0.9, "transition_steps": 0},
        "transition_steps must be a finite number > 0, got 0.0",
    ),
    ("sgd", {"learning_rate": np.ones(3)}, "learning_rate must be a scalar, got shape (3,)"),
    ("sgd", {"learning_rate": True}, "learning_rate must be a real number, got True"),
    ("sgd", {"learning_rate": "0.1"}, "learning_rate must be a real number, got '0.1'"),
]


@pytest.mark.parametrize("name, kwargs, message", BAD_VALUES)
def test_bad_hyperparameter_values_raise(name, kwargs, message):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        rules.get(name, **kwargs)


def test_tracers_are_not_validated():
    # Inside jit the value is unknown: the factory must not try to read it.
    lr = jax.jit(lambda lr: rules.sgd(lr).init(jnp.zeros(2)).hyperparams["learning_rate"])(-1.0)
    assert float(lr) == -1.0


class OptaxCase(NamedTuple):
    id: str
    name: str
    first: dict[str, Any]  # hyperparameters of the call that fills the update cache
    second: dict[str, Any]  # same names, new values: reuses the first call's update
    optax_fn: Callable[..., optax.GradientTransformation]


OPTAX_CASES = [
    OptaxCase(
        "adam",
        "optax.adam",
        {"learning_rate": 0.02, "b1": 0.9},
        {"learning_rate": 0.05, "b1": 0.8},
        optax.adam,
    ),
    OptaxCase(
        "lamb",
        "optax.lamb",
        {"learning_rate": 0.01, "weight_decay": 1e-3},
        {"learning_rate": 0.02, "weight_decay": 1e-2},
        optax.lamb,
    ),
    OptaxCase(
        "sgd_nesterov",
        "optax.sgd",
        {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
        {"learning_rate": 0.1, "momentum": 0.5, "nesterov": True},
        optax.sgd,
    ),
]


@pytest.mark.parametrize("ocase", OPTAX_CASES, ids=[o.id for o in OPTAX_CASES])
def test_optax_rule_reuses_update_and_matches_plain_optax(ocase):
    first = rules.get(ocase.name, **ocase.first)
    second = rules.get(ocase.name, **ocase.second)
    assert first.update == second.update
    # `second` runs with the update built for `first`: valid because inject_hyperparams' update
    # reads every numeric value from `state.hyperparams`.
    runs = trajectories({"lsq": (second, ocase.optax_fn(**ocase.second), LSQ, jnp.float64, 200)})
    assert_trajectories_close(*runs["lsq"])
    params0 = LSQ.params0(jnp.float64)
    run_steps(first, params0, 1)
    with count_compilations() as compiles:
        p1, _ = run_steps(first, params0, 2)
        p2, _ = run_steps(second, params0, 2)
    assert compiles.count == 0
    assert not np.allclose(p1["w"], p2["w"])


def test_optax_static_options_select_different_updates():
    plain = rules.get("optax.sgd", learning_rate=0.1, momentum=0.9, nesterov=False)
    look_ahead = rules.get("optax.sgd", learning_rate=0.1, momentum=0.9, nesterov=True)
    assert plain.update != look_ahead.update


def test_optax_non_numeric_arguments_are_static():
    # A dtype is callable: inject_hyperparams alone would take it for a schedule.
    rule = rules.get("optax.adam", learning_rate=0.1, mu_dtype=jnp.float32)
    _, state = run_steps(rule, LSQ.params0(jnp.float64), 1)
    assert state.inner_state[0].mu["w"].dtype == jnp.float32
    assert set(state.hyperparams) == {"learning_rate", "b1", "b2", "eps", "eps_root"}


def test_optax_rule_works_inside_vmap():
    params0 = LSQ.params0(jnp.float64)
    learning_rates = jnp.array([0.01, 0.02, 0.04])

    def final_params(lr):
        rule = rules.get("optax.adam", learning_rate=lr)
        return _step(rule.update, params0, rule.init(params0))[0]["w"]

    lanes = fast_compile_jit(jax.vmap(final_params))(learning_rates)
    alone, _ = run_steps(rules.get("optax.adam", learning_rate=0.04), params0, 1)
    np.testing.assert_allclose(lanes[2], alone["w"], rtol=1e-12)


# --------------------------------------------------------------------------------------------------
# Every Optax optimizer by name (issue 11): partials, extra arguments, complex parameters.

# Partials (`nadam = partial(adam, nesterov=True)`) and unannotated factories, missed before.
OPTAX_REACHABLE = [
    ("optax.nadam", ("learning_rate", "b1", "b2", "eps", "eps_root")),
    ("optax.nadamw", ("learning_rate", "b1", "b2", "eps", "eps_root", "weight_decay")),
    ("optax.scale_by_factored_rms", ("decay_rate", "step_offset", "epsilon")),
    # memory_size is an int that sets a shape: static, not sweepable.
    ("optax.lbfgs", ("learning_rate",)),
    ("optax.polyak_sgd", ("max_learning_rate", "scaling", "f_min", "eps")),
]


@pytest.mark.parametrize("name, expected", OPTAX_REACHABLE, ids=[n for n, _ in OPTAX_REACHABLE])
def test_optax_factories_are_reachable_with_numeric_hyperparameters(name, expected):
    assert rules.hyperparameters(name) == expected
    text = rules.describe(name)
    assert text.startswith("Optax: ") and "partial(" not in text


def test_nadam_by_name_matches_plain_optax_and_reuses_update():
    first = rules.get("optax.nadam", learning_rate=0.01)
    second = rules.get("optax.nadam", learning_rate=0.02, b1=0.8)
    assert first.update == second.update
    runs = trajectories({"lsq": (second, optax.nadam(0.02, b1=0.8), LSQ, jnp.float64, 200)})
    assert_trajectories_close(*runs["lsq"])


def _parabola(params):
    return jnp.sum((params["w"] - jnp.asarray([1.0, -1.0, 1.0], params["w"].dtype)) ** 2) + jnp.sum(
        params["w"] ** 4
    )


def _extra_args_trajectory(tx, params0, num_steps=30):
    """The run loop's call: update(grads, state, params, value=, grad=, value_fn=)."""

    def body(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(_parabola)(params)
        updates, state = tx.update(grads, state, params, value=value, grad=grads, value_fn=_parabola)
        params = optax.apply_updates(params, updates)
        return (params, state), params["w"]

    params0 = {"w": params0}
    return lax.scan(body, (params0, tx.init(params0)), None, length=num_steps)[1]


class ExtraArgsCase(NamedTuple):
    id: str
    name: str
    swept: str  # the hyperparameter swept under vmap
    values: tuple[float, float]
    optax_fn: Callable[[float], optax.GradientTransformation]


EXTRA_ARGS = [
    ExtraArgsCase("lbfgs", "optax.lbfgs", "learning_rate", (0.5, 1.0), lambda v: optax.lbfgs(v)),
    ExtraArgsCase(
        "polyak_sgd", "optax.polyak_sgd", "max_learning_rate", (0.05, 1.0), lambda v: optax.polyak_sgd(v)
    ),
]


@pytest.mark.parametrize("ecase", EXTRA_ARGS, ids=[e.id for e in EXTRA_ARGS])
def test_extra_args_rules_run_under_jit_and_vmap(ecase):
    params0 = jnp.asarray([-1.0, 10.0, 1.0])

    @fast_compile_jit
    def run_all(values):
        lanes = jax.vmap(
            lambda v: _extra_args_trajectory(rules.get(ecase.name, **{ecase.swept: v}), params0)
        )(values)
        plain = [_extra_args_trajectory(ecase.optax_fn(v), params0) for v in ecase.values]
        return lanes, plain

    lanes, plain = run_all(jnp.asarray(ecase.values))
    for i in range(len(ecase.values)):
        np.testing.assert_allclose(lanes[i], plain[i], rtol=1e-9, atol=1e-12)
    assert not np.allclose(lanes[0], lanes[1])  # the swept value came from the state


@pytest.mark.parametrize("name", HAND_WRITTEN)
def test_hand_written_update_takes_and_ignores_extra_args(name):
    rule = rules.get(name, learning_rate=0.1)
    assert isinstance(rule, optax.GradientTransformationExtraArgs)
    params = LSQ.params0(jnp.float64)
    grads = jax.grad(least_squares)(params)
    state = rule.init(params)
    plain = rule.update(grads, state, params)
    extra = rule.update(grads, state, params, value=1.0, grad=grads, value_fn=least_squares)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), plain, extra))


COMPLEX_DTYPES = [jnp.complex64, jnp.complex128]


def _complex_parabola_problem(dtype):
    # Optax's alias_test parabola with a complex target; gradients are conjugated before the update.
    target = jnp.asarray([1.0, -1.0, 1.0], dtype) * (1 + 1j)

    def loss(params):
        d = params - target
        return jnp.sum((d.conj() * d).real)

    return Problem("complex_parabola", loss, lambda _: jnp.asarray([-1.0, 10.0, 1.0], dtype), 1.0)


def _conjugated(tx):
    # Conjugating the gradient before the rule is part of the problem, identical on both sides.
    conj = optax.stateless(lambda updates, params: jax.tree.map(jnp.conj, updates))
    return optax.chain(conj, tx)


@rule_params
@pytest.mark.parametrize("dtype", COMPLEX_DTYPES, ids=["complex64", "complex128"])
def test_complex_params_match_optax(case, dtype):
    problem = _complex_parabola_problem(dtype)
    ours, theirs = make_rule(case), case.optax_fn(case.learning_rate)
    assert (
        make_rule(case).init(problem.params0(dtype)).hyperparams["learning_rate"].dtype
        == jnp.finfo(dtype).dtype
    )
    runs = trajectories({"c": (_conjugated(ours), _conjugated(theirs), problem, dtype, 100)})
    actual, expected = runs["c"]
    assert actual.dtype == jnp.dtype(dtype)
    rtol_, atol_ = testing.PARITY_TOLERANCES[np.dtype(dtype)]
    np.testing.assert_allclose(actual, expected, rtol=rtol_, atol=atol_)
    assert np.any(np.abs(actual[-1].imag) > 1e-3)  # the imaginary part moved


# --------------------------------------------------------------------------------------------------
# Float32 parity (issue 11): gdjax equals inject_hyperparams(optax.<rule>) bit for bit in float32;
# against plain Optax, which bakes Python floats, `1 - b1` rounds differently (see gdjax.rules).

FLOAT32_DRIFT_SCRIPT = """
import json, sys, jax
jax.config.update("jax_enable_x64", sys.argv[1] == "1")
import jax.numpy as jnp, optax
from gdjax import rules, testing
x0 = jnp.array([-1.0, 10.0, 1.0], jnp.float32)
target = jnp.array([1.0, -1.0, 1.0], jnp.float32)
loss = lambda x: jnp.sum((x - target) ** 2)
def trajectory(tx):
    def body(carry, _):
        x, state = carry
        updates, state = tx.update(jax.grad(loss)(x), state, x)
        x = optax.apply_updates(x, updates)
        return (x, state), x
    return jax.lax.scan(body, (x0, tx.init(x0)), None, length=100)[1]
cases = {
    "adam": (rules.adam(0.1), optax.adam(0.1), optax.inject_hyperparams(optax.adam)(0.1)),
    "nadam": (rules.adam(0.1, nesterov=True), optax.nadam(0.1), optax.inject_hyperparams(optax.nadam)(0.1)),
    "rmsprop": (rules.rmsprop(0.1), optax.rmsprop(0.1), optax.inject_hyperparams(optax.rmsprop)(0.1)),
    "momentum": (rules.momentum(0.01), optax.sgd(0.01, 0.9), optax.inject_hyperparams(optax.sgd)(0.01, 0.9)),
}
out = {}
for key, (ours, plain, injected) in cases.items():
    a, b, c = jax.jit(lambda: [trajectory(t) for t in (ours, plain, injected)])()
    out[key] = [float(jnp.max(jnp.abs(a - b))), float(jnp.max(jnp.abs(a - c)))]
print(json.dumps(out))
"""

# Max |gdjax - plain Optax| over 100 steps of the parabola from [-1, 10, 1], float32 params, as
# measured with jax 0.10.2 / optax 0.2.8 (x64 off, x64 on). Recorded so a change is noticed.
FLOAT32_DRIFT_MEASURED = {
    "adam": (3.77e-5, 2.39e-6),
    "nadam": (3.51e-5, 1.44e-6),
    "rmsprop": (1.44e-6, 1.44e-6),
}


@pytest.mark.parametrize("x64", ["0", "1"], ids=["x64_off", "x64_on"])
def test_float32_drift_from_plain_optax_is_bounded_and_explained(x64):
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", FLOAT32_DRIFT_SCRIPT, x64], capture_output=True, text=True, check=True
    )
    drift = json.loads(result.stdout)
    rtol_, atol_ = testing.PARITY_TOLERANCES[np.dtype(np.float32)]
    for key, (vs_plain, vs_injected) in drift.items():
        assert vs_injected == 0.0, f"{key}: gdjax differs from inject_hyperparams(optax) in float32"
        # Values are O(1) to O(10): the dtype-keyed tolerance at |x| = 1 bounds the drift.
        assert vs_plain <= atol_ + rtol_, f"{key}: drift {vs_plain} from plain Optax"
        if key in FLOAT32_DRIFT_MEASURED:
            measured = FLOAT32_DRIFT_MEASURED[key][int(x64)]
            assert vs_plain <= 2 * measured, f"{key}: drift {vs_plain} grew from {measured}"
    assert drift["momentum"][0] == 0.0  # linear rules have no `1 - b` term: bit for bit


# --------------------------------------------------------------------------------------------------
# The contract battery (issue 9): every hand-written rule by name, and Optax rules by name.

OPTAX_CHECKED = [
    ("optax.adam", {}),
    ("optax.nadam", {}),
    ("optax.nadamw", {}),
    ("optax.adagrad", {"learning_rate": 1.0}),
    ("optax.lars", {"learning_rate": 1.0}),
    ("optax.polyak_sgd", {"max_learning_rate": 1.0}),
    ("optax.lbfgs", {}),
]

CHECKED = [(name, {}) for name in rules.names()] + OPTAX_CHECKED


@pytest.mark.parametrize("name, hyperparameters", CHECKED, ids=[n for n, _ in CHECKED])
def test_check_rule(name, hyperparameters):
    testing.check_rule(name, **hyperparameters)


# Options that change the update's static configuration, each through the whole battery.
CHECKED_OPTIONS = [
    (
        "momentum",
        {"learning_rate": 0.05, "velocity_form": True, "schedule": "inverse_time", "decay_rate": 0.5},
    ),
    ("rmsprop", {"learning_rate": 0.01, "centered": True, "momentum": 0.5, "nesterov": True}),
    ("adam", {"learning_rate": 0.02, "nesterov": True, "eps_root": 1e-8}),
    ("adagrad", {"learning_rate": 0.3, "eps_in_sqrt": False}),
]


@pytest.mark.parametrize("name, hyperparameters", CHECKED_OPTIONS, ids=[n for n, _ in CHECKED_OPTIONS])
def test_check_rule_with_options(name, hyperparameters):
    testing.check_rule(name, **hyperparameters)


class _RebuiltState(NamedTuple):
    hyperparams: dict


def _rebuilds_update(learning_rate, *, schedule="constant"):
    """A rule that bakes its value into a new `update` each time: the mistake check_rule catches."""
    rules._check_value("learning_rate", learning_rate, "> 0")

    def update(updates, state, params=None, **extra_args):
        return jax.tree.map(lambda g: -learning_rate * g, updates), state

    return optax.GradientTransformationExtraArgs(lambda params: _RebuiltState({}), update)


def test_check_rule_catches_a_rule_that_recompiles_for_new_values(monkeypatch):
    monkeypatch.setitem(rules._RULES, "rebuilds", _rebuilds_update)
    with pytest.raises(
        AssertionError, match=r"check_rule\('rebuilds'\) \[jit\]: a new value of 'learning_rate'"
    ):
        testing.check_rule("rebuilds")


# --------------------------------------------------------------------------------------------------
# Hypergradient descent (Baydin et al. 2018): SGD-HD and Adam-HD against a NumPy re-implementation of
# the paper's Algorithms 1 and 3, on a quartic with varying curvature.


def _hd_cost(params):
    w = params["w"]
    target = jnp.asarray([1.0, -2.0, 0.5], w.dtype)
    return 0.5 * jnp.sum((w - target) ** 2) + 0.05 * jnp.sum(w**4) + (params["b"] - 0.3) ** 2


def _hd_grad_np(w, b):
    target = np.array([1.0, -2.0, 0.5])
    return (w - target) + 0.2 * w**3, 2 * (b - 0.3)


def _sgd_hd_numpy(alpha, beta, w, b, num_steps):
    """SGD-HD: alpha_t = alpha_{t-1} + beta g_t . g_{t-1}, theta_t = theta_{t-1} - alpha_t g_t."""
    prev = np.zeros(4)  # grad f(theta_{-1}) = 0
    out = []
    for _ in range(num_steps):
        gw, gb = _hd_grad_np(w, b)
        g = np.r_[gw, gb]
        alpha = alpha - beta * (g @ -prev)
        w, b = w - alpha * gw, b - alpha * gb
        prev = g
        out.append((np.r_[w, b], alpha))
    return out


def _adam_hd_numpy(alpha, beta, b1, b2, eps, w, b, num_steps):
    """Algorithm 3 (Adam-HD)."""
    m, v, du = np.zeros(4), np.zeros(4), np.zeros(4)
    theta = np.r_[w, b]
    out = []
    for t in range(1, num_steps + 1):
        gw, gb = _hd_grad_np(theta[:3], theta[3])
        g = np.r_[gw, gb]
        alpha = alpha - beta * (g @ du)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        du = -m_hat / (np.sqrt(v_hat) + eps)
        theta = theta + alpha * du
        out.append((theta.copy(), alpha))
    return out


HD_ROWS = [
    (
        "sgd_hd",
        {"learning_rate": 0.05, "hypergradient_lr": 0.01},
        lambda hp, w, b, n: _sgd_hd_numpy(hp["learning_rate"], hp["hypergradient_lr"], w, b, n),
    ),
    (
        "sgd_hd",
        {"learning_rate": 0.2, "hypergradient_lr": 0.0},
        lambda hp, w, b, n: _sgd_hd_numpy(hp["learning_rate"], hp["hypergradient_lr"], w, b, n),
    ),
    (
        "adam_hd",
        {"learning_rate": 0.05, "hypergradient_lr": 1e-3},
        lambda hp, w, b, n: _adam_hd_numpy(
            hp["learning_rate"], hp["hypergradient_lr"], 0.9, 0.999, 1e-8, w, b, n
        ),
    ),
    (
        "adam_hd",
        {"learning_rate": 0.02, "hypergradient_lr": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-6},
        lambda hp, w, b, n: _adam_hd_numpy(
            hp["learning_rate"], hp["hypergradient_lr"], 0.8, 0.99, 1e-6, w, b, n
        ),
    ),
]


@pytest.mark.parametrize(
    "name, hyperparameters, numpy_fn", HD_ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(HD_ROWS)]
)
def test_hypergradient_rules_equal_numpy_reimplementation(name, hyperparameters, numpy_fn):
    w0, b0 = np.array([0.5, 1.0, -1.5]), 2.0
    num_steps = 50
    rule = rules.get(name, **hyperparameters)

    def body(carry, _):
        params, state = carry
        updates, state = rule.update(jax.grad(_hd_cost)(params), state, params)
        params = optax.apply_updates(params, updates)
        return (params, state), (jnp.r_[params["w"], params["b"][None]], state.learning_rate)

    params0 = {"w": jnp.asarray(w0), "b": jnp.asarray(b0)}
    _, (thetas, alphas) = jax.jit(lambda p: lax.scan(body, (p, rule.init(p)), None, length=num_steps))(
        params0
    )
    expected = numpy_fn(hyperparameters, w0, b0, num_steps)
    np.testing.assert_allclose(thetas, np.stack([e[0] for e in expected]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(alphas, np.array([e[1] for e in expected]), rtol=1e-9, atol=1e-12)
    if hyperparameters["hypergradient_lr"] > 0:
        assert not np.allclose(alphas, hyperparameters["learning_rate"])  # the rate did adapt


@pytest.mark.parametrize("name", ["sgd_hd", "adam_hd"])
def test_hypergradient_rules_new_value_never_recompiles(name):
    import gdjax

    cost = lambda p, d: _hd_cost(p)
    params0 = {"w": jnp.asarray([0.5, 1.0, -1.5]), "b": jnp.asarray(2.0)}
    gdjax.run(cost, rules.get(name, learning_rate=0.01, hypergradient_lr=1e-3), params0, num_steps=20)
    with count_compilations() as c:
        gdjax.run(cost, rules.get(name, learning_rate=0.02, hypergradient_lr=2e-3), params0, num_steps=20)
    assert c.count == 0


def test_adam_hd_with_zero_hypergradient_lr_is_adam():
    params = {"w": jnp.asarray([0.5, 1.0, -1.5]), "b": jnp.asarray(2.0)}
    ours = testing._trajectory(rules.adam_hd(0.05, hypergradient_lr=0.0), params, 30)
    adam = testing._trajectory(rules.adam(0.05), params, 30)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(adam), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "name, values, message",
    [
        ("sgd_hd", {"hypergradient_lr": -1.0}, "hypergradient_lr must be a finite number >= 0, got -1.0"),
        ("adam_hd", {"b1": 1.0}, "b1 must be a finite number in [0, 1), got 1.0"),
        ("sgd_hd", {"schedule": "inverse_sqrt"}, "sgd_hd adapts its own learning rate; it takes no schedule"),
    ],
)
def test_hypergradient_rules_refuse_bad_values(name, values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        rules.get(name, learning_rate=0.1, **values)


# ------------------------------------------- an outside audit of values at the API's edges (2026-12-04)
def _least_squares():
    import gdjax

    X = np.linspace(-1.0, 1.0, 8, dtype=np.float32)[:, None]
    return gdjax.make_cost(gdjax.linear, gdjax.mse), (X, 2.0 * X[:, 0] + 1.0)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("optax.sgd", {"learning_rate": None}),  # Optax's scale_by_learning_rate(None) is the identity
        ("optax.adam", {"learning_rate": None}),
        ("optax.lamb", {"learning_rate": "0.1"}),
        ("optax.adam", {"learning_rate": [0.1]}),
        ("optax.adam", {"learning_rate": True}),
        ("optax.adam", {"learning_rate": 0.1, "b1": None}),
        ("optax.adam", {"learning_rate": 0.1, "b1": "0.9"}),
    ],
)
def test_an_optax_alias_refuses_a_value_that_is_not_a_number(name, kwargs):
    """`learning_rate=None` built an `optax.sgd` that took steps of +grad (gradient ascent); strings
    and lists failed deep inside Optax at the first step."""
    key = next(k for k, v in kwargs.items() if not isinstance(v, float))
    with pytest.raises(ValueError, match=rf"{name}: {key} must be a real number or a schedule"):
        rules.get(name, **kwargs)


def test_an_optax_alias_keeps_none_where_the_factory_means_none():
    rule = rules.get("optax.lbfgs", learning_rate=None)  # None: its line search chooses the step
    assert "learning_rate" not in rule.hyperparams


@pytest.mark.parametrize(
    "make",
    [
        lambda: rules.adam(None),
        lambda: rules.adam(0.1, b1=None),
        lambda: rules.momentum(0.1, momentum=None),
        lambda: rules.nesterov(None),
        lambda: rules.adagrad(None),
        lambda: rules.rmsprop(None),
    ],
)
def test_a_hand_written_rule_refuses_none_for_a_value_it_needs(make):
    """They raised a KeyError from inside JAX's tracing at the first step."""
    with pytest.raises(ValueError, match="must be a real number, got None"):
        make()


def test_rmsprop_momentum_none_is_no_momentum():
    assert "momentum" not in rules.rmsprop(0.1, momentum=None).hyperparams


@pytest.mark.parametrize(
    "rule",
    [
        lambda: rules.sgd(1e300),
        lambda: rules.get("optax.adam", learning_rate=1e300),
        lambda: rules.adam(0.1, eps=1e39),
    ],
)
def test_a_value_float32_rounds_to_inf_is_refused(rule):
    """1e300 is finite as given and inf in float32 params: the run ended `nonfinite` after 0 steps
    (eps=1e39: ran and never moved). 1e-50, which float32 rounds to 0, was already refused."""
    import gdjax

    cost, data = _least_squares()
    with pytest.raises(ValueError, match=r"is inf in float32 .*not finite: give a value that float32 holds"):
        gdjax.run(cost, rule(), gdjax.init_linear(1, np.float32), data, num_steps=5)


def test_a_sweep_lane_float32_rounds_to_inf_is_refused():
    import gdjax
    from gdjax.sweep import GridError

    cost, data = _least_squares()
    with pytest.raises(GridError, match=r"learning_rate = 1e\+300 is inf in float32"):
        gdjax.sweep(cost, "sgd", gdjax.init_linear(1, np.float32), data, grid={"learning_rate": [0.1, 1e300]},
                    num_steps=5)  # fmt: skip
