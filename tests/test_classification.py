"""The command on real data (issue 11 item 5): classification losses with accuracy, a seeded held-out
split recorded as metrics, a user's own cost from a file or a module, CSV columns that are not numbers,
paths relative to the config, the bundled digits, and sizes refused before a run folder exists (issue 12).

Every bad input must give a `ConfigError` (or a one-line `gdjax: error:`) that names the key.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax
from gdjax import check_grad, data
from gdjax.study import config as config_lib
from gdjax.study import experiment, preflight, problems
from gdjax.study.config import ConfigError
from tests.helpers import run_cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_csv(path: pathlib.Path, n: int = 40) -> pathlib.Path:
    """An id column (not a number), two features, a 0/1 label and a 0..2 class, deterministic."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    label = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    klass = np.digitize(X[:, 0], [-0.5, 0.5])
    lines = ["id,x1,x2,label,klass,name"]
    lines += [f"u{i:03d},{X[i, 0]:.6f},{X[i, 1]:.6f},{label[i]},{klass[i]},row {i}" for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


CSV_STUDY = """\
name = "csv_logistic"
precision = "float64"
seeds = [3]

[data]
source = "csv"
path = "points.csv"
target = "label"
features = ["x1", "x2"]
test_fraction = 0.25

[cost]
model = "linear"
loss = "logistic"

[run]
num_steps = 40

[[optimizers]]
rule = "gd"
grid.learning_rate = [0.5, 2.0]

[[optimizers]]
rule = "adam"
grid.learning_rate = 0.1

[outputs]
plots = ["loss_curves", "accuracy", "lr_sweep"]
"""

USER_COST = """\
import jax.numpy as jnp

def cost(params, data):
    X, y = data
    r = X @ params["w"] + params["b"] - y
    return jnp.mean(r ** 2) + 0.01 * jnp.sum(params["w"] ** 2)

def grad(params, data):
    X, y = data
    r = X @ params["w"] + params["b"] - y
    return {"w": 2 * X.T @ r / X.shape[0] + 0.02 * params["w"], "b": 2 * jnp.mean(r)}

def init(data):
    X, _ = data
    return {"w": jnp.zeros(X.shape[1]), "b": jnp.zeros(())}

def vector(params, data):
    X, y = data
    return X @ params["w"] + params["b"] - y

def bad_grad(params, data):
    return {"w": jnp.zeros(7), "b": jnp.zeros(())}

def broken_init(data):
    raise RuntimeError("no start for you")

def rosen(x, data=None):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)

NOT_A_FUNCTION = 3
"""

USER_STUDY = """\
name = "user_cost"
precision = "float64"

[data]
source = "csv"
path = "data/points.csv"
target = "label"
features = ["x1", "x2"]
test_fraction = 0.3

[cost]
callable = "mycost.py:cost"
params0 = "mycost.py:init"
analytic = "mycost.py:grad"

[run]
num_steps = 30

[[optimizers]]
rule = "gd"
grid.learning_rate = [0.1, 0.3]
"""


@pytest.fixture
def study_dir(tmp_path):
    write_csv(tmp_path / "points.csv")
    (tmp_path / "data").mkdir()
    write_csv(tmp_path / "data" / "points.csv")
    (tmp_path / "mycost.py").write_text(USER_COST)
    return tmp_path


def loads(text: str, base: pathlib.Path):
    """The config as a file in `base` (so errors found after reading can give their line)."""
    path = base / "study.toml"
    path.write_text(text)
    return config_lib.load(path)


def expect_key(text: str, base: pathlib.Path, key: str, *fragments: str):
    """The config (read, then its problems built) fails with a ConfigError naming `key`."""
    with pytest.raises(ConfigError) as info:
        cfg = loads(text, base)
        jax.config.update("jax_enable_x64", cfg.precision == "float64")
        problems_ = experiment.build_problems(cfg)
        preflight.check_units(cfg, problems_, experiment.units(cfg))
    assert info.value.key == key, str(info.value)
    for f in fragments:
        assert f in str(info.value), str(info.value)
    return info.value


# ------------------------------------------------------------------------------------- the digits
def test_bundled_digits():
    X, y = data.load("digits")
    assert X.shape == (1797, 64) and y.shape == (1797,)
    assert X.dtype == np.float64 and X.min() == 0 and X.max() == 16
    assert np.array_equal(np.unique(y), np.arange(10.0))
    assert np.bincount(y.astype(int)).min() >= 170
    X2, y2 = data.digits()
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    assert "digits" in data.DATASETS


# ------------------------------------------------------------------------------- the losses
CLASSIFIERS = [
    # (loss, number of classes, the model's params)
    ("logistic", 2, {"w": (5,), "b": ()}),
    ("cross_entropy", 4, {"w": (5, 4), "b": (4,)}),
]


@pytest.mark.parametrize(("loss", "k", "shapes"), CLASSIFIERS, ids=[c[0] for c in CLASSIFIERS])
def test_classification_losses_gradients_and_accuracy(loss, k, shapes):
    rng = np.random.default_rng(1)
    X = jnp.asarray(rng.normal(size=(30, 5)))
    y = jnp.asarray(rng.integers(0, k, size=30).astype(np.float64))
    params = problems.init_classifier(loss, 5, k, jnp.float64)
    assert jax.tree.map(jnp.shape, params) == shapes
    cost, analytic, accuracy = problems.LOSSES[loss]
    # At zero every class is equally likely: the loss is log k.
    assert float(cost(params, (X, y))) == pytest.approx(np.log(k))
    params = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape)), params)
    report = check_grad(cost, params, (X, y), analytic=analytic, num_points=2)
    assert report.ok, report
    # Accuracy against a NumPy oracle.
    Z = np.asarray(X) @ np.asarray(params["w"]) + np.asarray(params["b"])
    predicted = (Z > 0).astype(float) if loss == "logistic" else Z.argmax(axis=1)
    assert float(accuracy(params, (X, y))) == pytest.approx(np.mean(predicted == np.asarray(y)))


# --------------------------------------------------------------------- a CSV, logistic, test split
def test_csv_logistic_study_with_test_split(study_dir):
    (study_dir / "study.toml").write_text(CSV_STUDY)
    out = study_dir / "run"
    code, stdout, err = run_cli("run", study_dir / "study.toml", "--out", out)
    assert code == 0, err
    assert "test accuracy" in stdout and "f - best" in stdout
    header = (out / "summary.csv").read_text().splitlines()[0].split(",")
    for column in ("accuracy", "test_loss", "test_accuracy", "suboptimality_vs_best"):
        assert column in header
    assert header.index("final_loss") < header.index("test_loss") < header.index("status")
    rows = json.loads((out / "summary.json").read_text())
    assert len(rows) == 3 and all(0.5 < r["test_accuracy"] <= 1 for r in rows)
    # f* is unknown: measured against the best loss any lane of the study reached.
    assert min(r["suboptimality_vs_best"] for r in rows) >= 0
    with np.load(out / "histories.npz") as z:
        assert z["gd/metrics/test_accuracy"].shape == z["gd/loss_history"].shape == (2, 41)
        assert z["gd/metrics/test_accuracy"][:, -1] == pytest.approx([r["test_accuracy"] for r in rows[:2]])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["problems"]["linear"]["num_examples"] == 30  # 40 examples, a quarter held out
    assert set(manifest["plots"]) == {"loss_curves.png", "accuracy.png", "lr_sweep.png"}


def test_test_split_is_seeded_and_standardised_on_the_training_split(study_dir):
    text = CSV_STUDY.replace("[data]", "[data]\nstandardize = true")
    cfg = loads(text, study_dir)
    d = experiment.load_data(cfg)
    again = experiment.load_data(loads(text, study_dir))
    assert np.array_equal(d.X, again.X) and np.array_equal(d.y_test, again.y_test)
    other = experiment.load_data(loads(text.replace("seeds = [3]", "seeds = [4]"), study_dir))
    assert not np.array_equal(d.y_test, other.y_test) or not np.array_equal(d.X_test, other.X_test)
    assert d.X.shape == (30, 2) and d.X_test.shape == (10, 2)
    np.testing.assert_allclose(d.X.mean(axis=0), 0, atol=1e-12)  # fitted on the training split
    train, test = experiment.split(40, 0.25, 3)
    assert sorted([*train, *test]) == list(range(40)) and len(test) == 10


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.5, 1.5])
def test_test_fraction_outside_0_1_names_the_key(study_dir, bad):
    text = CSV_STUDY.replace("test_fraction = 0.25", f"test_fraction = {bad}")
    err = expect_key(text, study_dir, "data.test_fraction", "between 0 and 1")
    assert err.line == 10


def test_test_fraction_that_leaves_no_example_names_the_key(tmp_path):
    (tmp_path / "two.csv").write_text("x,label\n1,0\n2,1\n")
    text = CSV_STUDY.replace("points.csv", "two.csv").replace('features = ["x1", "x2"]', "")
    expect_key(text.replace("0.25", "0.1"), tmp_path, "data.test_fraction", "no test example")


def test_one_example_cannot_be_split_or_standardized(tmp_path):
    """One row standardizes to all zeros (it read as "the gradient is identically zero"), and a split
    of it said "hold out between 1 and 0 of them"."""
    (tmp_path / "one.csv").write_text("x,label\n1,0\n")
    text = CSV_STUDY.replace("points.csv", "one.csv").replace('features = ["x1", "x2"]', "")
    expect_key(text, tmp_path, "data.test_fraction", "needs at least 2 examples; the data has 1")
    text = text.replace("test_fraction = 0.25", "standardize = true")
    expect_key(text, tmp_path, "data.standardize", "needs at least 2 training examples; the data has 1")


def test_misspelt_new_keys_get_suggestions(study_dir):
    expect_key(
        CSV_STUDY.replace("test_fraction", "test_fracton"),
        study_dir,
        "data.test_fracton",
        "did you mean 'test_fraction'",
    )
    text = USER_STUDY.replace("analytic =", "analytc =")
    expect_key(text, study_dir, "cost.analytc", "did you mean 'analytic'")
    expect_key(
        CSV_STUDY.replace('loss = "logistic"', 'loss = "logistc"'),
        study_dir,
        "cost.loss",
        "did you mean 'logistic'",
    )
    expect_key(CSV_STUDY + 'rank_by = "test_los"\n', study_dir, "outputs.rank_by", "did you mean 'test_loss'")


# --------------------------------------------------------------------------- classification errors
def test_logistic_needs_binary_targets(study_dir):
    text = CSV_STUDY.replace('target = "label"', 'target = "klass"')
    expect_key(text, study_dir, "cost.loss", "0/1 targets", "classes")


def test_classes_relabel_and_pick_two(study_dir):
    text = CSV_STUDY.replace('target = "label"', 'target = "klass"\nclasses = [2, 0]')
    cfg = loads(text, study_dir)
    d = experiment.load_data(cfg)
    assert set(np.unique(d.y_all)) == {0.0, 1.0}  # 2 -> 0 and 0 -> 1; class 1 left out
    raw = np.loadtxt(study_dir / "points.csv", delimiter=",", skiprows=1, usecols=4)
    assert len(d.y_all) == np.sum(raw != 1)
    expect_key(text.replace("classes = [2, 0]", "classes = [2, 7]"), study_dir, "data.classes", "no example")
    expect_key(text.replace("classes = [2, 0]", "classes = [2]"), study_dir, "data.classes", "at least two")


def test_cross_entropy_on_classes_and_its_errors(study_dir):
    text = CSV_STUDY.replace('target = "label"', 'target = "klass"').replace("logistic", "cross_entropy")
    cfg = loads(text, study_dir)
    jax.config.update("jax_enable_x64", True)
    (p,) = experiment.build_problems(cfg)
    assert jax.tree.map(jnp.shape, p.params0) == {"w": (2, 3), "b": (3,)}
    assert set(p.metrics) == {"accuracy", "test_loss", "test_accuracy"}
    assert p.f_star is None and p.analytic is problems.cross_entropy_grad
    bad = text.replace('target = "klass"', 'target = "x1"').replace('["x1", "x2"]', '["x2"]')
    expect_key(bad, study_dir, "cost.loss", "class indices")


def test_classification_needs_a_linear_model(study_dir):
    text = CSV_STUDY.replace('model = "linear"', 'model = "polynomial"\ndegree = 2')
    expect_key(text, study_dir, "cost.loss", 'model = "linear"')


def test_accuracy_plot_and_ranking_need_what_they_show(study_dir):
    mse = CSV_STUDY.replace('loss = "logistic"', 'loss = "mse"')
    expect_key(mse, study_dir, "outputs.plots[1]", "classification")
    no_split = CSV_STUDY.replace("test_fraction = 0.25", "").replace(', "accuracy"', "")
    expect_key(no_split + 'rank_by = "test_loss"\n', study_dir, "outputs.rank_by", "test_fraction")


def test_rank_by_test_accuracy_picks_the_highest(study_dir):
    rows = [
        {
            "optimizer": "gd",
            "lane": 0,
            "rule": "gd",
            "learning_rate": 0.1,
            "final_loss": 0.1,
            "test_accuracy": 0.7,
            "status": "max_steps",
            "steps": 5,
            "suboptimality": None,
        },
        {
            "optimizer": "gd",
            "lane": 1,
            "rule": "gd",
            "learning_rate": 1.0,
            "final_loss": 0.01,
            "test_accuracy": 0.6,
            "status": "max_steps",
            "steps": 5,
            "suboptimality": None,
        },
    ]
    assert experiment.best_configurations(rows)[0]["learning_rate"] == 1.0
    assert experiment.best_configurations(rows, "test_accuracy")[0]["learning_rate"] == 0.1


# ---------------------------------------------------------------------------------- CSV columns
def test_unselected_text_columns_are_ignored_and_selected_ones_name_features(study_dir):
    cfg = loads(CSV_STUDY, study_dir)
    d = experiment.load_data(cfg)  # the id and name columns hold text; only x1, x2, label are read
    assert d.X.shape[1] == 2
    text = CSV_STUDY.replace('features = ["x1", "x2"]', 'features = ["x1", "id"]')
    err = expect_key(text, study_dir, "data.features", "'id'", "features option")
    assert err.line == 9
    # Without features, every other column is a feature: the message says to choose them.
    text = CSV_STUDY.replace('features = ["x1", "x2"]\n', "")
    expect_key(text, study_dir, "data.features", "features option")
    text = CSV_STUDY.replace('target = "label"', 'target = "name"')
    expect_key(text, study_dir, "data.target", "target option")


def test_relative_data_path_is_relative_to_the_config(study_dir, tmp_path_factory, monkeypatch):
    elsewhere = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(elsewhere)  # no points.csv here
    cfg = config_lib.load(_write(study_dir / "study.toml", CSV_STUDY))
    assert cfg.data.path == str(study_dir / "points.csv")
    missing = CSV_STUDY.replace("points.csv", "nowhere.csv")
    with pytest.raises(ConfigError) as info:
        config_lib.load(_write(study_dir / "missing.toml", missing))
    assert info.value.key == "data.path" and str(study_dir / "nowhere.csv") in str(info.value)


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ a user's own cost
def test_user_cost_from_a_file_runs_with_its_analytic_gradient(study_dir):
    cfg_path = _write(study_dir / "study.toml", USER_STUDY)
    out = study_dir / "run"
    code, stdout, err = run_cli("run", cfg_path, "--out", out, "-q", "--no-plots")
    assert code == 0, err
    assert "analytic" in (out / "gradcheck.txt").read_text()
    rows = json.loads((out / "summary.json").read_text())
    assert {"test_loss", "suboptimality_vs_best"} <= set(rows[0]) and "accuracy" not in rows[0]
    resolved = config_lib.load(out / "config.toml")
    assert resolved.cost.callable == f"{study_dir / 'mycost.py'}:cost"  # absolute: the folder is portable
    assert resolved.cost.label == "cost"


def test_user_cost_from_a_module_with_a_vector_start(study_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(study_dir))
    text = """\
name = "module_cost"
precision = "float64"

[cost]
callable = "mycost:rosen"
params0 = [-1.2, 1.0]

[run]
num_steps = 20

[[optimizers]]
rule = "adam"
grid.learning_rate = 0.01
"""
    cfg = loads(text, study_dir)
    jax.config.update("jax_enable_x64", True)
    (p,) = experiment.build_problems(cfg)
    assert p.data is None and p.params0.shape == (2,) and p.params0.dtype == jnp.float64
    assert float(p.cost(p.params0, None)) == pytest.approx(24.2)
    code, _, err = run_cli(
        "run", _write(study_dir / "m.toml", text), "--out", study_dir / "run", "-q", "--no-plots"
    )
    assert code == 0, err


USER_ERRORS = [
    # (replace this, with this, the key named, fragments of the message)
    (
        'callable = "mycost.py:cost"',
        'callable = "mycost.py:cots"',
        "cost.callable",
        ("no function 'cots'", "did you mean 'cost'"),
    ),
    (
        'callable = "mycost.py:cost"',
        'callable = "nofile.py:cost"',
        "cost.callable",
        ("file not found", "nofile.py"),
    ),
    (
        'callable = "mycost.py:cost"',
        'callable = "no_such_module_xyz:cost"',
        "cost.callable",
        ("no module named",),
    ),
    ('callable = "mycost.py:cost"', 'callable = "mycost.py"', "cost.callable", ('"file.py:cost"',)),
    (
        'callable = "mycost.py:cost"',
        'callable = "mycost.py:NOT_A_FUNCTION"',
        "cost.callable",
        ("not a function",),
    ),
    (
        'callable = "mycost.py:cost"',
        'callable = "mycost.py:vector"',
        "cost.callable",
        ("scalar", "shape (28,)"),
    ),
    ('analytic = "mycost.py:grad"', 'analytic = "mycost.py:bad_grad"', "cost.analytic", ("shapes",)),
    (
        'params0 = "mycost.py:init"',
        'params0 = "mycost.py:broken_init"',
        "cost.params0",
        ("no start for you",),
    ),
    ('params0 = "mycost.py:init"\n', "", "cost.params0", ("needs its start",)),
    ('params0 = "mycost.py:init"', "params0 = [0.0, 0.0, 0.0]", "cost.callable", ("failed",)),
    (
        'callable = "mycost.py:cost"',
        'callable = "mycost.py:cost"\nmodel = "linear"',
        "cost",
        ("exactly one of",),
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "fragments"), USER_ERRORS, ids=[e[1].strip() or "no params0" for e in USER_ERRORS]
)
def test_user_cost_errors_name_the_key(study_dir, old, new, key, fragments):
    text = USER_STUDY.replace(old, new)
    assert text != USER_STUDY
    expect_key(text, study_dir, key, *fragments)


def test_user_cost_errors_through_the_command_are_one_line(study_dir):
    text = USER_STUDY.replace('"mycost.py:cost"', '"mycost.py:vector"')
    code, _, err = run_cli("run", _write(study_dir / "v.toml", text), "--out", study_dir / "run")
    assert code == 2 and "Traceback" not in err
    assert err.startswith("gdjax: error: ") and "cost.callable" in err and "scalar" in err
    assert not (study_dir / "run").exists()


# ---------------------------------------------------------------------------------- resume
def test_interrupted_study_resumes_with_its_metrics(study_dir):
    cfg = config_lib.load(_write(study_dir / "study.toml", CSV_STUDY))
    jax.config.update("jax_enable_x64", True)
    whole = experiment.run_experiment(cfg, str(study_dir / "whole"))
    calls = []

    def stop_in_adam(key, done, total):
        calls.append(key)
        if key == "adam":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiment.run_experiment(cfg, str(study_dir / "cut"), progress=stop_in_adam)
    assert (study_dir / "cut" / "PARTIAL").exists()
    resumed = experiment.run_experiment(cfg, str(study_dir / "cut"), resume=True)
    assert resumed.resumed and resumed.rows == whole.rows
    with (
        np.load(study_dir / "whole" / "histories.npz") as a,
        np.load(study_dir / "cut" / "histories.npz") as b,
    ):
        assert sorted(a.files) == sorted(b.files) and "gd/metrics/test_loss" in a.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ------------------------------------------------------------------------- sizes (issue 12)
DIGITS_38 = """\
name = "threes_and_eights"
seeds = [0]

[data]
source = "digits"
classes = [3, 8]
standardize = true
test_fraction = 0.2

[cost]
model = "linear"
loss = "logistic"

[run]
num_steps = 200000

[[optimizers]]
rule = "gd"
grid.learning_rate = [0.1, 1.0, 10.0]
"""


def test_impossible_histories_are_refused_before_the_folder_exists(tmp_path, monkeypatch):
    # 3 lanes x 200001 recorded iterates of 65 parameters: 156 MB, on a 40 MB machine.
    monkeypatch.setattr(config_lib, "host_memory", lambda: 40 * 2**20)
    cfg_path = _write(tmp_path / "big.toml", DIGITS_38)
    config_lib.load(cfg_path)  # the loss and metric histories alone fit: the config reader lets it through
    out = tmp_path / "big"
    code, _, err = run_cli("run", cfg_path, "--out", out)
    assert code == 2 and "Traceback" not in err, err
    assert "execution.record_every" in err and "nothing was written" in err and "65 parameters" in err
    assert "[execution] record_every = " in err
    assert not out.exists()
    # The advice works: with the record_every it names, the study fits.
    advised = int(err.split("record_every = ")[1].split()[0])
    fixed = DIGITS_38.replace("[run]", f"[execution]\nrecord_every = {advised}\n\n[run]")
    cfg = config_lib.load(_write(tmp_path / "fixed.toml", fixed))
    ps = experiment.build_problems(cfg)
    experiment.check_memory(cfg, ps, experiment.units(cfg))


def test_digits_logistic_on_two_classes(tmp_path):
    cfg = config_lib.load(_write(tmp_path / "d.toml", DIGITS_38.replace("200000", "50")))
    d = experiment.load_data(cfg)
    assert d.X.shape[1] == 64 and set(np.unique(d.y_all)) == {0.0, 1.0}
    assert len(d.y_all) == 183 + 174  # the threes and the eights
    code, stdout, err = run_cli("run", tmp_path / "d.toml", "--out", tmp_path / "run", "--no-plots")
    assert code == 0, err
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert max(r["test_accuracy"] for r in rows) > 0.95


def test_a_sweep_refused_before_running_leaves_no_folder(study_dir, monkeypatch):
    cfg = config_lib.load(_write(study_dir / "study.toml", CSV_STUDY))

    def refuse(*args, **kwargs):
        raise ValueError("the sweep needs about 9 TB: pass chunk_size=10")

    monkeypatch.setattr(experiment, "run_plan", refuse)  # the run executes each sweep's plan
    jax.config.update("jax_enable_x64", True)
    with pytest.raises(ValueError, match="gd: the sweep needs about 9 TB.*nothing was written"):
        experiment.run_experiment(cfg, str(study_dir / "refused"))
    assert not (study_dir / "refused").exists()


def test_eval_every_sets_the_schedule_and_record_every_follows(study_dir):
    text = CSV_STUDY.replace("num_steps = 40", "num_steps = 40\neval_every = 10")
    cfg = loads(text, study_dir)
    assert cfg.run.eval_every == 10 and cfg.execution.record_every == 10
    bad = text.replace("eval_every = 10", "eval_every = 10\nrecord_every = 15")
    with pytest.raises(ConfigError) as info:
        loads(bad, study_dir)
    assert info.value.key == "run.record_every" and "multiple of eval_every" in str(info.value)
    out = study_dir / "run"
    code, _, err = run_cli("run", _write(study_dir / "e.toml", text), "--out", out, "-q", "--no-plots")
    assert code == 0, err
    with np.load(out / "histories.npz") as z:
        assert list(z["gd/eval_steps"].reshape(-1, 5)[0]) == [0, 10, 20, 30, 40]
        assert z["gd/metrics/test_accuracy"].shape == (2, 5)


# ------------------------------------------------------------------------- signals at start-up
def _startup(code: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_while_gdjax_imports_exits_cleanly(sig, code):
    # The signal lands after the start-up handlers are in place and before JAX is imported.
    proc = _startup(
        "import os, gdjax.study.command as gdjax_command\n"
        "gdjax_command.install_startup_handlers()\n"
        f"os.kill(os.getpid(), {int(sig)})\n"
        "import gdjax.study.cli\n"
        "print('not reached')\n"
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "not reached" not in proc.stdout
    assert f"interrupted ({sig.name}) while starting" in proc.stderr


def test_the_entry_point_is_the_light_launcher():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["gdjax"] == "gdjax.study.command:main"
    # It imports nothing heavy before its handlers are in place.
    proc = _startup(
        "import sys, gdjax.study.command; print('jax' in sys.modules, 'gdjax.study.cli' in sys.modules)"
    )
    assert proc.stdout.split() == ["False", "False"], proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.05, 0.3, 1.0])
def test_ctrl_c_early_in_the_real_command_exits_130(tmp_path, delay):
    # The clock starts when the interpreter reaches the entry point's first line: a SIGINT during
    # Python's own start-up (site-packages' .pth hooks run before any code of ours) ends in Python's
    # "init_import_site" fatal error, which no program can catch, and on a loaded 2-core CI machine
    # that start-up alone can take longer than 0.05 s.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    code = (
        "import sys, gdjax.study.command as c\n"
        "c.install_startup_handlers()\n"
        "print('up', flush=True)\n"
        "sys.argv = ['gdjax', 'list']\n"
        "c.main()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    import time

    assert proc.stdout.readline().strip() == "up"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130 from a handler (the start-up one, then the command's); 0 if `gdjax list` had finished.
    assert proc.returncode in (130, 0), err
    assert "Traceback" not in err, err


def test_readme_config_example_is_a_valid_study():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Config keys", 1)[1]
    text = section.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = config_lib.loads(text)
    assert cfg.data.test_fraction == 0.25 and cfg.cost.loss == "cross_entropy"
    assert cfg.outputs.rank_by == "test_loss" and "accuracy" in cfg.outputs.plots


# ---------------------------------------------------------------------------------------- figures
def _trace(num_lanes: int, eval_steps, metric=None):
    from gdjax.types import Trace

    T = len(eval_steps)
    loss = np.tile(np.linspace(1.0, 0.1, T), (num_lanes, 1))
    return Trace(
        params={"w": np.zeros((num_lanes, 2))},
        loss_history=loss,
        params_history={"w": np.zeros((num_lanes, T, 2))},
        grad_norm_history=loss,
        steps=np.full(num_lanes, eval_steps[-1]),
        status=np.zeros(num_lanes, np.int32),
        stop_step=np.full(num_lanes, -1),
        eval_steps=np.asarray(eval_steps, np.int32),
        metrics=None if metric is None else {metric: np.tile(np.linspace(0.5, 0.9, T), (num_lanes, 1))},
    )


def test_curves_are_drawn_at_the_evaluation_steps():
    from gdjax.study import plots

    trace = _trace(2, [0, 10, 20, 30, 40], "test_accuracy")
    fig = plots.loss_curves({"gd": trace})
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("gd")]
    assert list(line.get_xdata()) == [0, 10, 20, 30, 40]
    fig = plots.metric_curves({"gd": trace}, "test_accuracy", title="t")
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_xdata()) == [0, 10, 20, 30, 40] and line.get_ydata()[-1] == pytest.approx(0.9)
    assert fig.axes[0].get_ylabel() == "test_accuracy"
    with pytest.raises(ValueError, match="no curve has the metric 'accuracy'"):
        plots.metric_curves({"gd": trace}, "accuracy")


# --------------------------------------------------------------------- cost hyperparameters
RIDGE = """\
import jax.numpy as jnp

def ridge(params, data, l2=0.0):
    X, y = data
    r = X @ params["w"] + params["b"] - y
    return jnp.mean(r ** 2) + l2 * jnp.sum(params["w"] ** 2)

def init(data):
    X, _ = data
    return {"w": jnp.zeros(X.shape[1]), "b": jnp.zeros(())}
"""

RIDGE_STUDY = """\
name = "ridge"
precision = "float64"

[data]
source = "csv"
path = "points.csv"
target = "label"
features = ["x1", "x2"]

[cost]
callable = "ridge.py:ridge"
params0 = "ridge.py:init"

[run]
num_steps = 40

[[optimizers]]
rule = "gd"
grid.learning_rate = 0.1
grid.l2 = [0.0, 0.1, 1.0]
"""


@pytest.fixture
def ridge_dir(study_dir):
    (study_dir / "ridge.py").write_text(RIDGE)
    return study_dir


def test_a_cost_hyperparameter_is_a_grid_axis_of_the_command(ridge_dir):
    cfg = loads(RIDGE_STUDY, ridge_dir)
    assert dict(cfg.optimizers[0].grid)["l2"] == (0.0, 0.1, 1.0) and cfg.optimizers[0].cost_keys() == ("l2",)
    out = ridge_dir / "run"
    code, _, err = run_cli("run", ridge_dir / "study.toml", "--out", out, "-q", "--no-plots")
    assert code == 0, err
    rows = json.loads((out / "summary.json").read_text())
    assert [r["l2"] for r in rows] == [0.0, 0.1, 1.0]
    # The same lanes as gdjax.sweep over the cost's hyperparameter, and as gdjax.run of the bound cost.
    jax.config.update("jax_enable_x64", True)
    (p,) = experiment.build_problems(cfg)
    for row in rows:
        trace = gdjax.run(
            gdjax.bind(p.cost, l2=row["l2"]), gdjax.rules.sgd(0.1), p.params0, p.data, num_steps=40
        )
        assert row["final_loss"] == pytest.approx(float(trace.final_loss), rel=1e-12, abs=1e-15)
    assert rows[0]["final_loss"] < rows[1]["final_loss"] < rows[2]["final_loss"]  # the penalty costs
    assert config_lib.load(out / "config.toml").optimizers[0].grid == cfg.optimizers[0].grid


COST_KEY_ERRORS = [
    # (replace this, with this, the key named, fragments of the message)
    (
        "grid.l2 = [",
        "grid.l3 = [",
        "optimizers[0].grid.l3",
        ["unknown hyperparameter 'l3'", "did you mean 'l2'"],
    ),
    (
        "grid.learning_rate = 0.1",
        "grid.learnig_rate = 0.1",
        "optimizers[0].grid.learnig_rate",
        ["did you mean 'learning_rate'"],
    ),
    ("grid.l2 = [0.0, 0.1, 1.0]", "grid.l2 = [0.0, inf]", "optimizers[0].grid.l2[1]", ["must be finite"]),
    ("grid.l2 = [0.0, 0.1, 1.0]", 'grid.l2 = ["big"]', "optimizers[0].grid.l2[0]", ["expected a number"]),
    (
        'callable = "ridge.py:ridge"\nparams0 = "ridge.py:init"',
        'model = "linear"',
        "optimizers[0].grid.l2",
        ["unknown hyperparameter 'l2' of rule 'gd'"],
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "fragments"), COST_KEY_ERRORS, ids=[e[2] for e in COST_KEY_ERRORS]
)
def test_cost_hyperparameter_errors_name_the_key(ridge_dir, old, new, key, fragments):
    text = RIDGE_STUDY.replace(old, new)
    assert text != RIDGE_STUDY
    expect_key(text, ridge_dir, key, *fragments)


def test_check_names_a_misspelt_cost_hyperparameter(ridge_dir):
    path = _write(ridge_dir / "typo.toml", RIDGE_STUDY.replace("grid.l2 = [", "grid.l3 = ["))
    code, _, err = run_cli("check", path)
    assert code == 2 and "Traceback" not in err
    assert "optimizers[0].grid.l3" in err and "did you mean 'l2'" in err


def test_readme_cost_hyperparameter_example_is_a_valid_study(ridge_dir):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("**Cost hyperparameters.**", 1)[1]
    block = textwrap.dedent(section.split("```toml\n", 1)[1].split("```", 1)[0])
    header = RIDGE_STUDY.split("[cost]", 1)[0]
    cfg = loads(header + block.replace("[[optimizers]]", "[run]\nnum_steps = 5\n\n[[optimizers]]"), ridge_dir)
    assert cfg.optimizers[0].cost_keys() == ("l2",)
    jax.config.update("jax_enable_x64", True)
    experiment.build_problems(cfg)


# ------------------------------------------------------------------ an outside audit of the data side
SOFTMAX_L2 = """
name = "sm"
precision = "float64"
seeds = [2]
[data]
source = "digits"
standardize = STANDARDIZE
test_fraction = 0.2
classes = [0, 5, 6]
[cost]
model = "linear"
loss = "cross_entropy"
l2 = 0.03
[run]
num_steps = 5
[[optimizers]]
rule = "gd"
grid.learning_rate = [0.01]
"""


@pytest.mark.parametrize("standardize", ["true", "false"])
def test_a_softmax_with_l2_gets_its_true_f_star(study_dir, standardize):
    """Its unpenalised biases leave the Hessian singular: Newton's solve stepped them off to 1e13 and
    the cost, cancelling in float64, read below its minimum (f* 0.0078 for 0.0080); standardized, the
    (d, classes) weights could not be mapped back (the run crashed). SciPy's L-BFGS is the oracle."""
    from scipy import optimize

    cfg = loads(SOFTMAX_L2.replace("STANDARDIZE", standardize), study_dir)
    (p,) = preflight.build_problems(cfg)
    assert p.f_star is not None and p.f_star_source.startswith("Newton")
    X, y = p.dataset.X, p.dataset.y
    k, d = 3, X.shape[1]
    labels = np.searchsorted(np.unique(y), y)

    def f(v):
        w, b = v[: d * k].reshape(d, k), v[d * k :]
        logp = jax.nn.log_softmax(X @ w + b[None, :], axis=1)
        return -jnp.mean(logp[np.arange(len(y)), labels]) + 0.03 / 2 * jnp.sum(w * w)

    fg = jax.jit(jax.value_and_grad(f))
    best = optimize.minimize(
        lambda v: tuple(np.asarray(t, np.float64) for t in fg(v)),
        np.zeros(d * k + k),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "gtol": 1e-12, "ftol": 0.0},
    )
    assert p.f_star == pytest.approx(best.fun, rel=1e-9)
    assert p.f_star <= best.fun + 1e-12  # and not below the minimum by more than rounding
    assert p.f_star >= best.fun - 1e-9


def test_csv_columns_of_one_name_and_non_finite_cells_are_named(tmp_path):
    dup = tmp_path / "dup.csv"
    dup.write_text("a,y,y\n1,2,3\n4,5,6\n7,8,10\n")
    with pytest.raises(ValueError, match=r"the header names 2 columns 'y' \(columns \[2, 3\]\)"):
        data.load_csv(dup, target="y")
    nan = tmp_path / "nan.csv"
    nan.write_text("id,name,x1,x2,y\n1,a,0.5,1.0,2\n\n2,b,0.7,NaN,3\n3,c,0.9,2.0,4\n")
    with pytest.raises(
        ValueError, match=r"line 4, column 'x2': NaN is not a finite number \(selected by the features"
    ):
        data.load_csv(nan, exclude=["id", "name"])
    semi = tmp_path / "semi.csv"
    semi.write_text("x;y\n1;2\n3;4\n")
    with pytest.raises(ValueError, match=r"the header holds ';': gdjax reads comma-separated files"):
        data.load_csv(semi)
    empty = tmp_path / "empty.npz"
    np.savez(empty, X=np.zeros((3, 0)), y=np.zeros(3))
    with pytest.raises(ValueError, match=r"'X' has no feature column \(shape \(3, 0\)\)"):
        data.load_npz(empty)
