"""`gdjax run` draws the report page's figures in a second process (issue 21): the same files as
drawing in-process, no worker where it cannot help, and faults (a killed worker, an interrupt while
it draws, Ctrl-C at the terminal) that end the worker, keep the run's results and say so in one line."""

import dataclasses
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from gdjax.study import cli, command, drawing, report, runfolder
from tests.helpers import run_cli
from tests.test_faults import TINY as FAULTS_TINY

ROOT = pathlib.Path(__file__).resolve().parents[1]

# test_faults' tiny study (two optimizers: the page's scores, comparisons and profiles apply; no
# gradient check) with one run plot drawn by the command itself: a few seconds in-process.
TINY = FAULTS_TINY.replace("plots = []", 'plots = ["loss_curves"]')
assert 'plots = ["loss_curves"]' in TINY
RESULTS = ("summary.csv", "summary.json", "histories.npz", "loss_curves.png")


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture
def drawers(monkeypatch):
    """The drawing processes `gdjax run` starts in this test, as started."""
    started = []
    start = drawing.start

    def spy():
        drawer = start()
        started.append(drawer)
        return drawer

    monkeypatch.setattr(drawing, "start", spy)
    return started


def _files(folder: pathlib.Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != runfolder.LOCK
    }


def _page(text: bytes, folder: pathlib.Path) -> str:
    """The page without what differs between two runs of one config: when it was written, where."""
    page = text.decode("utf-8").replace(str(folder.resolve()), "RUN").replace(str(folder), "RUN")
    return re.sub(r"written [0-9T:+\-]+\.", "written WHEN.", page)


def test_the_worker_draws_the_same_files_as_the_command_alone(tiny, tmp_path, monkeypatch, drawers):
    code, out, err = run_cli("run", tiny, "--out", tmp_path / "worker")
    assert code == 0 and err == "", err
    assert len(drawers) == 1 and drawers[0] is not None and drawers[0].submitted
    assert not drawers[0]._process.is_alive()

    monkeypatch.setattr(drawing, "start", lambda: None)  # one core, or spawning failed
    code, out_alone, err = run_cli("run", tiny, "--out", tmp_path / "alone")
    assert code == 0 and err == "", err

    # the same lines (the table, and the best-optimizer sentence where there is one), but where and when
    def lines(text):
        timed = ("run folder:", "compile ", "report:", "  done in ")
        return [line for line in text.splitlines() if not line.startswith(timed)]

    assert lines(out) == lines(out_alone)

    worker, alone = _files(tmp_path / "worker"), _files(tmp_path / "alone")
    assert sorted(worker) == sorted(alone)
    figures = [n for n in worker if n.endswith(".png")]
    assert len(figures) >= 5 and "loss_curves.png" in figures and "figures/data_profile.png" in figures
    for name in figures:  # the same pixels, the same bytes
        assert worker[name] == alone[name], name
    page = _page(worker["report.html"], tmp_path / "worker")
    assert page == _page(alone["report.html"], tmp_path / "alone")
    for name in RESULTS[:3]:
        assert worker[name] == alone[name], name


def test_no_worker_where_it_cannot_draw_or_help(tmp_path, monkeypatch, drawers):
    def refuse(*args, **kwargs):
        raise ValueError("refused before running")

    monkeypatch.setattr(cli.experiment, "run_experiment", refuse)
    code, _, _ = run_cli("run", "--out", tmp_path / "run", "-q", "--no-plots")
    assert code == 2 and drawers == []
    code, _, _ = run_cli("run", "--out", tmp_path / "run", "-q")
    assert code == 2 and len(drawers) == 1
    assert drawers[0] is None or not drawers[0]._process.is_alive()  # ended on the way out

    # what the installed command reads before it imports JAX, to start the worker that early
    assert command._draws(["run"]) and command._draws(["run", "my.toml", "--out", "x", "-q"])
    for argv in (["run", "--no-plots"], ["run", "--no-p"], ["run", "-h"], ["check"], ["list"], []):
        assert not command._draws(argv), argv

    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert drawing.start() is None  # one core: the command draws in-process
    monkeypatch.setattr(os, "cpu_count", lambda: 2)

    def cannot(self):
        raise OSError("spawning is not allowed here")

    monkeypatch.setattr(drawing.multiprocessing.get_context("spawn").Process, "start", cannot)
    assert drawing.start() is None


def test_the_worker_imports_no_jax():
    code = (
        "import importlib, sys; from gdjax.study import drawing\n"
        "for name in drawing.MODULES: importlib.import_module(name)\n"
        "assert 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('gdjax'))\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_a_killed_worker_is_one_line_and_the_results_stay(tiny, tmp_path, monkeypatch, drawers):
    submit = drawing.Drawer.submit

    def killed_first(self, *args):
        self._process.kill()
        self._process.join()
        submit(self, *args)

    monkeypatch.setattr(drawing.Drawer, "submit", killed_first)
    out = tmp_path / "run"
    code, stdout, err = run_cli("run", tiny, "--out", out)
    assert code == 1
    assert err == (
        "gdjax: error: report.html not written: the drawing process was killed (SIGKILL); "
        f"redraw it with: gdjax report {out}\n"
    )
    assert "run folder: " in stdout and "report: " not in stdout  # the summary is printed all the same
    for name in RESULTS:
        assert (out / name).is_file(), name
    assert not (out / "report.html").exists() and not (out / runfolder.STAGING).exists()
    assert not (out / runfolder.PARTIAL_MARKER).exists()
    monkeypatch.undo()
    code, _, err = run_cli("report", out)  # what the line says to do
    assert code == 0 and (out / "report.html").is_file(), err


# What the worker is handed, and the one line the command prints when drawing it fails there: a
# ValueError (here a Results without lanes) is the page's note, as in-process (exit 0); anything
# else is an error (exit 1) that says how to draw the page again.
FAILURES = {
    "value": (
        lambda results: dataclasses.replace(results, lanes=results.lanes.iloc[:0]),
        0,
        "gdjax: note: report.html not written: lanes has no rows\n",
    ),
    "other": (
        lambda results: None,
        1,
        "gdjax: error: report.html not written: the drawing process failed: AttributeError: ",
    ),
}


@pytest.mark.parametrize("kind", list(FAILURES))
def test_a_worker_that_fails_reports_its_error_in_one_line(tiny, tmp_path, monkeypatch, kind):
    job, expected_code, expected = FAILURES[kind]
    submit = drawing.Drawer.submit
    monkeypatch.setattr(drawing.Drawer, "submit", lambda self, results: submit(self, job(results)))
    out = tmp_path / "run"
    code, _, err = run_cli("run", tiny, "--out", out, "-q")
    assert code == expected_code and err.count("\n") == 1 and err.startswith(expected), err
    assert kind == "value" or err.endswith(f"; redraw it with: gdjax report {out}\n"), err
    for name in RESULTS:
        assert (out / name).is_file(), name
    assert not (out / "report.html").exists() and not (out / runfolder.STAGING).exists()


@pytest.mark.parametrize("where", ["plots", "page"])
def test_an_interrupt_while_the_worker_draws_ends_it(tiny, tmp_path, monkeypatch, drawers, where):
    def interrupt(*args, **kwargs):
        raise cli.Interrupted(signal.SIGINT)

    if where == "plots":  # the command's own plots, while the worker draws the page's figures
        monkeypatch.setattr(report, "draw_plots", interrupt)
    else:  # waiting for the worker's page
        monkeypatch.setattr(drawing.Drawer, "page", interrupt)
    out = tmp_path / "run"
    code, _, err = run_cli("run", tiny, "--out", out, "-q")
    assert code == 130
    assert err == "\ngdjax: interrupted (SIGINT)\n"  # as when the command draws alone
    assert len(drawers) == 1 and not drawers[0]._process.is_alive()
    for name in RESULTS[:3]:
        assert (out / name).is_file(), name
    assert not (out / runfolder.STAGING).exists() or where == "plots"


def _children(pid: int) -> list[int]:
    try:
        text = pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _alive(pid: int) -> bool:
    try:
        status = pathlib.Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="reads children from /proc (Linux)")
def test_ctrl_c_at_the_terminal_ends_the_command_and_its_worker(tiny, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from gdjax.study.command import main; sys.exit(main())"]
        + ["run", str(tiny), "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    proc.stdout.readline()  # "gdjax run: tiny (...)": the worker was started before this line
    workers = [c for c in _children(proc.pid) if b"spawn" in pathlib.Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 1
    os.killpg(proc.pid, signal.SIGINT)  # the whole group, as Ctrl-C does
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 0), err  # 0: it finished before the signal landed
    assert "Traceback" not in err and "Exception" not in err, err
    if proc.returncode == 130:
        assert "interrupted (SIGINT)" in err, err
    deadline = time.monotonic() + 10
    while _alive(workers[0]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(workers[0]), "the worker outlived the command"


def test_a_python_caller_that_leaves_without_closing_its_worker_exits():
    # multiprocessing terminates a daemon process at exit (SIGTERM) and waits for it: the worker
    # must not ignore that signal, or the caller would wait forever
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    code = "from gdjax.study import drawing\nassert drawing.start() is not None\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
