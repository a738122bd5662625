"""Progress reports from inside the compiled loop (`gdjax.progress`) and the tqdm bars that show them."""

import io
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import count_compilations

import gdjax
from gdjax import Execution, progress, rules

COST = gdjax.make_cost(gdjax.linear, gdjax.mse)


@pytest.fixture
def problem():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    return gdjax.init_linear(3), (X, X @ np.array([1.0, -2.0, 0.5]) + 0.3)


def _counter():
    seen = []
    return seen, Execution(step_progress=lambda done, n: seen.append((done, n)), progress_every=50)


# num_steps, eval_every, progress_every -> the reports' step counts: every whole number of intervals
# in progress_every, and the last step. 235 has a short last interval (the loop's ragged path).
REPORTS = [
    (230, 10, 50, [50, 100, 150, 200, 230]),
    (235, 10, 50, [50, 100, 150, 200, 235]),
    (230, 10, 55, [50, 100, 150, 200, 230]),  # rounded down to whole intervals
    (30, 10, 1, [10, 20, 30]),  # at least one interval
]


@pytest.mark.parametrize("num_steps, eval_every, every, expected", REPORTS)
def test_run_reports_every_interval_and_the_last_step(problem, num_steps, eval_every, every, expected):
    p0, data = problem
    seen = []
    execution = Execution(step_progress=lambda done, n: seen.append((done, n)), progress_every=every)
    gdjax.run(
        COST, rules.sgd(0.05), p0, data, num_steps=num_steps, eval_every=eval_every, execution=execution
    )
    assert seen == [(d, num_steps) for d in expected]


def test_default_interval_makes_about_fifty_reports(problem):
    p0, data = problem
    seen = []
    execution = Execution(step_progress=lambda done, n: seen.append(done))
    gdjax.run(COST, rules.sgd(0.05), p0, data, num_steps=1000, eval_every=1, execution=execution)
    assert seen == list(range(20, 1001, 20))


def test_results_are_bit_identical_with_progress_on_and_off(problem, key):
    p0, data = problem
    seen, on = _counter()
    args = dict(num_steps=235, eval_every=10, batch_size=16, key=key)
    a = gdjax.run(COST, rules.adam(0.05), p0, data, **args)
    b = gdjax.run(COST, rules.adam(0.05), p0, data, execution=on, **args)
    assert seen
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_a_sweep_reports_once_per_interval_not_per_lane(problem):
    p0, data = problem
    seen, on = _counter()
    args = dict(grid={"learning_rate": [0.01, 0.02, 0.05]}, num_steps=230, eval_every=10, batch_size=16)
    a = gdjax.sweep(COST, "sgd", p0, data, seeds=[0, 1], **args)
    b = gdjax.sweep(COST, "sgd", p0, data, seeds=[0, 1], execution=on, **args)
    assert seen == [(d, 230) for d in (50, 100, 150, 200, 230)]  # 6 lanes, one report each time
    for x, y in zip(jax.tree.leaves(a.trace), jax.tree.leaves(b.trace), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    seen.clear()
    gdjax.sweep(COST, "sgd", p0, data, seeds=[0, 1], execution=on, chunk_size=4, **args)
    assert [d for d, _ in seen] == [50, 100, 150, 200, 230] * 2  # one program call per chunk


def test_a_new_learning_rate_does_not_recompile_with_progress_on(problem):
    p0, data = problem
    seen, on = _counter()
    gdjax.run(COST, rules.sgd(0.01), p0, data, num_steps=100, eval_every=10, execution=on)
    with count_compilations() as c:
        gdjax.run(COST, rules.sgd(0.02), p0, data, num_steps=100, eval_every=10, execution=on)
        gdjax.run(COST, rules.sgd(0.03), p0, data, num_steps=100, eval_every=10, execution=on)
    assert c.count == 0
    assert len(seen) == 3 * 2  # each call reported (progress_every=50: steps 50 and 100)


def test_bars_draw_on_a_terminal_only():
    stream = io.StringIO()
    bars = progress.Bars(stream, enabled=True)
    bars("adam", 0, 4)
    bars.steps(50, 100)
    bars("adam", 4, 4)
    bars.close()
    text = stream.getvalue()
    # tqdm redraws at most every 0.1 s: the lane bar's end and the step bar's start are drawn
    assert "adam: 100%" in text and "4/4" in text and "steps:" in text and "/100" in text
    for enabled in (None, False):  # None: tqdm's own test, and a StringIO is not a terminal
        quiet = io.StringIO()
        bars = progress.Bars(quiet, enabled=enabled)
        bars("adam", 1, 2)
        bars.steps(1, 2)
        bars.close()
        assert quiet.getvalue() == "" and not bars.active


def test_progress_true_runs_with_bars(problem, capsys):
    p0, data = problem
    a = gdjax.run(COST, rules.sgd(0.05), p0, data, num_steps=30, execution=Execution(progress=True))
    b = gdjax.run(COST, rules.sgd(0.05), p0, data, num_steps=30)
    np.testing.assert_array_equal(np.asarray(a.loss_history), np.asarray(b.loss_history))
    assert capsys.readouterr().err == ""  # pytest's stderr is not a terminal: tqdm stays silent


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(progress="yes"), "progress must be True"),
        (dict(step_progress=3), "step_progress must be a callable"),
        (dict(progress_every=0), "progress_every"),
    ],
)
def test_bad_progress_settings_are_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Execution(**kwargs)


def test_import_gdjax_and_a_quiet_sweep_do_not_load_tqdm():
    code = (
        "import sys, numpy as np, gdjax\n"
        "assert 'tqdm' not in sys.modules\n"
        "X = np.ones((8, 2)); cost = gdjax.make_cost(gdjax.linear, gdjax.mse)\n"
        "grid = {'learning_rate': [0.1]}\n"
        "gdjax.sweep(cost, 'sgd', gdjax.init_linear(2), (X, X[:, 0]), grid=grid, num_steps=3)\n"
        "assert 'tqdm' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_sharded_sweep_reports_once_per_interval():
    code = (
        "import jax, numpy as np, gdjax\n"
        "assert len(jax.devices()) == 2\n"
        "X = np.random.default_rng(0).normal(size=(64, 3)); y = X @ np.ones(3)\n"
        "cost = gdjax.make_cost(gdjax.linear, gdjax.mse)\n"
        "seen = []\n"
        "ex = gdjax.Execution(step_progress=lambda d, n: seen.append(d), progress_every=10)\n"
        "args = dict(grid={'learning_rate': [0.01, 0.02, 0.03, 0.05]}, num_steps=30, eval_every=10,\n"
        "            batch_size=8, seeds=[0, 1])\n"
        "a = gdjax.sweep(cost, 'sgd', gdjax.init_linear(3), (X, y), execution=ex, **args)\n"
        "b = gdjax.sweep(cost, 'sgd', gdjax.init_linear(3), (X, y), **args)\n"
        "assert len(a.sharding.device_set) == 2, a.sharding\n"
        "assert seen == [10, 20, 30], seen\n"
        "np.testing.assert_array_equal(a.trace.loss_history, b.trace.loss_history)\n"
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
