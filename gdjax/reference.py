"""Closed-form answers and hand-derived gradients, in float64 NumPy and independent of autodiff.

These are the oracles gdjax is judged against: the least-squares optimum and `f*`, the hand-derived
MSE gradient and Hessian of the linear model, the logistic and softmax cross-entropy losses of a
linear classifier with their hand-derived gradients, and the curvature numbers that predict how
gradient descent behaves (`L`, `mu`, the largest stable constant step `2/L`, the best constant step
`2/(L + mu)` and its contraction rate `(L - mu)/(L + mu)`).

The cost is `f(w, b) = mean((X w + b - y)**2)`, so with `A = [X, 1]` the Hessian is `H = 2/n A^T A`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gdjax.validation import check_regression_data


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _design(X, fit_intercept: bool) -> np.ndarray:
    X = _f64(X)
    return np.hstack([X, np.ones((X.shape[0], 1))]) if fit_intercept else X


class LeastSquares(NamedTuple):
    """The least-squares solution with the diagnostics `numpy.linalg.lstsq` gives."""

    params: dict  # {"w": (d,), "b": ()}
    f_star: float  # optimal mean squared error
    condition_number: float  # of the design matrix [X, 1] (singular values ratio)
    rank: int
    rcond: float  # singular values below rcond * s_max were treated as zero


def default_rcond(X) -> float:
    """`max(n, d+1) * eps(float64)`: NumPy's recommended cut-off for float64 data."""
    n, d = np.shape(X)
    return max(n, d + 1) * np.finfo(np.float64).eps


def least_squares(X, y, *, fit_intercept: bool = True, rcond: float | None = None, full_output=False):
    """The minimiser of `mean((X w + b - y)**2)`, solved in float64 by SVD.

    Float32 `jnp.linalg.lstsq` drops directions whose singular values fall below float32's cut-off,
    which on ill-conditioned data is a real direction; this always works in float64 with an explicit
    `rcond` (default `default_rcond(X)`).

    Args:
      X: `(n, d)` features; y: `(n,)` targets.
      fit_intercept: include `b` (else `b = 0`).
      rcond: relative cut-off for small singular values.
      full_output: also return a `LeastSquares` with `f*`, the condition number and the rank.

    Returns:
      `{"w": (d,), "b": ()}` as float64 NumPy arrays, or a `LeastSquares` if `full_output`.
    """
    check_regression_data(X, y)
    A, y = _design(X, fit_intercept), _f64(y)
    rcond = default_rcond(X) if rcond is None else float(rcond)
    coef, _, rank, s = np.linalg.lstsq(A, y, rcond=rcond)
    d = np.shape(X)[1]
    params = {"w": coef[:d], "b": coef[d] if fit_intercept else np.float64(0.0)}
    if not full_output:
        return params
    r = A @ coef - y
    cond = float(s[0] / s[-1]) if s[-1] > 0 else float("inf")
    return LeastSquares(params, float(np.mean(r * r)), cond, int(rank), rcond)


def optimal_cost(X, y, *, fit_intercept: bool = True) -> float:
    """`f*`: the smallest mean squared error any linear model can reach on `(X, y)`."""
    return least_squares(X, y, fit_intercept=fit_intercept, full_output=True).f_star


def mse_cost(params: dict, data) -> float:
    """`mean((X w + b - y)**2)` in float64 NumPy."""
    X, y = data
    r = _f64(X) @ _f64(params["w"]) + _f64(params["b"]) - _f64(y)
    return float(np.mean(r * r))


def mse_grad(params: dict, data) -> dict:
    """The hand-derived MSE gradient of the linear model, in float64.

    With residual `r = X w + b - y`: `df/dw = (2/n) X^T r`, `df/db = (2/n) sum(r)`.
    """
    X, y = data
    X = _f64(X)
    n = X.shape[0]
    r = X @ _f64(params["w"]) + _f64(params["b"]) - _f64(y)
    return {"w": 2.0 / n * (X.T @ r), "b": np.float64(2.0 / n * r.sum())}


def mse_hessian(X, *, fit_intercept: bool = True) -> np.ndarray:
    """`H = (2/n) A^T A` with `A = [X, 1]`: the (constant) MSE Hessian, ordered `[w..., b]`."""
    A = _design(X, fit_intercept)
    return 2.0 / A.shape[0] * (A.T @ A)


class Curvature(NamedTuple):
    """What the MSE Hessian's spectrum predicts for constant-step gradient descent."""

    L: float  # largest Hessian eigenvalue (smoothness)
    mu: float  # smallest Hessian eigenvalue (strong convexity; 0 if rank deficient)
    max_stable_lr: float  # 2 / L: larger constant steps diverge
    best_lr: float  # 2 / (L + mu): fastest constant step
    rate: float  # (L - mu) / (L + mu): error contraction per step at best_lr
    condition_number: float  # L / mu


def curvature(X, *, fit_intercept: bool = True) -> Curvature:
    """Curvature of `mean((X w + b - y)**2)` from the eigenvalues of its Hessian.

    Plain gradient descent with constant step `lr` contracts the error along eigenvector `i` by
    `|1 - lr * lambda_i|` per step: it converges iff `lr < 2/L`, fastest at `lr = 2/(L + mu)`.
    """
    X = _f64(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
    eig = np.linalg.eigvalsh(mse_hessian(X, fit_intercept=fit_intercept))
    # Eigenvalues at round-off level are zero: a flat direction, not a tiny curvature.
    return curvature_of(eig, flat_below=float(eig[-1]) * default_rcond(X))


def curvature_of(eigenvalues, *, flat_below: float = 0.0) -> Curvature:
    """`Curvature` from a Hessian's eigenvalues (any order); those `<= flat_below` count as zero.

    Example: a diagonal quadratic `sum(h_i x_i**2 / 2)` has eigenvalues `h`.
    """
    eig = np.sort(_f64(eigenvalues).ravel())
    if eig.size == 0 or not eig[-1] > 0:
        raise ValueError(f"curvature needs a positive largest eigenvalue, got {eig}")
    L = float(eig[-1])
    mu = float(max(eig[0], 0.0))
    if mu <= flat_below:
        mu = 0.0
    return Curvature(
        L=L,
        mu=mu,
        max_stable_lr=2.0 / L,
        best_lr=2.0 / (L + mu),
        rate=(L - mu) / (L + mu),
        condition_number=L / mu if mu > 0 else float("inf"),
    )


def polynomial_features(x, degree: int) -> np.ndarray:
    """Columns `x, x**2, ..., x**degree` of a 1-D input (or `(n, 1)`), in float64 NumPy: the oracle
    of `gdjax.costs.polynomial_features`."""
    x = _f64(x)
    x = x[:, 0] if x.ndim == 2 else x
    return x[:, None] ** np.arange(1, degree + 1, dtype=np.float64)[None, :]


def rosenbrock_grad(x, data=None) -> np.ndarray:
    """Hand-derived gradient of `gdjax.costs.rosenbrock` on a flat vector, float64 NumPy."""
    del data
    x = _f64(x)
    inner = x[1:] - x[:-1] ** 2
    g = np.zeros_like(x)
    g[:-1] += -400.0 * x[:-1] * inner - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * inner
    return g


# ------------------------------------------------------------------------------- classification
# The linear classifier's logits are `z = X w + b` (one output, y in {0, 1}) or `Z = X W + b`
# (`W` of shape (d, k), y the class indices). Hand-derived, float64, no autodiff.
def _logits(params: dict, X) -> np.ndarray:
    w, b = _f64(params["w"]), _f64(params["b"])
    return _f64(X) @ w + b  # NumPy broadcasts a (k,) intercept over the rows


def _log1pexp(z: np.ndarray) -> np.ndarray:
    # log(1 + exp(z)) without overflow: max(z, 0) + log1p(exp(-|z|)).
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))  # in (0, 1]: no overflow on either side
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def logistic_cost(params: dict, data) -> float:
    """`mean(log(1 + exp(z)) - y z)` with `z = X w + b`, in float64 NumPy (y in {0, 1})."""
    X, y = data
    z = _logits(params, X)
    return float(np.mean(_log1pexp(z) - _f64(y) * z))


def logistic_grad(params: dict, data) -> dict:
    """The hand-derived gradient of the logistic loss of a linear model, in float64.

    With `r = sigmoid(X w + b) - y`: `df/dw = X^T r / n`, `df/db = mean(r)`.
    """
    X, y = data
    X = _f64(X)
    r = _sigmoid(_logits(params, X)) - _f64(y)
    return {"w": X.T @ r / X.shape[0], "b": np.float64(r.mean())}


def cross_entropy_cost(params: dict, data) -> float:
    """`mean(logsumexp(Z_i) - Z_i[y_i])` with `Z = X W + b`, in float64 NumPy (y class indices)."""
    X, y = data
    Z = _logits(params, X)
    m = Z.max(axis=1)
    lse = m + np.log(np.exp(Z - m[:, None]).sum(axis=1))
    picked = Z[np.arange(Z.shape[0]), np.asarray(y).astype(np.int64)]
    return float(np.mean(lse - picked))


def cross_entropy_grad(params: dict, data) -> dict:
    """The hand-derived gradient of the softmax cross entropy of a linear model, in float64.

    With `R = softmax(X W + b) - onehot(y)` (row-wise softmax): `df/dW = X^T R / n`,
    `df/db = mean(R, axis=0)`.
    """
    X, y = data
    X = _f64(X)
    R = _softmax(_logits(params, X))
    R[np.arange(R.shape[0]), np.asarray(y).astype(np.int64)] -= 1.0
    return {"w": X.T @ R / X.shape[0], "b": R.mean(axis=0)}


__all__ = [
    "Curvature",
    "cross_entropy_cost",
    "cross_entropy_grad",
    "logistic_cost",
    "logistic_grad",
    "LeastSquares",
    "curvature",
    "curvature_of",
    "default_rcond",
    "least_squares",
    "mse_cost",
    "mse_grad",
    "mse_hessian",
    "optimal_cost",
    "polynomial_features",
    "rosenbrock_grad",
]
