"""Tests for `gdjax.gradcheck.check_grad`.

Tables kept as data: problems (a cost, a point, its data and a hand-derived NumPy gradient),
mutant gradients (each a classic derivation bug), broken custom differentiation rules, bad inputs.
Oracles the code cannot influence: the hand-derived gradients below and `jax.test_util.check_grads`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import gdjax
from gdjax import costs, reference
from gdjax.gradcheck import (
    DEFAULT_COORDINATES,
    DEFAULT_DIRECTIONS,
    DIRECTIONS_ABOVE,
    PAIRS,
    TOLERANCES,
    check_grad,
)

DTYPES = [np.float64, np.float32]
ANALYTIC_PAIRS = {"analytic vs reverse", "analytic vs forward", "analytic vs fd"}


def cast(tree, dtype):
    """Float leaves of a pytree as JAX arrays of `dtype` (integer leaves untouched)."""

    def one(x):
        x = np.asarray(x)
        return jnp.asarray(x, dtype) if np.issubdtype(x.dtype, np.floating) else jnp.asarray(x)

    return jax.tree.map(one, tree)


# ------------------------------------------------------------------ hand-derived NumPy gradients
def quadratic_grad(params, batch=None):
    return jax.tree.map(lambda x: 2.0 * np.asarray(x, np.float64), params)


def shifted_quadratic_grad(params, batch=None):
    return 2.0 * (np.asarray(params, np.float64) - 3.0)


def rosenbrock_grad(params, batch=None):
    x = np.asarray(params, np.float64)
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def ill_conditioned_grad(params, batch=None):
    x = np.asarray(params, np.float64)
    return np.geomspace(1.0, 100.0, x.size) * x


def poly_grad(params, batch):
    x, y = np.asarray(batch[0], np.float64).ravel(), batch[1]
    return reference.mse_grad(params, (x[:, None] ** np.arange(1, 4), y))


def mlp_cost(params, batch):
    """A nested-pytree cost: a tanh layer stored as a tuple, an output layer stored as a dict."""
    X, y = batch
    W1, b1 = params["hidden"]
    pred = jnp.tanh(X @ W1 + b1[None, :]) @ params["out"]["w"] + params["out"]["b"]
    return jnp.mean((pred - y) ** 2)


def mlp_grad(params, batch):
    """Backpropagation by hand, in float64 NumPy."""
    X, y = (np.asarray(a, np.float64) for a in batch)
    W1, b1 = (np.asarray(a, np.float64) for a in params["hidden"])
    w2, b2 = np.asarray(params["out"]["w"], np.float64), np.asarray(params["out"]["b"], np.float64)
    H = np.tanh(X @ W1 + b1)
    dpred = 2.0 * (H @ w2 + b2 - y) / len(y)
    dZ = np.outer(dpred, w2) * (1.0 - H**2)
    return {"hidden": (X.T @ dZ, dZ.sum(0)), "out": {"w": H.T @ dpred, "b": dpred.sum()}}


# ---------------------------------------------------------------------------------- problems
class Problem(NamedTuple):
    cost: Callable
    params: Callable[[], Any]  # float64 point to check at
    batch: Callable[[], Any]  # float64 data (or None)
    analytic: Callable  # hand-derived gradient (NumPy, float64)


def _synthetic(n=50, d=3):
    data = gdjax.data.synthetic(jax.random.key(3), n, d)
    return data.X, data.y


def _poly_data():
    x = np.linspace(-1.0, 1.0, 20)
    return x[:, None], 1.0 - 2.0 * x + 0.5 * x**3


def _mlp_params():
    r = np.random.default_rng(0)
    return {
        "hidden": (r.normal(size=(3, 4)), r.normal(size=(4,))),
        "out": {"w": r.normal(size=(4,)), "b": np.array(0.1)},
    }


LINEAR_MSE = gdjax.make_cost(gdjax.linear, gdjax.mse)

PROBLEMS = {
    "linear_house_prices": Problem(
        LINEAR_MSE,
        lambda: {"w": np.array([30.0]), "b": np.array(10.0)},
        gdjax.data.house_prices,
        reference.mse_grad,
    ),
    "linear_synthetic": Problem(
        LINEAR_MSE,
        lambda: {"w": np.array([0.5, -1.0, 2.0]), "b": np.array(0.3)},
        _synthetic,
        reference.mse_grad,
    ),
    "polynomial": Problem(
        gdjax.make_cost(gdjax.polynomial(3), gdjax.mse),
        lambda: {"w": np.array([0.1, 0.2, -0.3]), "b": np.array(0.0)},
        _poly_data,
        poly_grad,
    ),
    "quadratic_nested": Problem(
        costs.quadratic,
        lambda: {"a": np.array([1.0, -2.0]), "b": (np.array(0.5), np.array([[1.0, 2.0], [3.0, 4.0]]))},
        lambda: None,
        quadratic_grad,
    ),
    "shifted_quadratic": Problem(
        costs.shifted_quadratic, lambda: np.array([0.0, 1.0, 4.0]), lambda: None, shifted_quadratic_grad
    ),
    "rosenbrock": Problem(costs.rosenbrock, lambda: np.array([-1.2, 1.0]), lambda: None, rosenbrock_grad),
    "ill_conditioned_quadratic": Problem(
        costs.ill_conditioned_quadratic(100.0),
        lambda: np.array([1.0, -0.5]),
        lambda: None,
        ill_conditioned_grad,
    ),
    "mlp_nested_pytree": Problem(mlp_cost, _mlp_params, _synthetic, mlp_grad),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", PROBLEMS)
def test_true_gradients_pass(name, dtype):
    """At the table's point and 3 perturbed copies, in one vmapped call."""
    prob = PROBLEMS[name]
    params, batch = cast(prob.params(), dtype), cast(prob.batch(), dtype)
    report = check_grad(prob.cost, params, batch, analytic=prob.analytic, num_points=4, scale=0.5)
    assert report.ok, str(report)
    assert report.methods == ("reverse", "forward", "fd", "analytic")
    assert report.num_points == 4
    assert len(report.rows) == len(jax.tree.leaves(params)) * len(PAIRS)
    assert (
        report.num_coordinates == report.total_coordinates == sum(np.size(x) for x in jax.tree.leaves(params))
    )


@pytest.mark.parametrize("name", PROBLEMS)
def test_jax_check_grads_agrees(name):
    """The independent oracle passes on the same functions and points that check_grad passes."""
    prob = PROBLEMS[name]
    batch = prob.batch()
    f = jax.jit(lambda p: prob.cost(p, batch))  # jit only for speed: check_grads works the same
    check_grads(f, (cast(prob.params(), np.float64),), order=1, modes=["fwd", "rev"])


# Exact stationary points: every true gradient component is zero, so only the finite difference's
# own error estimate and the gradient-scale floor keep round-off from reading as a 100% error.
STATIONARY = {
    "quadratic": (costs.quadratic, lambda: costs.TEST_FUNCTIONS["quadratic"].minimizer(3), lambda: None),
    "shifted_quadratic": (
        costs.shifted_quadratic,
        lambda: costs.TEST_FUNCTIONS["shifted_quadratic"].minimizer(3),
        lambda: None,
    ),
    "rosenbrock": (costs.rosenbrock, lambda: costs.TEST_FUNCTIONS["rosenbrock"].minimizer(4), lambda: None),
    "house_prices_least_squares": (
        LINEAR_MSE,
        lambda: reference.least_squares(*gdjax.data.house_prices()),
        gdjax.data.house_prices,
    ),
}
# float32 where it is hardest: Rosenbrock's large third derivative, and the least-squares optimum
# where each gradient component is a cancelling sum of large float32 terms.
STATIONARY_CASES = [(name, np.float64) for name in STATIONARY] + [
    ("rosenbrock", np.float32),
    ("house_prices_least_squares", np.float32),
]


@pytest.mark.parametrize(
    "name, dtype", STATIONARY_CASES, ids=lambda v: v if isinstance(v, str) else np.dtype(v).name
)
def test_true_gradients_pass_at_a_minimiser(name, dtype):
    cost, params, batch = STATIONARY[name]
    report = check_grad(cost, cast(params(), dtype), cast(batch(), dtype))
    assert report.ok, str(report)


# -------------------------------------------------------------------------------- mutants
def _residual(params, batch):
    X, y = (np.asarray(a, np.float64) for a in batch)
    return X, X @ np.asarray(params["w"], np.float64) + np.asarray(params["b"], np.float64) - y


def grad_missing_factor_2(params, batch):
    X, r = _residual(params, batch)
    return {"w": X.T @ r / len(r), "b": r.mean()}


def grad_sign_error(params, batch):
    X, r = _residual(params, batch)
    return {"w": -2.0 * X.T @ r / len(r), "b": -2.0 * r.mean()}


def grad_sum_not_mean(params, batch):
    X, r = _residual(params, batch)
    return {"w": 2.0 * X.T @ r, "b": 2.0 * r.sum()}


def grad_forgot_intercept(params, batch):
    X, r = _residual(params, batch)
    return {"w": 2.0 * X.T @ r / len(r), "b": np.float64(0.0)}


def grad_residual_without_w(params, batch):
    """Forgets `X w` in the residual: exact at w = 0 (the tutorials' start), wrong elsewhere."""
    X, y = (np.asarray(a, np.float64) for a in batch)
    r = np.asarray(params["b"], np.float64) - y
    return {"w": 2.0 * X.T @ r / len(r), "b": 2.0 * r.mean()}


class Mutant(NamedTuple):
    analytic: Callable
    failing_leaves: set


MUTANTS = {
    "missing_factor_2": Mutant(grad_missing_factor_2, {"w", "b"}),
    "sign_error": Mutant(grad_sign_error, {"w", "b"}),
    "sum_not_mean": Mutant(grad_sum_not_mean, {"w", "b"}),
    "forgot_intercept": Mutant(grad_forgot_intercept, {"b"}),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", MUTANTS)
def test_mutant_analytic_gradient_is_flagged(name, dtype):
    mutant, prob = MUTANTS[name], PROBLEMS["linear_synthetic"]
    report = check_grad(
        prob.cost, cast(prob.params(), dtype), cast(prob.batch(), dtype), analytic=mutant.analytic
    )
    assert not report.ok
    assert not report
    assert {r.pair for r in report.failed} == ANALYTIC_PAIRS
    assert {r.leaf for r in report.failed} == mutant.failing_leaves
    assert all(r.ok for r in report.rows if not r.pair.startswith("analytic"))
    leaves = sorted(mutant.failing_leaves)
    assert report.verdict.startswith(f"FAIL: analytic vs reverse on {leaves} (max rel err ")
    assert report.verdict.endswith("common to every failure: analytic")
    assert str(report).splitlines()[-1] == report.verdict


def test_mutant_wrong_only_away_from_start_needs_many_points():
    X, y = PROBLEMS["linear_synthetic"].batch()
    start = gdjax.init_linear(X.shape[1])
    single = check_grad(LINEAR_MSE, start, (X, y), analytic=grad_residual_without_w)
    assert single.ok, str(single)  # the bug is invisible at w = 0
    many = check_grad(LINEAR_MSE, start, (X, y), analytic=grad_residual_without_w, num_points=8, key=1)
    assert not many.ok
    assert {r.pair for r in many.failed} == ANALYTIC_PAIRS
    assert all(r.point != 0 for r in many.failed)
    assert all(0 < r.point < 8 for r in many.rows if not r.ok)


def jnp_quadratic_grad(params, batch=None):
    return jax.tree.map(lambda x: 2.0 * x, params)


def jnp_quadratic_grad_wrong_off_origin(params, batch=None):
    return jax.tree.map(lambda x: 2.0 * x + x**2, params)  # right only at 0


@pytest.mark.parametrize(
    "analytic, ok",
    [(jnp_quadratic_grad, True), (jnp_quadratic_grad_wrong_off_origin, False)],
    ids=["true", "mutant"],
)
def test_traceable_analytic_is_vmapped_over_points(analytic, ok):
    params = {"a": jnp.zeros(3), "b": (jnp.zeros(()), jnp.zeros((2, 2)))}
    report = check_grad(costs.quadratic, params, analytic=analytic, num_points=5)
    assert report.ok == ok, str(report)


# ---------------------------------------------------------------- broken custom rules
@jax.custom_vjp
def _sum_sq_vjp_half(x):
    return jnp.sum(x**2)


_sum_sq_vjp_half.defvjp(lambda x: (_sum_sq_vjp_half(x), x), lambda x, g: (g * x,))  # should be 2 g x


@jax.custom_vjp
def _sum_sq_vjp_sign(x):
    return jnp.sum(x**2)


_sum_sq_vjp_sign.defvjp(lambda x: (_sum_sq_vjp_sign(x), x), lambda x, g: (-2.0 * g * x,))


@jax.custom_jvp
def _sum_sq_jvp_wrong(x):
    return jnp.sum(x**2)


_sum_sq_jvp_wrong.defjvp(lambda p, t: (_sum_sq_jvp_wrong(p[0]), jnp.sum(3.0 * p[0] * t[0])))  # 2, not 3


class Broken(NamedTuple):
    rule: Callable  # applied to params["a"]; params["c"] enters linearly and stays correct
    failing_pairs: set
    skipped: tuple  # methods check_grad cannot run
    oracle_modes: list  # the modes jax.test_util.check_grads can run on it


BROKEN = {
    "custom_vjp_bwd_half": Broken(_sum_sq_vjp_half, {"reverse vs fd"}, ("forward",), ["rev"]),
    "custom_vjp_bwd_sign": Broken(_sum_sq_vjp_sign, {"reverse vs fd"}, ("forward",), ["rev"]),
    # Reverse mode transposes the (wrong) jvp rule, so the two autodiff modes agree with each other.
    "custom_jvp_wrong": Broken(_sum_sq_jvp_wrong, {"reverse vs fd", "forward vs fd"}, (), ["fwd", "rev"]),
}


@pytest.mark.parametrize("name", BROKEN)
def test_broken_custom_rule_is_flagged(name):
    broken = BROKEN[name]

    def cost(params, batch):
        return broken.rule(params["a"]) + jnp.sum(params["c"])

    params = {"a": jnp.array([1.0, -2.0, 0.5]), "c": jnp.ones(2)}
    report = check_grad(cost, params)
    assert not report.ok
    assert {r.pair for r in report.failed} == broken.failing_pairs
    assert {r.leaf for r in report.failed} == {"a"}
    assert tuple(m for m, _ in report.skipped) == broken.skipped
    assert all(m not in report.methods for m in broken.skipped)
    with pytest.raises(AssertionError):  # the independent oracle agrees it is broken
        check_grads(jax.jit(lambda p: cost(p, None)), (params,), order=1, modes=broken.oracle_modes)


# A missing factor 2 is a relative error of exactly 0.5 on every component.
OVERRIDES = [(dict(rtol=0.6), True), (dict(rtol=0.4), False), (dict(atol=1e6), True)]


@pytest.mark.parametrize("kwargs, ok", OVERRIDES, ids=lambda v: str(v))
def test_rtol_and_atol_overrides_apply_to_every_pair(kwargs, ok):
    prob = PROBLEMS["linear_synthetic"]
    report = check_grad(prob.cost, prob.params(), prob.batch(), analytic=grad_missing_factor_2, **kwargs)
    assert report.ok == ok, str(report)
    np.testing.assert_allclose(
        [r.max_rel_err for r in report.rows if r.pair in ANALYTIC_PAIRS], 0.5, rtol=1e-6
    )


# ------------------------------------------------------------------------ precision
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize(
    "analytic, ok", [(reference.mse_grad, True), (grad_sign_error, False)], ids=["true", "sign"]
)
def test_half_precision(dtype, analytic, ok):
    prob = PROBLEMS["linear_synthetic"]
    report = check_grad(prob.cost, cast(prob.params(), dtype), cast(prob.batch(), dtype), analytic=analytic)
    assert report.ok == ok, str(report)
    assert {r.dtype for r in report.rows if "fd" not in r.pair} == {np.dtype(dtype).name}


def test_tolerance_table_is_keyed_by_dtype_and_loosens_with_precision():
    order = [np.float64, np.float32, jnp.float16, jnp.bfloat16]
    rtols = [TOLERANCES[np.dtype(d)].rtol for d in order]
    assert rtols == sorted(rtols)
    # Every bug check_grad exists to catch is an O(1) relative error: a missing factor 2 is 0.5.
    assert max(rtols) < 0.5


def test_mixed_precision_rows_use_the_less_precise_dtype():
    params = {"w": jnp.array([0.5, -1.0, 2.0], jnp.float32), "b": jnp.array(0.3)}
    report = check_grad(LINEAR_MSE, params, _synthetic(), analytic=reference.mse_grad)
    assert report.ok, str(report)
    dtypes = {(r.leaf, r.pair): r.dtype for r in report.rows}
    assert dtypes["w", "reverse vs forward"] == "float32"
    assert dtypes["b", "reverse vs forward"] == "float64"
    assert dtypes["w", "analytic vs fd"] == "float64"


# ------------------------------------------------------------------ coordinate sampling
def test_max_coordinates_subsamples_big_leaves_deterministically():
    X, y = _synthetic(n=40, d=60)
    params = {"w": jnp.linspace(-1.0, 1.0, 60), "b": jnp.array(0.5)}
    run = lambda analytic, key: check_grad(
        LINEAR_MSE, params, (X, y), analytic=analytic, max_coordinates=8, key=key, num_points=2
    )
    first, again, other = run(reference.mse_grad, 7), run(reference.mse_grad, 7), run(reference.mse_grad, 8)
    assert first.ok, str(first)
    assert (first.num_coordinates, first.total_coordinates) == (8 + 1, 61)
    assert first.rows == again.rows
    assert first.rows != other.rows
    assert not run(grad_missing_factor_2, 7).ok


# ------------------------------------------------------------------------------ the report
def test_report_is_an_immutable_table_ending_in_its_verdict():
    prob = PROBLEMS["linear_house_prices"]
    report = check_grad(prob.cost, prob.params(), prob.batch(), analytic=grad_forgot_intercept)
    with pytest.raises(AttributeError):
        report.ok = True
    lines = str(report).splitlines()
    header = next(line for line in lines if line.startswith("leaf"))
    for column in ("leaf", "pair", "max abs err", "max rel err", "err/tol", "status"):
        assert column in header
    body = [line for line in lines if line.split()[:1] in (["w"], ["b"])]
    assert len(body) == len(report.rows) == 2 * len(PAIRS)
    assert {len(line) for line in body} == {len(header)}  # fixed width
    assert sum(line.endswith("FAIL") for line in body) == len(report.failed) == 3
    assert lines[-1] == report.verdict
    assert report.verdict.startswith("FAIL: analytic vs reverse on ['b'] (max rel err 1)")
    records = report.records()
    assert [r["pair"] for r in records] == [r.pair for r in report.rows]
    assert set(records[0]) == set(report.rows[0]._fields)
    assert all(isinstance(r["max_rel_err"], float) for r in records)


def test_passing_report_verdict():
    prob = PROBLEMS["linear_house_prices"]
    report = check_grad(prob.cost, prob.params(), prob.batch())
    assert report and report.ok and report.failed == ()
    assert str(report).splitlines()[-1].startswith("PASS: 6 comparisons of reverse, forward, fd")


# ---------------------------------------------------------------------------- bad input
def _house(X=None, y=None):
    X0, y0 = gdjax.data.house_prices()
    return (X0 if X is None else X), (y0 if y is None else y)


def _with(arr, index, value):
    arr = np.array(arr, np.float64)
    arr[index] = value
    return arr


def _wrong_structure(params, batch):
    return (params["w"], params["b"])


def _wrong_shape(params, batch):
    return {"w": np.zeros(2), "b": np.float64(0.0)}


def _vector_cost(params, batch):
    return params["w"] * 2.0


def _while_loop_cost(params, batch):
    # jax.grad cannot differentiate a while_loop with a traced trip count.
    return jax.lax.while_loop(
        lambda c: c[0] < params["b"], lambda c: (c[0] + 1.0, c[1] * 2.0), (0.0, params["b"])
    )[1]


START = {"w": np.zeros(1), "b": np.float64(0.5)}

# (keyword arguments of check_grad, a regex the ValueError must match)
BAD_INPUTS = {
    "nan_in_X": (
        dict(data=_house(X=_with(_house()[0], (2, 0), np.nan))),
        r"data\[0\] contains a non-finite",
    ),
    "inf_in_y": (dict(data=_house(y=_with(_house()[1], 4, np.inf))), r"data\[1\] contains a non-finite"),
    "X_y_lengths_differ": (
        dict(data=_house(y=_house()[1][:5])),
        r"disagree on the number of examples.*\(5,\)",
    ),
    "y_column_vector": (dict(data=_house(y=_house()[1][:, None])), r"targets have shape \(7, 1\)"),
    "empty_data": (dict(data=(np.zeros((0, 1)), np.zeros(0))), r"empty"),
    "params_missing_b": (dict(params={"w": np.zeros(1)}), r"cost\(params, data\) failed.*'w': \(1,\)"),
    "params_wrong_shape": (dict(params={"w": np.zeros(3), "b": np.float64(0.0)}), r"shapes .*'w': \(3,\)"),
    "integer_params": (dict(params={"w": np.zeros(1, int), "b": np.int64(0)}), r"must be floating point"),
    "nan_params": (
        dict(params={"w": np.array([np.nan]), "b": np.float64(0.0)}),
        r"params\['w'\] contains non-finite",
    ),
    "vector_cost": (dict(cost=_vector_cost), r"cost must return a scalar"),
    "cost_not_callable": (dict(cost="mse"), r"cost must be callable"),
    "analytic_wrong_structure": (
        dict(analytic=_wrong_structure),
        r"analytic\(params, data\) returned a pytree",
    ),
    "analytic_wrong_shape": (dict(analytic=_wrong_shape), r"analytic gradient for w has shape \(2,\)"),
    "num_points_zero": (dict(num_points=0), r"num_points must be an integer >= 1"),
    "negative_scale": (dict(num_points=3, scale=-1.0), r"scale must be >= 0"),
    "max_coordinates_zero": (dict(max_coordinates=0), r"max_coordinates must be an integer >= 1"),
    "negative_rtol": (dict(rtol=-1e-3), r"rtol must be a finite number > 0"),
    "fd_step_too_big": (dict(fd_step=2.0), r"fd_step must be <= 1"),
    "not_reverse_differentiable": (
        dict(cost=_while_loop_cost),
        r"differentiating the cost failed: ValueError: Reverse-mode",
    ),
}


class _CountingCost:
    """A linear MSE cost that counts how often it is called (traced or not)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, params, batch):
        self.calls += 1
        return LINEAR_MSE(params, batch)


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_a_clear_error(name):
    kwargs, match = BAD_INPUTS[name]
    args = dict(cost=LINEAR_MSE, params=START, data=_house()) | kwargs
    with pytest.raises(ValueError, match=match):
        check_grad(**args)


@pytest.mark.parametrize(
    "name", ["nan_in_X", "inf_in_y", "X_y_lengths_differ", "empty_data", "integer_params"]
)
def test_bad_data_is_rejected_before_the_cost_is_traced(name):
    kwargs, match = BAD_INPUTS[name]
    cost = _CountingCost()
    with pytest.raises(ValueError, match=match):
        check_grad(**(dict(params=START, data=_house()) | kwargs | dict(cost=cost)))
    assert cost.calls == 0


def test_float64_disabled_still_checks_in_float64_and_restores_the_flag():
    """Issue 11: no global x64 needed; the float64 reference runs in a scoped context."""
    with jax.enable_x64(False):
        report = check_grad(costs.rosenbrock, jnp.array([-1.2, 1.0], jnp.float32), num_directions=2)
        assert report.ok, str(report)
        assert {r.dtype for r in report.rows if r.along == "directions"} == {"float64"}
        assert {r.dtype for r in report.rows if r.along == "coordinates"} == {"float32"}
        assert not jax.config.jax_enable_x64
        assert jnp.ones(1).dtype == jnp.float32
    assert jax.config.jax_enable_x64


# ------------------------------------------------------------------------- at model scale
# A tanh MLP just past DIRECTIONS_ABOVE (2,074 parameters), so the automatic default switches to
# directional checks; the 17k-parameter MLP of the issue is measured in gdjax/gradcheck.py.
MLP_SIZES = (32, 48, 10)


def deep_mlp_cost(params, batch):
    """Softmax cross-entropy of a tanh MLP; params: a list of (W, b) layers."""
    X, y = batch
    h = X
    for W, b in params[:-1]:
        h = jnp.tanh(h @ W + b[None, :])
    W, b = params[-1]
    logits = h @ W + b[None, :]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0])


def deep_mlp_problem(dtype):
    r = np.random.default_rng(0)
    params = [
        (jnp.asarray(r.normal(size=(a, b)) / np.sqrt(a), dtype), jnp.asarray(0.1 * r.normal(size=b), dtype))
        for a, b in zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=True)
    ]
    X = jnp.asarray(r.normal(size=(256, MLP_SIZES[0])), dtype)
    return params, (X, jnp.asarray(r.integers(0, MLP_SIZES[-1], 256)))


def scale_one_weight(grads, leaf, index, factor):
    """`grads` with one coordinate of layer `leaf`'s weight matrix multiplied by `factor`."""
    grads = list(grads)
    W, b = grads[leaf]
    grads[leaf] = (W * jnp.ones_like(W).at[index].set(factor), b)
    return grads


def vjp_mutant(leaf, index, factor):
    """The MLP cost with a custom_vjp identity on layer `leaf`'s weights whose backward pass scales
    one weight's gradient by `factor`: a bug in a hand-written rule, one coordinate wide."""

    @jax.custom_vjp
    def tap(W):
        return W

    tap.defvjp(lambda W: (W, None), lambda _, g: (g * jnp.ones_like(g).at[index].set(factor),))

    def cost(params, batch):
        params = list(params)
        W, b = params[leaf]
        params[leaf] = (tap(W), b)
        return deep_mlp_cost(params, batch)

    return cost


def analytic_mutant(leaf, index, factor):
    return lambda params, batch: scale_one_weight(jax.grad(deep_mlp_cost)(params, batch), leaf, index, factor)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_at_scale_true_gradient_passes_with_directions(dtype):
    params, batch = deep_mlp_problem(dtype)
    total = sum(x.size for x in jax.tree.leaves(params))
    assert total > DIRECTIONS_ABOVE
    report = check_grad(deep_mlp_cost, params, batch, analytic=jax.grad(deep_mlp_cost))
    assert report.ok, str(report)
    assert report.num_directions == DEFAULT_DIRECTIONS
    assert report.num_coordinates == 4 * DEFAULT_COORDINATES  # every leaf is sampled
    assert report.total_coordinates == total
    along = {(r.leaf, r.pair, r.along) for r in report.rows}
    for leaf in ("0/0", "0/1", "1/0", "1/1"):
        assert {(leaf, f"{a} vs {b}", "directions") for a, b in PAIRS} <= along
        assert {(leaf, f"{a} vs {b}", "coordinates") for a, b in PAIRS} <= along
        assert ((leaf, "reverse vs reverse64", "coordinates") in along) == (dtype == np.float32)
    assert {r.dtype for r in report.rows if r.along == "directions"} == {"float64"}
    table = str(report)
    assert "along" in table.splitlines()[1] and table.splitlines()[-1] == report.verdict
    assert report.verdict.endswith(f"and {DEFAULT_DIRECTIONS} direction(s) per leaf")


def test_directions_are_deterministic_given_the_key():
    params, batch = deep_mlp_problem(np.float64)
    run = lambda key: check_grad(deep_mlp_cost, params, batch, key=key, num_directions=4)
    first, again, other = run(3), run(3), run(4)
    assert first.rows == again.rows
    assert first.rows != other.rows


def test_small_params_keep_every_coordinate_and_the_original_table():
    prob = PROBLEMS["linear_house_prices"]
    report = check_grad(prob.cost, prob.params(), prob.batch())
    assert report.num_directions == 0 and {r.along for r in report.rows} == {"coordinates"}
    assert "along" not in str(report)
    forced = check_grad(prob.cost, prob.params(), prob.batch(), num_directions=3)
    assert forced.ok, str(forced)
    assert forced.num_directions == 3 and "directions" in {r.along for r in forced.rows}


# One weight of the hidden layer (48 x 32 = 1,536 weights) with a typical gradient; its gradient
# is off by 5%. The sampled coordinates (8 of 1,536) almost never include it: the directions must
# catch it, at every key. The module docstring gives the catch rate measured over 50 random weights.
WEIGHT = (5, 17)
MUTANT_KEYS = [0, 1, 2]


# The keys draw different coordinates and directions of the same shapes: one test per dtype loops
# over them, so that the mutant's check compiles once and serves every key.
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_five_percent_error_in_one_weight_of_a_custom_vjp_is_caught(dtype):
    params, batch = deep_mlp_problem(dtype)
    mutant = vjp_mutant(0, WEIGHT, 1.05)
    for key in MUTANT_KEYS:
        report = check_grad(mutant, params, batch, key=key)
        assert not report.ok, (key, str(report))
        failed = {(r.leaf, r.pair, r.along) for r in report.failed}
        assert failed == {("0/0", "reverse vs fd", "directions")}, key
        assert report.skipped and report.skipped[0][0] == "forward", key  # forward mode through custom_vjp
        assert report.verdict.startswith("FAIL: reverse vs fd along directions on ['0/0'] (max rel err"), key


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_five_percent_error_in_one_weight_of_an_analytic_gradient_is_caught(dtype):
    params, batch = deep_mlp_problem(dtype)
    mutant = analytic_mutant(0, WEIGHT, 1.05)
    for key in MUTANT_KEYS:
        report = check_grad(deep_mlp_cost, params, batch, analytic=mutant, key=key)
        assert not report.ok, (key, str(report))
        assert {r.leaf for r in report.failed} == {"0/0"}, key
        assert {r.pair for r in report.failed if r.along == "directions"} == ANALYTIC_PAIRS, key
        assert report.verdict.endswith("common to every failure: analytic"), key


def test_the_true_weight_gradient_is_typical():
    """The mutants' weight is not an easy case: its gradient is near the median of its layer's."""
    params, batch = deep_mlp_problem(np.float64)
    g = np.abs(np.asarray(jax.grad(deep_mlp_cost)(params, batch)[0][0]))
    assert 0.25 < np.mean(g < g[WEIGHT]) < 0.75


# Run in a fresh interpreter with float64 off, as a float32 program would: the check must pass on
# the true gradient, catch the one-weight mutant, and leave the flag as it found it.
X64_OFF_SCRIPT = """
import jax, jax.numpy as jnp, numpy as np
import test_gradcheck as t
from gdjax.gradcheck import check_grad
assert not jax.config.jax_enable_x64
params, batch = t.deep_mlp_problem(np.float32)
ok = check_grad(t.deep_mlp_cost, params, batch)
bad = check_grad(t.vjp_mutant(0, t.WEIGHT, 1.05), params, batch)
small = check_grad(t.costs.rosenbrock, np.array([-1.2, 1.0]))
assert not jax.config.jax_enable_x64 and jnp.ones(1).dtype == jnp.float32
print(ok.ok, bad.ok, small.ok, {r.dtype for r in small.rows if r.pair == "reverse vs forward"})
"""


def test_float32_program_without_x64_is_checked_in_float64(tmp_path):
    import os
    import pathlib
    import subprocess
    import sys

    env = dict(
        os.environ,
        JAX_ENABLE_X64="0",
        PYTHONPATH=os.pathsep.join([str(pathlib.Path(__file__).parent), *sys.path]),
    )
    proc = subprocess.run(
        [sys.executable, "-c", X64_OFF_SCRIPT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == "True False True {'float32'}", proc.stdout


# -------------------------------------------------------------- identically zero gradients
def floor_cost(params, batch=None):
    return jnp.sum(jnp.floor(3.0 * params["w"]) ** 2) + jnp.sum(params["b"] ** 2)


def int_cast_cost(params, batch=None):
    return jnp.sum((10.0 * params["w"]).astype(jnp.int32).astype(params["w"].dtype) ** 2) + jnp.sum(
        params["b"] ** 2
    )


def unused_leaf_cost(params, batch=None):
    return jnp.sum(params["b"] ** 2)


ZERO_GRADIENT = {"floor": floor_cost, "int_cast": int_cast_cost, "unused_leaf": unused_leaf_cost}


@pytest.mark.parametrize("num_directions", [0, 4], ids=["coordinates", "directions"])
@pytest.mark.parametrize("name", ZERO_GRADIENT)
def test_identically_zero_gradient_is_not_a_pass(name, num_directions):
    """Issue 12: zero reverse, zero forward and zero differences agree, yet nothing can move `w`."""
    params = {"w": jnp.array([0.43, -1.37, 2.21]), "b": jnp.array([0.5, 1.0])}  # off the jumps
    report = check_grad(ZERO_GRADIENT[name], params, num_points=3, num_directions=num_directions)
    assert all(r.ok for r in report.rows), str(report)  # every comparison agrees...
    assert not report.ok and not report  # ...but the report fails
    assert report.zero_leaves == ("w",)
    assert report.verdict.startswith("FAIL: the gradient is identically zero on ['w'] at every checked point")
    assert str(report).splitlines()[-1] == report.verdict


def test_zero_gradient_while_the_cost_varies_fails_reverse_vs_fd():
    def cost(params, batch=None):
        return jnp.sum(jax.lax.stop_gradient(params["w"]) ** 2) + jnp.sum(params["b"] ** 2)

    params = {"w": jnp.array([0.4, -1.3, 2.2]), "b": jnp.array([0.5, 1.0])}
    report = check_grad(cost, params)
    assert not report.ok and report.zero_leaves == ()
    assert {(r.leaf, r.pair) for r in report.failed} == {("w", "reverse vs fd"), ("w", "forward vs fd")}


@pytest.mark.parametrize("name", ["quadratic", "rosenbrock"])
def test_exact_stationary_point_is_not_a_zero_gradient(name):
    """At a minimiser the gradient is exactly zero too, but the cost curves: a PASS."""
    cost, params, batch = STATIONARY[name]
    report = check_grad(cost, params(), batch(), num_directions=2)
    assert report.ok and report.zero_leaves == (), str(report)


# ----------------------------------------------------------------------- bad input at scale
def _failing_cost(params, batch):
    raise RuntimeError("boom")


def _vector_mlp_cost(params, batch):
    return jnp.tanh(batch[0] @ params[0][0]).sum(axis=1)


AT_SCALE_BAD_INPUTS = {
    "vector_cost": (dict(cost=_vector_mlp_cost), r"cost must return a scalar"),
    "failing_cost": (dict(cost=_failing_cost), r"cost\(params, data\) failed .*RuntimeError: boom"),
    "negative_directions": (dict(num_directions=-1), r"num_directions must be an integer >= 1"),
    "too_many_directions": (dict(num_directions=10**6), r"pass a smaller num_directions"),
}


@pytest.mark.parametrize("name", AT_SCALE_BAD_INPUTS)
def test_bad_input_at_scale_raises_a_clear_error(name):
    kwargs, match = AT_SCALE_BAD_INPUTS[name]
    params, batch = deep_mlp_problem(np.float32)
    with pytest.raises(ValueError, match=match):
        check_grad(**(dict(cost=deep_mlp_cost, params=params, data=batch) | kwargs))


# ------------------------------------------------- hypergradients, kinks and wrong derivatives
def momentum_hyper_problem():
    """The final loss of 60 momentum steps on an ill-conditioned least-squares problem as a function
    of the learning rate and the momentum (gdjax issue 20): the learning rate is 1.5e-5, and the
    classic central difference with step 6e-6 was 92% off (`FAIL: reverse vs fd on ['lr']`)."""
    X, y = gdjax.data.synthetic(1, 50, 3, condition_number=1e4)[:2]
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    params0 = gdjax.init_linear(3)
    L = 2.0 / reference.curvature(X).max_stable_lr

    def final_loss(h, data):
        rule = gdjax.rules.momentum(h["lr"], momentum=h["m"])
        return gdjax.run(cost, rule, params0, data, num_steps=60).loss_history[-1]

    return final_loss, L, (X, y)


@pytest.mark.parametrize("lr_times_l, momentum", [(0.3, 0.9), (1.0, 0.99)])
def test_momentum_hypergradient_passes(lr_times_l, momentum):
    final_loss, L, data = momentum_hyper_problem()
    h = {"lr": jnp.asarray(lr_times_l / L), "m": jnp.asarray(momentum)}
    report = check_grad(final_loss, h, data)
    assert report.status == "pass", str(report)
    assert report.kinks == () and report.unconverged == ()
    # Richardson on the chosen step: the differences agree with autodiff to ~1e-11, not to 1e-1.
    assert max(r.max_rel_err for r in report.rows if "fd" in r.pair) < 1e-8, str(report)
    assert report.verdict.startswith("PASS")


def test_the_same_hypergradient_checks_again_at_another_point():
    """A second call of one compiled check on a function that calls `gdjax.run` failed with
    "Execution supplied 2 arguments but compiled program expected 7": the run cached arrays made
    under the first trace (gdjax.loop._schedule_arrays)."""
    final_loss, L, data = momentum_hyper_problem()
    for lr_times_l in (0.5, 0.7):
        h = {"lr": jnp.asarray(lr_times_l / L), "m": jnp.asarray(0.5)}
        assert check_grad(final_loss, h, data).status == "pass"


@jax.custom_jvp
def _sum_sq_jvp_10pct(x):
    return jnp.sum(x**2)


_sum_sq_jvp_10pct.defjvp(lambda p, t: (_sum_sq_jvp_10pct(p[0]), 1.1 * jnp.sum(2.0 * p[0] * t[0])))


@jax.custom_vjp
def _sum_sq_vjp_10pct(x):
    return jnp.sum(x**2)


_sum_sq_vjp_10pct.defvjp(lambda x: (_sum_sq_vjp_10pct(x), x), lambda x, g: (1.1 * 2.0 * g * x,))


class Kinked(NamedTuple):
    fn: Callable  # applied to params["w"]; params["c"] enters smoothly
    w: Any
    kinks: list  # the coordinates (or directions) named
    num_directions: int | None = None


KINKS = {
    "relu_at_0": Kinked(lambda w: jnp.sum(jax.nn.relu(w)), [0.0, 1.0, -2.0], ["w[0]"]),
    "abs_at_0": Kinked(lambda w: jnp.sum(jnp.abs(w)), [1.0, 0.0, -2.0], ["w[1]"]),
    "max_tie": Kinked(lambda w: jnp.max(w), [1.0, 1.0, -2.0], ["w[0]", "w[1]"]),
    # Along random directions (and at its coordinates): every direction through ReLUs at 0 is a kink.
    "relu_leaf_along_directions": Kinked(
        lambda w: jnp.sum(jax.nn.relu(w)),
        np.zeros(6),
        [f"w[{i}]" for i in range(6)] + [f"w along direction {i}" for i in range(3)],
        num_directions=3,
    ),
}


@pytest.mark.parametrize("name", KINKS)
def test_a_kink_is_a_warning_naming_the_coordinates(name):
    case = KINKS[name]

    def cost(params, batch):
        return case.fn(params["w"]) + jnp.sum(params["c"] ** 2)

    params = {"w": jnp.asarray(case.w, jnp.float64), "c": jnp.ones(2)}
    report = check_grad(cost, params, num_directions=case.num_directions)
    assert report.ok and report.status == "warn", str(report)
    assert report.failed == () and report.unconverged == ()
    assert sorted({k.where for k in report.kinks}) == sorted(case.kinks)
    assert report.verdict.startswith("WARN: not differentiable at this point: one-sided differences")
    assert str(case.kinks[:6]) in report.verdict
    assert "fd" not in report.verdict.split("; ")[-1]  # nothing blames the differences
    strict = check_grad(cost, params, num_directions=case.num_directions, kinks="fail")
    assert not strict.ok and strict.status == "fail"
    assert strict.verdict.startswith("FAIL: not differentiable at this point")


# Smooth costs near a kink, with large higher derivatives, or at an exact stationary point: no
# kink, no unconverged difference, no failure.
SMOOTH = {
    "relu_just_off_the_kink": (lambda w: jnp.sum(jax.nn.relu(w)), [1e-3, -1e-3]),
    "steep_exponential": (lambda w: jnp.sum(jnp.exp(30.0 * w)), [0.3, -0.2]),
    "fast_sine": (lambda w: jnp.sum(jnp.sin(300.0 * w)), [0.1, 0.7]),
    "stationary_quartic": (lambda w: jnp.sum(w**4), [0.0, 0.0]),
    "small_scale": (lambda w: jnp.sum((1e4 * w) ** 2), [1e-5, -3e-6]),
}


@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_costs_have_no_kinks(name):
    fn, w = SMOOTH[name]
    report = check_grad(lambda p, batch: fn(p), jnp.asarray(w, jnp.float64), num_points=3, scale=1e-2)
    assert report.status == "pass", str(report)


BROKEN_10PCT = {
    # Reverse mode transposes the jvp rule: both modes are wrong, and agree with each other.
    "custom_jvp": (_sum_sq_jvp_10pct, {"reverse vs fd", "forward vs fd"}, "reverse mode and forward mode"),
    "custom_vjp": (_sum_sq_vjp_10pct, {"reverse vs fd"}, "reverse mode"),
}


@pytest.mark.parametrize("name", BROKEN_10PCT)
def test_a_wrong_derivative_fails_naming_the_mode(name):
    rule, pairs, suspect = BROKEN_10PCT[name]

    def cost(params, batch):
        return rule(params["a"]) + jnp.sum(params["c"])

    report = check_grad(cost, {"a": jnp.array([1.0, -2.0, 0.5]), "c": jnp.ones(2)})
    assert not report.ok and report.status == "fail", str(report)
    assert {r.pair for r in report.failed} == pairs and report.kinks == ()
    assert f"the suspect is {suspect}:" in report.verdict
    assert "common to every failure: fd" not in report.verdict


def test_unconverged_differences_warn_instead_of_blaming_autodiff():
    """Noise in the cost's value (an inner solver's tolerance, say; autodiff does not see it here)
    that moves every difference: the differences at different steps disagree, so they judge nothing."""

    def cost(w, batch):
        return jnp.sum(w**2) + jax.lax.stop_gradient(1e-6 * jnp.sum(jnp.sin(1e13 * w)))

    report = check_grad(cost, jnp.array([0.5, -1.0]))
    assert report.ok and report.status == "warn", str(report)
    assert report.verdict.startswith("WARN: finite differences are not converged at this point on")
    assert {u.where for u in report.unconverged} <= {"<root>[0]", "<root>[1]"} and report.unconverged


def test_one_percent_error_in_one_weight_is_still_caught():
    params, batch = deep_mlp_problem(np.float64)
    report = check_grad(vjp_mutant(0, WEIGHT, 1.01), params, batch, key=0)
    assert not report.ok, str(report)
    assert {(r.leaf, r.pair) for r in report.failed} == {("0/0", "reverse vs fd")}
    assert report.kinks == () and report.unconverged == ()
    assert "the suspect is reverse mode" in report.verdict


def test_a_check_in_chunks_judges_as_the_whole_batch(monkeypatch):
    """The batched evaluations run in chunks when the whole batch would be too big (the digits
    softmax's 650 coordinates took 11 GB vmapped whole). Chunks of a few items (with remainders)
    give the same rows and verdict as one vmapped batch: a mutant analytic gradient along
    coordinates and directions, at three points."""
    prob = PROBLEMS["mlp_nested_pytree"]
    batch = prob.batch()
    mutant = lambda params, batch: jax.tree.map(lambda g: 1.02 * g, jax.grad(mlp_cost)(params, batch))
    per_ladder = (
        3
        * (2 * gdjax.gradcheck.FD_RUNGS + 1)
        * gdjax.gradcheck._footprint(lambda v: mlp_cost(v, batch), prob.params())
    )

    chunks = []
    lax_map = jax.lax.map
    monkeypatch.setattr(
        jax.lax,
        "map",
        lambda f, xs, batch_size: chunks.append(batch_size) or lax_map(f, xs, batch_size=batch_size),
    )

    def check(items):  # a new cost each time: the compiled programs are cached per cost
        monkeypatch.setattr(gdjax.gradcheck, "_CHUNK_ELEMENTS", items * per_ladder)
        chunks.clear()
        cost = lambda params, batch: mlp_cost(params, batch)  # noqa: E731
        return check_grad(cost, prob.params(), batch, analytic=mutant, num_points=3, num_directions=2)

    before = check(10**6)
    assert chunks == []  # one vmapped batch
    after = check(5)
    assert chunks and min(chunks) <= 5  # the step ladders, a few coordinates at a time
    assert after.verdict == before.verdict and not after.ok
    # passing rows' worst components are round-off, which chunking may move; failures are not
    assert [(r.leaf, r.pair, r.along, r.ok) for r in after.rows] == [
        (r.leaf, r.pair, r.along, r.ok) for r in before.rows
    ]
    assert [(r.point, r.index) for r in after.failed] == [(r.point, r.index) for r in before.failed]
    np.testing.assert_allclose(
        [r.max_abs_err for r in after.failed], [r.max_abs_err for r in before.failed], rtol=1e-6
    )


def test_given_points_are_checked_after_params():
    prob = PROBLEMS["linear_house_prices"]
    params = prob.params()
    stack = jax.tree.map(lambda x: np.stack([np.asarray(x) + 1.0, np.asarray(x) - 2.0]), params)
    report = check_grad(prob.cost, params, prob.batch(), points=stack, num_points=2)
    assert report.ok and report.num_points == 4, str(report)
    with pytest.raises(ValueError, match="points must stack"):
        check_grad(prob.cost, params, prob.batch(), points=params)


# ------------------------------------------------------------- the study checks where runs start
RELU_MLP = """\
import jax
import jax.numpy as jnp

def cost(params, data):
    X, y = data
    hidden = jax.nn.relu(X @ params["W1"] + params["b1"][None, :])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)

def init(data):
    X, _ = data  # the hidden layer starts at zero: every ReLU sits on its kink
    W1, b1 = jnp.zeros((X.shape[1], 4)), jnp.zeros(4)
    return {"W1": W1, "b1": b1, "w2": 0.5 * jnp.ones(4), "b2": jnp.zeros(())}
"""

RELU_STUDY = """\
name = "relu_zero_init"
precision = "float64"
seeds = [0, 1, 2]

[data]
source = "csv"
path = "points.csv"
target = "y"
features = ["x1", "x2"]

[cost]
callable = "relu_mlp.py:cost"
params0 = "relu_mlp.py:init"
init_noise = 0.3

[run]
num_steps = 20

[[optimizers]]
rule = "gd"
grid.learning_rate = 0.1

[outputs]
plots = []
"""


@pytest.fixture
def relu_study(tmp_path):
    r = np.random.default_rng(0)
    X = r.normal(size=(30, 2))
    y = np.maximum(X[:, 0], 0.0) - 0.5 * X[:, 1]
    lines = ["x1,x2,y"] + [f"{a:.6f},{b:.6f},{c:.6f}" for (a, b), c in zip(X, y, strict=True)]
    (tmp_path / "points.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "relu_mlp.py").write_text(RELU_MLP)
    (tmp_path / "study.toml").write_text(RELU_STUDY)
    return tmp_path


@pytest.mark.slow
def test_a_study_at_a_kink_warns_and_runs(relu_study):
    from helpers import run_cli

    out = relu_study / "run"
    code, _, err = run_cli("run", relu_study / "study.toml", "--out", out, "-q", "--no-plots")
    assert code == 0, err
    text = (out / "gradcheck.txt").read_text()
    assert "WARN: not differentiable at this point" in text and "FAIL" not in text
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_the_study_checks_every_seed_start_and_kinks_only_warn(relu_study):
    from gdjax.study import config as config_lib
    from gdjax.study import experiment, preflight

    cfg = config_lib.load(relu_study / "study.toml")
    (p,) = experiment.build_problems(cfg)
    (report,) = experiment.check_gradients(cfg, [p]).values()
    # The base point (the kink), the 3 seeds' noised starts, then num_points - 1 = 2 random points.
    assert report.num_points == 1 + 3 + 2
    assert report.ok and report.status == "warn", str(report)
    assert {k.point for k in report.kinks} == {0} and {k.leaf for k in report.kinks} == {"W1", "b1"}
    assert "[gradcheck] enabled = false" not in experiment.gradcheck_text({"relu": report})
    # Exactly the points the lanes start from: the first record of each lane's params history.
    starts = preflight.noised_starts(p, cfg.seeds)
    result = gdjax.sweep(
        p.cost,
        gdjax.rules.sgd,
        gdjax.Starts(p.params0, init_noise=cfg.costs[0].init_noise, stacked=False),
        p.data,
        grid={"learning_rate": [0.1]},
        num_steps=1,
        seeds=list(cfg.seeds),
    )
    assert np.all(np.asarray(result.trace.record_steps)[..., 0] == 0)
    history = jax.tree.leaves(result.trace.params_history)
    for got, want in zip(history, jax.tree.leaves(starts), strict=True):
        np.testing.assert_array_equal(np.asarray(got)[:, 0], want)
    # The study runs the plan it made before the folder existed (plan_sweep, then run_plan): its
    # lanes start from the same noised points, so their first losses are the cost at those points.
    (u,) = experiment.units(cfg)
    plans = preflight.check_sweeps(cfg, [p], [u])
    ran = experiment.run_unit(cfg, u, p, plan=plans[u.key])
    first = np.asarray(ran.trace.loss_history)[:, 0]
    want = [float(p.cost(jax.tree.map(lambda x, i=i: x[i], starts), p.data)) for i in range(len(cfg.seeds))]
    np.testing.assert_allclose(first, want, rtol=1e-12)
    assert len(set(first.tolist())) == len(cfg.seeds)  # each seed its own start


def test_a_study_checks_at_most_max_examples_drawn_with_its_first_seed(relu_study):
    """On big data the step ladder (25 cost evaluations per coordinate, at every point) cost as much
    as the study (n = 1e6, d = 32: 20 s on an idle machine); the study's check uses `[gradcheck]
    max_examples` rows (4096 by default), drawn without replacement with the first seed, and says so."""
    from gdjax.study import config as config_lib
    from gdjax.study import experiment, preflight

    toml = (relu_study / "study.toml").read_text()
    cfg = config_lib.loads(toml + "\n[gradcheck]\nmax_examples = 10\n", base_dir=relu_study)
    (p,) = experiment.build_problems(cfg)
    X, y = preflight.gradcheck_data(cfg, p)
    rows = np.sort(np.random.default_rng(cfg.seeds[0]).choice(30, 10, replace=False))
    np.testing.assert_array_equal(X, np.asarray(p.data[0])[rows])
    np.testing.assert_array_equal(y, np.asarray(p.data[1])[rows])
    reports = experiment.check_gradients(cfg, [p])
    assert reports[p.label].ok, str(reports[p.label])
    text = experiment.gradcheck_text(reports, cfg, [p])
    assert "checked on 10 of the 30 training examples, drawn with seed 0 ([gradcheck] max_examples)" in text
    # at or above n, every example, and no note
    for limit in (30, 4096):
        whole = config_lib.loads(toml + f"\n[gradcheck]\nmax_examples = {limit}\n", base_dir=relu_study)
        assert preflight.gradcheck_data(whole, p) is p.data
        assert "checked on" not in experiment.gradcheck_text(reports, whole, [p])
    with pytest.raises(config_lib.ConfigError, match="max_examples"):
        config_lib.loads(toml + "\n[gradcheck]\nmax_examples = 0\n", base_dir=relu_study)
    # a wrong gradient is still caught on the subset
    wrong = lambda params, data: jax.tree.map(lambda g: 1.01 * g, jax.grad(p.cost)(params, data))  # noqa: E731
    assert not check_grad(p.cost, p.params0, (X, y), analytic=wrong, num_points=2).ok


def test_a_failed_study_check_says_how_to_skip_it():
    from gdjax.study import experiment

    prob = PROBLEMS["linear_house_prices"]
    bad = check_grad(prob.cost, prob.params(), prob.batch(), analytic=grad_forgot_intercept)
    assert "[gradcheck] enabled = false" in str(experiment.GradCheckFailed({"linear": bad}))
    assert "[gradcheck] enabled = false" in experiment.gradcheck_text({"linear": bad})


@pytest.mark.slow
def test_hypergradient_example_learns_what_the_grid_finds():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "hypergradient.py"
    spec = importlib.util.spec_from_file_location("hypergradient_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main()
    assert out["check"].status == "pass"
    assert out["learned_check"].status == "pass", str(out["learned_check"])
    # Hypergradient descent lands within 1% of the grid's best held-out loss, between grid points.
    assert out["learned_loss"] <= 1.01 * out["grid_loss"]
    assert 0.2 < out["learned_l2"] / out["grid_l2"] < 5.0


@pytest.mark.parametrize("host", [False, True], ids=["traceable", "numpy"])
def test_an_analytic_gradient_that_raises_is_named(host):
    X, y = gdjax.data.line()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)

    def analytic(params, data):
        if host:
            np.asarray(params["w"])  # a NumPy function: called on the host, not traced
        raise ZeroDivisionError("division by zero")

    with pytest.raises(
        ValueError, match=r"analytic\(params, data\) raised ZeroDivisionError: division by zero"
    ):
        gdjax.check_grad(cost, gdjax.init_linear(1), (X, y), analytic=analytic)


# --- costs that are not float64 arithmetic however they are called (an outside audit) ------------
_RNG = np.random.default_rng(0)
_X32 = _RNG.normal(size=(50, 3)).astype(np.float32)
_Y32 = _RNG.normal(size=50).astype(np.float32)
_W32 = {"w": np.array([0.3, -0.2, 0.5], np.float32)}


def _scaled_vjp(factor):
    @jax.custom_vjp
    def ident(w):
        return w

    ident.defvjp(lambda w: (w, None), lambda _, g: (g * factor,))
    return ident


def test_a_cost_that_casts_to_float32_is_differenced_on_float32_steps():
    """A float32 program written with its own casts computes in float32 even from float64 params:
    float64's smallest steps read its rounding, so a 50% wrong gradient passed as "not converged"
    and a correct one failed. Its differences are now taken on float32's steps and judged so."""

    def with_rule(factor):
        rule = _scaled_vjp(factor)

        def cost(p, d):
            X, y = d
            w = rule(p["w"]).astype(jnp.float32)
            return jnp.mean((jnp.asarray(X, jnp.float32) @ w - y) ** 2)

        return cost

    wrong = check_grad(with_rule(1.5), _W32, (_X32, _Y32))
    assert wrong.status == "fail" and "the suspect is reverse mode" in wrong.verdict
    assert wrong.notes and "float32" in wrong.notes[0] and f"note: {wrong.notes[0]}" in str(wrong)
    right = check_grad(with_rule(1.0), _W32, (_X32, _Y32))
    assert right.ok and not right.failed, right

    def mixed(p, d):  # a float32 data term and an L2 term in the params' dtype
        X, y = d
        fit = jnp.mean((jnp.asarray(X, jnp.float32) @ p["w"].astype(jnp.float32) - y) ** 2)
        return fit + 1e-3 * jnp.sum(p["w"] ** 2)

    report = check_grad(mixed, {"w": _W32["w"].astype(np.float64)}, (_X32, _Y32))
    assert report.ok and not report.failed, report
    plain = check_grad(LINEAR_MSE, gdjax.init_linear(3), (_X32.astype(np.float64), _Y32.astype(np.float64)))
    assert plain.notes == ()  # float64 arithmetic: nothing to say


def test_a_cost_that_draws_random_numbers_is_differenced_as_it_runs():
    """JAX draws other numbers with float64 enabled: a fixed-key dropout mask became another
    function in the float64 differences, and a correct gradient failed."""

    def dropout(p, d):
        X, y = d
        keep = jax.random.bernoulli(jax.random.key(0), 0.5, X.shape)
        return jnp.mean(((jnp.where(keep, X, 0.0) / 0.5) @ p["w"] - y) ** 2)

    report = check_grad(dropout, _W32, (_X32, _Y32))
    assert report.ok and not report.failed and "random numbers" in report.notes[0], report
    rule = _scaled_vjp(1.1)
    wrong = check_grad(lambda p, d: dropout({"w": rule(p["w"])}, d), _W32, (_X32, _Y32))
    assert wrong.status == "fail" and "the suspect is reverse mode" in wrong.verdict
    keys = jax.random.split(jax.random.key(1), 50)  # typed keys in the data, one per example

    def per_example(p, d):
        keep = jax.vmap(lambda k: jax.random.bernoulli(k, 0.5, (3,)))(d["k"])
        return jnp.mean((jnp.where(keep, d["X"], 0.0) @ p["w"] - d["y"]) ** 2)

    assert check_grad(per_example, _W32, {"X": _X32, "y": _Y32, "k": keys}).ok


def test_a_cost_that_is_not_finite_at_the_point_is_an_error():
    with pytest.raises(ValueError, match="the cost is nan at params: there is no gradient to check"):
        check_grad(lambda p, d: jnp.sum(jnp.log(p)), np.array([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"at point [1-9]\d* \(params moved by scale=3.0: try a smaller"):
        check_grad(lambda p, d: jnp.sum(jnp.log(p)), np.array([1.0, 1.0]), num_points=8, scale=3.0)


def test_an_integer_analytic_gradient_is_named():
    with pytest.raises(ValueError, match="analytic.*returned int64 for leaf '<root>'.*floating point"):
        check_grad(lambda p, d: jnp.sum(p**2), np.array([1.0, 1.0]), analytic=lambda p, d: np.array([2, 2]))


def test_a_leaf_that_nothing_could_check_is_said_to_be_unchecked():
    """Forward mode cannot run through a custom_vjp, and a noisy cost's differences do not converge:
    nothing compared the gradient, and the verdict says so rather than "everything else agrees"."""
    ident = _scaled_vjp(1.0)

    def noisy(p, d):
        return jnp.sum(ident(p) ** 2) + 1e-9 * jnp.sum(jnp.sin(1e12 * p))

    report = check_grad(noisy, np.array([0.3, -0.2]))
    assert report.ok and report.status == "warn" and report.unchecked == ("<root>",), report
    assert report.verdict.endswith(
        "nothing else checked the gradient of ['<root>'], so it is not checked at all"
    )
    assert check_grad(lambda p, d: jnp.sum(p**2), np.array([0.3, -0.2])).unchecked == ()
