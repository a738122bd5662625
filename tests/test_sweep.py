"""Tests of `gdjax.sweep`: a grid of runs as one compiled, vmapped, device-sharded program.

The oracle for every lane is the same configuration run alone with `gdjax.loop.run` (its rule built by
`gdjax.rules.get` from the lane's coordinates, its start perturbed by a re-implementation of the
documented init-noise formula), so the sweep cannot influence what it is compared against.
"""

import csv
import dataclasses
import functools
import itertools
import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from helpers import atol, count_compilations, rtol

import gdjax
from gdjax import loop, rules
from gdjax.costs import gram_mse, gram_statistics
from gdjax.options import Execution, Stopping
from gdjax.sweep import (
    NOISE_FOLD,
    TOLERANCE_NAMES,
    GridError,
    Starts,
    SweepInterrupted,
    SweepResult,
    Zip,
    sweep,
)

COST = gdjax.make_cost(gdjax.linear, gdjax.mse)
# A lane must equal its run alone to 1e-10 relative in float64: vmap may only reorder sums. Gradient
# norms near an optimum are tiny differences of large terms, hence the absolute floor.
LANE_RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): rtol(np.float32)}

PROBLEMS = {
    "synthetic": tuple(gdjax.data.synthetic(0, 64, 3)[:2]),  # 2/L = 0.783, f* = 0.0120
    "house": gdjax.data.house_prices(),
}
START_STACK = {"w": np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]]), "b": np.array([0.0, 2.0])}
COORD_KEYS = ("rule", "seed", "start", "batch_size")

# Each row: the problem, the sweep's arguments, and the statuses its lanes must end with. The rows
# share problem shapes and step counts so that the tests below reuse their compiled programs (on a
# small CPU an XLA compilation costs seconds; a lane's run costs microseconds).
LANE_CASES = {
    "sgd-diverging-nonfinite-tolerance-axes": dict(
        problem="synthetic",
        args=dict(
            rule="sgd",
            grid={"learning_rate": [0.05, 0.5, 1e5], "tol": [1e-6, None], "divergence_factor": [100.0, None]},
            num_steps=40,
            stopping=Stopping(divergence_patience=1),  # flag at the first evaluation above the threshold
        ),
        statuses={"max_steps", "converged", "diverged", "nonfinite"},
    ),
    "house-prices-sgd-around-2-over-L": dict(
        problem="house",
        args=dict(
            rule="sgd",
            grid={"learning_rate": [0.01, 0.05, 0.08, 0.09]},
            num_steps=40,
            stopping=Stopping(divergence_patience=1),
        ),
        statuses={"max_steps", "diverged"},
    ),
    "momentum-product-seeds-starts-noise": dict(
        problem="synthetic",
        args=dict(
            rule="momentum",
            grid={"learning_rate": [0.01, 0.1], "momentum": [0.0, 0.9]},
            num_steps=40,
            params0=Starts(START_STACK, init_noise=0.5),
            seeds=[3, 4],
        ),
        statuses={"max_steps"},
    ),
    "sgd-minibatch-seeds-batch-size-list": dict(
        problem="synthetic",
        args=dict(
            rule="sgd",
            grid={"learning_rate": [0.05, 2.0]},
            num_steps=40,
            seeds=[0, 1, 2],
            batch_size=[8, None],
            eval_every=1,  # lanes of several batch sizes stack on one evaluation schedule
            stopping=Stopping(divergence_patience=1),
        ),
        statuses={"max_steps", "diverged"},
    ),
    "multi-rule-sgd-adam": dict(
        problem="synthetic",
        args=dict(
            rule={
                "sgd": {"learning_rate": [0.05, 0.5]},
                "adam": {"learning_rate": [0.01, 0.1], "b1": 0.8, "patience": [2, 1000]},
            },
            num_steps=40,
            stopping=Stopping(min_delta=1e-3),
        ),
        statuses={"max_steps", "converged"},
    ),
    "factory-zip-schedule-record-every": dict(
        problem="synthetic",
        args=dict(
            rule=rules.momentum,
            grid=Zip(
                {
                    "learning_rate": [0.01, 0.02, 0.05],
                    "momentum": [0.0, 0.5, 0.8],
                    "schedule": "inverse_time",
                    "decay_rate": 0.01,
                }
            ),
            num_steps=43,
            execution=Execution(record_every=5),
        ),
        statuses={"max_steps"},
    ),
    "optax-lamb-float32": dict(
        problem="synthetic",
        dtype=np.float32,  # grid values must reach the rule state as a Python float would
        args=dict(rule="optax.lamb", grid={"learning_rate": [0.01, 0.1], "b2": 0.99}, num_steps=40),
        statuses={"max_steps"},
    ),
}


def _problem(row):
    X, y = PROBLEMS[row["problem"]]
    return X, y, gdjax.init_linear(X.shape[1], row.get("dtype", np.float64))


def _sweep_row(row, **overrides) -> SweepResult:
    X, y, params0 = _problem(row)
    return sweep(COST, **{"params0": params0, "data": (X, y), **row["args"], **overrides})


@functools.cache
def _result(name: str) -> SweepResult:
    """The sweep of LANE_CASES[name], computed once for every test that reads it."""
    return _sweep_row(LANE_CASES[name])


def _noisy(start, seed, sigma):
    """The documented init-noise formula, re-implemented: leaf + sigma * normal(k_i)."""
    leaves, treedef = jax.tree.flatten(start)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), NOISE_FOLD), len(leaves))
    return jax.tree.unflatten(
        treedef,
        [x + sigma * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)],
    )


def _run_alone(row, coords) -> gdjax.Trace:
    """The lane's configuration as one `gdjax.loop.run` call."""
    X, y, params0 = _problem(row)
    args = row["args"]
    hyper = {k: v for k, v in coords.items() if k not in COORD_KEYS and k not in TOLERANCE_NAMES}
    stopping = dataclasses.replace(
        args.get("stopping", Stopping()), **{k: v for k, v in coords.items() if k in TOLERANCE_NAMES}
    )
    starts = args.get("params0")
    start = params0
    if coords["start"] is not None:
        start = jax.tree.map(lambda s: s[coords["start"]], starts.points)
    if isinstance(starts, Starts) and starts.init_noise:
        start = _noisy(jax.tree.map(np.asarray, start), coords["seed"], starts.init_noise)
    return loop.run(
        COST,
        rules.get(coords["rule"], **hyper),
        start,
        (X, y),
        num_steps=args["num_steps"],
        batch_size=coords["batch_size"],
        key=coords["seed"],
        eval_every=args.get("eval_every"),
        stopping=stopping,
        execution=args.get("execution"),
    )


def _assert_traces_equal(got, want, rel, abs_=0.0):
    for field in ("params", "loss_history", "params_history", "grad_norm_history"):
        pairs = zip(jax.tree.leaves(getattr(got, field)), jax.tree.leaves(getattr(want, field)), strict=True)
        for a, b in pairs:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rel, atol=abs_, err_msg=field)
    for field in ("steps", "status", "stop_step"):
        np.testing.assert_array_equal(
            np.asarray(getattr(got, field)), np.asarray(getattr(want, field)), field
        )


def _f64_tolerances():
    return LANE_RTOL[np.dtype(np.float64)], atol(np.float64)


@pytest.mark.parametrize("name", list(LANE_CASES))
def test_every_lane_equals_the_run_alone(name):
    row = LANE_CASES[name]
    result = _result(name)
    dtype = np.dtype(row.get("dtype", np.float64))
    num_steps = row["args"]["num_steps"]
    assert result.trace.loss_history.shape == (result.num_lanes, num_steps + 1)
    assert result.trace.loss_history.dtype == dtype
    for i, coords in enumerate(result.coords):
        _assert_traces_equal(result.lane(i), _run_alone(row, coords), LANE_RTOL[dtype], atol(dtype))
    assert set(result.trace.status_name()) == row["statuses"]


# Lane order: rules in order, then batch sizes, then the grid product (first key slowest), then
# seeds, then starts.
LANE_ORDER = {
    "momentum-product-seeds-starts-noise": (
        ("learning_rate", "momentum", "seed", "start"),
        list(itertools.product([0.01, 0.1], [0.0, 0.9], [3, 4], [0, 1])),
    ),
    "sgd-minibatch-seeds-batch-size-list": (
        ("batch_size", "learning_rate", "seed"),
        list(itertools.product([8, None], [0.05, 2.0], [0, 1, 2])),
    ),
    "multi-rule-sgd-adam": (
        ("rule", "learning_rate", "b1", "patience"),
        [("sgd", 0.05, None, None), ("sgd", 0.5, None, None)]
        + [("adam", lr, 0.8, p) for lr in (0.01, 0.1) for p in (2, 1000)],
    ),
    "factory-zip-schedule-record-every": (
        ("rule", "learning_rate", "momentum", "schedule", "seed", "start"),
        [
            ("momentum", lr, m, "inverse_time", None, None)
            for lr, m in [(0.01, 0.0), (0.02, 0.5), (0.05, 0.8)]
        ],
    ),
}


@pytest.mark.parametrize("name", list(LANE_ORDER))
def test_lane_coordinates_and_order(name):
    keys, want = LANE_ORDER[name]
    result = _result(name)
    assert [tuple(c.get(k) for k in keys) for c in result.coords] == want
    rule = LANE_CASES[name]["args"]["rule"]
    grids = list(rule.values()) if isinstance(rule, dict) else [LANE_CASES[name]["args"]["grid"]]
    assert result.hyperparameter_names == tuple(dict.fromkeys(k for g in grids for k in g))


# ----------------------------------------------------------------------------------- compilation
# A second sweep with new values of the same sizes reuses the compiled programs of LANE_CASES.
NEW_VALUES = {
    "sgd-diverging-nonfinite-tolerance-axes": dict(
        grid={"learning_rate": [0.07, 0.4, 2e5], "tol": [1e-7, 1e-3], "divergence_factor": [10.0, None]}
    ),
    "sgd-minibatch-seeds-batch-size-list": dict(grid={"learning_rate": [0.02, 0.3]}, seeds=[5, 6, 7]),
    "multi-rule-sgd-adam": dict(
        rule={
            "sgd": {"learning_rate": [0.1, 0.2]},
            "adam": {"learning_rate": [0.02, 0.3], "b1": 0.5, "patience": [3, 4]},
        }
    ),
    "optax-lamb-float32": dict(grid={"learning_rate": [0.03, 0.3], "b2": 0.9}),
    "momentum-product-seeds-starts-noise": dict(
        grid={"learning_rate": [0.03, 0.04], "momentum": [0.1, 0.2]},
        seeds=[8, 9],
        params0=Starts(START_STACK, init_noise=2.0),
    ),
}


@pytest.mark.parametrize("name", list(NEW_VALUES))
def test_new_values_do_not_recompile(name):
    _result(name)  # compiles (once per session)
    with count_compilations() as counter:
        result = _sweep_row(LANE_CASES[name], **NEW_VALUES[name])
    assert counter.count == 0
    assert result.compile_seconds == 0.0
    assert result.num_lanes == _result(name).num_lanes


# ------------------------------------------------------------------------------------- summaries
SUMMARY_KEYS = ["lane", "rule", "learning_rate", "tol", "divergence_factor", "seed", "start", "batch_size"]
SUMMARY_KEYS += ["final_loss", "suboptimality", "steps_to_target", "status", "steps", "stop_step"]


def test_summary_rows_keys_statuses_and_targets():
    result = _result("sgd-diverging-nonfinite-tolerance-axes")
    X, y = PROBLEMS["synthetic"]
    f_star = gdjax.reference.least_squares(X, y, full_output=True).f_star
    target = 1e-3
    table = result.summary(target=target)
    losses = result.trace.loss_history
    assert len(table) == result.num_lanes == 12
    for i, r in enumerate(table):
        assert list(r) == SUMMARY_KEYS
        assert (r["lane"], r["rule"]) == (i, "sgd")
        assert r["final_loss"] == float(losses[i, -1])
        assert r["suboptimality"] == float(losses[i, -1]) - f_star
        reached = np.flatnonzero(losses[i] - f_star <= target)
        assert r["steps_to_target"] == (int(reached[0]) if reached.size else None)
        assert r["steps"] == int(result.trace.steps[i])
        assert (r["stop_step"] is None) == (r["status"] == "max_steps")
    statuses = [r["status"] for r in table]
    assert (
        statuses
        == ["max_steps"] * 4
        + ["converged", "converged", "max_steps", "max_steps"]
        + [
            "diverged",
            "nonfinite",
        ]
        * 2
    )
    assert [r["steps_to_target"] is not None for r in table][4:8] == [True] * 4
    assert all(r["steps_to_target"] is None for r in result.summary())
    lines = str(table).splitlines()
    assert lines[0].split() == SUMMARY_KEYS and len(lines) == 2 + 12 and "nonfinite" in lines[-1]


def test_summary_without_f_star_targets_the_loss():
    result = _result("sgd-diverging-nonfinite-tolerance-axes").with_f_star(None)
    table = result.summary(target=0.02)
    assert {r["suboptimality"] for r in table} == {None}
    losses = result.trace.loss_history
    best_found = np.nanmin(np.where(np.isfinite(losses), losses, np.nan))
    for i, r in enumerate(table):
        assert r["suboptimality_vs_best"] == float(result.trace.loss_history[i, -1]) - best_found
    for i, r in enumerate(table):
        reached = np.flatnonzero(result.trace.loss_history[i] <= 0.02)
        assert r["steps_to_target"] == (int(reached[0]) if reached.size else None)
    assert [r["steps_to_target"] is None for r in table] == [False] * 8 + [True] * 4


def test_f_star_is_computed_for_least_squares_or_given():
    X, y = PROBLEMS["synthetic"]
    assert _result("multi-rule-sgd-adam").f_star == gdjax.reference.optimal_cost(X, y)
    given = _sweep_row(LANE_CASES["multi-rule-sgd-adam"]).with_f_star(0.5)
    assert [r["suboptimality"] for r in given.summary()] == [r["final_loss"] - 0.5 for r in given.summary()]


def test_summary_table_writes_csv_and_json(tmp_path):
    table = _result("sgd-diverging-nonfinite-tolerance-axes").summary(target=1e-3)
    table.to_csv(tmp_path / "summary.csv")
    table.to_json(tmp_path / "summary.json")
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows] == [list(t) for t in table]
    assert [float(r["final_loss"]) for r in rows] == [r["final_loss"] for r in table]
    assert {r["seed"] for r in rows} == {""}
    loaded = json.loads((tmp_path / "summary.json").read_text())
    assert [r["status"] for r in loaded] == [r["status"] for r in table]
    assert [r["final_loss"] for r in loaded][-1] == "inf"  # JSON has no infinity
    assert sorted(os.listdir(tmp_path)) == ["summary.csv", "summary.json"]  # no temporary files left


@pytest.mark.parametrize("name", list(LANE_CASES))
def test_best_lane_per_rule_skips_diverged_lanes(name):
    result = _result(name)
    best = result.best()
    rules_in_order = list(dict.fromkeys(c["rule"] for c in result.coords))
    assert [r["rule"] for r in best] == rules_in_order
    status = np.asarray(result.trace.status)
    ok = (status != gdjax.Status.DIVERGED) & (status != gdjax.Status.NONFINITE)
    for r in best:
        lanes = [i for i in result.select(rule=r["rule"]) if ok[i]]
        want = lanes[int(np.argmin(result.trace.loss_history[lanes, -1]))]  # argmin: first of ties
        assert r["lane"] == want
        assert r == result.summary()[want]


def test_best_ties_go_to_the_lowest_lane_and_rank_by_any_column():
    result = _result("sgd-diverging-nonfinite-tolerance-axes")
    losses = result.trace.loss_history[:, -1]
    assert losses[6] == losses[7] < losses[4]  # lr 0.5 without tol: two identical lanes
    assert [r["lane"] for r in result.best()] == [6]
    # Every finite lane is within 1e300 of f* at step 0: a 12-way tie.
    assert [r["lane"] for r in result.best(by="steps_to_target", target=1e300)] == [0]
    assert [r["lane"] for r in result.best(by="steps")] == [4]
    with pytest.raises(ValueError, match="did you mean 'final_loss'"):
        result.best(by="final_los")


AGGREGATES = {
    "over-seed": ("sgd-minibatch-seeds-batch-size-list", "seed", ("batch_size", "learning_rate"), 3),
    "over-seed-and-start": (
        "momentum-product-seeds-starts-noise",
        ("seed", "start"),
        ("learning_rate", "momentum"),
        4,
    ),
}


@pytest.mark.parametrize("case", list(AGGREGATES.values()), ids=list(AGGREGATES))
def test_aggregate(case):
    name, over, by, size = case
    result = _result(name)
    table = result.aggregate(over=over)
    assert len(table) == result.num_lanes // size
    for r in table:
        lanes = result.select(**{k: r[k] for k in by})
        finals = result.trace.loss_history[lanes, -1]
        status = [str(gdjax.Status(int(s))) for s in result.trace.status[lanes]]
        assert r["count"] == size == len(lanes)
        assert r["final_loss_mean"] == pytest.approx(float(np.mean(finals)), rel=1e-14)
        assert r["final_loss_std"] == pytest.approx(float(np.std(finals, ddof=1)), rel=1e-12)
        assert (r["final_loss_min"], r["final_loss_max"]) == (float(finals.min()), float(finals.max()))
        assert r["suboptimality_mean"] == pytest.approx(r["final_loss_mean"] - result.f_star, rel=1e-12)
        assert {s: r[s] for s in ("max_steps", "converged", "diverged", "nonfinite")} == {
            s: status.count(s) for s in ("max_steps", "converged", "diverged", "nonfinite")
        }
        assert not set([over] if isinstance(over, str) else over) & set(r)


def test_aggregate_rejects_unknown_coordinates():
    with pytest.raises(ValueError, match="did you mean 'seed'"):
        _result("sgd-minibatch-seeds-batch-size-list").aggregate(over="seeds")


def test_select_and_lane():
    result = _result("momentum-product-seeds-starts-noise")
    assert result.select(learning_rate=0.1, momentum=0.9, seed=4) == [14, 15]
    assert result.select(start=1, seed=3, momentum=0.0) == [1, 9]
    np.testing.assert_array_equal(result.lane(15).loss_history, result.trace.loss_history[15])
    with pytest.raises(ValueError, match="did you mean 'momentum'"):
        result.select(momentun=0.5)
    with pytest.raises(ValueError, match="out of range"):
        result.lane(16)


# ------------------------------------------------------------------------------ chunks and memory
# The mini-batch group of LANE_CASES["sgd-minibatch-seeds-batch-size-list"]: 6 lanes, compiled once.
CHUNKED = dict(
    rule="sgd",
    grid={"learning_rate": [0.05, 2.0]},
    num_steps=40,
    seeds=[0, 1, 2],
    batch_size=8,
    eval_every=1,
    stopping=Stopping(divergence_patience=1),
)
NINE_LANES = {"learning_rate": [0.05, 2.0, 0.1]}  # chunks of 6: one full, one padded from 3


def _chunked(**overrides) -> SweepResult:
    X, y, p0 = _problem({"problem": "synthetic"})
    return sweep(COST, params0=p0, data=(X, y), **{**CHUNKED, **overrides})


def test_chunks_equal_one_call_reuse_one_program_and_report_progress():
    whole = _chunked()
    calls = []
    with count_compilations() as counter:
        chunked = _chunked(
            grid=NINE_LANES,
            chunk_size=6,
            execution=Execution(progress=lambda done, total: calls.append((done, total))),
        )
    assert counter.count == 0  # the padded last chunk runs the program of the full one
    assert calls == [(6, 9), (9, 9)]
    assert chunked.coords[:6] == whole.coords
    _assert_traces_equal(jax.tree.map(lambda x: x[:6], chunked.trace), whole.trace, *_f64_tolerances())
    row = {"problem": "synthetic", "args": {**CHUNKED, "grid": NINE_LANES}}
    for i in range(6, 9):
        _assert_traces_equal(chunked.lane(i), _run_alone(row, chunked.coords[i]), *_f64_tolerances())


@pytest.mark.parametrize(
    ("args", "batch_from_evals"),
    [
        (dict(num_steps=37), True),  # full batch, an evaluation every step: batch losses are the losses
        # mini-batches (batch losses written by each lane), iterates at every other evaluation
        (
            dict(
                num_steps=37, batch_size=8, seeds=[0, 1], eval_every=5, execution=Execution(record_every=10)
            ),
            False,
        ),
    ],
)
def test_histories_leave_the_device_with_the_lanes_second(args, batch_from_evals):
    """Issue 21 item 4: the loop writes each history as `(time, lanes)`; the program returns it so
    (moving the lanes first made XLA transpose every history after the loop) and the host presents
    `(lanes, time)` as a NumPy view. Batch losses that are the evaluations' losses are a view of the
    loss history, not a second output. Every lane still equals its run alone, batch losses included."""
    X, y, p0 = _problem({"problem": "synthetic"})
    grid = {"learning_rate": [0.01, 0.02, 0.05]}
    result = sweep(COST, "sgd", p0, (X, y), grid=grid, **args)
    lanes, evals = result.num_lanes, result.eval_steps.size
    assert result.trace.loss_history.shape == (lanes, evals)
    # The device's layout: time first (a view keeps the buffer's strides), lanes first for finals.
    assert result.trace.loss_history.strides[0] < result.trace.loss_history.strides[1]
    assert result.trace.params["w"].strides[0] > result.trace.params["w"].strides[1]
    batch = result.trace.batch_loss_history
    assert batch.shape == (lanes, args["num_steps"])
    assert np.shares_memory(batch, result.trace.loss_history) == batch_from_evals
    row = {"problem": "synthetic", "args": {"rule": "sgd", "grid": grid, **args}}
    for i, coords in enumerate(result.coords):
        alone = _run_alone(row, coords)
        _assert_traces_equal(result.lane(i), alone, *_f64_tolerances())
        np.testing.assert_allclose(
            result.lane(i).batch_loss_history, alone.batch_loss_history, *_f64_tolerances()
        )


def test_a_failing_chunk_keeps_the_completed_lanes():
    whole = _chunked()

    def progress(done, total):
        raise KeyError("stop after the first chunk")

    with pytest.raises(SweepInterrupted, match="after 6 of 9 lanes") as info:
        _chunked(grid=NINE_LANES, chunk_size=6, execution=Execution(progress=progress))
    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value.__cause__, KeyError)
    partial = info.value.partial
    assert partial.num_lanes == 6 and partial.coords == whole.coords
    _assert_traces_equal(partial.trace, whole.trace, *_f64_tolerances())


def test_too_large_a_sweep_raises_before_compiling_and_suggests_a_chunk_size():
    with count_compilations() as counter, pytest.raises(ValueError, match="memory_budget") as info:
        _chunked(grid=NINE_LANES, execution=Execution(memory_budget=1000))
    assert counter.count == 0
    per_lane = int(re.search(r"\((\d+) bytes per lane\)", str(info.value)).group(1))
    budget = 6 * per_lane + 1
    with pytest.raises(ValueError, match=r"pass chunk_size=6\b"):
        _chunked(grid=NINE_LANES, execution=Execution(memory_budget=budget))
    with pytest.raises(ValueError, match="chunks of 7 lanes"):
        _chunked(grid=NINE_LANES, execution=Execution(memory_budget=budget), chunk_size=7)
    assert _chunked(grid=NINE_LANES, execution=Execution(memory_budget=budget), chunk_size=6).num_lanes == 9


# ----------------------------------------------------------------------------------- gram fast path
@pytest.mark.parametrize(
    "name", ["sgd-diverging-nonfinite-tolerance-axes", "house-prices-sgd-around-2-over-L"]
)
def test_gram_fast_path_follows_the_same_trajectories(name):
    fast = _sweep_row(LANE_CASES[name], execution=Execution(layout="gram"))
    assert fast.coords == _result(name).coords
    _assert_traces_equal(fast.trace, _result(name).trace, rtol(np.float64), atol(np.float64))


def test_gram_cost_equals_the_mse_cost():
    X, y = PROBLEMS["synthetic"]
    params = {"w": np.array([0.3, -1.0, 2.0]), "b": np.float64(0.7)}
    stats = gram_statistics(X, y)
    value, grads = jax.jit(jax.value_and_grad(gram_mse))(params, stats)
    assert float(value) == pytest.approx(gdjax.reference.mse_cost(params, (X, y)), rel=1e-12)
    want = gdjax.reference.mse_grad(params, (X, y))
    for k in ("w", "b"):
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-12)


# ----------------------------------------------------------------------------------- bad input
_P0 = _problem({"problem": "synthetic"})[2]


def _bad(**overrides):
    X, y, p0 = _problem({"problem": "synthetic"})
    base = dict(
        cost=COST, rule="sgd", params0=p0, data=(X, y), grid={"learning_rate": [0.1, 0.2]}, num_steps=10
    )
    return {**base, **overrides}


BAD_INPUTS = {
    "empty-grid": (_bad(grid={}), "grid of rule 'sgd' is empty"),
    "zero-length-array": (_bad(grid={"learning_rate": []}), r"grid\['learning_rate'\] is empty"),
    "2-d-array": (_bad(grid={"learning_rate": [[0.1, 0.2]]}), "1-D"),
    "list-of-schedules": (
        _bad(grid={"learning_rate": [0.1], "schedule": ["constant", "inverse_sqrt"]}),
        "one value per sweep",
    ),
    "schedule-missing-its-value": (
        _bad(grid={"learning_rate": [0.1], "schedule": "exponential_decay"}),
        "needs decay_rate",
    ),
    "key-the-rule-does-not-take": (_bad(grid={"learnig_rate": [0.1]}), "did you mean 'learning_rate'"),
    "key-of-another-rule": (
        _bad(grid={"learning_rate": [0.1], "momentum": [0.9]}),
        r"hyperparameters are \['learning_rate'\]",
    ),
    "zip-mismatched-lengths": (
        _bad(rule="momentum", grid=Zip({"learning_rate": [0.1, 0.2], "momentum": [0.9]})),
        "one length",
    ),
    "non-positive-learning-rate": (_bad(grid={"learning_rate": [0.1, 0.0]}), "must be > 0"),
    "nan-value": (_bad(grid={"learning_rate": [0.1, float("nan")]}), "finite"),
    "value-the-rule-rejects": (
        _bad(rule="momentum", grid={"learning_rate": [0.1], "momentum": [0.5, 1.5]}),
        r"grid\['momentum'\] = 1.5",
    ),
    "first-bad-value-of-a-long-axis": (
        _bad(rule="momentum", grid={"learning_rate": [0.1], "momentum": [0.5, 0.9, 1.5, 0.2, 2.0]}),
        r"grid\['momentum'\] = 1.5",
    ),
    "bad-optax-value-inside-a-long-axis": (
        _bad(rule="optax.adam", grid={"learning_rate": [0.1, 0.2, -0.3, 0.4, -0.5]}),
        r"learning_rate.*-0.3",
    ),
    "unknown-rule": (_bad(rule="sgdd"), "unknown rule 'sgdd'"),
    "unknown-optax-rule": (_bad(rule="optax.lamm"), "did you mean 'optax.lamb'"),
    "optax-factory-bakes-values": (_bad(rule=optax.sgd), "optax.<name>"),
    "built-transformation": (_bad(rule=optax.sgd(0.1)), "baked in"),
    "rule-and-rules": (_bad(rule={"sgd": {"learning_rate": [0.1]}}), "not both"),
    "no-rule": (_bad(rule=None), "rule is None"),
    "tolerance-given-twice": (_bad(grid={"learning_rate": [0.1], "tol": [1e-3]}, tol=1e-4), "give it once"),
    "bad-tolerance-value": (_bad(grid={"learning_rate": [0.1], "tol": [1e-3, -1.0]}), "tol"),
    "minibatch-without-seeds": (_bad(batch_size=8), "pass seeds="),
    "noise-without-seeds": (
        _bad(params0=Starts(_P0, init_noise=0.1, stacked=False)),
        "init_noise needs seeds",
    ),
    "empty-seeds": (_bad(seeds=[]), "seeds is empty"),
    "batch-larger-than-data": (_bad(batch_size=100, seeds=[0]), "larger than the data"),
    "starts-without-leading-axis": (
        _bad(params0=Starts({"w": np.zeros(3), "b": np.float64(0.0)})),
        "leading",
    ),
    "gram-other-cost": (
        _bad(cost=gdjax.costs.quadratic, execution=Execution(layout="gram")),
        "layout='gram' .* needs a cost that offers it",
    ),
    "gram-minibatch": (_bad(batch_size=8, seeds=[0], execution=Execution(layout="gram")), "mini-batches"),
    "too-large": (_bad(execution=Execution(memory_budget=2000)), "chunk_size=1"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS.values()), ids=list(BAD_INPUTS))
def test_bad_input_raises_before_compiling(case):
    kwargs, message = case
    with count_compilations() as counter, pytest.raises(ValueError, match=message):
        sweep(**kwargs)
    assert counter.count == 0


# ------------------------------------------------------------------------------------- devices
_SHARDED_SCRIPT = """
import sys

import jax
import numpy as np

jax.config.update("jax_numpy_rank_promotion", "raise")
import gdjax
from gdjax.options import Stopping
from gdjax.sweep import sweep

X, y = gdjax.data.synthetic(0, 64, 3)[:2]
cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
result = sweep(cost, "sgd", gdjax.init_linear(3), (X, y), **eval(sys.argv[2]))
padded_lanes = 8  # 6 lanes padded to a multiple of 4 devices
np.savez(
    sys.argv[1],
    devices=len(jax.devices()),
    x64=jax.config.jax_enable_x64,
    sharded_over=len(result.sharding.device_set),
    lanes_per_device=result.sharding.shard_shape((padded_lanes, 41))[0],
    **{f"leaf{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(result.trace))},
)
"""


@pytest.mark.slow
def test_lanes_shard_over_four_cpu_devices(tmp_path):
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_ENABLE_X64="1",
        JAX_PLATFORMS="cpu",
    )
    out = tmp_path / "sharded.npz"
    kwargs = {k: v for k, v in CHUNKED.items() if k != "rule"}
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_SCRIPT, str(out), repr(kwargs)],
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # `python -c` imports this gdjax
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    got = np.load(out)
    assert (int(got["devices"]), bool(got["x64"])) == (4, True)
    assert (int(got["sharded_over"]), int(got["lanes_per_device"])) == (4, 2)
    single = _chunked()
    assert set(single.trace.status_name()) == {"max_steps", "diverged"}
    for i, want in enumerate(jax.tree.leaves(single.trace)):
        np.testing.assert_allclose(
            got[f"leaf{i}"], want, rtol=LANE_RTOL[np.dtype(np.float64)], atol=atol(np.float64)
        )


def test_a_long_numeric_axis_is_validated_from_its_extremes(monkeypatch):
    """A registry rule checks each value against an interval, so a long axis costs two builds, not
    one per value; a bad value anywhere still fails (see BAD_INPUTS) and names itself."""
    calls = []
    real_get = gdjax.rules.get
    monkeypatch.setattr(gdjax.rules, "get", lambda *a, **k: calls.append(k) or real_get(*a, **k))
    lrs = np.geomspace(1e-3, 0.5, 200)
    sweep(**_bad(grid={"learning_rate": lrs}, num_steps=2))
    assert len(calls) < 10, len(calls)


# --- an outside audit of the sweep API ----------------------------------------------------------
_HOUSES = gdjax.data.house_prices()
_LS = gdjax.make_cost(gdjax.linear, gdjax.mse)


def test_a_built_rules_grid_values_are_checked_against_its_domains():
    """`rules.momentum(0.01)` with `grid={"momentum": [-1.0, 2.0]}` ran (max_steps and diverged):
    `Rule.replace` checked only finiteness. The name and factory forms refused it already."""
    for rule, grid in (
        (rules.momentum(0.01), {"momentum": [-1.0, 2.0]}),
        (rules.adam(0.01), {"b1": [0.5, 1.5]}),
        (rules.get("optax.lamb", learning_rate=0.01), {"b2": [3.0]}),
    ):
        with pytest.raises(GridError, match=r"must be a finite number in \[0, 1\)"):
            gdjax.sweep(_LS, rule, gdjax.init_linear(1), _HOUSES, grid=grid, num_steps=5)
    with pytest.raises(ValueError, match=r"momentum must be a finite number in \[0, 1\), got -1.0"):
        rules.momentum(0.01).replace(momentum=-1.0)


def test_a_rejected_single_grid_value_is_shown_in_the_message():
    """A single non-numeric grid value goes to the rule as a static option; the message showed the
    grid's first values as `{}`."""
    with pytest.raises(
        GridError, match=r"first values \{'learning_rate': True\}: learning_rate must be a real"
    ):
        gdjax.sweep(_LS, "sgd", gdjax.init_linear(1), _HOUSES, grid={"learning_rate": True}, num_steps=5)
    # Among numbers, NumPy read True as 1.0 and the sweep ran it.
    with pytest.raises(ValueError, match=r"grid\['learning_rate'\] = \[0.1, True\]: True/False is not"):
        gdjax.sweep(
            _LS, "sgd", gdjax.init_linear(1), _HOUSES, grid={"learning_rate": [0.1, True]}, num_steps=5
        )


def test_a_metric_may_not_take_a_grid_keys_name():
    grid = {"learning_rate": [0.01, 0.02]}
    with pytest.raises(ValueError, match="metric name 'learning_rate' is also a grid key"):
        gdjax.sweep(_LS, "sgd", gdjax.init_linear(1), _HOUSES, grid=grid, num_steps=5,
                    metrics={"learning_rate": lambda p: p["b"]})  # fmt: skip


def test_a_value_that_rounds_out_of_its_domain_in_the_params_dtype_is_refused():
    """In bfloat16 Adam's b2 = 0.999 is 1.0: its bias correction 1 - b2**t is 0 and every lane was
    `nonfinite` at step 0, silently."""
    half = jax.tree.map(lambda x: jax.numpy.asarray(x, jax.numpy.bfloat16), gdjax.init_linear(1))
    X, y = _HOUSES
    data = (X / X.max(), y / y.max())
    with pytest.raises(GridError, match=r"b2 = 0.999 is 1.0 in bfloat16 .* outside in \[0, 1\)"):
        gdjax.sweep(_LS, "adam", half, data, grid={"learning_rate": [0.01], "b2": [0.99, 0.999]}, num_steps=5)
    with pytest.raises(ValueError, match=r"b2 = 0.999 is 1.0 in bfloat16"):
        gdjax.run(_LS, rules.adam(0.01), half, data, num_steps=5)
    ok = gdjax.sweep(_LS, "adam", half, data, grid={"learning_rate": [0.01], "b2": [0.99]}, num_steps=5)
    assert ok.trace.status_name() == ["max_steps"]
    with pytest.raises(ValueError, match=r"b2 = 0.99999999 is 1.0 in float32"):
        gdjax.run(_LS, rules.adam(0.01, b2=0.99999999), gdjax.init_linear(1, np.float32), data, num_steps=5)


def test_a_stopping_settings_typo_is_suggested_and_joined_histories_are_read_only():
    typo = {"learning_rate": [0.1], "grad_tl": [1e-3]}
    with pytest.raises(ValueError, match=r"no hyperparameter 'grad_tl' \(did you mean 'grad_tol'\?\)"):
        gdjax.sweep(_LS, "sgd", gdjax.init_linear(1), _HOUSES, grid=typo, num_steps=5)
    grid = {"learning_rate": [0.01, 0.02, 0.03]}
    chunked = gdjax.sweep(_LS, "sgd", gdjax.init_linear(1), _HOUSES, grid=grid, num_steps=5, chunk_size=2)
    for leaf in jax.tree.leaves(chunked.trace):
        if isinstance(leaf, np.ndarray):
            assert not leaf.flags.writeable


def test_checkpointing_is_refused_by_a_sweep_it_would_not_change():
    with pytest.raises(ValueError, match=r"checkpoint_every=...\) is for run only"):
        gdjax.sweep(_LS, "sgd", gdjax.init_linear(1), _HOUSES, grid={"learning_rate": [0.1]}, num_steps=5,
                    execution=Execution(checkpoint_every=5))  # fmt: skip


def test_a_users_factory_that_branches_on_a_value_or_bakes_it_in_is_told_how_to_write_one():
    def _update(updates, state, params=None):
        return jax.tree.map(lambda g: -state * g, updates), state

    def strict(learning_rate):
        if learning_rate <= 0:  # a host check: the sweep calls the factory with traced values
            raise ValueError("learning_rate must be > 0")
        return optax.GradientTransformation(lambda p: jax.numpy.asarray(learning_rate), _update)

    grid = {"learning_rate": [1e-3, 1e-2]}
    with pytest.raises(ValueError, match=r"rule 'strict' is called with traced values .* jnp.where"):
        gdjax.sweep(_LS, strict, gdjax.init_linear(1), _HOUSES, grid=grid, num_steps=5)
    with pytest.raises(ValueError, match=r"keep its values in the rule's state .*Your own rule in a sweep"):
        gdjax.sweep(
            _LS, optax.inject_hyperparams(optax.sgd), gdjax.init_linear(1), _HOUSES, grid=grid, num_steps=5
        )


def test_plain_optax_transformations_that_take_no_extra_arguments_run():
    """optax.contrib.sam is a GradientTransformationExtraArgs by type, but its update takes no
    `value=`: it was passed one and raised inside Optax. optax.MultiSteps is not a transformation:
    the error says what to pass."""
    sam = optax.contrib.sam(optax.sgd(1e-3), optax.sgd(1e-4), sync_period=2)
    X, y = _HOUSES
    data = ((X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std())
    trace = gdjax.run(_LS, sam, gdjax.init_linear(1), data, num_steps=20)
    params, state = gdjax.init_linear(1), sam.init(gdjax.init_linear(1))
    for _ in range(20):  # the plain loop: update(grads, state, params)
        updates, state = sam.update(jax.grad(_LS)(params, data), state, params)
        params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(trace.params["w"], params["w"], rtol=1e-12)
    with pytest.raises(ValueError, match=r"got MultiSteps: pass its .gradient_transformation\(\)"):
        gdjax.run(_LS, optax.MultiSteps(optax.sgd(1e-3), 2), gdjax.init_linear(1), data, num_steps=5)
