"""Datasets: the classic tutorial sets (embedded), a synthetic least-squares generator, file loading,
and standardisation that can be undone on fitted coefficients.

Every loader returns `(X, y)` with `X` of shape `(n, d)` and `y` of shape `(n,)` as NumPy arrays;
callers choose the dtype (`jnp.asarray(X, jnp.float32)`) so that precision stays a user decision.
"""

from __future__ import annotations

import csv
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.validation import check_regression_data, nearest

# The 7-point house-price set of the gradient-descent tutorials: bedrooms -> price (thousands).
HOUSE_BEDROOMS = np.array([1.0, 2.0, 3.0, 3.0, 4.0, 4.0, 5.0])
HOUSE_PRICES = np.array([80.0, 170.0, 100.0, 220.0, 200.0, 270.0, 500.0])


def house_prices() -> tuple[np.ndarray, np.ndarray]:
    """The 7-point house-price set: X = bedrooms `(7, 1)`, y = price in thousands `(7,)`.

    Its least-squares line is `price = 84.737 * bedrooms - 46.316` (slope 1610/19, intercept -880/19).
    """
    return HOUSE_BEDROOMS[:, None].copy(), HOUSE_PRICES.copy()


def line(num_points: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free points on `y = 20 x + 5` at `x = 1, ..., num_points`: the exact answer is known."""
    x = np.arange(1.0, num_points + 1.0)
    return x[:, None], 20.0 * x + 5.0


class Synthetic(NamedTuple):
    X: np.ndarray  # (n, d)
    y: np.ndarray  # (n,)
    w: np.ndarray  # (d,) true weights
    b: float  # true intercept


def synthetic(
    key: jax.Array | int,
    num_examples: int = 1000,
    num_features: int = 5,
    *,
    noise: float = 0.1,
    condition_number: float = 1.0,
    intercept: float = 1.0,
) -> Synthetic:
    """Linear-regression data `y = X w + b + noise * eps` driven by a PRNG key.

    The feature columns are scaled so that the (uncentred) feature covariance has singular values
    spread log-uniformly between 1 and `condition_number`, which sets how ill-conditioned gradient
    descent on the MSE will be. Generated in float64 on the host from `key`, so the same key gives the
    same data on every backend.

    Args:
      key: a `jax.random.key` or an integer seed.
      num_examples, num_features: `n` and `d`.
      noise: standard deviation of the Gaussian label noise.
      condition_number: ratio of the largest to smallest feature scale squared (>= 1).
      intercept: the true intercept `b`.
    """
    if condition_number < 1 or not np.isfinite(condition_number):
        raise ValueError(f"condition_number must be a finite number >= 1, got {condition_number}")
    if num_examples < 1 or num_features < 1:
        raise ValueError(f"need num_examples >= 1 and num_features >= 1, got {num_examples}, {num_features}")
    if not isinstance(key, jax.Array):
        key = jax.random.key(int(key))
    seed = np.asarray(jax.random.key_data(key)).ravel()
    rng = np.random.default_rng(seed.astype(np.uint64).tolist())
    Z = rng.standard_normal((num_examples, num_features))
    scales = np.sqrt(np.geomspace(1.0, condition_number, num_features))[::-1]
    X = Z * scales
    w = rng.standard_normal(num_features)
    y = X @ w + intercept + noise * rng.standard_normal(num_examples)
    return Synthetic(X, y, w, float(intercept))


def load_csv(
    path: str | os.PathLike,
    *,
    target: str | int = -1,
    features: list[str | int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads `(X, y)` from a CSV file with a header row.

    Args:
      target: the target column, by header name or index (default: the last column).
      features: the feature columns by name or index (default: every other column).
    """
    if not os.path.exists(path):
        raise ValueError(f"data file not found: {path}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path}: need a header row and at least one data row")
    header = [h.strip() for h in rows[0]]

    def column(c) -> int:
        if isinstance(c, int):
            if not -len(header) <= c < len(header):
                raise ValueError(f"{path}: column index {c} out of range for {len(header)} columns")
            return c % len(header)
        if c not in header:
            raise ValueError(f"{path}: no column {c!r}{nearest(c, header)}; columns are {header}")
        return header.index(c)

    t = column(target)
    cols = (
        [column(c) for c in features] if features is not None else [i for i in range(len(header)) if i != t]
    )
    try:
        table = np.array([[float(v) for v in r] for r in rows[1:] if r], dtype=np.float64)
    except ValueError as err:
        raise ValueError(f"{path}: every value must be numeric ({err})") from None
    X, y = table[:, cols], table[:, t]
    check_regression_data(X, y)
    return X, y


def load_npz(path: str | os.PathLike, *, x_key: str = "X", y_key: str = "y"):
    """Loads `(X, y)` from an `.npz` file holding arrays under `x_key` and `y_key`."""
    if not os.path.exists(path):
        raise ValueError(f"data file not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        for k in (x_key, y_key):
            if k not in f:
                raise ValueError(f"{path}: no array {k!r}{nearest(k, f.files)}; arrays are {f.files}")
        X, y = np.asarray(f[x_key], np.float64), np.asarray(f[y_key], np.float64)
    if X.ndim == 1:
        X = X[:, None]
    check_regression_data(X, y)
    return X, y


class Standardizer(NamedTuple):
    """Per-feature standardisation `z = (x - mean) / scale` that can be undone on coefficients."""

    mean: np.ndarray  # (d,)
    scale: np.ndarray  # (d,)

    @classmethod
    def fit(cls, X) -> Standardizer:
        X = np.asarray(X, np.float64)
        scale = X.std(axis=0)
        # A constant column carries no slope information; leave it unscaled rather than divide by 0.
        scale = np.where(scale > 0, scale, 1.0)
        return cls(X.mean(axis=0), scale)

    def transform(self, X):
        return (np.asarray(X) - self.mean) / self.scale

    def unstandardize(self, params: dict) -> dict:
        """Maps linear-model params fitted on standardised X back to the original feature scale.

        `y = z.w + b = x.(w / scale) + (b - mean.(w / scale))`.
        """
        w = np.asarray(params["w"], np.float64) / self.scale
        b = np.asarray(params["b"], np.float64) - self.mean @ w
        return {"w": w, "b": b}


DATASETS = {
    "house_prices": house_prices,
    "line": line,
}


def load(name: str):
    """An embedded data set by name: one of `DATASETS`."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}{nearest(name, DATASETS)}; known: {sorted(DATASETS)}")
    return DATASETS[name]()


def as_batch(X, y, dtype=None) -> tuple[jax.Array, jax.Array]:
    """Validates `(X, y)` and returns them as JAX arrays of `dtype` (default: JAX's float)."""
    check_regression_data(X, y)
    dtype = dtype or jnp.result_type(float)
    return jnp.asarray(X, dtype), jnp.asarray(y, dtype)
