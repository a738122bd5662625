"""The costs a config can name, in one registry (`COSTS`), and the `Problem`s they build.

Each entry (`CostSpec`) says how the config names it (`loss = "..."` on a model, `function = "..."`,
or `callable`), what it is (for `gdjax list`), how it builds a `Problem` from the cost's table and the
data, and which metrics and figures apply. The config reader takes its choices of loss and test
function from the registry, so a cost registered before a config is read is one entry, nowhere else:

    register(classifier("hinge2", cost, grad, accuracy, binary=True, description="..."))

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
`gdjax.study.usercode.load_reference`.

`build_problems(cfg)` turns a config's costs into `Problem`s (data loaded by `load_data`, starts,
closed-form or reference optima, hand-derived gradients and the metrics the runs record).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import costs, reference
from gdjax.study.datasets import Dataset, ProblemError, read_data, shown_values, split
from gdjax.study.usercode import call_init, check_gradient_shape, check_scalar_cost, load_reference
from gdjax.sweep import Init
from gdjax.types import PyTree

__all__ = [
    "COSTS",
    "CostSpec",
    "Dataset",
    "Problem",
    "ProblemError",
    "build_problem",
    "check_scalar_cost",
    "classifier",
    "cross_entropy_accuracy",
    "cross_entropy_cost",
    "cross_entropy_grad",
    "init_classifier",
    "load_reference",
    "logistic_accuracy",
    "logistic_cost",
    "logistic_grad",
    "names",
    "read_data",
    "reference_optimum",
    "register",
    "spec_of",
    "split",
    "with_l2",
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
        objective = lambda v: cost(unravel(v), data64)  # noqa: E731
        f = jax.jit(objective)

        @jax.jit
        def newton(v):
            """The gradient, its norm, the Newton step and the slope along it: one program (the
            gradient, the Hessian and the solve compiled apart, with eager norms and products,
            were most of a second per problem)."""
            gv = jax.grad(objective)(v)
            # The least-squares (minimum-norm) step: a softmax's unpenalised biases leave the
            # Hessian singular along "every bias + c", where a solve stepped off to 1e13 and the
            # cost, cancelling in float64, read below its true minimum.
            step = jnp.linalg.lstsq(jax.hessian(objective)(v), -gv)[0]
            return jnp.linalg.norm(gv), step, gv @ step

        def solved(x, fx, it, norm):
            params = jax.tree.map(np.asarray, unravel(jnp.asarray(x)))
            return fx, params, f"Newton, float64 ({it} steps, gradient norm {norm:.1e})"

        x0 = x
        x = np.asarray(x)
        fx = float(f(x))
        for it in range(max_iter):
            norm, step, slope = (np.asarray(a) for a in newton(x))
            norm, slope = float(norm), float(slope)
            if norm <= 1e-12 * max(1.0, abs(fx)):
                return solved(x, fx, it, norm)
            if -slope <= 1e-15 * abs(fx) and norm <= 1e-8 * max(1.0, abs(fx)):
                # The Newton decrement: the step would lower f by less than float64 resolves. Where
                # the Hessian is singular (a softmax's biases), the gradient's rounding in the null
                # direction stays (7.7e-12 on 3 digits classes), and no step removes it.
                return solved(x, fx, it, norm)
            if not np.all(np.isfinite(step)) or slope >= 0:
                return None  # not a descent direction: not strictly convex here
            t = 1.0
            while t > 1e-12:
                trial = float(f(x + t * step))
                if trial <= fx + 1e-4 * t * slope:
                    break
                t *= 0.5
            else:  # no decrease measurable in float64: as good as it gets, if the gradient says so
                if norm <= 1e-8 * max(1.0, abs(fx)):
                    return solved(x, fx, it, norm)
                return _lbfgs_optimum(cost, x0, unravel, data64)
            x, fx = x + t * step, trial
        return None


# --------------------------------------------------------------------------------------- problems
class Problem(NamedTuple):
    """One cost of a config, ready to run: what the sweeps take and what the answers are.

    Attributes:
      label: the cost's label.
      config: the cost's part of the config (`config.CostConfig`).
      cost: `cost(params, data) -> scalar`.
      params0: the start, in the runs' dtype.
      data: `(X, y)` in the runs' dtype, or None for test functions.
      dataset: the float64 data (`Dataset`), or None.
      f_star: the optimal cost (closed form), or None when unknown.
      minimizer: the optimal params (closed form), or None.
      curvature: `L`, `mu`, `max_stable_lr` (2/L), `best_lr` (2/(L+mu)), `condition_number`, or {}.
      analytic: a hand-derived gradient `analytic(params, data)` for the gradient check, or None.
      metrics: `{name: fn(params) -> scalar}` recorded at every evaluation of the runs: the cost
        kind's own (`accuracy` for a classifier) and the config's `metrics` on the training data,
        `test_loss` and `test_<name>` of each on the held-out split; None when there are none.
    """

    label: str
    config: Any
    cost: Callable
    params0: PyTree
    data: tuple | None
    dataset: Dataset | None
    f_star: float | None
    minimizer: PyTree | None
    curvature: dict
    analytic: Callable | None
    metrics: dict | None = None
    f_star_source: str = ""  # how f_star was obtained ("closed form", "known minimum", "Newton, float64 ...")

    @property
    def num_params(self) -> int:
        return int(sum(np.size(x) for x in jax.tree.leaves(self.params0)))


@dataclasses.dataclass(frozen=True)
class CostSpec:
    """One kind of cost a config can name: an entry of `COSTS`.

    Attributes:
      name: what the config writes: `loss = "<name>"` (on a `model`), `function = "<name>"`, or
        `callable` for the user's own cost.
      key: the config key that names it: "loss", "function" or "callable".
      description: one line, for `gdjax list`.
      build: `build(cost_config, dataset, dtype) -> Problem` (`dataset` None without data); raises
        `ProblemError` naming the cost's key at fault.
      metrics: what its runs record on the training data besides the loss; with a held-out split,
        each also as `test_<name>`, and `test_loss`.
      figures: the run-folder plots (`[outputs] plots`) that need this kind of cost.
      linear_only: a loss that fits a linear model only (`model = "linear"`).
    """

    name: str
    key: str
    description: str
    build: Callable[..., Problem]
    metrics: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    linear_only: bool = False


COSTS: dict[str, CostSpec] = {}


def register(spec: CostSpec) -> CostSpec:
    """Adds `spec` to `COSTS`: configs read after this can name it (`gdjax list` shows it)."""
    if spec.key not in ("loss", "function", "callable"):
        raise ValueError(f"a cost is named by loss, function or callable, not {spec.key!r}")
    COSTS[spec.name] = spec
    return spec


def names(key: str) -> tuple[str, ...]:
    """The registered costs a config names with `key` ("loss" or "function")."""
    return tuple(n for n, s in COSTS.items() if s.key == key)


def spec_of(c) -> CostSpec:
    """The registry entry of a `config.CostConfig`."""
    if c.callable is not None:
        return COSTS["callable"]
    return COSTS[c.function if c.function is not None else c.loss]


def build_problem(c, dataset: Dataset | None, dtype, *, seed: int = 0) -> Problem:
    """The `Problem` of the cost `c` on `dataset`, with the config's own `metrics` added. `seed` is
    the study's first seed: a callable cost with `init(key)` instead of `params0` starts there.

    Raises:
      ProblemError: with the cost's key at fault.
    """
    spec = spec_of(c)
    if spec.key == "callable":
        p = _callable_problem(c, dataset, dtype, seed)
    else:
        p = spec.build(c, dataset, dtype)
    if not c.metrics:
        return p
    metrics = dict(p.metrics or {})
    train = p.data
    test = _test_batch(dataset, dtype) if dataset is not None and dataset.X_test is not None else None
    for i, ref in enumerate(c.metrics):
        name = ref.rpartition(":")[2].rpartition(".")[2]
        if name in metrics or (test is not None and f"test_{name}" in metrics):
            raise ProblemError(
                f"metrics[{i}]",
                f"a metric named {name!r} is already recorded ({', '.join(metrics)}): name the function "
                "differently",
            )
        try:
            fn = load_reference(ref)
            check_scalar_cost(fn, p.params0, train, what="metric")
        except ValueError as err:
            raise ProblemError(f"metrics[{i}]", f"{ref}: {err}") from None
        metrics[name] = bound(fn, train)
        if test is not None:
            metrics[f"test_{name}"] = bound(fn, test)
    return p._replace(metrics=metrics)


def _curvature_dict(c: reference.Curvature) -> dict:
    """The curvature a problem reports (manifest, summaries): `Curvature` without its `rate`."""
    return {k: getattr(c, k) for k in ("L", "mu", "max_stable_lr", "best_lr", "condition_number")}


def _test_batch(dataset: Dataset, dtype):
    return jnp.asarray(dataset.X_test, dtype), jnp.asarray(dataset.y_test, dtype)


def _held_out_metrics(cost: Callable, dataset: Dataset | None, dtype) -> dict | None:
    """`{"test_loss": ...}` over the held-out split, or None without one."""
    if dataset is None or dataset.X_test is None:
        return None
    return {"test_loss": bound(cost, _test_batch(dataset, dtype))}


def _reference_solve(cost, params0, host_data) -> tuple[float | None, object, str]:
    """f* of a smooth convex cost by a float64 Newton solve (`reference_optimum`); unknown
    (None, "") where it does not converge, e.g. a logistic regression on separable data without L2."""
    found = reference_optimum(cost, params0, host_data)
    return (None, None, "") if found is None else found


def _polynomial_features(X, X_test, degree: int, dtype) -> np.ndarray:
    """`x, ..., x**degree` in float64, refused (`ProblemError` at `degree`) where the squared loss's
    curvature, of the order of `max|x|**(2 degree)`, overflows the run's dtype: no step size could
    move such a run, and its first step would be non-finite."""
    largest = max(float(np.max(np.abs(x), initial=0.0)) for x in (X, X_test) if x is not None)
    with np.errstate(over="ignore"):
        curvature = np.float64(largest) ** (2 * degree)
    if not np.isfinite(curvature) or curvature > np.finfo(dtype).max:
        raise ProblemError(
            "degree",
            f"x**{2 * degree}, the scale of the squared loss's curvature, overflows "
            f"{np.dtype(dtype).name} on this data (largest |x| is {largest:.3g}); use a lower "
            "degree, or `standardize = true` in [data]",
        )
    return reference.polynomial_features(X, degree)


def _least_squares_problem(c, dataset: Dataset, dtype) -> Problem:
    """A linear or polynomial model under the mean squared error; f* in closed form (or by Newton with L2)."""
    X, y = dataset.X, dataset.y
    if c.model == "polynomial":
        if X.shape[1] != 1:
            raise ProblemError(
                "model", f"a polynomial model takes one input feature; the data has {X.shape[1]}"
            )
        features = _polynomial_features(X, dataset.X_test, c.degree, dtype)
        model = costs.polynomial(c.degree)
        num_w = c.degree

        def analytic(p, b, degree=c.degree):
            return reference.mse_grad(p, (reference.polynomial_features(b[0], degree), b[1]))

    else:
        features, model, num_w, analytic = X, costs.linear, X.shape[1], reference.mse_grad
    cost = costs.make_cost(model, costs.mse)
    metrics = _held_out_metrics(cost, dataset, dtype)  # the loss itself, unpenalised
    params0 = costs.init_linear(num_w, dtype)
    if c.l2:  # ridge: f* from the float64 Newton solve (one step on a quadratic)
        cost, analytic = with_l2(cost, analytic, c.l2)
        f_star, minimizer, source = _reference_solve(cost, params0, (X, y))
    else:
        ls = reference.least_squares(features, y, full_output=True)
        f_star, minimizer, source = ls.f_star, ls.params, "closed form (least squares, float64)"
    return Problem(
        label=c.label,
        config=c,
        cost=cost,
        params0=params0,
        data=(jnp.asarray(X, dtype), jnp.asarray(y, dtype)),
        dataset=dataset,
        f_star=f_star,
        minimizer=minimizer,
        curvature=_curvature_dict(reference.curvature(features)) if not c.l2 else {},
        analytic=analytic,
        metrics=metrics,
        f_star_source=source,
    )


def _binary_targets(name: str, values: np.ndarray) -> int:
    """2, when the targets are 0/1."""
    if not np.all(np.isin(values, (0.0, 1.0))):
        raise ProblemError(
            "loss",
            f'loss = "{name}" needs 0/1 targets; the targets are {shown_values(values)}: pick two classes '
            f'with [data] classes = [a, b], or use loss = "cross_entropy" for class indices',
        )
    return 2


def _class_indices(name: str, values: np.ndarray) -> int:
    """The number of classes k, when the targets are class indices 0, 1, ..., k-1."""
    if np.any(values < 0) or np.any(values != np.round(values)):
        raise ProblemError(
            "loss",
            f'loss = "{name}" needs class indices 0, 1, ..., k-1 as targets; the targets are '
            f"{shown_values(values)}: relabel them with [data] classes = [...]",
        )
    num_classes = int(values.max()) + 1
    if num_classes < 2 or num_classes > 100_000:
        raise ProblemError(
            "loss", f"{name} needs between 2 and 100000 classes; the targets are {shown_values(values)}"
        )
    return num_classes


def classifier(
    name: str, cost: Callable, grad: Callable | None, accuracy: Callable, *, binary: bool, description: str
) -> CostSpec:
    """The registry entry of a classification loss of a linear model, `loss = "<name>"`.

    `cost(params, data)`, its hand-derived `grad` (None: the gradient check compares autodiff with
    finite differences only) and `accuracy(params, data)` take `params = {"w": (d,), "b": ()}` and
    0/1 targets when `binary`, else `{"w": (d, k), "b": (k,)}` and class indices 0..k-1; they start
    at zero. The runs record `accuracy` (and `test_loss`, `test_accuracy` on a held-out split); with
    `l2`, f* comes from a float64 Newton solve.
    """

    def build(c, dataset: Dataset, dtype) -> Problem:
        values = np.unique(dataset.y_all)
        num_classes = (_binary_targets if binary else _class_indices)(name, values)
        train = (jnp.asarray(dataset.X, dtype), jnp.asarray(dataset.y, dtype))
        metrics = {"accuracy": bound(accuracy, train)}
        if dataset.X_test is not None:
            test = _test_batch(dataset, dtype)
            metrics["test_loss"] = bound(cost, test)  # the loss itself, unpenalised
            metrics["test_accuracy"] = bound(accuracy, test)
        params0 = costs.init_linear(dataset.X.shape[1], dtype, num_outputs=None if binary else num_classes)
        loss, analytic = cost, grad
        f_star, minimizer, source = None, None, ""
        if c.l2:  # strictly convex: a minimiser exists (without L2, separable data has none): solve for f*
            loss, analytic = with_l2(cost, grad, c.l2)
            f_star, minimizer, source = _reference_solve(loss, params0, (dataset.X, dataset.y))
        return Problem(
            label=c.label,
            config=c,
            cost=loss,
            params0=params0,
            data=train,
            dataset=dataset,
            f_star=f_star,
            minimizer=minimizer,
            curvature={},
            analytic=analytic,
            metrics=metrics,
            f_star_source=source,
        )

    return CostSpec(name, "loss", description, build, ("accuracy",), ("accuracy",), linear_only=True)


def _test_function_problem(c, dataset: None, dtype) -> Problem:
    """A classic test function at the config's start, with its known minimum and curvature."""
    if c.function == "ill_conditioned_quadratic":
        cost = costs.ill_conditioned_quadratic(c.condition_number, c.dim)
        h = np.asarray(cost.curvature)
        f_star, x_star, curv = 0.0, np.zeros(c.dim), _curvature_dict(reference.curvature_of(h))

        def analytic(x, data=None, h=h):
            return jnp.asarray(h, x.dtype) * x

    else:
        tf = costs.TEST_FUNCTIONS[c.function]
        cost, f_star, x_star = tf.cost, tf.f_star, tf.minimizer(c.dim)
        if c.function == "rosenbrock":
            curv, analytic = {}, reference.rosenbrock_grad
        else:
            curv = _curvature_dict(reference.curvature_of(np.full(c.dim, 2.0)))
            shift = 0.0 if c.function == "quadratic" else 3.0

            def analytic(x, data=None, shift=shift):
                return 2.0 * (x - shift)

    return Problem(
        label=c.label,
        config=c,
        cost=cost,
        params0=jnp.asarray(c.start, dtype),
        data=None,
        dataset=None,
        f_star=float(f_star),
        minimizer=np.asarray(x_star, np.float64),
        curvature=curv,
        analytic=analytic,
        f_star_source="known minimum",
    )


def _callable_problem(c, dataset: Dataset | None, dtype, seed: int = 0) -> Problem:
    """The user's own `cost(params, data)`, its start and optional analytic gradient, checked abstractly.

    Given `init(key)` instead of `params0`, the start of `seed` (the study's first) stands for the
    problem's: `init(gdjax.init_key(seed))`."""
    try:
        cost = load_reference(c.callable)
    except ValueError as err:
        raise ProblemError("callable", str(err)) from None
    host_data = None if dataset is None else (dataset.X, dataset.y)
    if c.params0 is None:  # only init(key): the first seed's start stands for the problem's
        try:
            start = jax.tree.map(lambda x: x[0], Init(load_reference(c.init)).starts([seed]))
        except ValueError as err:
            raise ProblemError("init", str(err)) from None
    elif isinstance(c.params0, str):
        try:
            init = load_reference(c.params0)
        except ValueError as err:
            raise ProblemError("params0", str(err)) from None
        try:
            start = call_init(init, host_data)
        except Exception as err:
            raise ProblemError(
                "params0", f"{c.params0} failed: {type(err).__name__}: {str(err).strip()[:200]}"
            ) from None
    else:
        start = np.asarray(c.params0, np.float64)
    try:
        leaves = jax.tree.leaves(start)
        if not leaves:
            raise ValueError("it holds no arrays")
        params0 = jax.tree.map(lambda x: jnp.asarray(x, dtype), start)
    except (TypeError, ValueError) as err:
        raise ProblemError(
            "params0", f"the start must be a pytree of numeric arrays ({type(err).__name__}: {err})"
        ) from None
    batch = None if dataset is None else (jnp.asarray(dataset.X, dtype), jnp.asarray(dataset.y, dtype))
    try:
        check_scalar_cost(cost, params0, batch)
    except ValueError as err:
        raise ProblemError("callable", f"{c.callable}: {err}") from None
    analytic = None
    if c.analytic is not None:
        try:
            analytic = load_reference(c.analytic)
            check_gradient_shape(analytic, params0, batch)
        except ValueError as err:
            raise ProblemError("analytic", str(err)) from None
    return Problem(
        label=c.label,
        config=c,
        cost=cost,
        params0=params0,
        data=batch,
        dataset=dataset,
        f_star=None,
        minimizer=None,
        curvature={},
        analytic=analytic,
        metrics=_held_out_metrics(cost, dataset, dtype),
    )


# The costs a config can name. A new one is one `register(...)` call, here or in the user's own code
# before the config is read.
register(
    CostSpec(
        "mse",
        "loss",
        "mean squared error of a linear or polynomial model; f* in closed form (least squares)",
        _least_squares_problem,
        figures=("fitted_line",),
    )
)
register(
    classifier(
        "logistic",
        logistic_cost,
        logistic_grad,
        logistic_accuracy,
        binary=True,
        description="logistic loss of a linear model on 0/1 targets, with accuracy",
    )
)
register(
    classifier(
        "cross_entropy",
        cross_entropy_cost,
        cross_entropy_grad,
        cross_entropy_accuracy,
        binary=False,
        description="softmax cross entropy of a linear model on classes 0..k-1, with accuracy",
    )
)
_ILL = "0.5 sum h_i x_i**2, h from 1 to cost.condition_number (cost.dim)"
for _name in ("quadratic", "shifted_quadratic", "ill_conditioned_quadratic", "rosenbrock"):
    _about = _ILL if _name == "ill_conditioned_quadratic" else costs.TEST_FUNCTIONS[_name].description
    register(CostSpec(_name, "function", _about, _test_function_problem))
register(
    CostSpec(
        "callable",
        "callable",
        'your own cost(params, data): cost.callable = "file.py:cost" and cost.params0 (any cost: '
        'cost.metrics = ["file.py:accuracy"] records your metrics)',
        _callable_problem,
    )
)
del _name, _about
