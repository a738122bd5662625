"""A config's data table read into a `Dataset`: loaded, relabelled, split and standardised in float64.

`read_data(data_table, seed)` reads the embedded tutorial sets, the synthetic generator, CSV and NPZ
files (`gdjax.data` validates them before reading), keeps and relabels `classes`, holds out a seeded
`test_fraction` and standardises on the training split only. Errors are `ProblemError`s naming the
data table's key, which `gdjax.study.preflight` places in the config.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from gdjax import data
from gdjax.io import format_number

__all__ = ["Dataset", "ProblemError", "read_data", "shown_values", "split"]


_AXIS_NAMES = {"house_prices": ("bedrooms", "price (thousands)")}


class ProblemError(ValueError):
    """Data or a cost that cannot be built. `key` is the offending key inside the cost's table
    (`"loss"`, `"params0"`, `"metrics[1]"`) or, from `read_data`, inside the data table (`"classes"`);
    `gdjax.study.preflight` places it in the config, with its line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class Dataset(NamedTuple):
    """The config's data in float64: the training split the runs see, and the held-out split.

    With `[data] test_fraction`, `X`/`y` are the training examples and `X_test`/`y_test` the held-out
    ones (drawn with the study's first seed; the standardisation is fitted on the training split
    only); without it, `X_test` and `y_test` are None. With `split_per_seed`,
    `gdjax.study.preflight.seed_problems` builds each other seed's problem on its own split.
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


def shown_values(values: np.ndarray) -> str:
    """The first dozen distinct targets, for messages."""
    return ", ".join(format_number(v) for v in values[:12]) + (", ..." if values.size > 12 else "")


def read_data(d, seed: int) -> Dataset:
    """Loads, splits (with `seed`) and standardises the data table `d` (a `config.DataConfig`) in float64.

    Raises:
      ProblemError: with the data table's key at fault (`path`, `features`, `classes`, ...).
    """
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
        key = "path" if d.path else "source"
        if d.source == "csv" and "the features option" in str(err):
            key = "features"
        elif d.source == "csv" and "the target option" in str(err):
            key = "target"
        raise ProblemError(key, str(err)) from None
    X, y = np.asarray(X, np.float64), np.asarray(y, np.float64)
    if d.classes is not None:
        keep = np.isin(y, d.classes)
        missing = [c for c in d.classes if not np.any(y == c)]
        if missing:
            raise ProblemError(
                "classes",
                f"no example has target {', '.join(format_number(c) for c in missing)}; "
                f"the targets are {shown_values(np.unique(y))}",
            )
        classes = np.asarray(d.classes, np.float64)
        X, y = X[keep], np.argmax(y[keep][:, None] == classes[None, :], axis=1).astype(np.float64)
    rows = np.flatnonzero(keep) if d.classes is not None else np.arange(X.shape[0])
    X_test = y_test = train_index = test_index = None
    if d.test_fraction is not None:
        n = X.shape[0]
        train, test = split(n, d.test_fraction, seed)
        if n < 2:
            raise ProblemError(
                "test_fraction", f"a held-out split needs at least 2 examples; the data has {n}"
            )
        if train.size == 0 or test.size == 0:
            raise ProblemError(
                "test_fraction",
                f"test_fraction = {d.test_fraction} of {n} examples leaves "
                f"{'no training' if train.size == 0 else 'no test'} example; choose a fraction that "
                f"holds out between 1 and {n - 1} of them",
            )
        X, X_test, y, y_test = X[train], X[test], y[train], y[test]
        train_index, test_index = rows[train], rows[test]
    standardizer = None
    X_raw = X
    if d.standardize:
        if X.shape[0] < 2:  # one example standardizes to zeros: a model that cannot see its features
            raise ProblemError(
                "standardize", f"standardizing needs at least 2 training examples; the data has {X.shape[0]}"
            )
        standardizer = data.Standardizer.fit(X)
        X = standardizer.transform(X)
        X_test = None if X_test is None else standardizer.transform(X_test)
    return Dataset(X, y, X_raw, standardizer, names, X_test, y_test, train_index, test_index)
