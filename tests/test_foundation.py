"""Tests for the foundation: `gdjax.reference`, `gdjax.costs`, `gdjax.data`, `gdjax.validation`.

Oracles the code cannot influence: `numpy.linalg` (lstsq, cond, eigvalsh), exact rational arithmetic
for the house-price line, `jax.grad` / `jax.hessian` for the hand-derived formulas, and a NumPy
gradient-descent loop for the step-size predictions.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import atol, rtol

import gdjax
from gdjax import costs, data, reference, validation

F64 = np.float64
LINEAR_MSE = gdjax.make_cost(gdjax.linear, gdjax.mse)


def design(X):
    """`[X, 1]`, written here rather than taken from gdjax."""
    X = np.asarray(X, F64)
    return np.hstack([X, np.ones((len(X), 1))])


def as_vector(params) -> np.ndarray:
    """Linear-model params in the order `[w..., b]` used by `mse_hessian`."""
    return np.append(np.asarray(params["w"], F64), np.asarray(params["b"], F64))


def as_params(v) -> dict:
    return {"w": v[:-1], "b": v[-1]}


# Named regression problems: name -> () -> (X, y).
PROBLEMS = {
    "house_prices": data.house_prices,
    "line": data.line,
    "well_conditioned": lambda: data.synthetic(jax.random.key(1), 200, 4)[:2],
    "ill_conditioned": lambda: data.synthetic(jax.random.key(2), 200, 4, condition_number=1e6)[:2],
}


@functools.cache
def autodiff_hessian(name) -> np.ndarray:
    """`jax.hessian` of the linear MSE on problem `name`, in `[w..., b]` order (jitted, computed once)."""
    X, y = PROBLEMS[name]()
    hess = jax.jit(jax.hessian(lambda v: LINEAR_MSE(as_params(v), (X, y))))
    return np.asarray(hess(np.zeros(X.shape[1] + 1)))


# ------------------------------------------------------------------------------ least squares
@pytest.mark.parametrize("name", PROBLEMS)
def test_least_squares_matches_numpy_lstsq(name):
    X, y = PROBLEMS[name]()
    A = design(X)
    coef, _, rank, s = np.linalg.lstsq(A, y, rcond=None)
    got = reference.least_squares(X, y, full_output=True)
    # Two SVD solves of one problem differ by ~cond(A) * eps relative; cond(A) <= ~1e3 here.
    np.testing.assert_allclose(
        as_vector(got.params), coef, rtol=rtol(F64), atol=atol(F64) * np.abs(coef).max()
    )
    np.testing.assert_allclose(got.condition_number, np.linalg.cond(A), rtol=rtol(F64))
    assert got.rank == rank == A.shape[1]
    r = A @ coef - y
    np.testing.assert_allclose(got.f_star, np.mean(r * r), rtol=rtol(F64), atol=atol(F64))
    np.testing.assert_allclose(reference.optimal_cost(X, y), got.f_star, rtol=rtol(F64), atol=atol(F64))
    # First-order optimality, checked without gdjax: the residual is orthogonal to A's columns.
    np.testing.assert_array_less(
        np.abs(A.T @ (A @ as_vector(got.params) - y)), 1e-9 * np.linalg.norm(A) ** 2 * np.abs(coef).max()
    )


def test_ill_conditioned_problem_has_the_requested_covariance_condition():
    X, _ = PROBLEMS["ill_conditioned"]()
    cond_cov = np.linalg.cond(X.T @ X / len(X))
    assert 1e6 / 2 < cond_cov < 1e6 * 2
    # The design matrix's condition number is that of its singular values: about the square root.
    assert (
        1e2
        < reference.least_squares(X, PROBLEMS["ill_conditioned"]()[1], full_output=True).condition_number
        < 1e4
    )


def test_house_prices_least_squares_line_is_the_textbook_answer():
    X, y = data.house_prices()
    # Exact rational arithmetic on the raw data: slope = Sxy / Sxx, f* = (Syy - Sxy^2 / Sxx) / n.
    xs, ys = [Fraction(int(v)) for v in X[:, 0]], [Fraction(int(v)) for v in y]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (v - my) for x, v in zip(xs, ys, strict=True))
    syy = sum((v - my) ** 2 for v in ys)
    slope, intercept, f_star = sxy / sxx, my - sxy / sxx * mx, (syy - sxy**2 / sxx) / n
    assert (slope, intercept) == (Fraction(1610, 19), Fraction(-880, 19))
    got = reference.least_squares(X, y, full_output=True)
    np.testing.assert_allclose(got.params["w"], [float(slope)], rtol=rtol(F64))
    np.testing.assert_allclose(got.params["b"], float(intercept), rtol=rtol(F64))
    np.testing.assert_allclose(got.f_star, float(f_star), rtol=rtol(F64))
    np.testing.assert_allclose(float(slope), 84.737, atol=5e-4)
    np.testing.assert_allclose(float(intercept), -46.316, atol=5e-4)


def test_line_data_recovers_its_generating_line():
    X, y = data.line()
    got = reference.least_squares(X, y, full_output=True)
    np.testing.assert_allclose(got.params["w"], [20.0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.params["b"], 5.0, rtol=0, atol=1e-12)
    assert got.f_star < 1e-24


def test_noise_free_synthetic_data_recovers_its_true_weights():
    s = data.synthetic(jax.random.key(4), 100, 3, noise=0.0, intercept=-2.0)
    got = reference.least_squares(s.X, s.y)
    np.testing.assert_allclose(got["w"], s.w, rtol=rtol(F64))
    np.testing.assert_allclose(got["b"], -2.0, rtol=rtol(F64))


def test_least_squares_without_intercept():
    X, y = data.house_prices()
    got = reference.least_squares(X, y, fit_intercept=False)
    np.testing.assert_allclose(got["w"], np.linalg.lstsq(X, y, rcond=None)[0], rtol=rtol(F64))
    assert got["b"] == 0.0


# --------------------------------------------------------------- gradient, Hessian, curvature
POINTS = {"zero": 0.0, "unit": 1.0, "far": -25.0}


@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("name", PROBLEMS)
def test_mse_grad_and_cost_match_autodiff(name, point):
    X, y = PROBLEMS[name]()
    params = {"w": np.full(X.shape[1], POINTS[point]), "b": np.float64(POINTS[point] / 2)}
    want = jax.jit(jax.grad(LINEAR_MSE))(params, (X, y))
    got = reference.mse_grad(params, (X, y))
    scale = np.abs(as_vector(want)).max()
    np.testing.assert_allclose(as_vector(got), as_vector(want), rtol=rtol(F64), atol=atol(F64) * scale)
    np.testing.assert_allclose(
        reference.mse_cost(params, (X, y)), jax.jit(LINEAR_MSE)(params, (X, y)), rtol=rtol(F64)
    )


@pytest.mark.parametrize("name", PROBLEMS)
def test_mse_hessian_matches_jax_hessian(name):
    X, _ = PROBLEMS[name]()
    H = autodiff_hessian(name)
    got = reference.mse_hessian(X)
    np.testing.assert_allclose(got, H, rtol=rtol(F64), atol=atol(F64) * np.abs(H).max())
    np.testing.assert_allclose(got, got.T, rtol=0, atol=0)


@pytest.mark.parametrize("name", PROBLEMS)
def test_curvature_matches_the_hessian_spectrum(name):
    X, _ = PROBLEMS[name]()
    eig = np.linalg.eigvalsh(autodiff_hessian(name))
    L, mu = eig[-1], eig[0]
    c = reference.curvature(X)
    np.testing.assert_allclose(c.L, L, rtol=rtol(F64))
    # mu is computed as a difference of large numbers on ill-conditioned data: relative to L.
    np.testing.assert_allclose(c.mu, mu, rtol=rtol(F64) * L / mu)
    np.testing.assert_allclose(c.max_stable_lr, 2.0 / L, rtol=rtol(F64))
    np.testing.assert_allclose(c.best_lr, 2.0 / (L + mu), rtol=rtol(F64))
    np.testing.assert_allclose(c.rate, (L - mu) / (L + mu), rtol=rtol(F64), atol=rtol(F64))
    np.testing.assert_allclose(c.condition_number, L / mu, rtol=rtol(F64) * L / mu)


def _numpy_gd(X, y, lr, num_steps):
    """The tutorials' loop in NumPy: returns the distance to the optimum after each step."""
    A, v = design(X), np.zeros(X.shape[1] + 1)
    opt = np.linalg.lstsq(A, y, rcond=None)[0]
    dist = [np.linalg.norm(v - opt)]
    for _ in range(num_steps):
        v = v - lr * (2.0 / len(y)) * A.T @ (A @ v - y)
        dist.append(np.linalg.norm(v - opt))
    return np.array(dist)


@pytest.mark.parametrize("name", ["house_prices", "line", "well_conditioned"])
def test_curvature_predicts_gradient_descent(name):
    X, y = PROBLEMS[name]()
    c = reference.curvature(X)
    steps = 50
    dist = _numpy_gd(X, y, c.best_lr, steps)
    # At 2/(L + mu) every eigen-direction contracts by at most `rate` per step.
    assert dist[-1] <= dist[0] * c.rate**steps * (1 + 1e-6) + 1e-9
    assert _numpy_gd(X, y, 1.01 * c.max_stable_lr, steps)[-1] > dist[0]  # just above 2/L diverges
    assert _numpy_gd(X, y, 0.99 * c.max_stable_lr, 4000)[-1] < dist[0]  # just below still converges


def test_curvature_of_rank_deficient_data_has_a_flat_direction():
    X = np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]])  # second column = 2 x first
    c = reference.curvature(X)
    assert c.mu == 0.0
    assert c.condition_number == np.inf
    assert c.rate == 1.0


# ------------------------------------------------------------------------------------- costs
def test_mse_rejects_a_column_vector_target():
    with pytest.raises(ValueError, match=r"predictions have shape \(3,\) but targets have shape \(3, 1\)"):
        costs.mse(jnp.zeros(3), jnp.zeros((3, 1)))


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("name", costs.TEST_FUNCTIONS)
def test_test_functions_reach_f_star_at_their_minimiser(name, dim):
    fn = costs.TEST_FUNCTIONS[name]
    x_star = jnp.asarray(fn.minimizer(dim))
    assert float(jax.jit(fn.cost)(x_star)) == fn.f_star
    np.testing.assert_array_equal(jax.jit(jax.grad(fn.cost))(x_star), np.zeros(dim))
    nearby = x_star[None, :] + 0.1 * np.random.default_rng(dim).standard_normal((8, dim))
    assert (jax.jit(jax.vmap(fn.cost))(nearby) > fn.f_star).all()


def test_ill_conditioned_quadratic_has_the_stated_curvature():
    cost = costs.ill_conditioned_quadratic(100.0, dim=3)
    assert float(cost(jnp.zeros(3))) == 0.0
    eig = np.linalg.eigvalsh(np.asarray(jax.jit(jax.hessian(cost))(jnp.ones(3))))
    np.testing.assert_allclose(eig, [1.0, 10.0, 100.0], rtol=rtol(F64))
    assert costs.ill_conditioned_quadratic(100.0, dim=3) is cost  # cached
    with pytest.raises(ValueError, match="condition_number"):
        costs.ill_conditioned_quadratic(0.5)


# The same six numbers as a nested pytree and as one vector: the test functions flatten their params.
NESTED = {"a": jnp.array([0.5, -1.0]), "b": (jnp.array(2.0), jnp.array([[1.5, 0.0, -0.5]]))}
FLAT = jnp.array([0.5, -1.0, 2.0, 1.5, 0.0, -0.5])
PYTREE_COSTS = {
    "quadratic": costs.quadratic,
    "shifted_quadratic": costs.shifted_quadratic,
    "rosenbrock": costs.rosenbrock,
    "ill_conditioned_quadratic": costs.ill_conditioned_quadratic(10.0, dim=6),
}


@pytest.mark.parametrize("name", PYTREE_COSTS)
def test_test_functions_take_params_as_any_pytree(name):
    cost = PYTREE_COSTS[name]
    value_and_grad = jax.jit(jax.value_and_grad(cost))
    (value, g), (flat_value, flat_g) = value_and_grad(NESTED), value_and_grad(FLAT)
    np.testing.assert_allclose(value, flat_value, rtol=rtol(F64))
    assert jax.tree.structure(g) == jax.tree.structure(NESTED)
    np.testing.assert_allclose(
        np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]), flat_g, rtol=rtol(F64)
    )


def test_polynomial_features_columns():
    x = np.array([1.0, 2.0, 3.0])
    want = np.array([[1.0, 1.0, 1.0], [2.0, 4.0, 8.0], [3.0, 9.0, 27.0]])
    features = jax.jit(costs.polynomial_features, static_argnums=1)
    np.testing.assert_array_equal(features(x, 3), want)
    np.testing.assert_array_equal(features(x[:, None], 3), want)
    with pytest.raises(ValueError, match="degree must be >= 1"):
        costs.polynomial_features(x, 0)
    with pytest.raises(ValueError, match=r"one input feature, got shape \(3, 2\)"):
        costs.polynomial_features(jnp.ones((3, 2)), 2)


def test_polynomial_model_is_linear_in_its_features():
    x = jnp.linspace(-1.0, 1.0, 5)
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    np.testing.assert_allclose(jax.jit(gdjax.polynomial(2))(params, x), 0.5 + x - 2.0 * x**2, rtol=rtol(F64))


@pytest.mark.parametrize("dtype", [None, np.float32, np.float64])
def test_init_linear_is_zeros_of_the_requested_dtype(dtype):
    params = gdjax.init_linear(3, dtype)
    want = np.dtype(dtype or F64)  # float64 is on for the test session
    assert {k: (v.shape, v.dtype) for k, v in params.items()} == {"w": ((3,), want), "b": ((), want)}
    assert not any(np.any(v) for v in params.values())


def test_make_cost_is_cached_and_computes_the_mse():
    # Built again, a cost is equal (and hashes equal): a jitted run keyed on it does not recompile.
    pairs = [
        (gdjax.make_cost(gdjax.linear, gdjax.mse), gdjax.make_cost(gdjax.linear, gdjax.mse)),
        (gdjax.make_cost(gdjax.polynomial(3)), gdjax.make_cost(gdjax.polynomial(3), gdjax.mse)),
    ]
    for a, b in pairs:
        assert a == b and hash(a) == hash(b)
    assert gdjax.make_cost(gdjax.polynomial(2)) != gdjax.make_cost(gdjax.polynomial(3))
    X, y = data.house_prices()
    np.testing.assert_allclose(LINEAR_MSE(gdjax.init_linear(1), (X, y)), np.mean(y**2), rtol=rtol(F64))


# -------------------------------------------------------------------------------------- data
def test_synthetic_is_deterministic_from_its_key():
    a, b = data.synthetic(jax.random.key(7), 30, 2), data.synthetic(jax.random.key(7), 30, 2)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.X, data.synthetic(jax.random.key(8), 30, 2).X)
    np.testing.assert_array_equal(data.synthetic(7, 30, 2).X, a.X)  # an int seed is key(seed)
    assert (a.X.shape, a.y.shape, a.w.shape) == ((30, 2), (30,), (2,))


@pytest.mark.parametrize("condition_number", [1.0, 1e2, 1e6])
def test_synthetic_feature_covariance_has_the_requested_condition_number(condition_number):
    X = data.synthetic(jax.random.key(5), 4000, 5, condition_number=condition_number).X
    got = np.linalg.cond(X.T @ X / len(X))
    # Sampling noise of a 5 x 5 covariance from 4000 rows moves its eigenvalues by ~sqrt(5/4000).
    assert condition_number / 1.3 < got < condition_number * 1.3


def test_standardizer_undoes_itself_on_fitted_coefficients():
    s = data.synthetic(jax.random.key(6), 100, 3, condition_number=1e3, intercept=4.0)
    X = s.X * np.array([1.0, 100.0, 0.01]) + np.array([5.0, -3.0, 1e3])  # scales and offsets
    std = data.Standardizer.fit(X)
    Z = std.transform(X)
    # Column 3 has offset / scale ~ 1e5, which amplifies the round-off of x - mean to ~1e5 * eps.
    np.testing.assert_allclose(Z.mean(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(Z.std(0), 1.0, rtol=rtol(F64))
    back = std.unstandardize(reference.least_squares(Z, s.y))
    raw = reference.least_squares(X, s.y)
    np.testing.assert_allclose(back["w"], raw["w"], rtol=1e-7)  # cond([X, 1]) ~ 1e7 on raw X
    np.testing.assert_allclose(back["b"], raw["b"], rtol=1e-7)


def test_standardizer_leaves_a_constant_column_unscaled():
    std = data.Standardizer.fit(np.array([[1.0, 2.0], [3.0, 2.0]]))
    np.testing.assert_array_equal(std.scale, [1.0, 1.0])


def test_load_csv_round_trip(tmp_path):
    X, y = data.house_prices()
    path = tmp_path / "houses.csv"
    path.write_text("bedrooms,price\n" + "".join(f"{a},{b}\n" for a, b in zip(X[:, 0], y, strict=True)))
    for kwargs in (dict(), dict(target="price"), dict(target=1, features=["bedrooms"])):
        got_X, got_y = data.load_csv(path, **kwargs)
        np.testing.assert_array_equal(got_X, X)
        np.testing.assert_array_equal(got_y, y)
    got_X, got_y = data.load_csv(path, target="bedrooms")
    np.testing.assert_array_equal(got_y, X[:, 0])


def test_load_csv_reads_an_excel_byte_order_mark_and_refuses_the_target_as_a_feature(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbfx,c,y\r\n1,2,3\r\n4,5,6\r\n")  # UTF-8 with a BOM, CRLF
    X, y = data.load_csv(path, target="x")
    np.testing.assert_array_equal(X, [[2.0, 3.0], [5.0, 6.0]])
    np.testing.assert_array_equal(y, [1.0, 4.0])
    with pytest.raises(ValueError, match="the target column 'y' is also listed in features"):
        data.load_csv(path, features=["x", "y"])
    with pytest.raises(ValueError, match=r"features lists the column\(s\) \['x'\] more than once"):
        data.load_csv(path, features=["x", "x"])


def test_load_npz_round_trip(tmp_path):
    X, y = data.house_prices()
    np.savez(tmp_path / "houses.npz", X=X, y=y, x1=X[:, 0])
    for kwargs in (dict(), dict(x_key="x1")):  # a 1-D feature array becomes one column
        got_X, got_y = data.load_npz(tmp_path / "houses.npz", **kwargs)
        np.testing.assert_array_equal(got_X, X)
        np.testing.assert_array_equal(got_y, y)


def _csv(tmp_path, text):
    path = tmp_path / "d.csv"
    path.write_text(text)
    return path


def _npz(tmp_path):
    np.savez(tmp_path / "d.npz", X=np.ones((3, 1)), y=np.ones(3))
    return tmp_path / "d.npz"


# (loader called with tmp_path, regex the ValueError must match)
BAD_FILES = {
    "csv_missing": (lambda p: data.load_csv(p / "nope.csv"), r"data file not found: .*nope.csv"),
    "csv_unknown_column": (
        lambda p: data.load_csv(_csv(p, "bedrooms,price\n1,2\n"), target="prise"),
        r"no column 'prise' \(did you mean 'price'\?\); columns are \['bedrooms', 'price'\]",
    ),
    "csv_index_out_of_range": (
        lambda p: data.load_csv(_csv(p, "a,b\n1,2\n"), target=5),
        r"column index 5 out of range",
    ),
    "csv_not_numeric": (
        lambda p: data.load_csv(_csv(p, "a,b\n1,x\n")),
        r"d.csv, line 2, column 'b': 'x' is not a number",
    ),
    "csv_header_only": (lambda p: data.load_csv(_csv(p, "a,b\n")), r"header row and at least one data row"),
    "csv_nan": (
        lambda p: data.load_csv(_csv(p, "a,b\n1,2\nnan,3\n")),
        r"line 3, column 'a': nan is not a finite number",  # the file's line, not an index into X
    ),
    "npz_missing": (lambda p: data.load_npz(p / "nope.npz"), r"data file not found"),
    "npz_unknown_array": (
        lambda p: data.load_npz(_npz(p), x_key="XX"),
        r"no array 'XX' \(did you mean 'X'\?\)",
    ),
    "unknown_dataset": (lambda p: data.load("house_price"), r"did you mean 'house_prices'\?"),
}


@pytest.mark.parametrize("name", BAD_FILES)
def test_bad_files_give_clear_errors(name, tmp_path):
    load, match = BAD_FILES[name]
    with pytest.raises(ValueError, match=match):
        load(tmp_path)


def test_load_by_name_and_as_batch():
    X, y = data.load("line")
    bX, by = data.as_batch(X, y, jnp.float32)
    assert (bX.dtype, by.dtype, bX.shape, by.shape) == (jnp.float32, jnp.float32, (5, 1), (5,))


# ------------------------------------------------------------------------------- bad input
def _with(arr, index, value):
    arr = np.array(arr, F64)
    arr[index] = value
    return arr


HX, HY = data.house_prices()

# (X, y, regex the ValueError must match)
BAD_DATA = {
    "lengths_differ": (HX, HY[:5], r"X has 7 rows but y has 5 entries \(X \(7, 1\), y \(5,\)\)"),
    "y_column_vector": (HX, HY[:, None], r"y has shape \(7, 1\); pass a 1-D target"),
    "X_one_dimensional": (HX[:, 0], HY, r"X must be 2-D \(n_examples, n_features\), got shape \(7,\)"),
    "nan_in_X": (
        _with(HX, (2, 0), np.nan),
        HY,
        r"data\[0\] contains a non-finite value \(nan\) at index \(2, 0\)",
    ),
    "inf_in_y": (HX, _with(HY, 4, np.inf), r"data\[1\] contains a non-finite value \(inf\) at index \(4,\)"),
    "empty": (np.zeros((0, 1)), np.zeros(0), r"data\[0\] is empty \(shape \(0, 1\)\)"),
}

# Every entry point that takes regression data validates it the same way, before any tracing.
ENTRY_POINTS = {
    "check_regression_data": validation.check_regression_data,
    "least_squares": reference.least_squares,
    "as_batch": data.as_batch,
    "optimal_cost": reference.optimal_cost,
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("name", BAD_DATA)
def test_bad_regression_data_is_rejected(name, entry):
    X, y, match = BAD_DATA[name]
    with pytest.raises(ValueError, match=match):
        ENTRY_POINTS[entry](X, y)


def _vector_cost(params, batch):
    return params["w"] * 2.0


def _integer_cost(params, batch):
    return jnp.sum(params["w"]).astype(jnp.int32)


# (cost, params, batch, regex the ValueError must match)
BAD_COSTS = {
    "params_missing_b": (
        LINEAR_MSE,
        {"w": np.zeros(1)},
        (HX, HY),
        r"cost\(params, data\) failed for params with shapes \{'w': \(1,\)\}",
    ),
    "w_wrong_shape": (
        LINEAR_MSE,
        {"w": np.zeros(3), "b": 0.0},
        (HX, HY),
        r"shapes \{'b': \(\), 'w': \(3,\)\}",
    ),
    "y_column_vector": (LINEAR_MSE, gdjax.init_linear(1), (HX, HY[:, None]), r"targets have shape \(7, 1\)"),
    "vector_output": (_vector_cost, {"w": np.zeros(2)}, None, r"cost must return a scalar"),
    "integer_output": (_integer_cost, {"w": np.zeros(2)}, None, r"floating-point scalar, got dtype int32"),
}


@pytest.mark.parametrize("name", BAD_COSTS)
def test_check_cost_names_the_mismatch(name):
    cost, params, batch, match = BAD_COSTS[name]
    with pytest.raises(ValueError, match=match):
        validation.check_cost(cost, params, batch)


BAD_PARAMS = {
    "empty": ({}, r"params is empty"),
    "integer": ({"w": np.zeros(2, int)}, r"params\['w'\] has dtype int64; parameters must be floating point"),
    "nan": ({"w": np.array([1.0, np.nan])}, r"params\['w'\] contains non-finite values"),
}


@pytest.mark.parametrize("name", BAD_PARAMS)
def test_check_params_names_the_entry(name):
    params, match = BAD_PARAMS[name]
    with pytest.raises(ValueError, match=match):
        validation.check_params(params)


def test_bfloat16_is_floating_point_for_validation():
    validation.check_params({"w": jnp.ones(2, jnp.bfloat16)})
    with pytest.raises(ValueError, match="non-finite"):
        validation.check_data(jnp.array([1.0, jnp.nan], jnp.bfloat16))
    validation.check_cost(lambda p, b: jnp.sum(p["w"]), {"w": jnp.ones(2, jnp.bfloat16)}, None)


def test_data_as_python_lists_is_told_to_pass_arrays():
    X, y = gdjax.data.line()
    with pytest.raises(ValueError, match=r"data\[0\]\[0\]\[0\] is a scalar.*pass arrays, np\.asarray\(X\)"):
        validation.check_data((X.tolist(), y.tolist()))
    with pytest.raises(ValueError, match=r"data\[1\] is a scalar; .* leading example axis$"):
        validation.check_data((X, np.float64(1.0)))  # a NumPy scalar: no word about lists
