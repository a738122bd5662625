"""The README's promises about the core, each a test (issue 19, items 3, 4, 5 and 7).

- Stopping decisions do not depend on `chunk_size`: the stopping tests' norms are summed in an order
  that does not depend on the vmapped width, and a wide float32 sweep with `tol` keeps every status
  and step count for chunk sizes 1, 3, 7 and one call.
- Seeds and keys are 64-bit: distinct over `[0, 2**63)` with or without float64, the same keys as
  before below `2**32`, and one clear error outside.
- One limit on a grid axis (100,000 values) wherever the grid comes from, checked before the axis
  is materialised; sizes are planned arithmetically; integer options are refused past int32.
- Complex parameters: `run` and `sweep` take them, and Optax's own complex alias-test cases
  (`optax/_src/alias_test.py`: its parabola and Rosenbrock with complex targets, every optimizer it
  runs on complex parameters) give the trajectories of Optax's loop.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax
from gdjax import loop
from gdjax.sweep import MAX_AXIS

COST = gdjax.make_cost(gdjax.linear, gdjax.mse)


# ------------------------------------------------------------------ stopping decisions and chunking
@pytest.mark.parametrize("size", [3, 64, 1000])
def test_the_stopping_norm_has_the_same_bits_for_any_vmapped_width(size):
    """XLA's `reduce` orders a vmapped sum by the whole operand's shape (a plain `jnp.sum` of 64
    float32 values differed in 122 of 234 lanes between one call and chunks); the stopping tests'
    norm must not."""
    rows = np.random.default_rng(0).normal(size=(234, size)).astype(np.float32)
    norm = jax.jit(jax.vmap(lambda x: loop._tree_sq_norm({"a": x, "b": x[:2]})))
    whole = np.asarray(norm(rows))
    for width in (1, 2, 3, 7):
        parts = np.concatenate([np.asarray(norm(rows[i : i + width])) for i in range(0, len(rows), width)])
        np.testing.assert_array_equal(parts, whole, err_msg=f"width {width}")
    alone = np.asarray([jax.jit(loop._tree_sq_norm)({"a": x, "b": x[:2]}) for x in rows[:8]])
    np.testing.assert_array_equal(alone, whole[:8])


def _wide_tol_sweep(chunk_size):
    s = gdjax.data.synthetic(0, 64, 3)
    X, y = s.X.astype(np.float32), s.y.astype(np.float32)
    params0 = {"w": np.zeros(3, np.float32), "b": np.zeros((), np.float32)}
    return gdjax.sweep(
        COST,
        "sgd",
        params0,
        (X, y),
        # Step sizes that decay at different speeds: each lane's step norm crosses tol at its own step.
        grid={"learning_rate": np.geomspace(1e-3, 0.5, 39).astype(np.float32), "schedule": "inverse_time"},
        num_steps=200,
        seeds=[0, 1, 2, 3, 4, 5],
        batch_size=8,
        tol=1e-4,
        chunk_size=chunk_size,
    )


def test_a_wide_float32_sweep_with_tol_keeps_statuses_and_steps_for_any_chunk_size():
    whole = _wide_tol_sweep(None)
    status, steps = np.asarray(whole.trace.status), np.asarray(whole.trace.steps)
    assert whole.num_lanes == 234
    assert set(whole.trace.status_name()) == {"converged", "max_steps"}
    assert len(set(steps[steps < 200].tolist())) > 20  # lanes stop at many different steps
    for chunk_size in (1, 3, 7):
        chunked = _wide_tol_sweep(chunk_size)
        np.testing.assert_array_equal(np.asarray(chunked.trace.status), status, err_msg=f"chunk {chunk_size}")
        np.testing.assert_array_equal(np.asarray(chunked.trace.steps), steps, err_msg=f"chunk {chunk_size}")


# ------------------------------------------------------------------------------------ seeds and keys
def _float32_problem():
    s = gdjax.data.synthetic(0, 64, 3)
    params0 = {"w": np.zeros(3, np.float32), "b": np.zeros((), np.float32)}
    return (s.X.astype(np.float32), s.y.astype(np.float32)), params0


@pytest.mark.parametrize("x64", [False, True])
def test_seed_keys_are_jax_keys_below_2_32_and_distinct_above(x64):
    with jax.enable_x64(x64):
        for seed in (0, 1, 12345, 2**31, 2**32 - 1):
            ours = jax.random.key_data(gdjax.validation.seed_key(seed))
            np.testing.assert_array_equal(ours, jax.random.key_data(jax.random.key(seed)))
        seeds = [0, 1, 2**32, 2**32 + 1, 2**62, 2**63 - 1]
        data = {tuple(np.asarray(jax.random.key_data(gdjax.validation.seed_key(s))).tolist()) for s in seeds}
        assert len(data) == len(seeds)


@pytest.mark.parametrize("x64", [False, True])
def test_seeds_2_32_apart_give_different_lanes_and_keys_in_run(x64):
    with jax.enable_x64(x64):
        data, params0 = _float32_problem()
        seeds = [0, 1, 2**32, 2**32 + 1]
        result = gdjax.sweep(
            COST, "sgd", params0, data, grid={"learning_rate": 0.05}, num_steps=20, seeds=seeds, batch_size=4
        )
        losses = np.asarray(result.trace.loss_history)
        assert len({row.tobytes() for row in losses}) == len(seeds)
        runs = {
            seed: gdjax.run(COST, gdjax.rules.sgd(0.05), params0, data, num_steps=20, batch_size=4, key=seed)
            for seed in (0, 2**32)
        }
        assert not np.array_equal(runs[0].loss_history, runs[2**32].loss_history)
        np.testing.assert_array_equal(runs[2**32].loss_history, losses[2])  # a lane is its run alone


@pytest.mark.parametrize("seed", [-1, 2**63, 2**70])
def test_seeds_outside_64_bits_are_one_clear_error(seed):
    data, params0 = _float32_problem()
    want = r"0 <= seed < 2\*\*63"
    with pytest.raises(ValueError, match=r"seeds must be .*" + want):
        gdjax.sweep(COST, "sgd", params0, data, grid={"learning_rate": 0.1}, num_steps=2, seeds=[0, seed])
    with pytest.raises(ValueError, match=r"key must be .*" + want):
        gdjax.run(COST, gdjax.rules.sgd(0.1), params0, data, num_steps=2, batch_size=4, key=seed)
    with pytest.raises(ValueError, match=r"key must be .*" + want):
        gdjax.check_grad(COST, params0, data, key=seed)


def test_a_batch_of_keys_is_refused_not_read_as_some_other_key():
    """`jax.random.split(key, n)` passed as `key` was silently one stream matching none of its keys."""
    data, params0 = _float32_problem()
    keys = jax.random.split(jax.random.key(0), 3)
    run = functools.partial(gdjax.run, COST, gdjax.rules.sgd(0.1), params0, data, num_steps=2, batch_size=4)
    for batch in (keys, jax.random.key_data(keys[:2])):
        with pytest.raises(ValueError, match=r"key must be one key, got an array of keys of shape \(\d,\)"):
            run(key=batch)
    with pytest.raises(ValueError, match="key must be one key"):
        gdjax.check_grad(COST, params0, data, key=keys)
    # One key, typed or as the legacy uint32 pair, is the seed's key; under vmap each lane gets one.
    legacy = jax.random.key_data(keys[1])
    np.testing.assert_array_equal(run(key=keys[1]).loss_history, run(key=legacy).loss_history)
    lanes = jax.vmap(lambda k: run(key=k).loss_history)(keys)
    np.testing.assert_array_equal(lanes[1], run(key=keys[1]).loss_history)


@pytest.mark.parametrize("half", [jnp.float16, jnp.bfloat16])
def test_half_precision_weights_are_measured_in_float32_not_frozen_as_nonfinite(half):
    """Mixed precision: half-precision weights, a float32 cost. A gradient entry above 256 squared past
    float16's largest number, and a loss above 65504 was cast to inf: finite runs stopped at step 0."""
    X, y = gdjax.data.house_prices()  # prices in the hundreds of thousands

    def cost(p, d):
        return jnp.mean((d[0][:, 0] * p["w"][0].astype(jnp.float32) + p["b"] - d[1]) ** 2)

    params0 = {"w": jnp.zeros(1, half), "b": jnp.zeros((), jnp.float32)}
    for kw in ({}, {"batch_size": 2, "key": 0}):
        trace = gdjax.run(cost, gdjax.rules.sgd(1e-5), params0, (X, y), num_steps=3, **kw)
        assert trace.status_name() == "max_steps" and int(trace.steps) == 3
        assert trace.loss_history.dtype == trace.grad_norm_history.dtype == np.float32
        assert trace.params["w"].dtype == half  # the weights keep their precision
        loss0, grad0 = jax.value_and_grad(cost)(params0, (X, y))
        np.testing.assert_allclose(trace.loss_history[0], loss0, rtol=1e-6)
        norm0 = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in jax.tree.leaves(grad0)))
        np.testing.assert_allclose(trace.grad_norm_history[0], norm0, rtol=1e-3)
    result = gdjax.sweep(cost, "sgd", params0, (X, y), grid={"learning_rate": [1e-5, 1e-6]}, num_steps=3)
    assert result.trace.status_name() == ["max_steps", "max_steps"]


def test_one_lane_calls_are_padded_to_two_only_where_the_budget_allows():
    data, params0 = _float32_problem()
    kwargs = dict(grid={"learning_rate": [0.1, 0.2, 0.3]}, num_steps=50, chunk_size=1)
    plan = gdjax.check_sweep(COST, "sgd", params0, data, **kwargs)
    assert plan.lanes_per_call == [2]
    budget = 1.5 * plan.bytes_per_lane[0]  # room for one lane: the advice chunk_size=1 must work
    tight = gdjax.Execution(memory_budget=budget)
    with pytest.raises(ValueError, match="pass chunk_size=1"):
        gdjax.check_sweep(COST, "sgd", params0, data, **dict(kwargs, chunk_size=None), execution=tight)
    assert gdjax.check_sweep(COST, "sgd", params0, data, **kwargs, execution=tight).lanes_per_call == [1]


# --------------------------------------------------------------------------------- sizes and limits
def _tiny():
    s = gdjax.data.synthetic(0, 16, 2)
    return (s.X, s.y), gdjax.init_linear(2)


AXIS_CASES = {
    "list": dict(grid={"learning_rate": [0.1] * (MAX_AXIS + 1)}),
    "array": dict(grid={"learning_rate": np.full(MAX_AXIS + 1, 0.1)}),
    "range": dict(grid={"learning_rate": range(1, 10**9)}),  # never materialised
    "tolerance axis": dict(grid={"learning_rate": 0.1, "tol": [None] * (MAX_AXIS + 1)}),
    "seeds": dict(grid={"learning_rate": 0.1}, seeds=range(10**9)),
}


@pytest.mark.parametrize("check", [gdjax.sweep, gdjax.check_sweep], ids=["sweep", "check_sweep"])
@pytest.mark.parametrize("case", list(AXIS_CASES))
def test_a_grid_axis_over_the_limit_is_refused_wherever_it_comes_from(case, check):
    data, params0 = _tiny()
    with pytest.raises(ValueError, match=r"values, more than a sweep takes on one axis \(100000 at most\)"):
        check(COST, "sgd", params0, data, num_steps=3, **AXIS_CASES[case])


def test_the_lanes_of_a_sweep_are_counted_before_they_are_built():
    data, params0 = _tiny()
    grid = {"learning_rate": np.linspace(0.01, 0.1, 10_000), "momentum": np.linspace(0.0, 0.9, 10_000)}
    with pytest.raises(ValueError, match="the sweep has 100000000 lanes"):
        gdjax.check_sweep(COST, "momentum", params0, data, grid=grid, num_steps=3)


def test_planning_counts_the_schedule_instead_of_building_it(monkeypatch):
    data, params0 = _tiny()

    def refuse(opts):
        raise AssertionError("planning built the schedule arrays")

    monkeypatch.setattr(loop, "schedule", refuse)
    plan = gdjax.check_sweep(
        COST, "sgd", params0, data, grid={"learning_rate": [0.1, 0.2]}, num_steps=2 * 10**7, eval_every=10**4
    )
    assert plan.num_lanes == 2
    for num_steps, eval_every, record_every in [(1, 1, 1), (10, 3, 6), (101, 7, 21), (100, 10, 10)]:
        opts = loop.RunOptions(num_steps, None, None, eval_every, record_every, 1)
        evals = np.unique(np.r_[np.arange(0, num_steps, eval_every), num_steps])
        records = np.unique(np.r_[evals[:-1][:: record_every // eval_every], num_steps])
        assert loop.schedule_sizes(opts) == (len(evals), len(records))


def test_recorded_iterates_and_gradient_check_points_are_sized_before_allocation():
    params0 = {"w": np.zeros(1000)}
    with pytest.raises(
        ValueError, match=r"record_every=1 records 10000001 iterates .* pass record_every >= 150"
    ):
        gdjax.run(
            gdjax.costs.quadratic, gdjax.rules.sgd(0.1), params0, None, num_steps=10**7,
            execution=gdjax.Execution(record_every=1),
        )  # fmt: skip
    data, params0 = _tiny()
    with pytest.raises(
        ValueError, match=r"num_points=1000000000 copies of params need .* use num_points <= "
    ):
        gdjax.check_grad(COST, params0, data, num_points=10**9)


INT_OPTIONS = {
    "patience": lambda v: gdjax.Stopping(patience=v),
    "divergence_patience": lambda v: gdjax.Stopping(divergence_patience=v),
    "record_every": lambda v: gdjax.Execution(record_every=v),
    "unroll": lambda v: gdjax.Execution(unroll=v),
    "chunk_size": lambda v: gdjax.Execution(chunk_size=v),
    "num_steps": lambda v: gdjax.run(COST, gdjax.rules.sgd(0.1), _tiny()[1], _tiny()[0], num_steps=v),
    "eval_every": lambda v: gdjax.run(
        COST, gdjax.rules.sgd(0.1), _tiny()[1], _tiny()[0], num_steps=5, eval_every=v
    ),
    "batch_size": lambda v: gdjax.sweep(
        COST, "sgd", _tiny()[1], _tiny()[0], grid={"learning_rate": 0.1}, num_steps=5, batch_size=v, seeds=[0]
    ),
}


@pytest.mark.parametrize("value", [2**31, 2**70])
@pytest.mark.parametrize("name", list(INT_OPTIONS))
def test_integer_options_past_int32_are_one_clear_error(name, value):
    with pytest.raises(ValueError, match=rf"^{name} must be an integer in \[1, 2147483647\], got {value}$"):
        INT_OPTIONS[name](value)


# ------------------------------------------------------------------------------ complex parameters
def _complex_parabola(dtype):
    """Optax's `_setup_parabola` for complex dtypes (optax/_src/alias_test.py)."""
    final = jnp.array([1.0, -1.0, 1.0], dtype=dtype) * (1 + 1j)
    return jnp.array([-1.0, 10.0, 1.0], dtype=dtype), lambda p, data: jnp.sum(jnp.abs(p - final) ** 2)


def _complex_rosenbrock(dtype):
    """Optax's `_setup_rosenbrock` for complex dtypes."""
    a, b = 1.0 * (1 + 1j), 100.0

    def cost(p, data):
        return jnp.abs(a - p[0]) ** 2 + b * jnp.abs(p[1] - p[0] ** 2) ** 2

    return jnp.array([0.0, 0.0], dtype=dtype), cost


# Optax's `_OPTIMIZERS_UNDER_TEST` less the ones its test skips for complex parameters (and sm3,
# which this Optax refuses for them). The last column says whether gdjax's registry wrapper
# (`rules.get("optax.<name>")`, values in the state) is compared too: adafactor's default
# `learning_rate=None` scales by the parameters' size, which the wrapper computes in the state's dtype.
OPTAX_COMPLEX_CASES = [
    ("adabelief", {"learning_rate": 1e-2}, True),
    ("adafactor", {"learning_rate": 5e-3}, False),
    ("adafactor", {}, False),
    ("adagrad", {"learning_rate": 1.0}, True),
    ("adam", {"learning_rate": 1e-1}, True),
    ("adamax", {"learning_rate": 1e-1}, True),
    ("adamaxw", {"learning_rate": 1e-1}, True),
    ("adamw", {"learning_rate": 1e-1}, True),
    ("amsgrad", {"learning_rate": 1e-1}, True),
    ("lamb", {"learning_rate": 1e-3}, True),
    ("lars", {"learning_rate": 1.0}, True),
    ("nadam", {"learning_rate": 1e-2}, True),
    ("nadamw", {"learning_rate": 1e-2}, True),
    ("novograd", {"learning_rate": 1e-3}, True),
    ("optimistic_adam_v2", {"learning_rate": 2e-3}, True),
    ("radam", {"learning_rate": 5e-3}, True),
    ("rmsprop", {"learning_rate": 5e-3}, True),
    ("rmsprop", {"learning_rate": 5e-3, "momentum": 0.9}, True),
    ("sgd", {"learning_rate": 1e-3, "momentum": 0.9}, True),
    ("yogi", {"learning_rate": 1e-1}, True),
]
COMPLEX_TARGETS = {"parabola": _complex_parabola, "rosenbrock": _complex_rosenbrock}
COMPLEX_STEPS = 100
COMPLEX_TOL = {jnp.complex128: 1e-9}  # measured: 0 for every case but the registry's adafactor


def _optax_loop(opt, cost, params, num_steps):
    """Optax's own alias-test step: gradients conjugated before `update`."""

    @jax.jit
    def step(params, state):
        grad = jax.tree.map(jnp.conj, jax.grad(cost)(params, None))
        updates, state = opt.update(grad, state, params)
        return optax.apply_updates(params, updates), state

    state = opt.init(params)
    for _ in range(num_steps):
        params, state = step(params, state)
    return params


NO_DIVERGENCE = gdjax.Stopping(divergence_factor=None)  # Rosenbrock climbs before it converges


@pytest.mark.parametrize("target", list(COMPLEX_TARGETS))
@pytest.mark.parametrize(("name", "kwargs", "registry"), OPTAX_COMPLEX_CASES)
def test_optax_complex_alias_cases_run_through_gdjax(name, kwargs, registry, target):
    dtype = jnp.complex128
    params0, cost = COMPLEX_TARGETS[target](dtype)
    want = _optax_loop(getattr(optax, name)(**kwargs), cost, params0, COMPLEX_STEPS)
    rules_under_test = [getattr(optax, name)(**kwargs)]
    if registry:
        rules_under_test.append(gdjax.rules.get(f"optax.{name}", **kwargs))
    for rule in rules_under_test:
        trace = gdjax.run(cost, rule, params0, None, num_steps=COMPLEX_STEPS, stopping=NO_DIVERGENCE)
        assert trace.params.dtype == dtype
        assert np.all(np.isfinite(np.asarray(trace.loss_history)))
        np.testing.assert_allclose(trace.params, want, rtol=COMPLEX_TOL[dtype], atol=COMPLEX_TOL[dtype])


GDJAX_AND_OPTAX = [
    (gdjax.rules.sgd(0.05), optax.sgd(0.05)),
    (gdjax.rules.momentum(0.05, momentum=0.9), optax.sgd(0.05, momentum=0.9)),
    (gdjax.rules.nesterov(0.05, momentum=0.9), optax.sgd(0.05, momentum=0.9, nesterov=True)),
    (gdjax.rules.adagrad(0.5), optax.adagrad(0.5)),
    (gdjax.rules.rmsprop(0.01), optax.rmsprop(0.01)),
    (gdjax.rules.adam(0.1), optax.adam(0.1)),
]


@pytest.mark.parametrize(
    ("rule", "reference"), GDJAX_AND_OPTAX, ids=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]
)
def test_gdjax_rules_on_complex_params_follow_optax(rule, reference):
    params0, cost = _complex_parabola(jnp.complex128)
    want = _optax_loop(reference, cost, params0, 100)
    trace = gdjax.run(cost, rule, params0, None, num_steps=100)
    np.testing.assert_allclose(trace.params, want, rtol=1e-9, atol=1e-12)
    assert trace.status_name() in ("max_steps", "converged")


def test_a_sweep_over_complex_params_equals_its_runs_alone():
    params0, cost = _complex_parabola(jnp.complex128)
    lrs = [0.01, 0.1, 0.4]
    result = gdjax.sweep(
        cost, "momentum", params0, None, grid={"learning_rate": lrs, "momentum": 0.5}, num_steps=50
    )
    for i, lr in enumerate(lrs):
        alone = gdjax.run(cost, gdjax.rules.momentum(lr, momentum=0.5), params0, None, num_steps=50)
        np.testing.assert_allclose(result.lane(i).params, alone.params, rtol=1e-12)
        assert result.lane(i).status == alone.status
    # Seeds and init_noise draw complex perturbations of a complex start.
    noisy = gdjax.sweep(
        cost, "sgd", gdjax.Starts(params0, init_noise=0.1, stacked=False), None,
        grid={"learning_rate": 0.1}, num_steps=5, seeds=[0, 1],
    )  # fmt: skip
    assert noisy.trace.params.dtype == jnp.complex128


def test_check_grad_refuses_complex_params_in_one_line():
    params0, cost = _complex_parabola(jnp.complex128)
    with pytest.raises(ValueError, match="check_grad compares real coordinates; params has complex leaves"):
        gdjax.check_grad(cost, params0, None)
