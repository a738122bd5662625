"""Costs a config can name beyond the core's least squares: classification losses and user callables.

Classification (`[cost] loss = "logistic"` or `"cross_entropy"` on a linear model):

    logistic:       z = X w + b,        cost = mean(log(1 + exp(z)) - y z),        y in {0, 1}
    cross_entropy:  Z = X W + b (n, k), cost = mean(logsumexp(Z_i) - Z_i[y_i]),    y in {0, ..., k-1}

with `params = {"w": (d,), "b": ()}` (logistic) or `{"w": (d, k), "b": (k,)}` (cross entropy),
starting at zero, and their hand-derived gradients for the gradient check,

    logistic:       grad_w = X^T (sigmoid(z) - y) / n,          grad_b = mean(sigmoid(z) - y)
    cross_entropy:  grad_W = X^T (softmax(Z) - onehot(y)) / n,  grad_b = mean(softmax(Z) - onehot(y))

Accuracy is the fraction of examples whose predicted class (`z > 0`, `argmax Z`) is the target.
Each function is defined once at module level, so that every sweep over them shares its compiled
program (a new closure per call would compile again).

User callables (`[cost] callable = "file.py:cost"` or `"module:cost"`) are imported by
`load_reference`: a file is executed once per process as a module of its own (its folder on
`sys.path` while it loads, so it may import its neighbours); every failure is a `ValueError` that
names the file or module and the function.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import costs

__all__ = [
    "accuracy_fn",
    "check_scalar_cost",
    "cross_entropy_accuracy",
    "cross_entropy_cost",
    "cross_entropy_grad",
    "init_classifier",
    "load_reference",
    "logistic_accuracy",
    "logistic_cost",
    "logistic_grad",
]


# ------------------------------------------------------------------------------ classification
# The math lives in the core (`gdjax.costs.logistic`, `cross_entropy`, their accuracies, and the
# float64 oracles `gdjax.reference.logistic_grad` / `cross_entropy_grad`). These module-level
# `(params, data)` forms keep the row-major layout the study has always run in, and the
# hand-derived gradients here stay JAX functions so that the gradient check vmaps them.
def logistic_cost(params, data):
    """Mean logistic loss (binary cross entropy on logits) of a linear model; `y` holds 0 / 1."""
    X, y = data
    return costs.logistic(costs.linear(params, X), y)


def logistic_grad(params, data):
    """The hand-derived gradient of `logistic_cost` (`gdjax.reference.logistic_grad` in JAX)."""
    X, y = data
    r = jax.nn.sigmoid(costs.linear(params, X)) - y  # (n,)
    return {"w": X.T @ r / X.shape[0], "b": jnp.mean(r)}


def logistic_accuracy(params, data):
    """Fraction of examples with `(z > 0) == y`."""
    X, y = data
    return costs.binary_accuracy(costs.linear(params, X), y)


def cross_entropy_cost(params, data):
    """Mean softmax cross entropy of a linear model with one output per class; `y` holds class indices."""
    X, y = data
    return costs.cross_entropy(costs.linear(params, X), y)


def cross_entropy_grad(params, data):
    """The hand-derived gradient of `cross_entropy_cost` (`gdjax.reference.cross_entropy_grad` in JAX)."""
    X, y = data
    Z = costs.linear(params, X)  # (n, k)
    R = jax.nn.softmax(Z, axis=1) - jax.nn.one_hot(y.astype(jnp.int32), Z.shape[1], dtype=Z.dtype)
    return {"w": X.T @ R / X.shape[0], "b": jnp.mean(R, axis=0)}


def cross_entropy_accuracy(params, data):
    """Fraction of examples whose largest logit is the target class."""
    X, y = data
    return costs.categorical_accuracy(costs.linear(params, X), y)


LOSSES = {
    "logistic": (logistic_cost, logistic_grad, logistic_accuracy),
    "cross_entropy": (cross_entropy_cost, cross_entropy_grad, cross_entropy_accuracy),
}


def init_classifier(loss: str, num_features: int, num_classes: int, dtype) -> dict:
    """Zero parameters of the linear classifier of `loss`."""
    return costs.init_linear(num_features, dtype, num_outputs=None if loss == "logistic" else num_classes)


def accuracy_fn(loss: str) -> Callable:
    return LOSSES[loss][2]


def bound(fn: Callable, data) -> Callable:
    """`params -> fn(params, data)`: a metric over fixed data (`gdjax.costs.on_data`)."""
    return costs.on_data(fn, data)


# ------------------------------------------------------------------------------- user code
_MODULES: dict[tuple, object] = {}


def _load_file(path: str):
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key in _MODULES:
        return _MODULES[key]
    name = "_gdjax_user_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} cannot be loaded as Python code")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ValueError(f"{path} failed to load: {type(err).__name__}: {_first_line(err)}") from None
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    _MODULES[key] = module
    return module


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def load_reference(ref: str) -> Callable:
    """The function that `"path/file.py:name"` or `"module:name"` names (`name` may be dotted).

    Raises:
      ValueError: the file or module is missing or fails to load, or has no such function.
    """
    target, _, name = ref.rpartition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        if not os.path.isfile(target):
            raise ValueError(f"file not found: {target}")
        module, where = _load_file(target), target
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as err:
            raise ValueError(
                f"no module named {err.name!r} (for {ref!r}; a file is named by its path, ending in .py)"
            ) from None
        except Exception as err:
            raise ValueError(
                f"module {target!r} failed to import: {type(err).__name__}: {_first_line(err)}"
            ) from None
        where = f"module {target!r}"
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
            from gdjax.validation import nearest

            raise ValueError(
                f"{where} has no function {name!r}{nearest(part, names)}"
                + (f"; it defines {', '.join(sorted(names))}" if names else "")
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{where}: {name!r} is a {type(obj).__name__}, not a function")
    return obj


def call_init(init: Callable, data):
    """`init()` or `init(data)`, whichever the function's signature takes."""
    try:
        sig = inspect.signature(init)
        takes_data = any(
            p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for p in sig.parameters.values()
        )
    except (TypeError, ValueError):
        takes_data = True
    return init(data) if takes_data else init()


def check_scalar_cost(cost: Callable, params, data) -> None:
    """Traces `cost(params, data)` abstractly (nothing runs) and checks that it is a real scalar.

    Raises:
      ValueError: the cost fails, or returns something else than a real floating scalar.
    """
    try:
        out = jax.eval_shape(cost, params, data)
    except Exception as err:  # the user's cost failed: say how, not where inside JAX
        raise ValueError(
            f"the cost failed on params0 and the data: {type(err).__name__}: {_first_line(err)}"
        ) from None
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"the cost must return a real scalar, got {type(out).__name__}")
    if shape != ():
        raise ValueError(
            f"the cost must return a scalar (what is minimised), got an array of shape {shape}: "
            "reduce it, e.g. with jnp.mean or jnp.sum"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"the cost must return a real floating-point scalar, got dtype {dtype}")


def check_gradient_shape(grad: Callable, params, data) -> None:
    """Checks abstractly that `grad(params, data)` has the structure and shapes of `params`."""
    try:
        out = jax.eval_shape(grad, params, data)
    except Exception as err:
        raise ValueError(
            f"the gradient failed on params0 and the data: {type(err).__name__}: {_first_line(err)}"
        ) from None
    want = jax.tree.map(lambda x: tuple(np.shape(x)), params)
    got = jax.tree.map(lambda x: tuple(getattr(x, "shape", ())), out)
    if jax.tree.structure(out) != jax.tree.structure(params) or want != got:
        raise ValueError(f"the gradient must have the params' structure and shapes {want}, got {got}")


# ---------------------------------------------------------------------------- L2 and reference optima
def with_l2(cost: Callable, grad: Callable | None, l2: float) -> tuple[Callable, Callable | None]:
    """`cost + l2/2 ||w||^2` (the weights, not the bias) and its hand-derived gradient."""

    def penalised(params, data):
        return cost(params, data) + 0.5 * l2 * jnp.sum(params["w"] ** 2)

    if grad is None:
        return penalised, None

    def penalised_grad(params, data):
        g = grad(params, data)
        return {**g, "w": g["w"] + l2 * params["w"]}

    return penalised, penalised_grad


_NEWTON_MAX_PARAMS = 200  # above this the Hessian costs more than L-BFGS's many cheap steps


def _lbfgs_optimum(cost, x0, unravel, data64):
    """SciPy's L-BFGS-B on the float64 cost, to a gradient norm at float64 noise (larger models)."""
    from scipy import optimize

    value_and_grad = jax.jit(jax.value_and_grad(lambda v: cost(unravel(v), data64)))

    def fun(v):
        f, g = value_and_grad(jnp.asarray(v))
        return float(f), np.asarray(g, np.float64)

    out = optimize.minimize(
        fun,
        np.asarray(x0),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 20000, "maxcor": 30, "ftol": 0.0, "gtol": 1e-13},
    )
    f, g = fun(out.x)
    norm = float(np.linalg.norm(g))
    if not np.isfinite(f) or norm > 1e-8 * max(1.0, abs(f)):
        return None
    params = jax.tree.map(np.asarray, unravel(jnp.asarray(out.x)))
    return f, params, f"L-BFGS, float64 ({out.nit} steps, gradient norm {norm:.1e})"


def reference_optimum(
    cost: Callable, params0, data, *, max_iter: int = 100
) -> tuple[float, object, str] | None:
    """`(f*, x*, how)` from a float64 reference solve, or None when it does not converge.

    For the smooth, strictly convex costs of a suite (ridge, L2-regularised logistic and softmax
    regression), in float64 inside `jax.enable_x64(True)`, from `params0`: Newton's method with a
    backtracking line search and the exact Hessian (`jax.hessian`) up to 200 parameters, until the
    gradient norm is at the float64 noise level of the cost (`1e-12 max(1, |f|)`); SciPy's L-BFGS-B
    above that, accepted when the gradient norm is below `1e-8 max(1, |f|)` (then f is within about
    `|grad|^2 / mu` of f*). `how` records the method and the final gradient norm, as the report shows.
    """
    from jax.flatten_util import ravel_pytree

    with jax.enable_x64(True):
        x, unravel = ravel_pytree(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params0))
        data64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), data)
        if x.size > _NEWTON_MAX_PARAMS:
            return _lbfgs_optimum(cost, x, unravel, data64)
        f = jax.jit(lambda v: cost(unravel(v), data64))
        g = jax.jit(jax.grad(lambda v: cost(unravel(v), data64)))
        h = jax.jit(jax.hessian(lambda v: cost(unravel(v), data64)))
        fx = float(f(x))
        for it in range(max_iter):
            gx = g(x)
            norm = float(jnp.linalg.norm(gx))
            if norm <= 1e-12 * max(1.0, abs(fx)):
                return (
                    fx,
                    jax.tree.map(np.asarray, unravel(x)),
                    f"Newton, float64 ({it} steps, gradient norm {norm:.1e})",
                )
            step = jnp.linalg.solve(h(x), -gx)
            if not bool(jnp.all(jnp.isfinite(step))) or float(gx @ step) >= 0:
                return None  # not a descent direction: not strictly convex here
            t = 1.0
            while t > 1e-12:
                trial = float(f(x + t * step))
                if trial <= fx + 1e-4 * t * float(gx @ step):
                    break
                t *= 0.5
            else:
                # no decrease is measurable in float64: x is as good as it gets
                return (
                    fx,
                    jax.tree.map(np.asarray, unravel(x)),
                    f"Newton, float64 ({it} steps, gradient norm {norm:.1e})",
                )
            x, fx = x + t * step, trial
        return None
