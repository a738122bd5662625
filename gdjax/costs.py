"""Costs written once: models, losses, and the classic test functions.

A cost is a pure JAX function `cost(params, data) -> scalar`. `params` is any pytree; gradients come
from `jax.grad`, and grids come from `jax.vmap`, so everything here is written for one example of
parameters (Equinox's rule).

Losses are `loss(predictions, y) -> scalar`, joined to a model by `make_cost(model, loss)`: `mse`
for regression; `logistic` (0/1 targets, one logit per example) and `cross_entropy` (class indices,
`linear` with `w` of shape `(d, k)`) for classification, in numerically stable forms, with
`binary_accuracy` / `categorical_accuracy` and `accuracy(cost)` for the fraction classified right,
and `on_data(fn, data)` to turn any of them into a held-out metric for `run` and `sweep`. Their
hand-derived gradients are in `gdjax.reference`.

Example (a logistic regression and its held-out accuracy):
  >>> import gdjax
  >>> cost = gdjax.make_cost(gdjax.linear, gdjax.costs.logistic)
  >>> cost == gdjax.make_cost(gdjax.linear, gdjax.costs.logistic)  # one compiled program
  True
  >>> gdjax.costs.accuracy(cost).loss is gdjax.costs.binary_accuracy
  True
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import reference, validation
from gdjax.types import PyTree

Cost = Callable[[PyTree, PyTree], jax.Array]


# ----------------------------------------------------------------------------------------- models
def linear(params: dict, X: jax.Array) -> jax.Array:
    """Linear model with intercept: `X @ w + b`, with one output or `k` (a linear classifier's logits).

    Args:
      params: `{"w": (d,), "b": ()}` for one output, or `{"w": (d, k), "b": (k,)}` for `k` outputs.
      X: `(n, d)` features.

    Returns:
      `(n,)` predictions, or `(n, k)` for `k` outputs.
    """
    return X @ params["w"] + _row(params["b"])


def _row(b: jax.Array) -> jax.Array:
    # (k,) -> (1, k): the explicit broadcast that jax_numpy_rank_promotion="raise" asks for.
    return b[None, :] if jnp.ndim(b) == 1 else b


def linear_feature_major(params: dict, XT: jax.Array) -> jax.Array:
    """`linear` for features stored feature-major, `XT` of shape `(d, n)`: `w @ XT + b`.

    Same numbers as `linear(params, XT.T)` up to summation order. On CPU, XLA computes both the
    forward `w @ XT` and the gradient's `XT @ r` on contiguous rows this way, several times faster
    than `X @ w` and `r @ X` on a row-major `(n, d)` matrix with few columns. With `k` outputs
    (`w` of shape `(d, k)`) it computes `(w^T XT)^T + b`, `(n, k)`.
    """
    w = params["w"]
    if jnp.ndim(w) == 2:
        return (w.T @ XT).T + _row(params["b"])
    return w @ XT + params["b"]


def init_linear(num_features: int, dtype=None, *, num_outputs: int | None = None) -> dict:
    """Zero parameters for `linear` (the tutorials' start).

    `{"w": zeros(d), "b": 0.0}`, or with `num_outputs=k` (a softmax classifier of `k` classes)
    `{"w": zeros((d, k)), "b": zeros(k)}`. NumPy arrays of JAX's default float dtype (float32 unless
    float64 is enabled): building them does no device work, and `run` takes them as they are.
    """
    dtype = jax.dtypes.canonicalize_dtype(float if dtype is None else dtype)
    if num_outputs is None:
        return {"w": np.zeros((num_features,), dtype), "b": np.zeros((), dtype)}
    validation.check_positive_int("num_outputs", num_outputs)
    return {"w": np.zeros((num_features, num_outputs), dtype), "b": np.zeros((num_outputs,), dtype)}


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


def logistic(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean logistic loss (binary cross entropy on logits) for targets `y` in {0, 1}.

    With `z` the logits (`linear`'s one output), the loss of an example is
    `-y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)) = log(1 + exp(z)) - y z`, computed as
    `logaddexp(0, z) - y z` (softplus), which neither overflows for large `z` nor loses the small
    losses of confident, correct predictions. Targets between 0 and 1 (soft labels) are allowed.

    Args:
      logits: `(n,)` logits `z = X w + b`.
      y: `(n,)` targets, 0 or 1.

    Returns:
      The mean loss, a scalar; `log 2` at `z = 0`.

    Example:
      >>> import jax.numpy as jnp, gdjax
      >>> round(float(gdjax.costs.logistic(jnp.zeros(3), jnp.array([0.0, 1.0, 1.0]))), 6)  # log 2
      0.693147
    """
    _check_same_shape("logistic", logits, y)
    return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits)


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Mean softmax cross entropy for class-index targets `y` in {0, ..., k-1}.

    With `Z` the `(n, k)` logits (`linear` with `w` of shape `(d, k)`), the loss of example `i` is
    `-log softmax(Z_i)[y_i] = logsumexp(Z_i) - Z_i[y_i]`; `logsumexp` subtracts the largest logit
    first, so large logits do not overflow.

    Args:
      logits: `(n, k)` logits.
      y: `(n,)` class indices (integers, or floats holding integers).

    Returns:
      The mean loss, a scalar; `log k` at `Z = 0`.
    """
    _check_class_targets("cross_entropy", logits, y)
    picked = jnp.take_along_axis(logits, y.astype(jnp.int32)[:, None], axis=1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)


def binary_accuracy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of examples whose predicted class (`logits > 0`) is the target (`y > 0.5`).

    Shaped like a loss, `(predictions, y) -> scalar`, so `make_cost(linear, binary_accuracy)` is the
    accuracy of a logistic regression as a function `(params, (X, y))` (see `accuracy`).
    """
    _check_same_shape("binary_accuracy", logits, y)
    return jnp.mean(((logits > 0) == (y > 0.5)).astype(jnp.result_type(logits, float)))


def categorical_accuracy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Fraction of examples whose largest logit is the target class index `y`."""
    _check_class_targets("categorical_accuracy", logits, y)
    hits = jnp.argmax(logits, axis=1) == y.astype(jnp.int32)
    return jnp.mean(hits.astype(jnp.result_type(logits, float)))


def _check_same_shape(name: str, pred, y) -> None:
    if jnp.shape(pred) != jnp.shape(y):
        raise ValueError(
            f"{name}: predictions have shape {jnp.shape(pred)} but targets have shape {jnp.shape(y)}"
        )


def _check_class_targets(name: str, logits, y) -> None:
    if jnp.ndim(logits) != 2 or jnp.shape(y) != jnp.shape(logits)[:1]:
        raise ValueError(
            f"{name}: needs (n, k) logits and (n,) class indices, got logits of shape "
            f"{jnp.shape(logits)} and targets of shape {jnp.shape(y)} (a linear model has k outputs "
            "when w has shape (d, k): init_linear(d, num_outputs=k))"
        )


ACCURACY = {logistic: binary_accuracy, cross_entropy: categorical_accuracy}  # loss -> its accuracy


def accuracy(cost: ModelCost) -> ModelCost:
    """The accuracy of a classifier cost, `(params, (X, y)) -> fraction correct`, as a `ModelCost`.

    `make_cost(model, logistic)` gives `make_cost(model, binary_accuracy)` and
    `make_cost(model, cross_entropy)` gives `make_cost(model, categorical_accuracy)`. Like every
    `ModelCost` it compares equal when built again. Pair it with `on_data` for a held-out metric.

    Raises:
      ValueError: `cost` is not a `make_cost(model, loss)` with a classification loss.
    """
    loss = getattr(cost, "loss", None)
    if not isinstance(cost, ModelCost) or loss not in ACCURACY:
        raise ValueError(
            "accuracy needs make_cost(model, logistic) or make_cost(model, cross_entropy), got "
            f"{getattr(cost, '__name__', cost)!r}"
        )
    return ModelCost(cost.model, ACCURACY[loss])


def on_data(fn: Callable[[PyTree, PyTree], jax.Array], data: PyTree) -> Callable[[PyTree], jax.Array]:
    """`params -> fn(params, data)`: a metric over fixed data for `run(metrics=)` and `sweep(metrics=)`.

    The data are constants of the compiled program, evaluated at each evaluation. Build each metric
    once and pass the same object to every call: a new function is a new program.

    Example:
      >>> import gdjax
      >>> X, y = gdjax.data.house_prices()
      >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
      >>> metrics = {"test_loss": gdjax.costs.on_data(cost, (X[:3], y[:3]))}
    """
    if not callable(fn):
        raise ValueError(f"on_data needs a function fn(params, data), got {fn!r}")

    def metric(params):
        return fn(params, data)

    metric.__name__ = f"{getattr(fn, '__name__', 'metric')}_on_data"
    return metric


def make_cost(model: Callable, loss: Callable = mse) -> ModelCost:
    """Builds `cost(params, (X, y)) = loss(model(params, X), y)`.

    The result is a `ModelCost`: a callable that compares equal (and hashes equal) for the same model
    and loss, so a jitted run keyed on it does not recompile when it is built again. For the linear
    model it offers the feature-major layout, and for linear least squares the Gram form and the
    closed-form optimum as well (`gdjax.run` and `gdjax.sweep` use them because the cost offers them).

    Example:
      >>> import gdjax
      >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
      >>> X, y = gdjax.data.house_prices()
      >>> round(float(cost(gdjax.init_linear(1), (X, y))), 2)  # mean of squared prices
      65228.57
    """
    return ModelCost(model, loss)


@dataclasses.dataclass(frozen=True)
class ModelCost:
    """`cost(params, (X, y)) = loss(model(params, X), y)` with the fast forms it can offer. Data with
    more parts (per-example weights, a mask) needs a cost of your own: `lambda p, b: ...`.

    Attributes:
      model: `model(params, X) -> predictions`.
      loss: `loss(predictions, y) -> scalar`.
    """

    model: Callable
    loss: Callable

    def __call__(self, params: PyTree, data: PyTree) -> jax.Array:
        X, y = data
        return self.loss(self.model(params, X), y)

    @property
    def __name__(self) -> str:
        return f"{getattr(self.loss, '__name__', 'loss')}_{getattr(self.model, '__name__', 'model')}"

    @property
    def feature_major(self) -> ModelCost | None:
        """The same cost for batches `(X.T, y)`, when the model has a feature-major form (linear)."""
        return ModelCost(linear_feature_major, self.loss) if self.model is linear else None

    @property
    def least_squares(self) -> bool:
        """Whether this is linear least squares, `mean((X w + b - y)**2)`."""
        return self.model is linear and self.loss is mse

    @property
    def value_and_grad(self) -> Callable | None:
        """`(params, data) -> (cost, gradient)` for linear least squares, else None (use autodiff).

        The same numbers as `jax.value_and_grad(self)` up to rounding, with the constant `2/n` applied
        to the `d`-sized gradient instead of to the `n`-sized residual: autodiff of `mean(r**2)` writes
        the cotangent `2 r / n`, one more pass over `(n,)` (a sweep's `(lanes, n)`) per step before
        the `X^T` product. The model's own `jax.vjp` computes `X^T r` and `sum(r)`: nothing about the
        linear model is written by hand.
        """
        least_squares = self.model in (linear, linear_feature_major) and self.loss is mse
        return _least_squares_value_and_grad(self) if least_squares else None

    def gram_form(self, data) -> tuple[Callable, GramStatistics] | None:
        """`(gram_mse, gram_statistics(X, y))` for linear least squares: O(d^2) per step."""
        if not self.least_squares:
            return None
        return gram_mse, gram_statistics(*_regression_pair(data))

    def optimal_value(self, data) -> float | None:
        """f* in closed form (float64 least squares) for linear least squares on `(X, y)`, else None."""
        if not self.least_squares or not _is_regression_pair(data):
            return None
        return reference.optimal_cost(*data)


@functools.cache
def _least_squares_value_and_grad(cost: ModelCost) -> Callable:
    def value_and_grad(params, data):
        X, y = data[0], data[1]
        if any(jnp.iscomplexobj(x) for x in jax.tree.leaves(params)):
            return jax.value_and_grad(cost)(params, data)  # autodiff's conjugation convention
        pred, pullback = jax.vjp(lambda p: cost.model(p, X), params)
        if jnp.shape(pred) != jnp.shape(y):
            cost.loss(pred, y)  # raises mse's own message
        r = pred - y
        (grad,) = pullback(r.astype(pred.dtype))
        # Materialised once scaled: XLA may not fold 2/n into the gradient norm's square, where it
        # would move float32 overflow (and so a diverging lane's last step) with the vmapped width.
        scale = 2 / r.size
        grad = jax.lax.optimization_barrier(jax.tree.map(lambda g: g * jnp.asarray(scale, g.dtype), grad))
        return jnp.mean(r * r), grad

    return value_and_grad


def _is_regression_pair(data) -> bool:
    return (
        isinstance(data, tuple | list) and len(data) == 2 and np.ndim(data[0]) == 2 and np.ndim(data[1]) == 1
    )


def _regression_pair(data):
    if not _is_regression_pair(data):
        raise ValueError(
            "the least-squares Gram form needs data=(X, y) with X of shape (n, d) and y of shape (n,)"
        )
    return data


# ------------------------------------------------------------------------- least squares
class GramStatistics(NamedTuple):
    """Sufficient statistics of `mean((X w + b - y)**2)`, each with a leading axis of length 1.

    The leading axis makes them a one-example batch, so they pass through the data checks of
    `gdjax.loop` like any batch (full-batch only).
    """

    xtx: np.ndarray  # (1, d, d) X^T X (symmetrised)
    xsum: np.ndarray  # (1, d) X^T 1
    xty: np.ndarray  # (1, d) X^T y
    ysum: np.ndarray  # (1,) 1^T y
    yty: np.ndarray  # (1,) y^T y
    n: np.ndarray  # (1,) number of examples


def gram_statistics(X, y) -> GramStatistics:
    """`X^T X`, `X^T 1`, `X^T y`, `1^T y`, `y^T y` and `n`, computed once in float64 on the host.

    A run casts them to the params' dtype like any data (so float32 params get float32 statistics).
    """
    validation.check_regression_data(X, y)
    X = np.asarray(X, np.float64)
    y = np.asarray(y, np.float64)
    xtx = X.T @ X
    xtx = 0.5 * (xtx + xtx.T)  # exactly symmetric: autodiff of w^T G w gives (G + G^T) w
    return GramStatistics(
        xtx=xtx[None],
        xsum=X.sum(axis=0)[None],
        xty=(X.T @ y)[None],
        ysum=np.array([y.sum()]),
        yty=np.array([y @ y]),
        n=np.array([float(X.shape[0])]),
    )


def gram_mse(params: dict, stats: GramStatistics) -> jax.Array:
    """`mean((X w + b - y)**2)` from `gram_statistics(X, y)`, in O(d^2) instead of O(n d).

    `(w^T G w + 2 b s^T w + n b^2 - 2 c^T w - 2 b sum(y) + y^T y) / n` with `G = X^T X`,
    `s = X^T 1`, `c = X^T y`. The same function as `make_cost(linear, mse)` on `(X, y)`; its value
    carries an absolute round-off of about `eps * y^T y / n` (the terms cancel near the optimum), so
    suboptimalities below that are noise.
    """
    G, s, c, sy, yy, n = (x[0] for x in stats)
    w, b = params["w"], params["b"]
    quad = w @ (G @ w) + b * (2 * (s @ w) + n * b)
    lin = 2 * (c @ w + b * sy)
    return (quad - lin + yy) / n


@dataclasses.dataclass(frozen=True, eq=False)
class LeastSquaresProblem:
    """Linear least squares `mean((X w + b - y)**2)` as one object: cost, data, f*, curvature.

    Pass its parts to `run` and `sweep` (`gdjax.run(p.cost, rule, p.params0(), p.data, ...)`); the
    cost offers the fast forms (feature-major layout, Gram statistics), and the oracles come from
    `gdjax.reference` (float64, independent of autodiff).

    Example:
      >>> import gdjax
      >>> p = gdjax.least_squares_problem(*gdjax.data.line())
      >>> round(p.f_star, 6), round(p.curvature.max_stable_lr, 4)
      (0.0, 0.0845)
    """

    X: np.ndarray
    y: np.ndarray

    @property
    def cost(self) -> ModelCost:
        return make_cost(linear, mse)

    @property
    def data(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.X, self.y)

    def params0(self, dtype=None) -> dict:
        """Zero parameters, the tutorials' start."""
        return init_linear(self.X.shape[1], dtype)

    @functools.cached_property
    def solution(self) -> reference.LeastSquares:
        """The float64 least-squares solution (params, f*, condition number, rank)."""
        return reference.least_squares(self.X, self.y, full_output=True)

    @property
    def f_star(self) -> float:
        return self.solution.f_star

    @functools.cached_property
    def curvature(self) -> reference.Curvature:
        """L, mu, 2/L, the best constant step and its rate, from the Hessian's eigenvalues."""
        return reference.curvature(self.X)

    @functools.cached_property
    def gram(self) -> GramStatistics:
        return gram_statistics(self.X, self.y)


def least_squares_problem(X, y) -> LeastSquaresProblem:
    """A validated `LeastSquaresProblem` on `(X, y)` (finite, matching shapes)."""
    validation.check_regression_data(X, y)
    return LeastSquaresProblem(np.asarray(X), np.asarray(y))


# ------------------------------------------------------------------------- cost hyperparameters
def hyperparameters(cost: Callable) -> tuple[str, ...]:
    """Names of a cost's hyperparameters: its keyword parameters with numeric defaults.

    A cost `cost(params, data, l2=0.0, delta=1.0)` has hyperparameters `("l2", "delta")`. They are
    passed to the compiled program as arrays, so a new value never recompiles, and `gdjax.sweep`
    takes them as grid axes beside the rule's (`grid={"learning_rate": [...], "l2": [...]}`).
    """
    cost = cost.cost if isinstance(cost, BoundCost) else cost
    try:
        sig = inspect.signature(cost)
    except (TypeError, ValueError):
        return ()
    params = list(sig.parameters.values())
    names = []
    for i, p in enumerate(params):
        if i < 2 or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            continue
        default = p.default
        if isinstance(default, int | float) and not isinstance(default, bool):
            names.append(p.name)
    return tuple(names)


@dataclasses.dataclass(frozen=True, eq=False)
class BoundCost:
    """A cost with values for its hyperparameters: `bind(cost, l2=0.1)`.

    `gdjax.run` passes the values into the compiled program as arrays (a new value does not
    recompile); calling it directly is `cost(params, data, **values)`.
    """

    cost: Callable
    values: dict

    def __call__(self, params: PyTree, data: PyTree) -> jax.Array:
        return self.cost(params, data, **self.values)

    @property
    def __name__(self) -> str:
        return getattr(self.cost, "__name__", "cost")


def bind(cost: Callable, **values: Any) -> BoundCost:
    """`cost` with hyperparameter values (see `hyperparameters`), validated: finite real numbers.

    Example:
      >>> import jax.numpy as jnp, gdjax
      >>> def ridge(params, data, l2=0.0):
      ...     X, y = data
      ...     return jnp.mean((X @ params["w"] - y) ** 2) + l2 * jnp.sum(params["w"] ** 2)
      >>> gdjax.costs.hyperparameters(ridge)
      ('l2',)
      >>> cost = gdjax.costs.bind(ridge, l2=0.1)  # then bind(ridge, l2=0.2): the same program
    """
    if isinstance(cost, BoundCost):
        values = {**cost.values, **values}
        cost = cost.cost
    names = hyperparameters(cost)
    for key, value in values.items():
        if key not in names:
            raise ValueError(
                f"cost {getattr(cost, '__name__', cost)!r} has no hyperparameter {key!r}"
                + validation.nearest(key, names)
                + f"; its hyperparameters are its keyword parameters with numeric defaults: {list(names)}"
            )
        validation.check_finite_number(f"cost hyperparameter {key!r}", value)
        if np.ndim(value) != 0:
            raise ValueError(f"cost hyperparameter {key!r} must be a scalar, got shape {np.shape(value)}")
    return BoundCost(cost, dict(values))


def split(cost: Callable) -> tuple[Callable, dict]:
    """`(cost, values)`: a `BoundCost`'s function and values; any other cost with no values."""
    if isinstance(cost, BoundCost):
        return cost.cost, dict(cost.values)
    return cost, {}


# ------------------------------------------------------------------------------- test functions
def _sum_leaves(fn, params) -> jax.Array:
    return sum(jnp.sum(fn(leaf)) for leaf in jax.tree.leaves(params))


def quadratic(params: PyTree, data: PyTree = None) -> jax.Array:
    """`sum(x**2)` over every element of `params`. Minimum 0 at 0; `L = mu = 2`."""
    return _sum_leaves(lambda x: x * x, params)


def shifted_quadratic(params: PyTree, data: PyTree = None) -> jax.Array:
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

    def cost(params, data=None):
        x = jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(params)])
        if x.shape != (dim,):
            raise ValueError(f"ill_conditioned_quadratic(dim={dim}) got {x.shape[0]} parameters")
        return 0.5 * jnp.sum(jnp.asarray(h, x.dtype) * x * x)

    cost.__name__ = f"ill_conditioned_quadratic_{condition_number:g}"
    cost.curvature = h
    return cost


def rosenbrock(params: PyTree, data: PyTree = None) -> jax.Array:
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
    "BoundCost",
    "Cost",
    "bind",
    "hyperparameters",
    "GramStatistics",
    "LeastSquaresProblem",
    "ModelCost",
    "gram_mse",
    "gram_statistics",
    "least_squares_problem",
    "TEST_FUNCTIONS",
    "accuracy",
    "binary_accuracy",
    "categorical_accuracy",
    "cross_entropy",
    "logistic",
    "on_data",
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
