"""Tests of `gdjax.study.plots`: every figure carries the artists it promises, from small real runs.

Figures are rendered to PNG bytes (`_render`) so that warnings raised at draw time (log axes fed
non-positive values, layout engines giving up) fail the test under `filterwarnings = ["error"]`.
"""

import io
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.collections import PolyCollection
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

import gdjax
from gdjax import reference, rules
from gdjax.loop import run
from gdjax.study import plots
from gdjax.types import Status

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUM_STEPS = 150
# Around the house-price data's stability bound 2/L ~ 0.0813: three learning rates diverge.
LEARNING_RATES = (0.005, 0.01, 0.02, 0.04, 0.07, 0.12, 0.16, 0.2)


def _render(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    return buf.getvalue()


def _stack(traces):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *traces)


def _legend_texts(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend is not None else []


def _lines_with_gid(ax, prefix: str):
    return [line for line in ax.get_lines() if (line.get_gid() or "").startswith(prefix)]


def _curve_lines(ax):
    """The loss curves themselves: lines with a legend label that are not status markers."""
    return [
        line for line in ax.get_lines() if line.get_gid() is None and not line.get_label().startswith("_")
    ]


class FakeSweep:
    """The duck type the plots accept: `.trace` (lane axis), `.coords`, `.summary()`."""

    def __init__(self, trace, coords, f_star=None):
        self.trace, self.coords, self.f_star = trace, coords, f_star

    def summary(self):
        rows = []
        for i, c in enumerate(self.coords):
            final = float(self.trace.loss_history[i, -1])
            status = Status(int(self.trace.status[i]))
            rows.append(
                {
                    "lane": i,
                    "rule": c["rule"],
                    "learning_rate": c["learning_rate"],
                    "seed": c["seed"],
                    "start": c["start"],
                    "batch_size": None,
                    "final_loss": final,
                    "suboptimality": None if self.f_star is None else final - self.f_star,
                    "steps_to_target": None,
                    "status": str(status),
                    "steps": int(self.trace.steps[i]),
                    "stop_step": None if status == Status.MAX_STEPS else int(self.trace.stop_step[i]),
                }
            )
        return rows


@pytest.fixture(scope="module")
def house():
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    exact = reference.least_squares(X, y, full_output=True)
    return X, y, cost, exact


@pytest.fixture(scope="module")
def lr_sweep(house):
    """Full-batch gradient descent at each of LEARNING_RATES (one compilation: rules keep lr in state)."""
    X, y, cost, _ = house
    p0 = gdjax.init_linear(1, jnp.float64)
    return _stack([run(cost, rules.sgd(lr), p0, (X, y), num_steps=NUM_STEPS) for lr in LEARNING_RATES])


@pytest.fixture(scope="module")
def seeds_sweep(house):
    """sgd at two learning rates x three starting points, as a sweep result would hold it.

    Same shapes and step count as `lr_sweep`, so the compiled run is reused (the test stays fast).
    """
    X, y, cost, exact = house
    traces, coords = [], []
    for lr in (0.01, 0.03):
        for start, (w, b) in enumerate([(0.0, 0.0), (50.0, 50.0), (-20.0, 10.0)]):
            p0 = {
                "w": jnp.array([w], jnp.float64),
                "b": jnp.array(b, jnp.float64),
            }  # no weak types: no recompile
            traces.append(run(cost, rules.sgd(lr), p0, (X, y), num_steps=NUM_STEPS))
            coords.append({"rule": "sgd", "learning_rate": lr, "seed": None, "start": start})
    return FakeSweep(_stack(traces), coords, exact.f_star)


def test_import_gdjax_does_not_import_matplotlib():
    code = (
        "import gdjax, gdjax.study.plots, sys; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_loss_curves_draws_one_line_per_run_and_marks_the_diverged_stop(lr_sweep):
    fig = plots.loss_curves(lr_sweep, labels=[f"lr={lr}" for lr in LEARNING_RATES])
    ax = fig.axes[0]
    assert isinstance(fig, Figure)
    assert len(_curve_lines(ax)) == len(LEARNING_RATES)
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"

    status = np.asarray(lr_sweep.status)
    diverged = np.flatnonzero(status == Status.DIVERGED)
    assert diverged.size == 3  # lr > 2/L
    markers = _lines_with_gid(ax, "stop:diverged")
    assert len(markers) == diverged.size
    assert sorted(int(m.get_xdata()[0]) for m in markers) == sorted(np.asarray(lr_sweep.stop_step)[diverged])
    # The frozen tail after a divergence is not drawn.
    line = _curve_lines(ax)[diverged[0]]
    stop = int(lr_sweep.stop_step[diverged[0]])
    assert np.all(np.isnan(np.asarray(line.get_ydata())[stop + 1 :]))
    assert "stopped: diverged" in _legend_texts(ax)
    _render(fig)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_curves_suboptimality_is_floored_at_the_loss_resolution(dtype):
    f_star = 5691.73
    # A run that reaches f* to rounding: loss - f* hits 0, then dips below it by a rounding error.
    loss = (f_star + np.array([1e3, 1.0, 1e-3, 0.0, 0.0])).astype(dtype)
    loss[-1] = np.nextafter(loss[-2], dtype(0))
    fig = plots.loss_curves({"momentum": loss}, f_star=f_star)
    ax = fig.axes[0]
    (line,) = _curve_lines(ax)
    ydata = np.asarray(line.get_ydata())
    floor = np.finfo(dtype).eps * f_star
    assert np.all(ydata > 0)
    np.testing.assert_allclose(ydata[-2:], floor)
    assert "f*" in ax.get_ylabel()
    assert _legend_texts(ax) == ["momentum"]
    _render(fig)


def test_loss_curves_of_plain_arrays_with_statuses():
    curves = [np.geomspace(10.0, 0.1, 50), np.geomspace(10.0, 1e4, 20), np.linspace(10.0, 1.0, 50)]
    fig = plots.loss_curves(
        curves,
        labels=["a", "b", "c"],
        statuses=["converged", Status.DIVERGED, 0],
        stop_steps=[49, 19, -1],
    )
    ax = fig.axes[0]
    assert len(_curve_lines(ax)) == 3
    assert len(_lines_with_gid(ax, "stop:converged")) == 1
    assert len(_lines_with_gid(ax, "stop:diverged")) == 1
    assert _legend_texts(ax) == ["a", "b", "c", "stopped: converged", "stopped: diverged"]
    _render(fig)


def test_loss_curves_caps_a_blow_up_to_inf_and_keeps_the_others_readable():
    calm = np.geomspace(10.0, 1e-3, 50)
    blown = np.array([10.0, 1e5, 1e200, np.inf, np.nan])
    fig = plots.loss_curves({"calm": calm, "blown": blown}, statuses=[0, "nonfinite"], stop_steps=[-1, 3])
    ax = fig.axes[0]
    top = ax.get_ylim()[1]
    assert 1e3 < top <= 10.0 * 1e3  # three decades above the calm run, not 1e200
    (marker,) = _lines_with_gid(ax, "stop:nonfinite")
    assert marker.get_xdata()[0] == 3 and marker.get_ydata()[0] == pytest.approx(top)
    _render(fig)


def test_plots_draw_into_a_given_axes():
    fig = Figure(layout="constrained")
    left, right = fig.subplots(1, 2)
    assert plots.loss_curves([np.geomspace(1.0, 1e-3, 20)], ax=left) is fig
    assert plots.learning_rate_sweep([0.01, 0.1], [1.0, 0.5], ax=right) is fig
    assert len(fig.axes) == 2 and left.get_lines() and right.get_lines()
    _render(fig)


def test_real_sweep_result_is_accepted_by_duck_typing(house):
    from gdjax.sweep import sweep

    X, y, cost, exact = house
    result = sweep(
        cost,
        "sgd",
        gdjax.init_linear(1, jnp.float64),
        (X, y),
        grid={"learning_rate": [0.01, 0.05, 0.15]},
        num_steps=50,
    ).with_f_star(exact.f_star)
    fig = plots.learning_rate_sweep_from(result, max_stable_lr=reference.curvature(X).max_stable_lr)
    ax = fig.axes[0]
    assert "f*" in ax.get_ylabel()
    assert sum(len(m.get_xdata()) for m in _lines_with_gid(ax, "blown:")) == 1  # lr = 0.15 > 2/L
    fig = plots.loss_curves(result)
    assert [line.get_label() for line in _curve_lines(fig.axes[0])] == [
        "sgd lr=0.01",
        "sgd lr=0.05",
        "sgd lr=0.15",
    ]
    fig = plots.contour(cost, result, data=(X, y), minimizer=exact.params, resolution=30)
    assert {line.get_label() for line in fig.axes[0].get_lines()} >= {
        "sgd lr=0.01",
        "sgd lr=0.15",
        "minimizer",
    }
    _render(fig)


def test_loss_curves_bands_the_seeds_of_a_sweep_result(seeds_sweep):
    fig = plots.loss_curves(seeds_sweep)
    ax = fig.axes[0]
    # One median line and one band per configuration, not one line per seed.
    assert len(_curve_lines(ax)) == 2
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    texts = _legend_texts(ax)
    assert texts[:2] == ["sgd lr=0.01 (median of 3)", "sgd lr=0.03 (median of 3)"]
    median = np.median(np.asarray(seeds_sweep.trace.loss_history[:3]) - seeds_sweep.f_star, axis=0)
    np.testing.assert_allclose(_curve_lines(ax)[0].get_ydata(), median)
    assert "band: min–max over runs" in texts
    # The sweep knew f*: suboptimality by default.
    assert "f*" in ax.get_ylabel()
    _render(fig)


def test_loss_curves_groups_argument_bands_runs(lr_sweep):
    fig = plots.loss_curves(lr_sweep, groups=["small"] * 4 + ["large"] * 4, band="iqr")
    ax = fig.axes[0]
    assert len(_curve_lines(ax)) == 2
    assert "band: 25–75% over runs" in _legend_texts(ax)
    _render(fig)


def test_learning_rate_sweep_marks_diverged_runs_and_the_stability_bound(house, lr_sweep):
    X, _, _, exact = house
    bound = reference.curvature(X).max_stable_lr
    status = np.asarray(lr_sweep.status)
    fig = plots.learning_rate_sweep(
        LEARNING_RATES,
        np.asarray(lr_sweep.loss_history[:, -1]),
        status,
        max_stable_lr=bound,
        f_star=exact.f_star,
        title="sgd on house prices",
    )
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "learning rate" and "f*" in ax.get_ylabel()

    (bound_line,) = [line for line in ax.get_lines() if line.get_label().startswith("2/L")]
    assert bound_line.get_xdata()[0] == pytest.approx(bound)
    assert bound_line.get_linestyle() == "--"

    diverged = status == Status.DIVERGED
    (blown,) = _lines_with_gid(ax, "blown:diverged")
    assert len(blown.get_xdata()) == diverged.sum()
    assert blown.get_marker() == "x"
    np.testing.assert_allclose(sorted(blown.get_xdata()), np.asarray(LEARNING_RATES)[diverged])
    # Their markers sit in the top strip, above every finite final loss.
    finite = np.concatenate([line.get_ydata() for line in _lines_with_gid(ax, "lanes:")])
    assert np.all(np.asarray(blown.get_ydata()) > finite.max())
    assert len(finite) == (~diverged).sum()

    # The diverged region starts at the smallest diverged learning rate.
    (region,) = [p for p in ax.patches]
    x0 = region.get_path().vertices[:, 0].min()
    assert region.get_transform().transform([[x0, 0]])[0][0] == pytest.approx(
        ax.transData.transform([[min(np.asarray(LEARNING_RATES)[diverged]), 1]])[0][0]
    )
    texts = _legend_texts(ax)
    assert any(t.startswith("2/L = 0.0813") for t in texts)
    assert "diverged, top strip" in texts
    assert any(t.startswith("diverged region (lr ≥ 0.12") for t in texts)
    _render(fig)


def test_learning_rate_sweep_from_summary_rows_groups_rules():
    rows = []
    for rule, lrs, statuses in (
        ("sgd", (0.01, 0.1, 1.0), ("max_steps", "converged", "diverged")),
        ("momentum", (0.01, 0.1, 1.0), ("converged", "nonfinite", "nonfinite")),
    ):
        for i, (lr, st) in enumerate(zip(lrs, statuses, strict=True)):
            rows.append(
                {"rule": rule, "learning_rate": lr, "seed": 0, "start": 0, "batch_size": None}
                | {"final_loss": [3.0, 1.0, np.nan][i] if st not in ("diverged", "nonfinite") else np.inf}
                | {"suboptimality": None, "status": st}
            )
    fig = plots.learning_rate_sweep_from(rows, max_stable_lr=0.5)
    ax = fig.axes[0]
    texts = _legend_texts(ax)
    assert texts[1:3] == ["sgd", "momentum"]
    assert "nonfinite (NaN/inf), top strip" in texts
    assert len(_lines_with_gid(ax, "blown:diverged")[0].get_xdata()) == 1
    assert len(_lines_with_gid(ax, "blown:nonfinite")[0].get_xdata()) == 2
    _render(fig)


def test_learning_rate_sweep_from_a_sweep_result(seeds_sweep):
    fig = plots.learning_rate_sweep_from(seeds_sweep, max_stable_lr=0.08)
    ax = fig.axes[0]
    # Seeds are pooled: one line through the median at each of the two learning rates.
    (line,) = [line for line in _curve_lines(ax) if line.get_label() == "sgd"]
    np.testing.assert_allclose(line.get_xdata(), [0.01, 0.03])
    assert sum(len(m.get_xdata()) for m in _lines_with_gid(ax, "lanes:")) == 6
    _render(fig)


@pytest.mark.parametrize(
    "learning_rates, message",
    [((0.1, 0.0), "learning rates must be finite and > 0"), ((0.1, -1.0), "learning rates must be")],
)
def test_learning_rate_sweep_rejects_learning_rates_a_log_axis_cannot_show(learning_rates, message):
    with pytest.raises(ValueError, match=message):
        plots.learning_rate_sweep(learning_rates, [1.0, 2.0], ["converged", "converged"])


def test_contour_of_the_linear_model_draws_w_against_b(house):
    X, y, cost, exact = house
    p0 = gdjax.init_linear(1, jnp.float64)
    traces = {
        "sgd": run(cost, rules.sgd(0.05), p0, (X, y), num_steps=NUM_STEPS),
        "sgd lr=0.01": run(cost, rules.sgd(0.01), p0, (X, y), num_steps=NUM_STEPS),
    }
    fig = plots.contour(cost, traces, data=(X, y), minimizer=exact.params, resolution=40)
    ax = fig.axes[0]
    assert any(isinstance(c, ContourSet) for c in ax.collections)
    assert len(fig.axes) == 2  # the colour bar
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("w", "b")
    (sgd_line,) = [line for line in ax.get_lines() if line.get_label() == "sgd"]
    history = traces["sgd"].params_history
    np.testing.assert_allclose(sgd_line.get_xdata(), np.asarray(history["w"])[:, 0])
    np.testing.assert_allclose(sgd_line.get_ydata(), np.asarray(history["b"]))
    (star,) = [line for line in ax.get_lines() if line.get_label() == "minimizer"]
    np.testing.assert_allclose(
        [star.get_xdata()[0], star.get_ydata()[0]], [exact.params["w"][0], exact.params["b"]]
    )
    # Default bounds cover the paths and the minimizer.
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 < 0 < x1 and y0 < float(exact.params["b"]) < y1
    assert _legend_texts(ax) == ["sgd", "sgd lr=0.01", "start", "end", "minimizer"]
    _render(fig)


def test_contour_of_rosenbrock_from_a_sweep_trace_with_log_levels():
    x0 = jnp.array([-1.2, 1.0])
    lanes = _stack(
        [run(gdjax.costs.rosenbrock, rules.sgd(lr), x0, None, num_steps=300) for lr in (1e-3, 2e-3)]
    )
    fig = plots.contour(gdjax.costs.rosenbrock, lanes, minimizer=np.ones(2), levels=20, resolution=40)
    ax = fig.axes[0]
    (contours,) = [c for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    levels = np.asarray(contours.levels)
    assert len(levels) == 20
    steps = np.diff(levels)
    assert steps[-1] > 1e3 * steps[1]  # log-spaced above the minimum, not even
    paths = [line for line in ax.get_lines() if line.get_label().startswith("path")]
    assert [p.get_label() for p in paths] == ["path 0", "path 1"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x[0]", "x[1]")
    _render(fig)


def test_contour_rejects_params_with_more_than_two_numbers(house):
    X, y, cost, _ = house
    with pytest.raises(ValueError, match="exactly two parameters"):
        plots.contour(cost, {"w": np.zeros((5, 2)), "b": np.zeros(5)}, data=(X, y))


def test_fitted_line_draws_data_and_each_fit(house):
    X, y, cost, exact = house
    trace = run(cost, rules.sgd(0.05), gdjax.init_linear(1, jnp.float64), (X, y), num_steps=NUM_STEPS)
    fig = plots.fitted_line(
        X, y, {"gdjax sgd": trace.params, "least squares": exact.params}, xlabel="bedrooms"
    )
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2
    (points,) = ax.collections
    assert len(points.get_offsets()) == len(y)
    texts = _legend_texts(ax)
    assert texts[1] == "least squares: y = 84.74 x − 46.32"
    assert texts[2] == "data (7 points)"
    (lstsq,) = [line for line in ax.get_lines() if line.get_label().startswith("least squares")]
    xs, ys = lstsq.get_xdata(), lstsq.get_ydata()
    np.testing.assert_allclose(ys, 1610 / 19 * xs - 880 / 19)
    assert ax.get_xlabel() == "bedrooms"
    _render(fig)


def test_palette_is_consistent_per_rule_and_status():
    assert plots.color_for("sgd") == plots.color_for("sgd lr=0.1") == plots.RULE_COLORS["sgd"]
    assert plots.color_for("adam") != plots.color_for("sgd")
    assert plots.color_for("optax.lamb") == plots.color_for("optax.lamb")  # stable for unknown names
    assert plots.status_colors([Status.DIVERGED, "converged", 3]) == [
        plots.STATUS_COLORS["diverged"],
        plots.STATUS_COLORS["converged"],
        plots.STATUS_COLORS["nonfinite"],
    ]
    assert plots.config_labels(
        [{"rule": "sgd", "learning_rate": 0.1, "seed": 0}, {"rule": "sgd", "learning_rate": 0.2, "seed": 1}]
    ) == ["sgd lr=0.1", "sgd lr=0.2"]


def test_save_writes_a_png_atomically(tmp_path):
    fig = plots.loss_curves([np.geomspace(1.0, 1e-3, 20)])
    path = tmp_path / "figs" / "loss.png"
    assert plots.save(fig, path) == str(path)
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    plots.save(fig, path)  # overwriting goes through os.replace too
    assert sorted(os.listdir(path.parent)) == ["loss.png"]  # no temporary file left behind


def test_save_rejects_an_unknown_format_and_writes_nothing(tmp_path):
    fig = plots.loss_curves([np.geomspace(1.0, 1e-3, 20)])
    with pytest.raises(ValueError, match="image format"):
        plots.save(fig, tmp_path / "loss.unknown")
    assert os.listdir(tmp_path) == []


def test_config_labels_show_only_settings_that_vary():
    coords = [
        {"rule": "sgd", "learning_rate": 0.1, "momentum": None, "seed": 0, "batch_size": None},
        {"rule": "momentum", "learning_rate": 0.1, "momentum": 0.9, "seed": 0, "batch_size": None},
        {"rule": "momentum", "learning_rate": 0.2, "momentum": 0.9, "seed": 1, "batch_size": None},
    ]
    assert plots.config_labels(coords) == ["sgd lr=0.1", "momentum lr=0.1", "momentum lr=0.2"]
