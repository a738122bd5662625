"""The option objects of `run` and `sweep`, with their defaults in one place.

Settings that most calls leave alone are grouped into two small frozen objects instead of a long
list of keywords:

- `Stopping`: when a run stops early and when it is declared diverged;
- `Execution`: how the work is carried out (history kept, scan unrolling, data layout; for sweeps
  also chunking, devices, the memory budget and progress reports).

The common settings keep their own keywords (`tol=`, `metrics=`, `eval_every=`, `chunk_size=`), and
the config file's `[stopping]` and `[execution]` tables map onto these objects key for key.

Example:
  >>> import gdjax
  >>> stop = gdjax.Stopping(grad_tol=1e-6, divergence_patience=10)
  >>> stop.divergence_factor
  100.0
  >>> gdjax.Stopping(patience=0)
  Traceback (most recent call last):
  ...
  ValueError: patience must be an integer >= 1, got 0
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from gdjax import validation

DIVERGENCE_FACTOR = 100.0  # diverged: the loss stays above 100x its initial value ...
DIVERGENCE_PATIENCE = 50  # ... without falling for this many evaluations in a row
LAYOUTS = ("feature_major", "as_given", "gram")


def _unknown_keywords_named(cls):
    """`cls(..., patiance=3)` says which setting was meant, not only "unexpected keyword argument"."""
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for name in kwargs:
            if name not in names:
                raise TypeError(
                    f"{cls.__name__} has no setting {name!r}{validation.nearest(name, names)}; "
                    f"its settings: {', '.join(names)}"
                )
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


@_unknown_keywords_named
@dataclasses.dataclass(frozen=True)
class Stopping:
    """When a run stops early, and when it is diverged (each criterion optional; first to fire wins).

    Attributes:
      tol: stop when `||params_t - params_{t-1}|| < tol` (checked every step). `run(tol=...)` is the
        same setting.
      grad_tol: stop when the full-data gradient norm is below it (checked at evaluations).
      patience: stop after this many evaluations in a row without the full-data loss improving on
        its best by `min_delta`.
      min_delta: the improvement `patience` asks for.
      divergence_factor: the divergence threshold is `f(params_0) + (factor - 1) |f(params_0)|`
        (100x the initial loss); `None` disables divergence detection.
      divergence_patience: a run is diverged when its loss stays above the threshold without falling
        for this many evaluations in a row, or is above it at the last evaluation.
    """

    tol: float | None = None
    grad_tol: float | None = None
    patience: int | None = None
    min_delta: float = 0.0
    divergence_factor: float | None = DIVERGENCE_FACTOR
    divergence_patience: int = DIVERGENCE_PATIENCE

    def __post_init__(self):
        for f in dataclasses.fields(self):
            if isinstance(getattr(self, f.name), jax.core.Tracer):
                raise ValueError(
                    f"Stopping({f.name}=...) got a traced value (inside jax.jit, vmap or grad): stopping "
                    "settings are host numbers, fixed when the run compiles; to vary one, make it a "
                    "gdjax.sweep grid axis"
                )
        for name in ("tol", "grad_tol"):
            value = getattr(self, name)
            if value is not None:
                validation.check_finite_number(name, value, positive=True)
        validation.check_positive_int("patience", self.patience, allow_none=True)
        validation.check_finite_number("min_delta", self.min_delta, lower=0.0)
        if self.divergence_factor is not None:
            validation.check_finite_number("divergence_factor", self.divergence_factor)
            if not self.divergence_factor > 1:
                raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor}")
        validation.check_positive_int("divergence_patience", self.divergence_patience)

    def with_tol(self, tol: float | None) -> Stopping:
        """This object with `tol` given by its own keyword (`run(tol=...)`); giving it twice is an error."""
        if tol is None:
            return self
        if self.tol is not None and self.tol != tol:
            raise ValueError(f"tol is given twice (tol={tol!r} and stopping.tol={self.tol!r}): give it once")
        return dataclasses.replace(self, tol=tol)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@_unknown_keywords_named
@dataclasses.dataclass(frozen=True)
class Execution:
    """How the work is carried out; none of these settings changes the numbers.

    Attributes:
      record_every: steps between recorded iterates (`params_history`), a multiple of `eval_every`.
        Default: at every evaluation, thinned so that the records stay under 64 MiB per run (256 MiB
        shared by a sweep's lanes).
      unroll: `lax.scan` unroll factor of the steps between evaluations.
      layout: `"feature_major"` (default) lets a cost that offers it (`make_cost(linear, ...)`,
        `least_squares_problem(X, y).cost`) see `X` stored transposed for full-batch runs, several
        times faster on CPU; `"as_given"` passes the data untouched; `"gram"` (full-batch least
        squares only) runs on the Gram statistics `X^T X, X^T y`, O(d^2) per step instead of O(n d).
        Results agree up to floating-point summation order.
      chunk_size: sweeps only: run the lanes of a program in chunks of this many (`sweep(chunk_size=)`
        is the same setting).
      devices: sweeps only: devices to shard the lanes over (default `jax.devices()`).
      memory_budget: sweeps only: bytes one program call may need (default half of the device memory
        XLA reports, else half of the host memory).
      progress: sweeps only: `progress(lanes_done, num_lanes)`, called after each chunk; or `True`
        (runs and sweeps): tqdm bars over the lanes and over the steps of the program now running.
        Off by default.
      step_progress: `step_progress(steps_done, num_steps)`, called from inside the compiled loop
        every `progress_every` steps (`jax.debug.callback`, once per report whatever the number of
        lanes). Results are bit-identical with and without it; it compiles the program once more.
      progress_every: steps between two step reports, rounded down to whole evaluation intervals
        (default: about 50 reports per program call).
      checkpoint_every: `run` only: for reverse mode through a long run (`jax.grad` of a trace),
        keep the loop's state every this many steps (rounded down to whole evaluation intervals)
        and recompute the steps in between: memory O(num_steps / k + k) states instead of
        O(num_steps), for about one more forward pass. Forward results are unchanged.
    """

    record_every: int | None = None
    unroll: int = 1
    layout: str = "feature_major"
    chunk_size: int | None = None
    devices: Sequence[Any] | None = None
    memory_budget: float | None = None
    progress: Callable[[int, int], Any] | bool | None = None
    checkpoint_every: int | None = None
    step_progress: Callable[[int, int], Any] | None = None
    progress_every: int | None = None

    def __post_init__(self):
        validation.check_positive_int("record_every", self.record_every, allow_none=True)
        validation.check_positive_int("unroll", self.unroll)
        if self.layout not in LAYOUTS:
            raise ValueError(
                f"layout must be one of {list(LAYOUTS)}, got {self.layout!r}"
                + validation.nearest(str(self.layout), LAYOUTS)
            )
        validation.check_positive_int("chunk_size", self.chunk_size, allow_none=True)
        validation.check_positive_int("checkpoint_every", self.checkpoint_every, allow_none=True)
        if self.memory_budget is not None:
            validation.check_finite_number("memory_budget", self.memory_budget, positive=True)
        if self.progress not in (None, True, False) and not callable(self.progress):
            raise ValueError(
                f"progress must be True (bars) or a callable progress(done, total), got {self.progress!r}"
            )
        if self.step_progress is not None and not callable(self.step_progress):
            raise ValueError(
                f"step_progress must be a callable step_progress(done, num_steps), got {self.step_progress!r}"
            )
        validation.check_positive_int("progress_every", self.progress_every, allow_none=True)

    def with_chunk_size(self, chunk_size: int | None) -> Execution:
        """This object with `chunk_size` given by its own keyword; giving it twice is an error."""
        if chunk_size is None:
            return self
        if self.chunk_size is not None and self.chunk_size != chunk_size:
            raise ValueError(
                f"chunk_size is given twice (chunk_size={chunk_size!r} and "
                f"execution.chunk_size={self.chunk_size!r}): give it once"
            )
        return dataclasses.replace(self, chunk_size=chunk_size)  # __post_init__ validates it


def stopping_of(stopping: Stopping | None, tol: float | None) -> Stopping:
    """The `Stopping` of a call: `stopping=` (default `Stopping()`) with `tol=` folded in."""
    if stopping is None:
        stopping = _DEFAULT_STOPPING
    elif not isinstance(stopping, Stopping):
        raise ValueError(f"stopping must be a gdjax.Stopping(...), got {type(stopping).__name__}")
    if tol is None:
        return stopping
    if isinstance(tol, bool) or not isinstance(tol, int | float | np.floating | np.integer):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    return _with_tol(stopping, float(tol))


@functools.lru_cache(maxsize=256)
def _with_tol(stopping: Stopping, tol: float) -> Stopping:
    validation.check_finite_number("tol", tol, positive=True)
    return stopping.with_tol(tol)


def execution_of(execution: Execution | None, chunk_size: int | None = None) -> Execution:
    """The `Execution` of a call: `execution=` (default `Execution()`) with `chunk_size=` folded in."""
    if execution is None:
        execution = _DEFAULT_EXECUTION
    elif not isinstance(execution, Execution):
        raise ValueError(f"execution must be a gdjax.Execution(...), got {type(execution).__name__}")
    return execution.with_chunk_size(chunk_size)


_DEFAULT_STOPPING = Stopping()  # frozen: one instance serves every call that gives none
_DEFAULT_EXECUTION = Execution()

__all__ = ["DIVERGENCE_FACTOR", "DIVERGENCE_PATIENCE", "Execution", "Stopping"]
