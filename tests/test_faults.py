"""Fault injection (issue 12): kills, interrupts, damaged and hostile files, floods of work.

Each case asserts that nothing is lost, that the message is one clear line naming what is wrong,
and that a resumed run gives byte-identical summaries. The signal cases run the real command in a
subprocess and are marked slow; the rest drive `gdjax.study.cli.main` in-process.
"""

import errno
import gc
import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import weakref

import jax
import numpy as np
import pytest

from gdjax import io as gdjax_io
from gdjax.estimator import GDRegressor
from gdjax.study import cli, experiment, runfolder
from gdjax.study import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Two optimizers, a few lanes, no gradient check and no plots: about a second of work in-process.
TINY = """
name = "tiny"
precision = "float64"
seeds = [0, 1]
[data]
source = "house_prices"
standardize = true
[cost]
model = "linear"
[run]
num_steps = 200
[[optimizers]]
rule = "gd"
grid.learning_rate = [0.01, 0.1, 0.5]
[[optimizers]]
rule = "momentum"
grid.learning_rate = [0.01, 0.1]
grid.momentum = 0.9
[gradcheck]
enabled = false
[outputs]
plots = []
"""
SUMMARIES = ("summary.csv", "summary.json", "histories.npz")


def run_cli(*argv):
    """`gdjax ...` in-process; a run gets `--no-plots`: the report page (nine tenths of a run this
    small) is not what these cases are about, and tests/test_report_page.py tests it."""
    argv = [*argv, "--no-plots"] if argv[0] == "run" else list(argv)
    out, err = io.StringIO(), io.StringIO()
    before = jax.config.jax_enable_x64
    try:
        code = cli.main(argv, stdout=out, stderr=err)
    finally:
        jax.config.update("jax_enable_x64", before)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny config and one uninterrupted run of it (the reference for byte-identity)."""
    base = tmp_path_factory.mktemp("faults")
    cfg = base / "tiny.toml"
    cfg.write_text(TINY)
    ref = base / "reference"
    code, _, err = run_cli("run", str(cfg), "--out", str(ref), "-q")
    assert code == 0, err
    return cfg, ref


def assert_same_results(folder, ref, parts_kept=False):
    for name in SUMMARIES:
        assert (folder / name).read_bytes() == (ref / name).read_bytes(), name
    assert not (folder / runfolder.PARTIAL_MARKER).exists()
    assert (folder / runfolder.PARTS).exists() == parts_kept
    assert not [n for n in os.listdir(folder) if n.startswith(".tmp-")]


def interrupted_folder(cfg_path, out, after: str):
    """A partial run folder: the run is stopped by a KeyboardInterrupt when unit `after` starts."""
    cfg = config_lib.load(cfg_path)

    def progress(key, done, total):
        if key == after:
            raise KeyboardInterrupt

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        with pytest.raises(KeyboardInterrupt):
            experiment.run_experiment(cfg, str(out), progress=progress)
    finally:
        jax.config.update("jax_enable_x64", before)
    assert (out / runfolder.PARTIAL_MARKER).exists()


# ------------------------------------------------------------------------------------ ownership
def test_force_refuses_a_foreign_folder_with_a_manifest(tiny, tmp_path):
    cfg, _ = tiny
    web = tmp_path / "webapp"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my web app"}')
    (web / "index.html").write_text("<html></html>")
    for flag in ("--force", "--resume"):
        code, _, err = run_cli("run", str(cfg), "--out", str(web), "-q", flag)
        assert code == 2 and str(web) in err and "not a gdjax run folder" in err, err
        assert sorted(os.listdir(web)) == ["index.html", "manifest.json"]
        assert (web / "index.html").read_text() == "<html></html>"


def test_force_replaces_a_folder_gdjax_made(tiny, tmp_path):
    cfg, ref = tiny
    out = tmp_path / "run"
    interrupted_folder(cfg, out, after="momentum")
    (out / "stray.txt").write_text("left by a previous attempt")
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--force")
    assert code == 0, err
    assert_same_results(out, ref)
    # gdjax did not make it, so --force keeps it (issue 19; tests/test_boundary.py has the note).
    assert (out / "stray.txt").exists() and runfolder.is_run_folder(str(out))


def test_a_live_lock_refuses_a_concurrent_resume(tiny, tmp_path):
    cfg, _ = tiny
    out = tmp_path / "run"
    interrupted_folder(cfg, out, after="momentum")
    holder = runfolder.RunFolder(str(out))
    holder.lock()  # as another live gdjax process would
    try:
        code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    finally:
        holder.unlock()
    assert code == 2 and "in use by another gdjax run" in err and str(out) in err, err
    assert (out / runfolder.PARTIAL_MARKER).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tiny, tmp_path):
    cfg, ref = tiny
    out = tmp_path / "run"
    interrupted_folder(cfg, out, after="momentum")
    (out / runfolder.LOCK).write_text("pid 999999999 on a host that died\n")  # no flock held
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    assert code == 0, err
    assert_same_results(out, ref)
    assert not (out / runfolder.LOCK).exists()


# ------------------------------------------------------------------------------- damaged parts
def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "npz-truncated": ("gd.npz", _truncate),
    "npz-text": ("gd.npz", lambda p: p.write_text("not an archive")),
    "json-truncated": ("gd.json", _truncate),
    "json-not-an-object": ("gd.json", lambda p: p.write_text("[1, 2]")),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_part_is_redone_on_resume(tiny, tmp_path, damage):
    cfg, ref = tiny
    out = tmp_path / "run"
    interrupted_folder(cfg, out, after="momentum")
    name, hurt = DAMAGES[damage]
    hurt(out / runfolder.PARTS / name)
    code, stdout, err = run_cli("run", str(cfg), "--out", str(out), "--resume")
    assert code == 0, err
    assert "part of gd is damaged, so it is redone" in stdout and name in stdout, stdout
    assert_same_results(out, ref)


def test_temp_files_left_by_a_kill_are_removed_before_completion(tiny, tmp_path):
    cfg, ref = tiny
    out = tmp_path / "run"
    interrupted_folder(cfg, out, after="momentum")
    (out / ".tmp-gdjax-abc123-summary.csv").write_text("half a file")
    (out / runfolder.PARTS / ".tmp-gdjax-def456-gd.npz").write_bytes(b"PK\x03")
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    assert code == 0, err
    assert_same_results(out, ref)


def test_a_run_stopped_before_its_first_manifest_resumes_from_the_start(tiny, tmp_path, monkeypatch):
    """A signal between writing config.toml and the first manifest (a moment a SIGTERM half a second
    after the first line hit under load) left a folder that --resume refused: 'run manifest not
    found'. Nothing was done there, so it is resumed from the start."""
    cfg, ref = tiny
    out = tmp_path / "run"
    write_json = runfolder.RunFolder.write_json

    def stopped(self, name, value):
        if name == "manifest.json":
            raise KeyboardInterrupt
        return write_json(self, name, value)

    monkeypatch.setattr(runfolder.RunFolder, "write_json", stopped)
    code, _, err = run_cli("run", str(cfg), "--out", str(out))
    assert code == 130, err
    assert (out / "config.toml").exists() and not (out / "manifest.json").exists()
    monkeypatch.undo()
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "--resume")
    assert code == 0, err
    assert_same_results(out, ref)


def test_a_run_killed_while_cleaning_up_after_its_last_manifest_is_tidied_by_resume(
    tiny, tmp_path, monkeypatch
):
    """A SIGKILL after the complete manifest and PARTIAL's removal, before `parts/` was removed (CI
    hit it once), left a complete run with its parts: --resume said "nothing to resume" and kept them.
    It now finishes the clean-up, and the results are untouched."""
    cfg, ref = tiny
    out = tmp_path / "run"
    remove = runfolder.RunFolder.remove

    def killed(self, name):
        if name == runfolder.PARTS:
            raise KeyboardInterrupt
        return remove(self, name)

    monkeypatch.setattr(runfolder.RunFolder, "remove", killed)
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "--no-plots")
    assert code == 130, err
    assert (out / runfolder.PARTS).is_dir() and not (out / runfolder.PARTIAL_MARKER).exists()
    monkeypatch.undo()
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "--resume", "--no-plots")
    assert code == 0, err
    assert_same_results(out, ref)


def test_an_incomplete_folder_holds_the_summaries_done_and_their_histories_in_parts(tiny, tmp_path):
    """What a kill -9 or a Ctrl-C leaves mid-run: PARTIAL, the summaries of the optimizers done so
    far, their histories in `parts/`, and no `histories.npz` (written once, when the run is complete:
    rewriting every history after every optimizer was quadratic in their number)."""
    cfg_path, ref = tiny
    out = tmp_path / "run"
    seen = {}

    def progress(key, done, total):
        if key == "momentum" and done == 0:
            rows = json.loads((out / "summary.json").read_text())
            seen["optimizers"] = sorted({r["optimizer"] for r in rows})
            seen["histories"] = (out / "histories.npz").exists()
            seen["parts"] = sorted(os.listdir(out / runfolder.PARTS))
            seen["partial"] = (out / runfolder.PARTIAL_MARKER).exists()

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        experiment.run_experiment(config_lib.load(cfg_path), str(out), progress=progress)
    finally:
        jax.config.update("jax_enable_x64", before)
    assert seen["optimizers"] == ["gd"] and seen["partial"], seen
    assert not seen["histories"] and "gd.npz" in seen["parts"], seen
    assert_same_results(out, ref)

    stopped = tmp_path / "stopped"
    interrupted_folder(cfg_path, stopped, after="momentum")
    rows = json.loads((stopped / "summary.json").read_text())
    assert {r["optimizer"] for r in rows} == {"gd"} and not (stopped / "histories.npz").exists()
    assert "their histories are in parts/" in (stopped / runfolder.PARTIAL_MARKER).read_text()
    code, _, err = run_cli("run", str(cfg_path), "--out", str(stopped), "--resume")
    assert code == 0, err
    assert_same_results(stopped, ref)


def test_a_users_files_in_parts_outlive_resume_and_force(tiny, tmp_path):
    """`parts/` is gdjax's folder, but what a user put in it is theirs: finishing a run (or `--force`)
    removes only the parts gdjax wrote, keeps the rest with the folder, and says so."""
    cfg_path, ref = tiny
    for flag in ("--resume", "--force"):
        out = tmp_path / flag.strip("-")
        interrupted_folder(cfg_path, out, after="momentum")
        (out / runfolder.PARTS / "notes.txt").write_text("mine")
        (out / runfolder.PARTS / "mine").mkdir()
        (out / runfolder.PARTS / "mine" / "f.npz").write_bytes(b"mine")
        code, said, err = run_cli("run", str(cfg_path), "--out", str(out), flag)
        assert code == 0, err
        assert_same_results(out, ref, parts_kept=True)
        assert sorted(os.listdir(out / runfolder.PARTS)) == ["mine", "notes.txt"]
        assert (out / runfolder.PARTS / "mine" / "f.npz").read_bytes() == b"mine"
        assert "parts/mine" in said + err and "parts/notes.txt" in said + err


# ------------------------------------------------------------------------------- hostile inputs
def _npz_config(tmp_path, data_file):
    cfg = tmp_path / "npz.toml"
    cfg.write_text(TINY.replace('source = "house_prices"', f'source = "npz"\npath = "{data_file.name}"'))
    return cfg


def _write_text(p):
    p.write_text("X,y\n1,2\n")


def _write_truncated(p):
    np.savez(p, X=np.arange(6.0), y=np.arange(6.0))
    _truncate(p)


def _write_complex(p):
    np.savez(p, X=np.arange(6.0) * 1j, y=np.arange(6.0))


def _write_object(p):
    np.savez(p, X=np.array([{"a": 1}] * 6, dtype=object), y=np.arange(6.0))


HOSTILE_DATA = {
    "text-named-npz": (_write_text, "is not an .npz archive"),
    "truncated": (_write_truncated, "is not a readable .npz archive"),
    "complex": (_write_complex, "is complex"),
    "pickled-objects": (_write_object, "never unpickles"),
}


@pytest.mark.parametrize("case", HOSTILE_DATA)
def test_hostile_data_files_give_a_gdjax_error_naming_the_file(tmp_path, case):
    write, message = HOSTILE_DATA[case]
    data_file = tmp_path / "data.npz"
    write(data_file)
    out = tmp_path / "run"
    code, _, err = run_cli("run", str(_npz_config(tmp_path, data_file)), "--out", str(out), "-q")
    assert code == 2 and message in err and str(data_file) in err, err
    assert "allow_pickle" not in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("case", ["text-named-npz", "truncated", "pickled-objects"])
def test_hostile_model_files_give_an_error_naming_the_file(tmp_path, case):
    path = tmp_path / "model.npz"
    HOSTILE_DATA[case][0](path)
    with pytest.raises(ValueError, match="not a readable GDRegressor file") as info:
        GDRegressor.load(path)
    assert str(path) in str(info.value) and "allow_pickle" not in str(info.value)


FLOODS = {
    "logspace-1e9": (
        "grid.learning_rate = [0.01, 0.1, 0.5]",
        "grid.learning_rate = { logspace = [0.001, 1.0, 1000000000] }",
        "values on one axis",
    ),
    "grid-1e5-x-1e5": (
        "grid.learning_rate = [0.01, 0.1]\ngrid.momentum = 0.9",
        "grid.learning_rate = { logspace = [0.001, 1.0, 100000] }\n"
        "grid.momentum = { linspace = [0.0, 0.9, 100000] }",
        "at most",
    ),
    "num_steps-1e12": ("num_steps = 200", "num_steps = 1000000000000", "use num_steps <="),
    "num_examples-1e9": (
        'source = "house_prices"\nstandardize = true',
        'source = "synthetic"\nnum_examples = 1000000000',
        "use num_examples <=",
    ),
}


@pytest.mark.parametrize("case", FLOODS)
def test_impossible_sizes_are_refused_before_allocation_without_a_folder(tmp_path, case):
    old, new, advice = FLOODS[case]
    cfg = tmp_path / "flood.toml"
    assert old in TINY
    cfg.write_text(TINY.replace(old, new))
    out = tmp_path / "run"
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q")
    assert code == 2 and advice in err, err
    assert err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("bad", ['label = "gd\\n"', 'name = "tiny\\n"'])
def test_names_ending_in_a_newline_are_refused(tmp_path, bad):
    text = (
        TINY.replace('name = "tiny"', bad)
        if bad.startswith("name")
        else TINY.replace('rule = "gd"\n', f'rule = "gd"\n{bad}\n')
    )
    with pytest.raises(config_lib.ConfigError, match="letters, digits"):
        config_lib.loads(text)


def test_csv_overflowing_float32_is_an_error_naming_the_file(tmp_path):
    csv = tmp_path / "big.csv"
    csv.write_text("id,x,y\na,1e39,2\nb,2,4\nc,3,6\n")
    text = TINY.replace(
        'source = "house_prices"\nstandardize = true',
        'source = "csv"\npath = "big.csv"\ntarget = "y"\nfeatures = ["x"]',
    ).replace('precision = "float64"', 'precision = "float32"')
    cfg = tmp_path / "csv.toml"
    cfg.write_text(text)
    code, _, err = run_cli("run", str(cfg), "--out", str(tmp_path / "run"), "-q")
    assert code == 2 and "overflows float32" in err and str(csv) in err and "'x'" in err, err


# ------------------------------------------------------------------------------------- signals
def _command(*argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-m", "gdjax.study.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


# (signal, seconds after the first line of output, expected exit code); -9 cannot be caught.
SIGNALS = [
    (signal.SIGINT, 0.0, 130),
    (signal.SIGTERM, 0.5, 143),
    (signal.SIGHUP, 1.0, 129),
    (signal.SIGKILL, 0.8, -9),
]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "delay", "code"), SIGNALS, ids=[s[0].name for s in SIGNALS])
def test_a_signal_ends_cleanly_and_resume_gives_identical_results(tiny, tmp_path, sig, delay, code):
    cfg, ref = tiny
    out = tmp_path / "run"
    proc = _command("run", str(cfg), "--out", str(out))
    proc.stdout.readline()  # "gdjax run: tiny (...)": the command has started
    time.sleep(delay)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (code, 0), err  # 0: the run finished before the signal landed
    assert "Traceback" not in err and "Segmentation" not in err, err
    if proc.returncode == 0:
        assert_same_results(out, ref)
        return
    if sig != signal.SIGKILL:
        assert f"interrupted ({sig.name})" in err, err
    resume = _command("run", str(cfg), "--out", str(out), "--resume", "-q", "--no-plots")
    _, err = resume.communicate(timeout=120)
    assert resume.returncode == 0, err
    assert_same_results(out, ref)


def test_a_signal_in_a_callback_that_would_swallow_it_is_delivered_again():
    """Python prints and drops an exception raised in a destructor, a gc callback or a weakref
    callback ("Exception ignored in ..." and a traceback, which a signal test once caught on CI): the
    handler delivers the signal again 10 ms later instead of raising there."""

    class Thing:
        pass

    seen = []

    def probe(*_):
        seen.append(cli._in_swallowing_context(sys._getframe()))

    finalized = Thing()
    weakref.finalize(finalized, probe)
    del finalized
    gc.collect()

    class Watched(set):
        def discard(self, item):  # called by the WeakSet's weakref callback, `_remove`
            probe()
            super().discard(item)

    members = weakref.WeakSet()
    members.data = Watched()
    value = Thing()
    members.add(value)
    del value
    gc.collect()

    class Dying:
        def __del__(self):
            probe()

    Dying()
    gc.collect()
    probe()  # ordinary code: the exception is raised where the signal lands
    assert seen == [True, True, True, False]


def test_a_model_file_with_non_finite_coefficients_is_refused(tmp_path):
    X, y = np.arange(8.0).reshape(4, 2), np.arange(4.0)
    path = tmp_path / "model.npz"
    GDRegressor(learning_rate=0.1, standardize=True, num_steps=20, tol=None).fit(X, y).save(path)
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["coef"] = np.full_like(arrays["coef"], np.nan)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="corrupted GDRegressor file: .*coefficients are not finite"):
        GDRegressor.load(path)


# ------------------------------------------- an outside audit of faults and hostile files (2026-12-04)
def test_a_resume_finds_the_folder_another_run_finished_meanwhile(tiny, tmp_path, monkeypatch):
    """Two `--resume`s of one partial folder: the second judged it partial, and before it took the
    lock (its gradient check and plans run first) the first finished it. It then reran every
    optimizer over the complete folder (stopped part-way, it left it partial again). It now finds
    the folder complete and reruns nothing."""
    cfg, ref = tiny
    out = tmp_path / "run"
    interrupted_folder(cfg, out, after="momentum")
    compiler, run_unit = experiment.Compiler, experiment.run_unit
    reran = []

    def finished_meanwhile(*args, **kwargs):  # after the folder was judged, before the lock
        monkeypatch.setattr(experiment, "Compiler", compiler)
        code, _, err = run_cli("run", str(cfg), "--out", str(out), "--resume", "-q")
        assert code == 0, err
        monkeypatch.setattr(
            experiment, "run_unit", lambda *a, **k: reran.append(a[1].key) or run_unit(*a, **k)
        )
        return compiler(*args, **kwargs)

    monkeypatch.setattr(experiment, "Compiler", finished_meanwhile)
    code, text, err = run_cli("run", str(cfg), "--out", str(out), "--resume")
    assert code == 0, err
    assert "nothing to resume" in text and reran == []
    assert_same_results(out, ref)


@pytest.mark.parametrize("where", ["optimizers[0]", "cost"])
@pytest.mark.parametrize("label", ["nan", "inf", "-inf"])
def test_a_label_that_reads_back_as_a_number_is_refused(tmp_path, where, label):
    """Run files keep non-finite numbers as "nan"/"inf"/"-inf": an optimizer labelled so was read
    back as a float, and the run's report could never be written."""
    text = TINY.replace('rule = "gd"', f'rule = "gd"\nlabel = "{label}"', 1)
    if where == "cost":
        text = TINY.replace('model = "linear"', f'model = "linear"\nlabel = "{label}"')
    with pytest.raises(config_lib.ConfigError, match=rf"{re.escape(where)}\.label: .*cannot be a label"):
        config_lib.loads(text, source="t.toml")


@pytest.mark.parametrize(
    "damage, message",
    [
        (("summary.json", lambda s: ["x", "y"]), "summary.json is not a list of summary rows"),
        (("manifest.json", lambda m: {**m, "units": [1]}), "'units' is not a table of units"),
        (("manifest.json", lambda m: {**m, "plots": 5}), "'plots' is not a list of file names"),
        (
            ("manifest.json", lambda m: {**m, "units": {k: {"run_seconds": 10**400} for k in m["units"]}}),
            "'units' is not a table of units",
        ),
    ],
)
def test_resuming_a_complete_folder_with_files_of_another_shape_is_one_line(tiny, tmp_path, damage, message):
    cfg, _ = tiny
    out = tmp_path / "run"
    assert run_cli("run", str(cfg), "--out", str(out), "-q")[0] == 0
    name, change = damage
    (out / name).write_text(json.dumps(change(json.loads((out / name).read_text()))))
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "--resume", "-q")
    assert code == 2 and message in err and "Traceback" not in err, err


def test_a_resumed_manifest_of_another_shape_is_started_afresh(tiny, tmp_path):
    cfg, ref = tiny
    out = tmp_path / "run"
    interrupted_folder(cfg, out, after="momentum")
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "resumed": 5, "started": [1]}))
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "--resume", "-q")
    assert code == 0, err
    assert_same_results(out, ref)
    manifest = json.loads((out / "manifest.json").read_text())
    assert isinstance(manifest["started"], str) and len(manifest["resumed"]) == 1


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("splits", [1, 2], "splits must map each problem"),
        ("splits", {"p": "x"}, "splits must map each problem"),
        ("hyperparameters", 5, "hyperparameters must be a list of column names"),
        ("hyperparameters", ["no_such_column"], "names hyperparameters ['no_such_column']"),
        ("metrics", ["zzz"], "names metrics ['zzz']"),
        ("tuning_seeds", [True], "tuning_seeds must be a list of integer seeds"),
    ],
)
def test_saved_results_whose_results_json_has_another_shape_are_one_line(tiny, tmp_path, key, value, message):
    from gdjax import study
    from gdjax.study import results_model

    _, ref = tiny
    saved = tmp_path / "saved"
    study.load(str(ref)).save(saved)
    meta = json.loads((saved / "results.json").read_text())
    (saved / "results.json").write_text(json.dumps({**meta, key: value}))
    with pytest.raises(results_model.ResultsError) as err:
        study.load(str(saved))
    assert "results.json" in str(err.value) and message in str(err.value)
    code, _, stderr = run_cli("report", str(saved), "--out", str(tmp_path / "page"))
    assert code == 2 and message in stderr and "Traceback" not in stderr, stderr


def test_a_run_folder_with_an_infinite_step_count_is_one_line(tiny, tmp_path):
    cfg, _ = tiny
    out = tmp_path / "run"
    assert run_cli("run", str(cfg), "--out", str(out), "-q")[0] == 0
    with np.load(out / "histories.npz", allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["gd/eval_steps"] = np.full(arrays["gd/eval_steps"].shape, np.inf)
    np.savez(out / "histories.npz", **arrays)
    code, _, err = run_cli("report", str(out), "--out", str(tmp_path / "page"))
    assert code == 2 and "do not fit together (OverflowError" in err and "Traceback" not in err, err


def test_a_full_disk_names_the_file_and_how_to_finish(tiny, tmp_path, monkeypatch):
    """A write that fails for want of space said only `[Errno 27] File too large`."""
    cfg, ref = tiny
    out = tmp_path / "run"
    write_results = experiment.write_results

    def full_disk(folder, rows, arrays):
        if arrays is not None:  # the histories, after every optimizer ran
            gdjax_io.atomic_write(
                folder.file("histories.npz"), lambda f: _raise(OSError(errno.EFBIG, "File too large"))
            )
        return write_results(folder, rows, arrays)

    monkeypatch.setattr(experiment, "write_results", full_disk)
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q")
    assert code == 2, err
    assert f"cannot write '{out / 'histories.npz'}': File too large" in err
    assert f"partial results in {out}; finish with: gdjax run {cfg} --out {out} --resume" in err
    monkeypatch.undo()
    assert run_cli("run", str(cfg), "--out", str(out), "--resume", "-q")[0] == 0
    assert_same_results(out, ref)


def _raise(err):
    raise err


def test_a_polynomial_degree_that_overflows_is_a_config_error(tmp_path):
    text = TINY.replace('source = "house_prices"\nstandardize = true', 'source = "line"').replace(
        'model = "linear"', 'model = "polynomial"\ndegree = 300'
    )
    path = tmp_path / "poly.toml"
    path.write_text(text)
    code, _, err = run_cli("check", str(path))
    assert code == 2 and "cost.degree: x**600" in err and "overflows float64" in err, err


def test_a_config_with_a_byte_order_mark_is_read(tiny, tmp_path):
    cfg, _ = tiny
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + cfg.read_bytes())
    assert config_lib.load(str(path)).name == "tiny"


def test_run_out_through_a_symbolic_link_is_refused(tiny, tmp_path):
    """As `gdjax report --out`, and as the README says: the folder itself, never through a link."""
    cfg, _ = tiny
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target, target_is_directory=True)
    code, _, err = run_cli("run", str(cfg), "--out", str(tmp_path / "link"), "-q")
    assert code == 2 and "is a symbolic link: give the folder itself" in err, err
    assert os.listdir(target) == []
