"""`GDRegressor`, judged by oracles it cannot influence.

Oracles: the closed-form least-squares optimum and the stable step `2/L` from `gdjax.reference`,
`gdjax.run` itself (warm start must be exactly a run from the previous coefficients), the R^2
formula written out in NumPy, and scikit-learn's own estimator checks (`parametrize_with_checks`).
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest
from helpers import atol, count_compilations, rtol

import gdjax
from gdjax import reference, rules
from gdjax.data import Standardizer
from gdjax.estimator import (
    FORMAT_VERSION,
    DataConversionWarning,
    GDConvergenceWarning,
    GDRegressor,
    NotFittedError,
)
from gdjax.loop import run

try:  # scikit-learn is a test-only dependency (the `dev` extra); gdjax never imports it
    import scipy.sparse
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError
    from sklearn.utils.estimator_checks import parametrize_with_checks
except ImportError:  # pragma: no cover
    parametrize_with_checks = None

needs_sklearn = pytest.mark.skipif(parametrize_with_checks is None, reason="scikit-learn not installed")


def house():
    return gdjax.data.house_prices()


def synthetic(n=200, d=4, condition_number=10.0, intercept=1.0, seed=0):
    s = gdjax.data.synthetic(seed, n, d, noise=0.1, condition_number=condition_number, intercept=intercept)
    return s.X, s.y


def assert_bitwise_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


FITTED_ARRAYS = ("coef_", "intercept_", "loss_curve_", "coef_path_", "intercept_path_", "path_steps_")


# ----------------------------------------------------------------------------- agreement
# (id, data, estimator settings). Every run stops once a step moves the parameters by less than
# 1e-12, and must then agree with the float64 least-squares optimum to helpers' float64 tolerance.
AGREEMENT = [
    ("house-standardized", house, dict(learning_rate=0.1, standardize=True)),
    ("house-momentum", house, dict(rule="momentum", learning_rate=0.1, standardize=True)),
    ("synthetic-raw", synthetic, dict(learning_rate=0.05)),
    ("synthetic-standardized", synthetic, dict(learning_rate=0.2, standardize=True)),
    ("synthetic-adam", synthetic, dict(rule="adam", learning_rate=0.1, standardize=True)),
    (
        "synthetic-no-intercept",
        lambda: synthetic(intercept=0.0),
        dict(learning_rate=0.2, standardize=True, fit_intercept=False),
    ),
]


@pytest.mark.parametrize("make,settings", [r[1:] for r in AGREEMENT], ids=[r[0] for r in AGREEMENT])
def test_agrees_with_least_squares(make, settings):
    X, y = make()
    model = GDRegressor(tol=1e-12, **settings).fit(X, y)
    fit_intercept = settings.get("fit_intercept", True)
    ls = reference.least_squares(X, y, fit_intercept=fit_intercept)
    assert model.status_ == "converged"
    tol = dict(rtol=rtol(np.float64), atol=atol(np.float64))
    np.testing.assert_allclose(model.coef_, ls["w"], **tol)
    np.testing.assert_allclose(model.intercept_, ls["b"], **tol)
    # The histories describe the same run: last loss is the MSE of the final coefficients.
    assert model.loss_curve_.shape == (model.n_iter_ + 1,)
    assert model.coef_path_.shape == (model.n_iter_ + 1, X.shape[1])
    assert_bitwise_equal(model.coef_path_[-1], model.coef_)
    assert_bitwise_equal(model.intercept_path_[-1], model.intercept_)
    np.testing.assert_allclose(model.loss_curve_[-1], np.mean((model.predict(X) - y) ** 2), **tol)
    np.testing.assert_allclose(model.loss_curve_[-1], reference.mse_cost(ls, (X, y)), **tol)


def test_house_prices_tutorial_line():
    X, y = house()
    model = GDRegressor(learning_rate=0.1, standardize=True, tol=1e-12).fit(X, y)
    # price = 1610/19 * bedrooms - 880/19, the tutorials' least-squares line
    np.testing.assert_allclose(
        [model.coef_[0], model.intercept_], [1610 / 19, -880 / 19], rtol=rtol(np.float64)
    )


def test_standardize_reports_coefficients_on_the_original_scale():
    X, y = synthetic(condition_number=100.0)
    settings = dict(learning_rate=0.2, tol=None)
    model = GDRegressor(standardize=True, **settings).fit(X, y)
    # Oracle: the same run on standardised data by hand, mapped back with Standardizer.
    scaler = Standardizer.fit(X)
    on_z = GDRegressor(**settings).fit(scaler.transform(X), y)
    back = scaler.unstandardize({"w": on_z.coef_, "b": on_z.intercept_})
    assert_bitwise_equal(model.coef_, back["w"])
    assert_bitwise_equal(model.intercept_, back["b"])
    f64 = dict(rtol=rtol(np.float64), atol=atol(np.float64))
    np.testing.assert_allclose(model.predict(X), on_z.predict(scaler.transform(X)), **f64)
    for k in (0, 10, 1000):
        w_k = scaler.unstandardize({"w": on_z.coef_path_[k], "b": on_z.intercept_path_[k]})
        np.testing.assert_allclose(model.coef_path_[k], w_k["w"], **f64)
        np.testing.assert_allclose(model.intercept_path_[k], w_k["b"], **f64)
    ls = reference.least_squares(X, y)
    np.testing.assert_allclose(model.coef_, ls["w"], rtol=rtol(np.float64))
    np.testing.assert_allclose(model.intercept_, ls["b"], rtol=rtol(np.float64))


def test_no_intercept_has_no_b():
    X, y = synthetic(intercept=3.0)
    model = GDRegressor(learning_rate=0.05, fit_intercept=False, tol=1e-12).fit(X, y)
    assert model.intercept_ == 0.0 and not np.any(model.intercept_path_)
    ls = reference.least_squares(X, y, fit_intercept=False)
    np.testing.assert_allclose(model.coef_, ls["w"], rtol=rtol(np.float64))
    np.testing.assert_allclose(model.predict(X), X @ model.coef_, rtol=rtol(np.float64))


def test_float32_fit():
    X, y = house()
    model = GDRegressor(learning_rate=0.1, standardize=True, tol=1e-5, dtype="float32").fit(X, y)
    assert model.coef_.dtype == np.float32 and model.loss_curve_.dtype == np.float32
    ls = reference.least_squares(X, y)
    np.testing.assert_allclose(model.coef_, ls["w"], rtol=rtol(np.float32))
    np.testing.assert_allclose(model.intercept_, ls["b"], rtol=rtol(np.float32))


# ------------------------------------------------------------------ reproducibility, no recompiles
def test_fit_twice_is_bit_identical():
    X, y = synthetic()
    model = GDRegressor(learning_rate=0.05, batch_size=16, tol=None, seed=7)
    first = {k: getattr(model.fit(X, y), k) for k in FITTED_ARRAYS}
    again = model.fit(X, y)
    fresh = GDRegressor(learning_rate=0.05, batch_size=16, tol=None, seed=7).fit(X, y)
    for k in FITTED_ARRAYS:
        assert_bitwise_equal(getattr(again, k), first[k])
        assert_bitwise_equal(getattr(fresh, k), first[k])
    other_seed = GDRegressor(learning_rate=0.05, batch_size=16, tol=None, seed=8).fit(X, y)
    assert not np.array_equal(other_seed.coef_, first["coef_"])


def test_new_learning_rate_does_not_recompile():
    X, y = synthetic()
    GDRegressor(learning_rate=0.05, tol=None).fit(X, y)
    with count_compilations() as counter:
        GDRegressor(learning_rate=0.07, tol=None).fit(X, y)
    assert counter.count == 0


# -------------------------------------------------------------------------------- warm start
def test_warm_start_continues_from_previous_coefficients():
    X, y = synthetic()
    # A small step, so that the first fit stops far from the optimum.
    model = GDRegressor(learning_rate=0.001, num_steps=500, tol=None, warm_start=True).fit(X, y)
    first = model.loss_curve_.copy()
    model.fit(X, y)
    # Plain GD's state is only a step count, so 500 + 500 steps are exactly one 1000-step run.
    long = GDRegressor(learning_rate=0.001, tol=None).fit(X, y)
    assert_bitwise_equal(model.coef_, long.coef_)
    assert_bitwise_equal(model.intercept_, long.intercept_)
    assert_bitwise_equal(np.concatenate([first, model.loss_curve_[1:]]), long.loss_curve_)
    assert model.n_iter_ == 500 and long.loss_curve_[-1] < 0.5 * first[-1]


def test_warm_start_resets_the_rule_state():
    X, y = synthetic()
    # A small step, so that the second fit starts far from the optimum, where velocity matters.
    settings = dict(rule="momentum", learning_rate=1e-4, rule_options={"momentum": 0.9}, standardize=True)
    model = GDRegressor(tol=None, warm_start=True, **settings).fit(X, y)
    previous = {"w": model.coef_.copy(), "b": model.intercept_}
    model.fit(X, y)
    # Oracle: gdjax.run from the previous predictor (mapped to the standardised scale) with a
    # freshly initialised rule, i.e. zero velocity.
    scaler = Standardizer.fit(X)
    params0 = {"w": previous["w"] * scaler.scale, "b": previous["b"] + scaler.mean @ previous["w"]}
    trace = run(
        gdjax.make_cost(gdjax.linear, gdjax.mse),
        rules.get("momentum", learning_rate=1e-4, momentum=0.9),
        params0,
        (scaler.transform(X), y),
        num_steps=1000,
        key=jax.random.key(0),
    )
    expected = scaler.unstandardize(jax.device_get(trace.params))
    assert_bitwise_equal(model.coef_, expected["w"])
    assert_bitwise_equal(model.intercept_, expected["b"])
    assert trace.grad_norm_history[0] > 0.1  # the second fit did start away from the optimum


def test_cold_start_restarts_from_zeros():
    X, y = synthetic()
    X2, y2 = synthetic(seed=1)
    model = GDRegressor(learning_rate=0.05, tol=None).fit(X, y).fit(X2, y2)
    fresh = GDRegressor(learning_rate=0.05, tol=None).fit(X2, y2)
    for k in FITTED_ARRAYS:
        assert_bitwise_equal(getattr(model, k), getattr(fresh, k))


def test_warm_start_with_other_feature_count_is_an_error():
    X, y = synthetic(d=4)
    model = GDRegressor(learning_rate=0.05, tol=None, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features while the previous fit had 4"):
        model.fit(X[:, :3], y)


# ------------------------------------------------------------------- parameters, clone, repr
def test_init_stores_arguments_and_validates_nothing():
    model = GDRegressor(rule=3, learning_rate=-1.0, num_steps="many", rule_options=[1])
    assert model.get_params()["learning_rate"] == -1.0 and model.get_params()["rule_options"] == [1]
    with pytest.raises(ValueError, match="rule must be a rule name"):
        model.fit(*house())


def test_get_params_matches_signature_and_set_params():
    model = GDRegressor("adam", learning_rate=0.1, rule_options={"b1": 0.8})
    params = model.get_params()
    assert list(params) == [
        "rule",
        "learning_rate",
        "num_steps",
        "tol",
        "batch_size",
        "fit_intercept",
        "standardize",
        "seed",
        "rule_options",
        "grad_tol",
        "divergence_factor",
        "warm_start",
        "dtype",
    ]
    assert model.set_params(num_steps=5, tol=None) is model
    assert model.num_steps == 5 and model.tol is None
    with pytest.raises(ValueError, match=r"Invalid parameter 'learning_rat'.*did you mean 'learning_rate'.*"):
        model.set_params(learning_rat=0.1)
    with pytest.raises(ValueError, match="Valid parameters are: \\['rule', 'learning_rate'"):
        model.set_params(alpha=0.1)


@needs_sklearn
def test_clone_round_trip():
    X, y = house()
    model = GDRegressor("momentum", learning_rate=0.05, rule_options={"momentum": 0.8}, standardize=True)
    model.fit(X, y)
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert copy.rule_options is not model.rule_options  # clone deep-copies non-estimator params
    assert not hasattr(copy, "coef_")
    np.testing.assert_array_equal(copy.fit(X, y).coef_, model.coef_)


def test_repr_shows_non_default_parameters():
    assert repr(GDRegressor()) == "GDRegressor()"
    model = GDRegressor("adam", learning_rate=0.1, standardize=True, tol=None)
    assert repr(model) == "GDRegressor(rule='adam', learning_rate=0.1, tol=None, standardize=True)"
    assert repr(GDRegressor(seed=np.array([1, 2]))) == "GDRegressor(seed=array([1, 2]))"


# -------------------------------------------------------------------------------- warnings
DIVERGENCE = [
    # (id, rule, rule_options, learning rate as a multiple of 2/L, standardize, divergence_factor,
    #  status, message fragments expected, fragments that must not appear)
    ("sgd-raw", "sgd", None, 1.5, False, 100.0, "diverged", ["2/L = ", "standardize=True"], []),
    ("sgd-standardized", "sgd", None, 1.5, True, 100.0, "diverged", ["2/L = ", "standardised data"], []),
    ("sgd-overflow", "sgd", None, 1000.0, False, None, "nonfinite", ["non-finite", "2/L = "], []),
    (
        "momentum",
        "momentum",
        {"momentum": 0.9},
        2.5,
        True,
        100.0,
        "diverged",
        ["Lower learning_rate"],
        ["2/L"],
    ),
]


@pytest.mark.parametrize(
    "rule,options,multiple,standardize,factor,status,present,absent",
    [r[1:] for r in DIVERGENCE],
    ids=[r[0] for r in DIVERGENCE],
)
def test_divergence_warning_names_learning_rate_and_stable_bound(
    rule, options, multiple, standardize, factor, status, present, absent
):
    X, y = house()
    Z = Standardizer.fit(X).transform(X) if standardize else X
    bound = reference.curvature(Z).max_stable_lr
    lr = multiple * bound
    model = GDRegressor(
        rule,
        learning_rate=lr,
        rule_options=options,
        standardize=standardize,
        divergence_factor=factor,
    )
    with pytest.warns(GDConvergenceWarning, match=re.escape(f"learning_rate={lr:g}")) as record:
        model.fit(X, y)
    assert model.status_ == status
    message = str(record[0].message)
    for fragment in present:
        assert fragment in message
    for fragment in absent:
        assert fragment not in message
    if "2/L = " in present:
        assert f"2/L = {bound:.6g}" in message
    assert np.all(np.isfinite(model.coef_))  # the last finite iterate
    assert np.isfinite(model.predict(X)).all()


def test_max_steps_warns_unless_tol_is_none():
    X, y = synthetic()
    with pytest.warns(GDConvergenceWarning, match=r"did not converge within num_steps=1000 \(tol=1e-06"):
        model = GDRegressor(learning_rate=0.001).fit(X, y)
    assert model.status_ == "max_steps" and model.n_iter_ == 1000
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = GDRegressor(learning_rate=0.001, tol=None).fit(X, y)
    assert model.status_ == "max_steps"


def test_grad_tol_stops_the_run():
    X, y = house()
    model = GDRegressor(learning_rate=0.1, standardize=True, tol=None, grad_tol=1e-6).fit(X, y)
    assert model.status_ == "converged" and model.n_iter_ < 1000


# ----------------------------------------------------------------------------- predict / score
def test_score_is_r2_from_the_numpy_formula():
    X, y = synthetic(n=300, condition_number=3.0)
    X_train, y_train, X_test, y_test = X[:200], y[:200], X[200:], y[200:]
    model = GDRegressor(learning_rate=0.01, standardize=True, tol=None).fit(X_train, y_train)
    pred = X_test @ model.coef_ + model.intercept_
    r2 = 1.0 - np.sum((y_test - pred) ** 2) / np.sum((y_test - y_test.mean()) ** 2)
    score = model.score(X_test, y_test)
    assert isinstance(score, float)
    np.testing.assert_allclose(score, r2, rtol=rtol(np.float64))
    np.testing.assert_allclose(model.predict(X_test), pred, rtol=rtol(np.float64))


def test_score_takes_sample_weight_as_scikit_learn_does():
    X, y = synthetic(n=300, condition_number=3.0)
    model = GDRegressor(learning_rate=0.01, standardize=True, tol=None).fit(X, y)
    w = np.random.default_rng(1).uniform(size=300)
    pred = model.predict(X)
    mean = np.sum(w * y) / np.sum(w)
    r2 = 1.0 - np.sum(w * (y - pred) ** 2) / np.sum(w * (y - mean) ** 2)  # r2_score's weighted form
    np.testing.assert_allclose(model.score(X, y, sample_weight=w), r2, rtol=rtol(np.float64))
    assert model.score(X, y, sample_weight=np.ones(300)) == model.score(X, y)
    with pytest.raises(ValueError, match="sample_weight must be 300 finite weights"):
        model.score(X, y, sample_weight=-w)


def test_score_with_constant_targets():
    X, _ = house()
    model = GDRegressor(learning_rate=0.01).fit(X, np.zeros(7))  # zero gradient: stays exactly at 0
    assert model.score(X, np.zeros(7)) == 1.0  # sklearn's r2_score convention for constant targets
    assert model.score(X, np.full(7, 5.0)) == 0.0


def test_predict_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted yet") as info:
        GDRegressor().predict(np.ones((2, 2)))
    assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError)
    if parametrize_with_checks is not None:  # scikit-learn is imported: its class is recognised too
        assert isinstance(info.value, SklearnNotFittedError)


class FakeFrame:
    """The part of the pandas DataFrame API the estimator reads: `columns` and `__array__`."""

    def __init__(self, data, columns):
        self.data, self.columns = np.asarray(data), list(columns)

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)


def test_feature_names_from_a_dataframe_like(tmp_path):
    X, y = synthetic()
    names = ["a", "b", "c", "d"]
    model = GDRegressor(learning_rate=0.05, tol=None).fit(FakeFrame(X, names), y)
    np.testing.assert_array_equal(model.feature_names_in_, names)
    with pytest.warns(UserWarning, match="X does not have valid feature names, but GDRegressor was fitted"):
        by_position = model.predict(X)  # scikit-learn's warning: the columns are matched by position
    np.testing.assert_array_equal(model.predict(FakeFrame(X, names)), by_position)
    with pytest.raises(ValueError, match="feature names should match"):
        model.predict(FakeFrame(X, names[::-1]))
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(GDRegressor.load(tmp_path / "m.npz").feature_names_in_, names)
    assert not hasattr(model.fit(FakeFrame(X, [0, 1, 2, 3]), y), "feature_names_in_")
    unnamed = GDRegressor(learning_rate=0.05, tol=None).fit(X, y)
    with pytest.warns(UserWarning, match="X has feature names, but GDRegressor was fitted without"):
        unnamed.predict(FakeFrame(X, names))


# -------------------------------------------------------------------------------- validation
_X = np.arange(12.0).reshape(4, 3)
_y = np.arange(4.0)


def _with(arr, index, value):
    arr = arr.copy()
    arr[index] = value
    return arr


BAD_INPUTS = [
    # (id, X, y, exception, message)
    ("nan-X", _with(_X, (1, 2), np.nan), _y, ValueError, r"Input X contains NaN \(first at index \(1, 2\)\)"),
    ("inf-y", _X, _with(_y, 3, np.inf), ValueError, "Input y contains infinity"),
    ("1d-X", _X[:, 0], _y, ValueError, "Reshape your data"),
    ("3d-X", _X[:, :, None], _y, ValueError, r"got shape \(4, 3, 1\)"),
    ("complex-X", _X + 1j, _y, ValueError, "Complex data not supported"),
    ("y-none", _X, None, ValueError, "requires y to be passed, but the target y is None"),
    ("length", _X, _y[:3], ValueError, r"inconsistent numbers of samples: \[4, 3\]"),
    ("no-rows", np.empty((0, 3)), np.empty(0), ValueError, r"0 sample\(s\)"),
    ("no-columns", np.empty((4, 0)), _y, ValueError, r"0 feature\(s\) \(shape=\(4, 0\)\)"),
    ("2d-y", _X, np.ones((4, 2)), ValueError, r"y should be a 1d array .* shape \(4, 2\)"),
    (
        "object-X",
        _with(_X.astype(object), (0, 0), {"a": 1}),
        _y,
        TypeError,
        "must be a string or a real number",
    ),
]
if parametrize_with_checks is not None:
    BAD_INPUTS.append(
        ("sparse-X", scipy.sparse.csr_array(_X), _y, TypeError, "does not support sparse input")
    )


@pytest.mark.parametrize("X,y,exc,match", [r[1:] for r in BAD_INPUTS], ids=[r[0] for r in BAD_INPUTS])
def test_fit_rejects_bad_input(X, y, exc, match):
    with pytest.raises(exc, match=match):
        GDRegressor().fit(X, y)


BAD_SETTINGS = [
    (dict(rule="sgdd"), "unknown rule 'sgdd'"),
    (dict(learning_rate=-1.0), "learning_rate must be a finite number > 0"),
    (dict(learning_rate=np.inf), "learning_rate must be finite"),
    (dict(num_steps=0), "num_steps must be an integer >= 1"),
    (dict(tol=-1e-3), "tol must be a finite number > 0"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(fit_intercept="yes"), "fit_intercept must be True or False"),
    (dict(seed=-1), "seed must be an integer >= 0"),
    (dict(rule_options=[1]), "rule_options must be a dict"),
    (dict(rule_options={"learning_rate": 0.1}), "set it with the estimator's learning_rate"),
    (dict(rule="momentum", rule_options={"momentun": 0.9}), "no hyperparameter 'momentun'"),
    (dict(divergence_factor=1.0), "divergence_factor must be > 1"),
    (dict(dtype="int32"), "dtype must be None, 'float32' or 'float64'"),
]


@pytest.mark.parametrize("settings,match", BAD_SETTINGS, ids=[str(s) for s, _ in BAD_SETTINGS])
def test_fit_rejects_bad_settings(settings, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        GDRegressor(**settings).fit(*house())


def test_column_target_is_raveled_with_a_warning():
    X, y = house()
    model = GDRegressor(learning_rate=0.1, standardize=True)
    with pytest.warns(DataConversionWarning, match="A column-vector y was passed"):
        column = model.fit(X, y[:, None]).coef_
    np.testing.assert_array_equal(column, model.fit(X, y).coef_)


def test_predict_checks_the_feature_count_and_shape():
    X, y = synthetic()
    model = GDRegressor(learning_rate=0.05, tol=None).fit(X, y)
    with pytest.raises(ValueError, match="X has 1 features, but GDRegressor is expecting 4 features"):
        model.predict(X[:, :1])
    with pytest.raises(ValueError, match="Reshape your data"):
        model.predict(X[0])


def test_integer_and_float32_inputs_work():
    X, y = house()
    reference_fit = GDRegressor(learning_rate=0.1, standardize=True).fit(X, y)
    for X_in, y_in in [(X.astype(np.int64), y.astype(np.int32)), (X.astype(np.float32), y)]:
        model = GDRegressor(learning_rate=0.1, standardize=True).fit(X_in, y_in)
        assert model.coef_.dtype == np.float64  # the run's dtype is the estimator's, not the input's
        np.testing.assert_array_equal(model.coef_, reference_fit.coef_)


# ---------------------------------------------------------------------------- save / load
SAVED = [
    ("default", house, dict(learning_rate=0.1, standardize=True)),
    (
        "minibatch-float32-options",
        synthetic,
        dict(
            rule="momentum",
            learning_rate=0.01,
            rule_options={"momentum": 0.8},
            batch_size=32,
            seed=3,
            tol=None,
            dtype="float32",
        ),
    ),
    (
        "no-intercept-numpy-dtype",
        synthetic,
        dict(fit_intercept=False, tol=None, dtype=np.float64),
    ),
]


@pytest.mark.parametrize("make,settings", [r[1:] for r in SAVED], ids=[r[0] for r in SAVED])
def test_save_load_round_trip_is_exact(tmp_path, make, settings):
    X, y = make()
    model = GDRegressor(**settings).fit(X, y)
    path = tmp_path / "model.npz"
    model.save(path)
    assert os.listdir(tmp_path) == ["model.npz"]  # the temporary file was renamed, not left behind
    assert os.stat(path).st_mode & 0o777 == 0o644
    loaded = GDRegressor.load(path)
    assert loaded.get_params() == model.get_params()
    for k in FITTED_ARRAYS:
        assert_bitwise_equal(getattr(loaded, k), getattr(model, k))
    assert (loaded.n_iter_, loaded.status_, loaded.n_features_in_) == (
        model.n_iter_,
        model.status_,
        model.n_features_in_,
    )
    assert_bitwise_equal(loaded.predict(X), model.predict(X))
    with np.load(path, allow_pickle=False) as f:  # plain arrays and a JSON string: no pickle
        meta = json.loads(str(f["__gdjax_meta__"]))
    assert meta["format_version"] == FORMAT_VERSION and meta["fitted"]["status"] == model.status_
    model.save(path)  # overwriting an existing file is fine
    assert_bitwise_equal(GDRegressor.load(path).coef_, model.coef_)


def test_save_load_unfitted(tmp_path):
    model = GDRegressor("adam", learning_rate=0.3, rule_options={"b1": 0.5})
    model.save(tmp_path / "m.npz")
    loaded = GDRegressor.load(tmp_path / "m.npz")
    assert loaded.get_params() == model.get_params() and not hasattr(loaded, "coef_")


def test_save_refuses_parameters_json_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="cannot save parameter rule_options\\['schedule'\\]"):
        GDRegressor(rule_options={"schedule": object()}).save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


def _rewrite(path, edit):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["__gdjax_meta__"]))
    edit(arrays, meta)
    arrays["__gdjax_meta__"] = np.asarray(json.dumps(meta))
    np.savez(path, **arrays)


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_bytes_of_coef(path):
    data = bytearray(path.read_bytes())
    at = data.index(b"coef_path.npy") + 200  # inside that member's stored data
    data[at : at + 8] = bytes(255 - b for b in data[at : at + 8])
    path.write_bytes(bytes(data))


def _set_version(arrays, meta):
    meta["format_version"] = FORMAT_VERSION + 1


def _wrong_shape(arrays, meta):
    arrays["coef"] = np.zeros(5)


def _drop_meta(path):
    np.savez(path, coef=np.zeros(1))


BAD_FILES = [
    ("other-version", lambda p: _rewrite(p, _set_version), f"format version {FORMAT_VERSION + 1}"),
    ("truncated", _truncate, "not a readable GDRegressor file"),
    ("corrupted", _flip_bytes_of_coef, "not a readable GDRegressor file"),
    ("garbage", lambda p: p.write_bytes(b"hello, not a model"), "not a readable GDRegressor file"),
    ("no-metadata", _drop_meta, "no gdjax metadata"),
    ("wrong-shape", lambda p: _rewrite(p, _wrong_shape), r"corrupted .* array 'coef' has shape \(5,\)"),
    ("missing", lambda p: p.unlink(), "model file not found"),
]


@pytest.mark.parametrize("damage,match", [r[1:] for r in BAD_FILES], ids=[r[0] for r in BAD_FILES])
def test_load_rejects_bad_files_with_value_error(tmp_path, damage, match):
    path = tmp_path / "model.npz"
    GDRegressor(learning_rate=0.1, standardize=True).fit(*house()).save(path)
    damage(path)
    with pytest.raises(ValueError, match=match):
        GDRegressor.load(path)


# ---------------------------------------------------------------------- no scikit-learn at run time
def test_runs_without_importing_sklearn_and_in_float32():
    # A fresh interpreter: default JAX settings (float32), nothing from the test session imported.
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        from gdjax.estimator import GDRegressor, NotFittedError
        X, y = np.arange(12.0).reshape(6, 2), np.arange(6.0)
        model = GDRegressor(learning_rate=0.1, standardize=True, num_steps=20, tol=None).fit(X, y)
        assert model.coef_.dtype == np.float32, model.coef_.dtype
        model.score(X, y)
        try:
            GDRegressor().predict(X)
        except NotFittedError:
            pass
        else:
            raise AssertionError("predict before fit must raise")
        try:
            GDRegressor(dtype="float64").fit(X, y)
        except ValueError as err:
            assert "jax_enable_x64" in str(err)
        else:
            raise AssertionError("float64 without jax_enable_x64 must be refused")
        assert not [m for m in sys.modules if m.startswith("sklearn")]
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# ------------------------------------------------------------------ scikit-learn's estimator checks
# The instance the checks run on: standardised inputs and Nesterov momentum, so that every small
# data set the checks fit converges within 500 steps (a GDConvergenceWarning would fail a check under
# `filterwarnings = error`). Plain GD at learning_rate=0.1 needs ~1500 steps on iris (correlated
# columns, condition number ~140, used by check_positive_only_tag_during_fit); Nesterov needs ~170.
CHECKED = GDRegressor(
    "nesterov", learning_rate=0.1, rule_options={"momentum": 0.9}, standardize=True, num_steps=500
)

# Checks expected to fail, with why: none. (When pandas is not installed, the DataFrame half of
# check_regressor_data_not_an_array raises SkipTest inside sklearn and pytest reports a skip.)
EXPECTED_FAILED_CHECKS: dict[str, str] = {}

if parametrize_with_checks is not None:
    with warnings.catch_warnings():
        # Collecting the checks warns that GDRegressor does not inherit from BaseEstimator: by design,
        # gdjax does not depend on scikit-learn at run time.
        warnings.filterwarnings(
            "ignore", message="Estimator GDRegressor does not inherit", category=UserWarning
        )
        sklearn_checks = parametrize_with_checks(
            [CHECKED], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS, xfail_strict=True
        )
else:  # pragma: no cover
    sklearn_checks = pytest.mark.skip(reason="scikit-learn not installed")


@sklearn_checks
def test_sklearn_estimator_checks(estimator, check, monkeypatch):
    # check_array_api_input skips itself unless SCIPY_ARRAY_API is set; its NumPy-namespace variant
    # only needs np.asarray-able inputs, which GDRegressor takes, so let it run.
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")
    check(estimator)


def test_coef_path_row_k_is_the_iterate_after_path_steps_k_updates():
    """The run thins its records past 64 MiB; the path read them as if every update were kept: row
    100 was update 200, and past an early stop every row was the final iterate."""
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3000)), rng.normal(size=50)  # 6001 x 3001 float32 iterates: 72 MB
    model = GDRegressor("sgd", learning_rate=1e-4, num_steps=6000, tol=None).fit(X, y)
    np.testing.assert_array_equal(model.path_steps_, np.arange(model.n_iter_ + 1))  # every update
    for k in (1, 100, 6000):
        loss = np.mean((X @ model.coef_path_[k] + model.intercept_path_[k] - y) ** 2)
        np.testing.assert_allclose(loss, model.loss_curve_[k], rtol=1e-4, atol=1e-12)
