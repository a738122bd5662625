"""`gdjax.io`: the one atomic writer, the JSON policy, the formatter, safe NPZ reading, Trace files."""

import math
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax
from gdjax import io


def test_atomic_write_gives_0644_and_leaves_no_temp_file_on_interrupt(tmp_path):
    path = tmp_path / "a.txt"
    io.write_text(path, "first\n")
    assert os.stat(path).st_mode & 0o777 == 0o644

    def interrupted(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, interrupted)
    assert path.read_text() == "first\n" and os.listdir(tmp_path) == ["a.txt"]


def test_a_write_that_cannot_happen_names_the_file_asked_for_not_the_temporary(tmp_path):
    (tmp_path / "a_folder").mkdir()
    cases = [
        (tmp_path / "missing" / "trace.npz", FileNotFoundError, "cannot write .*missing/trace.npz"),
        (tmp_path / "a_folder", IsADirectoryError, "a folder is there; give a file name: .*a_folder"),
    ]
    for path, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            io.write_text(path, "x")
        assert io.TEMP_PREFIX not in str(caught.value)
    assert os.listdir(tmp_path) == ["a_folder"] and not os.listdir(tmp_path / "a_folder")


def test_an_unknown_option_setting_names_the_nearest_one():
    with pytest.raises(TypeError, match=r"Stopping has no setting 'patiance' \(did you mean 'patience'\?\)"):
        gdjax.Stopping(patiance=3)
    with pytest.raises(TypeError, match=r"no setting 'chunksize' \(did you mean 'chunk_size'\?\)"):
        gdjax.Execution(chunksize=2)
    assert gdjax.Stopping(patience=3).patience == 3  # known settings and their checks are unchanged
    with pytest.raises(ValueError, match="patience must be an integer >= 1"):
        gdjax.Stopping(patience=0)


def test_remove_stale_temps_removes_only_gdjax_temporaries(tmp_path):
    (tmp_path / f"{io.TEMP_PREFIX}x-summary.csv").write_text("half")
    (tmp_path / ".tmp-someone-else").write_text("theirs")
    assert io.remove_stale_temps(tmp_path) == [f"{io.TEMP_PREFIX}x-summary.csv"]
    assert os.listdir(tmp_path) == [".tmp-someone-else"]


def test_json_policy_round_trips_non_finite_numbers(tmp_path):
    value = {"a": math.inf, "b": [-math.inf, 1.5, None], "c": np.float32(2.0), "d": "x"}
    text = io.dumps(value)
    assert "Infinity" not in text and "NaN" not in text and '"inf"' in text
    io.write_json(tmp_path / "v.json", {**value, "n": math.nan})
    back = io.read_json(tmp_path / "v.json")
    assert back["a"] == math.inf and back["b"] == [-math.inf, 1.5, None] and math.isnan(back["n"])
    (tmp_path / "bad.json").write_text('{"a": ')
    with pytest.raises(io.FileFormatError, match="bad.json"):
        io.read_json(tmp_path / "bad.json")


def test_one_formatter_for_cells_and_tables():
    assert [io.format_number(v) for v in (None, 0.1234567891, np.float32(2.5), 3, "x")] == [
        "-",
        "0.123457",
        "2.5",
        "3",
        "x",
    ]
    table = io.format_table([{"name": "a", "loss": 1.0}, {"name": "bb", "loss": None}])
    assert table.splitlines() == ["name  loss", "----  ----", "a        1", "bb       -"]


def assert_same_trace(back, trace):
    """Every field of a Trace, pytrees and metrics included, equal bit for bit (None stays None)."""
    for field in gdjax.Trace._fields:
        a, b = getattr(trace, field), getattr(back, field)
        if a is None or b is None:
            assert a is None and b is None, field
            continue
        if field == "metrics":
            assert list(b) == list(a)
        if isinstance(a, str):
            assert a == b, field
            continue
        jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, a), b)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert np.asarray(x).dtype == y.dtype, field


@pytest.fixture(scope="module")
def house():
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    metrics = {"test_loss": gdjax.costs.on_data(cost, (X[:3], y[:3])), "b": lambda p: p["b"]}
    return cost, (X, y), metrics


# (name, run (False) or sweep (True), metrics given, keyword arguments)
TRACES = [
    ("run", False, False, {}),
    ("run_metrics_eval_every", False, True, {"eval_every": 3}),
    ("run_minibatch", False, True, {"batch_size": 2, "key": 0, "eval_every": 4}),
    ("sweep_metrics", True, True, {"grid": {"learning_rate": [0.01, 0.02]}, "seeds": [0, 1]}),
]


@pytest.mark.parametrize(("name", "is_sweep", "with_metrics", "kwargs"), TRACES, ids=[t[0] for t in TRACES])
def test_trace_save_and_load_round_trip_every_field(tmp_path, house, name, is_sweep, with_metrics, kwargs):
    cost, data, metrics = house
    params0 = gdjax.init_linear(1, jnp.float64)
    metrics = metrics if with_metrics else None
    if is_sweep:
        trace = gdjax.sweep(cost, "sgd", params0, data, num_steps=20, metrics=metrics, **kwargs).trace
    else:
        trace = gdjax.run(cost, gdjax.rules.sgd(0.01), params0, data, num_steps=20, metrics=metrics, **kwargs)
    # every array field is filled; `evaluated_at` and `invalid` are None for a plain run at its iterates
    arrays = [f for f in gdjax.Trace._fields if f not in ("evaluated_at", "invalid")]
    assert all(getattr(trace, f) is not None for f in arrays)
    io.save_trace(tmp_path / "t.npz", trace)
    back = io.load_trace(tmp_path / "t.npz", gdjax.init_linear(1))
    assert_same_trace(back, trace)
    assert sorted(back.metrics) == (["b", "test_loss"] if with_metrics else [])


def test_the_values_a_traced_run_checked_and_the_point_evaluated_are_saved(tmp_path, house):
    cost, data, _ = house
    params0 = gdjax.init_linear(1, jnp.float64)
    traced = jax.jit(lambda lr: gdjax.run(cost, gdjax.rules.sgd(lr), params0, data, num_steps=5))(-0.01)
    assert traced.status_name() == "invalid" and bool(traced.invalid["learning_rate"])
    rule = gdjax.rules.get("optax.contrib.schedule_free_sgd", learning_rate=0.01)
    averaged = gdjax.run(cost, rule, params0, data, num_steps=5)
    assert averaged.evaluated_at == "schedule_free_eval_params"
    for name, trace in (("traced", traced), ("averaged", averaged)):
        io.save_trace(tmp_path / f"{name}.npz", trace)
        assert_same_trace(io.load_trace(tmp_path / f"{name}.npz", params0), trace)


def test_trace_fields_that_are_none_stay_none(tmp_path, house):
    cost, data, _ = house
    trace = gdjax.run(cost, gdjax.rules.sgd(0.01), gdjax.init_linear(1, jnp.float64), data, num_steps=5)
    trace = trace._replace(batch_loss_history=None, metrics=None, eval_steps=None, record_steps=None)
    io.save_trace(tmp_path / "t.npz", trace)
    assert set(io.inspect_npz(tmp_path / "t.npz")) == {
        "loss_history", "grad_norm_history", "status", "steps", "stop_step",
        "params/b", "params/w", "params_history/b", "params_history/w",
    }  # fmt: skip
    assert_same_trace(io.load_trace(tmp_path / "t.npz", gdjax.init_linear(1)), trace)


def test_trace_files_without_the_new_members_still_load(tmp_path, house):
    # What save_trace wrote before it saved eval_steps, record_steps, batch losses and metrics.
    cost, data, metrics = house
    trace = gdjax.run(cost, gdjax.rules.sgd(0.01), gdjax.init_linear(1, jnp.float64), data, num_steps=5)
    old = {k: v for k, v in io.trace_arrays(trace).items() if k in io._TRACE_FIELDS or k.startswith("params")}
    io.write_npz(tmp_path / "old.npz", old)
    back = io.load_trace(tmp_path / "old.npz", gdjax.init_linear(1))
    assert (back.eval_steps, back.record_steps, back.batch_loss_history, back.metrics) == (None,) * 4
    np.testing.assert_array_equal(back.loss_history, trace.loss_history)
    # A study part: metrics/<name> members without the list of names.
    part = {**old, "eval_steps": np.asarray(trace.eval_steps), "metrics/m": np.asarray(trace.loss_history)}
    io.write_npz(tmp_path / "part.npz", part)
    back = io.load_trace(tmp_path / "part.npz", gdjax.init_linear(1))
    assert list(back.metrics) == ["m"] and back.eval_steps.dtype == np.int32


# (name, member to replace, its bad value, what the message says)
BAD_MEMBERS = [
    ("eval_steps_shape", "eval_steps", np.arange(5, dtype=np.int32), r"'eval_steps' has shape \(5,\)"),
    ("eval_steps_floats", "eval_steps", np.zeros(6), "'eval_steps' must hold integers"),
    ("metric_shape", "metrics/test_loss", np.zeros((2, 6)), r"'metrics/test_loss' has shape \(2, 6\)"),
    ("record_steps", "record_steps", np.arange(4, dtype=np.int32), r"'record_steps' has shape \(4,\)"),
    ("batch_losses", "batch_loss_history", np.zeros((2, 5)), "'batch_loss_history' has shape"),
    ("metric_names", "metric_names", np.asarray(["test_loss", "other"]), "lists the metrics"),
    ("metric_names_numbers", "metric_names", np.zeros(2), "must be a 1-D array of names"),
]


@pytest.mark.parametrize(("name", "member", "value", "message"), BAD_MEMBERS, ids=[b[0] for b in BAD_MEMBERS])
def test_trace_members_that_do_not_fit_are_refused(
    tmp_path, house, monkeypatch, name, member, value, message
):
    cost, data, metrics = house
    trace = gdjax.run(
        cost, gdjax.rules.sgd(0.01), gdjax.init_linear(1, jnp.float64), data, num_steps=5, metrics=metrics
    )
    arrays = {**io.trace_arrays(trace), member: value}
    io.write_npz(tmp_path / "bad.npz", arrays)
    with pytest.raises(io.FileFormatError, match="bad.npz: .*" + message):
        io.load_trace(tmp_path / "bad.npz", gdjax.init_linear(1))
    if name != "metric_names":  # the shapes are refused from the headers, before any array is read
        monkeypatch.setattr(io, "read_npz", lambda *a, **k: pytest.fail("read before it was checked"))
        with pytest.raises(io.FileFormatError, match=message):
            io.load_trace(tmp_path / "bad.npz", gdjax.init_linear(1))
    with pytest.raises(io.FileFormatError, match="arrays: .*" + message):
        io.trace_from_arrays(arrays, gdjax.init_linear(1))


def test_inspect_npz_checks_declared_sizes_before_reading(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, X=np.zeros((4, 2)), y=np.zeros(4))
    members = io.inspect_npz(good)
    assert (members["X"].shape, members["X"].dtype) == ((4, 2), np.dtype(float))
    with pytest.raises(io.FileFormatError, match="more than the 10 bytes"):
        io.inspect_npz(good, max_bytes=10)
    # A header that declares more than the member holds: refused without decompressing.
    lying = tmp_path / "lying.npz"
    raw = zipfile.ZipFile(good).read("X.npy").replace(b"(4, 2)", b"(9, 9)")
    with zipfile.ZipFile(lying, "w") as z:
        z.writestr("X.npy", raw)
    with pytest.raises(io.FileFormatError, match="lying.npz: member 'X' declares shape"):
        io.inspect_npz(lying)
    with pytest.raises(io.FileFormatError, match="good.npz has no array named 'z'"):
        io.read_npz(good, required=["z"])
