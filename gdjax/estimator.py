"""`GDRegressor`: a scikit-learn-style linear regressor whose `fit` is one `gdjax.run`.

The estimator is a thin face over the core: `fit` validates `(X, y)` and its settings once, builds
`make_cost(linear, mse)` and a rule from `gdjax.rules.get`, and hands both to `gdjax.run`, which does
the whole optimisation as one compiled scan. The trace comes back as fitted attributes (`coef_`,
`intercept_`, `loss_curve_`, `coef_path_`, `status_`, `n_iter_`), divergence and "ran out of steps"
come back as warnings naming what to change, and `save` / `load` write and read the fitted model as
a pickle-free `.npz` file.

It follows scikit-learn's conventions (`__init__` only stores its arguments; `get_params` /
`set_params`; fitted attributes end in `_`; `predict` before `fit` raises `NotFittedError`) and passes
`sklearn.utils.estimator_checks.check_estimator`, without importing scikit-learn: `__sklearn_tags__`
imports it lazily, only when scikit-learn itself asks. When scikit-learn is already imported, the
errors and warnings raised here are also instances of scikit-learn's classes of the same name, so
`except sklearn.exceptions.NotFittedError` and sklearn's warning filters recognise them.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import io as gdjax_io
from gdjax import reference, rules, validation
from gdjax._version import __version__
from gdjax.costs import linear, make_cost, mse
from gdjax.data import Standardizer
from gdjax.loop import MAX_RECORD_BYTES, run
from gdjax.options import Execution, Stopping
from gdjax.types import Status

FORMAT = "gdjax.GDRegressor"
FORMAT_VERSION = 1
_PATH_BYTES = 8 * MAX_RECORD_BYTES  # the whole path up to run's explicit cap on records
_META_KEY = "__gdjax_meta__"  # the JSON settings, a 0-d unicode array inside the .npz


# ------------------------------------------------------------------------- errors and warnings
class NotFittedError(ValueError, AttributeError):
    """`predict`, `score` or `save`-dependent attributes used before `fit`.

    A ValueError and an AttributeError, like scikit-learn's class of the same name (so `hasattr`
    on a fitted-only attribute is False and code catching either keeps working).
    """


class GDConvergenceWarning(UserWarning):
    """`fit` finished without meeting its stopping tolerance, diverged, or went non-finite."""


class DataConversionWarning(UserWarning):
    """The input was converted to what the estimator expects (e.g. an `(n, 1)` target raveled)."""


_SKLEARN_NAMES = {
    NotFittedError: "NotFittedError",
    GDConvergenceWarning: "ConvergenceWarning",
    DataConversionWarning: "DataConversionWarning",
}


def _compatible(cls: type) -> type:
    """`cls`, or when scikit-learn is already imported, a subclass of `cls` and of scikit-learn's
    class of the same role, so that scikit-learn's checks, `except` clauses and warning filters
    recognise what gdjax raises. gdjax never imports scikit-learn for this."""
    module = sys.modules.get("sklearn.exceptions")
    twin = getattr(module, _SKLEARN_NAMES[cls], None) if module is not None else None
    return _subclass_of_both(cls, twin) if isinstance(twin, type) else cls


@functools.cache
def _subclass_of_both(cls: type, twin: type) -> type:
    return type(cls.__name__, (cls, twin), {"__module__": cls.__module__, "__doc__": cls.__doc__})


def _warn(message: str, category: type) -> None:
    # Every caller is a helper of a public method: point at the user's call to that method.
    warnings.warn(message, _compatible(category), stacklevel=4)


# ----------------------------------------------------------------------------------- models
def _linear_through_origin(params: dict, X: jax.Array) -> jax.Array:
    """Linear model without intercept: `X @ w` (`params = {"w": (d,)}`), for fit_intercept=False."""
    return X @ params["w"]


# ------------------------------------------------------------------------- input validation
def _is_sparse(X) -> bool:
    sparse = sys.modules.get("scipy.sparse")
    return (sparse is not None and sparse.issparse(X)) or type(X).__module__.startswith("scipy.sparse")


def _feature_names(X) -> np.ndarray | None:
    """Column names of a DataFrame-like `X` when they are all strings (scikit-learn's rule)."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = list(columns)
    if names and all(isinstance(c, str) for c in names):
        return np.asarray(names, dtype=object)
    return None


def _as_float64(value, name: str, owner: str) -> np.ndarray:
    """Converts array-likes (lists, DataFrames, memmaps, int/bool/object arrays) to float64 NumPy."""
    if _is_sparse(value):
        raise TypeError(
            f"{owner} does not support sparse input: got a {type(value).__name__} for {name}. "
            f"Pass a dense array ({name}.toarray())."
        )
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}.")
    if arr.dtype.kind == "O" and any(isinstance(v, complex | np.complexfloating) for v in arr.flat):
        raise ValueError(f"Complex data not supported: {name} holds complex numbers.")
    # Object arrays of numbers convert; anything else raises NumPy's own TypeError / ValueError.
    return np.asarray(arr, dtype=np.float64)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if np.isfinite(arr).all():
        return
    bad = np.argwhere(~np.isfinite(arr))[0]
    where = tuple(bad.tolist())
    if np.isnan(arr[tuple(bad)]):
        raise ValueError(f"Input {name} contains NaN (first at index {where}).")
    raise ValueError(
        f"Input {name} contains infinity or a value too large for dtype('float64') (first at index {where})."
    )


def _check_X(X, owner: str) -> np.ndarray:
    """`X` as a finite `(n, d)` float64 array with n, d >= 1, or a ValueError saying what to do."""
    if X is None:
        raise ValueError(f"{owner} needs X, an array of shape (n_examples, n_features); got None.")
    arr = _as_float64(X, "X", owner)
    if arr.ndim < 2:
        kind = "scalar" if arr.ndim == 0 else "1D"
        raise ValueError(
            f"Expected a 2D X of shape (n_examples, n_features), got a {kind} array of shape "
            f"{arr.shape} instead. Reshape your data either using X.reshape(-1, 1) if it has a "
            "single feature or X.reshape(1, -1) if it contains a single example."
        )
    if arr.ndim > 2:
        raise ValueError(f"Expected a 2D X of shape (n_examples, n_features), got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    if arr.shape[1] == 0:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 is required."
        )
    _check_finite(arr, "X")
    return arr


def _check_y(y, num_examples: int, owner: str) -> np.ndarray:
    if y is None:
        raise ValueError(f"{owner} requires y to be passed, but the target y is None.")
    arr = _as_float64(y, "y", owner)
    if arr.ndim == 2 and arr.shape[1] == 1:
        _warn(
            "A column-vector y was passed when a 1d array was expected. Please change the shape "
            f"of y to ({arr.shape[0]},), for example using ravel(); {owner} has raveled it.",
            DataConversionWarning,
        )
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"y should be a 1d array of shape (n_examples,), got an array of shape {arr.shape} "
            f"instead ({owner} fits one target)."
        )
    if arr.shape[0] != num_examples:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{num_examples}, {arr.shape[0]}] (X has {num_examples} rows, y has {arr.shape[0]})."
        )
    _check_finite(arr, "y")
    return arr


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def _check_optional_number(name: str, value, **bounds) -> None:
    if value is None:
        return
    if isinstance(value, bool | np.bool_) or np.ndim(value) != 0:
        raise ValueError(f"{name} must be a real number or None, got {value!r}")
    validation.check_finite_number(name, value, **bounds)


def _resolve_dtype(dtype) -> np.dtype:
    """The floating dtype of a fit: `dtype`, or JAX's default float (float64 under jax_enable_x64)."""
    default = np.dtype(jnp.result_type(float))
    if dtype is None:
        return default
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
    if resolved == np.float64 and default != np.float64:
        raise ValueError(
            "dtype='float64' needs 64-bit JAX: call jax.config.update('jax_enable_x64', True) "
            "before creating arrays, or use dtype='float32'"
        )
    return resolved


class _Settings(NamedTuple):
    """The estimator's parameters, validated once at the start of `fit`."""

    rule: str
    hyperparameters: dict
    num_steps: int
    tol: float | None
    batch_size: int | None
    grad_tol: float | None
    divergence_factor: float | None
    seed: int
    dtype: np.dtype
    built: rules.Rule  # the rule, validated by the registry (the one place rule values are checked)
    stopping: Stopping


# ------------------------------------------------------------------------------- estimator
class GDRegressor:
    """Linear least-squares regression fitted by a gradient-descent rule compiled with JAX.

    Minimises `mean((X @ coef + intercept - y)**2)` with any update rule of `gdjax.rules` (plain
    gradient descent, momentum, Nesterov, AdaGrad, RMSProp, Adam, or `"optax.<name>"`), full batch
    or on mini-batches sampled from `seed`, as one `gdjax.run`. Unlike scikit-learn's
    `SGDRegressor` the whole optimisation history is kept: `loss_curve_[k]` is the cost after `k`
    updates and `coef_path_[k]` the coefficients there, on the original feature scale.

    Stopping: after an update whose parameter change is below `tol` (global 2-norm, measured on
    the standardised problem when `standardize=True`), or when the full-data gradient norm is below
    `grad_tol`. A run whose loss grows past `divergence_factor` times its initial value stops with
    `status_ == "diverged"`; for plain gradient descent the warning names the largest stable step
    `2/L` of the data (`gdjax.reference.curvature`).

    Args:
      rule: an update rule name (`gdjax.rules.names()`) or `"optax.<name>"`.
      learning_rate: the rule's base step size.
      num_steps: the most update steps one `fit` takes.
      tol: stop once `||params_t - params_{t-1}|| < tol`; `None` runs all `num_steps` steps and
        does not warn about convergence.
      batch_size: `None` (or at least the number of examples) for full-batch gradient descent;
        `k` for mini-batches of `k` examples sampled without replacement, epoch by epoch.
      fit_intercept: fit `intercept_`; if False the model is `X @ coef` exactly (no `b` at all).
      standardize: fit on standardised features (a preconditioner: every column gets unit
        variance); `coef_` / `intercept_` are reported on the original scale and `predict` takes
        raw `X`. Without an intercept the columns are only scaled (by their root mean square),
        since centring would need one.
      seed: integer seed of the PRNG key that samples mini-batches; the same seed gives
        bit-identical fits.
      rule_options: other hyperparameters of the rule by name, e.g. `{"momentum": 0.9}` or
        `{"b1": 0.8}` (see `gdjax.rules.hyperparameters(rule)`).
      grad_tol: also stop once the full-data gradient norm is below this.
      divergence_factor: the loss multiple that counts as divergence; `None` disables it.
      warm_start: start the next `fit` from the current `coef_` / `intercept_` instead of zeros.
        Only the parameters carry over: the rule's state (momentum, Adam moments, the step count
        of a schedule) starts afresh, and `n_iter_`, `loss_curve_` and `coef_path_` describe the
        latest fit only.
      dtype: `None` (JAX's default float: float64 under `jax_enable_x64`, else float32),
        `"float32"` or `"float64"`: the precision of the run. Inputs of any numeric dtype are
        accepted and converted.

    Attributes:
      coef_: `(n_features,)` coefficients on the original feature scale.
      intercept_: scalar intercept (0.0 when `fit_intercept=False`).
      n_iter_: number of updates applied.
      status_: `"converged"`, `"max_steps"`, `"diverged"` or `"nonfinite"`.
      loss_curve_: `(n_iter_ + 1,)` mean squared error before each update and at the end.
      coef_path_, intercept_path_: iterates on the original scale after `path_steps_` updates, with
        `coef_path_[-1] == coef_`: every update (`(n_iter_ + 1, n_features)`, `path_steps_ ==
        arange(n_iter_ + 1)`) unless the path of `num_steps` would pass 512 MiB; then thinned.
      path_steps_: `(len(coef_path_),)` the number of updates behind each row of `coef_path_`.
      n_features_in_: number of features seen in `fit`.
      feature_names_in_: column names, when `X` was a DataFrame-like with string column names.

    Example:
      >>> import gdjax
      >>> from gdjax.estimator import GDRegressor
      >>> X, y = gdjax.data.house_prices()
      >>> model = GDRegressor(learning_rate=0.1, standardize=True).fit(X, y)
      >>> model.status_, round(float(model.coef_[0]), 2), round(float(model.intercept_), 2)
      ('converged', 84.74, -46.32)
    """

    _estimator_type = "regressor"  # scikit-learn < 1.6 reads this; later versions read the tags

    def __init__(
        self,
        rule: str = "sgd",
        learning_rate: float = 0.01,
        *,
        num_steps: int = 1000,
        tol: float | None = 1e-6,
        batch_size: int | None = None,
        fit_intercept: bool = True,
        standardize: bool = False,
        seed: int = 0,
        rule_options: dict | None = None,
        grad_tol: float | None = None,
        divergence_factor: float | None = 100.0,
        warm_start: bool = False,
        dtype: Any = None,
    ):
        self.rule = rule
        self.learning_rate = learning_rate
        self.num_steps = num_steps
        self.tol = tol
        self.batch_size = batch_size
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.seed = seed
        self.rule_options = rule_options
        self.grad_tol = grad_tol
        self.divergence_factor = divergence_factor
        self.warm_start = warm_start
        self.dtype = dtype

    # ---------------------------------------------------------------- scikit-learn parameters
    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's parameter names, in signature order (scikit-learn's introspection)."""
        params = inspect.signature(cls.__init__).parameters.values()
        if any(p.kind == p.VAR_POSITIONAL for p in params):
            raise RuntimeError(f"{cls.__name__}.__init__ must not take *args (scikit-learn convention)")
        return [p.name for p in params if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters by name (with `name__sub` entries for nested estimators)."""
        out = {}
        for name in self._get_param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params) -> GDRegressor:
        """Sets constructor parameters by name and returns `self`; no validation until `fit`."""
        valid = self._get_param_names()
        nested: dict[str, dict] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(
                    f"Invalid parameter {name!r} for estimator {type(self).__name__}"
                    f"{validation.nearest(name, valid)}. Valid parameters are: {valid!r}."
                )
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            if not hasattr(getattr(self, name), "set_params"):
                raise ValueError(
                    f"Invalid parameter {name}__{next(iter(sub_params))}: {name} is not an estimator"
                )
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = [
            f"{name}={getattr(self, name)!r}"
            for name in self._get_param_names()
            if not _same(getattr(self, name), defaults.get(name))
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    def __sklearn_tags__(self):
        # Imported here: only scikit-learn calls this, so gdjax does not depend on it.
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(
            estimator_type="regressor",
            target_tags=TargetTags(required=True, single_output=True, multi_output=False),
            regressor_tags=RegressorTags(),
            input_tags=InputTags(two_d_array=True, sparse=False, allow_nan=False),
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "coef_")

    # -------------------------------------------------------------------------- fit / predict
    def _settings(self) -> _Settings:
        """Validates every parameter (scikit-learn defers this to `fit`)."""
        if not isinstance(self.rule, str):
            raise ValueError(f"rule must be a rule name such as 'sgd' or 'optax.lamb', got {self.rule!r}")
        _check_optional_number("learning_rate", self.learning_rate, positive=True)
        if self.learning_rate is None:
            raise ValueError("learning_rate must be a finite number > 0, got None")
        validation.check_positive_int("num_steps", self.num_steps)
        _check_optional_number("tol", self.tol, positive=True)
        _check_optional_number("grad_tol", self.grad_tol, positive=True)
        validation.check_positive_int("batch_size", self.batch_size, allow_none=True)
        _check_optional_number("divergence_factor", self.divergence_factor)
        if self.divergence_factor is not None and not self.divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1 or None, got {self.divergence_factor!r}")
        for name in ("fit_intercept", "standardize", "warm_start"):
            _check_bool(name, getattr(self, name))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        options = {} if self.rule_options is None else self.rule_options
        if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
            raise ValueError(
                f"rule_options must be a dict of hyperparameters by name or None, got {options!r}"
            )
        if "learning_rate" in options:
            raise ValueError(
                "rule_options holds 'learning_rate': set it with the estimator's learning_rate "
                "parameter instead"
            )
        hyperparameters = {"learning_rate": self.learning_rate, **options}
        built = rules.get(self.rule, **hyperparameters)
        grad_tol = None if self.grad_tol is None else float(self.grad_tol)
        divergence_factor = None if self.divergence_factor is None else float(self.divergence_factor)
        return _Settings(
            rule=self.rule,
            hyperparameters=hyperparameters,
            num_steps=int(self.num_steps),
            tol=None if self.tol is None else float(self.tol),
            batch_size=None if self.batch_size is None else int(self.batch_size),
            grad_tol=grad_tol,
            divergence_factor=divergence_factor,
            seed=int(self.seed),
            dtype=_resolve_dtype(self.dtype),
            built=built,
            stopping=Stopping(grad_tol=grad_tol, divergence_factor=divergence_factor),
        )

    def _scaler(self, X: np.ndarray) -> Standardizer | None:
        if not self.standardize:
            return None
        if self.fit_intercept:
            return Standardizer.fit(X)
        # No intercept to absorb a shift: scale only, by the root mean square.
        rms = np.sqrt(np.mean(X * X, axis=0))
        return Standardizer(np.zeros(X.shape[1]), np.where(rms > 0, rms, 1.0))

    def _start(self, num_features: int, scaler: Standardizer | None) -> dict:
        """Starting parameters on the scale of the run: zeros, or the previous fit (warm start)."""
        w = np.zeros(num_features)
        b = np.float64(0.0)
        if self.warm_start and hasattr(self, "coef_"):
            if self.coef_.shape != (num_features,):
                raise ValueError(
                    f"warm_start=True but X has {num_features} features while the previous fit had "
                    f"{self.coef_.shape[0]}; set warm_start=False to start afresh"
                )
            w = np.asarray(self.coef_, np.float64)
            b = np.float64(self.intercept_)
            if scaler is not None:  # the same predictor on standardised inputs
                w, b = w * scaler.scale, b + scaler.mean @ w
        return {"w": w, "b": b} if self.fit_intercept else {"w": w}

    def fit(self, X, y) -> GDRegressor:
        """Fits the linear model to `(X, y)` with one `gdjax.run`; returns `self`.

        Args:
          X: `(n_examples, n_features)` array-like of numbers.
          y: `(n_examples,)` array-like of targets (an `(n, 1)` column is raveled with a warning).

        Warns:
          GDConvergenceWarning: the run diverged or went non-finite (the message names the learning
            rate and, for plain gradient descent, the stable bound `2/L`), or it used all
            `num_steps` without meeting `tol` / `grad_tol`.
        """
        owner = type(self).__name__
        settings = self._settings()
        names = _feature_names(X)
        X = _check_X(X, owner)
        y = _check_y(y, X.shape[0], owner)
        validation.check_regression_data(X, y)
        n, d = X.shape

        scaler = self._scaler(X)
        Z = X if scaler is None else scaler.transform(X)
        params0 = self._start(d, scaler)
        model = linear if self.fit_intercept else _linear_through_origin
        rule = settings.built
        dtype = settings.dtype
        batch_size = settings.batch_size
        if batch_size is not None and batch_size >= n:
            batch_size = None  # a batch of every example is full-batch gradient descent
        path_bytes = (settings.num_steps + 1) * (d + 1) * np.dtype(dtype).itemsize
        trace = run(
            make_cost(model, mse),
            rule,
            {k: jnp.asarray(v, dtype) for k, v in params0.items()},
            (jnp.asarray(Z, dtype), jnp.asarray(y, dtype)),
            num_steps=settings.num_steps,
            batch_size=batch_size,
            key=jax.random.key(settings.seed),
            tol=settings.tol,
            stopping=settings.stopping,
            eval_every=1,  # the estimator keeps the whole history: loss_curve_[k] after k updates
            # Every iterate too, up to the explicit cap (512 MiB); beyond, run's thinned default,
            # and `path_steps_` says which updates the rows are.
            execution=Execution(record_every=1 if path_bytes <= _PATH_BYTES else None),
        )
        trace = jax.device_get(trace)
        steps = int(trace.steps)
        status = Status(int(trace.status))

        # The run's parameters at the recorded updates up to the last one applied (and the final
        # iterate where the records were thinned), then the same predictor on the original scale.
        recorded = np.asarray(trace.record_steps)
        rows = np.flatnonzero(recorded <= steps)
        path_steps = recorded[rows].astype(np.int64)
        w_path = np.asarray(trace.params_history["w"])[rows]
        b_path = (
            np.asarray(trace.params_history["b"])[rows] if self.fit_intercept else np.zeros(rows.size, dtype)
        )
        if path_steps[-1] != steps:  # thinned: the last row is the final iterate
            path_steps = np.append(path_steps, steps)
            w_path = np.concatenate([w_path, np.asarray(trace.params["w"])[None]])
            b_last = np.asarray(trace.params["b"]) if self.fit_intercept else np.zeros((), dtype)
            b_path = np.concatenate([b_path, b_last[None]])
        if scaler is not None:
            final = scaler.unstandardize({"w": w_path[-1], "b": b_path[-1]})
            # The same map on every row: y = z.w + b = x.(w / scale) + (b - mean.(w / scale)).
            w_orig = w_path / scaler.scale
            b_orig = b_path - w_orig @ scaler.mean
            w_orig[-1], b_orig[-1] = final["w"], final["b"]
            w_path, b_path = w_orig.astype(dtype), b_orig.astype(dtype)
        self.coef_ = w_path[-1].copy()
        self.intercept_ = dtype.type(b_path[-1])
        self.coef_path_ = w_path
        self.intercept_path_ = b_path
        self.path_steps_ = path_steps
        self.loss_curve_ = np.asarray(trace.loss_history[: steps + 1])
        self.n_iter_ = steps
        self.status_ = str(status)
        self.n_features_in_ = d
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

        self._warn_status(settings, status, Z, trace.params_history, steps)
        return self

    def _warn_status(self, settings: _Settings, status: Status, Z, history, steps: int) -> None:
        owner = type(self).__name__
        lr = settings.hyperparameters["learning_rate"]
        if status in (Status.DIVERGED, Status.NONFINITE):
            what = (
                f"the loss grew past divergence_factor={settings.divergence_factor:g} times its initial value"
                if status == Status.DIVERGED
                else "the loss, gradient or parameters became non-finite (NaN or inf)"
            )
            message = (
                f"{owner} {status} at step {steps}: {what} with rule={settings.rule!r}, learning_rate={lr:g}."
            )
            if settings.rule in ("sgd", "gd"):
                curv = reference.curvature(Z, fit_intercept=self.fit_intercept)
                scaled = "standardised " if self.standardize else ""
                message += (
                    f" Plain gradient descent on this least-squares cost is stable only for "
                    f"learning_rate < 2/L = {curv.max_stable_lr:.6g} (L = {curv.L:.6g}, the largest "
                    f"eigenvalue of the MSE Hessian on the {scaled}data)."
                )
            else:
                message += " Lower learning_rate."
            if not self.standardize:
                message += " standardize=True often allows a much larger step."
            _warn(message + " coef_ holds the last finite iterate.", GDConvergenceWarning)
        elif status == Status.MAX_STEPS and (settings.tol is not None or settings.grad_tol is not None):
            last = np.sqrt(
                sum(
                    float(np.sum((np.asarray(h[steps], np.float64) - h[steps - 1]) ** 2))
                    for h in history.values()
                )
            )
            criteria = ", ".join(
                f"{k}={v:g}" for k, v in (("tol", settings.tol), ("grad_tol", settings.grad_tol)) if v
            )
            _warn(
                f"{owner} did not converge within num_steps={settings.num_steps} ({criteria}; the "
                f"last parameter change was {last:.3g}). Increase num_steps or learning_rate"
                + ("" if self.standardize else ", or set standardize=True")
                + ", or pass tol=None to run a fixed number of steps.",
                GDConvergenceWarning,
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise _compatible(NotFittedError)(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    def _check_predict_X(self, X) -> np.ndarray:
        self._check_fitted()
        names = _feature_names(X)
        fitted_names = getattr(self, "feature_names_in_", None)
        if names is not None and fitted_names is not None and not np.array_equal(names, fitted_names):
            raise ValueError(
                f"The feature names should match those that were passed during fit: fitted with "
                f"{list(fitted_names)}, got {list(names)}."
            )
        # scikit-learn's warnings, word for word: columns matched by position only.
        owner = type(self).__name__
        if names is None and fitted_names is not None:
            message = f"X does not have valid feature names, but {owner} was fitted with feature names"
            warnings.warn(message, stacklevel=3)
        elif names is not None and fitted_names is None:
            warnings.warn(f"X has feature names, but {owner} was fitted without feature names", stacklevel=3)
        X = _check_X(X, type(self).__name__)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X

    def predict(self, X) -> np.ndarray:
        """`X @ coef_ + intercept_` for raw (unstandardised) `X`, in float64 NumPy: `(n,)`."""
        X = self._check_predict_X(X)
        return X @ np.asarray(self.coef_, np.float64) + np.float64(self.intercept_)

    def score(self, X, y, sample_weight=None) -> float:
        """Coefficient of determination `R^2 = 1 - sum(w (y - pred)**2) / sum(w (y - mean_w(y))**2)`.

        As scikit-learn's `r2_score` (and `RegressorMixin.score`, `sample_weight` included): 1.0 for
        a perfect fit; with a constant `y`, 1.0 if the predictions are exact and 0.0 otherwise.
        """
        pred = self.predict(X)
        owner = type(self).__name__
        y = _check_y(y, pred.shape[0], owner)
        w = np.ones_like(y, dtype=np.float64)
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64)
            if w.shape != y.shape or not np.all(np.isfinite(w)) or np.any(w < 0) or not w.sum() > 0:
                raise ValueError(
                    f"{owner}.score: sample_weight must be {y.shape[0]} finite weights >= 0, not all 0; "
                    f"got shape {w.shape}"
                )
        residual = float(np.sum(w * (y - pred) ** 2))
        total = float(np.sum(w * (y - np.average(y, weights=w)) ** 2))
        if total == 0.0:
            return 1.0 if residual == 0.0 else 0.0
        return 1.0 - residual / total

    # ------------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike) -> None:
        """Writes the estimator to `path` as one `.npz` file, atomically, without pickle.

        The arrays (`coef`, `intercept`, `loss_curve`, `coef_path`, `intercept_path`) are stored
        bit for bit; the parameters and metadata (format version, dtype, status, n_iter,
        feature names) as a JSON string in the same file. An unfitted estimator saves its
        parameters only. `GDRegressor.load(path)` gives back an equal estimator.

        Raises:
          ValueError: a parameter value that JSON cannot hold (e.g. an object in rule_options).
        """
        meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "gdjax_version": _gdjax_version(),
            "params": {k: _to_json(k, v) for k, v in self.get_params(deep=False).items()},
            "fitted": None,
        }
        arrays: dict[str, np.ndarray] = {}
        if hasattr(self, "coef_"):
            arrays = {
                "coef": np.asarray(self.coef_),
                "intercept": np.asarray(self.intercept_),
                "loss_curve": np.asarray(self.loss_curve_),
                "coef_path": np.asarray(self.coef_path_),
                "intercept_path": np.asarray(self.intercept_path_),
                "path_steps": np.asarray(self.path_steps_, np.int64),
            }
            names = getattr(self, "feature_names_in_", None)
            meta["fitted"] = {
                "dtype": str(self.coef_.dtype),
                "status": self.status_,
                "n_iter": int(self.n_iter_),
                "path_rows": int(len(self.path_steps_)),
                "n_features_in": int(self.n_features_in_),
                "feature_names_in": None if names is None else [str(s) for s in names],
                "arrays": sorted(arrays),
            }
        try:
            text = gdjax_io.dumps(meta, indent=None)
        except TypeError as err:
            raise ValueError(f"cannot save {type(self).__name__}: {err}") from None
        arrays[_META_KEY] = np.asarray(text)
        gdjax_io.write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> GDRegressor:
        """Reads an estimator written by `save`.

        Raises:
          ValueError: the file is missing, is not a gdjax estimator file, was written by another
            format version, or is truncated / corrupted.
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(f"model file not found: {path}")
        # Checked before anything is decompressed: a zip of plain .npy arrays whose headers declare
        # sizes the stored bytes can hold (gdjax.io.inspect_npz); the metadata, read first, then
        # says which shapes and dtypes the other members must declare.
        try:
            members = gdjax_io.inspect_npz(path)
            if _META_KEY not in members:
                raise ValueError("it has no gdjax metadata")
            m = members[_META_KEY]
            if m.shape != () or m.dtype.kind != "U" or m.nbytes > _MAX_META_BYTES:
                raise ValueError(f"its metadata is not a JSON string ({m.dtype}, shape {m.shape})")
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as f:
                meta = gdjax_io.loads(str(f[_META_KEY][()]))
                if isinstance(meta, dict) and isinstance(meta.get("fitted"), dict):
                    _check_declared(meta["fitted"], members)
                arrays = {k: f[k] for k in members if k != _META_KEY}
        except _Corrupted as err:
            raise ValueError(f"{path} is a corrupted {cls.__name__} file: {err}") from None
        except (OSError, EOFError, KeyError, ValueError, TypeError, zipfile.BadZipFile, zlib.error) as err:
            reason = str(err).removeprefix(f"{path}: ").removeprefix(f"{path} ")
            raise ValueError(
                f"{path} is not a readable {cls.__name__} file (truncated, corrupted, or not "
                f"written by {cls.__name__}.save): {type(err).__name__}: {reason}"
            ) from None
        fmt = meta.get("format") if isinstance(meta, dict) else None
        if fmt != FORMAT:
            raise ValueError(f"{path} is not a {cls.__name__} file (format {fmt!r}, expected {FORMAT!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{path} was written in {cls.__name__} file format version "
                f"{meta.get('format_version')!r} (gdjax {meta.get('gdjax_version')}); this gdjax "
                f"({_gdjax_version()}) reads version {FORMAT_VERSION}. Refit, or load it with the "
                "gdjax version that wrote it."
            )
        try:
            params = {k: _from_json(k, v) for k, v in meta["params"].items()}
            estimator = cls(**params)
            fitted = meta["fitted"]
            if fitted is not None:
                estimator._restore(fitted, arrays)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path} is a corrupted {cls.__name__} file: {type(err).__name__}: {err}"
            ) from None
        return estimator

    def _restore(self, fitted: dict, arrays: dict[str, np.ndarray]) -> None:
        expected, dtypes = _expected_arrays(fitted)
        d = expected["coef"][0]
        for name, shape in expected.items():
            if name not in arrays:
                raise ValueError(f"array {name!r} is missing")
            if arrays[name].shape != shape or arrays[name].dtype != dtypes[name]:
                raise ValueError(
                    f"array {name!r} has shape {arrays[name].shape} and dtype {arrays[name].dtype}, "
                    f"expected {shape} and {dtypes[name]}"
                )
        status = str(Status[str(fitted["status"]).upper()])
        if status not in gdjax_io.BLEW_UP and not (
            np.all(np.isfinite(arrays["coef"])) and np.isfinite(arrays["intercept"])
        ):
            raise ValueError(f"its fitted coefficients are not finite although its status is {status!r}")
        self.coef_ = arrays["coef"]
        self.intercept_ = arrays["intercept"][()]
        self.coef_path_ = arrays["coef_path"]
        self.intercept_path_ = arrays["intercept_path"]
        # Files written before thinned paths hold every update.
        self.path_steps_ = arrays.get("path_steps", np.arange(len(self.coef_path_), dtype=np.int64))
        self.loss_curve_ = arrays["loss_curve"]
        self.n_iter_ = int(fitted["n_iter"])
        self.status_ = str(Status[str(fitted["status"]).upper()])
        self.n_features_in_ = d
        if fitted["feature_names_in"] is not None:
            self.feature_names_in_ = np.asarray(fitted["feature_names_in"], dtype=object)


# ------------------------------------------------------------------------------ helpers
def _same(value, default) -> bool:
    """Whether a parameter still has its default (for `__repr__`); never raises."""
    if value is default:
        return True
    if type(value) is not type(default):
        return False
    try:
        return bool(value == default)
    except Exception:  # e.g. arrays: ambiguous truth value
        return False


def _gdjax_version() -> str:
    return __version__


_MAX_META_BYTES = 4 * 1024 * 1024  # the JSON metadata of a model: parameters and a few names


class _Corrupted(ValueError):
    pass


def _expected_arrays(fitted: dict) -> tuple[dict[str, tuple[int, ...]], dict[str, np.dtype]]:
    d, k = int(fitted["n_features_in"]), int(fitted["n_iter"]) + 1
    rows = int(fitted.get("path_rows", k))  # files without it hold every update
    if d < 0 or k < 1 or not 1 <= rows <= k:
        raise _Corrupted(f"n_features_in={d}, n_iter={k - 1}, path_rows={rows}")
    dtype = np.dtype(fitted["dtype"])
    if dtype.kind != "f":
        raise _Corrupted(f"dtype {dtype} is not a floating type")
    shapes = {
        "coef": (d,),
        "intercept": (),
        "loss_curve": (k,),
        "coef_path": (rows, d),
        "intercept_path": (rows,),
    }
    if "path_rows" in fitted:
        shapes["path_steps"] = (rows,)
    return shapes, {name: np.dtype(np.int64) if name == "path_steps" else dtype for name in shapes}


def _check_declared(fitted: dict, members: dict) -> None:
    """The members' declared shapes and dtypes against the metadata, before any is read."""
    try:
        expected, dtypes = _expected_arrays(fitted)
    except (KeyError, TypeError, ValueError) as err:
        raise _Corrupted(f"{type(err).__name__}: {err}") from None
    for name, shape in expected.items():
        if name not in members:
            raise _Corrupted(f"array {name!r} is missing")
        m = members[name]
        if m.shape != shape or m.dtype != dtypes[name]:
            raise _Corrupted(
                f"array {name!r} has shape {m.shape} and dtype {m.dtype}, expected {shape} and {dtypes[name]}"
            )
    extra = sorted(set(members) - set(expected) - {_META_KEY})
    if extra:
        raise _Corrupted(f"unexpected arrays {extra}")


def _to_json(name: str, value):
    """A parameter as JSON: numbers, strings, None, bools, dicts / lists of them; dtypes by name."""
    if name == "dtype" and value is not None and not isinstance(value, str):
        try:
            return {"__dtype__": np.dtype(value).name}
        except TypeError:
            raise ValueError(f"cannot save dtype={value!r}") from None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _to_json(f"{name}[{k!r}]", v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ValueError(
        f"cannot save parameter {name}={value!r}: only numbers, strings, booleans, None and "
        "dicts / lists of them are stored"
    )


def _from_json(name: str, value):
    if name == "dtype" and isinstance(value, dict):
        return np.dtype(value["__dtype__"])
    return value


__all__ = [
    "FORMAT_VERSION",
    "DataConversionWarning",
    "GDConvergenceWarning",
    "GDRegressor",
    "NotFittedError",
]
