"""The `gdjax` command, driven in-process through `gdjax.study.cli.main(argv)` (one subprocess test of the
installed script). The default study's programs compile once per session and are reused after."""

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tomllib

import jax
import numpy as np
import pytest

from gdjax import data, reference
from gdjax.study import cli, config, experiment, preflight
from gdjax.study.config import ConfigError
from tests.helpers import run_cli

DEFAULT_LANES = {"gd": 15, "momentum": 6, "adam": 5, "minibatch": 5}
MANIFEST_KEYS = {
    "name",
    "status",
    "command",
    "git_commit",
    "precision",
    "gdjax",
    "jax",
    "optax",
    "numpy",
    "python",
    "backend",
    "devices",
    "started",
    "finished",
    "compile_seconds",
    "run_seconds",
    "problems",
    "units",
    "gradcheck",
}
HISTORY_FIELDS = ("loss_history", "grad_norm_history", "status", "steps", "stop_step", "params/w", "params/b")


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """One uninterrupted run of the default study, with plots."""
    folder = tmp_path_factory.mktemp("default") / "run"
    before = jax.config.jax_enable_x64
    try:
        code, out, err = run_cli("run", "--out", str(folder))
    finally:
        jax.config.update("jax_enable_x64", before)
    assert code == 0, err
    return folder, out, err


def _npz(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_run_default_writes_every_file(default_run):
    folder, out, _ = default_run
    for name in experiment.FILES:
        assert (folder / name).is_file(), name
    assert not (folder / experiment.PARTIAL_MARKER).exists()
    assert not (folder / experiment.PARTS).exists()
    assert "best configuration" in out and str(folder) in out
    # The default study's full-batch optimizers are deterministic: one pair each, and the verdict says
    # why it names no best optimizer (not a silent tie).
    assert "No best optimizer: gd has the best median suboptimality" in out
    assert "both ran full batch from one start" in out

    # The resolved config is the default study, and loads back as it.
    assert config.load(folder / "config.toml") == config.load_default()

    rows = json.loads((folder / "summary.json").read_text())
    counts = {}
    for row in rows:
        counts[row["optimizer"]] = counts.get(row["optimizer"], 0) + 1
    assert counts == DEFAULT_LANES
    assert {r["status"] for r in rows} <= {"converged", "max_steps", "diverged", "nonfinite"}
    csv_lines = (folder / "summary.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + sum(DEFAULT_LANES.values())
    assert csv_lines[0].startswith("optimizer,lane,rule,learning_rate")

    manifest = json.loads((folder / "manifest.json").read_text())
    assert MANIFEST_KEYS <= set(manifest)
    assert manifest["status"] == "complete"
    assert manifest["precision"] == "float64"
    assert manifest["problems"]["linear"]["max_stable_lr"] == pytest.approx(1.0)
    assert set(manifest["units"]) == set(DEFAULT_LANES)

    arrays = _npz(folder / "histories.npz")
    for unit, lanes in DEFAULT_LANES.items():
        for name in HISTORY_FIELDS:
            assert arrays[f"{unit}/{name}"].shape[0] == lanes, (unit, name)
        assert arrays[f"{unit}/loss_history"].shape == (lanes, 201)
        assert arrays[f"{unit}/params_history/w"].shape == (lanes, 201, 1)
    assert list(arrays["status_names"]) == ["max_steps", "converged", "diverged", "nonfinite", "invalid"]
    np.testing.assert_array_equal(arrays["minibatch/coords/seed"], [0, 1, 2, 3, 4])

    assert "PASS" in (folder / "gradcheck.txt").read_text()
    for png in ("loss_curves.png", "lr_sweep.png", "contour.png", "fitted_line.png"):
        data = (folder / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png
    assert sorted(manifest["plots"]) == sorted(
        ["loss_curves.png", "lr_sweep.png", "contour.png", "fitted_line.png"]
    )


def test_default_results_are_right(default_run):
    """Against oracles: GD's divergence sits at 2/L = 1 and its best fit is the least-squares line."""
    folder, _, _ = default_run
    rows = [r for r in json.loads((folder / "summary.json").read_text()) if r["optimizer"] == "gd"]
    diverged = [r["learning_rate"] for r in rows if r["status"] == "diverged"]
    stable = [r["learning_rate"] for r in rows if r["status"] != "diverged"]
    assert max(stable) < 1.0 < min(diverged)
    X, y = data.house_prices()
    z = data.Standardizer.fit(X)
    best = min((r for r in rows if r["status"] == "converged"), key=lambda r: r["steps"])
    arrays = _npz(folder / "histories.npz")
    fitted = z.unstandardize(
        {"w": arrays["gd/params/w"][best["lane"]], "b": arrays["gd/params/b"][best["lane"]]}
    )
    exact = reference.least_squares(X, y)
    np.testing.assert_allclose(fitted["w"], exact["w"], rtol=1e-6)
    np.testing.assert_allclose(fitted["b"], exact["b"], rtol=1e-6)


def test_refuses_to_overwrite(default_run):
    folder, _, _ = default_run
    before = (folder / "summary.csv").read_text()
    code, _, err = run_cli("run", "--out", str(folder), "--no-plots")
    assert code == 2
    assert err.startswith("gdjax: error: run folder") and "already exists" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert (folder / "summary.csv").read_text() == before


def test_force_replaces_a_run_folder(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    code, _, err = run_cli("run", "--out", str(folder), "--force", "-q", "--no-plots")
    assert code == 2 and "not a gdjax run folder" in err  # --force never deletes what gdjax did not write
    (folder / "notes.txt").unlink()
    assert run_cli("run", "--out", str(folder), "-q", "--no-plots")[0] == 0
    (folder / "stale.png").write_bytes(b"x")
    code, out, err = run_cli("run", "--out", str(folder), "--force", "-q", "--no-plots")
    assert code == 0, err
    assert out == "" and err == ""  # -q
    assert (folder / "stale.png").read_bytes() == b"x"  # not gdjax's, so --force keeps it (issue 19)


def _half_gradient(p, batch):
    return jax.tree.map(lambda g: 0.5 * g, reference.mse_grad(p, batch))


def test_gradient_check_failure_stops_before_running(tmp_path, monkeypatch):
    real = preflight.check_grad

    def wrong_analytic(cost, params, batch, *, analytic=None, **kwargs):
        return real(cost, params, batch, analytic=_half_gradient, **kwargs)

    def no_sweep(*args, **kwargs):
        raise AssertionError("a sweep ran after a failed gradient check")

    monkeypatch.setattr(preflight, "check_grad", wrong_analytic)
    monkeypatch.setattr(experiment, "sweep", no_sweep)
    folder = tmp_path / "run"
    code, _, err = run_cli("run", "--out", str(folder))
    assert code == 1
    assert "FAIL" in err and "analytic" in err
    assert "gdjax: error: gradient check failed for cost 'linear'" in err and "nothing was run" in err
    assert not folder.exists()
    code, out, err = run_cli("check")
    assert code == 1 and "FAIL" in out and "gradient check failed" in err


class _Interrupt:
    """Makes the `at`-th sweep of a run fail: its `run_plan` raises `exc` before running, or, with
    `chunked`, it is planned in chunks of 2 lanes (`plan_sweep`, before the folder is made) and its
    progress raises `exc` after the first chunk. `undo()` puts the real functions back."""

    def __init__(self, monkeypatch, at, exc, chunked=False):
        self.monkeypatch, self.at, self.exc, self.chunked = monkeypatch, at, exc, chunked
        self.real = (preflight.plan_sweep, experiment.run_plan)
        self.plans = self.runs = 0
        monkeypatch.setattr(preflight, "plan_sweep", self.plan)
        monkeypatch.setattr(experiment, "run_plan", self.run)

    def plan(self, *args, **kwargs):
        self.plans += 1
        if self.chunked and self.plans == self.at:
            kwargs = dict(kwargs, execution=dataclasses.replace(kwargs["execution"], chunk_size=2))
        return self.real[0](*args, **kwargs)

    def run(self, plan, *, progress=None):
        self.runs += 1
        if self.runs != self.at:
            return self.real[1](plan, progress=progress)
        if not self.chunked:
            raise self.exc

        def boom(done, total):
            raise self.exc

        return self.real[1](plan, progress=boom)

    def undo(self):
        self.monkeypatch.setattr(preflight, "plan_sweep", self.real[0])
        self.monkeypatch.setattr(experiment, "run_plan", self.real[1])


def _assert_same_results(a, b):
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()
    assert (a / "summary.json").read_text() == (b / "summary.json").read_text()
    x, y = _npz(a / "histories.npz"), _npz(b / "histories.npz")
    assert sorted(x) == sorted(y)
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert (a / "config.toml").read_text() == (b / "config.toml").read_text()


# (id, the run's sweep that fails, what it raises, fail after a chunk, exit code, PARTIAL lines)
INTERRUPTIONS = [
    (
        "ctrl-c before adam",
        3,
        KeyboardInterrupt(),
        False,
        130,
        ["done:     gd (15 lanes), momentum (6 lanes)", "pending:  adam, minibatch"],
    ),
    (
        "error in momentum's second chunk",
        2,
        RuntimeError("device lost"),
        True,
        1,
        ["done:     gd (15 lanes)", "partial:  momentum: 2 of 6 lanes", "pending:  adam, minibatch"],
    ),
]


@pytest.mark.parametrize(
    ("at", "exc", "chunked", "code", "partial_lines"), [pytest.param(*r[1:], id=r[0]) for r in INTERRUPTIONS]
)
def test_interrupted_run_resumes_to_the_uninterrupted_result(
    default_run, tmp_path, monkeypatch, at, exc, chunked, code, partial_lines
):
    folder = tmp_path / "run"
    flaky = _Interrupt(monkeypatch, at, exc, chunked)
    got, _, err = run_cli("run", "--out", str(folder), "--no-plots")
    assert got == code, err
    assert "Traceback" not in err
    assert f"partial results in {folder}; finish with: gdjax run --out {folder} --resume" in err

    marker = (folder / experiment.PARTIAL_MARKER).read_text()
    for line in partial_lines:
        assert line in marker, marker
    assert f"--out {folder} --resume" in marker
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "partial"
    done = [line.split(":", 1)[1] for line in partial_lines if line.startswith("done:")][0]
    finished = [k for k in DEFAULT_LANES if f" {k} (" in done]
    assert [k for k, v in manifest["units"].items() if v["status"] == "complete"] == finished
    rows = json.loads((folder / "summary.json").read_text())
    assert {r["optimizer"] for r in rows} == set(finished)  # the finished results are already written
    if chunked:
        assert (folder / experiment.PARTS / "momentum.partial.npz").is_file()

    flaky.undo()
    got, out, err = run_cli("run", "--out", str(folder), "--resume", "--no-plots")
    assert got == 0, err
    assert f"{len(finished)} of 4 optimizers already done" in out
    assert not (folder / experiment.PARTIAL_MARKER).exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumed"]) == 1
    _assert_same_results(folder, default_run[0])

    # (The page of a finished folder resumed again is drawn in the test below: not twice more here.)
    got, out, _ = run_cli("run", "--out", str(folder), "--resume", "--no-plots")
    assert got == 0 and "nothing to resume" in out


def test_resume_refuses_a_different_config(default_run, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text(config.load_default().to_toml().replace("num_steps = 200", "num_steps = 100"))
    code, _, err = run_cli("run", str(other), "--out", str(default_run[0]), "--resume")
    assert code == 2 and "different config (differs in run.num_steps)" in err


def _old_format(cfg) -> str:
    """`cfg`'s config.toml as gdjax wrote it before the [stopping] and [execution] tables existed: their
    keys under [run], without the ones added since (min_delta, divergence_patience, unroll, layout)."""
    d = cfg.to_dict()
    stopping, execution = d.pop("stopping"), d.pop("execution")
    for key, home in config.LEGACY_RUN_KEYS.items():
        value = (stopping if home == "stopping" else execution).get(key)
        if value is not None:
            d["run"][key] = value
    return config.dumps(d)


def test_resume_accepts_a_folder_written_before_the_stopping_and_execution_tables(
    default_run, tmp_path, monkeypatch
):
    old = _old_format(config.load_default())
    assert "[stopping]" not in old and "[execution]" not in old
    run = tomllib.loads(old)["run"]
    assert {k: run.get(k) for k in ("num_steps", "batch_size", "tol", "divergence_factor")} == {
        "num_steps": 200,
        "batch_size": ["full"],
        "tol": 1e-06,
        "divergence_factor": 100.0,
    }
    # An interrupted run whose config.toml has the old layout resumes to the uninterrupted result ...
    folder = tmp_path / "run"
    flaky = _Interrupt(monkeypatch, 3, KeyboardInterrupt())
    code, _, err = run_cli("run", "--out", str(folder), "--no-plots")
    assert code == 130 and "--resume" in err, err
    (folder / "config.toml").write_text(old)
    flaky.undo()
    code, out, err = run_cli("run", "--out", str(folder), "--resume", "--no-plots")
    assert code == 0, err
    assert "2 of 4 optimizers already done" in out
    for name in ("summary.csv", "summary.json"):
        assert (folder / name).read_text() == (default_run[0] / name).read_text()
    x, y = _npz(folder / "histories.npz"), _npz(default_run[0] / "histories.npz")
    assert sorted(x) == sorted(y)
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    # ... and a finished one is recognised as the same study (its report page drawn again).
    code, out, err = run_cli("run", "--out", str(folder), "--resume")
    assert code == 0 and "nothing to resume" in out, err
    assert (folder / "report.html").is_file()
    # A setting that really differs is still refused, named where it now lives.
    (folder / "config.toml").write_text(old.replace("tol = 1e-06", "tol = 1e-05"))
    code, _, err = run_cli("run", "--out", str(folder), "--resume")
    assert code == 2 and "different config (differs in stopping.tol)" in err


STOPPING_STUDY = """
name = "stops"
precision = "float64"
[cost]
function = "quadratic"
dim = 2
[run]
num_steps = 100
[stopping]
patience = 2
min_delta = 1e6          # no step improves the loss by this much: every lane stops after 2 evaluations
divergence_patience = 3
[execution]
unroll = 2
[[optimizers]]
rule = "gd"
grid.learning_rate = [0.01, 0.1]
"""


def _spy_sweeps(monkeypatch):
    """Records the arguments each sweep of a run is planned with (`plan_sweep`, once per sweep) and
    whether its run (`run_plan`) got a progress callback."""
    seen, given = [], []
    plan, run = preflight.plan_sweep, experiment.run_plan

    def planned(*args, **kwargs):
        seen.append(kwargs)
        return plan(*args, **kwargs)

    def ran(p, *, progress=None):
        given.append(progress is not None)
        return run(p, progress=progress)

    monkeypatch.setattr(preflight, "plan_sweep", planned)
    monkeypatch.setattr(experiment, "run_plan", ran)
    return seen, given


def test_stopping_and_execution_tables_reach_the_sweep(tmp_path, monkeypatch):
    path = tmp_path / "stops.toml"
    path.write_text(STOPPING_STUDY)
    cfg = config.load(path)
    seen, progress = _spy_sweeps(monkeypatch)
    code, _, err = run_cli("run", str(path), "--out", str(tmp_path / "run"), "-q", "--no-plots")
    assert code == 0, err
    (kwargs,) = seen
    assert kwargs["stopping"] is cfg.stopping or kwargs["stopping"] == cfg.stopping
    assert kwargs["stopping"].min_delta == 1e6 and kwargs["stopping"].divergence_patience == 3
    assert kwargs["execution"] == cfg.execution  # planned once; the run adds the progress callback
    assert kwargs["execution"].unroll == 2 and progress == [True]
    assert kwargs["execution"].step_progress is None  # -q: the program carries no progress callback
    assert "tol" not in kwargs and "chunk_size" not in kwargs
    rows = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert [r["steps"] for r in rows] == [2, 2], rows
    written = config.load(tmp_path / "run" / "config.toml")
    assert written == cfg


def test_list():
    code, out, _ = run_cli("list")
    assert code == 0
    for word in ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "optax.<name>"):
        assert word in out
    for word in ("inverse_sqrt", "inverse_time", "exponential_decay", "linear", "polynomial", "mse"):
        assert word in out
    for word in ("quadratic", "shifted_quadratic", "ill_conditioned_quadratic", "rosenbrock"):
        assert word in out
    for word in ("house_prices", "line", "synthetic", "csv", "npz", "lr_sweep", "contour"):
        assert word in out
    # `python -m gdjax` is the same command (found missing by an outside check).
    proc = subprocess.run(
        [sys.executable, "-m", "gdjax", "list"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout == out, proc.stderr


@pytest.mark.parametrize("args", [(), ("configs/quadratics.toml",)], ids=["default", "quadratics"])
def test_check(args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args = tuple(os.path.join(root, a) for a in args)
    code, out, err = run_cli("check", *args)
    assert code == 0, err
    assert "PASS" in out and "FAIL" not in out


def test_check_refuses_what_run_would_refuse(tmp_path):
    """`gdjax check` printed PASS for configs that `gdjax run` then refused at a config line."""
    text = (
        'name = "c"\n[data]\nsource = "line"\n[cost]\nmodel = "linear"\nloss = "mse"\n[run]\nnum_steps = 5\n'
        '[[optimizers]]\nrule = "gd"\ngrid.learning_rate = [0.1]\n[outputs]\nrank_by = "test_loss"\n'
    )
    path = tmp_path / "c.toml"
    path.write_text(text)
    code, _, err = run_cli("check", str(path))
    assert code == 2 and "outputs.rank_by: ranking by test_loss needs [data] test_fraction" in err, err
    assert sorted(os.listdir(tmp_path)) == ["c.toml"]  # a dry run: nothing written


def _write(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return str(path)


# (id, argv (with {tmp} for a folder and {bad} for a config with a typo), exit code, stderr words)
ERRORS = [
    ("missing config", ["run", "{tmp}/nope.toml"], 2, "config file not found"),
    ("config typo", ["run", "{bad}"], 2, "did you mean 'learning_rate'?"),
    ("check config typo", ["check", "{bad}"], 2, "bad.toml:"),
    ("resume and force", ["run", "--resume", "--force"], 2, "not allowed with argument"),
    ("unknown command", ["fly"], 2, "invalid choice: 'fly'"),
    ("unknown option", ["run", "--fast"], 2, "unrecognized arguments: --fast"),
]


@pytest.mark.parametrize(("argv", "code", "words"), [pytest.param(*r[1:], id=r[0]) for r in ERRORS])
def test_errors_are_one_line_without_traceback(tmp_path, argv, code, words):
    text = config.load_default().to_toml().replace("learning_rate", "learnig_rate", 1)
    bad = _write(tmp_path, text)
    argv = [a.format(tmp=tmp_path, bad=bad) for a in argv]
    got, _, err = run_cli(*argv)
    assert got == code
    assert words in err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("gdjax")


def test_debug_shows_the_exception(tmp_path):
    bad = _write(tmp_path, config.load_default().to_toml().replace("learning_rate", "learnig_rate", 1))
    with pytest.raises(ConfigError, match="learnig_rate"):
        cli.main(["run", bad, "--debug"], stdout=io.StringIO(), stderr=io.StringIO())


def test_version_and_help():
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("gdjax ")
    for argv in (["--help"], ["run", "--help"], ["check", "--help"], ["list", "--help"], []):
        code, out, _ = run_cli(*argv)
        assert code == 0 and "example" in out, argv


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_on_a_terminal_report_lanes_and_steps(tmp_path, monkeypatch):
    path = tmp_path / "stops.toml"
    path.write_text(STOPPING_STUDY)
    seen, progress = _spy_sweeps(monkeypatch)
    out, err = io.StringIO(), _Terminal()
    before = jax.config.jax_enable_x64
    try:
        code = cli.main(
            ["run", str(path), "--out", str(tmp_path / "run"), "--no-plots"], stdout=out, stderr=err
        )
    finally:
        jax.config.update("jax_enable_x64", before)
    assert code == 0, err.getvalue()
    (kwargs,) = seen
    assert kwargs["execution"].step_progress is not None and progress == [True]
    text = err.getvalue()
    assert "gd: 100%" in text and "2/2" in text, text  # the unit's lane bar, drawn by tqdm
    assert "steps:" in text, text  # the bar inside the compiled program


def test_installed_script_help():
    script = shutil.which("gdjax")
    argv = [script, "--help"] if script else [sys.executable, "-m", "gdjax.study.cli", "--help"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "gdjax run" in proc.stdout and "examples:" in proc.stdout
