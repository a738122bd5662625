"""Shared test helpers: tolerances keyed by dtype (in one place) and a compilation counter."""

import contextlib

import jax
import numpy as np

# Relative tolerances for comparing two computations of the same quantity. Never widen silently:
# float32 carries ~7 significant digits, and a few hundred steps of a linear recurrence lose ~2.
RTOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}
ATOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5}


def rtol(dtype) -> float:
    return RTOL[np.dtype(dtype)]


def atol(dtype) -> float:
    return ATOL[np.dtype(dtype)]


_BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
_active: list[list[str]] = []


def _listener(name, duration, **kwargs):
    for log in _active:
        log.append(name)
        if name == _BACKEND_COMPILE:
            log.append(("compiled", kwargs.get("fun_name")))


jax.monitoring.register_event_duration_secs_listener(_listener)


class CompileCounter:
    def __init__(self):
        self.events: list[str] = []

    @property
    def count(self) -> int:
        return sum(1 for e in self.events if e == _BACKEND_COMPILE)

    def of(self, fun_name: str) -> int:
        """Compilations of the jitted function of this name (`jit(<fun_name>)` in JAX's log)."""
        return sum(1 for e in self.events if e == ("compiled", fun_name))


@contextlib.contextmanager
def count_compilations():
    """Counts XLA backend compilations inside the block: `with count_compilations() as c: ...; c.count`."""
    counter = CompileCounter()
    _active.append(counter.events)
    try:
        yield counter
    finally:
        _active.remove(counter.events)


def run_cli(*argv):
    """`gdjax ...` in this process: `(exit code, stdout, stderr)`; the session's x64 flag must survive."""
    import io

    from gdjax.study import cli

    out, err = io.StringIO(), io.StringIO()
    before = jax.config.jax_enable_x64
    try:
        code = cli.main([str(a) for a in argv], stdout=out, stderr=err)
    finally:
        assert jax.config.jax_enable_x64 == before, "the CLI leaked jax_enable_x64"
        jax.config.update("jax_enable_x64", before)
    return code, out.getvalue(), err.getvalue()
