"""A study's programs compiled ahead of its runs, several at once.

A study runs one sweep per unit, and on a small CPU each sweep's first call is mostly XLA's
compilation of its program (about 1 s each for the default study's four units). Those compilations
are independent: `Compiler.start(units)` traces and lowers every pending unit's programs on the
calling thread (`gdjax.sweep.lower_sweep`: tracing is Python and holds the GIL) and hands each to a
thread that compiles it (XLA releases the GIL), so the programs compile side by side while the
study goes on with its gradient check. When a unit's turn comes, `wait(key)` returns once its
programs are compiled; the sweep then finds them compiled and only runs.

What does not change: the programs are the ones the sweep would compile itself (the same lowering
of the same inputs), so results are bit-identical; a program shared by several units (same cost,
rule family, options and shapes) is compiled once; JAX's persistent compilation cache is read and
filled as by any compile; units run, print and save in their order. A unit whose lowering or
compilation fails here is simply compiled again by its own sweep, which then raises the error
where and as it always did.

`GDJAX_COMPILE_THREADS` sets the number of compiling threads. The default is 1: each sweep compiles
its own programs when it runs. On the 2-core machine gdjax is measured on, compiling in threads did
not shorten a study (README, "Time to first result"): a single XLA:CPU compile already spreads its
code generation over the cores, so a second compile at the same time mostly waits for them.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import os
from collections.abc import Callable, Iterable

from gdjax.sweep import LoweredProgram, lower_sweep

__all__ = ["ENV", "Compiler", "threads"]

ENV = "GDJAX_COMPILE_THREADS"


def threads() -> int:
    """Compiling threads: `GDJAX_COMPILE_THREADS` if set (a positive integer), else 1 (none)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return 1
    n = int(value) if value.isdecimal() else 0
    if n < 1:
        raise ValueError(f"{ENV} must be a positive integer (1: no compile threads), got {value!r}")
    return n


class Compiler:
    """Compiles units' programs in threads (`start`), and waits for one unit's (`wait`)."""

    def __init__(self, num_threads: int | None = None):
        self.num_threads = threads() if num_threads is None else num_threads
        self._pool = None
        self._pending: dict[str, list[tuple[LoweredProgram, concurrent.futures.Future]]] = {}

    @property
    def active(self) -> bool:
        return self.num_threads > 1

    def start(self, calls: Iterable[tuple[str, Callable[[], list[tuple[tuple, dict]]]]]) -> None:
        """Lowers each unit's sweeps (`calls`: `(unit key, sweeps)`, `sweeps()` giving the `(args,
        kwargs)` of each sweep the unit runs) and submits their programs to the threads. A program
        already submitted for an earlier unit is not compiled twice."""
        if not self.active:
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.num_threads, thread_name_prefix="gdjax-compile"
            )
        submitted = {lp.key for jobs in self._pending.values() for lp, _ in jobs}
        for key, sweeps in calls:
            jobs = []
            try:
                programs = [lp for args, kwargs in sweeps() for lp in lower_sweep(*args, **kwargs)]
            except Exception:  # noqa: BLE001  (the unit's own sweep lowers again and raises it)
                programs = []
            for lp in programs:
                if lp.key in submitted:
                    continue
                submitted.add(lp.key)
                # JAX's settings made by context managers on this thread (jax.enable_x64) hold there too.
                jobs.append((lp, self._pool.submit(contextvars.copy_context().run, lp.compile)))
            self._pending[key] = jobs

    def wait(self, key: str) -> float:
        """Waits for the unit's programs; returns the seconds spent tracing, lowering and compiling
        them (0 if none). A program that failed to compile is left to the unit's own sweep."""
        seconds = 0.0
        for lp, future in self._pending.pop(key, []):
            try:
                seconds += lp.seconds + future.result()
            except Exception:  # noqa: BLE001,S112  (compiled again, and raised, by the unit's own sweep)
                continue
        return seconds

    def close(self) -> None:
        """Cancels what has not started compiling and lets the threads go (not waiting for them)."""
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
