"""The report page's figures drawn in a second process while the command draws the run's plots.

`gdjax run` with plots spends more time drawing than running on a small study (issue 21): the page's
six figures and the config's plots are matplotlib's work, one core's worth each, and a thread shares
Python's lock. `start()` spawns a worker (multiprocessing's *spawn* context: never a fork of a
process that has JAX's threads) that imports matplotlib, pandas, `scipy.stats` and the page's
modules while the study runs; `Drawer.submit(results, names)` hands it the run's `Results` (pandas
frames: plain pickled data, never a JAX object) and the figures to draw; `Drawer.png(name)` waits
for their PNG bytes, which the command embeds and writes itself (`page.write_report(drawn_elsewhere=)`):
the worker writes no file.

Faults: the worker ignores SIGINT, SIGTERM and SIGHUP (a Ctrl-C reaches the whole process group;
the command decides) and leaves when the command's end of the pipe closes; `Drawer.close()` kills it
(the command closes it on every way out, an interrupt included). A worker that dies or fails makes
`png` raise `DrawingFailed` with one line; a `ValueError` or `OSError` inside it comes back as a
`ValueError` with its message, as the same error drawn in-process would. Where a second process
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

__all__ = ["MODULES", "Drawer", "DrawingFailed", "start"]

# What the worker imports while it waits for its job (the page's figures and the profiles they draw).
MODULES = (
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "gdjax.study.figures",
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
    # The child inherits the calling thread's signal mask through exec: blocked until `_serve` has
    # set its dispositions, a Ctrl-C at the terminal cannot end it with a traceback while it starts.
    # A signal meant for this process stays pending here meanwhile, and is handled right after.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        process.start()
    except Exception:  # noqa: BLE001 - any failure to spawn: draw in-process instead
        mine.close()
        return None
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        theirs.close()  # the child has its own copy: its EOF now means this process has gone
    return Drawer(process, mine)


class Drawer:
    """A started drawing process: `submit` once, then `png(name)`; `close()` always (or `with`)."""

    def __init__(self, process, connection):
        self._process, self._connection = process, connection
        self.names: tuple[str, ...] = ()
        self._pngs: dict[str, bytes] | None = None
        self._failure: BaseException | None = None

    def __enter__(self) -> Drawer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, results, names) -> None:
        """Asks the worker for the PNGs of the page's figures `names` drawn from `results`."""
        self.names = tuple(names)
        try:
            self._connection.send((results, self.names))
        except (OSError, EOFError, ValueError):  # the worker is gone: `png` says how
            self._failure = DrawingFailed(self._ended())

    def png(self, name: str) -> bytes:
        """The PNG bytes of figure `name`, waiting for the worker the first time."""
        if self._pngs is None:
            if self._failure is not None:
                raise self._failure
            try:
                kind, value = self._connection.recv()
            except (OSError, EOFError):
                self._failure = DrawingFailed(self._ended())
                raise self._failure from None
            if kind == "value":
                self._failure = ValueError(value)
                raise self._failure
            if kind != "ok":
                self._failure = DrawingFailed(f"the drawing process failed: {value}")
                raise self._failure
            self._pngs = value
            self.close()  # done: it leaves by itself; make sure
        return self._pngs[name]

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
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_IGN)
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
        from gdjax.study import figures

        results, names = pickle.loads(job)  # here: a module that fails to import is reported below
        reply = ("ok", figures.render(results, names))
    except (ValueError, OSError) as error:
        reply = ("value", str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
    except BaseException as error:  # noqa: BLE001 - reported to the command in one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        reply = ("error", f"{type(error).__name__}: {first}" if first else type(error).__name__)
    with contextlib.suppress(Exception):
        connection.send(reply)
    os._exit(0)  # nothing to flush or tear down: it wrote no file
