"""Costs written once: models, losses, and the classic test functions.

A cost is a pure JAX function `cost(params, batch) -> scalar`. `params` is any pytree; gradients come
from `jax.grad`, and grids come from `jax.vmap`, so everything here is written for one example of
parameters (Equinox's rule).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.types import PyTree

Cost = Callable[[PyTree, PyTree], jax.Array]


# ----------------------------------------------------------------------------------------- models
def linear(params: dict, X: jax.Array) -> jax.Array:
    """Linear model with intercept: `X @ w + b`.

    Args:
      params: `{"w": (d,), "b": ()}`.
      X: `(n, d)` features.

    Returns:
      `(n,)` predictions.
    """
    return X @ params["w"] + params["b"]


def linear_feature_major(params: dict, XT: jax.Array) -> jax.Array:
    """`linear` for features stored feature-major, `XT` of shape `(d, n)`: `w @ XT + b`.

    Same numbers as `linear(params, XT.T)` up to summation order. On CPU, XLA computes both the
    forward `w @ XT` and the gradient's `XT @ r` on contiguous rows this way, several times faster
    than `X @ w` and `r @ X` on a row-major `(n, d)` matrix with few columns.
    """
    return params["w"] @ XT + params["b"]


def init_linear(num_features: int, dtype=None) -> dict:
    """Zero parameters `{"w": zeros(d), "b": 0.0}` for `linear` (the tutorials' start)."""
    dtype = dtype or jnp.result_type(float)
    return {"w": jnp.zeros((num_features,), dtype), "b": jnp.zeros((), dtype)}


def polynomial_features(x: jax.Array, degree: int) -> jax.Array:
    """Columns `x, x**2, ..., x**degree` of a 1-D input `(n,)` (or `(n, 1)`): `(n, degree)`.

    No constant column: the intercept is the linear model's `b`.
    """
    if degree < 1:
        raise ValueError(f"degree must be >= 1, got {degree}")
    x = jnp.asarray(x)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"polynomial_features takes one input feature, got shape {x.shape}")
    return x[:, None] ** jnp.arange(1, degree + 1, dtype=x.dtype)[None, :]


def polynomial(degree: int) -> Callable[[dict, jax.Array], jax.Array]:
    """A model `linear(params, polynomial_features(x, degree))` of one input feature."""
    return _polynomial_model(int(degree))


@functools.cache
def _polynomial_model(degree: int):
    def model(params, X):
        return linear(params, polynomial_features(X, degree))

    model.__name__ = f"polynomial{degree}"
    return model


# ----------------------------------------------------------------------------------------- losses
def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error `mean((pred - y)**2)`, the tutorials' cost.

    Shapes must match exactly: `(n,)` predictions against an `(n, 1)` target would broadcast into an
    `(n, n)` residual matrix, the classic silent bug.
    """
    if jnp.shape(pred) != jnp.shape(y):
        raise ValueError(
            f"mse: predictions have shape {jnp.shape(pred)} but targets have shape {jnp.shape(y)}"
        )
    r = pred - y
    return jnp.mean(r * r)


def make_cost(model: Callable, loss: Callable = mse) -> Cost:
    """Builds `cost(params, (X, y)) = loss(model(params, X), y)`.

    Cached, so asking twice for the same model and loss returns the same function object and a jitted
    run keyed on it does not recompile.

    Example:
      >>> import gdjax
      >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
      >>> X, y = gdjax.data.house_prices()
      >>> round(float(cost(gdjax.init_linear(1), (X, y))), 2)  # mean of squared prices
      65228.57
    """
    # The cache sits on a helper that takes both arguments positionally: functools.cache keys on the
    # call as written, so make_cost(m) and make_cost(m, mse) would otherwise be different functions.
    return _make_cost(model, loss)


@functools.cache
def _make_cost(model: Callable, loss: Callable) -> Cost:
    def cost(params, batch):
        X, y = batch
        return loss(model(params, X), y)

    cost.__name__ = f"{getattr(loss, '__name__', 'loss')}_{getattr(model, '__name__', 'model')}"
    cost.__qualname__ = cost.__name__
    if model is linear:
        # The layout protocol of `gdjax.run`: the same cost for batches `(X.T, y)`.
        cost.feature_major = make_cost(linear_feature_major, loss)
    return cost


# ------------------------------------------------------------------------------- test functions
def _sum_leaves(fn, params) -> jax.Array:
    return sum(jnp.sum(fn(leaf)) for leaf in jax.tree.leaves(params))


def quadratic(params: PyTree, batch: PyTree = None) -> jax.Array:
    """`sum(x**2)` over every element of `params`. Minimum 0 at 0; `L = mu = 2`."""
    return _sum_leaves(lambda x: x * x, params)


def shifted_quadratic(params: PyTree, batch: PyTree = None) -> jax.Array:
    """`sum((x - 3)**2) + 1`: minimum 1 at `x = 3`, the tutorials' second example."""
    return _sum_leaves(lambda x: (x - 3.0) ** 2, params) + 1.0


def ill_conditioned_quadratic(condition_number: float, dim: int = 2) -> Cost:
    """A factory: `0.5 * sum_i h_i x_i**2` with `h` log-spaced from 1 to `condition_number`.

    `params` is a vector of length `dim` (or any pytree with `dim` elements in total, flattened in
    leaf order). Minimum 0 at 0; `L = condition_number`, `mu = 1`.
    """
    if not condition_number >= 1 or not np.isfinite(condition_number):
        raise ValueError(f"condition_number must be a finite number >= 1, got {condition_number}")
    return _ill_conditioned(float(condition_number), int(dim))


@functools.cache
def _ill_conditioned(condition_number: float, dim: int) -> Cost:
    h = np.geomspace(1.0, condition_number, dim)

    def cost(params, batch=None):
        x = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)])
        if x.shape != (dim,):
            raise ValueError(f"ill_conditioned_quadratic(dim={dim}) got {x.shape[0]} parameters")
        return 0.5 * jnp.sum(jnp.asarray(h, x.dtype) * x * x)

    cost.__name__ = f"ill_conditioned_quadratic_{condition_number:g}"
    cost.curvature = h
    return cost


def rosenbrock(params: PyTree, batch: PyTree = None) -> jax.Array:
    """Rosenbrock's valley `sum 100 (x[i+1] - x[i]**2)**2 + (1 - x[i])**2` on the flattened params.

    Minimum 0 at all-ones; the classic start is `(-1.2, 1.0)`.
    """
    x = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)])
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


class TestFunction(NamedTuple):
    """A classic test cost with its known minimiser and minimum."""

    cost: Cost
    minimizer: Callable[[int], np.ndarray]  # dim -> x*
    f_star: float
    description: str


TEST_FUNCTIONS: dict[str, TestFunction] = {
    "quadratic": TestFunction(quadratic, lambda d: np.zeros(d), 0.0, "sum(x**2), minimum 0 at 0"),
    "shifted_quadratic": TestFunction(
        shifted_quadratic, lambda d: np.full(d, 3.0), 1.0, "sum((x-3)**2) + 1, minimum 1 at 3"
    ),
    "rosenbrock": TestFunction(rosenbrock, lambda d: np.ones(d), 0.0, "Rosenbrock valley, min 0 at 1"),
}
TestFunction.__test__ = False  # not a pytest class

__all__ = [
    "Cost",
    "TEST_FUNCTIONS",
    "ill_conditioned_quadratic",
    "init_linear",
    "linear",
    "linear_feature_major",
    "make_cost",
    "mse",
    "polynomial",
    "polynomial_features",
    "quadratic",
    "rosenbrock",
    "shifted_quadratic",
]
