"""Checks at the edge: data, arguments and cost signatures, with messages a person can act on.

Everything here runs on the host before anything is traced, so a mistake surfaces as a `ValueError`
naming the offending entry and shapes, never as a traceback from inside JAX.
"""

from __future__ import annotations

import weakref
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.spelling import nearest
from gdjax.types import PyTree


def _path_name(path) -> str:
    return jax.tree_util.keystr(path) or "<root>"


def check_finite_number(name: str, value: Any, *, positive: bool = False, lower=None, upper=None):
    """Raises ValueError unless `value` is a finite real number in the given bounds.

    Tracers (values inside `jit`/`vmap`) are not checked: they are validated where they enter.
    """
    if isinstance(value, jax.core.Tracer):
        return
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf" or arr.size == 0:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and not np.all(arr > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    if lower is not None and not np.all(arr >= lower):
        raise ValueError(f"{name} must be >= {lower}, got {value!r}")
    if upper is not None and not np.all(arr <= upper):
        raise ValueError(f"{name} must be <= {upper}, got {value!r}")


# Integer options live in int32 inside the compiled program (step counters, patience, evaluation
# indices): a larger value would overflow there, so it is refused here with the range.
MAX_INT = 2**31 - 1
# Seeds are 64-bit: the key holds the high and the low 32 bits (`loop.seed_key`).
SEED_LIMIT = 2**63


def check_positive_int(name: str, value: Any, *, allow_none: bool = False, upper: int = MAX_INT):
    """Raises ValueError unless `value` is an integer in `[1, upper]` (default: what int32 holds)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if value > upper:
        raise ValueError(f"{name} must be an integer in [1, {upper}], got {value!r}")


def one_key(key: jax.Array) -> jax.Array:
    """`key` if it is one key: a batch of keys (`jax.random.split(key, n)`) would be read as none of them."""
    if key.shape != ():
        raise ValueError(
            f"key must be one key, got an array of keys of shape {key.shape}; pass one of them "
            "(keys[i]), or run several seeds in one call with gdjax.sweep(..., seeds=[...])"
        )
    return key


def as_key(key):
    """An integer seed, raw key data or a typed key -> one typed PRNG key (None stays None)."""
    if key is None:
        return key
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return one_key(key)
    if isinstance(key, bool) or (np.ndim(key) == 0 and not isinstance(key, int | np.integer)):
        raise ValueError(f"key must be an integer seed or a jax.random.key, got {key!r}")
    if np.ndim(key) == 0:
        return seed_key(check_seed("key", key))
    if isinstance(key, jax.core.Tracer) and key.dtype == jnp.uint32:  # raw key data under vmap or jit
        return one_key(jax.random.wrap_key_data(key))
    try:
        typed = jax.random.wrap_key_data(np.asarray(key, np.uint32))
    except (TypeError, ValueError) as err:
        raise ValueError(f"key must be an integer seed or a jax.random.key, got {key!r} ({err})") from None
    return one_key(typed)


def seed_key(seed: int) -> jax.Array:
    """The PRNG key of an integer seed in `[0, 2**63)`, the same with and without float64 enabled.

    `jax.random.key(seed)` keeps only the low 32 bits when `jax_enable_x64` is off, so seeds `0` and
    `2**32` gave the same lanes in float32 (issue 19). The default (threefry) key of a seed is its
    high and low 32-bit words, `[seed >> 32, seed & 0xFFFFFFFF]`: exactly `jax.random.key(seed)` of
    JAX with float64 enabled, and of JAX without it for seeds below `2**32`. Other key
    implementations fold the high word into the key of the low one (unchanged below `2**32`).
    """
    high, low = divmod(int(seed), 2**32)
    # The implementation's name from the config, not from a key made to ask it: making one is device
    # work, and planning a sweep (`gdjax.check_sweep`) compiles and runs nothing.
    impl = str(jax.config.jax_default_prng_impl)
    if impl == "threefry2x32":
        return jax.random.wrap_key_data(np.asarray([high, low], np.uint32), impl=impl)
    if jax.config.jax_enable_x64:
        return jax.random.key(int(seed))
    key = jax.random.key(np.uint32(low))
    return jax.random.fold_in(key, np.uint32(high)) if high else key


def check_seed(name: str, value: Any) -> int:
    """An integer seed in `[0, 2**63)` as a Python int (every value gives its own key)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer seed, got {value!r}")
    if not 0 <= int(value) < SEED_LIMIT:
        raise ValueError(f"{name} must be an integer seed that fits 64 bits, 0 <= seed < 2**63, got {value}")
    return int(value)


# Device arrays are immutable: one that passed the finiteness scan once need not be copied to the host
# and scanned again on every call (for 1e6 x 32 data that copy costs more than the run).
_FINITE: dict[int, weakref.ref] = {}


def _known_finite(leaf) -> bool:
    ref = _FINITE.get(id(leaf))
    return ref is not None and ref() is leaf


def _remember_finite(leaf) -> None:
    if isinstance(leaf, jax.Array):
        try:
            key = id(leaf)
            _FINITE[key] = weakref.ref(leaf, lambda _, key=key: _FINITE.pop(key, None))
        except TypeError:  # an array type without weak references: scanned each time
            pass


def check_data(data: PyTree) -> int | None:
    """Checks a batch pytree: finite, non-empty, every leaf sharing one leading (example) axis.

    Returns the number of examples, or None for `data=None` (costs that ignore their batch).
    """
    if data is None:
        return None
    leaves = jax.tree_util.tree_leaves_with_path(data)
    if not leaves:
        return None
    n = None

    def agree(rows: int) -> None:  # every leaf on one leading (example) axis
        nonlocal n
        if n is None:
            n = rows
        elif rows != n:
            shapes = {"data" + _path_name(p): tuple(np.shape(x)) for p, x in leaves}
            raise ValueError(f"data entries disagree on the number of examples: {shapes}")

    for path, leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):  # values unknown while tracing; its shape is known
            if leaf.ndim == 0:
                raise ValueError(
                    f"data{_path_name(path)} is a scalar; every data entry needs a leading example axis"
                )
            agree(leaf.shape[0])
            continue
        if _known_finite(leaf):
            agree(leaf.shape[0])
            continue
        if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            arr = np.empty(leaf.shape, np.bool_)  # typed PRNG keys (one per example): their shape only
        else:
            arr = np.asarray(leaf)
        name = "data" + _path_name(path) if arr.ndim == 0 or arr.shape[0] == 0 else ""
        if arr.ndim == 0:
            hint = ""
            if type(leaf) in (int, float, complex):  # an element of a Python list: a leaf to JAX
                hint = " (a Python list of numbers is a tree of scalars to JAX: pass arrays, np.asarray(X))"
            raise ValueError(f"{name} is a scalar; every data entry needs a leading example axis{hint}")
        if arr.shape[0] == 0:
            raise ValueError(f"{name} is empty (shape {arr.shape}); need at least one example")
        inexact = arr.dtype.kind in "fc" or (arr.dtype.kind == "V" and jnp.issubdtype(arr.dtype, jnp.inexact))
        if inexact and not np.isfinite(arr).all():  # bfloat16's NumPy kind is "V"
            name = "data" + _path_name(path)
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise ValueError(
                f"{name} contains a non-finite value ({arr[tuple(bad)]}) at index {tuple(bad.tolist())}"
            )
        agree(arr.shape[0])
        _remember_finite(leaf)
    return n


def check_regression_data(X, y):
    """Checks a supervised `(X, y)` pair: `X` is `(n, d)`, `y` is `(n,)`, finite, non-empty."""
    X_shape, y_shape = np.shape(X), np.shape(y)
    if len(X_shape) != 2:
        raise ValueError(f"X must be 2-D (n_examples, n_features), got shape {X_shape}")
    if len(y_shape) == 2 and y_shape[1] == 1:
        raise ValueError(
            f"y has shape {y_shape}; pass a 1-D target of shape ({y_shape[0]},) (e.g. y.ravel()): "
            "an (n, 1) target broadcasts against (n,) predictions into an (n, n) residual"
        )
    if len(y_shape) != 1:
        raise ValueError(f"y must be 1-D (n_examples,), got shape {y_shape}")
    if X_shape[0] != y_shape[0]:
        raise ValueError(f"X has {X_shape[0]} rows but y has {y_shape[0]} entries (X {X_shape}, y {y_shape})")
    check_data((X, y))


def check_cost(cost, params: PyTree, data: PyTree):
    """Traces `cost(params, data)` abstractly (no compilation) and checks it returns a real scalar.

    Turns the shape errors of a params pytree that does not match the cost into one ValueError
    naming the params structure.
    """
    try:
        out = jax.eval_shape(cost, params, data)
    except Exception as err:  # re-raised with context: the user's cost, not gdjax, failed
        shapes = jax.tree.map(lambda x: tuple(np.shape(x)), params)
        data_shapes = jax.tree.map(lambda x: tuple(np.shape(x)), data)
        raise ValueError(
            f"cost(params, data) failed for params with shapes {shapes} and data with shapes "
            f"{data_shapes}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError(f"cost must return a scalar, got {out}")
    if not jnp.issubdtype(out.dtype, jnp.floating):  # bfloat16 too
        raise ValueError(f"cost must return a floating-point scalar, got dtype {out.dtype}")


def check_params(params: PyTree):
    """Params must be a non-empty pytree of finite floating-point (or complex) arrays."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError("params is empty: pass a pytree with at least one array")
    for path, leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):
            continue
        dtype = leaf.dtype if isinstance(leaf, jax.Array) else np.asarray(leaf).dtype
        if not jnp.issubdtype(dtype, jnp.inexact):  # bfloat16 and complex too
            raise ValueError(
                f"params{_path_name(path)} has dtype {dtype}; parameters must be floating point (or complex)"
            )
        if _known_finite(leaf):
            continue  # a device array checked before (immutable): no copy to the host again
        if not np.isfinite(np.asarray(leaf)).all():
            raise ValueError(f"params{_path_name(path)} contains non-finite values")
        _remember_finite(leaf)


__all__ = [
    "check_cost",
    "check_data",
    "check_finite_number",
    "check_params",
    "check_positive_int",
    "check_regression_data",
    "check_seed",
    "seed_key",
    "nearest",
]
