"""The report page drawn in a second process while `gdjax run` draws the run's plots (issue 21).

`gdjax run` with plots spends more time drawing than running on a small study: the page (its six
figures, tables and paired tests) and the config's plots are matplotlib's and SciPy's work, a core's
worth each, and a thread shares Python's lock. `start()` spawns a worker (multiprocessing's *spawn*
context: never a fork of a process that has JAX's threads) that imports matplotlib, pandas,
`scipy.stats` and the page's modules, JAX not among them, while the study runs. `Drawer.submit`
hands it the run's `Results` (pandas frames: plain pickled data, never a JAX object);
`Drawer.page()` waits for the page it renders (`page.render`: the HTML text and the PNG bytes) and
the best-optimizer sentence, which the command writes and prints itself (`page.write_report(rendered=)`):
the worker writes no file, and the command draws the plots meanwhile.

Faults: the worker ignores SIGINT and SIGHUP (a Ctrl-C reaches the whole process group; the
command decides) and leaves when the command's end of the pipe closes; `Drawer.close()` kills it
(the command closes it on every way out, an interrupt included). A worker that dies or fails makes
`page()` raise `DrawingFailed` with one line; a `ValueError` or `OSError` inside it comes back as a
`ValueError` with its message, as the same error met in-process would. Where a second process
cannot help (one core) or cannot start, `start()` returns None and the command draws in-process.

This module imports only the standard library: the command can start the worker before it imports
JAX (`gdjax.study.command`).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import pickle
import signal
import threading
from multiprocessing import resource_tracker

__all__ = ["MODULES", "Drawer", "DrawingFailed", "start"]

# What the worker imports while it waits for its job: the page, its figures and its statistics.
MODULES = (
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "gdjax.study.page",
    "gdjax.study.statistics",
)

_SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class DrawingFailed(RuntimeError):
    """The drawing process died or failed; the message is one line."""


def start() -> Drawer | None:
    """A started worker, or None where a second process would not help (one core) or cannot start."""
    if (os.cpu_count() or 1) < 2:
        return None
    context = multiprocessing.get_context("spawn")
    try:
        mine, theirs = context.Pipe()
    except OSError:
        return None
    process = context.Process(target=_serve, args=(theirs,), name="gdjax-drawing", daemon=True)
    # multiprocessing's resource tracker unblocks SIGINT and SIGTERM after it starts: started first.
    resource_tracker.ensure_running()
    # A signal's handler could raise inside `Process.start`, after the child exists and before anyone
    # holds it: the command's signals are only recorded meanwhile, then the child is ended and the
    # signal delivered again to the command's own handlers. The child inherits the signal mask
    # through exec: blocked until `_serve` ignores them, a Ctrl-C at the terminal (which reaches the
    # whole process group) cannot end it with a traceback while it starts.
    pending: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in _SIGNALS}
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    started = False
    try:
        process.start()
        started = True
    except Exception:  # noqa: BLE001, S110 - any failure to spawn: draw in-process instead
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a pending signal is recorded here
        for s, handler in previous.items():
            signal.signal(s, handler)
        theirs.close()  # the child has its own copy: its EOF now means this process has gone
    if started and not pending:
        return Drawer(process, mine)
    if started:
        process.kill()
        process.join()
    mine.close()
    if pending:
        os.kill(os.getpid(), pending[0])
    return None


class Drawer:
    """A started drawing process: `submit` once, then `page()`; `close()` always (or `with`)."""

    def __init__(self, process, connection):
        self._process, self._connection = process, connection
        self.submitted = False
        self._page: tuple | None = None
        self._failure: BaseException | None = None

    def __enter__(self) -> Drawer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, results, *, title: str | None = None) -> None:
        """Asks the worker for the report page of `results` (`page.render`) and the best-optimizer
        verdict (`results.verdict(by="suboptimality")`: the best optimizer, or why none is named)."""
        self.submitted = True
        try:
            self._connection.send((results, title))
        except (OSError, EOFError, ValueError):  # the worker is gone: `page` says how
            self._failure = DrawingFailed(self._ended())

    def page(self) -> tuple[str | None, tuple[str, dict[str, bytes]]]:
        """`(sentence, (html, pngs))`, waiting for the worker; it ends then."""
        if self._page is None:
            if self._failure is not None:
                raise self._failure
            try:
                kind, value = self._connection.recv()
            except (OSError, EOFError):
                self._failure = DrawingFailed(self._ended())
                raise self._failure from None
            finally:
                self.close()  # done (it leaves by itself), or gone
            if kind == "value":
                self._failure = ValueError(value)
                raise self._failure
            if kind != "ok":
                self._failure = DrawingFailed(f"the drawing process failed: {value}")
                raise self._failure
            self._page = value
        return self._page

    def close(self) -> None:
        """Ends the worker (killed if it is still running) and closes the pipe; idempotent."""
        with contextlib.suppress(Exception):
            if self._process.is_alive():
                self._process.kill()
            self._process.join(5)
        with contextlib.suppress(Exception):
            self._connection.close()

    def _ended(self) -> str:
        with contextlib.suppress(Exception):
            self._process.join(2)
        code = self._process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"the drawing process was killed ({signal.Signals(-code).name})"
        return f"the drawing process ended unexpectedly (exit code {code})"


# ----------------------------------------------------------------------------------- the worker
def _serve(connection) -> None:
    """The worker: imports `MODULES` on a thread while waiting for its one job, draws, replies, leaves."""
    # Ctrl-C and a hang-up reach the whole process group: the command decides. SIGTERM ends it (what
    # multiprocessing sends a daemon process when a Python caller exits without closing it).
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_DFL if s == signal.SIGTERM else signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def load():
        for name in MODULES:
            with contextlib.suppress(Exception):  # the job imports it again and reports the error
                importlib.import_module(name)

    loader = threading.Thread(target=load, name="gdjax-drawing-imports", daemon=True)
    loader.start()

    try:
        job = connection.recv_bytes()
    except (OSError, EOFError):  # the command has gone (ended, interrupted or killed)
        os._exit(0)
    loader.join()
    try:
        from gdjax.study import page

        results, title = pickle.loads(job)  # here: a module that fails to import is reported below
        statement = results.verdict(by="suboptimality") if results.num_optimizers > 1 else None
        reply = ("ok", (statement, page.render(results, title=title)))
    except (ValueError, OSError) as error:
        reply = ("value", str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    except BaseException as error:  # noqa: BLE001 - reported to the command in one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reply = ("error", f"{type(error).__name__}: {first}" if first else type(error).__name__)
    with contextlib.suppress(Exception):
        connection.send(reply)
    os._exit(0)  # nothing to flush or tear down: it wrote no file
