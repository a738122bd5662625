"""Hand-written update rules, step-size schedules, and a registry that resolves a rule by name.

Every rule is a factory returning an `optax.GradientTransformation` whose `update` gives the *final*
updates (already multiplied by `-learning_rate`), to be applied with `optax.apply_updates`. The
defaults reproduce the numerics of the Optax optimizer of the same name; where a textbook form
differs (where `eps` sits, the momentum form, the initial accumulators) the difference is an
argument whose default matches Optax.

One rule representation. Every rule (hand-written, or Optax's by name) is a `Rule`: an
`optax.GradientTransformationExtraArgs` made of two halves, a hashable `rule.spec` (`RuleSpec`: the
rule's name and its non-numeric options, which select the program) and `rule.hyperparams` (the
numeric values, which are data). Unlike Optax, the values live in the state: every state has a
`hyperparams` dict of scalar arrays (in the floating dtype of the params) and `update` reads them
from there. So `sgd(0.01).update == sgd(0.02).update`, `jax.jit` keys on the spec, a new learning rate
never recompiles, and `spec.init(params, values)` inside `jax.vmap` sweeps a grid of values in one
compiled program. `run`, `sweep`, configs and `GDRegressor` all take rules in this form and validate
values in one place, `get` (or the factories).

Every rule's `update` takes `update(updates, state, params=None, **extra_args)` and returns an
`optax.GradientTransformationExtraArgs`: the run loop passes `value=`, `grad=` and `value_fn=` to all
rules, the hand-written ones ignore them, and Optax's `lbfgs` and `polyak_sgd` use them. Complex
parameters work as in Optax (second moments of `|g|**2`, hyperparameters in the real dtype: float32
for complex64).

Parity with Optax. In float64 the trajectories equal plain Optax's to 1e-9 (bit for bit on the
tests' problems). In float32, `sgd`, `momentum`, `nesterov` and `adagrad` are bit for bit too;
`adam` and `rmsprop` equal `optax.inject_hyperparams(optax.adam)` bit for bit but not plain
`optax.adam`, which closes over Python floats: its `1 - b1` is the float64 `1 - 0.9` rounded to
float32 (0.1f), where a float32 array gives `1 - float32(0.9)` = 0.100000024f. No arithmetic on the
stored float32 value can recover the decimal, so closing the gap would mean baking values into the
program. Measured on Optax's test parabola from `[-1, 10, 1]`, 100 steps of `adam(0.1)`: max
difference 3.8e-5 with x64 off and 2.4e-6 with x64 on (Optax's bias correction then runs in float64);
`adam(0.1, nesterov=True)` 3.5e-5 / 1.4e-6, `rmsprop(0.1)` 1.4e-6. `gdjax.testing.PARITY_TOLERANCES`
holds the tolerance by dtype.

Example:
  >>> import jax, jax.numpy as jnp, optax
  >>> from gdjax import rules
  >>> rule = rules.momentum(0.1, momentum=0.9, schedule=rules.inverse_sqrt())
  >>> params = {"w": jnp.ones(3)}
  >>> state = rule.init(params)
  >>> grads = {"w": jnp.ones(3)}
  >>> updates, state = rule.update(grads, state, params)
  >>> params = optax.apply_updates(params, updates)
  >>> sorted(state.hyperparams)
  ['learning_rate', 'momentum']
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import spelling
from gdjax.types import PyTree

__all__ = [
    "AdagradState",
    "Rule",
    "RuleSpec",
    "RuleUpdate",
    "AdamState",
    "MomentumState",
    "NesterovState",
    "RmspropState",
    "Schedule",
    "SgdState",
    "AdamHdState",
    "SgdHdState",
    "adagrad",
    "adam",
    "adam_hd",
    "average",
    "AverageState",
    "constant",
    "describe",
    "check_in_dtype",
    "domain_violations",
    "exponential_decay",
    "get",
    "hyperparameters",
    "inverse_sqrt",
    "is_rule",
    "inverse_time",
    "momentum",
    "names",
    "nesterov",
    "optax_equivalent",
    "rmsprop",
    "schedule_names",
    "sgd",
    "sgd_hd",
    "static_option",
]

Hyperparams = dict[str, jax.Array]


# --------------------------------------------------------------------------------------------------
# Validation at the edge: concrete values only (tracers from jit/vmap are checked where they enter).

_CONSTRAINTS: dict[str, Callable[[float], bool]] = {
    "": lambda x: True,
    "> 0": lambda x: x > 0,
    ">= 0": lambda x: x >= 0,
    "in [0, 1)": lambda x: 0 <= x < 1,
    "in [0, 1]": lambda x: 0 <= x <= 1,
    "in (0, 1]": lambda x: 0 < x <= 1,
    "in (0, 1)": lambda x: 0 < x < 1,
}


def _check_value(name: str, value: Any, constraint: str) -> None:
    """Raises ValueError unless `value` is a real scalar satisfying `constraint`.

    A tracer's value is unknown while tracing, so only its shape is checked.
    """
    if isinstance(value, bool | str) or value is None:
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, jax.core.Tracer):
        if value.shape != ():
            raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
        return
    try:
        arr = np.asarray(value)
    except Exception as err:  # e.g. an arbitrary object
        raise ValueError(f"{name} must be a real number, got {value!r}") from err
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if arr.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    x = float(arr)
    if not (math.isfinite(x) and _CONSTRAINTS[constraint](x)):
        bound = f" {constraint}" if constraint else ""
        raise ValueError(f"{name} must be a finite number{bound}, got {x!r}")


# The same intervals on arrays (traced values): elementwise, no Python `and`.
_TRACED_CONSTRAINTS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "": lambda x: jnp.ones(jnp.shape(x), bool),
    "> 0": lambda x: x > 0,
    ">= 0": lambda x: x >= 0,
    "in [0, 1)": lambda x: (x >= 0) & (x < 1),
    "in [0, 1]": lambda x: (x >= 0) & (x <= 1),
    "in (0, 1]": lambda x: (x > 0) & (x <= 1),
    "in (0, 1)": lambda x: (x > 0) & (x < 1),
}


def domain_violations(spec: Any, values: Mapping[str, Any]) -> dict[str, jax.Array]:
    """`{name: bool}`: whether each value lies outside its domain (non-finite, or outside the interval
    `get` would check). Traceable: the run loop calls it inside the program, where a value can arrive
    as a tracer that `get` could not check (`jax.jit(lambda lr: run(..., rules.sgd(lr), ...))`).
    """
    domain = dict(getattr(spec, "domain", ()))
    out = {}
    for name, value in values.items():
        x = jnp.asarray(value)
        if not jnp.issubdtype(x.dtype, jnp.number):
            continue
        ok = jnp.all(jnp.isfinite(x) & _TRACED_CONSTRAINTS[domain.get(name, "")](x))
        out[name] = ~ok
    return out


def check_in_dtype(spec: Any, values: Mapping[str, Any], originals: Mapping[str, Any], dtype) -> None:
    """Raises ValueError where a value cast to the run's `dtype` has left its domain: Adam's
    `b2 = 0.999` is 1.0 in bfloat16 (and `0.99999999` in float32), whose bias correction `1 - b2**t`
    is then 0 and every step non-finite. `values` are the cast host arrays, `originals` as given.
    On every plain `run` call, so scalars are checked as Python floats (a few microseconds)."""
    if np.dtype(dtype) == np.float64:
        return
    for name, constraint in spec.domain:
        value = values.get(name)
        if value is None or isinstance(value, jax.core.Tracer):
            continue
        if np.ndim(value) == 0:
            x = float(value)
            if math.isfinite(x) and _CONSTRAINTS[constraint](x):
                continue
            # Non-finite as given is the host check's; finite as given, it overflowed the dtype (1e300).
            if not math.isfinite(x) and not np.isfinite(np.asarray(originals[name], np.float64)).all():
                continue
            i = 0
        else:
            arr = np.asarray(value, np.float64).reshape(-1)
            finite = np.isfinite(arr)
            outside = finite & ~np.asarray(_TRACED_CONSTRAINTS[constraint](arr))
            if np.isfinite(np.asarray(originals[name], np.float64)).all():
                outside |= ~finite  # finite as given (a sweep's lanes, or its grid values): overflowed
            if not outside.any():
                continue
            i = int(np.flatnonzero(outside)[0])
        given = np.asarray(originals[name]).reshape(-1)
        shown = given[i] if given.size > i else given[0]
        cast = float(np.asarray(value, np.float64).reshape(-1)[i])
        outside = constraint and math.isfinite(cast)
        where, holds = (f"outside {constraint}", "holds inside it") if outside else ("not finite", "holds")
        raise ValueError(
            f"{name} = {float(shown)!r} is {cast!r} in {np.dtype(dtype).name} (the params' dtype, in "
            f"which the rule keeps it), {where}: give a value that {np.dtype(dtype).name} {holds}, or "
            "params in a wider dtype"
        )


def _check_values(
    values: dict[str, Any], constraints: dict[str, str], optional: tuple[str, ...] = ()
) -> None:
    """Each value in its domain; None only for the `optional` ones (rmsprop's momentum: none)."""
    for name, constraint in constraints.items():
        if name in values and (values[name] is not None or name not in optional):
            _check_value(name, values[name], constraint)


# --------------------------------------------------------------------------------------------------
# Schedules.

_REQUIRED = object()  # marks a schedule value without a default


class _ScheduleKind(NamedTuple):
    step_size: Callable[[Hyperparams, jax.Array], jax.Array]  # (hyperparams, t) -> step size at t
    defaults: tuple[tuple[str, Any], ...]
    constraints: dict[str, str]


# `t` is the number of updates already applied (the count before its increment, as Optax's
# schedules see it), cast to the dtype of the learning rate.
_SCHEDULE_KINDS: dict[str, _ScheduleKind] = {
    "constant": _ScheduleKind(
        step_size=lambda hp, t: hp["learning_rate"],
        defaults=(),
        constraints={},
    ),
    "inverse_sqrt": _ScheduleKind(
        step_size=lambda hp, t: hp["learning_rate"] / jnp.sqrt(t + 1),
        defaults=(),
        constraints={},
    ),
    "inverse_time": _ScheduleKind(
        step_size=lambda hp, t: hp["learning_rate"] / (1 + hp["decay_rate"] * t),
        defaults=(("decay_rate", 1.0),),
        constraints={"decay_rate": ">= 0"},
    ),
    "exponential_decay": _ScheduleKind(
        # Same operations as optax.exponential_decay(learning_rate, transition_steps, decay_rate).
        step_size=lambda hp, t: hp["learning_rate"] * jnp.power(hp["decay_rate"], t / hp["transition_steps"]),
        defaults=(("decay_rate", _REQUIRED), ("transition_steps", 1)),
        constraints={"decay_rate": "in (0, 1]", "transition_steps": "> 0"},
    ),
}


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Static description of a step-size schedule: its kind and its hyperparameter values.

    The kind is static (it selects the cached `update`); the values are copied into the rule's
    `state.hyperparams` at `init`, so they can be swept like any other hyperparameter. Build one
    with `constant()`, `inverse_sqrt()`, `inverse_time(...)` or `exponential_decay(...)`.

    Attributes:
      kind: one of `schedule_names()`.
      values: `(name, value)` pairs of the schedule's own hyperparameters (not the learning rate).
    """

    kind: str
    values: tuple[tuple[str, Any], ...] = ()

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The schedule's own hyperparameters as a dict."""
        return dict(self.values)

    def step_size(self, learning_rate: Any, count: Any) -> jax.Array:
        """Step size after `count` updates for a base `learning_rate` (vectorised over `count`)."""
        dtype = jnp.result_type(float)
        hp = {"learning_rate": jnp.asarray(learning_rate, dtype)}
        hp.update({k: jnp.asarray(v, dtype) for k, v in self.values})
        t = jnp.asarray(count).astype(dtype)
        return _SCHEDULE_KINDS[self.kind].step_size(hp, t)


def _schedule(kind: str, **values: Any) -> Schedule:
    """Builds and validates a `Schedule` of `kind`; missing values take the kind's defaults."""
    spec = _SCHEDULE_KINDS[kind]
    valid = [name for name, _ in spec.defaults]
    for name in values:
        if name not in valid:
            raise ValueError(
                f"schedule {kind!r} has no hyperparameter {name!r}; valid: {valid}" + _suggest(name, valid)
            )
    merged = {name: values.get(name, default) for name, default in spec.defaults}
    missing = [name for name, value in merged.items() if value is _REQUIRED]
    if missing:
        raise ValueError(
            f"schedule {kind!r} needs {', '.join(missing)} (e.g. schedule=rules.{kind}({missing[0]}=...))"
        )
    _check_values(merged, spec.constraints)
    return Schedule(kind=kind, values=tuple(merged.items()))


def constant() -> Schedule:
    """Constant step size: `learning_rate_t = learning_rate`.

    Returns:
      A `Schedule` to pass as `schedule=` to any rule.
    """
    return _schedule("constant")


def inverse_sqrt() -> Schedule:
    """Inverse square-root decay: `learning_rate_t = learning_rate / sqrt(t + 1)`.

    `t` is the number of updates already applied. The classic step size for subgradient and
    stochastic methods on convex problems (the O(1/sqrt(T)) rate).

    Returns:
      A `Schedule` to pass as `schedule=` to any rule.
    """
    return _schedule("inverse_sqrt")


def inverse_time(decay_rate: Any = 1.0) -> Schedule:
    """Inverse-time decay: `learning_rate_t = learning_rate / (1 + decay_rate * t)`.

    `t` is the number of updates already applied. The safe-but-slow decay: the steps sum to infinity
    while their squares do not (the Robbins-Monro conditions), which guarantees convergence of SGD
    on convex problems at the price of very small late steps.

    Args:
      decay_rate: how fast the step shrinks; `0` gives a constant step. Must be `>= 0`.

    Returns:
      A `Schedule` to pass as `schedule=` to any rule.
    """
    return _schedule("inverse_time", decay_rate=decay_rate)


def exponential_decay(decay_rate: Any, transition_steps: Any = 1) -> Schedule:
    """Exponential decay: `learning_rate_t = learning_rate * decay_rate ** (t / transition_steps)`.

    `t` is the number of updates already applied. Same numerics as
    `optax.exponential_decay(learning_rate, transition_steps, decay_rate)` (continuous, no
    staircase).

    Args:
      decay_rate: factor applied every `transition_steps` updates, in `(0, 1]`.
      transition_steps: number of updates over which the step shrinks by `decay_rate`, `> 0`.

    Returns:
      A `Schedule` to pass as `schedule=` to any rule.
    """
    return _schedule("exponential_decay", decay_rate=decay_rate, transition_steps=transition_steps)


def schedule_names() -> tuple[str, ...]:
    """Names accepted by `schedule=` as a string."""
    return tuple(_SCHEDULE_KINDS)


def _as_schedule(schedule: Schedule | str | None) -> Schedule:
    if schedule is None:
        return constant()
    if isinstance(schedule, Schedule):
        if schedule.kind not in _SCHEDULE_KINDS:
            raise ValueError(f"unknown schedule kind {schedule.kind!r}")
        return schedule
    if isinstance(schedule, str):
        if schedule not in _SCHEDULE_KINDS:
            raise ValueError(
                f"unknown schedule {schedule!r}; known: {list(_SCHEDULE_KINDS)}"
                + _suggest(schedule, list(_SCHEDULE_KINDS))
            )
        return _schedule(schedule)
    raise ValueError(
        f"schedule must be a rules.Schedule or one of {list(_SCHEDULE_KINDS)}, got {schedule!r} "
        "(for an Optax schedule function use get('optax.<name>', learning_rate=schedule_fn))"
    )


# --------------------------------------------------------------------------------------------------
# Shared plumbing.


def _hyperparam_dtype(params: PyTree) -> jnp.dtype:
    """Real dtype of the promoted inexact leaves of `params`; the default float if there are none.

    Complex leaves count by their real part (complex64 -> float32), as hyperparameters are real.
    """
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    inexact = [d for d in dtypes if jnp.issubdtype(d, jnp.inexact)]
    if not inexact:
        return jnp.result_type(float)
    return jnp.finfo(jnp.result_type(*inexact)).dtype


def _like(x: jax.Array, leaf: jax.Array) -> jax.Array:
    """A hyperparameter cast to the dtype of the leaf it acts on (mixed-precision pytrees)."""
    return x.astype(leaf.dtype)


def _step_size(step_size: Callable, state: Any) -> jax.Array:
    hp = state.hyperparams
    return step_size(hp, state.count.astype(hp["learning_rate"].dtype))


def _scale(lr: jax.Array, tree: PyTree) -> PyTree:
    """`-lr * tree`, the final update of every rule."""
    return jax.tree.map(lambda u: -_like(lr, u) * u, tree)


def _bias_correction(moment: PyTree, decay: jax.Array, count: jax.Array) -> PyTree:
    # As optax.tree.bias_correction: compute `1 - decay**count` in the hyperparameter dtype, divide
    # in the moment's dtype.
    correction = 1 - decay**count
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)


def _sqrt(x: jax.Array) -> jax.Array:
    """`jnp.sqrt(x)` with derivative 0 instead of inf at `x == 0` (the double-where trick).

    A coordinate whose gradient has always been exactly zero (a start at a minimiser) has a zero
    second moment; the infinite derivative of `sqrt` there, times a zero cotangent, would make a
    hypergradient through the run NaN. Values are unchanged, bit for bit.
    """
    zero = x == 0
    return jnp.where(zero, jnp.zeros_like(x), jnp.sqrt(jnp.where(zero, jnp.ones_like(x), x)))


def _abs_sq(g: jax.Array) -> jax.Array:
    return (g.conj() * g).real


def _square(g: jax.Array) -> jax.Array:
    """`g**2` for real leaves, `|g|**2` for complex ones (optax.tree.update_moment_per_elem_norm)."""
    return g**2 if jnp.isrealobj(g) else _abs_sq(g)


_UPDATE_BUILDERS: dict[str, Callable[..., Callable]] = {}


def _builds(rule: str):
    def register(builder):
        _UPDATE_BUILDERS[rule] = builder
        return builder

    return register


# --------------------------------------------------------------------------------------------------
# The one rule representation: a static spec plus a pytree of hyperparameter values.


class _ByIdentity:
    """Wraps an unhashable static option (a mask pytree): it then selects the program by identity."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __repr__(self):
        return repr(self.value)


def static_option(value: Any) -> Any:
    """A non-numeric option as a `RuleSpec.static` entry: itself, or wrapped to compare by identity
    when it cannot be hashed (a mask pytree), so it still selects a program."""
    try:
        hash(value)
    except TypeError:
        return _ByIdentity(value)
    return value


@dataclasses.dataclass(frozen=True)
class RuleSpec:
    """The static half of a rule: which rule and its non-numeric options. Hashable.

    Two specs are equal when they describe the same program: the same rule (`name`, and `source` for
    a user's factory), the same static options (schedule kind, flags, Optax's non-numeric arguments)
    and the same hyperparameter names. `jax.jit` keys on the spec, so a new hyperparameter *value*
    never recompiles. The values themselves are the other half, `Rule.hyperparams`.

    Attributes:
      name: the registry name (`"adam"`, `"optax.lamb"`) or a user factory's name.
      static: `(option, value)` pairs that select the program.
      numeric: names of the hyperparameters kept as arrays in the rule's state.
      source: a user's factory (None for the registry's rules).
      extra_args: whether the update takes `value`, `grad` and `value_fn` (the hand-written rules do
        not need them, so the compiled loop does not build them).
    """

    name: str
    static: tuple[tuple[str, Any], ...] = ()
    numeric: tuple[str, ...] = ()
    source: Any = None
    extra_args: bool = True  # whether `update` uses value=, grad=, value_fn= (Optax's lbfgs)
    init_state: Callable[[PyTree, Hyperparams], Any] = dataclasses.field(
        default=None, compare=False, repr=False
    )
    make_update: Callable[[], Callable] = dataclasses.field(default=None, compare=False, repr=False)
    # Where the run evaluates loss and metrics: `eval_params(state, params) -> params`, or None for
    # the iterate itself (schedule-free methods evaluate at their average, not at the iterate).
    eval_params: Callable[[Any, PyTree], PyTree] | None = dataclasses.field(
        default=None, compare=False, repr=False
    )
    # `(name, constraint)`: the interval each value must lie in (besides being finite), the same
    # `get` checks on the host; checked again inside the program, where values may be traced.
    domain: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False, repr=False)

    def violations(self, hyperparams: Mapping[str, Any]) -> dict[str, jax.Array]:
        """`{name: bool}`, traceable: which values lie outside their domain (see `domain_violations`)."""
        return domain_violations(self, hyperparams)

    def check_in_dtype(self, values: Mapping[str, Any], originals: Mapping[str, Any], dtype) -> None:
        """Host values cast to the run's dtype still in their domains (see `check_in_dtype`)."""
        check_in_dtype(self, values, originals, dtype)

    def init(self, params: PyTree, hyperparams: Mapping[str, Any]) -> Any:
        """The rule state at `params` for the values `hyperparams` (traceable: jit and vmap over them)."""
        return self.init_state(params, dict(hyperparams))

    @functools.cached_property
    def update_fn(self) -> Callable:
        """The update function: built once per spec object, the same program for every equal spec."""
        return self.make_update()

    @property
    def update(self) -> RuleUpdate:
        return RuleUpdate(self)

    def build(self, hyperparams: Mapping[str, Any]) -> Rule:
        """The rule for these values, without validation (for traced values inside a program)."""
        hyperparams = dict(hyperparams)
        return Rule(_RuleInit(self, hyperparams), RuleUpdate(self))


@dataclasses.dataclass(frozen=True)
class RuleUpdate:
    """`rule.update`: a function equal (and hashing equal) for every rule of the same `RuleSpec`."""

    spec: RuleSpec

    def __call__(self, updates, state, params=None, **extra_args):
        return self.spec.update_fn(updates, state, params, **extra_args)


@dataclasses.dataclass(frozen=True, eq=False)
class _RuleInit:
    spec: RuleSpec
    hyperparams: dict

    def __call__(self, params: PyTree):
        return self.spec.init(params, self.hyperparams)


class Rule(optax.GradientTransformationExtraArgs):
    """An update rule: an `optax.GradientTransformationExtraArgs` that knows its own description.

    Every gdjax rule (`sgd(0.1)`, `get("optax.lamb", learning_rate=1e-3)`) is a `Rule`: use it as any
    Optax transformation (`init`, `update`, `optax.chain`), and `run`/`sweep` use its two halves:
    `rule.spec` (hashable: what is compiled) and `rule.hyperparams` (values: what is passed in). So
    `sgd(0.1).update == sgd(0.2).update`, and a new value never recompiles.
    """

    __slots__ = ()

    @property
    def spec(self) -> RuleSpec:
        """The static half: rule name and non-numeric options."""
        return self.update.spec

    @property
    def hyperparams(self) -> dict[str, Any]:
        """The numeric half: hyperparameter values by name, as given."""
        return dict(self.init.hyperparams)

    def replace(self, **values: Any) -> Rule:
        """The same rule with new hyperparameter values, validated as the factory would."""
        unknown = [k for k in values if k not in self.spec.numeric]
        if unknown:
            raise ValueError(
                f"rule {self.spec.name!r} has no numeric hyperparameter {unknown[0]!r}; its "
                f"hyperparameters are {list(self.spec.numeric)}" + _suggest(unknown[0], self.spec.numeric)
            )
        domain = dict(self.spec.domain)  # the factory's domains (a learning rate > 0 at least)
        for key, value in values.items():
            _check_value(key, value, domain.get(key) or ("> 0" if key == "learning_rate" else ""))
        return self.spec.build({**self.hyperparams, **values})


def is_rule(rule: Any) -> bool:
    """Whether `rule` is a gdjax `Rule` (a spec plus values) rather than an opaque transformation."""
    return isinstance(rule, Rule) and isinstance(rule.update, RuleUpdate)


def _transformation(
    rule: str,
    values: dict[str, Any],
    schedule: Schedule | str | None,
    init_state: Callable[[PyTree, Hyperparams], Any],
    *,
    domain: dict[str, str],
    **static: Any,
) -> Rule:
    """Assembles a hand-written rule: values go to `state.hyperparams` at init (in the params'
    floating dtype); `update` is built from the static options."""
    schedule = _as_schedule(schedule)
    values = {k: v for k, v in values.items() if v is not None}
    values.update(schedule.values)
    static = dict(sorted(static.items()))
    kind = schedule.kind

    key = (rule, kind, tuple(values), tuple(static.items()), tuple(domain.items()))
    try:
        spec = _SPECS.get(key)
    except TypeError:  # an unhashable static option: no sharing
        key, spec = None, None
    if spec is None:

        def init(params: PyTree, hyperparams: Hyperparams):
            dtype = _hyperparam_dtype(params)
            return init_state(params, {k: jnp.asarray(v, dtype) for k, v in hyperparams.items()})

        spec = RuleSpec(
            name=rule,
            static=(("schedule", kind), *static.items()),
            numeric=tuple(values),
            extra_args=False,
            init_state=init,
            make_update=lambda: _UPDATE_BUILDERS[rule](_SCHEDULE_KINDS[kind].step_size, **static),
            domain=tuple({**domain, **_SCHEDULE_KINDS[kind].constraints}.items()),
        )
        if key is not None and len(_SPECS) < _SPECS_MAX:
            _SPECS[key] = spec
    return spec.build(values)


# One `RuleSpec` per (rule, schedule, value names, static options): a factory called again (a new
# learning rate) reuses it, with its built `update_fn`. Its `init_state` depends only on the key:
# the factories' state builders read the rule name and static options, never a value.
_SPECS: dict[tuple, RuleSpec] = {}
_SPECS_MAX = 1024


def _count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def _zeros(params: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, params)


def _full(params: PyTree, value: jax.Array) -> PyTree:
    return jax.tree.map(lambda p: jnp.full_like(p, value), params)


# --------------------------------------------------------------------------------------------------
# Rules.


class SgdState(NamedTuple):
    """State of `sgd`."""

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams


def sgd(learning_rate: Any, *, schedule: Schedule | str | None = "constant") -> optax.GradientTransformation:
    r"""Plain gradient descent.

    Steps against the gradient, scaled by the (possibly scheduled) learning rate. Same numerics as
    `optax.sgd(learning_rate)`.

    .. math::
      u_t = -\text{learning\_rate}_t \, g_t, \qquad x_{t+1} = x_t + u_t

    Args:
      learning_rate: base step size, finite and `> 0`.
      schedule: a `Schedule` or its name (see `schedule_names()`); default constant.

    Returns:
      An `optax.GradientTransformation` with state `SgdState`.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> rule = sgd(0.1)
      >>> params = jnp.array([1.0, 2.0])
      >>> updates, state = rule.update(2 * params, rule.init(params))
      >>> print(optax.apply_updates(params, updates))
      [0.8 1.6]

    References:
      Cauchy, *Méthode générale pour la résolution des systèmes d'équations simultanées*, 1847.
    """
    _check_value("learning_rate", learning_rate, "> 0")
    return _transformation(
        "sgd",
        {"learning_rate": learning_rate},
        schedule,
        lambda params, hp: SgdState(count=_count(), hyperparams=hp),
        domain={"learning_rate": "> 0"},
    )


@_builds("sgd")
def _sgd_update(step_size):
    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args  # extra args (value, grad, value_fn) are for rules that need them
        lr = _step_size(step_size, state)
        return _scale(lr, updates), state._replace(count=optax.safe_increment(state.count))

    return update_fn


class MomentumState(NamedTuple):
    """State of `momentum`.

    `trace` is Optax's trace `t` by default and the velocity `v` when `velocity_form=True`.
    """

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams
    trace: PyTree


def momentum(
    learning_rate: Any,
    momentum: Any = 0.9,
    *,
    velocity_form: bool = False,
    schedule: Schedule | str | None = "constant",
) -> optax.GradientTransformation:
    r"""Heavy-ball (Polyak) momentum.

    Keeps a running direction that remembers past gradients with weight `momentum`, so steps build
    up along consistent directions and oscillations across a valley cancel. By default the trace
    form of `optax.sgd(learning_rate, momentum=momentum)`, with the same numerics:

    .. math::
      t_t = g_t + \text{momentum} \, t_{t-1}, \qquad u_t = -\text{learning\_rate}_t \, t_t

    With `velocity_form=True`, the textbook heavy ball, which folds each step's learning rate into
    the velocity:

    .. math::
      v_t = \text{momentum} \, v_{t-1} - \text{learning\_rate}_t \, g_t, \qquad u_t = v_t

    The two give the same trajectory for a constant learning rate (`v = -learning_rate * t`) and
    differ under a schedule.

    Args:
      learning_rate: base step size, finite and `> 0`.
      momentum: weight of the past direction, in `[0, 1)`.
      velocity_form: use the velocity form above instead of Optax's trace form.
      schedule: a `Schedule` or its name; default constant.

    Returns:
      An `optax.GradientTransformation` with state `MomentumState`.

    Example:
      >>> import jax.numpy as jnp
      >>> rule = momentum(0.1, momentum=0.9)
      >>> state = rule.init(jnp.zeros(2))
      >>> updates, state = rule.update(jnp.ones(2), state)

    References:
      Polyak, *Some methods of speeding up the convergence of iteration methods*, 1964.
    """
    return _heavy_ball("momentum", MomentumState, learning_rate, momentum, velocity_form, schedule)


def _heavy_ball(rule: str, state_type, learning_rate, momentum, velocity_form, schedule) -> Rule:
    """`momentum` and `nesterov`: the same values, checks and state; their updates differ."""
    values = {"learning_rate": learning_rate, "momentum": momentum}
    domain = {"learning_rate": "> 0", "momentum": "in [0, 1)"}
    _check_values(values, domain)
    return _transformation(
        rule,
        values,
        schedule,
        lambda params, hp: state_type(count=_count(), hyperparams=hp, trace=_zeros(params)),
        velocity_form=bool(velocity_form),
        domain=domain,
    )


def _heavy_ball_update(step_size, velocity_form: bool, look_ahead: bool, state_type):
    """The update of `momentum` (`look_ahead=False`) and `nesterov` (`True`), in either form."""

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args  # extra args (value, grad, value_fn) are for rules that need them
        lr = _step_size(step_size, state)
        m = state.hyperparams["momentum"]
        if velocity_form:

            def direction(g, v):
                return _like(m, v) * v - _like(lr, g) * g

            trace = jax.tree.map(direction, updates, state.trace)
            new_updates = jax.tree.map(direction, updates, trace) if look_ahead else trace
        else:

            def direction(g, t):
                return g + _like(m, t) * t

            trace = jax.tree.map(direction, updates, state.trace)
            new_updates = _scale(lr, jax.tree.map(direction, updates, trace) if look_ahead else trace)
        count = optax.safe_increment(state.count)
        return new_updates, state_type(count=count, hyperparams=state.hyperparams, trace=trace)

    return update_fn


@_builds("momentum")
def _momentum_update(step_size, velocity_form):
    return _heavy_ball_update(step_size, velocity_form, look_ahead=False, state_type=MomentumState)


class NesterovState(NamedTuple):
    """State of `nesterov`: `trace` as in `MomentumState`."""

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams
    trace: PyTree


def nesterov(
    learning_rate: Any,
    momentum: Any = 0.9,
    *,
    velocity_form: bool = False,
    schedule: Schedule | str | None = "constant",
) -> optax.GradientTransformation:
    r"""Nesterov momentum, in the form that needs only the gradient at the current parameters.

    Nesterov's method takes the gradient at the look-ahead point `x + momentum * v`; rewritten in
    shifted variables (Bengio et al. 2013, Sutskever et al. 2013) it becomes a momentum step plus an
    extra `momentum` times the new direction. Default: the trace form of
    `optax.sgd(learning_rate, momentum=momentum, nesterov=True)`, with the same numerics:

    .. math::
      t_t = g_t + \text{momentum} \, t_{t-1}, \qquad
      u_t = -\text{learning\_rate}_t \, (g_t + \text{momentum} \, t_t)

    With `velocity_form=True`:

    .. math::
      v_t = \text{momentum} \, v_{t-1} - \text{learning\_rate}_t \, g_t, \qquad
      u_t = \text{momentum} \, v_t - \text{learning\_rate}_t \, g_t

    The two agree for a constant learning rate and differ under a schedule.

    Args:
      learning_rate, momentum, schedule: as for `momentum`.
      velocity_form: use the velocity form above instead of Optax's trace form.

    Returns:
      An `optax.GradientTransformation` with state `NesterovState`.

    Example:
      >>> import jax.numpy as jnp
      >>> rule = nesterov(0.1, momentum=0.9)
      >>> updates, state = rule.update(jnp.ones(2), rule.init(jnp.zeros(2)))

    References:
      Nesterov, *A method of solving a convex programming problem with convergence rate
      O(1/k^2)*, 1983; Sutskever et al., *On the importance of initialization and momentum in deep
      learning*, 2013.
    """
    return _heavy_ball("nesterov", NesterovState, learning_rate, momentum, velocity_form, schedule)


@_builds("nesterov")
def _nesterov_update(step_size, velocity_form):
    return _heavy_ball_update(step_size, velocity_form, look_ahead=True, state_type=NesterovState)


class AdagradState(NamedTuple):
    """State of `adagrad`."""

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams
    sum_of_squares: PyTree


def adagrad(
    learning_rate: Any,
    initial_accumulator_value: Any = 0.1,
    eps: Any = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    schedule: Schedule | str | None = "constant",
) -> optax.GradientTransformation:
    r"""AdaGrad: per-coordinate steps shrinking with the sum of squared past gradients.

    Coordinates that have seen large gradients take small steps, rarely-updated ones keep large
    steps. Same numerics as `optax.adagrad(learning_rate, initial_accumulator_value, eps)`:

    .. math::
      s_t = s_{t-1} + g_t^2, \quad s_0 = \text{initial\_accumulator\_value}, \qquad
      u_t = -\text{learning\_rate}_t \, \frac{g_t}{\sqrt{s_t + \text{eps}}}

    (coordinates with `s_t = 0` get a zero update). The paper's form, `g / (sqrt(s) + eps)` with
    `initial_accumulator_value=0`, is `eps_in_sqrt=False`.

    Args:
      learning_rate: base step size, finite and `> 0`.
      initial_accumulator_value: starting value of the sum of squares, `>= 0`.
      eps: small constant against division by zero, `>= 0`.
      eps_in_sqrt: add `eps` inside the square root (Optax) rather than outside (the paper).
      schedule: a `Schedule` or its name; default constant.

    Returns:
      An `optax.GradientTransformation` with state `AdagradState`.

    Example:
      >>> import jax.numpy as jnp
      >>> rule = adagrad(0.1)
      >>> updates, state = rule.update(jnp.ones(2), rule.init(jnp.zeros(2)))

    References:
      Duchi et al., *Adaptive subgradient methods for online learning and stochastic
      optimization*, 2011.
    """
    values = {
        "learning_rate": learning_rate,
        "initial_accumulator_value": initial_accumulator_value,
        "eps": eps,
    }
    domain = {"learning_rate": "> 0", "initial_accumulator_value": ">= 0", "eps": ">= 0"}
    _check_values(values, domain)
    return _transformation(
        "adagrad",
        values,
        schedule,
        lambda params, hp: AdagradState(
            count=_count(),
            hyperparams=hp,
            sum_of_squares=_full(params, hp["initial_accumulator_value"]),
        ),
        eps_in_sqrt=bool(eps_in_sqrt),
        domain=domain,
    )


@_builds("adagrad")
def _adagrad_update(step_size, eps_in_sqrt):
    def scaling(s, eps):
        if eps_in_sqrt:
            return jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0)
        return jnp.where(s > 0, 1 / (jnp.sqrt(s) + eps), 0.0)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args  # extra args (value, grad, value_fn) are for rules that need them
        lr = _step_size(step_size, state)
        eps = state.hyperparams["eps"]
        sum_of_squares = jax.tree.map(lambda g, s: _abs_sq(g) + s, updates, state.sum_of_squares)
        scaled = jax.tree.map(lambda s, g: scaling(s, _like(eps, s)) * g, sum_of_squares, updates)
        new_state = AdagradState(
            count=optax.safe_increment(state.count),
            hyperparams=state.hyperparams,
            sum_of_squares=sum_of_squares,
        )
        return _scale(lr, scaled), new_state

    return update_fn


class RmspropState(NamedTuple):
    """State of `rmsprop`. `mu` is None unless `centered`, `trace` is None without momentum."""

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams
    nu: PyTree  # EMA of squared gradients
    mu: PyTree | None  # EMA of gradients (centered)
    trace: PyTree | None  # momentum trace of the scaled updates


def rmsprop(
    learning_rate: Any,
    decay: Any = 0.9,
    eps: Any = 1e-8,
    initial_scale: Any = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Any = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    schedule: Schedule | str | None = "constant",
) -> optax.GradientTransformation:
    r"""RMSProp: divide the step by a running root-mean-square of recent gradients.

    Like AdaGrad, but the squared gradients are averaged with exponential forgetting, so the step
    does not shrink forever. Same arguments, defaults and numerics as `optax.rmsprop`:

    .. math::
      \nu_t = \text{decay} \, \nu_{t-1} + (1 - \text{decay}) \, g_t^2,
        \quad \nu_0 = \text{initial\_scale} \\
      \mu_t = \text{decay} \, \mu_{t-1} + (1 - \text{decay}) \, g_t
        \quad (\text{centered; otherwise } \mu_t = 0) \\
      s_t = -\text{learning\_rate}_t \, \frac{g_t}{\sqrt{\hat\nu_t - \hat\mu_t^2 + \text{eps}}}
        \quad \left(\text{or } \frac{g_t}{\sqrt{\hat\nu_t - \hat\mu_t^2} + \text{eps}}
        \text{ if not eps\_in\_sqrt}\right)

    where the hats divide by `1 - decay**(t+1)` when `bias_correction` and are the identity
    otherwise. Without `momentum`, `u_t = s_t`; with it, a trace of the scaled steps
    `m_t = s_t + \text{momentum} \, m_{t-1}` and `u_t = m_t` (or `s_t + momentum * m_t` with
    `nesterov`).

    Note Optax's defaults: `eps` inside the square root and `initial_scale=0` (Hinton's lecture
    notes); Keras/PyTorch put `eps` outside (`eps_in_sqrt=False`).

    Args:
      learning_rate: base step size, finite and `> 0`.
      decay: forgetting factor of the averages, in `[0, 1]`.
      eps: small constant against division by zero, `>= 0`.
      initial_scale: starting value of `nu`, `>= 0`.
      eps_in_sqrt: add `eps` inside the square root (Optax default) or outside.
      centered: subtract the squared mean gradient (Graves 2013).
      momentum: optional momentum on the scaled steps, in `[0, 1)`; None for none.
      nesterov: Nesterov form of that momentum.
      bias_correction: debias `nu` (and `mu`) as Adam does.
      schedule: a `Schedule` or its name; default constant.

    Returns:
      An `optax.GradientTransformation` with state `RmspropState`.

    Example:
      >>> import jax.numpy as jnp
      >>> rule = rmsprop(0.01, decay=0.9)
      >>> updates, state = rule.update(jnp.ones(2), rule.init(jnp.zeros(2)))

    References:
      Tieleman and Hinton, *Lecture 6.5 - RMSProp*, COURSERA: Neural Networks for Machine Learning,
      2012; Graves, *Generating sequences with recurrent neural networks*, 2013.
    """
    values = {
        "learning_rate": learning_rate,
        "decay": decay,
        "eps": eps,
        "initial_scale": initial_scale,
        "momentum": momentum,
    }
    domain = {
        "learning_rate": "> 0",
        "decay": "in [0, 1]",
        "eps": ">= 0",
        "initial_scale": ">= 0",
        "momentum": "in [0, 1)",
    }
    _check_values(values, domain, optional=("momentum",))
    use_momentum = momentum is not None
    centered = bool(centered)

    def init_state(params, hp):
        return RmspropState(
            count=_count(),
            hyperparams=hp,
            nu=_full(params, hp["initial_scale"]),
            mu=_zeros(params) if centered else None,
            trace=_zeros(params) if use_momentum else None,
        )

    return _transformation(
        "rmsprop",
        values,
        schedule,
        init_state,
        eps_in_sqrt=bool(eps_in_sqrt),
        centered=centered,
        use_momentum=use_momentum,
        nesterov=bool(nesterov),
        bias_correction=bool(bias_correction),
        domain=domain,
    )


@_builds("rmsprop")
def _rmsprop_update(step_size, eps_in_sqrt, centered, use_momentum, nesterov, bias_correction):
    def scaling(mean_square, eps):
        if eps_in_sqrt:
            return jax.lax.rsqrt(mean_square + eps)
        return 1 / (_sqrt(mean_square) + eps)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args  # extra args (value, grad, value_fn) are for rules that need them
        hp = state.hyperparams
        lr = _step_size(step_size, state)
        decay, eps = hp["decay"], hp["eps"]
        count = optax.safe_increment(state.count)
        # Same operation order as optax.tree.update_moment / update_moment_per_elem_norm.
        nu = jax.tree.map(
            lambda g, n: (1 - _like(decay, n)) * _square(g) + _like(decay, n) * n, updates, state.nu
        )
        nu_hat = _bias_correction(nu, decay, count) if bias_correction else nu
        if centered:
            mu = jax.tree.map(lambda g, m: (1 - _like(decay, m)) * g + _like(decay, m) * m, updates, state.mu)
            mu_hat = _bias_correction(mu, decay, count) if bias_correction else mu
            mean_square = jax.tree.map(lambda m, n: n - _abs_sq(m), mu_hat, nu_hat)
        else:
            mu = None
            mean_square = nu_hat
        scaled = jax.tree.map(lambda ms, g: scaling(ms, _like(eps, ms)) * g, mean_square, updates)
        scaled = _scale(lr, scaled)
        trace = None
        if use_momentum:
            m = hp["momentum"]
            trace = jax.tree.map(lambda s, t: s + _like(m, t) * t, scaled, state.trace)
            if nesterov:
                scaled = jax.tree.map(lambda s, t: s + _like(m, t) * t, scaled, trace)
            else:
                scaled = trace
        new_state = RmspropState(count=count, hyperparams=hp, nu=nu, mu=mu, trace=trace)
        return scaled, new_state

    return update_fn


class AdamState(NamedTuple):
    """State of `adam`."""

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams
    mu: PyTree  # EMA of gradients
    nu: PyTree  # EMA of squared gradients


def adam(
    learning_rate: Any,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    eps_root: Any = 0.0,
    *,
    nesterov: bool = False,
    schedule: Schedule | str | None = "constant",
) -> optax.GradientTransformation:
    r"""Adam: momentum on the gradient, scaled per coordinate by a running RMS, both debiased.

    Same arguments, defaults and numerics as `optax.adam` (without `mu_dtype`):

    .. math::
      m_t = b_1 m_{t-1} + (1 - b_1) g_t, \qquad v_t = b_2 v_{t-1} + (1 - b_2) g_t^2 \\
      \hat m_t = m_t / (1 - b_1^{t}), \qquad \hat v_t = v_t / (1 - b_2^{t}) \\
      u_t = -\text{learning\_rate}_t \, \hat m_t / (\sqrt{\hat v_t + \text{eps\_root}} + \text{eps})

    (here `t` counts from 1). With `nesterov=True` (NAdam),
    `\hat m_t = b_1 m_t / (1 - b_1^{t+1}) + (1 - b_1) g_t / (1 - b_1^t)`.

    Args:
      learning_rate: base step size, finite and `> 0`.
      b1: decay of the first moment, in `[0, 1)`.
      b2: decay of the second moment, in `[0, 1)`.
      eps: constant added outside the square root (as in the paper), `>= 0`.
      eps_root: constant added inside the square root, `>= 0`.
      nesterov: use Nesterov momentum (NAdam, Dozat 2016).
      schedule: a `Schedule` or its name; default constant.

    Returns:
      An `optax.GradientTransformation` with state `AdamState`.

    Example:
      >>> import jax.numpy as jnp
      >>> rule = adam(1e-2)
      >>> updates, state = rule.update(jnp.ones(2), rule.init(jnp.zeros(2)))

    References:
      Kingma and Ba, *Adam: A method for stochastic optimization*, 2014; Dozat, *Incorporating
      Nesterov momentum into Adam*, 2016.
    """
    values = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}
    domain = {
        "learning_rate": "> 0",
        "b1": "in [0, 1)",
        "b2": "in [0, 1)",
        "eps": ">= 0",
        "eps_root": ">= 0",
    }
    _check_values(values, domain)
    return _transformation(
        "adam",
        values,
        schedule,
        lambda params, hp: AdamState(count=_count(), hyperparams=hp, mu=_zeros(params), nu=_zeros(params)),
        nesterov=bool(nesterov),
        domain=domain,
    )


@_builds("adam")
def _adam_update(step_size, nesterov):
    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args  # extra args (value, grad, value_fn) are for rules that need them
        hp = state.hyperparams
        lr = _step_size(step_size, state)
        b1, b2, eps, eps_root = hp["b1"], hp["b2"], hp["eps"], hp["eps_root"]
        # Same operation order as optax.scale_by_adam.
        mu = jax.tree.map(lambda g, m: (1 - _like(b1, m)) * g + _like(b1, m) * m, updates, state.mu)
        nu = jax.tree.map(lambda g, n: (1 - _like(b2, n)) * _square(g) + _like(b2, n) * n, updates, state.nu)
        count = optax.safe_increment(state.count)
        if nesterov:
            mu_hat = jax.tree.map(
                lambda m, g: _like(b1, m) * m + (1 - _like(b1, g)) * g,
                _bias_correction(mu, b1, optax.safe_increment(count)),
                _bias_correction(updates, b1, count),
            )
        else:
            mu_hat = _bias_correction(mu, b1, count)
        nu_hat = _bias_correction(nu, b2, count)
        scaled = jax.tree.map(
            lambda m, v: m / (_sqrt(v + _like(eps_root, v)) + _like(eps, v)), mu_hat, nu_hat
        )
        new_state = AdamState(count=count, hyperparams=hp, mu=mu, nu=nu)
        return _scale(lr, scaled), new_state

    return update_fn


# --------------------------------------------------------------------------------------------------
# Hypergradient descent (Baydin et al. 2018): the learning rate itself descends its own gradient.


class SgdHdState(NamedTuple):
    """State of `sgd_hd`."""

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams
    learning_rate: jax.Array  # alpha_t, the adapted learning rate (starts at hyperparams' value)
    direction: PyTree  # d u_{t-1} / d alpha: -g_{t-1} (zeros before the first step)


class AdamHdState(NamedTuple):
    """State of `adam_hd`."""

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams
    learning_rate: jax.Array  # alpha_t
    direction: PyTree  # d u_{t-1} / d alpha: -m_hat / (sqrt(v_hat) + eps)
    mu: PyTree  # EMA of gradients
    nu: PyTree  # EMA of squared gradients


def _hd_values(values: dict, extra: dict) -> dict[str, str]:
    domain = {"learning_rate": "> 0", "hypergradient_lr": ">= 0", **extra}
    _check_values(values, domain)
    return domain


def _check_constant(rule: str, schedule) -> None:
    if _as_schedule_kind(schedule)[0] != "constant":
        raise ValueError(f"{rule} adapts its own learning rate; it takes no schedule (got {schedule!r})")


def _tree_dot(a: PyTree, b: PyTree, dtype) -> jax.Array:
    """`sum_i Re(conj(a_i) b_i)` over every leaf, in the hyperparameter dtype."""
    return sum(
        jnp.sum((jnp.conj(x) * y).real).astype(dtype)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def sgd_hd(
    learning_rate: Any, hypergradient_lr: Any = 1e-3, *, schedule: Schedule | str | None = "constant"
) -> optax.GradientTransformation:
    r"""SGD-HD: gradient descent whose learning rate follows its own hypergradient.

    The derivative of this step's loss with respect to the previous step's learning rate is
    `-g_t . g_{t-1}`; the learning rate takes a gradient step on it before the parameters move
    (Algorithm SGD-HD of Baydin et al.):

    .. math::
      h_t = g_t \cdot \nabla_\alpha u_{t-1} = -g_t \cdot g_{t-1}, \qquad
      \alpha_t = \alpha_{t-1} - \text{hypergradient\_lr} \, h_t, \qquad u_t = -\alpha_t g_t

    with `g_0 = 0` (the first step is plain SGD at `alpha_0 = learning_rate`). The adapted rate is
    `state.learning_rate`; the initial value and `hypergradient_lr` are state leaves, so new values
    never recompile.

    Args:
      learning_rate: the initial learning rate `alpha_0`, finite and `> 0`.
      hypergradient_lr: `beta`, the learning rate of the learning rate, `>= 0` (0: plain SGD).
      schedule: must be constant (the rule adapts its own rate).

    Returns:
      An `optax.GradientTransformation` with state `SgdHdState`.

    Example:
      >>> import jax.numpy as jnp
      >>> rule = sgd_hd(0.1, hypergradient_lr=0.01)
      >>> updates, state = rule.update(jnp.ones(2), rule.init(jnp.zeros(2)))

    References:
      Baydin, Cornish, Martinez Rubio, Schmidt and Wood, *Online Learning Rate Adaptation with
      Hypergradient Descent*, ICLR 2018.
    """
    _check_constant("sgd_hd", schedule)
    values = {"learning_rate": learning_rate, "hypergradient_lr": hypergradient_lr}
    domain = _hd_values(values, {})
    return _transformation(
        "sgd_hd",
        values,
        schedule,
        lambda params, hp: SgdHdState(
            count=_count(), hyperparams=hp, learning_rate=hp["learning_rate"], direction=_zeros(params)
        ),
        domain=domain,
    )


@_builds("sgd_hd")
def _sgd_hd_update(step_size):
    del step_size  # constant only: the rule adapts its own rate

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        hp = state.hyperparams
        h = _tree_dot(updates, state.direction, state.learning_rate.dtype)
        lr = state.learning_rate - hp["hypergradient_lr"] * h
        direction = jax.tree.map(jnp.negative, updates)
        new_state = SgdHdState(
            count=optax.safe_increment(state.count), hyperparams=hp, learning_rate=lr, direction=direction
        )
        return _scale(lr, updates), new_state

    return update_fn


def adam_hd(
    learning_rate: Any,
    hypergradient_lr: Any = 1e-7,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    *,
    schedule: Schedule | str | None = "constant",
) -> optax.GradientTransformation:
    r"""Adam-HD: Adam whose learning rate follows its own hypergradient (Baydin et al., Algorithm 3).

    .. math::
      h_t = g_t \cdot \nabla_\alpha u_{t-1}, \qquad
      \alpha_t = \alpha_{t-1} - \text{hypergradient\_lr} \, h_t \\
      m_t = b_1 m_{t-1} + (1 - b_1) g_t, \qquad v_t = b_2 v_{t-1} + (1 - b_2) g_t^2 \\
      \hat m_t = m_t / (1 - b_1^t), \qquad \hat v_t = v_t / (1 - b_2^t) \\
      \nabla_\alpha u_t = -\hat m_t / (\sqrt{\hat v_t} + \text{eps}), \qquad
      u_t = \alpha_t \nabla_\alpha u_t

    with `\nabla_\alpha u_0 = 0`. The paper's default `hypergradient_lr` for Adam is `1e-7`.

    Args:
      learning_rate: the initial learning rate `alpha_0`, finite and `> 0`.
      hypergradient_lr: `beta`, `>= 0` (0: plain Adam).
      b1: decay of the first moment, in `[0, 1)`.
      b2: decay of the second moment, in `[0, 1)`.
      eps: constant added outside the square root, `>= 0`.
      schedule: must be constant.

    Returns:
      An `optax.GradientTransformation` with state `AdamHdState`.

    Example:
      >>> import jax.numpy as jnp
      >>> rule = adam_hd(1e-2, hypergradient_lr=1e-4)
      >>> updates, state = rule.update(jnp.ones(2), rule.init(jnp.zeros(2)))

    References:
      Baydin et al., *Online Learning Rate Adaptation with Hypergradient Descent*, ICLR 2018.
    """
    _check_constant("adam_hd", schedule)
    values = {
        "learning_rate": learning_rate,
        "hypergradient_lr": hypergradient_lr,
        "b1": b1,
        "b2": b2,
        "eps": eps,
    }
    domain = _hd_values(values, {"b1": "in [0, 1)", "b2": "in [0, 1)", "eps": ">= 0"})
    return _transformation(
        "adam_hd",
        values,
        schedule,
        lambda params, hp: AdamHdState(
            count=_count(),
            hyperparams=hp,
            learning_rate=hp["learning_rate"],
            direction=_zeros(params),
            mu=_zeros(params),
            nu=_zeros(params),
        ),
        domain=domain,
    )


@_builds("adam_hd")
def _adam_hd_update(step_size):
    del step_size

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        hp = state.hyperparams
        b1, b2, eps = hp["b1"], hp["b2"], hp["eps"]
        h = _tree_dot(updates, state.direction, state.learning_rate.dtype)
        lr = state.learning_rate - hp["hypergradient_lr"] * h
        mu = jax.tree.map(lambda g, m: (1 - _like(b1, m)) * g + _like(b1, m) * m, updates, state.mu)
        nu = jax.tree.map(lambda g, n: (1 - _like(b2, n)) * _square(g) + _like(b2, n) * n, updates, state.nu)
        count = optax.safe_increment(state.count)
        mu_hat = _bias_correction(mu, b1, count)
        nu_hat = _bias_correction(nu, b2, count)
        direction = jax.tree.map(lambda m, v: -m / (_sqrt(v) + _like(eps, v)), mu_hat, nu_hat)
        new_state = AdamHdState(
            count=count, hyperparams=hp, learning_rate=lr, direction=direction, mu=mu, nu=nu
        )
        return jax.tree.map(lambda d: _like(lr, d) * d, direction), new_state

    return update_fn


# --------------------------------------------------------------------------------------------------
# Evaluation at an average of the iterates.


class AverageState(NamedTuple):
    """State of `average`."""

    count: jax.Array  # int32 updates applied
    hyperparams: Hyperparams  # average_decay (EMA) or average_start (Polyak)
    inner: Any  # the averaged rule's state
    average: PyTree  # the average of the iterates so far


def average(rule: Rule, *, decay: Any = None, start: Any = None) -> Rule:
    r"""`rule`, evaluated at an average of its iterates: the run measures loss and metrics there.

    The rule's own steps are unchanged; the state keeps an average `a_t` of the iterates `x_t`, and
    `run` evaluates at it (`trace.params` is the average; `trace.evaluated_at ==
    "average_eval_params"`). Exactly one of:

    .. math::
      \text{EMA:}\quad a_t = \text{decay} \, a_{t-1} + (1 - \text{decay}) \, x_t, \qquad a_0 = x_0 \\
      \text{Polyak:}\quad a_t = \frac{1}{t - \text{start} + 1} \sum_{s=\text{start}}^{t} x_s
      \ (t \ge \text{start}), \qquad a_t = x_t \ (t < \text{start})

    `decay` (or `start`) is a state leaf like the rule's own values (`average_decay`,
    `average_start`): a new value never recompiles.

    Args:
      rule: a gdjax `Rule` (hand-written or from `get`, Optax's included).
      decay: EMA decay, in `(0, 1)`.
      start: first step of a Polyak (uniform) average, `>= 0`.

    Returns:
      A `Rule` with state `AverageState`.

    Example:
      >>> rule = average(sgd(0.1), decay=0.9)
      >>> sorted(rule.hyperparams)
      ['average_decay', 'learning_rate']

    References:
      Polyak and Juditsky, *Acceleration of stochastic approximation by averaging*, 1992.
    """
    if not is_rule(rule):
        raise ValueError(
            f"average takes a gdjax rule (gdjax.rules.sgd(0.1), rules.get('optax.adam', ...)), got "
            f"{type(rule).__name__}"
        )
    if (decay is None) == (start is None):
        raise ValueError("average needs exactly one of decay= (an EMA) or start= (a Polyak average)")
    inner = rule.spec
    if inner.eval_params is not None:
        raise ValueError(
            f"{inner.name} is already evaluated away from its iterate; it cannot be averaged too"
        )
    kind, own = (
        ("ema", {"average_decay": decay}) if decay is not None else ("polyak", {"average_start": start})
    )
    own_domain = {"average_decay": "in (0, 1)", "average_start": ">= 0"}
    _check_values(own, own_domain)
    inner_names = inner.numeric

    def init(params, hp):
        dtype = _hyperparam_dtype(params)
        return AverageState(
            count=_count(),
            hyperparams={k: jnp.asarray(hp[k], dtype) for k in own},
            inner=inner.init(params, {k: hp[k] for k in inner_names}),
            average=jax.tree.map(jnp.asarray, params),
        )

    def make_update():
        inner_update = inner.update_fn

        def update_fn(updates, state, params=None, **extra_args):
            if params is None:
                raise ValueError("average needs params: update(updates, state, params)")
            updates, inner_state = inner_update(updates, state.inner, params, **extra_args)
            new = optax.apply_updates(params, updates)
            count = optax.safe_increment(state.count)
            hp = state.hyperparams
            if kind == "ema":
                d = hp["average_decay"]
                avg = jax.tree.map(lambda a, x: _like(d, a) * a + (1 - _like(d, a)) * x, state.average, new)
            else:
                n = count.astype(hp["average_start"].dtype) - hp["average_start"]  # x_t is term n + 1
                avg = jax.tree.map(
                    lambda a, x: jnp.where(n >= 1, a + (x - a) / (jnp.maximum(n, 1) + 1).astype(a.dtype), x),
                    state.average,
                    new,
                )
            return updates, AverageState(count=count, hyperparams=hp, inner=inner_state, average=avg)

        return update_fn

    spec = RuleSpec(
        name=f"average({inner.name})",
        static=(("rule", inner), ("kind", kind)),
        numeric=(*inner_names, *own),
        extra_args=inner.extra_args,
        init_state=init,
        make_update=make_update,
        eval_params=_average_eval_params,
        domain=(*inner.domain, *((k, own_domain[k]) for k in own)),
    )
    return spec.build({**rule.hyperparams, **own})


def _average_eval_params(state, params):
    del params
    return state.average


# --------------------------------------------------------------------------------------------------
# Plain Optax counterparts: the oracle each hand-written rule promises to reproduce.


def _optax_sgd(hp, static):
    return optax.sgd(hp["learning_rate"])


def _optax_momentum(nesterov_):
    def build(hp, static):
        if static.get("velocity_form"):
            return None  # the textbook velocity form has no Optax counterpart under a schedule
        return optax.sgd(hp["learning_rate"], momentum=hp.get("momentum", 0.9), nesterov=nesterov_)

    return build


def _optax_adagrad(hp, static):
    if not static.get("eps_in_sqrt", True):
        return None  # the paper's form: Optax puts eps inside the square root only
    keys = ("learning_rate", "initial_accumulator_value", "eps")
    return optax.adagrad(**{k: hp[k] for k in keys if k in hp})


def _optax_rmsprop(hp, static):
    return optax.rmsprop(**hp, **static)


def _optax_adam(hp, static):
    return optax.adam(**hp, **static)


_OPTAX_EQUIVALENTS: dict[str, Callable[[dict, dict], optax.GradientTransformation | None]] = {
    "sgd": _optax_sgd,
    "momentum": _optax_momentum(False),
    "nesterov": _optax_momentum(True),
    "adagrad": _optax_adagrad,
    "rmsprop": _optax_rmsprop,
    "adam": _optax_adam,
}


def optax_equivalent(name: str, **hyperparameters: Any) -> optax.GradientTransformation | None:
    """The plain Optax transformation with the same numerics as `get(name, **hyperparameters)`.

    For a hand-written rule with a constant schedule, the Optax optimizer it reproduces (with the
    values baked in, as Optax does); for `'optax.<name>'`, `optax.<name>(**hyperparameters)` itself.
    None when there is none: a schedule other than `constant`, or an option Optax lacks
    (`velocity_form`, `adagrad(eps_in_sqrt=False)`).

    Args:
      name: as for `get`.
      **hyperparameters: as for `get`.

    Returns:
      An `optax.GradientTransformation`, or None.
    """
    fn, sig = _signature(name)
    name = _ALIASES.get(name, name)
    if name not in _RULES:
        return fn(**hyperparameters)
    kwargs = dict(hyperparameters)
    schedule = kwargs.pop("schedule", "constant")
    if _as_schedule_kind(schedule)[0] != "constant" or name not in _OPTAX_EQUIVALENTS:
        return None  # sgd_hd / adam_hd: Optax has no hypergradient descent
    static_names = {p.name for p in sig.parameters.values() if isinstance(p.default, bool)}
    static = {k: v for k, v in kwargs.items() if k in static_names}
    hp = {k: v for k, v in kwargs.items() if k not in static_names}
    return _OPTAX_EQUIVALENTS[name](hp, static)


# --------------------------------------------------------------------------------------------------
# Registry.

_RULES: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd,
    "gd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
    "sgd_hd": sgd_hd,
    "adam_hd": adam_hd,
}
_ALIASES = {"gd": "sgd"}
_OPTAX_PREFIX = "optax."
_CONTRIB_PREFIX = "optax.contrib."


def _suggest(word: str, candidates) -> str:
    close = spelling.closest(word, candidates)
    return f"; did you mean {close!r}?" if close else ""


def names() -> tuple[str, ...]:
    """Names of the hand-written rules (including the alias `gd` for `sgd`)."""
    return tuple(_RULES)


def _unwrap(fn: Any) -> Any:
    """The function under any `functools.partial` layers (`optax.nadam = partial(adam, nesterov=True)`)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _returns_transformation(fn: Any) -> bool:
    """Whether an Optax callable builds a gradient transformation.

    Read from the return annotation of the function (under any partials); an unannotated one
    (`optax.scale_by_factored_rms`) counts when its docstring's `Returns:` names a gradient
    transformation.
    """
    base = _unwrap(fn)
    if not inspect.isfunction(base):
        return False
    returns = inspect.signature(base).return_annotation
    if returns is inspect.Signature.empty:
        _, _, after = (inspect.getdoc(fn) or "").partition("Returns:")
        first = " ".join(after.strip().split("\n\n")[0].split()).lower()
        return "gradienttransformation" in first or "gradient transformation" in first
    if isinstance(returns, type):
        return issubclass(returns, optax.GradientTransformation)
    if isinstance(returns, str):  # postponed annotations
        return returns.rsplit(".", 1)[-1] in ("GradientTransformation", "GradientTransformationExtraArgs")
    return False


@functools.cache
def _optax_names() -> tuple[str, ...]:
    """Public Optax factories that build a gradient transformation, partials included.

    Combinators that take transformations as `*args` (`optax.chain`) are left out: they take
    transformations, not hyperparameters. `optax.contrib` is listed by `_contrib_names`.
    """
    return _factories(optax)


@functools.cache
def _contrib_names() -> tuple[str, ...]:
    """The factories of `optax.contrib` (named `'optax.contrib.<name>'`)."""
    return _factories(_contrib())


def _contrib():
    """`optax.contrib`, imported on first use (not with `gdjax.rules`)."""
    import importlib

    return importlib.import_module("optax.contrib")


def _factories(module) -> tuple[str, ...]:
    found = []
    for attr in dir(module):
        if attr.startswith("_"):
            continue
        with warnings.catch_warnings():  # listing must not trip deprecation warnings
            warnings.simplefilter("ignore")
            fn = getattr(module, attr, None)
        if inspect.isclass(fn) or not callable(fn):
            continue
        try:
            sig = inspect.signature(fn)  # a partial's signature: bound arguments removed or defaulted
            builds = _returns_transformation(fn)
        except (TypeError, ValueError):
            continue
        if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
            continue  # combinators such as optax.chain take transformations, not hyperparameters
        if builds:
            found.append(attr)
    return tuple(found)


def _unknown_rule(name: str) -> ValueError:
    if isinstance(name, str) and name.startswith(_CONTRIB_PREFIX):
        return ValueError(
            f"unknown Optax contrib optimizer {name!r}: optax.contrib has no gradient-transformation "
            f"factory {name[len(_CONTRIB_PREFIX) :]!r}"
            + _suggest(name, [_CONTRIB_PREFIX + n for n in _contrib_names()])
        )
    if isinstance(name, str) and name.startswith(_OPTAX_PREFIX):
        optax_name = name[len(_OPTAX_PREFIX) :]
        return ValueError(
            f"unknown Optax optimizer {name!r}: optax has no gradient-transformation factory "
            f"{optax_name!r}" + _suggest(name, [_OPTAX_PREFIX + n for n in _optax_names()])
        )
    candidates = list(names()) + [_OPTAX_PREFIX + n for n in _optax_names()]
    return ValueError(
        f"unknown rule {name!r}; hand-written rules are {', '.join(names())}, and any Optax "
        f"optimizer can be named 'optax.<name>' (e.g. 'optax.lamb')"
        + (_suggest(name, candidates) if isinstance(name, str) else "")
    )


def _is_numeric_parameter(param: inspect.Parameter) -> bool:
    """Whether a factory argument looks like a numeric hyperparameter (sweepable as an array).

    By name (no schedules, dtypes, masks, keys or line searches), by default (none, None or a
    number) and, when annotated, by annotation: it must admit a float. An `int` (`memory_size`,
    `min_dim_size_to_factor`, a seed) sets shapes or loop counts and stays static.
    """
    if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
        return False
    if param.name == "schedule" or "dtype" in param.name or "mask" in param.name:
        return False
    if param.name in ("key", "linesearch"):
        return False
    annotation = param.annotation
    if annotation not in (inspect.Parameter.empty, Any, "Any") and "float" not in str(annotation):
        return False
    default = param.default
    if default is inspect.Parameter.empty or default is None:
        return True
    return isinstance(default, int | float) and not isinstance(default, bool)


def _signature(name: str) -> tuple[Callable, inspect.Signature]:
    optax_name = name.removeprefix(_OPTAX_PREFIX) if isinstance(name, str) else None
    contrib_name = name.removeprefix(_CONTRIB_PREFIX) if isinstance(name, str) else None
    if name in _RULES:
        fn = _RULES[name]
    elif contrib_name != name and contrib_name in _contrib_names():
        fn = getattr(_contrib(), contrib_name)
    elif optax_name != name and optax_name in _optax_names():
        fn = getattr(optax, optax_name)
    else:
        raise _unknown_rule(name)
    return fn, _signature_of(fn)


@functools.lru_cache(maxsize=1024)
def _signature_of(fn: Callable) -> inspect.Signature:
    """`inspect.signature`, once per factory: a sweep validates every grid value through `get`."""
    return inspect.signature(fn)


def hyperparameters(name: str, schedule: Schedule | str | None = "constant") -> tuple[str, ...]:
    """Names of the numeric (sweepable) hyperparameters of a rule.

    Args:
      name: a hand-written rule (`names()`) or `'optax.<name>'`.
      schedule: for hand-written rules, the schedule whose hyperparameters are added.

    Returns:
      For a hand-written rule, the numeric arguments of its factory followed by the schedule's; for
      an Optax optimizer, the arguments of its signature that take numbers.
    """
    _, sig = _signature(name)
    numeric = tuple(p.name for p in sig.parameters.values() if _is_numeric_parameter(p))
    if name in _RULES:
        numeric += tuple(_as_schedule_kind(schedule)[1])
    return numeric


def _as_schedule_kind(schedule: Schedule | str | None) -> tuple[str, tuple[str, ...]]:
    """Kind of a schedule given in any accepted form, and the names of its hyperparameters."""
    if isinstance(schedule, str) and schedule in _SCHEDULE_KINDS:
        kind = schedule  # by name: values may still come as keywords, so do not build it yet
    else:
        kind = _as_schedule(schedule).kind
    return kind, tuple(n for n, _ in _SCHEDULE_KINDS[kind].defaults)


def describe(name: str) -> str:
    """One-line description of a rule, for `gdjax list`."""
    fn, _ = _signature(name)
    doc = inspect.getdoc(fn) or ""
    if isinstance(fn, functools.partial) and doc == inspect.getdoc(functools.partial):
        doc = inspect.getdoc(_unwrap(fn)) or ""  # a partial without its own docstring
    line = doc.strip().splitlines()[0].strip() if doc.strip() else name
    if name in _ALIASES:
        return f"alias of {_ALIASES[name]!r}: {line}"
    if name not in _RULES:
        return f"Optax: {line}"
    return line


def get(name: str, **hyperparameters: Any) -> optax.GradientTransformation:
    """Resolves a rule by name with its hyperparameters.

    Hand-written rules take their factory's arguments plus `schedule=` (a `Schedule` or a name) and
    that schedule's hyperparameters flat, e.g.
    `get("sgd", learning_rate=0.1, schedule="exponential_decay", decay_rate=0.99)`.

    `'optax.<name>'` builds `optax.inject_hyperparams(optax.<name>)(**hyperparameters)`, so numeric
    values live in `state.hyperparams` too; its `update` is cached per (name, numeric hyperparameter
    names, non-numeric values), so a new value does not recompile. Pass `params` to its `update`:
    `inject_hyperparams` takes the hyperparameter dtype from them.

    Args:
      name: one of `names()`, or `'optax.<name>'` for any Optax optimizer.
      **hyperparameters: values by name; see `hyperparameters(name)`.

    Returns:
      An `optax.GradientTransformation`.

    Raises:
      ValueError: unknown rule, unknown or missing hyperparameter, or an invalid value.
    """
    fn, sig = _signature(name)
    if name in _RULES:
        return _get_hand_written(name, fn, sig, dict(hyperparameters))
    return _get_optax(name, fn, sig, dict(hyperparameters))


def _get_hand_written(name, fn, sig, kwargs) -> optax.GradientTransformation:
    schedule = kwargs.pop("schedule", "constant")
    kind, schedule_names_ = _as_schedule_kind(schedule)
    own = [p for p in sig.parameters if p != "schedule"]
    for key in kwargs:
        if key not in own and key not in schedule_names_:
            valid = own + ["schedule", *schedule_names_]
            hint = ""
            owners = [k for k, s in _SCHEDULE_KINDS.items() if key in dict(s.defaults)]
            if owners:
                hint = f" ({key!r} belongs to schedule {' / '.join(owners)}; pass schedule=...)"
            raise ValueError(
                f"rule {name!r} has no hyperparameter {key!r}{hint}; valid: {valid}"
                + ("" if hint else _suggest(key, valid))
            )
    schedule_values = {k: kwargs.pop(k) for k in schedule_names_ if k in kwargs}
    if isinstance(schedule, Schedule):
        schedule_values = {**schedule.hyperparams, **schedule_values}
    resolved = _schedule(kind, **schedule_values)
    _require(name, sig, kwargs)
    return fn(**kwargs, schedule=resolved)


def _require(name, sig, kwargs) -> None:
    missing = [
        p.name
        for p in sig.parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in kwargs
    ]
    if missing:
        raise ValueError(f"rule {name!r} needs {', '.join(missing)}")


def _inject_kind(value: Any, static: bool) -> str:
    """How `optax.inject_hyperparams` classifies a value (mirrors its `wrapped_transform`)."""
    if static or isinstance(value, bool):
        return "static"
    if callable(value):  # including optax.schedules.StatefulSchedule
        return "schedule"
    if isinstance(value, int | float | jax.Array | np.ndarray):
        return "numeric"
    return "static"


def _strong(x: Any) -> Any:
    """`x` without a weak type (same dtype and value)."""
    if getattr(x, "weak_type", False):
        return jnp.asarray(x, dtype=x.dtype)
    return x


def _get_optax(name, fn, sig, kwargs) -> Rule:
    valid = list(sig.parameters)
    for key in kwargs:
        if key not in valid:
            raise ValueError(f"{name} has no hyperparameter {key!r}; valid: {valid}" + _suggest(key, valid))
    _require(name, sig, kwargs)
    # NumPy scalars would be neither numeric nor static to inject_hyperparams: make them arrays.
    kwargs = {k: np.asarray(v) if isinstance(v, np.generic) else v for k, v in kwargs.items()}
    # Non-numeric arguments (dtypes, masks, flags, sizes such as lbfgs' memory_size, a line search),
    # given or defaulted, are static: inject_hyperparams would otherwise take a callable mask or a
    # dtype such as jnp.bfloat16 for a schedule, or trace an integer that sets a shape.
    static_args = tuple(k for k, p in sig.parameters.items() if not _is_numeric_parameter(p))
    kinds = {k: _inject_kind(v, k in static_args) for k, v in kwargs.items()}
    for key, value in kwargs.items():
        if (
            kinds[key] == "static"
            and key not in static_args
            and not (value is None and sig.parameters[key].default is None)
        ):
            # inject_hyperparams would keep it as an option: `learning_rate=None` makes Optax's
            # scale_by_learning_rate the identity (gradient ascent), a string fails deep in Optax.
            raise ValueError(
                f"{name}: {key} must be a real number or a schedule (a function of the step), got {value!r}"
            )
        if kinds[key] == "numeric":
            # The hyperparameters every alias means the same by (a learning rate, betas, eps, weight
            # decay) have their domains; of the others only finiteness is known to be required.
            _check_value(key, value, _optax_domain(key, sig))
    bound = sig.bind(**kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    numeric = tuple(k for k, v in arguments.items() if _inject_kind(v, k in static_args) == "numeric")
    fixed = {k: v for k, v in arguments.items() if k not in numeric}
    build = optax.inject_hyperparams(fn, static_args=static_args)

    def init(params, hyperparams):
        # Some Optax states start with weakly typed scalars that an update makes strong (lbfgs' line
        # search info): start strong, so the state's avals are the same at every step.
        return jax.tree.map(_strong, build(**fixed, **hyperparams).init(params))

    # inject_hyperparams' update reads numeric values from `state.hyperparams` and closes over only
    # the schedules and static (non-numeric) values: any values build it.
    def make_update():
        update = build(**fixed, **{k: arguments[k] for k in numeric}).update
        adapt = _EXTRA_ARG_ADAPTERS.get(name)
        return update if adapt is None else adapt(update)

    spec = RuleSpec(
        name=name,
        static=tuple((k, static_option(v)) for k, v in sorted(fixed.items())),
        numeric=numeric,
        init_state=init,
        make_update=make_update,
        eval_params=_EVAL_PARAMS.get(name.removeprefix(_CONTRIB_PREFIX)),
        domain=tuple((k, _optax_domain(k, sig)) for k in numeric),
    )
    return spec.build({k: arguments[k] for k in numeric})


def _optax_domain(key: str, sig: inspect.Signature) -> str:
    """The domain of an Optax hyperparameter; none where the factory's own default lies outside it
    (the transformation `scale_by_sm3` defaults `b2` to 1.0)."""
    domain = _OPTAX_DOMAINS.get(key, "")
    default = sig.parameters[key].default if key in sig.parameters else None
    if domain and isinstance(default, int | float) and not _CONSTRAINTS[domain](default):
        return ""
    return domain


# Optax's hyperparameters that mean the same in every alias that has them, and their domains (the
# hand-written rules check the same): `optax.adam(b1=2.0)` is refused like `rules.adam(b1=2.0)`.
_OPTAX_DOMAINS = {
    "learning_rate": "> 0",
    "b1": "in [0, 1)",
    "b2": "in [0, 1)",
    "b3": "in [0, 1)",
    "momentum": "in [0, 1)",
    "eps": ">= 0",
    "eps_root": ">= 0",
    "weight_decay": ">= 0",
}


def _obj_fn_from_value_fn(update: Callable) -> Callable:
    """Sophia's Hutchinson estimator takes the loss as `obj_fn`; the run passes it as `value_fn`."""

    def update_fn(updates, state, params=None, *, value_fn=None, **extra_args):
        extra_args.pop("obj_fn", None)
        return update(updates, state, params, obj_fn=value_fn, **extra_args)

    return update_fn


def _without_extra_args(update: Callable) -> Callable:
    """SAM's update takes no extra arguments at all (in its default, transparent mode)."""

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        return update(updates, state, params)

    return update_fn


_EXTRA_ARG_ADAPTERS = {
    "optax.contrib.sophia": _obj_fn_from_value_fn,
    "optax.contrib.sam": _without_extra_args,
}


def _schedule_free_eval_params(state, params):
    """`optax.contrib.schedule_free_eval_params` through `inject_hyperparams`' state."""
    return _contrib().schedule_free_eval_params(state.inner_state, params)


# Rules evaluated away from their iterate: the run measures loss and metrics there (`Trace.evaluated_at`).
_EVAL_PARAMS = {
    "schedule_free": _schedule_free_eval_params,
    "schedule_free_sgd": _schedule_free_eval_params,
    "schedule_free_adamw": _schedule_free_eval_params,
}
