"""Progress reports: from inside a compiled loop, and tqdm bars that show them.

A run or a sweep's program is one `lax.scan`, so a long unit would say nothing until it is done.
With a step listener (`Execution(step_progress=...)`, or `Execution(progress=True)` for bars), the
program is compiled with a `jax.debug.callback` at the end of every `m`-th evaluation interval
(`m` from `Execution.progress_every`), under a `lax.cond` on the interval's index. The index is the
same in every lane, so under `vmap` the callback fires once per interval, not once per lane; on a
sharded sweep it runs once, on the first device (JAX gives an automatically sharded callback a
maximal sharding). The callback reads nothing the loop computes, so results are bit-identical with
progress on and off, and the interval is static (`RunOptions.progress_intervals`): a new
hyperparameter value does not recompile. Without a listener the program has no callback at all.

The compiled callback is this module's `_dispatch`, which calls whichever listener is active
(`listening`) when the program runs: a program compiled once serves every later listener.

`Bars` draws the reports with tqdm (imported on first use: `import gdjax` does not load it).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["Bars", "callbacks", "intervals_between_reports", "listening", "report"]

DEFAULT_REPORTS = 50  # reports per program call when `progress_every` is not given

_listeners: list[Callable[[int, int], Any]] = []


def _dispatch(done, *, num_steps: int) -> None:
    if _listeners:
        _listeners[-1](int(done), num_steps)


@contextlib.contextmanager
def listening(listener: Callable[[int, int], Any] | None):
    """Within the block, programs compiled with progress reports call `listener(steps_done, num_steps)`."""
    if listener is None:
        yield
        return
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def intervals_between_reports(progress_every: int | None, eval_every: int, num_steps: int) -> int:
    """Evaluation intervals between two reports: `progress_every` steps rounded down to whole intervals
    (at least one), or about `DEFAULT_REPORTS` reports per program call."""
    num_intervals = -(-num_steps // eval_every)
    if progress_every is None:
        return max(1, math.ceil(num_intervals / DEFAULT_REPORTS))
    return max(1, progress_every // eval_every)


def report(i: jax.Array, *, every: int, eval_every: int, num_steps: int, skip=None) -> None:
    """Traced at the end of evaluation interval `i` (an unbatched int32): reports the steps done so
    far every `every` intervals and after the last one; never where `skip` (traced) is true (the
    interval of the evaluation after the last step)."""
    last = -(-num_steps // eval_every) - 1
    fire = ((i + 1) % every == 0) | (i == last)
    if skip is not None:
        fire = fire & ~skip
    done = jnp.minimum((i + 1) * eval_every, num_steps)
    jax.lax.cond(
        fire,
        lambda d: jax.debug.callback(functools.partial(_dispatch, num_steps=num_steps), d, ordered=False),
        lambda d: None,
        done,
    )


def callbacks(execution) -> tuple[Callable | None, Callable | None, Callable[[], None]]:
    """`(lanes, steps, close)` of an `Execution`: its `progress` and `step_progress` listeners, or
    tqdm bars for both when `progress=True` (`close` ends them)."""
    if execution.progress is True:
        bars = Bars()
        return bars.lanes, bars.steps, bars.close
    lanes = None if execution.progress is False else execution.progress
    return lanes, execution.step_progress, lambda: None


class Bars:
    """tqdm bars for a sweep or a study: one over a unit's lanes, one over the steps of the program
    now running (a program call runs one chunk of lanes for `num_steps` steps).

    `Bars(stream, enabled=None)`: `enabled=None` draws only when `stream` is a terminal (tqdm's own
    test), `False` never. `unit(name, total_lanes)` starts a unit's lane bar (the CLI names each
    optimizer); `lanes(done, total)` and `steps(done, num_steps)` are the listeners. `close()` ends
    both bars.
    """

    def __init__(self, stream=None, *, enabled: bool | None = None):
        from tqdm import tqdm  # the study face's dependency; `import gdjax` does not load it

        self._tqdm = tqdm
        self.stream = stream if stream is not None else sys.stderr
        self.disable = None if enabled is None else not enabled
        self._name = "lanes"
        self._lanes = self._steps = None

    @property
    def active(self) -> bool:
        """Whether the bars draw (tqdm's rule: `enabled=None` draws on a terminal only)."""
        if self.disable is not None:
            return not self.disable
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError):
            return False

    def __call__(self, name: str, done: int, total: int) -> None:
        """A study's listener, `progress(unit_name, lanes_done, total_lanes)`: a lane bar per unit."""
        if name != self._name or self._lanes is None:
            self.unit(name, total)
        self.lanes(done, total)

    def _bar(self, total: int, desc: str, unit: str, position: int):
        return self._tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=self.stream,
            disable=self.disable,
            leave=position == 0,
            position=position,
            dynamic_ncols=True,
        )

    def unit(self, name: str, total: int) -> None:
        self.close()
        self._name = name
        self._lanes = self._bar(total, name, "lane", 0)

    def lanes(self, done: int, total: int) -> None:
        if self._lanes is None or self._lanes.total != total:
            self.unit(self._name, total)
        self._lanes.update(done - self._lanes.n)
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def steps(self, done: int, num_steps: int) -> None:
        if self._steps is None or done < self._steps.n or self._steps.total != num_steps:
            if self._steps is not None:
                self._steps.close()
            self._steps = self._bar(num_steps, "  steps", "step", 1)
        self._steps.update(done - self._steps.n)

    def close(self) -> None:
        for bar in (self._steps, self._lanes):
            if bar is not None:
                bar.close()
        self._lanes = self._steps = None
