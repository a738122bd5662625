"""`gdjax.io`: the one atomic writer, the JSON policy, the formatter, safe NPZ reading, Trace files."""

import math
import os
import zipfile

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


def test_trace_save_and_load_round_trip(tmp_path):
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    trace = gdjax.run(cost, gdjax.rules.sgd(0.01), gdjax.init_linear(1, jnp.float64), (X, y), num_steps=20)
    io.save_trace(tmp_path / "t.npz", trace)
    back = io.load_trace(tmp_path / "t.npz", gdjax.init_linear(1))
    for a, b in zip(np.asarray(trace.loss_history), back.loss_history, strict=True):
        assert a == b
    np.testing.assert_array_equal(back.params["w"], trace.params["w"])


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
