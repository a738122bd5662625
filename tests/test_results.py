"""The study face's results model: `gdjax.study.results(sweep)`, `gdjax.study.load(run folder)`,
`Results.save` / `load` round trips, merging, and `best_configurations` against a NumPy oracle."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

import gdjax
import gdjax.study
from gdjax.study import results_model
from gdjax.study.results_model import CURVE_COLUMNS, LANE_COLUMNS, ResultsError
from tests.helpers import run_cli

STUDY = """
name = "tiny"
precision = "float64"
seeds = [0, 1, 2]

[data]
source = "synthetic"
num_examples = 60
num_features = 3
noise = 0.5
seed = 0
test_fraction = 0.25

[cost]
model = "linear"
loss = "mse"

[run]
num_steps = 40
batch_size = [8, "full"]

[[optimizers]]
rule = "sgd"
grid.learning_rate = [0.01, 0.1]

[[optimizers]]
rule = "adam"
grid.learning_rate = [0.05]
"""


# STUDY's problem with more examples: only the problem needs to differ for merging to refuse it, so
# one optimizer at one configuration, full batch (one program to compile).
OTHER_STUDY = (
    STUDY.split("[run]")[0].replace("num_examples = 60", "num_examples = 70")
    + """[run]
num_steps = 40

[[optimizers]]
rule = "sgd"
grid.learning_rate = [0.1]
"""
)
assert "num_examples = 70" in OTHER_STUDY


@pytest.fixture(scope="module")
def sweep_result():
    X, y = gdjax.data.synthetic(0, 80, 4)[:2]
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    grids = {
        "sgd": {"learning_rate": [0.01, 0.1, 5.0]},
        "momentum": {"learning_rate": [0.01], "momentum": [0.5, 0.9]},
    }
    test = (X[:20], y[:20])
    return gdjax.sweep(
        cost,
        grids,
        gdjax.init_linear(4),
        (X[20:], y[20:]),
        num_steps=50,
        seeds=[0, 1],
        batch_size=10,
        eval_every=10,
        metrics={"test_loss": gdjax.costs.on_data(cost, test)},
    )


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    (root / "tiny.toml").write_text(STUDY)
    code, out, err = run_cli("run", str(root / "tiny.toml"), "--out", str(root / "run"), "-q", "--no-plots")
    assert code == 0, err
    return root / "run"


def test_sweep_lanes_and_curves_match_the_sweep(sweep_result):
    r = gdjax.study.results(sweep_result, problem="synthetic", num_examples=60)
    summary = sweep_result.summary()
    assert r.num_lanes == sweep_result.num_lanes == len(summary)
    assert r.hyperparameters == ("learning_rate", "momentum")
    assert r.metrics == ("test_loss",)
    np.testing.assert_array_equal(r.lanes["final_loss"], [row["final_loss"] for row in summary])
    assert r.lanes["status"].tolist() == [row["status"] for row in summary]
    assert r.lanes["steps"].tolist() == [row["steps"] for row in summary]
    assert r.lanes["seed"].tolist() == [row["seed"] for row in summary]
    stop = [pd.NA if row["stop_step"] is None else row["stop_step"] for row in summary]
    assert r.lanes["stop_step"].astype(object).tolist() == stop
    np.testing.assert_allclose(r.lanes["suboptimality"], [row["suboptimality"] for row in summary])
    assert (r.lanes["f_star_source"] == "closed form").all()
    # momentum does not apply to sgd's lanes
    assert r.lanes.loc[r.lanes["rule"] == "sgd", "momentum"].isna().all()
    # curves: every lane x evaluation, in lane order, with the trace's numbers
    evals = sweep_result.eval_steps
    assert len(r.curves) == r.num_lanes * len(evals)
    lane3 = r.curves[r.curves["lane"] == 3]
    np.testing.assert_array_equal(lane3["step"], evals)
    np.testing.assert_array_equal(lane3["loss"], sweep_result.trace.loss_history[3])
    np.testing.assert_array_equal(lane3["test_loss"], sweep_result.trace.metrics["test_loss"][3])
    np.testing.assert_allclose(lane3["epoch"], evals * 10 / 60)  # batch 10 of 60 examples
    np.testing.assert_array_equal(r.lanes["best_loss"], np.nanmin(sweep_result.trace.loss_history, axis=1))


def test_columns_follow_the_schema(sweep_result):
    r = gdjax.study.results(sweep_result, num_examples=60)
    declared = {c.name: c.dtype for c in LANE_COLUMNS}
    for name in r.lanes.columns:
        if name in declared:
            assert str(r.lanes[name].dtype) == declared[name], name
        else:
            assert name in r.hyperparameters + r.metrics, name
    assert set(declared) <= set(r.lanes.columns)
    assert [c.name for c in CURVE_COLUMNS] == list(r.curves.columns[: len(CURVE_COLUMNS)])
    for c in LANE_COLUMNS + CURVE_COLUMNS:
        assert c.role in ("coordinate", "outcome", "metric", "provenance")
        assert c.aggregate in (None, "median", "majority", "first")


def test_save_and_load_round_trip_exactly(sweep_result, tmp_path):
    r = gdjax.study.results(sweep_result, problem="synthetic", num_examples=60)
    r.splits = {"synthetic": {"train": np.arange(20, 80), "test": np.arange(20)}}
    r.save(tmp_path / "saved")
    back = gdjax.study.load(tmp_path / "saved")
    pd.testing.assert_frame_equal(back.lanes, r.lanes)
    pd.testing.assert_frame_equal(back.curves, r.curves)
    pd.testing.assert_frame_equal(back.problems, r.problems)
    assert back.hyperparameters == r.hyperparameters and back.metrics == r.metrics
    np.testing.assert_array_equal(back.splits["synthetic"]["test"], np.arange(20))
    # plain pandas reads the files without gdjax
    assert len(pd.read_parquet(tmp_path / "saved" / "curves.parquet")) == len(r.curves)


def test_best_configurations_against_a_numpy_oracle(sweep_result):
    r = gdjax.study.results(sweep_result, num_examples=60)
    best = r.best_configurations(by="final_loss")
    lanes = r.lanes
    for _, row in best.iterrows():
        mine = lanes[lanes["optimizer"] == row["optimizer"]]
        medians = {}
        for _, lane in mine.iterrows():
            key = (lane["learning_rate"], -1.0 if np.isnan(lane["momentum"]) else lane["momentum"])
            bad = lane["status"] in ("diverged", "nonfinite")
            medians.setdefault(key, []).append(np.inf if bad else lane["final_loss"])
        expected_key = min(medians, key=lambda k: np.median(medians[k]))
        assert row["median"] == np.median(medians[expected_key])
        assert row["learning_rate"] == expected_key[0]
        assert row["lanes"] == 2  # two seeds
        assert row["q25"] <= row["median"] <= row["q75"]
    # learning rate 5 diverges: counted as +inf, never picked
    assert 5.0 not in best["learning_rate"].tolist()
    top = r.best_configurations(by="test_loss", mode="max")
    assert set(top["optimizer"]) == {"sgd", "momentum"}


def test_bad_arguments_are_one_line_errors(sweep_result, tmp_path):
    r = gdjax.study.results(sweep_result, num_examples=60)
    with pytest.raises(ResultsError, match="did you mean 'final_loss'"):
        r.best_configurations(by="final_los")
    with pytest.raises(ResultsError, match="mode must be"):
        r.best_configurations(mode="best")
    with pytest.raises(ResultsError, match="not numeric"):
        r.best_configurations(by="status")
    with pytest.raises(ResultsError, match="no such folder"):
        gdjax.study.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="neither a run folder"):
        gdjax.study.load(tmp_path / "empty")
    with pytest.raises(ResultsError, match="gdjax.sweep returned"):
        gdjax.study.results({"not": "a sweep"})


def test_load_a_run_folder(run_folder):
    r = gdjax.study.load(run_folder)
    summary = json.loads((run_folder / "summary.json").read_text())
    assert r.num_lanes == len(summary) == (2 * 2 + 1 * 2) * 3  # (lrs x batch sizes) x seeds
    assert set(r.lanes["optimizer"]) == {"sgd", "adam"}
    assert r.lanes["problem"].unique().tolist() == ["tiny"]
    assert r.metrics == ("test_loss",)
    assert r.lanes["run"].unique().tolist() == [os.path.abspath(run_folder)]
    np.testing.assert_allclose(r.lanes["final_loss"], [row["final_loss"] for row in summary])
    assert r.lanes["batch_size"].isna().sum() == 3 * 3  # the full-batch lanes
    assert r.problems["num_examples"].tolist() == [45]  # the training split of 60
    assert r.problems["f_star_source"].tolist() == ["closed form (least squares, float64)"]
    # a mini-batch lane's epochs: step * 8 / 45
    lane = r.lanes.index[r.lanes["batch_size"] == 8][0]
    curve = r.curves[r.curves["lane"] == r.lanes.loc[lane, "lane"]]
    np.testing.assert_allclose(curve["epoch"], curve["step"] * 8 / 45)
    assert np.isfinite(r.lanes["seconds_per_step"]).all()


def test_merging_run_folders(run_folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"  # the same folder twice is refused (its lanes would count twice)
    shutil.copytree(run_folder, copy)
    with pytest.raises(ResultsError, match="is given twice"):
        gdjax.study.load([run_folder, run_folder])
    both = gdjax.study.load([run_folder, copy])
    assert both.num_lanes == 2 * gdjax.study.load(run_folder).num_lanes
    assert both.lanes["lane"].tolist() == list(range(both.num_lanes))
    assert both.curves["lane"].max() == both.num_lanes - 1
    # the same name for different problems is refused, naming both
    other = tmp_path / "other.toml"
    other.write_text(OTHER_STUDY)
    code, _, err = run_cli("run", str(other), "--out", str(tmp_path / "run2"), "-q", "--no-plots")
    assert code == 0, err
    with pytest.raises(ResultsError, match="problem .tiny. differs .*num_examples: 45 vs 52"):
        gdjax.study.load([run_folder, tmp_path / "run2"])


def test_incomplete_or_damaged_run_folders_are_refused(run_folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["status"] = "partial"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ResultsError, match="incomplete run .* --resume"):
        gdjax.study.load(copy)
    manifest["status"] = "complete"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    os.remove(copy / "histories.npz")
    with pytest.raises(ResultsError, match="missing histories.npz"):
        gdjax.study.load(copy)
    (copy / "manifest.json").write_text("[" * 5000)
    with pytest.raises(ResultsError, match="manifest.json"):
        gdjax.study.load(copy)


def test_a_folder_written_before_evaluation_schedules_still_loads(run_folder, tmp_path):
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(run_folder, copy)
    with np.load(copy / "histories.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.endswith("eval_steps")}
    np.savez(copy / "histories.npz", **arrays)
    r = gdjax.study.load(copy)
    lane0 = r.curves[r.curves["lane"] == 0]
    np.testing.assert_array_equal(lane0["step"], np.arange(len(lane0)))


def test_a_run_folder_keeps_its_held_out_split(run_folder, tmp_path):
    import shutil

    r = gdjax.study.load(run_folder)
    split = r.splits["tiny"]
    assert (len(split["train"]), len(split["test"])) == (45, 15)  # test_fraction = 0.25 of 60
    np.testing.assert_array_equal(np.sort(np.concatenate([split["train"], split["test"]])), np.arange(60))
    # They are the rows the runs were measured on: a lane's recorded test_loss is the MSE of its final
    # parameters on exactly these rows of the data.
    X, y = gdjax.data.synthetic(0, 60, 3, noise=0.5)[:2]
    X_test, y_test = np.asarray(X)[split["test"]], np.asarray(y)[split["test"]]
    with np.load(run_folder / "histories.npz") as h:
        for lane in range(3):
            w, b = h["sgd/params/w"][lane], h["sgd/params/b"][lane]
            recorded = h["sgd/metrics/test_loss"][lane, -1]
            assert np.mean((X_test @ w + b - y_test) ** 2) == pytest.approx(recorded, rel=1e-10)
    assert "split.npz" in json.loads((run_folder / ".gdjax-run").read_text())["owned"]  # --force removes it
    # saved and loaded again, and a folder written before splits were saved (none, no error)
    r.save(tmp_path / "saved")
    np.testing.assert_array_equal(gdjax.study.load(tmp_path / "saved").splits["tiny"]["test"], split["test"])
    copy = tmp_path / "old"
    shutil.copytree(run_folder, copy)
    (copy / "split.npz").unlink()
    assert gdjax.study.load(copy).splits == {}
    np.savez(copy / "split.npz", **{"linear/validation": np.arange(3)})
    with pytest.raises(ResultsError, match="'linear/validation' is not a split"):
        gdjax.study.load(copy)


def test_a_finished_run_gives_its_results_without_reading_its_folder(tmp_path, monkeypatch):
    # `gdjax run` renders its report from what the run holds: the same Results `load` reads back.
    import jax
    import pandas as pd

    from gdjax.study import config, experiment, results_model

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        small = (
            STUDY.replace("40", "12").replace('[8, "full"]', "8").split('[[optimizers]]\nrule = "adam"')[0]
        )
        outcome = experiment.run_experiment(config.loads(small), str(tmp_path / "run"))
    finally:
        jax.config.update("jax_enable_x64", before)
    loaded = results_model.load(outcome.folder)
    monkeypatch.setattr(results_model, "load", None)  # of_run must not read the folder back
    monkeypatch.setattr(gdjax.io, "read_npz", None)
    kept = results_model.of_run(outcome)
    for name in ("lanes", "curves", "problems"):
        pd.testing.assert_frame_equal(getattr(kept, name), getattr(loaded, name))
    assert (kept.hyperparameters, kept.metrics, kept.tuning_seeds) == (
        loaded.hyperparameters,
        loaded.metrics,
        loaded.tuning_seeds,
    )
    assert kept.splits.keys() == loaded.splits.keys() == {"tiny"}
    for part in ("train", "test"):
        np.testing.assert_array_equal(kept.splits["tiny"][part], loaded.splits["tiny"][part])


def test_import_gdjax_study_does_not_load_pandas():
    code = textwrap.dedent(
        """
        import sys
        import gdjax, gdjax.study
        assert "pandas" not in sys.modules, "import gdjax.study loaded pandas"
        gdjax.study.load
        assert "pandas" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_results_model_module_is_the_only_way_in():
    assert gdjax.study.results is results_model.results
    assert gdjax.study.load is results_model.load
    assert gdjax.study.Results is results_model.Results


def test_seeds_that_draw_nothing_are_one_lane_not_a_paired_sample():
    """A full-batch sweep from one start runs the same lane for every seed: eight identical pairs made
    one comparison "significant" (p = 0.0078). They are one lane with no seed, as `gdjax run` writes."""
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    rule = {"sgd": {"learning_rate": [0.01, 0.02]}, "momentum": {"learning_rate": [0.01, 0.02]}}
    full = gdjax.sweep(cost, rule, gdjax.init_linear(1), (X, y), num_steps=50, seeds=list(range(8)))
    results = gdjax.study.results(full)
    assert results.num_lanes == 4 and results.lanes["seed"].isna().all()
    assert int(results.compare("momentum", "sgd", by="final_loss")["num_pairs"].iloc[0]) == 1
    assert results.best_statement(by="final_loss") is None
    assert "1 differing pair(s) of 1" in results.verdict(by="final_loss")
    assert "both ran full batch from one start" in results.verdict(by="final_loss")
    mini = gdjax.sweep(
        cost, rule, gdjax.init_linear(1), (X, y), num_steps=50, seeds=list(range(3)), batch_size=2
    )
    assert gdjax.study.results(mini).num_lanes == 12  # the seeds draw the batches: every lane stays
