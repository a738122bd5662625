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
`gdjax.study.usercode.load_reference`.

`build_problems(cfg)` turns a config's costs into `Problem`s (data loaded by `load_data`, starts,
closed-form or reference optima, hand-derived gradients and the metrics the runs record).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import costs, data, reference
from gdjax.io import format_number
from gdjax.study import config as config_lib
from gdjax.study.config import CostConfig, ExperimentConfig, locate_error
from gdjax.study.usercode import call_init, check_gradient_shape, check_scalar_cost, load_reference
from gdjax.types import PyTree

__all__ = [
    "Dataset",
    "Problem",
    "accuracy_fn",
    "build_problems",
    "check_scalar_cost",
    "cross_entropy_accuracy",
    "cross_entropy_cost",
    "cross_entropy_grad",
    "init_classifier",
    "load_data",
    "load_reference",
    "logistic_accuracy",
    "logistic_cost",
    "logistic_grad",
    "split",
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


# ------------------------------------------------------------------------ a config's problems
_AXIS_NAMES = {"house_prices": ("bedrooms", "price (thousands)")}


class Dataset(NamedTuple):
    """The config's data in float64: the training split the runs see, and the held-out split.

    With `[data] test_fraction`, `X`/`y` are the training examples and `X_test`/`y_test` the held-out
    ones (drawn with the study's first seed; the standardisation is fitted on the training split
    only); without it, `X_test` and `y_test` are None.
    """

    X: np.ndarray  # (n, d) float64, what the model sees (standardised if asked)
    y: np.ndarray  # (n,)
    X_raw: np.ndarray  # (n, d) before standardisation
    standardizer: data.Standardizer | None
    feature_names: tuple[str, str]  # axis labels for a one-feature plot
    X_test: np.ndarray | None = None  # (n_test, d), standardised like X
    y_test: np.ndarray | None = None  # (n_test,)

    @property
    def y_all(self) -> np.ndarray:
        return self.y if self.y_test is None else np.concatenate([self.y, self.y_test])


def split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and held-out example indices: `round(fraction * n)` held out, drawn by `seed`."""
    num_test = int(round(fraction * n))
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def load_data(
    cfg: ExperimentConfig, d: config_lib.DataConfig | None = None, where: str = "data"
) -> Dataset | None:
    """Loads, splits and standardises data in float64 (default: the study's `[data]`; a suite's
    problem passes its own, with `where` its place in the config); None for test functions."""
    d = cfg.data if d is None else d
    if d is None:
        return None
    names = _AXIS_NAMES.get(d.source, ("x", "y"))
    try:
        if d.source == "synthetic":
            s = data.synthetic(
                d.seed,
                d.num_examples,
                d.num_features,
                noise=d.noise,
                condition_number=d.condition_number,
                intercept=d.intercept,
            )
            X, y = s.X, s.y
        elif d.source == "csv":
            features = list(d.features) if d.features is not None else None
            exclude = list(d.exclude) if d.exclude is not None else None
            X, y = data.load_csv(d.path, target=d.target, features=features, exclude=exclude)
            names = (str(features[0]) if features else "x", str(d.target))
        elif d.source == "npz":
            X, y = data.load_npz(d.path, x_key=d.x_key, y_key=d.y_key)
        else:
            X, y = data.load(d.source)
    except ValueError as err:
        key = f"{where}.path" if d.path else f"{where}.source"
        if d.source == "csv" and "the features option" in str(err):
            key = f"{where}.features"
        elif d.source == "csv" and "the target option" in str(err):
            key = f"{where}.target"
        raise locate_error(cfg, key, str(err)) from None
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if d.classes is not None:
        keep = np.isin(y, d.classes)
        missing = [c for c in d.classes if not np.any(y == c)]
        if missing:
            found = np.unique(y)
            shown = ", ".join(format_number(v) for v in found[:12]) + (", ..." if found.size > 12 else "")
            raise locate_error(
                cfg,
                f"{where}.classes",
                f"no example has target {', '.join(format_number(c) for c in missing)}; "
                f"the targets are {shown}",
            )
        classes = np.asarray(d.classes, np.float64)
        X, y = X[keep], np.argmax(y[keep][:, None] == classes[None, :], axis=1).astype(np.float64)
    X_test = y_test = None
    if d.test_fraction is not None:
        n = X.shape[0]
        train, test = split(n, d.test_fraction, cfg.seeds[0])
        if train.size == 0 or test.size == 0:
            raise locate_error(
                cfg,
                f"{where}.test_fraction",
                f"test_fraction = {d.test_fraction} of {n} examples leaves "
                f"{'no training' if train.size == 0 else 'no test'} example; choose a fraction that "
                f"holds out between 1 and {n - 1} of them",
            )
        X, X_test, y, y_test = X[train], X[test], y[train], y[test]
    standardizer = None
    X_raw = X
    if d.standardize:
        standardizer = data.Standardizer.fit(X)
        X = standardizer.transform(X)
        X_test = None if X_test is None else standardizer.transform(X_test)
    return Dataset(X, y, X_raw, standardizer, names, X_test, y_test)


class Problem(NamedTuple):
    """One cost of a config, ready to run: what the sweeps take and what the answers are.

    Attributes:
      label: the cost's label.
      config: the cost's part of the config.
      cost: `cost(params, data) -> scalar`.
      params0: the start, in the runs' dtype.
      data: `(X, y)` in the runs' dtype, or None for test functions.
      dataset: the float64 data (`Dataset`), or None.
      f_star: the optimal cost (closed form), or None when unknown.
      minimizer: the optimal params (closed form), or None.
      curvature: `L`, `mu`, `max_stable_lr` (2/L), `best_lr` (2/(L+mu)), `condition_number`, or {}.
      analytic: a hand-derived gradient `analytic(params, data)` for the gradient check, or None.
      metrics: `{name: fn(params) -> scalar}` recorded at every evaluation of the runs:
        `accuracy` (training) for classification losses, `test_loss` and `test_accuracy` on the
        held-out split; None when there are none.
    """

    label: str
    config: CostConfig
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


def _curvature_dict(c: reference.Curvature) -> dict:
    """The curvature a problem reports (manifest, summaries): `Curvature` without its `rate`."""
    return {k: getattr(c, k) for k in ("L", "mu", "max_stable_lr", "best_lr", "condition_number")}


def _dtype(cfg: ExperimentConfig):
    if cfg.precision == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            'precision = "float64" needs float64 enabled: jax.config.update("jax_enable_x64", True) at '
            "start-up (the gdjax command does this for you); gdjax never flips the flag itself"
        )
    return jnp.float64 if cfg.precision == "float64" else jnp.float32


def build_problems(cfg: ExperimentConfig, dataset: Dataset | None = None) -> list[Problem]:
    """One `Problem` per cost of the config (or per problem of a suite). The study's `[data]` is
    loaded once and shared (`dataset`, if given, is it); a suite's problem loads its own."""
    dtype = _dtype(cfg)
    if dataset is None and cfg.data is not None and any(c.data is None for c in cfg.costs):
        dataset = load_data(cfg)
    problems = []
    for i, c in enumerate(cfg.costs):
        if cfg.is_suite:
            key = f"problems[{i}]"
        else:
            key = f"cost[{i}]" if len(cfg.costs) > 1 else "cost"
        d = cfg.data_of(c)
        own = dataset if c.data is None else load_data(cfg, c.data, f"{key}.data")
        if own is not None:
            try:
                names = d.features if d.source == "csv" else None
                data.check_representable(own.X, own.y, dtype, source=d.path or d.source, columns=names)
                if own.X_test is not None:
                    data.check_representable(
                        own.X_test, own.y_test, dtype, source=d.path or d.source, columns=names
                    )
            except ValueError as err:
                raise locate_error(cfg, "precision", str(err)) from None
        if c.callable is not None:
            problems.append(_callable_problem(cfg, c, key, own, dtype))
            continue
        if c.model is not None and c.loss in config_lib.CLASSIFICATION_LOSSES:
            problems.append(_classification_problem(cfg, c, key, own, dtype))
            continue
        if c.model is not None:
            X, y = own.X, own.y
            if c.model == "polynomial":
                if X.shape[1] != 1:
                    raise locate_error(
                        cfg,
                        f"{key}.model",
                        f"a polynomial model takes one input feature; the data has {X.shape[1]}",
                    )
                features = reference.polynomial_features(X, c.degree)
                model = costs.polynomial(c.degree)
                num_w = c.degree

                def analytic(p, b, degree=c.degree):
                    return reference.mse_grad(p, (reference.polynomial_features(b[0], degree), b[1]))

            else:
                features, model, num_w, analytic = X, costs.linear, X.shape[1], reference.mse_grad
            cost = costs.make_cost(model, costs.mse)
            metrics = _held_out_metrics(cost, own, dtype)  # the loss itself, unpenalised
            params0 = costs.init_linear(num_w, dtype)
            if c.l2:  # ridge: f* from the float64 Newton solve (one step on a quadratic)
                cost, analytic = with_l2(cost, analytic, c.l2)
                f_star, minimizer, source = _reference_solve(cost, params0, (X, y))
            else:
                ls = reference.least_squares(features, y, full_output=True)
                f_star, minimizer, source = ls.f_star, ls.params, "closed form (least squares, float64)"
            problems.append(
                Problem(
                    label=c.label,
                    config=c,
                    cost=cost,
                    params0=params0,
                    data=(jnp.asarray(X, dtype), jnp.asarray(y, dtype)),
                    dataset=own,
                    f_star=f_star,
                    minimizer=minimizer,
                    curvature=_curvature_dict(reference.curvature(features)) if not c.l2 else {},
                    analytic=analytic,
                    metrics=metrics,
                    f_star_source=source,
                )
            )
            continue
        x_star = None
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

        problems.append(
            Problem(
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
        )
    _check_cost_keys(cfg, problems)
    return problems


def _check_cost_keys(cfg: ExperimentConfig, problems: list[Problem]) -> None:
    """Every grid key that is not the rule's must be a hyperparameter of every (callable) cost.

    The config reader lets such keys through only when every cost is a callable (it cannot see a
    cost's parameters before importing it); here each cost is loaded, so the key is checked, with the
    nearest name of the rule's and the cost's as a suggestion.
    """
    for i, opt in enumerate(cfg.optimizers):
        for key in opt.cost_keys():
            for j, p in enumerate(problems):
                names = costs.hyperparameters(p.cost)
                if key in names:
                    continue
                where = f"cost[{j}]" if len(problems) > 1 else "cost"
                valid = [*opt.rule_hyperparameters(), *names]
                raise locate_error(
                    cfg,
                    f"optimizers[{i}].grid.{key}",
                    f"unknown hyperparameter {key!r}: not one of rule {opt.rule!r}, nor of the {where} "
                    f"{p.config.callable}{config_lib.nearest(key, valid)}; valid: {', '.join(valid)} "
                    "(a cost's hyperparameters are its keyword parameters with numeric defaults, "
                    "cost(params, data, l2=0.0))",
                )


def _test_batch(dataset: Dataset, dtype):
    return jnp.asarray(dataset.X_test, dtype), jnp.asarray(dataset.y_test, dtype)


def _held_out_metrics(cost: Callable, dataset: Dataset | None, dtype) -> dict | None:
    """`{"test_loss": ...}` over the held-out split, or None without one."""
    if dataset is None or dataset.X_test is None:
        return None
    return {"test_loss": bound(cost, _test_batch(dataset, dtype))}


def _classification_problem(cfg, c: CostConfig, key: str, dataset: Dataset, dtype) -> Problem:
    """A linear classifier under the logistic or cross-entropy loss, with its accuracy metrics."""
    y_all = dataset.y_all
    values = np.unique(y_all)
    shown = ", ".join(format_number(v) for v in values[:12]) + (", ..." if values.size > 12 else "")
    if c.loss == "logistic":
        if not np.all(np.isin(values, (0.0, 1.0))):
            raise locate_error(
                cfg,
                f"{key}.loss",
                f'loss = "logistic" needs 0/1 targets; the targets are {shown}: pick two classes with '
                f'[data] classes = [a, b], or use loss = "cross_entropy" for class indices',
            )
        num_classes = 2
    else:
        if np.any(values < 0) or np.any(values != np.round(values)):
            raise locate_error(
                cfg,
                f"{key}.loss",
                f'loss = "cross_entropy" needs class indices 0, 1, ..., k-1 as targets; the targets are '
                f"{shown}: relabel them with [data] classes = [...]",
            )
        num_classes = int(values.max()) + 1
        if num_classes < 2 or num_classes > 100_000:
            raise locate_error(
                cfg,
                f"{key}.loss",
                f"cross entropy needs between 2 and 100000 classes; the targets are {shown}",
            )
    loss_fn, analytic, accuracy = LOSSES[c.loss]
    train = (jnp.asarray(dataset.X, dtype), jnp.asarray(dataset.y, dtype))
    metrics = {"accuracy": bound(accuracy, train)}
    if dataset.X_test is not None:
        test = _test_batch(dataset, dtype)
        metrics["test_loss"] = bound(loss_fn, test)  # the loss itself, unpenalised
        metrics["test_accuracy"] = bound(accuracy, test)
    cost = loss_fn
    params0 = init_classifier(c.loss, dataset.X.shape[1], num_classes, dtype)
    f_star, minimizer, source = None, None, ""
    if c.l2:  # strictly convex: a minimiser exists (without L2, separable data has none): solve for f*
        cost, analytic = with_l2(loss_fn, analytic, c.l2)
        f_star, minimizer, source = _reference_solve(cost, params0, (dataset.X, dataset.y))
    return Problem(
        label=c.label,
        config=c,
        cost=cost,
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


def _reference_solve(cost, params0, host_data) -> tuple[float | None, object, str]:
    """f* of a smooth convex cost by a float64 Newton solve (`problems.reference_optimum`); unknown
    (None, "") where it does not converge, e.g. a logistic regression on separable data without L2."""
    found = reference_optimum(cost, params0, host_data)
    return (None, None, "") if found is None else found


def _callable_problem(cfg, c: CostConfig, key: str, dataset: Dataset | None, dtype) -> Problem:
    """The user's own `cost(params, data)`, its start and optional analytic gradient, checked abstractly."""
    try:
        cost = load_reference(c.callable)
    except ValueError as err:
        raise locate_error(cfg, f"{key}.callable", str(err)) from None
    host_data = None if dataset is None else (dataset.X, dataset.y)
    if isinstance(c.params0, str):
        try:
            init = load_reference(c.params0)
        except ValueError as err:
            raise locate_error(cfg, f"{key}.params0", str(err)) from None
        try:
            start = call_init(init, host_data)
        except Exception as err:
            raise locate_error(
                cfg, f"{key}.params0", f"{c.params0} failed: {type(err).__name__}: {str(err).strip()[:200]}"
            ) from None
    else:
        start = np.asarray(c.params0, np.float64)
    try:
        leaves = jax.tree.leaves(start)
        if not leaves:
            raise ValueError("it holds no arrays")
        params0 = jax.tree.map(lambda x: jnp.asarray(x, dtype), start)
    except (TypeError, ValueError) as err:
        raise locate_error(
            cfg,
            f"{key}.params0",
            f"the start must be a pytree of numeric arrays ({type(err).__name__}: {err})",
        ) from None
    batch = None if dataset is None else (jnp.asarray(dataset.X, dtype), jnp.asarray(dataset.y, dtype))
    try:
        check_scalar_cost(cost, params0, batch)
    except ValueError as err:
        raise locate_error(cfg, f"{key}.callable", f"{c.callable}: {err}") from None
    analytic = None
    if c.analytic is not None:
        try:
            analytic = load_reference(c.analytic)
            check_gradient_shape(analytic, params0, batch)
        except ValueError as err:
            raise locate_error(cfg, f"{key}.analytic", str(err)) from None
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
