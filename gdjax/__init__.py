"""gdjax: gradient descent as a research instrument, on JAX + Optax.

Costs are written once as pure JAX functions `cost(params, data)`; `check_grad` proves their
gradients; `run` minimises one as a single compiled `lax.scan`; `sweep` runs a grid of learning
rates, cost hyperparameters, seeds, starting points and optimizers as one vmapped program.

One representation per idea: a rule is a `Rule` (hashable `RuleSpec` + hyperparameter values), the
settings most calls leave alone are `Stopping` and `Execution`, linear least squares is a
`LeastSquaresProblem` (cost, data, f*, curvature, fast forms), and a cost's hyperparameters are
its keyword parameters (`bind(cost, l2=0.1)`, or grid axes of `sweep`).

This is the core. The study face (TOML configs, run folders, figures, the `gdjax` command) lives in
`gdjax.study` and is not imported here: `import gdjax` loads neither it nor matplotlib. The old
spellings `gdjax.load_config`, `gdjax.ExperimentConfig`, `gdjax.ConfigError`, `gdjax.run_experiment`
and the attributes `gdjax.config`, `gdjax.experiment`, `gdjax.plots`, `gdjax.cli` still work: they
load the study face on first use (PEP 562). New code imports from `gdjax.study`.
"""

import importlib as _importlib

from gdjax import costs, data, io, options, reference, rules, validation
from gdjax._version import __version__
from gdjax.costs import (
    LeastSquaresProblem,
    bind,
    cross_entropy,
    init_linear,
    least_squares_problem,
    linear,
    logistic,
    make_cost,
    mse,
    polynomial,
    polynomial_features,
)
from gdjax.estimator import GDConvergenceWarning, GDRegressor
from gdjax.gradcheck import check_grad
from gdjax.loop import run
from gdjax.options import Execution, Stopping
from gdjax.rules import Rule, RuleSpec
from gdjax.sweep import Starts, SweepInterrupted, SweepPlan, SweepResult, Zip, check_sweep, sweep
from gdjax.types import GradCheckReport, Status, Trace

# Study-face names kept for old code, loaded on first access: name -> (module, attribute or None).
_LAZY = {
    "config": ("gdjax.study.config", None),
    "experiment": ("gdjax.study.experiment", None),
    "plots": ("gdjax.study.plots", None),
    "cli": ("gdjax.study.cli", None),
    "study": ("gdjax.study", None),
    "ConfigError": ("gdjax.study.config", "ConfigError"),
    "ExperimentConfig": ("gdjax.study.config", "ExperimentConfig"),
    "load_config": ("gdjax.study.config", "load"),
    "run_experiment": ("gdjax.study.experiment", "run_experiment"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'gdjax' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = _importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = [
    "Execution",
    "GDConvergenceWarning",
    "GDRegressor",
    "GradCheckReport",
    "LeastSquaresProblem",
    "Rule",
    "RuleSpec",
    "Starts",
    "Status",
    "Stopping",
    "SweepInterrupted",
    "SweepPlan",
    "SweepResult",
    "Trace",
    "Zip",
    "__version__",
    "bind",
    "check_grad",
    "check_sweep",
    "costs",
    "cross_entropy",
    "data",
    "init_linear",
    "io",
    "least_squares_problem",
    "linear",
    "logistic",
    "make_cost",
    "mse",
    "options",
    "polynomial",
    "polynomial_features",
    "reference",
    "rules",
    "run",
    "sweep",
    "validation",
]
