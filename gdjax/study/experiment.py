"""Experiments: a validated config turned into data, costs, gradient checks, sweeps and a run folder.

`run_experiment(config, out_dir)` is what `gdjax run` does: it builds each cost's problem (data,
starting point, closed-form answers), checks the gradients, runs one `gdjax.sweep` per optimizer
(a "unit"; one per cost and optimizer when the config has several costs), and writes the run folder
atomically as it goes:

    <run folder>/
      .gdjax-run         the marker, written first: the folder it was written for and the list of
                         what gdjax made here (see gdjax.study.runfolder)
      .gdjax-lock        while a run writes the folder: the lock it holds
      .gdjax-staging/    while plots are drawn: they are moved into place once listed
      config.toml        the resolved config (defaults filled in, grids expanded, paths absolute)
      manifest.json      versions, devices, precision, timings, git commit, command, status,
                         the sha256 and size of every data file and cost module (data_files)
      gradcheck.txt      the gradient-check report of every cost
      summary.csv/.json  one row per lane of every optimizer
      histories.npz      loss / grad-norm / params histories, statuses, steps, per optimizer
      split.npz          with [data] test_fraction: the held-out split, `<cost>/train` and
                         `<cost>/test` (sorted row indices into the data as read)
      *.png              the plots named in outputs.plots
      parts/             per-optimizer results while the run is incomplete (what --resume builds
                         on); removed once the run is complete
      PARTIAL            only in an incomplete folder: what is done, what is left, how to finish

A run is a pure function of the config (every random draw comes from its seeds), so an interrupted
folder is finished by rerunning the optimizers that are not done and merging: the result is the one
an uninterrupted run writes. Library code here never flips JAX flags: `precision = "float64"` needs
`jax_enable_x64` on (the `gdjax` command sets it), and the gradient check needs float64 too (the
command runs it under `jax.enable_x64(True)` for float32 studies).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import costs, data, reference
from gdjax._version import __version__
from gdjax.gradcheck import check_grad
from gdjax.io import (
    BLEW_UP,
    FileFormatError,
    csv_text,
    format_number,
    format_table,
    inspect_npz,
    leaf_names,
    open_regular,
    read_json,
    trace_arrays,
    trace_from_arrays,
)
from gdjax.study import config as config_lib
from gdjax.study import problems as problems_lib
from gdjax.study import runfolder
from gdjax.study.config import ConfigError, CostConfig, ExperimentConfig, OptimizerConfig
from gdjax.sweep import NOISE_FOLD, Init, Starts, SweepInterrupted, SweepResult, Zip, check_sweep, sweep
from gdjax.types import GradCheckReport, PyTree, Status, Trace

__all__ = [
    "SUMMARY_KEYS",
    "GradCheckFailed",
    "Problem",
    "RunInterrupted",
    "RunOutcome",
    "Unit",
    "UnitResult",
    "best_configurations",
    "build_problems",
    "config_key",
    "check_gradients",
    "load_data",
    "read_run",
    "run_experiment",
    "units",
]

FILES = ("config.toml", "manifest.json", "gradcheck.txt", "summary.csv", "summary.json", "histories.npz")
METRIC_NAMES = ("accuracy", "test_loss", "test_accuracy")  # the metrics a study records (Problem.metrics)
PARTIAL_MARKER = runfolder.PARTIAL_MARKER
PARTS = runfolder.PARTS
_AXIS_NAMES = {"house_prices": ("bedrooms", "price (thousands)")}


class GradCheckFailed(RuntimeError):
    """The gradient check of a cost failed: nothing was run. `reports` maps cost label -> report."""

    def __init__(self, reports: dict[str, GradCheckReport]):
        self.reports = reports
        failed = [k for k, r in reports.items() if not r.ok]
        super().__init__(
            f"gradient check failed for cost {', '.join(map(repr, failed))}: "
            + "; ".join(reports[k].verdict for k in failed)
            + f" ({SKIP_GRADCHECK})"
        )


class RunInterrupted(RuntimeError):
    """A run stopped part-way; `folder` holds the finished optimizers and a PARTIAL marker."""

    def __init__(self, message: str, folder: str):
        super().__init__(message)
        self.folder = folder


# ------------------------------------------------------------------------------------------- data
def _locate_error(cfg: ExperimentConfig, key: str, message: str) -> ConfigError:
    """A ConfigError at `key` with its line, re-reading the config file when there is one."""
    line = None
    if cfg.source and os.path.isfile(cfg.source):
        with open(cfg.source, encoding="utf-8") as f:
            src = config_lib._Source(f.read(), cfg.source, None)
        path = tuple(int(p) if p.isdigit() else p for p in key.replace("[", ".").replace("]", "").split("."))
        line = src.line(path)
    return ConfigError(message, key=key, line=line, source=cfg.source or "<config>")


class Dataset(NamedTuple):
    """The config's data in float64: the training split the runs see, and the held-out split.

    With `[data] test_fraction`, `X`/`y` are the training examples and `X_test`/`y_test` the held-out
    ones (drawn with the study's first seed; the standardisation is fitted on the training split
    only); without it, `X_test` and `y_test` are None. With `split_per_seed`, `seed_problems` builds
    each other seed's problem on its own split.
    """

    X: np.ndarray  # (n, d) float64, what the model sees (standardised if asked)
    y: np.ndarray  # (n,)
    X_raw: np.ndarray  # (n, d) before standardisation
    standardizer: data.Standardizer | None
    feature_names: tuple[str, str]  # axis labels for a one-feature plot
    X_test: np.ndarray | None = None  # (n_test, d), standardised like X
    y_test: np.ndarray | None = None  # (n_test,)
    train_index: np.ndarray | None = None  # rows of the data as read (before `classes`) in X
    test_index: np.ndarray | None = None  # ... in X_test; both None without a held-out split

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
        raise _locate_error(cfg, key, str(err)) from None
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if d.classes is not None:
        keep = np.isin(y, d.classes)
        missing = [c for c in d.classes if not np.any(y == c)]
        if missing:
            found = np.unique(y)
            shown = ", ".join(format_number(v) for v in found[:12]) + (", ..." if found.size > 12 else "")
            raise _locate_error(
                cfg,
                f"{where}.classes",
                f"no example has target {', '.join(format_number(c) for c in missing)}; "
                f"the targets are {shown}",
            )
        classes = np.asarray(d.classes, np.float64)
        X, y = X[keep], np.argmax(y[keep][:, None] == classes[None, :], axis=1).astype(np.float64)
    rows = np.flatnonzero(keep) if d.classes is not None else np.arange(X.shape[0])
    X_test = y_test = train_index = test_index = None
    if d.test_fraction is not None:
        n = X.shape[0]
        train, test = split(n, d.test_fraction, cfg.seeds[0])
        if train.size == 0 or test.size == 0:
            raise _locate_error(
                cfg,
                f"{where}.test_fraction",
                f"test_fraction = {d.test_fraction} of {n} examples leaves "
                f"{'no training' if train.size == 0 else 'no test'} example; choose a fraction that "
                f"holds out between 1 and {n - 1} of them",
            )
        X, X_test, y, y_test = X[train], X[test], y[train], y[test]
        train_index, test_index = rows[train], rows[test]
    standardizer = None
    X_raw = X
    if d.standardize:
        standardizer = data.Standardizer.fit(X)
        X = standardizer.transform(X)
        X_test = None if X_test is None else standardizer.transform(X_test)
    return Dataset(X, y, X_raw, standardizer, names, X_test, y_test, train_index, test_index)


# --------------------------------------------------------------------------------------- problems
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
                raise _locate_error(cfg, "precision", str(err)) from None
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
                    raise _locate_error(
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
                cost, analytic = problems_lib.with_l2(cost, analytic, c.l2)
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
    _check_inits(cfg, problems)
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
                raise _locate_error(
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
    return {"test_loss": problems_lib.bound(cost, _test_batch(dataset, dtype))}


def _classification_problem(cfg, c: CostConfig, key: str, dataset: Dataset, dtype) -> Problem:
    """A linear classifier under the logistic or cross-entropy loss, with its accuracy metrics."""
    y_all = dataset.y_all
    values = np.unique(y_all)
    shown = ", ".join(format_number(v) for v in values[:12]) + (", ..." if values.size > 12 else "")
    if c.loss == "logistic":
        if not np.all(np.isin(values, (0.0, 1.0))):
            raise _locate_error(
                cfg,
                f"{key}.loss",
                f'loss = "logistic" needs 0/1 targets; the targets are {shown}: pick two classes with '
                f'[data] classes = [a, b], or use loss = "cross_entropy" for class indices',
            )
        num_classes = 2
    else:
        if np.any(values < 0) or np.any(values != np.round(values)):
            raise _locate_error(
                cfg,
                f"{key}.loss",
                f'loss = "cross_entropy" needs class indices 0, 1, ..., k-1 as targets; the targets are '
                f"{shown}: relabel them with [data] classes = [...]",
            )
        num_classes = int(values.max()) + 1
        if num_classes < 2 or num_classes > 100_000:
            raise _locate_error(
                cfg,
                f"{key}.loss",
                f"cross entropy needs between 2 and 100000 classes; the targets are {shown}",
            )
    loss_fn, analytic, accuracy = problems_lib.LOSSES[c.loss]
    train = (jnp.asarray(dataset.X, dtype), jnp.asarray(dataset.y, dtype))
    metrics = {"accuracy": problems_lib.bound(accuracy, train)}
    if dataset.X_test is not None:
        test = _test_batch(dataset, dtype)
        metrics["test_loss"] = problems_lib.bound(loss_fn, test)  # the loss itself, unpenalised
        metrics["test_accuracy"] = problems_lib.bound(accuracy, test)
    cost = loss_fn
    params0 = problems_lib.init_classifier(c.loss, dataset.X.shape[1], num_classes, dtype)
    f_star, minimizer, source = None, None, ""
    if c.l2:  # strictly convex: a minimiser exists (without L2, separable data has none): solve for f*
        cost, analytic = problems_lib.with_l2(loss_fn, analytic, c.l2)
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
    found = problems_lib.reference_optimum(cost, params0, host_data)
    return (None, None, "") if found is None else found


def _callable_problem(cfg, c: CostConfig, key: str, dataset: Dataset | None, dtype) -> Problem:
    """The user's own `cost(params, data)`, its start and optional analytic gradient, checked abstractly."""
    try:
        cost = problems_lib.load_reference(c.callable)
    except ValueError as err:
        raise _locate_error(cfg, f"{key}.callable", str(err)) from None
    host_data = None if dataset is None else (dataset.X, dataset.y)
    if c.params0 is None:  # only init(key): the first seed's start stands for the problem's
        try:
            start = jax.tree.map(
                lambda x: x[0], Init(problems_lib.load_reference(c.init)).starts(cfg.seeds[:1])
            )
        except ValueError as err:
            raise _locate_error(cfg, f"{key}.init", str(err)) from None
    elif isinstance(c.params0, str):
        try:
            init = problems_lib.load_reference(c.params0)
        except ValueError as err:
            raise _locate_error(cfg, f"{key}.params0", str(err)) from None
        try:
            start = problems_lib.call_init(init, host_data)
        except Exception as err:
            raise _locate_error(
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
        raise _locate_error(
            cfg,
            f"{key}.params0",
            f"the start must be a pytree of numeric arrays ({type(err).__name__}: {err})",
        ) from None
    batch = None if dataset is None else (jnp.asarray(dataset.X, dtype), jnp.asarray(dataset.y, dtype))
    try:
        problems_lib.check_scalar_cost(cost, params0, batch)
    except ValueError as err:
        raise _locate_error(cfg, f"{key}.callable", f"{c.callable}: {err}") from None
    analytic = None
    if c.analytic is not None:
        try:
            analytic = problems_lib.load_reference(c.analytic)
            problems_lib.check_gradient_shape(analytic, params0, batch)
        except ValueError as err:
            raise _locate_error(cfg, f"{key}.analytic", str(err)) from None
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


def check_gradients(cfg: ExperimentConfig, problems: list[Problem]) -> dict[str, GradCheckReport]:
    """`check_grad` of every cost at the points its runs start from, and at random points.

    The points: the problem's start; with `init_noise`, the noised start of every seed, exactly as
    the sweep's lanes draw them (`_noised_starts`); and `gradcheck.num_points - 1` random points.
    A cost that is not differentiable at a point (a ReLU model initialised at zero) gives a
    warning, not a failure. Needs float64 enabled (finite differences in float64); checks in the
    runs' dtype.
    """
    reports = {}
    for p in problems:
        reports[p.label] = check_grad(
            p.cost,
            p.params0,
            p.data,
            analytic=p.analytic,
            num_points=cfg.gradcheck.num_points,
            key=cfg.seeds[0],
            points=_noised_starts(p, cfg.seeds),
        )
    return reports


def _noised_starts(p: Problem, seeds) -> PyTree | None:
    """The start of each seed's lanes when the cost has `init_noise` (else None), stacked: each
    leaf plus `init_noise * jax.random.normal(k_i, ...)` in its dtype, with the sweep's keys
    `k_i = jax.random.split(jax.random.fold_in(jax.random.key(seed), NOISE_FOLD), num_leaves)`.
    With `init`, each seed's start `init(gdjax.init_key(seed))`."""
    if p.config.init is not None:
        return _init(p).starts(seeds)
    if not p.config.init_noise:
        return None
    leaves, treedef = jax.tree.flatten(p.params0)
    leaves = [np.asarray(x, jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)) for x in leaves]
    stacked = []
    for seed in seeds:
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), NOISE_FOLD), len(leaves))
        stacked.append(
            [
                (
                    x
                    + np.asarray(p.config.init_noise, x.dtype)
                    * np.asarray(jax.random.normal(k, x.shape, x.dtype))
                ).astype(x.dtype)
                for k, x in zip(keys, leaves, strict=True)
            ]
        )
    return treedef.unflatten([np.stack(column) for column in zip(*stacked, strict=True)])


SKIP_GRADCHECK = "to run without the check, set `[gradcheck] enabled = false` in the config"


def gradcheck_text(reports: dict[str, GradCheckReport]) -> str:
    text = "\n\n".join(f"cost {label!r}\n{report}" for label, report in reports.items()) + "\n"
    if not all(r.ok for r in reports.values()):
        text += f"{SKIP_GRADCHECK}\n"
    return text


# ------------------------------------------------------------------------------------------ units
class Unit(NamedTuple):
    """One sweep of a run: one optimizer on one cost."""

    key: str  # the optimizer's label, or "<cost>.<optimizer>" with several costs
    problem: int  # index into the problems
    optimizer: OptimizerConfig
    num_steps: int
    batch_size: tuple[int | None, ...]


def units(cfg: ExperimentConfig) -> list[Unit]:
    """The sweeps of a config, in the order they run (costs outer, optimizers inner)."""
    out = []
    for i, c in enumerate(cfg.costs):
        for opt in cfg.optimizers:
            key = opt.label if len(cfg.costs) == 1 else f"{c.label}.{opt.label}"
            out.append(
                Unit(
                    key=key,
                    problem=i,
                    optimizer=opt,
                    num_steps=opt.num_steps or cfg.run.num_steps,
                    batch_size=opt.batch_size or cfg.run.batch_size,
                )
            )
    return out


def _check_units(cfg: ExperimentConfig, problems: list[Problem], unit_list: list[Unit]) -> None:
    """Checks what needs the data (batch sizes against the number of examples, plots)."""
    for u in unit_list:
        p = problems[u.problem]
        n = None if p.data is None else p.data[0].shape[0]
        for b in u.batch_size:
            if b is None:
                continue
            key = f"optimizers[{cfg.optimizers.index(u.optimizer)}].batch_size"
            if u.optimizer.batch_size is None:
                key = "run.batch_size"
            if n is None:
                raise _locate_error(cfg, key, "test functions take no data, so there is nothing to sample")
            if b > n:
                raise _locate_error(cfg, key, f"batch_size = {b} is larger than the data ({n} examples)")
    for i, name in enumerate(cfg.outputs.plots):
        key = f"outputs.plots[{i}]"
        if name in ("contour", "contour_grid") and not any(p.num_params == 2 for p in problems):
            sizes = ", ".join(f"{p.label}: {p.num_params}" for p in problems)
            raise _locate_error(cfg, key, f"contour plots need a cost of exactly two parameters ({sizes})")
        if name == "fitted_line" and not any(is_line(p) for p in problems):
            raise _locate_error(cfg, key, "fitted_line needs a linear model on one feature")
        if name == "accuracy" and not any("accuracy" in (p.metrics or {}) for p in problems):
            raise _locate_error(
                cfg,
                key,
                'accuracy curves need a classification cost (loss = "logistic" or "cross_entropy")',
            )
    by = cfg.outputs.rank_by
    if by != "final_loss":
        lacking = [p.label for p in problems if by not in (p.metrics or {})]
        if lacking:
            need = (
                "[data] test_fraction"
                if by == "test_loss"
                else 'a classification loss (cost.loss = "logistic" or "cross_entropy")'
            )
            if by == "test_accuracy":
                need += " and [data] test_fraction"
            raise _locate_error(
                cfg,
                "outputs.rank_by",
                f"ranking by {by} needs {need}; cost {', '.join(map(repr, lacking))} has no {by}",
            )
    if cfg.outputs.x_axis == "epochs" and any(p.data is None for p in problems):
        raise _locate_error(cfg, "outputs.x_axis", "epochs count examples: test functions have no data")


def check_sweeps(cfg: ExperimentConfig, problems: list[Problem], unit_list: list[Unit]) -> None:
    """Asks every unit's sweep to validate itself (`gdjax.check_sweep`: nothing compiled or run), so a
    sweep it would refuse (values, sizes against the device memory budget) is refused before any
    folder is made."""
    for u in unit_list:
        p = problems[u.problem]
        try:
            check_sweep(p.cost, u.optimizer.rule, _starts(p), p.data, **_sweep_args(cfg, u, p))
        except ValueError as err:
            raise ValueError(f"{u.key}: {err}; nothing was written") from err


def check_memory(cfg: ExperimentConfig, problems: list[Problem], unit_list: list[Unit]) -> None:
    """Refuses a study whose histories cannot fit in host memory, before any folder is made.

    Every lane of every optimizer keeps, on the host, its recorded iterates (`params_history`: one
    copy of the parameters per `record_every` steps), its loss, gradient-norm and metric histories
    (one entry per evaluation) and its per-step batch losses; the finished run holds them all at
    once to write `histories.npz`. The config reader bounds the loss histories alone; this adds the
    iterates, which scale with the number of parameters only known once the data is loaded (a
    650-parameter classifier recording every step of 10^6 steps needs 2.6 GB per lane). Raises a
    `ConfigError` naming the key to change, with values that fit.
    """
    budget = config_lib._MEMORY_FRACTION * config_lib._host_memory()
    itemsize = 8 if cfg.precision == "float64" else 4
    every = cfg.run.eval_every or 1
    total = 0.0
    worst = None
    for u in unit_list:
        p = problems[u.problem]
        lanes = num_lanes(cfg, u, p)
        num_evals = -(-u.num_steps // every) + 1
        num_records = -(-u.num_steps // cfg.execution.record_every) + 1
        series = 2 + len(p.metrics or {})
        per_lane = itemsize * (
            num_records * p.num_params + series * num_evals + u.num_steps + 4 * p.num_params
        )
        need = lanes * per_lane
        total += need
        if worst is None or need > worst[0]:
            worst = (need, u, p, lanes, num_records)
    if worst is None or total <= budget:
        return
    need, u, p, lanes, num_records = worst
    share = budget * need / total  # what this unit may take, at the study's proportions
    fixed = itemsize * lanes * ((2 + len(p.metrics or {})) * (-(-u.num_steps // every) + 1) + u.num_steps)
    records_fit = int((share - fixed) // (itemsize * lanes * p.num_params)) - 5
    advice = []
    if records_fit >= 2:
        record_every = -(-u.num_steps // (records_fit - 1))
        record_every = -(-record_every // every) * every  # a multiple of eval_every
        table = cfg.key_path("record_every").split(".")[0]
        advice.append(f"[{table}] record_every = {record_every} (iterates every {record_every} steps)")
    lanes_fit = int(budget * lanes // total)
    if lanes_fit >= 1:
        advice.append(f"at most {lanes_fit} lanes for {u.key} (fewer grid values, seeds or batch sizes)")
    steps_fit = int(u.num_steps * budget // total)
    if steps_fit >= 1:
        key = "num_steps"
        advice.append(f"{key} <= {steps_fit}")
    grid_key = f"optimizers[{cfg.optimizers.index(u.optimizer)}].grid"
    key = cfg.key_path("record_every") if records_fit >= 2 else grid_key
    raise _locate_error(
        cfg,
        key,
        f"the study would keep about {config_lib._gb(total)} of histories in memory ({u.key}: "
        f"{lanes} lanes x {num_records} recorded iterates of {p.num_params} parameters), more than the "
        f"{config_lib._gb(budget)} gdjax allows itself here; nothing was written. Use "
        + (" or ".join(advice) if advice else "a smaller study"),
    )


def is_line(p: Problem) -> bool:
    return p.config.model == "linear" and p.dataset is not None and p.dataset.X.shape[1] == 1


def split_per_seed(cfg: ExperimentConfig, p: Problem) -> bool:
    """Whether each seed of `p` draws its own held-out split (`[data] split_per_seed = true`)."""
    d = cfg.data_of(p.config)
    return d is not None and d.split_per_seed


def seed_problems(cfg: ExperimentConfig, problems: list[Problem]) -> dict[tuple[str, int], Problem]:
    """`{(label, seed): problem}` for the problems split per seed: the problem on that seed's split
    (its training data, held-out metrics and f*); the first seed's is the problem itself."""
    out = {}
    for p in problems:
        if split_per_seed(cfg, p):
            for seed in cfg.seeds:
                out[(p.label, seed)] = p if seed == cfg.seeds[0] else _seed_problem(cfg, p, seed)
    return out


def _seed_problem(cfg: ExperimentConfig, p: Problem, seed: int) -> Problem:
    # load_data splits with the config's first seed: the same config with `seed` first, and this cost only
    first = (seed, *[s for s in cfg.seeds if s != seed])
    return build_problems(dataclasses.replace(cfg, seeds=first, costs=(p.config,)))[0]


def _per_seed_info(cfg: ExperimentConfig, p: Problem, per_seed: dict) -> dict:
    """The manifest's f* of a problem split per seed: one per seed (`f_star_per_seed`), none overall."""
    if not split_per_seed(cfg, p):
        return {}
    values = {str(s): per_seed[(p.label, s)].f_star for s in cfg.seeds}
    if all(v is None for v in values.values()):
        return {}
    source = f"{p.f_star_source}, on each seed's training split" if p.f_star_source else "each seed's split"
    return {"f_star": None, "f_star_source": source, "f_star_per_seed": values}


def _random(cfg: ExperimentConfig, u: Unit, p: Problem) -> bool:
    if split_per_seed(cfg, p):
        return True
    n = None if p.data is None else p.data[0].shape[0]
    random_start = p.config.init_noise > 0 or p.config.init is not None
    return random_start or any(b is not None and b < n for b in u.batch_size)


@dataclass
class UnitResult:
    """What one unit produced: host arrays, lane coordinates and summary rows."""

    key: str
    trace: Trace  # NumPy, lanes first
    coords: list[dict]
    rows: list[dict]
    compile_seconds: float
    run_seconds: float
    complete: bool = True
    total_lanes: int | None = None
    hyperparameter_names: tuple[str, ...] = ()
    num_steps: int = 0

    def sweep_result(self, f_star: float | None) -> SweepResult:
        return SweepResult(
            trace=self.trace,
            coords=self.coords,
            hyperparameter_names=self.hyperparameter_names,
            compile_seconds=self.compile_seconds,
            run_seconds=self.run_seconds,
            f_star=f_star,
            num_steps=self.num_steps,
        )


def _py(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unit_result(cfg, u: Unit, p: Problem, result: SweepResult, complete: bool, total: int) -> UnitResult:
    rows = []
    for row in result.summary(target=cfg.run.target):
        out = {"optimizer": u.optimizer.label}
        if len(cfg.costs) > 1:
            out["cost"] = p.label
        out.update({k: _py(v) for k, v in row.items()})
        rows.append(out)
    return UnitResult(
        key=u.key,
        trace=jax.tree.map(np.asarray, result.trace),
        coords=[{k: _py(v) for k, v in c.items()} for c in result.coords],
        rows=rows,
        compile_seconds=float(result.compile_seconds),
        run_seconds=float(result.run_seconds),
        complete=complete,
        total_lanes=total,
        hyperparameter_names=tuple(result.hyperparameter_names),
        num_steps=u.num_steps,
    )


def _sweep_args(cfg: ExperimentConfig, u: Unit, p: Problem, progress=None) -> dict:
    """The `sweep` arguments of a unit: its grid and [run] settings, and the config's own `Stopping`
    and `Execution` objects (with the progress callback)."""
    opt = u.optimizer
    grid: dict[str, Any] = {k: list(v) if isinstance(v, tuple) else v for k, v in opt.grid}
    if opt.schedule is not None:
        grid["schedule"] = opt.schedule
    batch = list(u.batch_size) if len(u.batch_size) > 1 else u.batch_size[0]
    return dict(
        grid=Zip(grid) if opt.zip_grid else grid,
        num_steps=u.num_steps,
        seeds=list(cfg.seeds) if _random(cfg, u, p) else None,
        batch_size=batch,
        metrics=p.metrics,
        eval_every=cfg.run.eval_every,
        stopping=cfg.stopping,
        execution=dataclasses.replace(cfg.execution, progress=progress),
    )


def _init(p: Problem) -> Init | None:
    """The problem's start drawn per seed (`[cost] init = "file.py:init"`, `init(key)`), or None."""
    if p.config.init is None:
        return None
    return Init(problems_lib.load_reference(p.config.init), like=p.params0)


def _check_inits(cfg: ExperimentConfig, problems: list[Problem]) -> None:
    """Each `init` loads and returns params shaped like the problem's start (traced, on the first seed)."""
    for i, p in enumerate(problems):
        if p.config.init is None:
            continue
        key = f"problems[{i}]" if cfg.is_suite else (f"cost[{i}]" if len(cfg.costs) > 1 else "cost")
        try:
            _init(p).starts(cfg.seeds[:1])
        except ValueError as err:
            raise _locate_error(cfg, f"{key}.init", str(err)) from None


def _starts(p: Problem):
    """A unit's `params0`: the problem's start, perturbed or drawn per seed when the config asks."""
    if p.config.init is not None:
        return _init(p)
    if p.config.init_noise:
        return Starts(p.params0, init_noise=p.config.init_noise, stacked=False)
    return p.params0


def num_lanes(cfg: ExperimentConfig, u: Unit, p: Problem) -> int:
    """Lanes of a unit: grid points x seeds (when sampled) x batch sizes."""
    seeds = len(cfg.seeds) if _random(cfg, u, p) else 1
    return u.optimizer.num_points() * seeds * len(u.batch_size)


def run_unit(cfg: ExperimentConfig, u: Unit, p: Problem, *, progress=None, per_seed=None) -> UnitResult:
    """Runs one unit's sweep. Raises `SweepInterrupted` (with `.partial`) if a later chunk fails.

    A problem split per seed runs one sweep per seed, each on its own split (`per_seed`, from
    `seed_problems`; built here when not given)."""
    total = num_lanes(cfg, u, p)
    if split_per_seed(cfg, p):
        return _run_per_seed(cfg, u, p, total, progress, per_seed or seed_problems(cfg, [p]))
    result = sweep(p.cost, u.optimizer.rule, _starts(p), p.data, **_sweep_args(cfg, u, p, progress))
    result = result.with_f_star(p.f_star)
    return _unit_result(cfg, u, p, result, True, total)


def _run_per_seed(cfg, u: Unit, p: Problem, total: int, progress, per_seed: dict) -> UnitResult:
    """One sweep per seed on that seed's split, lanes interleaved into the order one sweep over every
    seed gives (configuration, then seed). Each seed compiles its own program: its training and
    held-out data are constants of the metrics. A failure part-way raises `SweepInterrupted` carrying
    the lanes done so far as `unit_result` (seed by seed)."""
    parts: list[UnitResult] = []
    for seed in cfg.seeds:
        ps = per_seed[(p.label, seed)]
        done = sum(len(r.rows) for r in parts)
        tick = None if progress is None else (lambda d, n, done=done: progress(done + d, total))
        args = dict(_sweep_args(cfg, u, ps, tick), seeds=[seed])
        try:
            result = sweep(ps.cost, u.optimizer.rule, _starts(ps), ps.data, **args)
        except SweepInterrupted as err:
            parts.append(_unit_result(cfg, u, ps, err.partial.with_f_star(ps.f_star), False, total))
            err.unit_result = _combine(parts, interleave=False)
            raise
        parts.append(_unit_result(cfg, u, ps, result.with_f_star(ps.f_star), True, total))
    return _combine(parts, interleave=True)


def _combine(parts: list[UnitResult], interleave: bool) -> UnitResult:
    """Several seeds' unit results as one: lane j of seed k becomes lane `j * num_seeds + k`
    (`interleave`), or the seeds one after another (a partial result)."""
    if interleave:
        order = [(k, j) for j in range(len(parts[0].rows)) for k in range(len(parts))]
    else:
        order = [(k, j) for k, part in enumerate(parts) for j in range(len(part.rows))]
    offsets = np.cumsum([0] + [len(part.rows) for part in parts])
    idx = np.asarray([offsets[k] + j for k, j in order], np.int64)
    trace = jax.tree.map(lambda *xs: np.concatenate(xs)[idx], *[part.trace for part in parts])
    return dataclasses.replace(
        parts[0],
        trace=trace,
        coords=[parts[k].coords[j] for k, j in order],
        rows=[dict(parts[k].rows[j], lane=i) for i, (k, j) in enumerate(order)],
        compile_seconds=sum(part.compile_seconds for part in parts),
        run_seconds=sum(part.run_seconds for part in parts),
        complete=all(part.complete for part in parts),
    )


# ------------------------------------------------------------------------------ summaries and best
_OUTCOME_KEYS = (
    "lane",
    "rule",
    "seed",
    "start",
    "final_loss",
    "suboptimality",
    "suboptimality_vs_best",
    "steps_to_target",
    "status",
    "steps",
    "stop_step",
    *METRIC_NAMES,
)


def config_key(row: dict) -> tuple:
    return tuple((k, repr(v)) for k, v in row.items() if k not in _OUTCOME_KEYS)


def best_configurations(rows: list[dict], by: str = "final_loss", tuning_seeds=None) -> list[dict]:
    """The best configuration of each optimizer (and cost), pooled over seeds.

    With `tuning_seeds` (`[outputs] tuning_seeds`), configurations are scored on the lanes of those
    seeds only, and the row reports the chosen configuration's other (fresh) seeds; a lane without a
    seed (a deterministic run) counts on both sides.

    Lanes that differ only in seed (or start) form one configuration. A configuration is scored by
    the median `by` of its lanes (`final_loss` or `test_loss`: lowest; `accuracy` or
    `test_accuracy`: highest), rounded to 6 significant digits, then by the median number of steps
    (faster wins among configurations that score the same); a configuration with a diverged or
    non-finite lane is ranked after every configuration without one.

    `rows` are a study's summary rows (`summary.json`) or a Python sweep's `result.summary()`, whose
    `rule` stands for the optimizer and whose metrics (the columns after `stop_step`) are outcomes;
    `gdjax.study.results(result).best_configurations(by=..., mode=...)` is the DataFrame form, with
    quartiles.

    Returns:
      One row per optimizer: its configuration's columns, `final_loss` / `suboptimality` / `steps`
      (and the metrics, `suboptimality_vs_best`) as medians over the seeds, `seeds` (how many
      lanes), and `lanes` (their indices).
    """
    rows, user_metrics = _study_rows(rows)
    if rows and not any(by in r for r in rows):
        raise ValueError(
            f"cannot rank by {by!r}{config_lib.nearest(by, rows[0])}; columns: {', '.join(rows[0])}"
        )
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        unit = (r.get("cost"), r["optimizer"])
        key = tuple(kv for kv in config_key(r) if kv[0] not in user_metrics)
        groups.setdefault((unit, key), []).append(r)
    best: dict[tuple, tuple] = {}

    def on(members: list[dict], tuning: bool) -> list[dict]:
        if tuning_seeds is None:
            return members
        return [m for m in members if m.get("seed") is None or (m["seed"] in tuning_seeds) == tuning]

    for (unit, _), everyone in groups.items():
        members = on(everyone, True) or everyone
        blew_up = any(m["status"] in BLEW_UP for m in members)
        sign = -1.0 if by in ("accuracy", "test_accuracy") else 1.0
        values = [m.get(by) for m in members]
        bad = blew_up or any(v is None or not math.isfinite(v) for v in values)
        loss = sign * float(np.median(values)) if not bad else math.inf
        steps = float(np.median([m["steps"] for m in members]))
        score = (blew_up, float(f"{loss:.6g}") if math.isfinite(loss) else math.inf, steps)
        if unit not in best or score < best[unit][0]:
            best[unit] = (score, everyone)
    out = []
    for unit in dict.fromkeys(k for k, _ in groups):
        members = on(best[unit][1], False) or best[unit][1]
        row = {k: v for k, v in members[0].items() if k not in ("lane", "seed", "start", "stop_step")}
        subs = [m["suboptimality"] for m in members]
        for name in ("suboptimality_vs_best", *METRIC_NAMES, *user_metrics):
            if name in row:
                values = [m[name] for m in members]
                row[name] = None if None in values else float(np.median(values))
        row.update(
            final_loss=float(np.median([m["final_loss"] for m in members])),
            suboptimality=None if None in subs else float(np.median(subs)),
            steps=float(np.median([m["steps"] for m in members])),
            status=_majority([m["status"] for m in members]),
            seeds=len(members),
            lanes=[m["lane"] for m in members],
        )
        out.append(row)
    return out


def _study_rows(rows) -> tuple[list[dict], tuple[str, ...]]:
    """Summary rows as a study's: a `SweepResult.summary()` row gets `optimizer` = its `rule`, and its
    metrics (the columns `summary` puts after `stop_step`) are named, so they are not configuration."""
    rows = [dict(r) for r in rows]
    if not rows or "optimizer" in rows[0]:
        return rows, ()
    if "rule" not in rows[0]:
        raise ValueError(
            "best_configurations takes summary rows with an 'optimizer' (a study's summary.json) or a "
            f"'rule' (SweepResult.summary()); these have {', '.join(rows[0])}"
        )
    keys = list(rows[0])
    metrics = tuple(keys[keys.index("stop_step") + 1 :]) if "stop_step" in keys else ()
    return [{"optimizer": r["rule"], **r} for r in rows], metrics


def _majority(values: list[str]) -> str:
    counts = {v: values.count(v) for v in values}
    top = max(counts.values())
    name = next(v for v in values if counts[v] == top)
    return name if top == len(values) else f"{name} ({top}/{len(values)})"


def status_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per optimizer (and cost): how many lanes ended in each status."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        key = r["optimizer"] if r.get("cost") is None else f"{r['cost']}.{r['optimizer']}"
        counts = out.setdefault(key, {str(s): 0 for s in Status})
        counts[r["status"]] += 1
    return out


def _counts_text(c: dict) -> str:
    return f"{c['converged']}/{c['max_steps']}/{c['diverged']}/{c['nonfinite']}"


def format_summary(rows: list[dict], by: str = "final_loss", tuning_seeds=None) -> str:
    """The table `gdjax run` prints: best configuration per optimizer (by `by`, chosen on
    `tuning_seeds` and reported on the others when given) and its status counts."""
    best = best_configurations(rows, by, tuning_seeds)
    counts = status_counts(rows)
    skip = {"optimizer", "cost", "rule", "batch_size", "final_loss", "suboptimality", "steps_to_target"}
    skip |= {"status", "steps", "seeds", "lanes", "schedule", "suboptimality_vs_best", *METRIC_NAMES}
    shown = [m for m in METRIC_NAMES if any(b.get(m) is not None for b in best)]
    vs_best = any(b.get("suboptimality") is None and b.get("suboptimality_vs_best") is not None for b in best)
    table = []
    for b in best:
        key = b["optimizer"] if b.get("cost") is None else f"{b['cost']}.{b['optimizer']}"
        hp = ", ".join(f"{k}={format_number(v)}" for k, v in b.items() if k not in skip and v is not None)
        if b.get("batch_size") is not None:
            hp += f", batch_size={b['batch_size']}"
        c = counts[key]
        table.append(
            {
                "optimizer": key,
                "best configuration": hp or "-",
                "final loss": format_number(b["final_loss"]),
                **(
                    {"f - best": format_number(b.get("suboptimality_vs_best"))}
                    if vs_best
                    else {"f - f*": format_number(b["suboptimality"])}
                ),
                **{m.replace("_", " "): format_number(b.get(m)) for m in shown},
                "steps": format_number(b["steps"]),
                "status": b["status"],
                "lanes (conv/max/div/nan)": _counts_text(c),
            }
        )
    missing = [k for k in counts if k not in {t["optimizer"] for t in table}]
    for key in missing:
        c = counts[key]
        table.append(
            {
                "optimizer": key,
                "best configuration": "(every lane blew up)",
                "final loss": "-",
                **({"f - best": "-"} if vs_best else {"f - f*": "-"}),
                **{m.replace("_", " "): "-" for m in shown},
                "steps": "-",
                "status": "-",
                "lanes (conv/max/div/nan)": _counts_text(c),
            }
        )
    return format_table(table) if table else ""


# ------------------------------------------------------------------------------------- histories
def _coord_arrays(coords: list[dict]) -> dict[str, np.ndarray]:
    """Numeric lane coordinates as arrays (`nan` where a lane has none, e.g. the full batch)."""
    out = {}
    keys = dict.fromkeys(k for c in coords for k in c)
    for k in keys:
        values = [c.get(k) for c in coords]
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
            if all(v is None for v in values):
                continue
            out[f"coords/{k}"] = np.asarray([np.nan if v is None else v for v in values], np.float64)
    return out


# ------------------------------------------------------------------------------------ run folder
def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def _versions() -> dict:
    import optax

    try:
        devices = [str(d) for d in jax.devices()]
        backend = jax.default_backend()
    except RuntimeError:  # no backend could start
        devices, backend = [], None
    return {
        "gdjax": __version__,
        "jax": jax.__version__,
        "jaxlib": _dist_version("jaxlib"),
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": backend,
        "devices": devices,
    }


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _problem_info(p: Problem) -> dict:
    info: dict[str, Any] = {"num_params": p.num_params, "f_star": p.f_star, **p.curvature}
    if p.f_star_source:
        info["f_star_source"] = p.f_star_source
    if p.dataset is not None:
        info["num_examples"] = int(p.dataset.X.shape[0])
        info["num_features"] = int(p.dataset.X.shape[1])
    if p.minimizer is not None:
        info["minimizer"] = jax.tree.map(lambda x: np.asarray(x, np.float64).tolist(), p.minimizer)
        if p.dataset is not None and p.dataset.standardizer is not None and p.config.model == "linear":
            raw = p.dataset.standardizer.unstandardize(p.minimizer)
            info["minimizer_original_scale"] = jax.tree.map(lambda x: np.asarray(x).tolist(), raw)
    return info


def default_out_dir(cfg: ExperimentConfig) -> str:
    """`<outputs.dir>/<name>-<YYYYmmdd-HHMMSS>` (a suffix `-2`, `-3`, ... if taken)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(cfg.outputs.dir, f"{cfg.name}-{stamp}")
    path, k = base, 2
    while os.path.exists(path):
        path, k = f"{base}-{k}", k + 1
    return path


def _save_part(folder: runfolder.RunFolder, u: UnitResult, template: PyTree, suffix: str = "") -> None:
    meta = {
        "key": u.key,
        "complete": u.complete,
        "lanes": len(u.coords),
        "total_lanes": u.total_lanes,
        "compile_seconds": u.compile_seconds,
        "run_seconds": u.run_seconds,
        "hyperparameter_names": list(u.hyperparameter_names),
        "num_steps": u.num_steps,
        "coords": u.coords,
        "rows": u.rows,
        "metrics": sorted(u.trace.metrics or {}),
    }
    folder.save_part(u.key + suffix, _trace_arrays(u.trace, template), meta)


def _trace_arrays(trace: Trace, template: PyTree) -> dict[str, np.ndarray]:
    """`gdjax.io.trace_arrays` as the run folder stores it: the histories, evaluation steps and metric
    histories (`metrics/<name>`, their names in the part's meta); the per-step batch losses and the
    record steps are left out, so `parts/` and `histories.npz` hold what they always have."""
    arrays = trace_arrays(trace, leaf_names(template))
    for k in ("batch_loss_history", "record_steps", "metric_names"):
        arrays.pop(k, None)
    return arrays


def _trace_from(arrays: dict, template: PyTree, metric_names=None) -> Trace:
    """The inverse of `_trace_arrays`."""
    trace = trace_from_arrays(arrays, template)
    names = metric_names if metric_names is not None else [k[8:] for k in arrays if k.startswith("metrics/")]
    metrics = {n: arrays[f"metrics/{n}"] for n in names} or None
    return trace._replace(eval_steps=arrays.get("eval_steps"), metrics=metrics)


def _check_part_meta(meta: dict) -> None:
    """Raises ValueError unless a part's metadata has the types `_save_part` writes (a hostile or
    damaged part, e.g. a count of 10**30, is then redone rather than merged)."""

    def count(k):
        v = meta.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise ValueError(f"{k} is {v!r}, not a count")

    for k in ("lanes", "total_lanes", "num_steps"):
        count(k)
    for k in ("compile_seconds", "run_seconds"):
        v = meta.get(k)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1e12:
            raise ValueError(f"{k} is {v!r}, not a time")
    if not (isinstance(meta.get("rows"), list) and all(isinstance(r, dict) for r in meta["rows"])):
        raise ValueError("rows is not a list of rows")
    if not isinstance(meta.get("coords"), list) or len(meta["coords"]) != meta["lanes"]:
        raise ValueError("coords does not list every lane")
    for k in ("hyperparameter_names", "metrics"):
        if not (isinstance(meta.get(k, []), list) and all(isinstance(n, str) for n in meta.get(k, []))):
            raise ValueError(f"{k} is not a list of names")


def _load_part(folder: runfolder.RunFolder, key: str, template: PyTree, log) -> UnitResult | None:
    """A finished unit from `parts/`; None (with a note) when its part is missing or damaged."""
    names = leaf_names(template)
    required = ["loss_history", "grad_norm_history", "status", "steps", "stop_step"]
    required += [f"params/{n}" for n in names] + [f"params_history/{n}" for n in names]
    meta, arrays, damaged = folder.load_part(key, required)
    if damaged:
        log(f"note: the saved part of {key} is damaged, so it is redone ({damaged})")
        return None
    if meta is None:
        return None
    try:
        _check_part_meta(meta)
        return UnitResult(
            key=key,
            trace=_trace_from(arrays, template, meta.get("metrics", [])),
            coords=meta["coords"],
            rows=meta["rows"],
            compile_seconds=meta["compile_seconds"],
            run_seconds=meta["run_seconds"],
            complete=True,
            total_lanes=meta["total_lanes"],
            hyperparameter_names=tuple(meta["hyperparameter_names"]),
            num_steps=meta["num_steps"],
        )
    except (KeyError, TypeError, ValueError) as err:
        log(f"note: the saved part of {key} is damaged, so it is redone ({type(err).__name__}: {err})")
        return None


@dataclass
class RunOutcome:
    """What `run_experiment` did: the folder, the rows of every lane, and what it wrote."""

    folder: str
    rows: list[dict]
    results: dict[str, UnitResult]
    problems: list[Problem]
    reports: dict[str, GradCheckReport]
    manifest: dict
    plots: list[str] = field(default_factory=list)
    resumed: bool = False


def _merge(cfg, unit_list, results: dict[str, UnitResult], problems) -> tuple[list[dict], dict]:
    rows, arrays = [], {}
    for u in unit_list:
        r = results.get(u.key)
        if r is None:
            continue
        rows.extend(r.rows)
        for k, v in _trace_arrays(r.trace, problems[u.problem].params0).items():
            arrays[f"{u.key}/{k}"] = v
        for k, v in _coord_arrays(r.coords).items():
            arrays[f"{u.key}/{k}"] = v
    if arrays:
        arrays["status_names"] = np.asarray([str(s) for s in Status])
    _suboptimality_vs_best(rows, unit_list, results, problems)
    return _normalize_rows(rows, [results[u.key] for u in unit_list if u.key in results]), arrays


def _suboptimality_vs_best(rows: list[dict], unit_list, results, problems) -> None:
    """Where f* is unknown, `suboptimality_vs_best` = final loss minus the lowest loss any lane of the
    study evaluated on that cost (every optimizer's, as benchopt does), instead of the sweep's own."""
    for pi, p in enumerate(problems):
        if p.f_star is not None:
            continue
        keys = [u.key for u in unit_list if u.problem == pi and u.key in results]
        found = [np.asarray(results[k].trace.loss_history) for k in keys]
        found = [a[np.isfinite(a)] for a in found]
        found = [float(a.min()) for a in found if a.size]
        best = min(found) if found else None
        labels = {results[k].rows[0]["optimizer"] for k in keys if results[k].rows}
        for r in rows:
            if r["optimizer"] in labels and r.get("cost", p.label) == p.label:
                fl = r["final_loss"]
                ok = best is not None and fl is not None and math.isfinite(fl)
                r["suboptimality_vs_best"] = fl - best if ok else None


_ROW_HEAD = ("optimizer", "cost", "lane", "rule")
_ROW_TAIL = ("seed", "start", "batch_size", "final_loss", "suboptimality", "suboptimality_vs_best")
_ROW_TAIL += ("steps_to_target", *METRIC_NAMES, "status", "steps", "stop_step")
_OPTIONAL_TAIL = {"suboptimality_vs_best", *METRIC_NAMES}  # columns only some studies have
# A summary row's columns that are not hyperparameters (how `gdjax.study.load` tells them apart).
SUMMARY_KEYS = frozenset(_ROW_HEAD + _ROW_TAIL)


def _normalize_rows(rows: list[dict], results: list[UnitResult]) -> list[dict]:
    """Every row with the same columns in one order: who, hyperparameters, then outcomes."""
    hp = list(dict.fromkeys(k for r in results for k in r.hyperparameter_names))
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    cols = [c for c in _ROW_HEAD if c in present] + [c for c in hp if c not in _ROW_HEAD + _ROW_TAIL]
    cols += [c for c in present if c not in cols and c not in _ROW_TAIL]
    cols += [c for c in _ROW_TAIL if c not in _OPTIONAL_TAIL or c in present]
    return [{c: r.get(c) for c in cols} for r in rows]


def _write_results(folder: runfolder.RunFolder, rows: list[dict], arrays: dict) -> None:
    folder.write_text("summary.csv", csv_text(rows))
    folder.write_json("summary.json", rows)
    folder.write_npz("histories.npz", arrays)


def _partial_text(cfg, unit_list, results, interrupted: dict | None, reason: str, folder: str) -> str:
    done = [u.key for u in unit_list if u.key in results]
    pending = [u.key for u in unit_list if u.key not in results and (interrupted or {}).get("key") != u.key]
    src = cfg.source if cfg.source and os.path.isfile(cfg.source) else "CONFIG"
    if cfg.source == "<default study>":
        src = ""
    lines = [
        "This run folder is incomplete: " + reason,
        f"Finish it with:  gdjax run {src + ' ' if src else ''}--out {folder} --resume",
        "",
        "done:     " + (", ".join(f"{k} ({len(results[k].coords)} lanes)" for k in done) or "none"),
    ]
    if interrupted:
        lines.append(
            f"partial:  {interrupted['key']}: {interrupted['lanes']} of {interrupted['total_lanes']} lanes "
            f"(chunks done, in {PARTS}/{interrupted['key']}.partial.npz; rerun in full on --resume)"
        )
    lines.append("pending:  " + (", ".join(pending) or "none"))
    return "\n".join(lines) + "\n"


def run_experiment(
    cfg: ExperimentConfig,
    out: str | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    draw: Callable[..., list[str]] | None = None,
    progress: Callable[[str, int, int], Any] | None = None,
    log: Callable[[str], Any] | None = None,
    command: list[str] | None = None,
    gradcheck_x64: Callable | None = None,
) -> RunOutcome:
    """Runs a whole experiment and writes its run folder.

    Args:
      cfg: the validated config.
      out: the run folder (default `default_out_dir(cfg)`).
      resume: finish an interrupted folder: optimizers already done are loaded, the rest rerun.
      force: replace an existing run folder.
      draw: `draw(cfg, problems, units, results, folder) -> paths` draws the plots once every
        optimizer is done (the command passes `gdjax.study.report.draw_plots`, which sits above this module).
      progress: `progress(unit_key, lanes_done, total_lanes)` after each chunk of a sweep.
      log: where one-line messages go (default: nowhere).
      command: the command line, recorded in the manifest.
      gradcheck_x64: a context manager factory the gradient check runs under (the CLI passes one
        that enables float64 for float32 runs; library code does not flip flags itself).

    Returns:
      A `RunOutcome`.

    Raises:
      ConfigError / ValueError: invalid config or folder, before anything is written; an existing
        `out` (without `resume` or `force`), a folder gdjax does not own, a link in it, another
        config or changed data files are refused before anything is computed.
      GradCheckFailed: a cost's gradient check failed, before anything is written.
      RunInterrupted: a sweep failed part-way (the folder is marked partial); a KeyboardInterrupt
        (or any other exception) during a sweep propagates as itself after the folder is marked
        partial, with the folder's path in its `gdjax_run_folder` attribute.
    """
    log = log or (lambda message: None)
    started = _now()
    out = out or default_out_dir(cfg)
    # The folder and the data are judged before anything is computed (issue 17 item 7, issue 19):
    # an existing --out, a foreign or copied marker, a link, another config or changed data.
    fingerprints = runfolder.data_fingerprints(cfg)
    kind = runfolder.check(cfg, out, resume=resume, force=force, fingerprints=fingerprints, log=log)
    problems = build_problems(cfg)
    per_seed = seed_problems(cfg, problems)  # [data] split_per_seed: each seed's own split
    unit_list = units(cfg)
    _check_units(cfg, problems, unit_list)
    check_memory(cfg, problems, unit_list)
    check_sweeps(cfg, problems, unit_list)
    manifest_file = os.path.join(out, "manifest.json")
    if kind == "resume" and os.path.lexists(manifest_file):
        old = read_json(manifest_file, what="run manifest", follow=False)
        if not isinstance(old, dict):
            raise FileFormatError(f"{manifest_file} is not a run manifest (not a JSON object)")
        if old.get("status") == "complete" and not os.path.lexists(os.path.join(out, PARTIAL_MARKER)):
            done, _ = runfolder.prepare(cfg, out, resume=True, force=False, fingerprints=fingerprints)
            done.unlock()
            log(f"nothing to resume: {out} is complete")
            return read_run(out, cfg=cfg, problems=problems)

    reports: dict[str, GradCheckReport] = {}
    if cfg.gradcheck.enabled:
        if gradcheck_x64 is not None:
            with gradcheck_x64():
                reports = check_gradients(cfg, problems)
        else:
            reports = check_gradients(cfg, problems)
        if not all(r.ok for r in reports.values()):
            raise GradCheckFailed(reports)
        for label, report in reports.items():  # a warning (a kink at a start) does not stop the run
            log(f"gradient check of {label}: {report.verdict}")

    folder, resumed = runfolder.prepare(
        cfg, out, resume=resume, force=force, fingerprints=fingerprints, log=log
    )
    try:
        manifest = {
            "name": cfg.name,
            "status": "partial",
            "config": cfg.source,
            "command": command if command is not None else list(sys.argv),
            "cwd": os.getcwd(),
            "git_commit": _git_commit(),
            "precision": cfg.precision,
            "x64_enabled": bool(jax.config.jax_enable_x64),
            **_versions(),
            "started": started,
            "finished": None,
            "compile_seconds": 0.0,
            "run_seconds": 0.0,
            "problems": {p.label: _problem_info(p) | _per_seed_info(cfg, p, per_seed) for p in problems},
            "suite": cfg.is_suite,  # problems named by their labels alone (gdjax.study.load)
            # choose configurations on these seeds, report on the others (gdjax.study.load reads it)
            "tuning_seeds": None if cfg.outputs.tuning_seeds is None else list(cfg.outputs.tuning_seeds),
            "gradcheck": {k: r.verdict for k, r in reports.items()} or "disabled",
            "data_files": fingerprints,
            "units": {
                u.key: {"status": "pending", "lanes": num_lanes(cfg, u, problems[u.problem])}
                for u in unit_list
            },
        }
        results: dict[str, UnitResult] = {}
        if resumed:
            old = read_json(folder.checked("manifest.json"), what="run manifest", follow=False)
            old = old if isinstance(old, dict) else {}
            manifest["started"] = old.get("started", started)
            manifest["resumed"] = [*old.get("resumed", []), started]
            for u in unit_list:
                r = _load_part(folder, u.key, problems[u.problem].params0, log)
                if r is not None:
                    results[u.key] = r
            log(f"resuming {out}: {len(results)} of {len(unit_list)} optimizers already done")
        else:
            folder.write_text("config.toml", cfg.to_toml())
        splits = {
            f"{p.label}/{part}": index
            for p in problems
            if p.dataset is not None and p.dataset.test_index is not None
            for part, index in (("train", p.dataset.train_index), ("test", p.dataset.test_index))
        }
        if splits:  # the held-out split, for gdjax.study.load (`results.splits`)
            folder.write_npz("split.npz", splits)
        if reports:
            folder.write_text("gradcheck.txt", gradcheck_text(reports))
        elif not os.path.lexists(folder.file("gradcheck.txt")):
            folder.write_text("gradcheck.txt", "gradient check disabled (gradcheck.enabled = false)\n")

        def mark(reason: str, interrupted: dict | None = None):
            for k in results:
                manifest["units"][k]["status"] = "complete"
            if interrupted:
                manifest["units"][interrupted["key"]]["status"] = (
                    f"partial ({interrupted['lanes']} lanes done)"
                )
            manifest["compile_seconds"] = sum(r.compile_seconds for r in results.values())
            manifest["run_seconds"] = sum(r.run_seconds for r in results.values())
            manifest["status"] = "partial"
            manifest["interrupted"] = reason
            rows, arrays = _merge(cfg, unit_list, results, problems)
            _write_results(folder, rows, arrays)
            folder.write_json("manifest.json", manifest)
            folder.write_text(
                PARTIAL_MARKER, _partial_text(cfg, unit_list, results, interrupted, reason, folder.path)
            )

        mark("the run is in progress (or was killed)")
        for u in unit_list:
            if u.key in results:
                continue
            p = problems[u.problem]
            total = num_lanes(cfg, u, p)
            log(f"running {u.key}: {total} lane(s) x {u.num_steps} steps")
            tick = None
            if progress is not None:
                tick = lambda done, n, key=u.key: progress(key, done, n)  # noqa: E731
                progress(u.key, 0, total)
            try:
                r = run_unit(cfg, u, p, progress=tick, per_seed=per_seed)
            except ValueError as err:
                # The sweep refused its input before running a lane (a size only it can judge).
                if not resumed and not results:
                    folder.discard()  # a folder this call made and nothing was written to: no PARTIAL
                    raise ValueError(f"{u.key}: {err}; nothing was written") from err
                mark(f"{u.key} was refused: {err}")
                err.gdjax_run_folder = folder.path
                raise
            except SweepInterrupted as err:
                partial = getattr(err, "unit_result", None)  # a problem split per seed: built per seed
                partial = partial or _unit_result(cfg, u, p, err.partial.with_f_star(p.f_star), False, total)
                _save_part(folder, partial, p.params0, suffix=".partial")
                info = {"key": u.key, "lanes": len(partial.coords), "total_lanes": total}
                reason = f"{u.key} stopped after {info['lanes']} of {total} lanes ({err.__cause__!r})"
                mark(reason, info)
                raise RunInterrupted(reason, folder.path) from err
            except BaseException as err:
                mark(f"{u.key} was interrupted ({type(err).__name__})")
                err.gdjax_run_folder = folder.path  # where the partial results are, for the caller
                raise
            _save_part(folder, r, p.params0)
            results[u.key] = r
            mark(f"stopped after {', '.join(results)}")
            log(
                f"  done in {r.compile_seconds + r.run_seconds:.2f} s (compile {r.compile_seconds:.2f} s, "
                f"run {r.run_seconds:.2f} s)"
            )

        rows, arrays = _merge(cfg, unit_list, results, problems)
        _write_results(folder, rows, arrays)
        drawn = []
        if draw is not None:  # drawn aside, then each name listed as gdjax's before it is moved in
            for path in draw(cfg, problems, unit_list, results, folder.staging()):
                moved = folder.adopt(path)
                if moved is None:
                    log(
                        f"note: {folder.file(os.path.basename(path))} is not gdjax's, so it was kept "
                        "and that plot not written; rename it to get the plot"
                    )
                else:
                    drawn.append(moved)
            folder.remove(runfolder.STAGING)
        for k in results:
            manifest["units"][k]["status"] = "complete"
            manifest["units"][k]["compile_seconds"] = results[k].compile_seconds
            manifest["units"][k]["run_seconds"] = results[k].run_seconds
        manifest.pop("interrupted", None)
        manifest.update(
            status="complete",
            finished=_now(),
            compile_seconds=sum(r.compile_seconds for r in results.values()),
            run_seconds=sum(r.run_seconds for r in results.values()),
            plots=[os.path.basename(p) for p in drawn],
        )
        folder.clean_temps()
        folder.write_json("manifest.json", manifest)
        folder.remove(PARTIAL_MARKER)
        folder.remove(PARTS)
    except KeyboardInterrupt as err:
        if os.path.exists(folder.file(PARTIAL_MARKER)):  # stopped while writing results or plots
            err.gdjax_run_folder = folder.path
        raise
    finally:
        folder.unlock()
    return RunOutcome(folder.path, rows, results, problems, reports, manifest, drawn, resumed)


def read_run(path: str, *, cfg: ExperimentConfig | None = None, problems=None) -> RunOutcome:
    """Reads a complete run folder back (rows, histories and manifest)."""
    cfg = cfg or config_lib.load(os.path.join(path, "config.toml"))
    problems = problems or build_problems(cfg)
    manifest = read_json(os.path.join(path, "manifest.json"), what="run manifest", follow=False)
    rows = read_json(os.path.join(path, "summary.json"), what="summary", follow=False)
    if not isinstance(manifest, dict) or not isinstance(rows, list):
        raise FileFormatError(f"{path} does not hold a gdjax run's manifest.json and summary.json")
    results = {}
    histories = os.path.join(path, "histories.npz")
    os.close(open_regular(histories, what="histories file", follow=False))  # a regular file, no link
    inspect_npz(histories)  # plain arrays within the decompressed-size budget, before np.load
    with np.load(histories, allow_pickle=False) as z:
        for u in units(cfg):
            prefix = u.key + "/"
            arrays = {k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)}
            if not arrays:
                continue
            mine = [
                r
                for r in rows
                if r["optimizer"] == u.optimizer.label
                and r.get("cost", None) in (None, problems[u.problem].label)
            ]
            results[u.key] = UnitResult(
                key=u.key,
                trace=_trace_from(arrays, problems[u.problem].params0),
                coords=[],
                rows=mine,
                compile_seconds=manifest["units"].get(u.key, {}).get("compile_seconds", 0.0),
                run_seconds=manifest["units"].get(u.key, {}).get("run_seconds", 0.0),
                num_steps=u.num_steps,
            )
    plots = [os.path.join(path, p) for p in manifest.get("plots", [])]
    return RunOutcome(path, rows, results, problems, {}, manifest, plots, False)
