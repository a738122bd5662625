"""What a user meets from Python after a sweep (issue 17): a `SweepResult` pickles and saves with its
coordinates, the old `best_configurations(result.summary())` call works, `summary().columns` is a
property, `trace.eval_steps` has the shape its docs say, and `plots.*` of a multi-optimizer sweep
draw readable figures (one line per optimizer, legends that fit, steps or epochs on the axis)."""

import dataclasses
import pickle

import jax
import numpy as np
import pandas as pd
import pytest

import gdjax
import gdjax.study
from gdjax import io, reference
from gdjax.study import experiment, plots
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
    assert a == b
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
    assert back != result.with_f_star(1.0) and back != dataclasses.replace(result, coords=result.coords[::-1])
    nan = dataclasses.replace(
        result, trace=result.trace._replace(loss_history=result.trace.loss_history * np.nan)
    )
    assert nan == pickle.loads(pickle.dumps(nan))  # NaN histories (a diverged lane's) equal their copy


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


# ------------------------------------------------------------------------------- figures
def _curve_lines(ax):
    return [line for line in ax.get_lines() if not line.get_label().startswith("_")]


def _legend_texts(ax):
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def _final(sweep_result):
    """Per (rule, learning rate): the final losses of the seeds, +inf for a lane that blew up (NumPy)."""
    out = {}
    final = np.asarray(sweep_result.trace.loss_history)[:, -1]
    status = [str(gdjax.Status(int(s))) for s in sweep_result.trace.status]
    for i, c in enumerate(sweep_result.coords):
        value = np.inf if status[i] in ("diverged", "nonfinite") else final[i]
        out.setdefault((c["rule"], c["learning_rate"]), []).append((i, value))
    return out


@pytest.mark.parametrize("f_star_known", [True, False])
def test_learning_rate_sweep_from_a_multi_optimizer_sweep_draws_one_line_per_optimizer(
    sweep_result, f_star_known
):
    result = sweep_result if f_star_known else sweep_result.with_f_star(None)
    fig = plots.learning_rate_sweep_from(result)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in _curve_lines(ax) if line.get_gid() is None}
    assert list(lines) == ["sgd", "momentum", "adam"]  # not one group per lane (issue 17)
    f_star = sweep_result.f_star if f_star_known else 0.0
    for (rule, lr), lanes in _final(sweep_result).items():
        line = lines[rule]
        assert line.get_color() == plots.color_for(rule)
        j = list(line.get_xdata()).index(lr)
        values = [v for _, v in lanes if np.isfinite(v)]
        if values:
            assert line.get_ydata()[j] == pytest.approx(np.median(values) - f_star, rel=1e-9)
    assert len(_legend_texts(ax)) <= 3 + 4  # the optimizers, and at most the region and status keys
    assert "half_loss" not in " ".join(_legend_texts(ax))


def test_loss_curves_of_a_multi_optimizer_sweep_draw_each_optimizers_best_configuration(sweep_result):
    fig = plots.loss_curves(sweep_result)
    (ax,) = fig.axes
    lines = _curve_lines(ax)
    assert [line.get_label().split(" ")[0] for line in lines] == ["sgd", "momentum", "adam"]
    assert len(_legend_texts(ax)) == 3
    assert ax.get_xlabel() == "epoch"  # mini-batches of 8 from 40 examples
    steps = sweep_result.eval_steps
    for line in lines:
        rule = line.get_label().split(" ")[0]
        assert line.get_color() == plots.color_for(rule)
        # the oracle: the configuration with the lowest median final loss, its seeds' median curve
        per_lr = {lr: lanes for (r, lr), lanes in _final(sweep_result).items() if r == rule}
        best = min(per_lr, key=lambda lr: np.median([v for _, v in per_lr[lr]]))
        assert f"lr={best:g}" in line.get_label()
        lanes = [i for i, _ in per_lr[best]]
        gap = np.median(np.asarray(sweep_result.trace.loss_history)[lanes] - sweep_result.f_star, axis=0)
        np.testing.assert_allclose(line.get_xdata(), steps * 8 / NUM_EXAMPLES)
        shown = gap > 1e-12  # figures floor f - f* at the rounding of f*
        np.testing.assert_allclose(line.get_ydata()[shown], gap[shown], rtol=1e-12)
    assert len(ax.collections) == 3  # one seed band per optimizer
    # every configuration on request, one banded line each
    every = plots.loss_curves(sweep_result, configurations="all")
    assert len([t for t in _legend_texts(every.axes[0]) if "median of 3" in t]) == 4 + 2 + 3
    labelled = plots.loss_curves(sweep_result, labels=[str(i) for i in range(sweep_result.num_lanes)])
    assert len(_curve_lines(labelled.axes[0])) == 4 + 2 + 3  # labels ask for the lines of "all"
    with pytest.raises(ValueError, match="configurations='best' needs what gdjax.sweep returned"):
        plots.loss_curves(np.ones(3), configurations="best")


def test_metric_curves_of_a_sweep_draw_each_optimizers_best_configuration(sweep_result):
    ax = plots.metric_curves(sweep_result, "half_loss").axes[0]
    lines = _curve_lines(ax)
    assert [line.get_label() for line in lines] == ["sgd", "momentum", "adam"]
    assert ax.get_ylabel() == "half_loss" and ax.get_xlabel() == "epoch"
    metric = np.asarray(sweep_result.trace.metrics["half_loss"])
    for line in lines:
        per_lr = {lr: lanes for (r, lr), lanes in _final(sweep_result).items() if r == line.get_label()}
        best = min(per_lr, key=lambda lr: np.median([v for _, v in per_lr[lr]]))
        lanes = [i for i, _ in per_lr[best]]
        np.testing.assert_allclose(line.get_ydata(), np.median(metric[lanes], axis=0), rtol=1e-12)
    with pytest.raises(ValueError, match="no metric 'accuracy' in these results; metrics: half_loss"):
        plots.metric_curves(sweep_result, "accuracy")


def test_loss_curves_of_saved_arrays_put_steps_or_the_evaluation_index_on_the_axis(sweep_result, tmp_path):
    path = tmp_path / "sweep.npz"
    sweep_result.save(path)
    with np.load(path) as saved:
        loss, eval_steps = saved["loss_history"][:3], saved["eval_steps"][0]
    ax = plots.loss_curves(loss).axes[0]
    assert ax.get_xlabel() == "evaluation"  # an index, not a step
    ax = plots.loss_curves(loss, steps=eval_steps).axes[0]
    assert ax.get_xlabel() == "step"
    np.testing.assert_array_equal(_curve_lines(ax)[0].get_xdata(), eval_steps)
    with pytest.raises(ValueError, match="steps has 3 entries but a loss curve has 7"):
        plots.loss_curves(loss, steps=eval_steps[:3])


def test_an_unknown_optimizer_keeps_its_colour_across_figures():
    assert plots._group_colors(["optax.lamb", "sgd"])[0] == plots.color_for("optax.lamb")
    colors = plots._group_colors([f"run {i}" for i in range(5)])
    assert len(set(colors)) == 5  # distinct even where two names hash to one colour


def test_the_printed_table_ranks_by_exact_medians_and_gives_ties_to_the_first_listed():
    """The rule of the page and of `compare`: the table once rounded medians to 6 significant digits
    (f - f* of 0.0047 and 1.1e-5 at a loss of 5691.73 tied) and let the faster win a tie (the lane
    that diverged fastest)."""

    def row(lane, lr, loss, steps, status="max_steps"):
        return dict(optimizer="adam", lane=lane, rule="adam", learning_rate=lr, final_loss=loss,
                    status=status, steps=steps, suboptimality=None)  # fmt: skip

    close = [row(0, 3.16, 5691.734, 10), row(1, 100.0, 5691.729335, 200)]
    assert experiment.best_configurations(close)[0]["learning_rate"] == 100.0
    blown = [row(0, 0.01, 1e300, 46, "diverged"), row(1, 0.1, 1e304, 5, "diverged")]
    assert experiment.best_configurations(blown)[0]["learning_rate"] == 0.01  # listed first
    # compare's choice: a's two configurations tie on the tuning seed 0 (both diverged); the first
    # listed is reported on seed 1.
    lanes = pd.DataFrame(
        dict(problem="p", optimizer="a", learning_rate=[0.1, 0.1, 0.01, 0.01], seed=[0, 1, 0, 1],
             final_loss=[np.inf, 5.0, np.inf, 7.0])
    )  # fmt: skip
    from gdjax.study.statistics import _chosen as pick

    assert pick(lanes, "a", ["learning_rate"], "final_loss", "min", [0])["_value"].tolist() == [5.0]
    flipped = lanes.iloc[[2, 3, 0, 1]]
    assert pick(flipped, "a", ["learning_rate"], "final_loss", "min", [0])["_value"].tolist() == [7.0]
