"""Users' own code named by a config: `"file.py:name"` or `"module:name"`, imported and checked.

`load_reference` executes a file once per process as a module of its own (its folder on `sys.path`
while it loads, so it may import its neighbours); every failure is a `ValueError` that names the file
or module and the function. `check_scalar_cost` and `check_gradient_shape` trace the user's functions
abstractly (`jax.eval_shape`: nothing runs) so that a wrong return is refused before a sweep compiles.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["call_init", "check_gradient_shape", "check_scalar_cost", "load_reference"]


_MODULES: dict[tuple, object] = {}


def _load_file(path: str):
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key in _MODULES:
        return _MODULES[key]
    name = "_gdjax_user_" + hashlib.sha1(path.encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{path} cannot be loaded as Python code")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(path)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ValueError(f"{path} failed to load: {type(err).__name__}: {_first_line(err)}") from None
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    _MODULES[key] = module
    return module


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def load_reference(ref: str) -> Callable:
    """The function that `"path/file.py:name"` or `"module:name"` names (`name` may be dotted).

    Raises:
      ValueError: the file or module is missing or fails to load, or has no such function.
    """
    target, _, name = ref.rpartition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        if not os.path.isfile(target):
            raise ValueError(f"file not found: {target}")
        module, where = _load_file(target), target
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as err:
            raise ValueError(
                f"no module named {err.name!r} (for {ref!r}; a file is named by its path, ending in .py)"
            ) from None
        except Exception as err:
            raise ValueError(
                f"module {target!r} failed to import: {type(err).__name__}: {_first_line(err)}"
            ) from None
        where = f"module {target!r}"
    obj = module
    for part in name.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))]
            from gdjax.validation import nearest

            raise ValueError(
                f"{where} has no function {name!r}{nearest(part, names)}"
                + (f"; it defines {', '.join(sorted(names))}" if names else "")
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{where}: {name!r} is a {type(obj).__name__}, not a function")
    return obj


def call_init(init: Callable, data):
    """`init()` or `init(data)`, whichever the function's signature takes."""
    try:
        sig = inspect.signature(init)
        takes_data = any(
            p.default is inspect.Parameter.empty
            and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
            for p in sig.parameters.values()
        )
    except (TypeError, ValueError):
        takes_data = True
    return init(data) if takes_data else init()


def check_scalar_cost(cost: Callable, params, data, *, what: str = "cost") -> None:
    """Traces `cost(params, data)` abstractly (nothing runs) and checks that it is a real scalar.

    Raises:
      ValueError: the cost (or the `what`: a metric) fails, or returns something else than a real
        floating scalar.
    """
    try:
        out = jax.eval_shape(cost, params, data)
    except Exception as err:  # the user's cost failed: say how, not where inside JAX
        raise ValueError(
            f"the {what} failed on params0 and the data: {type(err).__name__}: {_first_line(err)}"
        ) from None
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape is None or dtype is None:
        raise ValueError(f"the {what} must return a real scalar, got {type(out).__name__}")
    if shape != ():
        raise ValueError(
            f"the {what} must return a scalar{' (what is minimised)' if what == 'cost' else ''}, got an "
            f"array of shape {shape}: "
            "reduce it, e.g. with jnp.mean or jnp.sum"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"the {what} must return a real floating-point scalar, got dtype {dtype}")


def check_gradient_shape(grad: Callable, params, data) -> None:
    """Checks abstractly that `grad(params, data)` has the structure and shapes of `params`."""
    try:
        out = jax.eval_shape(grad, params, data)
    except Exception as err:
        raise ValueError(
            f"the gradient failed on params0 and the data: {type(err).__name__}: {_first_line(err)}"
        ) from None
    want = jax.tree.map(lambda x: tuple(np.shape(x)), params)
    got = jax.tree.map(lambda x: tuple(getattr(x, "shape", ())), out)
    if jax.tree.structure(out) != jax.tree.structure(params) or want != got:
        raise ValueError(f"the gradient must have the params' structure and shapes {want}, got {got}")
