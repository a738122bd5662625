"""Session-wide JAX settings for the test suite.

Float64 is enabled so that oracles (closed-form least squares, NumPy loops, finite differences) can be
compared at tight tolerances, and rank promotion raises so that the classic `(n,) - (n, 1)` MSE bug is
an error rather than a silent `(n, n)` matrix. Library code never flips these flags itself.
"""

import atexit
import os
import shutil
import tempfile

import jax
import pytest

# The `gdjax` command keeps a per-user persistent compilation cache; tests (and the commands they
# start) write nothing to the user's home. They share one cache of their own, made for the session
# (by the process that starts pytest; xdist's workers and the commands tests start inherit it), so a
# program that several test modules build (the default study, the tiny configs) compiles once.
if "GDJAX_COMPILE_CACHE" not in os.environ:
    os.environ["GDJAX_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="gdjax-test-compile-cache-")
    atexit.register(shutil.rmtree, os.environ["GDJAX_COMPILE_CACHE"], ignore_errors=True)

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
