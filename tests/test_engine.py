"""The engine's cost model: evaluation schedule, metrics, O(batch) sampling, bounded records."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax
from gdjax import loop, rules, sampler
from gdjax.options import Execution, Stopping
from gdjax.sweep import sweep
from tests.helpers import count_compilations

COST = gdjax.make_cost(gdjax.linear, gdjax.mse)


def _data(n=200, d=3, seed=0):
    data = gdjax.data.synthetic(seed, n, d)
    return np.asarray(data[0]), np.asarray(data[1])


# ------------------------------------------------------------------------------------- sampler
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 1000, 2048, 4097])
def test_each_example_exactly_once_per_epoch(n):
    key = jax.random.key(3)
    for epoch in range(3):
        order = sampler.epoch_order(key, epoch, n)
        assert sorted(order.tolist()) == list(range(n))


@pytest.mark.parametrize("bits", range(1, 13))
def test_the_feistel_pass_is_a_bijection_of_its_power_of_two_domain(bits):
    """Odd and even widths: the pass alone (before cycle-walking) permutes [0, 2**bits), and that
    domain is the smallest power of two that holds n, so it is below 2n (under 2 passes on average)."""
    n = 2 ** (bits - 1) + 1 if bits > 1 else 2
    split = sampler._split_bits(n)
    assert sum(split) == bits and 2**bits < 2 * n
    keys = sampler._round_keys(jax.random.key(5), 0)
    image = np.asarray(sampler._feistel(jnp.arange(2**bits, dtype=jnp.uint32), keys, split))
    assert sorted(image.tolist()) == list(range(2**bits))


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (64, 8), (1000, 7)])
def test_batches_of_an_epoch_cover_distinct_examples(n, batch_size):
    key = jax.random.key(1)
    per_epoch = n // batch_size
    batches = jax.jit(jax.vmap(lambda t: sampler.batch_indices(key, t, n, batch_size)))(
        jnp.arange(2 * per_epoch)
    )
    for epoch in range(2):
        seen = np.asarray(batches[epoch * per_epoch : (epoch + 1) * per_epoch]).ravel()
        assert len(set(seen.tolist())) == per_epoch * batch_size  # no repeats within an epoch
        assert seen.min() >= 0 and seen.max() < n


def test_sampling_is_reproducible_keyed_and_vmaps_over_seeds():
    n, bs = 500, 16
    one = lambda key, t: sampler.batch_indices(key, t, n, bs)  # noqa: E731
    a = one(jax.random.key(0), 5)
    np.testing.assert_array_equal(a, one(jax.random.key(0), 5))
    assert not np.array_equal(a, one(jax.random.key(1), 5))
    keys = jax.random.split(jax.random.key(0), 4)
    lanes = jax.vmap(one, in_axes=(0, None))(keys, 5)
    for i in range(4):
        np.testing.assert_array_equal(lanes[i], one(keys[i], 5))
    # Epochs are different orders.
    assert not np.array_equal(
        sampler.epoch_order(jax.random.key(0), 0, n), sampler.epoch_order(jax.random.key(0), 1, n)
    )


def test_every_rule_sees_the_same_batches_for_one_seed():
    """Paired comparisons: the batch order depends on the key only. The cost records which examples it
    saw through its gradient: with `y = e_i` one-hot columns the batch loss reveals the batch."""
    X, y = _data(n=60)
    traces = [
        gdjax.run(COST, rule, gdjax.init_linear(3), (X, y), num_steps=25, batch_size=6, key=7, eval_every=5)
        for rule in (rules.sgd(0.0001), rules.adam(0.0001))
    ]
    # Identical first batch losses at identical starting params: the same examples were drawn.
    assert float(traces[0].batch_loss_history[0]) == float(traces[1].batch_loss_history[0])
    idx = [np.asarray(sampler.batch_indices(jax.random.key(7), t, 60, 6)) for t in range(3)]
    p0 = gdjax.init_linear(3)
    for t in range(1):
        want = COST(p0, (X[idx[t]], y[idx[t]]))
        np.testing.assert_allclose(traces[0].batch_loss_history[t], want, rtol=1e-12)


# ---------------------------------------------------------------------------- evaluation schedule
@pytest.mark.parametrize(
    ("num_steps", "eval_every", "want"),
    [(10, 1, list(range(11))), (10, 3, [0, 3, 6, 9, 10]), (10, 5, [0, 5, 10]), (7, 20, [0, 7])],
)
def test_eval_steps_are_multiples_and_the_last_step(num_steps, eval_every, want):
    X, y = _data()
    trace = gdjax.run(
        COST, rules.sgd(0.05), gdjax.init_linear(3), (X, y), num_steps=num_steps, eval_every=eval_every
    )
    assert np.asarray(trace.eval_steps).tolist() == want
    assert trace.loss_history.shape == (len(want),)
    assert trace.batch_loss_history.shape == (num_steps,)
    # Iterates are recorded at evaluations by default, and the losses are the full-data cost there.
    assert np.asarray(trace.record_steps).tolist() == want
    for j in range(len(want)):
        params = jax.tree.map(lambda h, j=j: h[j], trace.params_history)
        np.testing.assert_allclose(trace.loss_history[j], COST(params, (X, y)), rtol=1e-12)


def test_eval_every_does_not_change_the_trajectory():
    X, y = _data()
    args = dict(num_steps=40, batch_size=10, key=3)
    dense = gdjax.run(
        COST, rules.momentum(0.05, momentum=0.9), gdjax.init_linear(3), (X, y), eval_every=1, **args
    )
    sparse = gdjax.run(
        COST, rules.momentum(0.05, momentum=0.9), gdjax.init_linear(3), (X, y), eval_every=8, **args
    )
    np.testing.assert_array_equal(dense.batch_loss_history, sparse.batch_loss_history)
    np.testing.assert_array_equal(dense.loss_history[::8], sparse.loss_history)
    for a, b in zip(jax.tree.leaves(dense.params), jax.tree.leaves(sparse.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_full_batch_loss_at_every_step_is_the_step_loss():
    X, y = _data()
    trace = gdjax.run(COST, rules.sgd(0.05), gdjax.init_linear(3), (X, y), num_steps=20)
    np.testing.assert_array_equal(trace.eval_steps, np.arange(21))
    np.testing.assert_allclose(trace.batch_loss_history, trace.loss_history[:-1], rtol=1e-12)


def test_default_mini_batch_schedule_keeps_evaluation_cheap():
    X, y = _data(n=1000)
    trace = gdjax.run(
        COST, rules.sgd(0.05), gdjax.init_linear(3), (X, y), num_steps=5000, batch_size=10, key=0
    )
    k = int(trace.eval_steps[1])
    assert k == 10 * 1000 // 10  # an evaluation (n examples) per 10 n / batch_size steps: <= 10%
    assert int(trace.steps) == 5000


def test_a_run_computes_exactly_num_steps_steps():
    X, y = _data(n=1000)
    trace = gdjax.run(COST, rules.sgd(0.01), gdjax.init_linear(3), (X, y), num_steps=30, batch_size=64, key=0)
    assert int(trace.steps) == 30 and trace.batch_loss_history.shape == (30,)


# ------------------------------------------------------------------------------------- metrics
def _held_out():
    X, y = _data(n=100, seed=5)
    X_test, y_test = jnp.asarray(X), jnp.asarray(y)
    return {
        "test_loss": lambda p: COST(p, (X_test, y_test)),
        "w0": lambda p: p["w"][0],
    }


def test_metrics_are_evaluated_on_the_schedule():
    X, y = _data()
    metrics = _held_out()
    trace = gdjax.run(
        COST, rules.sgd(0.05), gdjax.init_linear(3), (X, y), num_steps=30, eval_every=10, metrics=metrics
    )
    assert set(trace.metrics) == {"test_loss", "w0"}
    for j, step in enumerate(np.asarray(trace.eval_steps)):
        params = jax.tree.map(lambda h, j=j: h[j], trace.params_history)
        assert int(trace.record_steps[j]) == step
        np.testing.assert_allclose(trace.metrics["test_loss"][j], metrics["test_loss"](params), rtol=1e-12)
        np.testing.assert_allclose(trace.metrics["w0"][j], params["w"][0], rtol=1e-12)


def test_new_learning_rate_with_metrics_does_not_recompile():
    X, y = _data()
    metrics = _held_out()
    args = dict(num_steps=20, eval_every=5, metrics=metrics)
    gdjax.run(COST, rules.sgd(0.01), gdjax.init_linear(3), (X, y), **args)
    with count_compilations() as c:
        gdjax.run(COST, rules.sgd(0.02), gdjax.init_linear(3), (X, y), **args)
    assert c.count == 0


def test_metrics_in_a_sweep_rank_lanes():
    X, y = _data()
    acc = {"neg_w0": lambda p: -jnp.abs(p["w"][0] - 1.0)}
    result = sweep(
        COST, "sgd", gdjax.init_linear(3), (X, y), grid={"learning_rate": [0.001, 0.01, 0.1]}, num_steps=30,
        metrics=acc, eval_every=10,
    )  # fmt: skip
    assert result.trace.metrics["neg_w0"].shape == (3, 4)
    rows = result.summary()
    assert [r["neg_w0"] for r in rows] == [float(v) for v in result.trace.metrics["neg_w0"][:, -1]]
    best_max = result.best(by="neg_w0", mode="max")[0]
    assert best_max["neg_w0"] == max(r["neg_w0"] for r in rows)
    best_min = result.best(by="neg_w0", mode="min")[0]
    assert best_min["neg_w0"] == min(r["neg_w0"] for r in rows)
    for i in range(3):  # a lane equals the run alone, metrics included
        alone = gdjax.run(
            COST, rules.sgd(result.coords[i]["learning_rate"]), gdjax.init_linear(3), (X, y), num_steps=30,
            metrics=acc, eval_every=10,
        )  # fmt: skip
        np.testing.assert_allclose(result.trace.metrics["neg_w0"][i], alone.metrics["neg_w0"], rtol=1e-10)
    agg = result.aggregate(over="seed")
    assert "neg_w0_mean" in agg[0]
    with pytest.raises(ValueError, match="mode must be"):
        result.best(by="neg_w0", mode="largest")


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(eval_every=0), "eval_every must be an integer >= 1"),
        (dict(eval_every=2.5), "eval_every must be an integer >= 1"),
        (dict(metrics={"v": lambda p: p["w"]}), r"metrics\['v'\] must return a real scalar"),
        (dict(metrics={"boom": lambda p: p["nope"]}), r"metrics\['boom'\] failed"),
        (dict(metrics={"final_loss": lambda p: p["b"]}), "clashes with a built-in column"),
        (dict(metrics={"not a name": lambda p: p["b"]}), "identifiers"),
        (dict(metrics={"m": 3.0}), "must be a function"),
        (dict(metrics=[lambda p: p["b"]]), "metrics must be a dict"),
        (dict(eval_every=3, execution=lambda: Execution(record_every=4)), "multiple of eval_every"),
        (
            dict(stopping=lambda: Stopping(divergence_patience=0)),
            "divergence_patience must be an integer >= 1",
        ),
        (dict(key="abc", batch_size=2), "key must be an integer seed"),
        (dict(key=2**70, batch_size=2), "fits 64 bits"),
    ],
)
def test_bad_engine_arguments_get_clear_errors(kwargs, match):
    X, y = _data()
    with pytest.raises(ValueError, match=match):
        # The option objects are built here: `Stopping` validates its values when it is built.
        kwargs = {k: v() if k in ("stopping", "execution") else v for k, v in kwargs.items()}
        gdjax.run(COST, rules.sgd(0.01), gdjax.init_linear(3), (X, y), num_steps=10, **kwargs)


# ------------------------------------------------------------------------------------ memory
@pytest.mark.parametrize("num_steps", [1, 2, 7, 10, 200_000])
@pytest.mark.parametrize(("eval_every", "per_record"), [(1, 1), (1, 3), (3, 1), (3, 2), (20, 1)])
def test_schedule_is_every_kth_step_and_the_last(num_steps, eval_every, per_record):
    """Oracle: the set definition (`np.unique` of the multiples and the last step), as the schedule
    was computed before it was built directly (cached, read-only: every caller shares the arrays)."""
    opts = loop.RunOptions(num_steps, None, None, eval_every, eval_every * per_record, 1)
    evals, records = loop.schedule(opts)
    want = np.unique(np.r_[np.arange(0, num_steps, eval_every), num_steps])
    np.testing.assert_array_equal(evals, want)
    np.testing.assert_array_equal(records, np.unique(np.r_[want[:-1][::per_record], num_steps]))
    assert (len(evals), len(records)) == loop.schedule_sizes(opts)
    assert not evals.flags.writeable and not records.flags.writeable
    assert loop.schedule(opts)[0] is evals


def test_records_are_bounded_by_default():
    params = {"w": jnp.zeros(2**20, jnp.float32)}  # 4 MiB
    rule = rules.sgd(0.1)
    _, _, _, opts, _ = loop.prepare(
        gdjax.costs.quadratic, rule, params, None, num_steps=10_000, batch_size=None, key=None
    )
    _, records = loop.schedule(opts)
    assert len(records) * 4 * 2**20 <= loop.MAX_RECORD_BYTES
    assert records[0] == 0 and records[-1] == 10_000


def test_huge_step_counts_with_sparse_evaluation_are_possible():
    rule = rules.sgd(0.1)
    num_steps = 2**31 - 1  # step counters are int32 inside the program (issue 19: larger is refused)
    _, _, _, opts, _ = loop.prepare(
        gdjax.costs.quadratic, rule, {"w": jnp.zeros(3)}, None, num_steps=num_steps, batch_size=None,
        key=None, eval_every=2**25,
    )  # fmt: skip
    evals, _ = loop.schedule(opts)
    assert len(evals) == 65 and not opts.batch_losses  # per-step losses would not fit: not recorded
    with pytest.raises(ValueError, match="pass eval_every >= "):
        loop.prepare(
            gdjax.costs.quadratic, rule, {"w": jnp.zeros(3)}, None, num_steps=num_steps, batch_size=None,
            key=None, eval_every=1,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"num_steps must be an integer in \[1, 2147483647\]"):
        loop.prepare(
            gdjax.costs.quadratic, rule, {"w": jnp.zeros(3)}, None, num_steps=10**12, batch_size=None,
            key=None, eval_every=10**10,
        )  # fmt: skip


# -------------------------------------------------------------------------------- divergence
def test_learning_rates_above_two_over_l_diverge_on_the_tutorial_data():
    X, y = gdjax.data.house_prices()
    bound = gdjax.reference.curvature(np.asarray(X)).max_stable_lr
    for lr, want in ((0.0750, {"max_steps", "converged"}), (0.0824, {"diverged"})):
        assert lr < bound if lr == 0.0750 else lr > bound
        trace = gdjax.run(COST, rules.sgd(lr), gdjax.init_linear(1), (X, y), num_steps=3000, tol=1e-6)
        assert trace.status_name() in want, (lr, trace.status_name())


@pytest.mark.parametrize(
    ("rule", "peak"), [(optax.adagrad(1.0), 100.0), (optax.lars(1.0), 7e6)], ids=["adagrad", "lars"]
)
def test_a_transient_spike_is_not_divergence(rule, peak):
    """Optax's own settings on Rosenbrock climb far above 100x the initial loss, then converge."""
    x0 = jnp.zeros(2)
    trace = gdjax.run(gdjax.costs.rosenbrock, rule, x0, None, num_steps=10_000)
    assert float(np.max(trace.loss_history)) > peak
    assert trace.status_name() == "max_steps"
    assert float(trace.loss_history[-1]) < 3e-2


def test_extra_args_rules_run_inside_the_loop():
    trace = gdjax.run(gdjax.costs.rosenbrock, optax.lbfgs(), jnp.zeros(2), None, num_steps=100)
    assert float(trace.final_loss) < 1e-8


def test_a_short_run_that_ends_far_above_its_start_is_diverged():
    X, y = gdjax.data.house_prices()  # 2/L = 0.0813: lr = 0.15 grows the loss ~7x per step
    trace = gdjax.run(COST, rules.sgd(0.15), gdjax.init_linear(1), (X, y), num_steps=20)
    assert trace.status_name() == "diverged" and int(trace.steps) == 20
    assert np.all(np.isfinite(np.asarray(trace.loss_history)))


# ---------------------------------------------------------------- least squares' own gradient
@pytest.mark.parametrize("outputs", [None, 3], ids=["one_output", "three_outputs"])
@pytest.mark.parametrize("model", [gdjax.linear, gdjax.costs.linear_feature_major])
def test_least_squares_value_and_grad_equals_autodiff_and_numpy(model, outputs):
    """The scale-after-the-product gradient is the autodiff gradient (float64, to round-off), and
    both equal the tutorials' hand-derived partials 2 X^T r / n, 2 sum(r) / n."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 4))
    y = rng.standard_normal(50) if outputs is None else rng.standard_normal((50, outputs))
    params = gdjax.init_linear(4, jnp.float64, num_outputs=outputs)
    params = jax.tree.map(lambda p: p + rng.standard_normal(p.shape), params)
    cost = gdjax.make_cost(model, gdjax.mse)
    data = (X.T if model is gdjax.costs.linear_feature_major else X, y)
    value, grad = jax.jit(cost.value_and_grad)(params, data)
    want_value, want_grad = jax.value_and_grad(cost)(params, data)
    r = X @ np.asarray(params["w"]) + np.asarray(params["b"]) - y  # NumPy oracle
    np.testing.assert_allclose(value, np.mean(r**2), rtol=1e-12)
    np.testing.assert_allclose(value, want_value, rtol=1e-12)
    np.testing.assert_allclose(grad["w"], 2 * X.T @ r / r.size, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(grad["b"], 2 * r.sum(axis=0) / r.size, rtol=1e-11, atol=1e-13)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13), grad, want_grad)


def test_only_least_squares_offers_its_own_gradient():
    assert gdjax.make_cost(gdjax.linear, gdjax.mse).value_and_grad is not None
    assert gdjax.make_cost(gdjax.linear, gdjax.costs.logistic).value_and_grad is None
    assert gdjax.make_cost(gdjax.polynomial(2), gdjax.mse).value_and_grad is None


def test_least_squares_gradient_keeps_mse_shape_error():
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    with pytest.raises(ValueError, match="mse: predictions have shape"):
        cost.value_and_grad(gdjax.init_linear(2, jnp.float64), (np.ones((5, 2)), np.ones((5, 1))))


def test_runs_on_least_squares_match_an_autodiff_cost_to_round_off():
    """gdjax.run takes the cost's own gradient; a plain function of the same math takes autodiff's."""
    X, y = _data(300, 5)
    plain = lambda p, data: jnp.mean((data[0] @ p["w"] + p["b"] - data[1]) ** 2)  # noqa: E731
    for batch_size in (None, 16):
        got = gdjax.run(COST, rules.adam(0.05), gdjax.init_linear(5), (X, y), num_steps=200,
                        batch_size=batch_size, key=0)  # fmt: skip
        want = gdjax.run(plain, rules.adam(0.05), gdjax.init_linear(5), (X, y), num_steps=200,
                         batch_size=batch_size, key=0)  # fmt: skip
        np.testing.assert_allclose(got.loss_history, want.loss_history, rtol=1e-10)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12),
                     got.params, want.params)  # fmt: skip


def test_params_checked_once_per_device_array_and_bad_params_still_fail():
    X, y = _data()
    good = jax.device_put(gdjax.init_linear(3))  # device arrays: checked once, then known finite
    for _ in range(2):
        gdjax.run(COST, rules.sgd(0.1), good, (X, y), num_steps=2)
    bad = {"w": jnp.asarray([0.0, jnp.nan, 0.0]), "b": jnp.asarray(0.0)}
    for _ in range(2):
        with pytest.raises(ValueError, match=r"params\['w'\] contains non-finite values"):
            gdjax.run(COST, rules.sgd(0.1), bad, (X, y), num_steps=2)
    ints = {"w": jnp.zeros(3, jnp.int32), "b": jnp.asarray(0.0)}
    with pytest.raises(ValueError, match=r"params\['w'\] has dtype int32"):
        gdjax.run(COST, rules.sgd(0.1), ints, (X, y), num_steps=2)


def test_least_squares_gradient_with_integer_targets():
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    X, y = np.arange(12.0).reshape(6, 2), np.arange(6)  # int targets: the scale is the params' dtype
    params = {"w": jnp.asarray([0.5, -0.25]), "b": jnp.asarray(0.1)}
    got = cost.value_and_grad(params, (X, y))
    want = jax.value_and_grad(cost)(params, (X, y))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), got, want)


@pytest.mark.parametrize("batch_size", [None, 16])
def test_host_and_device_data_give_the_same_bits(batch_size):
    """Host data is copied to the device and transposed there on every call (it may change between
    calls); device data's transpose is kept. Both are the same XLA transpose: the same numbers."""
    X, y = _data(300, 4)
    args = (
        COST,
        rules.adam(0.05),
        gdjax.init_linear(4),
    )
    kwargs = dict(num_steps=50, batch_size=batch_size, key=1, eval_every=5)
    host = gdjax.run(*args, (X, y), **kwargs)
    device = gdjax.run(*args, (jnp.asarray(X), jnp.asarray(y)), **kwargs)
    for a, b in zip(jax.tree.leaves(host), jax.tree.leaves(device), strict=True):
        np.testing.assert_array_equal(a, b)
    X[0, 0] += 1.0  # the host array changed: the next call sees it (nothing cached by identity)
    changed = gdjax.run(*args, (X, y), **kwargs)
    assert not np.array_equal(changed.loss_history, host.loss_history)
