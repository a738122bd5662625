"""Session-wide JAX settings for the test suite.

Float64 is enabled so that oracles (closed-form least squares, NumPy loops, finite differences) can be
compared at tight tolerances, and rank promotion raises so that the classic `(n,) - (n, 1)` MSE bug is
an error rather than a silent `(n, n)` matrix. Library code never flips these flags itself.
"""

import os
import subprocess
import sys

# The `gdjax` command keeps a per-user persistent compilation cache; tests (and the commands they
# start) compile afresh and write nothing to the user's home.
os.environ.setdefault("GDJAX_COMPILE_CACHE", "off")

# XLA's CPU compile time, not run time, dominates the suite: thousands of small programs, each run
# for a few hundred steps. LLVM optimisation off and the classic (non-MLIR) fusion emitters cut the
# suite's CPU time about in half (tests/test_sweep.py + tests/test_loop.py: 54 s -> 24 s of CPU).
# Every comparison in the suite compiles both sides with the same flags; no test times the code it
# compiles. The flags go into the environment before JAX starts its backend, so that the processes
# tests start (README snippets, `python -c` children) inherit them. They are debug flags that come and
# go between jaxlib versions, and XLA aborts on one it does not know: each set is tried in a child
# process first (once; xdist's workers inherit the result), fastest first.
_FAST_COMPILE = (
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
    "--xla_backend_optimization_level=0",
)


def _xla_accepts(flags: str) -> bool:
    env = dict(
        os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip(), JAX_PLATFORMS="cpu"
    )
    probe = "import jax; jax.jit(lambda x: x + 1)(1.0).block_until_ready()"
    return (
        subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=120).returncode
        == 0
    )


if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    _flags = next((f for f in _FAST_COMPILE if _xla_accepts(f)), "")
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flags}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)


@pytest.fixture
def seed():
    return 0


@pytest.fixture(autouse=True)
def restore_x64():
    """The command sets jax_enable_x64 from a config's precision; each test starts from the session's."""
    before = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", before)


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Each test module's compiled programs are released when it ends.

    Every loaded XLA:CPU executable keeps about six memory mappings; the suite compiles several
    thousand programs, and one process past the kernel's `vm.max_map_count` (65530 by default) dies
    in the compiler with a segfault. Modules share few programs, so clearing costs little.
    """
    yield
    import importlib

    importlib.import_module("gdjax.sweep")._COMPILED.clear()  # `gdjax.sweep` is also the function
    jax.clear_caches()
