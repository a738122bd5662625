"""What a user meets from Python after a sweep (issue 17): a `SweepResult` pickles and saves with its
coordinates, the old `best_configurations(result.summary())` call works, `summary().columns` is a
property, `trace.eval_steps` has the shape its docs say, and `plots.*` of a multi-optimizer sweep
draw readable figures (one line per optimizer, legends that fit, steps or epochs on the axis)."""

import pickle

import jax
import numpy as np
import pandas as pd
import pytest

import gdjax
import gdjax.study
from gdjax import io, reference
from gdjax.study import experiment
from gdjax.sweep import SweepResult

NUM_EXAMPLES = 40
LEARNING_RATES = {"sgd": [0.003, 0.01, 0.03, 0.1], "adam": [0.001, 0.01, 0.1]}


@pytest.fixture(scope="module")
def data():
    X, y = gdjax.data.synthetic(0, NUM_EXAMPLES, 3)[:2]
    return X, y


@pytest.fixture(scope="module")
def sweep_result(data):
    """Two optimizers x several learning rates x three seeds on mini-batches, with a user metric."""
    X, y = data
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    grids = {
        "sgd": {"learning_rate": LEARNING_RATES["sgd"]},
        "momentum": {"learning_rate": [0.01, 0.1], "momentum": [0.9]},
        "adam": {"learning_rate": LEARNING_RATES["adam"]},
    }
    return gdjax.sweep(
        cost,
        grids,
        gdjax.init_linear(3),
        (X, y),
        num_steps=30,
        seeds=[0, 1, 2],
        batch_size=8,
        eval_every=5,
        metrics={"half_loss": gdjax.costs.on_data(cost, (X[:20], y[:20]))},
    )


def assert_same_result(a: SweepResult, b: SweepResult) -> None:
    jax.tree.map(np.testing.assert_array_equal, a.trace, b.trace)
    assert a.trace.evaluated_at == b.trace.evaluated_at
    assert a.coords == b.coords
    assert a.hyperparameter_names == b.hyperparameter_names
    assert (a.compile_seconds, a.run_seconds, a.num_steps) == (b.compile_seconds, b.run_seconds, b.num_steps)
    assert a.f_star == b.f_star and a.f_star_source == b.f_star_source
    assert a.num_examples == b.num_examples


# ------------------------------------------------------------------------------- pickle and save
def test_a_sweep_result_pickles_with_its_lazy_f_star_and_sharding(data):
    X, y = data
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    result = gdjax.sweep(
        cost, "sgd", gdjax.init_linear(3), (X, y), grid={"learning_rate": [0.01, 0.1]}, num_steps=5
    )
    assert result.num_examples == NUM_EXAMPLES
    back = pickle.loads(pickle.dumps(result))  # before f* was ever read: it is a closure over the data
    assert back.f_star == pytest.approx(reference.optimal_cost(X, y), rel=1e-12)
    assert back.f_star_source == "closed form"
    assert back.sharding == result.sharding  # rebuilt from the device ids of this process
    assert_same_result(back, result)
    pd.testing.assert_frame_equal(gdjax.study.results(back).lanes, gdjax.study.results(result).lanes)


def test_save_trace_of_a_sweep_result_keeps_its_coordinates(sweep_result, tmp_path):
    path = tmp_path / "sweep.npz"
    io.save_trace(path, sweep_result)
    back = SweepResult.load(path, gdjax.init_linear(3))
    assert_same_result(back, sweep_result)
    assert back.select(rule="adam", learning_rate=0.1, seed=2) == sweep_result.select(
        rule="adam", learning_rate=0.1, seed=2
    )
    assert back.summary() == sweep_result.summary()
    pd.testing.assert_frame_equal(gdjax.study.results(back).curves, gdjax.study.results(sweep_result).curves)
    # the same file still reads as a plain trace, and a plain trace's file says what it lacks
    trace = io.load_trace(path, gdjax.init_linear(3))
    np.testing.assert_array_equal(trace.loss_history, sweep_result.trace.loss_history)
    io.save_trace(tmp_path / "trace.npz", sweep_result.trace)
    with pytest.raises(io.FileFormatError, match="without a sweep's coordinates.*load_trace"):
        SweepResult.load(tmp_path / "trace.npz", gdjax.init_linear(3))


def test_a_coordinate_a_file_cannot_hold_is_refused_by_name(sweep_result, tmp_path):
    odd = SweepResult(
        sweep_result.trace,
        [dict(c, schedule=object()) for c in sweep_result.coords],
        sweep_result.hyperparameter_names,
        0.0,
        0.0,
    )
    with pytest.raises(ValueError, match="lane 0's coordinate schedule=.*pickle the result instead"):
        odd.save(tmp_path / "odd.npz")
    assert not (tmp_path / "odd.npz").exists()


# ------------------------------------------------------------------------------- summaries
def test_best_configurations_of_a_sweep_summary(sweep_result):
    rows = experiment.best_configurations(sweep_result.summary())
    table = gdjax.study.results(sweep_result).best_configurations()
    assert [r["optimizer"] for r in rows] == ["sgd", "momentum", "adam"]
    for row in rows:
        expected = table[table["optimizer"] == row["optimizer"]].iloc[0]
        assert row["learning_rate"] == expected["learning_rate"]
        assert row["seeds"] == expected["lanes"] == 3  # the metric is an outcome, not a configuration
        assert row["final_loss"] == expected["median"]
        lanes = np.asarray(row["lanes"])
        assert row["half_loss"] == np.median(sweep_result.trace.metrics["half_loss"][lanes, -1])
    with pytest.raises(ValueError, match="cannot rank by 'final_los' \\(did you mean 'final_loss'"):
        experiment.best_configurations(sweep_result.summary(), by="final_los")
    with pytest.raises(ValueError, match="an 'optimizer'.*or a 'rule'"):
        experiment.best_configurations([{"final_loss": 1.0}])


def test_summary_columns_is_a_property(sweep_result):
    table = sweep_result.summary()
    assert table.columns == list(pd.DataFrame(table).columns)
    assert table.columns[:3] == ["lane", "rule", "learning_rate"] and table.columns[-1] == "half_loss"


def test_eval_steps_shapes_are_as_documented(sweep_result):
    lanes, evals = np.shape(sweep_result.trace.loss_history)
    assert np.shape(sweep_result.trace.eval_steps) == (lanes, evals)  # the lane axis, like every field
    assert np.shape(sweep_result.eval_steps) == (evals,)  # the shared row
    assert (sweep_result.trace.eval_steps == sweep_result.eval_steps).all()
    np.testing.assert_array_equal(sweep_result.lane(4).eval_steps, sweep_result.eval_steps)
