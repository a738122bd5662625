"""Datasets: the classic tutorial sets and the 8x8 digits (embedded), a synthetic least-squares
generator, file loading, and standardisation that can be undone on fitted coefficients.

Every loader returns `(X, y)` with `X` of shape `(n, d)` and `y` of shape `(n,)` as NumPy arrays;
callers choose the dtype (`jnp.asarray(X, jnp.float32)`) so that precision stays a user decision.
"""

from __future__ import annotations

import csv
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import io
from gdjax.validation import check_regression_data, nearest


def _memory_budget() -> int:
    # Data a reader or generator may hold: a request above it is refused before anything is
    # allocated (issue 12), instead of ending in a MemoryError.
    return io.memory_budget()


def _gb(n: float) -> str:
    return f"{n / 1024**3:.3g} GB"


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
    need, budget = 8 * num_examples * (num_features + 2), _memory_budget()
    if need > budget:
        raise ValueError(
            f"num_examples={num_examples} x num_features={num_features} need about {_gb(need)} of float64 "
            f"data, more than {_gb(budget)}; use num_examples <= {budget // (8 * (num_features + 2))}"
        )
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


def _first_non_utf8_line(path: str) -> int | None:
    """The 1-based line of a file's first byte that is not UTF-8 (read again, line by line)."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def load_csv(
    path: str | os.PathLike,
    *,
    target: str | int = -1,
    features: list[str | int] | None = None,
    exclude: list[str | int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Loads `(X, y)` in float64 from a CSV file with a header row.

    Only the target and feature columns are parsed: other columns (ids, names, dates) may hold
    anything. A value that is not a number, or one too large for float64, is an error naming the
    file, the row, the column and the option (`features`, `target`) that selected it.

    Args:
      target: the target column, by header name or index (default: the last column).
      features: the feature columns by name or index (default: every other column).
      exclude: columns left out of the default features (an id or a text column), by name or index;
        not with `features`.
    """
    if features is not None and exclude:
        raise ValueError("give either features (the columns to use) or exclude (the columns to leave out)")
    path = os.fspath(path)
    if not os.path.isfile(path):
        if os.path.exists(path):  # a folder, a FIFO, a device: never opened (a FIFO would block)
            raise ValueError(f"{path} is not a regular file, so not a data file")
        raise ValueError(f"data file not found: {path}")
    size, budget = os.path.getsize(path), _memory_budget()
    if 4 * size > budget:  # parsed rows take a few times the text
        raise ValueError(f"{path} is {_gb(size)}, too large to read here (at most about {_gb(budget / 4)})")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark (Excel) goes
            rows = list(csv.reader(f))
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}, line {_first_non_utf8_line(path)}: not UTF-8 text ({err.reason}); save it as UTF-8"
        ) from None
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable CSV file: {err}") from None
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
        if header.count(c) > 1:  # by name, one of them would be taken silently
            where = [i + 1 for i, h in enumerate(header) if h == c]
            raise ValueError(
                f"{path}: the header names {header.count(c)} columns {c!r} (columns {where}); rename "
                "them, or select by index"
            )
        return header.index(c)

    t = column(target)
    skip = {column(c) for c in exclude or ()}
    cols = (
        [column(c) for c in features]
        if features is not None
        else [i for i in range(len(header)) if i != t and i not in skip]
    )
    if t in cols:  # the target among the features: a fit of y on y
        raise ValueError(f"{path}: the target column {header[t]!r} is also listed in features")
    repeated = sorted({header[c] for c in cols if cols.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}: features lists the column(s) {repeated} more than once")
    if not cols:
        separator = next((c for c in ";\t|" if len(header) == 1 and c in header[0]), None)
        hint = f"; the header holds {separator!r}: gdjax reads comma-separated files" if separator else ""
        raise ValueError(f"{path}: no feature column is left (columns {header}, target {header[t]!r}){hint}")
    named = [header[c] for c in cols] + [header[t]]
    twice = sorted({h for h in named if header.count(h) > 1}) if features is None else []
    if twice:  # default features: columns of one name, told apart only by position
        raise ValueError(
            f"{path}: the header names several columns {twice}; rename them (or select the features by index)"
        )
    wanted = [*cols, t]
    table = np.empty((len(rows) - 1, len(wanted)), np.float64)
    n = 0
    for line, r in enumerate(rows[1:], start=2):
        if not r or all(not v.strip() for v in r):
            continue
        if len(r) != len(header):
            raise ValueError(f"{path}, line {line}: {len(r)} values for {len(header)} columns")
        for j, c in enumerate(wanted):
            try:
                v = float(r[c])
            except ValueError:
                if c == t:
                    hint = "; the target option must name a numeric column"
                elif features is None:
                    hint = (
                        "; every column but the target is a feature by default: list the numeric ones "
                        "in the features option, or leave this one out with exclude"
                    )
                else:
                    hint = "; it is listed in the features option, which must name numeric columns"
                raise ValueError(
                    f"{path}, line {line}, column {header[c]!r}: {r[c]!r} is not a number{hint}"
                ) from None
            if math.isinf(v) and "inf" not in r[c].lower():
                raise ValueError(
                    f"{path}, line {line}, column {header[c]!r}: {r[c].strip()} is too large for float64"
                )
            if not math.isfinite(v):  # "nan", "inf": the line and column, not an index into X
                option = "target" if c == t else "features"
                raise ValueError(
                    f"{path}, line {line}, column {header[c]!r}: {r[c].strip()} is not a finite number "
                    f"(selected by the {option} option); gdjax fits finite data only"
                )
            table[n, j] = v
        n += 1
    table = table[:n]
    X, y = table[:, :-1], table[:, -1]
    try:
        check_regression_data(X, y)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return X, y


def load_npz(path: str | os.PathLike, *, x_key: str = "X", y_key: str = "y"):
    """Loads `(X, y)` in float64 from an `.npz` file holding arrays under `x_key` and `y_key`.

    The archive is checked before anything is decompressed (`gdjax.io.inspect_npz`: a zip of plain
    `.npy` arrays whose declared sizes its bytes can hold, never unpickled); then `X` must be real
    numbers of shape `(n, d)` or `(n,)` and `y` of shape `(n,)`. Complex data is refused rather than
    silently cast. Every error names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        if os.path.exists(path):  # a folder, a FIFO, a device: never opened (a FIFO would block)
            raise ValueError(f"{path} is not a regular file, so not a data file")
        raise ValueError(f"data file not found: {path}")
    members = io.inspect_npz(path)
    for k in (x_key, y_key):
        if k not in members:
            raise ValueError(f"{path}: no array {k!r}{nearest(k, list(members))}; arrays are {list(members)}")
    for k in (x_key, y_key):
        m = members[k]
        if m.dtype.kind == "c":
            raise ValueError(f"{path}: array {k!r} is complex ({m.dtype}); gdjax fits real data only")
        if m.dtype.kind not in "biuf":
            raise ValueError(f"{path}: array {k!r} holds {m.dtype}, not numbers")
    mx, my = members[x_key], members[y_key]
    if mx.shape and len(mx.shape) > 2 or len(my.shape) != 1 or not mx.shape:
        raise ValueError(
            f"{path}: expected {x_key!r} of shape (n, d) or (n,) and {y_key!r} of shape (n,), "
            f"got {mx.shape} and {my.shape}"
        )
    if mx.shape[0] != my.shape[0]:
        raise ValueError(f"{path}: {x_key!r} has {mx.shape[0]} rows but {y_key!r} has {my.shape[0]}")
    if len(mx.shape) == 2 and mx.shape[1] == 0:  # as a CSV with no feature column left
        raise ValueError(f"{path}: {x_key!r} has no feature column (shape {mx.shape})")
    need, budget = 8 * (math.prod(mx.shape) + my.shape[0]) + mx.nbytes + my.nbytes, _memory_budget()
    if need > budget:
        raise ValueError(
            f"{path}: {x_key!r} {mx.shape} and {y_key!r} {my.shape} need about {_gb(need)}, "
            f"more than {_gb(budget)} allowed here"
        )
    arrays = io.read_npz(path, required=(x_key, y_key))
    X, y = np.asarray(arrays[x_key], np.float64), np.asarray(arrays[y_key], np.float64)
    if X.ndim == 1:
        X = X[:, None]
    try:
        check_regression_data(X, y)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return X, y


def check_representable(X, y, dtype, *, source: str = "the data", columns=None) -> None:
    """Raises a ValueError if a value of `X` or `y` overflows `dtype` (e.g. 1e39 in float32 -> inf).

    Args:
      source: what to name in the message (a file).
      columns: names of `X`'s columns, for the message.
    """
    big = float(np.finfo(np.dtype(dtype)).max)
    for name, a in (("X", np.asarray(X)), ("y", np.asarray(y))):
        finite = np.isfinite(a)
        over = finite & (np.abs(np.where(finite, a, 0.0)) > big)
        if over.any():
            idx = np.argwhere(over)[0]
            where = name
            if name == "X" and a.ndim == 2:
                col = int(idx[1])
                where = f"column {columns[col]!r}" if columns is not None else f"X column {col}"
            elif name == "y":
                where = "the target" if columns is None else "the target column"
            raise ValueError(
                f"{source}: {where} holds {float(a[tuple(idx)]):g} (row {int(idx[0])}), which overflows "
                f'{np.dtype(dtype).name} to inf; rescale the data, or use precision = "float64"'
            )


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

        `y = z.w + b = x.(w / scale) + (b - mean.(w / scale))`; a softmax's `w` is `(d, classes)`,
        one column per class, and its `b` one entry per class.
        """
        w = np.asarray(params["w"], np.float64)
        w = w / (self.scale[:, None] if w.ndim == 2 else self.scale)
        b = np.asarray(params["b"], np.float64) - self.mean @ w
        return {"w": w, "b": b}


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits: X = pixel intensities 0..16 `(1797, 64)`, y = the digit 0..9 `(1797,)`.

    A classification set shipped inside the package (`gdjax/_data/digits.npz`, 45 kB; nothing is
    downloaded): the test set of the UCI "Optical Recognition of Handwritten Digits" data
    (E. Alpaydin, C. Kaynak, 1998; CC BY 4.0) as scikit-learn bundles it (`sklearn.datasets.load_digits`).
    About 180 examples of each digit. Targets are class indices as floats; take two classes for a
    logistic regression, all ten for a softmax (cross-entropy) one.
    """
    from importlib import resources

    path = resources.files("gdjax") / "_data" / "digits.npz"
    with resources.as_file(path) as f:
        arrays = io.read_npz(f, required=("X", "y"))
    return np.asarray(arrays["X"], np.float64), np.asarray(arrays["y"], np.float64)


DATASETS = {
    "house_prices": house_prices,
    "line": line,
    "digits": digits,
}


def load(name: str):
    """An embedded data set by name: one of `DATASETS`."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}{nearest(name, DATASETS)}; known: {sorted(DATASETS)}")
    return DATASETS[name]()


def as_batch(X, y, dtype=None) -> tuple[jax.Array, jax.Array]:
    """Validates `(X, y)` and returns them as JAX arrays of `dtype` (default: JAX's float).

    Raises:
      ValueError: invalid data, or a value that overflows `dtype` (1e39 in float32).
    """
    check_regression_data(X, y)
    dtype = dtype or jnp.result_type(float)
    check_representable(X, y, dtype)
    return jnp.asarray(X, dtype), jnp.asarray(y, dtype)
