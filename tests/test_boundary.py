"""The run folder is a boundary (issue 19): links, ownership, data fingerprints, hostile readers.

Each case plants what an attacker (or an unlucky user) would, runs the command in-process, and
asserts that nothing outside the run folder changed, that a user's files stay, and that a refusal is
one line naming the file. The README's "What a run folder promises" states exactly these.
"""

import io
import json
import os
import pathlib
import shutil
import struct
import zipfile
import zlib

import jax
import numpy as np
import pytest

import gdjax.io as gdjax_io
from gdjax import data
from gdjax.estimator import GDRegressor
from gdjax.study import cli, experiment, runfolder
from gdjax.study import config as config_lib

# Two optimizers on a small CSV file, no gradient check, no plots: about a second in-process.
CSV_CONFIG = """
name = "boundary"
precision = "float64"
seeds = [0]
[data]
source = "csv"
path = "data.csv"
target = "y"
standardize = true
[cost]
model = "linear"
[run]
num_steps = 50
[[optimizers]]
rule = "gd"
grid.learning_rate = [0.01, 0.1]
[[optimizers]]
rule = "momentum"
grid.learning_rate = [0.01]
grid.momentum = 0.9
[gradcheck]
enabled = false
[outputs]
plots = []
"""
DEEP = 900  # levels of nesting: past Python's recursion limit with the stack of a real call


def run_cli(*argv, plots=False):
    """`gdjax ...` in-process. A run gets `--no-plots` unless `plots`: drawing the report page is
    nine tenths of a run this small, and only the tests about owned plots and files ask for it (the
    page itself is tested in tests/test_report_page.py)."""
    argv = [*argv, "--no-plots"] if argv[0] == "run" and not plots else list(argv)
    out, err = io.StringIO(), io.StringIO()
    before = jax.config.jax_enable_x64
    try:
        code = cli.main(argv, stdout=out, stderr=err)
    finally:
        jax.config.update("jax_enable_x64", before)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert str(needle) in err, (needle, err)


def _csv(path, scale=1.0):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20).tolist()
    rows = "\n".join(f"{a!r},{scale * (2 * a + 1)!r}" for a in x)
    path.write_text("x,y\n" + rows + "\n")


@pytest.fixture
def study(tmp_path):
    """A config reading `data.csv`, and an outside folder with a file no run may touch."""
    _csv(tmp_path / "data.csv")
    cfg = tmp_path / "study.toml"
    cfg.write_text(CSV_CONFIG)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("do not touch")
    (outside / f"{gdjax_io.TEMP_PREFIX}keep").write_text("not gdjax's either")
    return cfg, outside


def snapshot(folder: pathlib.Path) -> dict:
    """Every entry under `folder` (links as their targets' names, not followed) with its bytes."""
    return {
        str(p.relative_to(folder)): (
            f"-> {os.readlink(p)}" if p.is_symlink() else None if p.is_dir() else p.read_bytes()
        )
        for p in sorted(folder.rglob("*"))
    }


def complete_run(cfg, out, plots=False):
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", plots=plots)
    assert code == 0, err


def interrupted_run(cfg, out, after="momentum"):
    """A partial folder: a KeyboardInterrupt when unit `after` starts (its `gd` part is saved)."""
    c = config_lib.load(cfg)

    def progress(key, done, total):
        if key == after:
            raise KeyboardInterrupt

    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        with pytest.raises(KeyboardInterrupt):
            experiment.run_experiment(c, str(out), progress=progress)
    finally:
        jax.config.update("jax_enable_x64", before)
    assert (out / runfolder.PARTIAL_MARKER).exists() and (out / runfolder.PARTS / "gd.json").exists()


# ------------------------------------------------------------------------------------------- links
@pytest.mark.parametrize("flag", ["--force", "--resume"])
def test_a_lock_linked_to_an_outside_file_is_refused(study, tmp_path, flag):
    cfg, outside = study
    out = tmp_path / "run"
    complete_run(cfg, out)
    before = snapshot(outside)
    (out / runfolder.LOCK).symlink_to(outside / "precious.txt")
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", flag)
    assert_one_line_error(code, err, out / runfolder.LOCK, "symbolic link")
    assert snapshot(outside) == before
    assert (out / runfolder.LOCK).is_symlink()  # not gdjax's to remove either


def test_a_dangling_lock_link_creates_nothing_outside(study, tmp_path):
    cfg, outside = study
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    (out / runfolder.LOCK).symlink_to(outside / "created-by-gdjax")
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    assert_one_line_error(code, err, out / runfolder.LOCK, "symbolic link")
    assert not (outside / "created-by-gdjax").exists()


def test_the_lock_itself_is_opened_without_following_a_link(tmp_path):
    target = tmp_path / "outside.txt"
    target.write_text("do not touch")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / runfolder.LOCK).symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        runfolder.RunFolder(str(folder)).lock()
    assert target.read_text() == "do not touch"


def test_a_parts_folder_linked_outside_is_refused(study, tmp_path):
    cfg, outside = study
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    shutil.copytree(out / runfolder.PARTS, outside, dirs_exist_ok=True)  # parts of the same names
    before = snapshot(outside)
    shutil.rmtree(out / runfolder.PARTS)
    (out / runfolder.PARTS).symlink_to(outside, target_is_directory=True)
    for flag in ("--resume", "--force"):
        code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", flag)
        assert_one_line_error(code, err, out / runfolder.PARTS, "symbolic link")
        assert snapshot(outside) == before  # no part replaced, no .tmp-gdjax-* file deleted


def test_a_part_file_linked_outside_is_redone_not_read(study, tmp_path):
    cfg, outside = study
    out, ref = tmp_path / "run", tmp_path / "ref"
    complete_run(cfg, ref)
    interrupted_run(cfg, out)
    shutil.move(out / runfolder.PARTS / "gd.json", outside / "gd.json")
    before = snapshot(outside)
    (out / runfolder.PARTS / "gd.json").symlink_to(outside / "gd.json")
    code, stdout, err = run_cli("run", str(cfg), "--out", str(out), "--resume")
    assert code == 0, err
    assert "part of gd is damaged, so it is redone" in stdout and "symbolic link" in stdout, stdout
    assert snapshot(outside) == before
    assert (out / "summary.csv").read_bytes() == (ref / "summary.csv").read_bytes()


@pytest.mark.parametrize("name", ["config.toml", "manifest.json", "summary.csv"])
def test_an_owned_file_replaced_by_a_link_is_refused(study, tmp_path, name):
    cfg, outside = study
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    before = snapshot(outside)
    (out / name).unlink()
    (out / name).symlink_to(outside / "precious.txt")
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    assert_one_line_error(code, err, out / name, "symbolic link")
    assert snapshot(outside) == before


def _lock_fifo(out):
    os.mkfifo(out / runfolder.LOCK)


def _parts_file(out):
    shutil.rmtree(out / runfolder.PARTS)
    (out / runfolder.PARTS).write_text("not a folder")


def _summary_folder(out):
    (out / "summary.csv").unlink()
    (out / "summary.csv").mkdir()


WRONG_KINDS = {
    "lock-a-pipe": (_lock_fifo, runfolder.LOCK, "not a regular file"),
    "parts-a-file": (_parts_file, runfolder.PARTS, "not a folder"),
    "summary-a-folder": (_summary_folder, "summary.csv", "not a regular file"),
}


@pytest.mark.parametrize("case", WRONG_KINDS)
def test_an_entry_of_the_wrong_kind_is_refused(study, tmp_path, case):
    cfg, _ = study
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    plant, name, message = WRONG_KINDS[case]
    plant(out)
    for flag in ("--resume", "--force"):
        code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", flag)
        assert_one_line_error(code, err, out / name, message)


def test_a_marker_that_is_a_link_is_not_followed(study, tmp_path):
    cfg, outside = study
    out = tmp_path / "run"
    complete_run(cfg, out)
    shutil.move(out / runfolder.MARKER, outside / "marker")
    (out / runfolder.MARKER).symlink_to(outside / "marker")
    before = snapshot(outside)
    assert not runfolder.is_run_folder(str(out))
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--force")
    assert_one_line_error(code, err, out, "not a gdjax run folder", "symbolic link")
    assert snapshot(outside) == before and (out / "summary.csv").exists()


# --------------------------------------------------------------------------------------- ownership
def test_force_removes_only_what_gdjax_made_and_names_the_rest(study, tmp_path):
    cfg, _ = study
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    (out / "notes.md").write_text("my notes")
    (out / "analysis").mkdir()
    (out / "analysis" / "fit.py").write_text("print(1)")
    code, stdout, err = run_cli("run", str(cfg), "--out", str(out), "--force")
    assert code == 0, err
    assert (out / "notes.md").read_text() == "my notes"
    assert (out / "analysis" / "fit.py").read_text() == "print(1)"
    note = [line for line in stdout.splitlines() if "--force kept" in line]
    assert len(note) == 1 and "notes.md" in note[0] and "analysis" in note[0], stdout
    owned = runfolder.RunFolder(str(out)).owned()
    assert "notes.md" not in owned and {"config.toml", "manifest.json", "summary.csv"} <= set(owned)
    assert not (out / runfolder.PARTS).exists() and not (out / runfolder.PARTIAL_MARKER).exists()


@pytest.mark.parametrize("listed", ["notes.md", "analysis"])
def test_a_marker_listing_a_name_gdjax_never_makes_is_refused(study, tmp_path, listed):
    """The ownership list is trusted only with names gdjax makes: one edited to list a user's
    `notes.md` made `--force` delete it."""
    cfg, _ = study
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    (out / "notes.md").write_text("my notes")
    (out / "analysis").mkdir()
    marker = json.loads((out / runfolder.MARKER).read_text())
    marker["owned"].append(listed)
    (out / runfolder.MARKER).write_text(json.dumps(marker))
    for flag in ("--force", "--resume"):
        code, _, err = run_cli("run", str(cfg), "--out", str(out), flag)
        assert code == 2 and "marker is damaged" in err, err
    assert (out / "notes.md").read_text() == "my notes" and (out / "analysis").is_dir()


def test_a_copied_marker_is_refused(study, tmp_path):
    cfg, _ = study
    run = tmp_path / "run"
    complete_run(cfg, run)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "summary.csv").write_text("my own summary")
    (mine / "config.toml").write_text("# my own config")
    shutil.copy(run / runfolder.MARKER, mine / runfolder.MARKER)
    before = snapshot(mine)
    for flag in ("--force", "--resume"):
        code, _, err = run_cli("run", str(cfg), "--out", str(mine), "-q", flag)
        assert_one_line_error(code, err, mine, "written for another folder", run.resolve())
        assert snapshot(mine) == before
    assert not runfolder.is_run_folder(str(mine)) and runfolder.is_run_folder(str(run))


def test_plots_are_owned_and_force_removes_them_but_not_a_users_image(study, tmp_path):
    cfg, _ = study
    plotting = tmp_path / "plots.toml"
    plotting.write_text(cfg.read_text().replace("plots = []", 'plots = ["loss_curves"]'))
    out = tmp_path / "run"
    complete_run(plotting, out, plots=True)
    assert (out / "loss_curves.png").is_file() and not (out / runfolder.STAGING).exists()
    assert "loss_curves.png" in runfolder.RunFolder(str(out)).owned()
    (out / "my_figure.png").write_bytes(b"mine")
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--force", plots=True)  # no plots now
    assert code == 0, err
    assert not (out / "loss_curves.png").exists() and (out / "my_figure.png").read_bytes() == b"mine"


def test_a_moved_run_folder_keeps_its_marker_and_a_copied_one_does_not(study, tmp_path):
    cfg, _ = study
    run = tmp_path / "run"
    interrupted_run(cfg, run)
    moved, copied = tmp_path / "moved", tmp_path / "copied"
    shutil.copytree(run, copied, symlinks=True)
    run.rename(moved)  # same inode: still the folder the marker was written for
    assert runfolder.is_run_folder(str(moved)) and not runfolder.is_run_folder(str(copied))
    code, _, err = run_cli("run", str(cfg), "--out", str(moved), "-q", "--resume")
    assert code == 0, err
    code, _, err = run_cli("run", str(cfg), "--out", str(copied), "-q", "--resume")
    assert_one_line_error(code, err, copied, "written for another folder")


def test_a_plot_never_replaces_a_users_file_of_the_same_name(study, tmp_path):
    cfg, _ = study
    plotting = tmp_path / "plots.toml"
    plotting.write_text(cfg.read_text().replace("plots = []", 'plots = ["loss_curves"]'))
    out = tmp_path / "run"
    interrupted_run(plotting, out)
    (out / "loss_curves.png").write_bytes(b"my own figure")
    code, stdout, err = run_cli("run", str(plotting), "--out", str(out), "--resume", plots=True)
    assert code == 0, err
    assert (out / "loss_curves.png").read_bytes() == b"my own figure"
    assert "loss_curves.png is not gdjax's, so it was kept" in stdout, stdout


def test_a_folder_with_a_version_1_marker_owns_what_gdjax_wrote_then(study, tmp_path):
    cfg, _ = study
    out = tmp_path / "run"
    complete_run(cfg, out)
    (out / runfolder.MARKER).write_text('{"format": "gdjax-run-folder", "version": 1}')
    (out / "notes.md").write_text("mine")
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--force")
    assert code == 0, err
    assert (out / "notes.md").read_text() == "mine" and (out / "summary.csv").exists()
    marker = json.loads((out / runfolder.MARKER).read_text())
    assert marker["version"] == runfolder.MARKER_VERSION and "notes.md" not in marker["owned"]


def test_the_ownership_list_is_written_before_each_file_and_a_refused_run_removes_only_those(
    study, tmp_path, monkeypatch
):
    """Crash safety: at the moment any file is created, the marker already lists it; so a run that is
    refused afterwards removes every file gdjax wrote (the report page's too) and nothing else. One
    run with its report page serves both checks (drawing the page is most of its time)."""
    cfg, _ = study
    out = tmp_path / "run"
    seen = []
    real = gdjax_io.atomic_write

    def spy(path, write):
        path = os.fspath(path)
        name = os.path.relpath(path, out).split(os.sep)[0]
        if os.path.abspath(path).startswith(str(out) + os.sep) and name != runfolder.MARKER:
            seen.append((name, name in json.loads((out / runfolder.MARKER).read_text())["owned"]))
        return real(path, write)

    monkeypatch.setattr(gdjax_io, "atomic_write", spy)
    complete_run(cfg, out, plots=True)  # the report page's files too
    monkeypatch.undo()
    assert seen and all(listed for _, listed in seen), seen
    assert runfolder.STAGING in {name for name, _ in seen}  # the page's files, written before the move
    (out / "notes.md").write_text("mine")
    folder, _ = runfolder.prepare(config_lib.load(cfg), str(out), resume=False, force=True)
    folder.discard()
    assert sorted(os.listdir(out)) == [runfolder.MARKER, "notes.md"]


# --------------------------------------------------------------------------------- data identity
def test_resume_refuses_changed_data(study, tmp_path):
    cfg, _ = study
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert str(tmp_path / "data.csv") in manifest["data_files"]
    _csv(tmp_path / "data.csv", scale=2.0)
    before = snapshot(out)
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    assert_one_line_error(code, err, tmp_path / "data.csv", "changed", "--force", "new --out")
    assert snapshot(out) == before
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--force")
    assert code == 0, err


def test_a_changed_cost_module_is_refused_on_resume(tmp_path):
    _csv(tmp_path / "data.csv")
    (tmp_path / "mycost.py").write_text(
        "import jax.numpy as jnp\n\ndef cost(p, data=None):\n    return jnp.sum((p - 1.0) ** 2)\n"
    )
    cfg = tmp_path / "fn.toml"
    cfg.write_text(
        CSV_CONFIG.replace('[cost]\nmodel = "linear"', '[cost]\ncallable = "mycost.py:cost"\nparams0 = [0.0]')
    )
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    with open(tmp_path / "mycost.py", "a") as f:
        f.write("# edited\n")
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    assert_one_line_error(code, err, tmp_path / "mycost.py", "changed")


def test_a_changed_metric_file_is_refused_on_resume(study, tmp_path):
    # `[cost] metrics = ["file.py:fn"]` is code the histories depend on, like a callable cost.
    (tmp_path / "mymetrics.py").write_text(
        "import jax.numpy as jnp\n\ndef size(params, data):\n    return jnp.sum(params['w'] ** 2)\n"
    )
    cfg, _ = study
    metric = 'model = "linear"\nmetrics = ["mymetrics.py:size"]'
    cfg.write_text(CSV_CONFIG.replace('model = "linear"', metric))
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert str(tmp_path / "mymetrics.py") in manifest["data_files"]
    with open(tmp_path / "mymetrics.py", "a") as f:
        f.write("# edited\n")
    before = snapshot(out)
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    assert_one_line_error(code, err, tmp_path / "mymetrics.py", "changed", "--force")
    assert snapshot(out) == before


def test_a_folder_without_fingerprints_still_resumes_with_a_note(study, tmp_path):
    cfg, _ = study
    out = tmp_path / "run"
    interrupted_run(cfg, out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["data_files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    code, stdout, err = run_cli("run", str(cfg), "--out", str(out), "--resume")
    assert code == 0, err
    assert "kept no data fingerprints" in stdout, stdout


def _existing(cfg, out):
    out.mkdir()
    (out / "notes.md").write_text("mine")
    return [], "already exists"


def _copied_marker(cfg, out):
    other = out.parent / "other"
    complete_run(cfg, other)
    out.mkdir()
    shutil.copy(other / runfolder.MARKER, out / runfolder.MARKER)
    (out / "notes.md").write_text("mine")
    return ["--force"], "written for another folder"


def _linked_lock(cfg, out):
    interrupted_run(cfg, out)
    (out / runfolder.LOCK).symlink_to(out.parent / "elsewhere")
    return ["--resume"], "symbolic link"


def _other_config(cfg, out):
    interrupted_run(cfg, out)
    cfg.write_text(cfg.read_text().replace("num_steps = 50", "num_steps = 60"))
    return ["--resume"], "different config"


def _changed_data(cfg, out):
    interrupted_run(cfg, out)
    _csv(out.parent / "data.csv", scale=3.0)
    return ["--resume"], "changed"


EARLY_REFUSALS = {
    "existing-out": _existing,
    "copied-marker": _copied_marker,
    "linked-lock": _linked_lock,
    "other-config": _other_config,
    "changed-data": _changed_data,
}


@pytest.mark.parametrize("case", EARLY_REFUSALS)
def test_a_folder_is_refused_before_anything_is_computed(study, tmp_path, monkeypatch, case):
    cfg, _ = study
    out = tmp_path / "run"
    flags, message = EARLY_REFUSALS[case](cfg, out)

    def computed(*args, **kwargs):
        raise AssertionError("the data was loaded before the folder was judged")

    monkeypatch.setattr(experiment, "build_problems", computed)
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", *flags)
    assert_one_line_error(code, err, out, message)


# -------------------------------------------------------------------------------- hostile readers
def _nested_json():
    return "[" * DEEP + "]" * DEEP


def test_a_deeply_nested_part_is_redone_with_a_note(study, tmp_path):
    cfg, _ = study
    out, ref = tmp_path / "run", tmp_path / "ref"
    complete_run(cfg, ref)
    interrupted_run(cfg, out)
    (out / runfolder.PARTS / "gd.json").write_text(_nested_json())
    code, stdout, err = run_cli("run", str(cfg), "--out", str(out), "--resume")
    assert code == 0, err
    assert "part of gd is damaged, so it is redone" in stdout and "nested" in stdout, stdout
    for name in ("summary.csv", "histories.npz"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def _huge_count(path):
    meta = json.loads(path.read_text())
    meta["num_steps"] = 10**30
    path.write_text(json.dumps(meta))


def _wrong_types(path):
    meta = json.loads(path.read_text())
    meta["rows"] = "rows"
    path.write_text(json.dumps(meta))


def _text_loss(path):
    meta = json.loads(path.read_text())
    for row in meta["rows"]:
        row["final_loss"] = "abc"
    path.write_text(json.dumps(meta))


def _other_coords(path):
    meta = json.loads(path.read_text())
    for c in meta["coords"]:
        c["learning_rate"] = 99.0
    path.write_text(json.dumps(meta))


def _nan_histories(path):
    npz = path.with_suffix(".npz")
    with np.load(npz) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["loss_history"] = np.full_like(arrays["loss_history"], np.nan)
    np.savez(npz, **arrays)


@pytest.mark.parametrize(
    "hurt",
    [_huge_count, _wrong_types, _text_loss, _other_coords, _nan_histories],
    ids=["huge-count", "wrong-types", "text-loss", "other-coords", "nan-histories"],
)
def test_a_part_with_hostile_values_is_redone_with_a_note(study, tmp_path, hurt):
    cfg, _ = study
    out, ref = tmp_path / "run", tmp_path / "ref"
    complete_run(cfg, ref)
    interrupted_run(cfg, out)
    hurt(out / runfolder.PARTS / "gd.json")
    code, stdout, err = run_cli("run", str(cfg), "--out", str(out), "--resume")
    assert code == 0, err
    assert "part of gd is damaged, so it is redone" in stdout, stdout
    for name in ("summary.csv", "histories.npz"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


@pytest.mark.parametrize("status", ["partial", "complete"])
def test_a_deeply_nested_manifest_is_one_line(study, tmp_path, status):
    cfg, _ = study
    out = tmp_path / "run"
    (complete_run if status == "complete" else interrupted_run)(cfg, out)
    (out / "manifest.json").write_text(_nested_json())
    code, _, err = run_cli("run", str(cfg), "--out", str(out), "-q", "--resume")
    assert_one_line_error(code, err, out / "manifest.json", "nested")


def test_a_deeply_nested_toml_config_is_one_line(tmp_path):
    cfg = tmp_path / "deep.toml"
    cfg.write_text("x = " + "[" * DEEP + "]" * DEEP + "\n")
    code, _, err = run_cli("run", str(cfg), "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, cfg, "nested too deeply")


def test_a_model_file_with_nested_metadata_is_one_line(tmp_path):
    path = tmp_path / "model.npz"
    GDRegressor(num_steps=5, tol=None).fit(np.arange(8.0)[:, None], np.arange(8.0)).save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = next(k for k, v in arrays.items() if v.dtype.kind == "U" and v.shape == ())
    arrays[meta] = np.asarray(_nested_json())
    np.savez(path, **arrays)
    with pytest.raises(ValueError) as info:
        GDRegressor.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not isinstance(info.value, RecursionError)


# (text replaced, its replacement, the key named, the message); the line is the replacement's
# line that sets the key.
HUGE_INTEGERS = {
    "a seed of 2**63": ("seeds = [0]", "seeds = [0, 9223372036854775808]", "seeds[1]", "64 bits"),
    "a 301-digit learning rate": (
        "grid.learning_rate = [0.01, 0.1]",
        "grid.learning_rate = [0.01, 1" + "0" * 300 + "]",
        "optimizers[0].grid.learning_rate[1]",
        "64 bits",
    ),
    "patience of 2**31": ("[run]", "[stopping]\npatience = 2147483648\n[run]", "stopping.patience", "2**31"),
    "record_every of 2**70": (
        "[run]",
        f"[execution]\nrecord_every = {2**70}\n[run]",
        "execution.record_every",
        "64 bits",
    ),
}


@pytest.mark.parametrize("case", HUGE_INTEGERS)
def test_a_huge_integer_in_a_config_is_one_line_naming_key_and_line(tmp_path, case):
    old, new, key, message = HUGE_INTEGERS[case]
    _csv(tmp_path / "data.csv")
    cfg = tmp_path / "study.toml"
    cfg.write_text(CSV_CONFIG.replace(old, new, 1))
    lines = cfg.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if " = " in text and text in new.splitlines())
    code, _, err = run_cli("run", str(cfg), "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, f"{cfg}:{line}: {key}:", message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make", [os.mkfifo, os.mkdir], ids=["a pipe", "a folder"])
def test_a_model_path_that_is_not_a_regular_file_is_one_line(tmp_path, make):
    path = tmp_path / "model.npz"
    make(path)
    with pytest.raises(ValueError) as info:
        GDRegressor.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


CONFIG_FILES = {
    "a folder": (lambda p: p.mkdir(), "is a folder"),
    "a pipe": (lambda p: os.mkfifo(p), "not a regular file"),
    "latin-1 text": (lambda p: p.write_bytes(b'name = "caf\xe9"\n'), "not UTF-8"),
}


@pytest.mark.parametrize("case", CONFIG_FILES)
def test_a_config_that_is_not_utf8_text_in_a_file_is_one_line(tmp_path, case):
    make, message = CONFIG_FILES[case]
    cfg = tmp_path / "study.toml"
    make(cfg)
    code, _, err = run_cli("run", str(cfg), "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, cfg, message)


@pytest.mark.parametrize("suffix", ["csv", "npz"])
def test_a_data_file_that_is_a_pipe_is_one_line(tmp_path, suffix):
    os.mkfifo(tmp_path / f"data.{suffix}")
    cfg = tmp_path / "study.toml"
    cfg.write_text(
        CSV_CONFIG.replace('source = "csv"', f'source = "{suffix}"').replace("data.csv", f"data.{suffix}")
    )
    if suffix == "npz":
        cfg.write_text(cfg.read_text().replace('target = "y"\n', ""))
    code, _, err = run_cli("run", str(cfg), "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, tmp_path / f"data.{suffix}", "not a regular file")


def test_a_latin1_csv_is_one_line_naming_the_file(tmp_path):
    (tmp_path / "data.csv").write_bytes(b"x,y\n1,2\n3,4\ncaf\xe9,5\n")
    cfg = tmp_path / "study.toml"
    cfg.write_text(CSV_CONFIG)
    code, _, err = run_cli("run", str(cfg), "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, f"{tmp_path / 'data.csv'}, line 4", "UTF-8")


# ------------------------------------------------------------------------------------- zip budget
def _deflated(prefix: bytes, zeros: int) -> tuple[bytes, int]:
    """`prefix` then `zeros` zero bytes as one raw deflate stream (level 6, as zipfile writes), and
    the CRC-32 of those bytes.

    After a full flush zlib starts afresh, so each 16 MiB block of zeros deflates to the same bytes:
    deflated once and repeated (deflating 1.5 GiB takes zlib about 6 s of CPU)."""
    block = bytes(1 << 24)
    full, rest = divmod(zeros, len(block))
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    body = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH) if full else b""
    tail = deflate.compress(bytes(rest)) + deflate.flush()
    crc = zlib.crc32(prefix)
    for _ in range(full):
        crc = zlib.crc32(block, crc)
    return head + body * full + tail, zlib.crc32(bytes(rest), crc)


def _bomb(path, nbytes: int):
    """An `.npz` whose member `X.npy` is `nbytes` of float64 zeros, deflated (about 1000:1), beside a
    small `y.npy`; a plain zip archive written member by member (local headers, central directory)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (nbytes // 8,)}
    )
    y = io.BytesIO()
    np.lib.format.write_array(y, np.zeros(nbytes // 8 // 1000))
    members = [("X.npy", header.getvalue(), nbytes), ("y.npy", y.getvalue(), 0)]
    local, central = b"", b""
    for name, prefix, zeros in members:
        data, crc = _deflated(prefix, zeros)
        sizes = (crc, len(data), len(prefix) + zeros, len(name))
        # version 2.0, no flags, deflated, 1980-01-01 00:00
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, *sizes, 0, 0, 0, 0, 0, len(local)
        )
        central += name.encode()
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, *sizes, 0) + name.encode() + data
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    pathlib.Path(path).write_bytes(local + central + end)


def test_a_zip_bomb_is_refused_by_the_budget_before_anything_is_inflated(tmp_path, monkeypatch):
    path = tmp_path / "bomb.npz"
    _bomb(path, 64 << 20)  # 64 MiB from about 64 KiB
    assert os.path.getsize(path) < (1 << 20)
    monkeypatch.setenv(gdjax_io.BUDGET_ENV, str(16 << 20))

    def inflated(*args, **kwargs):
        raise AssertionError("a member was opened before the budget was checked")

    monkeypatch.setattr(zipfile.ZipFile, "open", inflated)
    with pytest.raises(gdjax_io.FileFormatError) as info:
        gdjax_io.inspect_npz(path)
    message = str(info.value)
    assert str(path) in message and "budget" in message and gdjax_io.BUDGET_ENV in message
    assert "zip bomb" in message and "\n" not in message


def test_the_budget_refuses_a_bomb_as_data_in_one_line(tmp_path, monkeypatch):
    _bomb(tmp_path / "bomb.npz", 64 << 20)
    monkeypatch.setenv(gdjax_io.BUDGET_ENV, str(16 << 20))
    cfg = tmp_path / "study.toml"
    cfg.write_text(
        CSV_CONFIG.replace(
            'source = "csv"\npath = "data.csv"\ntarget = "y"', 'source = "npz"\npath = "bomb.npz"'
        )
    )
    code, _, err = run_cli("run", str(cfg), "--out", str(tmp_path / "run"), "-q")
    assert_one_line_error(code, err, tmp_path / "bomb.npz", "budget")
    assert not (tmp_path / "run").exists()


def test_a_bad_budget_setting_is_named(monkeypatch):
    monkeypatch.setenv(gdjax_io.BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match=gdjax_io.BUDGET_ENV):
        gdjax_io.decompressed_budget()


def test_the_default_budget_is_a_fraction_of_available_memory(monkeypatch):
    monkeypatch.delenv(gdjax_io.BUDGET_ENV, raising=False)
    assert 0 < gdjax_io.decompressed_budget() <= gdjax_io.memory_budget(1.0) // 4


def test_the_default_budget_respects_an_address_space_limit(monkeypatch):
    import resource

    monkeypatch.delenv(gdjax_io.BUDGET_ENV, raising=False)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1 << 30, resource.RLIM_INFINITY))
    assert gdjax_io.decompressed_budget() <= 1 << 28  # a quarter of `ulimit -v` 1 GiB


@pytest.mark.slow
def test_the_issue_19_bomb_is_refused(tmp_path, monkeypatch):
    """The probe's case: 1.5 GiB of arrays in about 1.5 MB passed the old ratio limit."""
    path = tmp_path / "bomb.npz"
    _bomb(path, 3 << 29)
    assert os.path.getsize(path) < 2 << 20
    monkeypatch.setenv(gdjax_io.BUDGET_ENV, str(1 << 30))
    with pytest.raises(ValueError, match="budget"):
        data.load_npz(path)


# ------------------------------------------------------------------------------ gdjax report --out
def test_report_out_writes_only_into_a_new_folder_or_one_gdjax_made(study, tmp_path):
    """`gdjax report RUN --out DIR` went straight to the page writer: it followed a `figures/` link
    out of DIR and replaced a user's `report.html`. DIR now has a run folder's protections."""
    cfg, outside = study
    run = tmp_path / "run"
    complete_run(cfg, run)
    before = snapshot(outside)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "figures").symlink_to(outside)
    (linked / "report.html").symlink_to(outside / "precious.txt")
    users = tmp_path / "users"
    (users / "figures").mkdir(parents=True)
    (users / "report.html").write_text("mine")
    (tmp_path / "a_link").symlink_to(users, target_is_directory=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "new_target", target_is_directory=True)
    for out, message in [
        (linked, "already holds files gdjax did not make"),
        (users, "already holds files gdjax did not make"),
        (tmp_path / "a_link", "is a symbolic link"),
        (cfg, "exists and is not a folder"),
        (cfg / "sub", f"cannot be made: {cfg} is a file, not a folder"),
        (tmp_path / "dangling", "is a dangling symbolic link"),
    ]:
        code, _, err = run_cli("report", str(run), "--out", str(out))
        assert code == 2 and message in err, err
    assert snapshot(outside) == before
    assert (users / "report.html").read_text() == "mine" and not os.listdir(users / "figures")
    assert not (tmp_path / "new_target").exists()

    fresh = tmp_path / "fresh"
    for _ in range(2):  # a new folder, then the same folder again: gdjax's own files are replaced
        code, _, err = run_cli("report", str(run), "--out", str(fresh))
        assert code == 0, err
    assert sorted(os.listdir(fresh)) == [runfolder.MARKER, "figures", "report.html"]
    (fresh / "figures" / "notes.txt").write_text("mine")  # a user's file in gdjax's figures/ stays
    code, _, err = run_cli("report", str(run), "--out", str(fresh))
    assert code == 2 and "figures/notes.txt" in err, err
    assert (fresh / "figures" / "notes.txt").read_text() == "mine"
    (fresh / "report.html").unlink()
    (fresh / "report.html").symlink_to(outside / "precious.txt")  # a link where the page goes
    code, _, err = run_cli("report", str(run), "--out", str(fresh))
    assert code == 2 and "is a symbolic link" in err, err
    assert snapshot(outside) == before


def test_a_run_folder_with_files_of_the_wrong_shape_is_one_line_in_report(study, tmp_path):
    """Valid JSON of the wrong shape in summary.json or manifest.json was a Python traceback."""
    cfg, _ = study
    ref = tmp_path / "ref"
    complete_run(cfg, ref)
    cases = [
        ("summary.json", 5, "summary.json is not a list of summary rows"),
        ("summary.json", None, "summary.json is not a list of summary rows"),
        ("summary.json", {"a": 1}, "summary.json is not a list of summary rows"),
        ("summary.json", [[1]], "summary.json is not a list of summary rows"),
        ("summary.json", [{"optimizer": 1}], "summary.json has 0 rows for"),
        ("manifest.json", {"units": {"gd": 5}}, "'units' is not a table of units"),
        ("manifest.json", {"problems": 7}, "'problems' is not a table of problems"),
    ]
    for i, (name, value, message) in enumerate(cases):
        run = tmp_path / f"run{i}"
        shutil.copytree(ref, run)
        if name == "manifest.json":
            value = {**json.loads((run / name).read_text()), **value}
        (run / name).write_text(json.dumps(value))
        code, _, err = run_cli("report", str(run), "--out", str(tmp_path / f"report{i}"))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (value, err)


def test_a_run_given_twice_to_report_is_refused(study, tmp_path):
    """Its lanes would count twice: twice the seeds in every statistic and paired test."""
    cfg, _ = study
    run = tmp_path / "run"
    complete_run(cfg, run)
    (tmp_path / "alias").symlink_to(run, target_is_directory=True)
    for other in (run, f"{run}/", tmp_path / "alias"):
        code, _, err = run_cli("report", str(run), str(other), "--out", str(tmp_path / "report"))
        assert code == 2 and "is given twice (first as" in err, err
    assert not (tmp_path / "report").exists()
