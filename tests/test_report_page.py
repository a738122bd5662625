"""Figures drawn from `Results` only, the self-contained report page, `gdjax report`, and the page in
a real browser (headless Chromium, which `.ci/run` installs when it is missing)."""

import html
import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

import gdjax
import gdjax.study
from gdjax.study import figures, page
from gdjax.study.plots import color_for
from tests.helpers import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def comparison():
    """Three optimizers x learning rates x seeds on least squares (f* known), mini-batch, with a
    held-out metric: what a researcher's Python comparison looks like."""
    X, y = gdjax.data.synthetic(0, 120, 4)[:2]
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    grids = {
        "sgd": {"learning_rate": [0.003, 0.01, 0.03, 0.1, 3.0]},
        "momentum": {"learning_rate": [0.003, 0.01, 0.03], "momentum": [0.5, 0.9]},
        "adam": {"learning_rate": [0.001, 0.01, 0.1]},
    }
    result = gdjax.sweep(
        cost,
        grids,
        gdjax.init_linear(4),
        (X[20:], y[20:]),
        num_steps=120,
        seeds=[0, 1, 2],
        batch_size=10,
        eval_every=10,
        metrics={"test_loss": gdjax.costs.on_data(cost, (X[:20], y[:20]))},
    )
    return gdjax.study.results(result, problem="least_squares", num_examples=100)


def test_every_figure_draws_from_results_with_one_colour_per_optimizer(comparison):
    drawn = figures.draw(comparison)
    assert set(drawn) == set(figures.FIGURES)  # every figure applies to this comparison
    for name, fig in drawn.items():
        for ax in fig.axes:
            legend = ax.get_legend()
            if legend is None:
                continue
            labels = [t.get_text() for t in legend.get_texts()]
            assert len(labels) <= 2 * 3, (name, labels)  # one entry per optimizer (and its defaults)
            for line, label in zip(legend.get_lines(), labels, strict=True):
                optimizer = label.split(" ")[0]
                assert line.get_color() == color_for(optimizer), (name, label)
    # steps or epochs on the axis: these lanes are mini-batch, so epochs
    assert drawn["loss_curves"].axes[0].get_xlabel() == "epoch"
    assert drawn["heatmap"].axes[0].get_title() == "least_squares: momentum"


def test_loss_curves_show_the_median_over_seeds_of_the_best_configuration(comparison):
    fig = figures.draw(comparison, ["loss_curves"])["loss_curves"]
    best = comparison.best_configurations().set_index("optimizer")
    lines = {ln.get_label().split(" ")[0]: ln for ln in fig.axes[0].get_lines()}
    lr = best.loc["adam", "learning_rate"]
    lanes = comparison.lanes[
        (comparison.lanes["optimizer"] == "adam") & (comparison.lanes["learning_rate"] == lr)
    ]
    curves = comparison.curves[comparison.curves["lane"].isin(lanes["lane"])]
    expected = curves.groupby("step")["loss"].median().to_numpy() - lanes["f_star"].iloc[0]
    np.testing.assert_allclose(
        lines["adam"].get_ydata(), np.maximum(expected, np.finfo(float).eps), rtol=1e-12
    )


def test_the_profile_figures_defaults_are_the_scores_defaults(comparison):
    """The dashed defaults lines are measured against the best of all (tuned included), as the page's
    scores are: drawn as their own profile, a line sat at 0.67 where the table said 0."""
    fig = figures.FIGURES["performance_profile"].draw(comparison)
    for ax, eps in zip(fig.axes, figures._EPS_LIST, strict=True):
        both = comparison.performance_profile(eps, unit="epochs", variant="both")
        dashed = [line for line in ax.get_lines() if line.get_label().endswith("(defaults)")]
        assert dashed, "the comparison has default lanes"
        for line in dashed:
            rows = both[
                (both["optimizer"] == line.get_label().split(" ")[0]) & (both["variant"] == "default")
            ]
            np.testing.assert_array_equal(line.get_ydata(), rows["rho"].to_numpy())


def test_divergence_markers_of_two_optimizers_at_one_learning_rate_both_show():
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    grids = {
        "sgd": {"learning_rate": [1e-3, 5.0]},
        "momentum": {"learning_rate": [1e-3, 5.0], "momentum": [0.9]},
    }
    result = gdjax.sweep(cost, grids, gdjax.init_linear(1), (X, y), num_steps=60)
    r = gdjax.study.results(result, problem="houses", num_examples=len(y))
    assert set(r.lanes.loc[r.lanes["learning_rate"] == 5.0, "status"]) == {"diverged"}
    fig = figures.FIGURES["lr_sensitivity"].draw(r)
    marks = [line for line in fig.axes[0].get_lines() if line.get_marker() == "x"]
    assert len(marks) == 2 and [m.get_xdata().tolist() for m in marks] == [[5.0], [5.0]]
    assert marks[0].get_ydata()[0] != marks[1].get_ydata()[0]  # one row each, not one over the other
    assert {m.get_color() for m in marks} == {color_for("sgd"), color_for("momentum")}


def test_a_metric_spanning_orders_of_magnitude_is_drawn_on_a_log_axis():
    """A diverged optimizer's held-out loss (1e30 and up) beside the others' (1e3) on a linear axis
    flattened them at 0."""
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    grids = {"sgd": {"learning_rate": [5.0]}, "momentum": {"learning_rate": [1e-3], "momentum": [0.9]}}
    metrics = {"test_loss": gdjax.costs.on_data(cost, (X, y))}
    result = gdjax.sweep(cost, grids, gdjax.init_linear(1), (X, y), num_steps=60, metrics=metrics)
    r = gdjax.study.results(result, problem="houses", num_examples=len(y))
    (ax,) = figures.FIGURES["metric_curves"].draw(r).axes
    assert ax.get_yscale() == "log"
    calm = gdjax.sweep(cost, {"momentum": grids["momentum"]}, gdjax.init_linear(1), (X, y), num_steps=60,
                       metrics=metrics)  # fmt: skip
    (ax,) = figures.FIGURES["metric_curves"].draw(gdjax.study.results(calm, problem="houses")).axes
    assert ax.get_yscale() == "linear"  # a curve over a narrow range: as it was


def test_best_of_k_of_a_problem_whose_best_found_is_reached_draws_without_a_warning():
    """Against the best found, a problem's only lane has expected value exactly 0: its log axis of
    nothing but zeros warned (from matplotlib, in a plain `gdjax run`) and drew nothing."""
    X, y = gdjax.data.house_prices()
    logistic = gdjax.make_cost(gdjax.linear, gdjax.logistic)
    labels = (y > np.median(y)).astype(float)
    data = (X, labels)
    many = gdjax.sweep(
        logistic, {"sgd": {"learning_rate": [0.01, 0.1]}}, gdjax.init_linear(1), data, num_steps=20
    )
    one = gdjax.sweep(logistic, {"sgd": {"learning_rate": [0.01]}}, gdjax.init_linear(1), data, num_steps=20)
    r = gdjax.study.results_model.merge(
        [
            gdjax.study.results(many, problem="a", num_examples=7),
            gdjax.study.results(one, problem="b", num_examples=7),
        ]
    )
    fig = figures.FIGURES["best_of_k"].draw(r)  # filterwarnings = error: a warning fails the test
    assert all(ax.get_lines() for ax in fig.axes[:2])


def test_unknown_figure_names_the_nearest(comparison):
    with pytest.raises(ValueError, match="did you mean 'loss_curves'"):
        figures.draw(comparison, ["loss_curve"])


def test_report_page_is_self_contained(comparison, tmp_path):
    path = page.write_report(comparison, tmp_path / "rep")
    text = pathlib.Path(path).read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == len(figures.FIGURES)
    assert not re.search(r"(src|href)=[\"']https?:", text), "the page must open offline"
    for heading in (
        "Problems",
        "Best configuration",
        "Scores",
        "Paired comparisons",
        "Figures",
        "Provenance",
    ):
        assert f"<h2>{heading}" in text
    for name in figures.FIGURES:
        assert os.path.isfile(tmp_path / "rep" / "figures" / f"{name}.png")


def test_several_problems_get_each_problems_own_comparison():
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    grids = {"sgd": {"learning_rate": [0.01, 0.02]}, "momentum": {"learning_rate": [0.01], "momentum": [0.9]}}
    parts = []
    for name, scale in (("houses", 1.0), ("houses_scaled", 1e-3)):
        data = (X, y * scale)
        result = gdjax.sweep(
            cost, grids, gdjax.init_linear(1), data, num_steps=40, batch_size=3, seeds=[0, 1, 2]
        )
        parts.append(gdjax.study.results(result, problem=name, num_examples=len(y)))
    both = gdjax.study.results_model.merge(parts)
    html_text, _ = page.render(both)
    assert "The same comparisons on each problem alone" in html_text
    for name in ("houses", "houses_scaled"):
        assert f"<td>{name}</td>" in html_text


def test_gdjax_report_renders_a_finished_run_folder(tmp_path):
    code, _, err = run_cli("run", "--out", tmp_path / "run", "-q", "--no-plots")
    assert code == 0, err
    code, out, err = run_cli("report", tmp_path / "run", "--out", tmp_path / "rep")
    assert code == 0, err
    assert "report: " in out and os.path.isfile(tmp_path / "rep" / "report.html")
    # No best optimizer, and why (the page says the same).
    reason = next(line for line in out.splitlines() if line.startswith("No best optimizer: "))
    assert "cannot give a p-value below" in reason
    page_text = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert f'<p class="note">{html.escape(reason)}</p>' in page_text
    code, _, err = run_cli("report", tmp_path / "missing")
    assert code == 2 and err.count("\n") == 1 and "no such folder" in err


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (.ci/run installs it)")
def test_the_page_loads_in_a_real_browser_with_every_figure_visible(comparison, tmp_path):
    path = page.write_report(comparison, tmp_path / "rep")
    proc = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
            f"file://{os.path.abspath(path)}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)
    shown = int(re.search(r'data-figures-loaded="(\d+)"', body).group(1))
    assert shown == int(re.search(r'data-figures="(\d+)"', body).group(1)) == len(figures.FIGURES)
    errors = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not errors, errors
