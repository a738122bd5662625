"""The contract every update rule keeps, as one call: `check_rule(name, **hyperparameters)`.

On the model of scikit-learn's `check_estimator`: each check builds the rule through the registry
(`gdjax.rules.get`), runs it on a small smooth cost over a two-leaf pytree, and raises
`AssertionError` naming the rule and the broken promise. The checks:

- **builds**: `rules.get` returns a transformation whose `update` takes the extra arguments
  `value`, `grad` and `value_fn` (what the run loop passes to every rule);
- **dtypes**: float32 params stay float32 (and float64 stay float64 when x64 is on); the state's
  shapes, dtypes and weak types do not change across steps;
- **jit**: steps run under `jax.jit`, a second call does not retrace, and a rule built with a new
  hyperparameter *value* reuses the traced program (values live in the state);
- **vmap**: the rule built inside `jax.vmap` from traced hyperparameter values runs, and each lane
  equals the same value run alone;
- **optax**: equality with the plain Optax counterpart (`rules.optax_equivalent`), to
  `PARITY_TOLERANCES` of the dtype (float64 when x64 is on);
- **errors**: a negative or NaN learning rate (or first numeric hyperparameter) is a `ValueError`
  that names it;
- **chain**: the rule works inside `optax.chain`, and chaining after `optax.identity()` changes
  nothing.

Example:
  >>> from gdjax.testing import check_rule
  >>> check_rule("momentum", learning_rate=0.05, momentum=0.5)

This module is for tests and for people writing rules; `import gdjax` does not load it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import rules

__all__ = ["PARITY_TOLERANCES", "check_rule", "default_hyperparameters"]

# How close a gdjax trajectory is to its plain Optax counterpart, by dtype (rtol, atol). Float64 is
# the contract. Float32 is not bit for bit: gdjax stores hyperparameters as float32 arrays, so
# `1 - b1` is `1 - float32(0.9)` where Optax rounds the Python float `1 - 0.9`; Adam's trajectory
# drifts by up to 3.8e-5 in 100 steps of the alias-test parabola (see `gdjax.rules`).
PARITY_TOLERANCES: dict[np.dtype, tuple[float, float]] = {
    np.dtype(np.float64): (1e-9, 1e-12),
    np.dtype(np.complex128): (1e-9, 1e-12),
    np.dtype(np.float32): (1e-4, 1e-5),
    np.dtype(np.complex64): (1e-4, 1e-5),
}

_NUM_STEPS = 5


def _cost(params) -> jax.Array:
    """A smooth, strongly convex cost on `{"w": (3,), "b": ()}`, quartic so curvature varies."""
    w, b = params["w"], params["b"]
    target = jnp.asarray([1.0, -2.0, 0.5], w.dtype)
    return 0.5 * jnp.sum((w - target) ** 2) + 0.05 * jnp.sum(w**4) + (b - 0.3) ** 2


def _params(dtype) -> dict:
    return {"w": jnp.asarray([0.5, 1.0, -1.5], dtype), "b": jnp.asarray(2.0, dtype)}


def _step(update, params, state):
    """One step as the run loop takes it: extra arguments for the rules that need them."""
    value, grads = jax.value_and_grad(_cost)(params)
    updates, state = update(grads, state, params, value=value, grad=grads, value_fn=_cost)
    return optax.apply_updates(params, updates), state, updates


def _trajectory(rule, params, num_steps: int = _NUM_STEPS):
    def body(carry, _):
        params, state = carry
        params, state, _ = _step(rule.update, params, state)
        return (params, state), params

    return jax.lax.scan(body, (params, rule.init(params)), None, length=num_steps)[1]


def _fail(name: str, check: str, message: str) -> AssertionError:
    return AssertionError(f"check_rule({name!r}) [{check}]: {message}")


def _avals(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x), getattr(x, "weak_type", False)), tree)


def _x64() -> bool:
    return bool(jax.config.read("jax_enable_x64"))


def _float_dtypes() -> list:
    return [jnp.float32, jnp.float64] if _x64() else [jnp.float32]


def _signature_defaults(name: str) -> dict[str, Any]:
    fn = rules._signature(name)[0]
    return {p.name: p.default for p in inspect.signature(fn).parameters.values()}


def default_hyperparameters(name: str) -> dict[str, Any]:
    """Values `check_rule` uses when given none: `learning_rate=1e-2` where it is required."""
    defaults = _signature_defaults(name)
    if defaults.get("learning_rate", None) is inspect.Parameter.empty:
        return {"learning_rate": 1e-2}
    return {}


def _swept(name: str, hyperparameters: dict) -> str | None:
    """The hyperparameter whose value the value checks change: the learning rate if there is one."""
    numeric = rules.hyperparameters(name)
    defaults = _signature_defaults(name)

    def is_float(value):
        return isinstance(value, int | float) and not isinstance(value, bool) and value != 0

    candidates = [k for k in numeric if is_float(hyperparameters.get(k, defaults.get(k)))]
    if "learning_rate" in candidates:
        return "learning_rate"
    return candidates[0] if candidates else None


def _with_value(name: str, hyperparameters: dict, key: str, factor: float) -> dict:
    value = hyperparameters.get(key, _signature_defaults(name).get(key))
    return {**hyperparameters, key: value * factor}


def check_builds(name: str, hyperparameters: dict) -> None:
    rule = rules.get(name, **hyperparameters)
    if not isinstance(rule, optax.GradientTransformation):
        raise _fail(name, "builds", f"rules.get returned {type(rule).__name__}, not a GradientTransformation")
    params = _params(jnp.float32)
    try:
        _step(rule.update, params, rule.init(params))
    except TypeError as err:
        raise _fail(name, "builds", f"update does not take value=, grad=, value_fn= ({err})") from err


def check_dtypes(name: str, hyperparameters: dict) -> None:
    rule = rules.get(name, **hyperparameters)
    step = jax.jit(_step, static_argnums=0)
    for dtype in _float_dtypes():
        params0 = _params(dtype)
        state0 = rule.init(params0)
        params1, state1, updates1 = step(rule.update, params0, state0)
        params2, state2, updates2 = step(rule.update, params1, state1)
        for label, tree in (("params", params2), ("updates", updates1), ("updates", updates2)):
            if _avals(tree) != _avals(params0):
                raise _fail(
                    name,
                    "dtypes",
                    f"{label} changed from {_avals(params0)} to {_avals(tree)} ({dtype.__name__})",
                )
        if not (_avals(state0) == _avals(state1) == _avals(state2)):
            raise _fail(
                name,
                "dtypes",
                f"state shapes/dtypes changed across steps ({dtype.__name__}):\n  init   {_avals(state0)}\n"
                f"  step 1 {_avals(state1)}\n  step 2 {_avals(state2)}",
            )
        if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(params2)):
            raise _fail(name, "dtypes", f"non-finite params after two steps ({dtype.__name__})")


def check_jit(name: str, hyperparameters: dict) -> None:
    traces: list[int] = []

    def counted_step(update, params, state):
        traces.append(1)  # runs once per trace, that is once per compilation
        return _step(update, params, state)

    step = jax.jit(counted_step, static_argnums=0)
    params = _params(jnp.float32)
    rule = rules.get(name, **hyperparameters)
    state = rule.init(params)
    p1, s1, _ = step(rule.update, params, state)
    step(rule.update, p1, s1)
    if len(traces) != 1:
        raise _fail(name, "jit", f"a second call traced again ({len(traces)} traces)")
    key = _swept(name, hyperparameters)
    if key is None:
        return  # no numeric hyperparameter to change
    # A value far from the first, so that a clipped step (polyak_sgd's max_learning_rate) moves.
    other = rules.get(name, **_with_value(name, hyperparameters, key, 0.01))
    p_other, _, _ = step(other.update, params, other.init(params))
    if len(traces) != 1:
        raise _fail(
            name,
            "jit",
            f"a new value of {key!r} recompiled: its update is a new function ({len(traces)} traces); "
            "keep values in the state and build update once per static configuration",
        )
    if all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p_other), strict=True)):
        raise _fail(
            name, "jit", f"a new value of {key!r} did not change the step: is it read from the state?"
        )


def check_vmap(name: str, hyperparameters: dict) -> None:
    key = _swept(name, hyperparameters)
    if key is None:
        return
    dtype = jnp.float64 if _x64() else jnp.float32
    params0 = _params(dtype)
    factors = (0.5, 1.0)
    values = [_with_value(name, hyperparameters, key, f)[key] for f in factors]

    def final(value):
        return _trajectory(rules.get(name, **{**hyperparameters, key: value}), params0)

    try:
        lanes = jax.jit(jax.vmap(final))(jnp.asarray(values, dtype))
    except Exception as err:
        raise _fail(
            name, "vmap", f"building the rule from a traced {key!r} inside vmap failed: {err!r}"
        ) from err
    rtol, atol = PARITY_TOLERANCES[np.dtype(dtype)]
    for i, value in enumerate(values):
        alone = jax.jit(
            lambda v=value: _trajectory(rules.get(name, **{**hyperparameters, key: v}), params0)
        )()
        for lane, single in zip(jax.tree.leaves(lanes), jax.tree.leaves(alone), strict=True):
            if not np.allclose(np.asarray(lane[i]), np.asarray(single), rtol=rtol, atol=atol):
                raise _fail(name, "vmap", f"lane {key}={value} differs from the same value run alone")


def check_optax(name: str, hyperparameters: dict) -> None:
    oracle = rules.optax_equivalent(name, **hyperparameters)
    if oracle is None:
        return
    dtype = jnp.float64 if _x64() else jnp.float32
    params0 = _params(dtype)
    ours = jax.jit(lambda: _trajectory(rules.get(name, **hyperparameters), params0, 20))()
    theirs = jax.jit(lambda: _trajectory(oracle, params0, 20))()
    rtol, atol = PARITY_TOLERANCES[np.dtype(dtype)]
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        a, b = np.asarray(a), np.asarray(b)
        if not np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True):
            worst = float(np.nanmax(np.abs(a - b)))
            raise _fail(
                name,
                "optax",
                f"trajectory differs from plain Optax by up to {worst:.3g} in {np.dtype(dtype).name} "
                f"(rtol={rtol}, atol={atol})",
            )


def check_errors(name: str, hyperparameters: dict) -> None:
    key = "learning_rate" if "learning_rate" in rules.hyperparameters(name) else _swept(name, hyperparameters)
    if key is None:
        return
    bad_values = [float("nan")] + ([-0.1] if key == "learning_rate" else [])
    for bad in bad_values:
        try:
            rules.get(name, **{**hyperparameters, key: bad})
        except ValueError as err:
            if key not in str(err):
                raise _fail(
                    name, "errors", f"the error for {key}={bad} does not name {key!r}: {err}"
                ) from err
        else:
            raise _fail(name, "errors", f"{key}={bad} was accepted; expected a ValueError naming {key!r}")


def check_chain(name: str, hyperparameters: dict) -> None:
    params0 = _params(jnp.float64 if _x64() else jnp.float32)
    rule = rules.get(name, **hyperparameters)
    alone = jax.jit(lambda: _trajectory(rule, params0))()
    chained = jax.jit(lambda: _trajectory(optax.chain(optax.identity(), rule), params0))()
    for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(chained), strict=True):
        if not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=0, equal_nan=True):
            raise _fail(name, "chain", "optax.chain(optax.identity(), rule) differs from the rule alone")
    clipped = jax.jit(lambda: _trajectory(optax.chain(optax.clip_by_global_norm(1.0), rule), params0))()
    if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(clipped)):
        raise _fail(name, "chain", "non-finite params after clip_by_global_norm then the rule")


CHECKS: tuple[Callable[[str, dict], None], ...] = (
    check_builds,
    check_dtypes,
    check_jit,
    check_vmap,
    check_optax,
    check_errors,
    check_chain,
)


def check_rule(name: str, **hyperparameters: Any) -> None:
    """Runs every contract check on the rule `name` built with `hyperparameters`.

    Args:
      name: a hand-written rule (`gdjax.rules.names()`) or `'optax.<name>'`.
      **hyperparameters: as for `gdjax.rules.get`; when none are given,
        `default_hyperparameters(name)`.

    Raises:
      AssertionError: naming the rule and the first check it fails.
      ValueError: when `rules.get` itself refuses the hyperparameters.
    """
    hyperparameters = hyperparameters or default_hyperparameters(name)
    for key, value in hyperparameters.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"check_rule needs finite hyperparameters, got {key}={value}")
    for check in CHECKS:
        check(name, dict(hyperparameters))
