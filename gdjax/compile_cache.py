"""JAX's persistent compilation cache, switched on in one place for the Python API and the command.

XLA compilation dominates a researcher's rerun on a small CPU (a mini-batch logistic sweep: about
2.3 s compiling against 0.1 s running). JAX can keep the compiled executables on disk
(`jax_compilation_cache_dir`, see JAX's "Persistent compilation cache" guide); a second process
that builds the same program then loads it instead of compiling it. `enable_compile_cache()` turns
that on for everything the process compiles afterwards; the `gdjax run` command calls it by default.

The environment variable `GDJAX_COMPILE_CACHE` says the same without code: a folder, `on` (the
default folder), or `off` (never); the test suite sets a folder of its own for the session. The
Python API reads it on its first `run` or `sweep` (never on `import gdjax`: importing changes no
JAX setting); the command reads it always and uses the default folder when it is unset.

The cache is trusted input: executables are loaded from it. Keep it in a folder only you can write.
"""

from __future__ import annotations

import os

ENV = "GDJAX_COMPILE_CACHE"
_OFF = frozenset({"", "0", "off", "no", "false"})
_ON = frozenset({"1", "on", "yes", "true"})
_env_read = False  # whether the Python API has looked at the environment in this process


def default_path() -> str:
    """`$XDG_CACHE_HOME/gdjax/jax`, else `~/.cache/gdjax/jax`."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gdjax", "jax")


def enable_compile_cache(path: str | os.PathLike | None = None) -> str:
    """Keeps every program this process compiles from now on in JAX's persistent compilation cache.

    A later process (a rerun of the same script, sweep or study) that builds the same program loads
    the executable from `path` instead of compiling it: it still traces and lowers its functions
    (a few tenths of a second for a sweep), but XLA's compilation, most of a first call on CPU,
    is skipped. Entries are keyed by the program, the JAX and XLA versions and the device, so a
    changed cost, rule, option or shape simply compiles anew. Every program is cached, however
    short its compilation (JAX's default skips those under one second).

    Args:
      path: the cache folder, created if needed (default: `default_path()`, the folder the `gdjax`
        command uses).

    Returns:
      The folder in use.

    Raises:
      ValueError: the folder cannot be created.

    Example:
      >>> import gdjax
      >>> folder = gdjax.enable_compile_cache()  # doctest: +SKIP
    """
    import jax  # noqa: PLC0415  (`import gdjax` does not import JAX)
    from jax.experimental.compilation_cache import compilation_cache  # noqa: PLC0415

    folder = os.path.abspath(os.path.expanduser(os.fspath(path if path is not None else default_path())))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise ValueError(f"cannot use {folder!r} as the compilation cache: {err.strerror or err}") from None
    if jax.config.jax_compilation_cache_dir != folder:
        if jax.config.jax_compilation_cache_dir is not None:
            compilation_cache.reset_cache()  # JAX opens its cache once: reopen it at the new folder
        jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def from_environment(*, default_on: bool = False) -> str | None:
    """Applies `GDJAX_COMPILE_CACHE` (a folder, `on` or `off`); unset means `default_on`.

    Returns the folder in use, or None when the cache stays off. A folder that cannot be created
    leaves the cache off (a read-only home must not stop a run).
    """
    value = os.environ.get(ENV)
    if value is None:
        if not default_on:
            return None
        value = "on"
    word = value.strip().lower()
    if word in _OFF:
        return None
    try:
        return enable_compile_cache(None if word in _ON else value)
    except ValueError:
        return None


def from_environment_once() -> None:
    """`from_environment()` on the Python API's first `run` or `sweep` in this process."""
    global _env_read
    if not _env_read:
        _env_read = True
        if os.environ.get(ENV) is not None:
            from_environment()


__all__ = ["ENV", "default_path", "enable_compile_cache", "from_environment"]
