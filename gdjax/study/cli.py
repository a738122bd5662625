"""The `gdjax` command: run an experiment from a TOML config, check gradients, list what exists.

    gdjax run [CONFIG] [--out DIR] [--resume | --force] [-q] [--no-plots]
    gdjax check [CONFIG]
    gdjax report RUN [RUN ...] [--out DIR]
    gdjax list
    gdjax --version

`main(argv)` returns the exit code (0 ok, 1 a failed gradient check or an interrupted run, 2 a usage
or config error, 130 / 143 / 129 for SIGINT (Ctrl-C) / SIGTERM / SIGHUP), so the command can be
driven in-process. A signal at any moment (loading, compiling, running, plotting) ends the command
the same clean way: the run folder is marked partial, one line says how to resume, and, when `main`
runs as the process's command, the process always leaves with `os._exit` after flushing, so
that interpreter teardown never races XLA's threads (a segfault after Ctrl-C, issue 12). It is the
only place that sets `jax_enable_x64` (from the config's `precision`), and it puts the flag back
when it returns.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import shlex
import signal
import sys
import threading
import traceback
from typing import TextIO

import jax

from gdjax import compile_cache, costs, data, rules
from gdjax._version import __version__
from gdjax.progress import Bars
from gdjax.study import config, drawing, experiment, problems, report, runfolder
from gdjax.study.config import ConfigError

__all__ = ["main"]

PROG = "gdjax"

_MAIN_EPILOG = """\
examples:
  gdjax run                               the default study (house prices; about 6 s on a CPU)
  gdjax run configs/lr_regimes.toml       a study from a config file
  gdjax run my.toml --out runs/try1       choose the run folder
  gdjax run my.toml --out runs/try1 --resume   finish an interrupted run
  gdjax check my.toml                     gradient check of the config's cost only
  gdjax report runs/a runs/b --out cmp    one report.html for finished run folders
  gdjax list                              rules, schedules, costs, data sets and plots

Every command takes --debug to show a traceback instead of a one-line error.
"""

_RUN_EPILOG = """\
The run folder (default runs/<name>-<YYYYmmdd-HHMMSS>) gets config.toml (the resolved config),
manifest.json, gradcheck.txt, summary.csv, summary.json, histories.npz, split.npz (the held-out
split's row indices, with test_fraction) and the plots. An existing
non-empty folder is never overwritten: --resume finishes an interrupted run (same config and
data; finished optimizers are kept, the others rerun, and the result is that of an uninterrupted
run), --force replaces what gdjax made there (your own files stay). Both act only on a folder gdjax
made (its .gdjax-run marker lists what gdjax owns), never follow a link inside it, and only one run
at a time may write a folder (a lock). Ctrl-C, SIGTERM and SIGHUP leave a folder --resume finishes.

examples:
  gdjax run
  gdjax run configs/optimizers_ill.toml --out runs/ill -q
  gdjax run configs/decay.toml --out runs/decay --resume
"""

_CHECK_EPILOG = """\
Compares jax.grad with forward mode, central finite differences (float64) and, where one exists,
the hand-derived gradient, at the config's start and a few random points. Exit code 1 if any pair
disagrees.

examples:
  gdjax check
  gdjax check configs/house_prices.toml
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Gradient descent as a research instrument: run compiled optimizer studies from a\n"
        "TOML config, check gradients, and list the rules, costs and data sets available.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gdjax {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def common(p):
        p.add_argument("--debug", action="store_true", help="show tracebacks on errors")

    run = sub.add_parser(
        "run",
        help="run an experiment (the default study without CONFIG)",
        description="Validate CONFIG, check the gradients, run every optimizer's sweep, print the best\n"
        "configuration of each, and write a run folder.",
        epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "config", nargs="?", metavar="CONFIG", help="a TOML config (default: the embedded study)"
    )
    run.add_argument("--out", metavar="DIR", help="the run folder (default: runs/<name>-<timestamp>)")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="finish an interrupted run folder")
    group.add_argument("--force", action="store_true", help="replace an existing run folder")
    run.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    run.add_argument("--no-plots", action="store_true", help="skip the plots")
    run.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not use JAX's persistent compilation cache (default: "
        "$GDJAX_COMPILE_CACHE, else ~/.cache/gdjax/jax; GDJAX_COMPILE_CACHE=off disables it)",
    )
    common(run)

    check = sub.add_parser(
        "check",
        help="a dry run: what run would refuse, and the gradient check of a config's cost",
        description=(
            "Check CONFIG as `gdjax run` would before it writes anything (its units, the memory of its "
            "histories, each sweep's plan: nothing is compiled, run or written), then print the "
            "gradient-check report of its cost(s) (the default study without CONFIG)."
        ),
        epilog=_CHECK_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "config", nargs="?", metavar="CONFIG", help="a TOML config (default: the embedded study)"
    )
    common(check)

    rep = sub.add_parser(
        "report",
        help="write report.html for finished run folders (merged into one report)",
        description="Read finished run folders (or folders written by Results.save), merge them, and write\n"
        "a self-contained report.html with its figures as PNGs: problems and f*, each optimizer's best\n"
        "configuration with its spread over seeds, performance-profile scores with intervals, paired\n"
        "comparisons, loss and metric curves, sensitivity and tuning-budget figures. Nothing is rerun.",
        epilog="examples:\n  gdjax report runs/digits-20261203-101500\n"
        "  gdjax report runs/a runs/b --out comparison",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rep.add_argument("runs", nargs="+", metavar="RUN", help="a finished run folder (several are merged)")
    rep.add_argument(
        "--out",
        metavar="DIR",
        help="where to write (default: RUN/report for one run, else report-<timestamp>)",
    )
    rep.add_argument("--title", help="the page's title (default: the problems' names)")
    common(rep)

    lst = sub.add_parser(
        "list",
        help="list rules, schedules, costs, data sets and plots",
        description="List what a config can name: update rules, schedules, costs, data sets and plots.",
        epilog="example:\n  gdjax list",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(lst)
    return parser


# -------------------------------------------------------------------------------------- signals
class Interrupted(KeyboardInterrupt):
    """A SIGINT, SIGTERM or SIGHUP, raised in the main thread; `code` is the shell's `128 + signum`."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


_received: list[int] = []  # signals seen, in case a callback swallowed the exception
_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


@contextlib.contextmanager
def _signals_as_interrupts(restore: bool = True):
    """The first SIGINT/SIGTERM/SIGHUP raises `Interrupted`; later ones are only recorded while the
    command cleans up (marking the run folder partial takes a few file writes), so cleanup is not
    cut. With `restore=False` (the process's command, which leaves by `os._exit` next) signals stay
    recorded-only afterwards instead of getting their default handlers back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def record(signum, frame):
        _received.append(signum)

    def handler(signum, frame):
        if _in_swallowing_context(frame):
            # Python prints and drops an exception raised in a destructor or gc callback (JAX runs
            # one, `_xla_gc_callback`): deliver the signal again a moment later instead.
            threading.Timer(0.01, os.kill, (os.getpid(), signum)).start()
            return
        for s in _SIGNALS:
            signal.signal(s, record)
        _received.append(signum)
        raise Interrupted(signum)

    _received.clear()
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    for s in _SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, (h if h is not None else signal.SIG_DFL) if restore else record)


def _in_swallowing_context(frame) -> bool:
    """Whether an exception raised at `frame` would be swallowed ("Exception ignored in ...").

    Destructors, gc callbacks and weakref callbacks (JAX's caches are weak: a `WeakValueDictionary`'s
    `remove`, `weakref.finalize`) swallow it. Any frame of the weakref modules counts: a signal
    delivered again 10 ms later costs nothing where the exception would not have been swallowed."""
    callbacks = {getattr(c, "__code__", None) for c in gc.callbacks}
    depth = 0
    while frame is not None and depth < 8:
        code = frame.f_code
        if code.co_name in ("__del__", "_xla_gc_callback") or code in callbacks:
            return True
        if os.path.basename(code.co_filename) in ("weakref.py", "_weakrefset.py"):
            return True
        frame, depth = frame.f_back, depth + 1
    return False


def _interrupt_code(stop: BaseException) -> int:
    return getattr(stop, "code", 130)


# -------------------------------------------------------------------------------------- commands
def _load_config(path: str | None):
    return config.load(path) if path else config.load_default()


def _x64_on():
    return jax.enable_x64(True)


def _cmd_run(args, out: TextIO, err: TextIO, argv: list[str], drawer: drawing.Drawer | None = None) -> int:
    # The report's second process (`gdjax.study.drawing`), started here or by the installed command
    # before it imported JAX: ended on every way out of the command, an interrupt included.
    with contextlib.ExitStack() as cleanup:
        if drawer is not None:
            cleanup.callback(drawer.close)
        return _run(args, out, err, argv, cleanup, drawer)


def _run(args, out: TextIO, err: TextIO, argv: list[str], cleanup, drawer) -> int:
    cfg = _load_config(args.config)
    jax.config.update("jax_enable_x64", cfg.precision == "float64")
    say = (lambda message: None) if args.quiet else (lambda message: print(message, file=out, flush=True))
    # tqdm bars on stderr, over each unit's lanes and inside each compiled program over its steps: off
    # with -q, and when stderr is not a terminal (then the programs carry no progress callback at all).
    bar = Bars(err, enabled=False if args.quiet else None)
    if bar.active:
        cfg = dataclasses.replace(cfg, execution=dataclasses.replace(cfg.execution, step_progress=bar.steps))
    results = None  # the run's Results, for the page
    try:
        # Inside the try from the first line: a signal just after it (a caller that waits for it) or
        # while the import thread or the drawing process starts is the run's interrupt like any other.
        say(f"gdjax run: {cfg.name}" + (f" ({cfg.source})" if cfg.source else ""))
        if cfg.description and not args.quiet:
            say(_wrap(cfg.description))
        if not args.no_plots:
            # Without one (one core, or spawning failed), the page's libraries are imported when the
            # page is drawn. Not on a thread: one importing matplotlib's ft2font deadlocked once
            # against JAX's MLIR on the dynamic loader's lock, and on one core it gained nothing.
            if drawer is None and (drawer := drawing.start()) is not None:
                cleanup.callback(drawer.close)
        outcome = experiment.run_experiment(
            cfg,
            args.out,
            resume=args.resume,
            force=args.force,
            progress=bar,
            log=say,
            command=[PROG, *argv],
            gradcheck_x64=_x64_on,
        )
        if not args.no_plots:  # the results model first: the page below is drawn from it
            results = _results_of(outcome, err)
            if results is not None and drawer is not None:  # the page: drawn beside the plots
                drawer.submit(results)
        if not args.no_plots and outcome.ran:  # the config's plots, into the finished folder
            with runfolder.PlotStage(outcome, log=say) as stage:
                stage.add(
                    report.draw_plots(cfg, outcome.problems, outcome.units, outcome.results, stage.path)
                )
    except experiment.GradCheckFailed as failure:
        bar.close()
        print(failure.text, file=err, end="")
        print(f"{PROG}: error: {failure}; nothing was run", file=err)
        return 1
    except experiment.RunInterrupted as stop:
        bar.close()
        print(f"{PROG}: error: run interrupted: {stop}", file=err)
        print(
            f"{PROG}: partial results in {stop.folder}; finish with: {_resume_hint(args, stop.folder)}",
            file=err,
        )
        if args.debug:
            traceback.print_exception(stop.__cause__ or stop, file=err)
        return 1
    except KeyboardInterrupt as stop:
        bar.close()
        folder = getattr(stop, "gdjax_run_folder", None)
        where = f"; partial results in {folder}; finish with: {_resume_hint(args, folder)}" if folder else ""
        name = f" ({stop.args[0]})" if isinstance(stop, Interrupted) else ""
        print(f"\n{PROG}: interrupted{name}{where}", file=err)
        return _interrupt_code(stop)
    bar.close()
    page_path = verdict = None
    code = 0
    if results is not None:  # the comparison page
        try:
            if drawer is not None and drawer.submitted:  # drawn by the second process
                statement, rendered = drawer.page()
            else:  # once: the page states it too
                several = results.num_optimizers > 1
                statement, rendered = (results.verdict(by="suboptimality") if several else None), None
            page_path = write_run_report(outcome.folder, results=results, rendered=rendered)
            verdict = statement
        except (ValueError, OSError) as error:  # the run's results are on disk: say so, do not fail
            print(f"{PROG}: note: report.html not written: {str(error).splitlines()[0]}", file=err)
        except drawing.DrawingFailed as error:  # the same, but a failure: the exit code says so
            redraw = shlex.join([PROG, "report", outcome.folder])
            print(f"{PROG}: error: report.html not written: {error}; redraw it with: {redraw}", file=err)
            code = 1
    if not args.quiet:
        say("")
        say(
            experiment.format_summary(
                outcome.rows, cfg.outputs.rank_by, outcome.metric_names, cfg.outputs.tuning_seeds
            )
        )
        if cfg.outputs.tuning_seeds is not None:
            fresh = [s for s in cfg.seeds if s not in cfg.outputs.tuning_seeds]
            say(
                f"best configurations chosen on the tuning seeds {list(cfg.outputs.tuning_seeds)}; "
                f"the table reports them on the fresh seeds {fresh}"
            )
        if verdict:
            say(verdict)
        say("")
        say(f"run folder: {outcome.folder}")
        manifest = outcome.manifest
        seconds = manifest.get("compile_seconds", 0.0), manifest.get("run_seconds", 0.0)
        timing = f"compile {seconds[0]:.2f} s, run {seconds[1]:.2f} s"
        if outcome.plots:
            timing += "; plots: " + ", ".join(os.path.basename(p) for p in outcome.plots)
        say(timing)
        if page_path:
            say(f"report: {page_path}")
    return code


def _results_of(outcome, err: TextIO):
    """The run's `Results`, built from what the run holds (`results_model.of_run`, not the folder read
    back); None, with a note, if they cannot be built (the run's files are on disk all the same)."""
    from gdjax.study import results_model

    try:
        return results_model.of_run(outcome)
    except (ValueError, OSError) as error:
        print(f"{PROG}: note: report.html not written: {str(error).splitlines()[0]}", file=err)
        return None


def _resume_hint(args, folder: str) -> str:
    parts = [PROG, "run"] + ([args.config] if args.config else []) + ["--out", folder, "--resume"]
    return shlex.join(parts)


def _wrap(text: str, width: int = 100) -> str:
    import textwrap

    return textwrap.fill(" ".join(text.split()), width)


def _cmd_check(args, out: TextIO, err: TextIO) -> int:
    cfg = _load_config(args.config)
    jax.config.update("jax_enable_x64", cfg.precision == "float64")
    problems = experiment.build_problems(cfg)
    # What `gdjax run` refuses before it writes anything is refused here too (a dry run): the
    # units, the host memory of the histories and each sweep's plan (validated, nothing compiled).
    unit_list = experiment.units(cfg)
    experiment.check_units(cfg, problems, unit_list)
    experiment.check_memory(cfg, problems, unit_list)
    experiment.check_sweeps(cfg, problems, unit_list)
    with _x64_on():
        reports = experiment.check_gradients(cfg, problems)
    print(experiment.gradcheck_text(reports, cfg, problems), file=out, end="")
    ok = all(r.ok for r in reports.values())
    if not ok:
        print(f"{PROG}: error: gradient check failed", file=err)
    return 0 if ok else 1


def _first_line(obj) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0].strip() if doc else ""


def write_run_report(path: str, *, title: str | None = None, results=None, rendered=None) -> str:
    """Writes `report.html` and `figures/` into the finished run folder `path`, as gdjax's own files
    (listed in the folder's marker before they appear; a user's file of either name is kept).
    `rendered`: the page as another process rendered it (`page.write_report`)."""
    from gdjax.study import page, results_model, runfolder

    results = results if results is not None else results_model.load(path)
    folder = runfolder.RunFolder(path)
    folder.lock()
    try:
        for name in (runfolder.FIGURES, "report.html"):
            folder.checked(name)  # a link planted where the page goes is refused, not replaced
        staging = folder.staging()
        try:
            page.write_report(results, staging, title=title, rendered=rendered)
        except BaseException:  # a failed or interrupted page leaves no half-drawn staging folder
            folder.remove(runfolder.STAGING)
            raise
        for name in (runfolder.FIGURES, "report.html"):
            if not os.path.lexists(os.path.join(staging, name)):  # no figure applies: no figures/
                continue
            if name in folder.owned():
                kept = folder.remove(name)
                if kept:
                    raise ValueError(
                        f"{folder.file(name)} holds files gdjax did not make ({', '.join(kept)}); move "
                        "them away or give --out DIR"
                    )
            if folder.adopt(os.path.join(staging, name)) is None:
                raise ValueError(f"{folder.file(name)} is not gdjax's; move it away or give --out DIR")
        folder.remove(runfolder.STAGING)
    finally:
        folder.unlock()
    return folder.file("report.html")


def _cmd_report(args, out: TextIO) -> int:
    import time

    from gdjax.study import results_model, runfolder

    results = results_model.load(args.runs)
    if args.out is None and len(args.runs) == 1 and runfolder.is_run_folder(args.runs[0]):
        folder = args.runs[0]
    else:  # a new folder, made gdjax's, or one gdjax made: the run folder's protections hold there too
        folder = runfolder.report_folder(args.out or f"report-{time.strftime('%Y%m%d-%H%M%S')}").path
    path = write_run_report(folder, title=args.title, results=results)
    print(
        f"{results.num_lanes} lanes of {len(results.problems)} problem(s) from {len(args.runs)} run(s)",
        file=out,
    )
    if results.tuning_seeds is not None:
        print(
            f"configurations chosen on the tuning seeds {list(results.tuning_seeds)}, reported on the "
            f"fresh seeds {results.fresh_seeds}",
            file=out,
        )
    if results.num_optimizers > 1:
        print(results.verdict(by="suboptimality"), file=out)
    print(f"report: {path}", file=out)
    return 0


def _cmd_list(args, out: TextIO) -> int:
    def section(title, items):
        print(title, file=out)
        width = max(len(k) for k, _ in items)
        for k, v in items:
            print(f"  {k:<{width}}  {v}", file=out)
        print(file=out)

    section("rules (optimizers.rule):", [(n, rules.describe(n)) for n in rules.names()])
    print(
        "  optax.<name>  any Optax optimizer, e.g. 'optax.lamb' or 'optax.adamw' (hyperparameters from its "
        "signature)\n",
        file=out,
    )
    section(
        "schedules (optimizers.schedule; their hyperparameters go in the grid):",
        [(n, _first_line(getattr(rules, n))) for n in rules.schedule_names()],
    )

    def about(spec) -> str:  # a registry entry of the costs, with the plots only it can draw
        return spec.description + (f" (plots: {', '.join(spec.figures)})" if spec.figures else "")

    section(
        "costs: models (cost.model, with cost.loss) and your own (cost.callable):",
        [
            ("linear", _first_line(costs.linear)),
            ("polynomial", _first_line(costs.polynomial) + " (cost.degree)"),
            *[(f"loss {n}", about(problems.COSTS[n])) for n in problems.names("loss")],
            ("callable", about(problems.COSTS["callable"])),
            ("(any)", 'cost.init = "file.py:init": init(key) -> params, each seed\'s own start'),
        ],
    )
    section(
        "costs: test functions (cost.function, with cost.start or cost.dim):",
        [(n, about(problems.COSTS[n])) for n in problems.names("function")],
    )
    datasets = [(n, _first_line(fn)) for n, fn in data.DATASETS.items()]
    datasets += [
        (
            "synthetic",
            "linear-regression data from a seed (num_examples, num_features, noise, condition_number)",
        ),
        ("csv", "a CSV file with a header row (path, target, features)"),
        ("npz", "an .npz file with arrays X and y (path, x_key, y_key)"),
        (
            "(any)",
            "data.test_fraction holds out a seeded test split (data.split_per_seed: one per seed); "
            "data.classes picks and relabels targets",
        ),
    ]
    section("data sets (data.source; data.standardize = true to standardise):", datasets)
    section(
        "plots (outputs.plots):",
        [
            ("loss_curves", "loss (or loss - f*) per step, best configuration of each optimizer"),
            ("lr_sweep", "final loss against learning rate, diverged runs marked, 2/L dashed"),
            ("contour", "paths of the best runs over the cost's contours (two-parameter costs)"),
            ("fitted_line", "fitted lines against the least-squares line (one-feature linear model)"),
            (
                "accuracy",
                "training (and held-out) accuracy per step, best of each optimizer (classification)",
            ),
        ],
    )
    from gdjax.study import figures

    section("figures of gdjax report:", [(n, f.doc) for n, f in figures.FIGURES.items()])
    return 0


# ------------------------------------------------------------------------------------------ main
def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    drawer: drawing.Drawer | None = None,
) -> int:
    """Runs the `gdjax` command with `argv` (default `sys.argv[1:]`) and returns its exit code.

    Errors a person can fix (a bad config, a folder that exists, invalid values) print one line
    `gdjax: error: ...` to stderr and return 2; `--debug` shows the traceback instead. The
    `jax_enable_x64` flag is restored before returning. Called without arguments (the installed
    `gdjax` command), a signal ends the process with `os._exit(128 + signum)` after flushing.
    `drawer`: a drawing process the caller started for `gdjax run` (`gdjax.study.command`); the
    command uses it or ends it.
    """
    as_command = argv is None and stdout is None and stderr is None
    err = stderr if stderr is not None else sys.stderr
    try:
        with _signals_as_interrupts(restore=not as_command):
            code = _main(argv, stdout, err, drawer)
            if _received and code not in (129, 130, 143):
                # The exception was raised inside a callback that swallowed it (Python prints
                # "Exception ignored in ..."); the command went on, but the caller asked it to stop.
                print(f"{PROG}: interrupted ({signal.Signals(_received[0]).name})", file=err)
                code = 128 + _received[0]
    except KeyboardInterrupt as stop:  # a signal outside any command's own handling (the page, say)
        name = f" ({stop.args[0]})" if isinstance(stop, Interrupted) else ""
        with contextlib.suppress(Exception):
            print(f"\n{PROG}: interrupted{name}", file=err)
        code = _interrupt_code(stop)
    if as_command:  # leave without interpreter teardown, which can race XLA's threads
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    return code


def _use_compile_cache() -> None:
    """JAX's persistent compilation cache (`gdjax.enable_compile_cache`), on by default for the
    command: a second `gdjax run` of the same study loads its programs instead of compiling them."""
    compile_cache.from_environment(default_on=True)


def _main(argv: list[str] | None, stdout: TextIO | None, err: TextIO, drawer=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = stdout if stdout is not None else sys.stdout
    parser = _parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        if drawer is not None:
            drawer.close()
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 2
    if drawer is not None and (args.command != "run" or args.no_plots):  # nothing for it to draw
        drawer.close()
        drawer = None
    if args.command == "run" and not args.no_compile_cache:
        _use_compile_cache()
    if args.command is None:
        parser.print_help(out)
        return 0

    x64 = jax.config.jax_enable_x64
    try:
        if args.command == "run":
            return _cmd_run(args, out, err, argv, drawer)
        if args.command == "check":
            return _cmd_check(args, out, err)
        if args.command == "report":
            return _cmd_report(args, out)
        return _cmd_list(args, out)
    except BrokenPipeError:  # `gdjax list | head`: the reader went away, nothing to report
        if out is sys.stdout:
            with contextlib.suppress(OSError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (ConfigError, ValueError, OSError) as error:
        if args.debug:
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"{PROG}: error: {message}", file=err)
        folder = getattr(error, "gdjax_run_folder", None)  # a run that stopped part-way (a full disk)
        if folder and args.command == "run":
            print(f"{PROG}: partial results in {folder}; finish with: {_resume_hint(args, folder)}", file=err)
        return 2
    except MemoryError:
        if args.debug:
            raise
        print(f"{PROG}: error: out of memory; make the grid, num_steps or the data smaller", file=err)
        return 2
    finally:
        jax.config.update("jax_enable_x64", x64)


if __name__ == "__main__":
    sys.exit(main())
