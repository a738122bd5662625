"""gdjax: gradient descent as a research instrument, on JAX + Optax."""

from gdjax import costs, data, reference, validation
from gdjax.costs import init_linear, linear, make_cost, mse, polynomial, polynomial_features
from gdjax.types import Status, Trace

__version__ = "0.1.0"

__all__ = [
    "Status",
    "Trace",
    "__version__",
    "costs",
    "data",
    "init_linear",
    "linear",
    "make_cost",
    "mse",
    "polynomial",
    "polynomial_features",
    "reference",
    "validation",
]
