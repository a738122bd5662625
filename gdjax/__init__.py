"""gdjax: gradient descent as a research instrument, on JAX + Optax.

Costs are written once as pure JAX functions `cost(params, data)`; `check_grad` proves their
gradients; `run` minimises one as a single compiled `lax.scan`; `sweep` runs a grid of learning
rates, cost hyperparameters, seeds, starting points and optimizers as one vmapped program.

One representation per idea: a rule is a `Rule` (hashable `RuleSpec` + hyperparameter values), the
settings most calls leave alone are `Stopping` and `Execution`, linear least squares is a
`LeastSquaresProblem` (cost, data, f*, curvature, fast forms), and a cost's hyperparameters are
its keyword parameters (`bind(cost, l2=0.1)`, or grid axes of `sweep`).

This is the core. The study face (TOML configs, run folders, figures, the `gdjax` command) lives in
`gdjax.study` and is not imported here: `import gdjax` loads neither it nor matplotlib. Every name
below is loaded on first use (PEP 562), so `import gdjax` itself imports nothing heavy, not even
JAX: the `gdjax` command (`gdjax.study.command`) installs its signal handlers before JAX starts. The old
spellings `gdjax.load_config`, `gdjax.ExperimentConfig`, `gdjax.ConfigError`, `gdjax.run_experiment`
and the attributes `gdjax.config`, `gdjax.experiment`, `gdjax.plots`, `gdjax.cli` still work: they
load the study face on first use. New code imports from `gdjax.study`.
"""

import importlib as _importlib
import sys as _sys
import types as _types
from typing import TYPE_CHECKING

from gdjax._version import __version__

# name -> (module, attribute; None for the module itself). Loaded on first access.
_EXPORTS = {
    **{m: (f"gdjax.{m}", None) for m in ("costs", "data", "io", "options", "reference", "rules", "testing")},
    "validation": ("gdjax.validation", None),
    **{
        n: ("gdjax.costs", n)
        for n in (
            "LeastSquaresProblem", "bind", "cross_entropy", "init_linear", "least_squares_problem",
            "linear", "logistic", "make_cost", "mse", "polynomial", "polynomial_features",
        )
    },
    "GDConvergenceWarning": ("gdjax.estimator", "GDConvergenceWarning"),
    "GDRegressor": ("gdjax.estimator", "GDRegressor"),
    "check_grad": ("gdjax.gradcheck", "check_grad"),
    "run": ("gdjax.loop", "run"),
    "Execution": ("gdjax.options", "Execution"),
    "Stopping": ("gdjax.options", "Stopping"),
    "Rule": ("gdjax.rules", "Rule"),
    "RuleSpec": ("gdjax.rules", "RuleSpec"),
    "enable_compile_cache": ("gdjax.compile_cache", "enable_compile_cache"),
    **{
        n: ("gdjax.sweep", n)
        for n in (
            "Init", "LoweredProgram", "Starts", "SweepInterrupted", "SweepPlan", "SweepResult", "Zip",
            "check_sweep", "init_key", "lower_sweep",
        )
    },
    "GradCheckReport": ("gdjax.types", "GradCheckReport"),
    "Status": ("gdjax.types", "Status"),
    "Trace": ("gdjax.types", "Trace"),
    # Study-face names kept for old code.
    "config": ("gdjax.study.config", None),
    "experiment": ("gdjax.study.experiment", None),
    "plots": ("gdjax.study.plots", None),
    "cli": ("gdjax.study.cli", None),
    "study": ("gdjax.study", None),
    "ConfigError": ("gdjax.study.config", "ConfigError"),
    "ExperimentConfig": ("gdjax.study.config", "ExperimentConfig"),
    "load_config": ("gdjax.study.config", "load"),
    "run_experiment": ("gdjax.study.experiment", "run_experiment"),
}  # fmt: skip
_STUDY = ("config", "experiment", "plots", "cli", "study", "ConfigError", "ExperimentConfig", "load_config",
          "run_experiment")  # fmt: skip


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gdjax' has no attribute {name!r}")
    module_name, attr = _EXPORTS[name]
    module = _importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    if name not in _STUDY:
        globals()[name] = value  # later accesses are plain attribute lookups
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS, "sweep"])


class _Package(_types.ModuleType):
    """`gdjax.sweep` is the function, although a submodule of the same name exists: importing the
    submodule would otherwise replace the attribute with the module."""

    @property
    def sweep(self):
        return _importlib.import_module("gdjax.sweep").sweep

    @sweep.setter
    def sweep(self, value):  # the import system binding the submodule: it stays in sys.modules
        pass


_sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from gdjax import costs, data, io, options, reference, rules, testing, validation  # noqa: F401
    from gdjax.compile_cache import enable_compile_cache  # noqa: F401
    from gdjax.costs import (  # noqa: F401
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
    from gdjax.estimator import GDConvergenceWarning, GDRegressor  # noqa: F401
    from gdjax.gradcheck import check_grad  # noqa: F401
    from gdjax.loop import run  # noqa: F401
    from gdjax.options import Execution, Stopping  # noqa: F401
    from gdjax.rules import Rule, RuleSpec  # noqa: F401
    from gdjax.sweep import (  # noqa: F401
        Init,
        LoweredProgram,
        Starts,
        SweepInterrupted,
        SweepPlan,
        SweepResult,
        Zip,
        check_sweep,
        init_key,
        lower_sweep,
        sweep,
    )
    from gdjax.types import GradCheckReport, Status, Trace  # noqa: F401


__all__ = [
    "Execution",
    "GDConvergenceWarning",
    "GDRegressor",
    "GradCheckReport",
    "Init",
    "LeastSquaresProblem",
    "LoweredProgram",
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
    "enable_compile_cache",
    "init_key",
    "init_linear",
    "io",
    "least_squares_problem",
    "linear",
    "logistic",
    "lower_sweep",
    "make_cost",
    "mse",
    "options",
    "polynomial",
    "polynomial_features",
    "reference",
    "rules",
    "run",
    "sweep",
    "testing",
    "validation",
]
