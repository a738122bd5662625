"""gdjax: gradient descent as a research instrument, on JAX + Optax.

Costs are written once as pure JAX functions `cost(params, batch)`; `check_grad` proves their
gradients; `run` minimises one as a single compiled `lax.scan`; `sweep` runs a grid of learning
rates, seeds, starting points and optimizers as one vmapped program.
"""

from gdjax import config, costs, data, experiment, reference, rules, validation
from gdjax.config import ConfigError, ExperimentConfig
from gdjax.config import load as load_config
from gdjax.costs import init_linear, linear, make_cost, mse, polynomial, polynomial_features
from gdjax.estimator import GDConvergenceWarning, GDRegressor
from gdjax.experiment import run_experiment
from gdjax.gradcheck import check_grad
from gdjax.loop import run
from gdjax.sweep import SweepInterrupted, SweepResult, sweep
from gdjax.types import GradCheckReport, Status, Trace

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "config",
    "experiment",
    "load_config",
    "run_experiment",
    "GDConvergenceWarning",
    "GDRegressor",
    "GradCheckReport",
    "Status",
    "SweepInterrupted",
    "SweepResult",
    "Trace",
    "__version__",
    "check_grad",
    "costs",
    "data",
    "init_linear",
    "linear",
    "make_cost",
    "mse",
    "polynomial",
    "polynomial_features",
    "reference",
    "rules",
    "run",
    "sweep",
    "validation",
]
