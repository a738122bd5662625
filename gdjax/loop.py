"""One optimisation run as one compiled `lax.scan`.

`run(cost, rule, params0, data, num_steps=...) -> Trace` takes any cost `cost(params, batch)` and any
`optax.GradientTransformation` (hand-written from `gdjax.rules` or Optax's own) and runs the whole
optimisation inside one jit-compiled program: sampling of stochastic / mini-batches from a PRNG key,
the update rule, stopping tolerances and divergence detection all happen inside the scan, so a run is
a pure function of arrays and `jax.vmap` turns it into a sweep (`gdjax.sweep`).

This module imports neither `gdjax.costs` nor `gdjax.rules`: both arrive as arguments.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import validation
from gdjax.types import PyTree, Status, Trace

_NO_STOP = -1  # stop_step of a run that used its whole budget


class RunOptions(NamedTuple):
    """The static (shape-deciding) settings of a run: changing one of these recompiles."""

    num_steps: int
    batch_size: int | None  # None: full batch
    num_examples: int | None
    record_every: int
    unroll: int
    feature_major: bool = False
    use_tol: bool = True
    use_grad_tol: bool = True
    use_patience: bool = True  # data is `(X.T, ...)`: examples along axis 1 of the first leaf


class Tolerances(NamedTuple):
    """Stopping and divergence thresholds, passed as arrays: changing a value never recompiles.

    A disabled criterion holds a value that can never trigger (`-1` for a norm, `inf` otherwise).
    """

    tol: jax.Array  # stop when ||params_t - params_{t-1}|| < tol
    grad_tol: jax.Array  # stop when ||grad f(params_t)|| < grad_tol
    patience: jax.Array  # stop after this many steps without improving the best loss by min_delta
    min_delta: jax.Array
    divergence_factor: jax.Array  # diverged once f(params_t) > f(params_0) + (factor - 1)|f(params_0)|


def make_tolerances(
    tol=None, grad_tol=None, patience=None, min_delta=0.0, divergence_factor=100.0
) -> Tolerances:
    """Validates stopping settings and packs them as host scalars (`None` disables a criterion)."""
    for name, value in (("tol", tol), ("grad_tol", grad_tol)):
        if value is not None:
            validation.check_finite_number(name, value, positive=True)
    if patience is not None:
        validation.check_positive_int("patience", patience)
    validation.check_finite_number("min_delta", min_delta, lower=0.0)
    if divergence_factor is not None:
        validation.check_finite_number("divergence_factor", divergence_factor)
        if not divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1, got {divergence_factor}")
    return Tolerances(
        tol=np.float64(-1.0 if tol is None else tol),
        grad_tol=np.float64(-1.0 if grad_tol is None else grad_tol),
        patience=np.int32(np.iinfo(np.int32).max if patience is None else patience),
        min_delta=np.float64(min_delta),
        divergence_factor=np.float64(np.inf if divergence_factor is None else divergence_factor),
    )


class _Carry(NamedTuple):
    params: PyTree
    rule_state: Any
    status: jax.Array  # int32 Status code; MAX_STEPS while running
    steps: jax.Array  # int32 updates applied
    best_loss: jax.Array
    since_best: jax.Array  # int32 steps since best_loss last improved
    params_history: PyTree  # (num_records, ...) buffers, written in place


def _tree_all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _tree_sq_norm(tree) -> jax.Array:
    return sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))


def _float_dtype(params) -> np.dtype:
    return jnp.result_type(*jax.tree.leaves(params))


def _scan_run(
    cost: Callable,
    update: Callable,
    opts: RunOptions,
    params0: PyTree,
    rule_state0: Any,
    data: PyTree,
    key: jax.Array | None,
    tols: Tolerances,
) -> Trace:
    """The compiled body of `run`: pure in its array arguments, vmappable over all of them."""
    dtype = _float_dtype(params0)
    tols = jax.tree.map(lambda t: jnp.asarray(t, jnp.int32 if t.dtype == np.int32 else dtype), tols)
    value_and_grad = jax.value_and_grad(cost)
    num_records = opts.num_steps // opts.record_every + 1
    example_axes = jax.tree.map(lambda _: 0, data)
    if opts.feature_major:
        example_axes = (1, *example_axes[1:])

    loss0 = cost(params0, data).astype(dtype)
    threshold = loss0 + (tols.divergence_factor - 1) * jnp.abs(loss0)

    def record(history, t, params):
        if history is None:  # full batch: recorded as scan outputs instead
            return None
        # Rows at t = 0, k, 2k, ...; other steps write out of bounds, which mode="drop" discards.
        row = jnp.where(t % opts.record_every == 0, t // opts.record_every, num_records)
        return jax.tree.map(lambda h, p: h.at[row].set(p, mode="drop"), history, params)

    def step(carry: _Carry, t, batch_idx):
        running = carry.status == Status.MAX_STEPS
        loss, grad = value_and_grad(carry.params, data)
        loss = loss.astype(dtype)
        gnorm = jnp.sqrt(_tree_sq_norm(grad)).astype(dtype)
        if batch_idx is not None:  # stochastic / mini-batch: the rule sees a sampled batch
            batch = jax.tree.map(lambda x, ax: jnp.take(x, batch_idx, axis=ax), data, example_axes)
            grad = jax.grad(cost)(carry.params, batch)

        updates, new_rule_state = update(grad, carry.rule_state, carry.params)
        new_params = optax.apply_updates(carry.params, updates)
        new_params = jax.tree.map(lambda p, q: p.astype(q.dtype), new_params, carry.params)
        false = jnp.zeros((), bool)
        if opts.use_tol:
            delta = jnp.sqrt(_tree_sq_norm(jax.tree.map(jnp.subtract, new_params, carry.params)))
            converged_after = delta < tols.tol
        else:
            converged_after = false
        if opts.use_patience:
            improved = loss < carry.best_loss - tols.min_delta
            since_best = jnp.where(improved, 0, carry.since_best + 1)
            converged_after = converged_after | (since_best >= tols.patience)
        nonfinite_here = ~(jnp.isfinite(loss) & jnp.isfinite(gnorm))
        diverged_here = loss > threshold
        grad_small = gnorm < tols.grad_tol if opts.use_grad_tol else false
        nonfinite_next = ~_tree_all_finite(new_params)
        stop_before = nonfinite_here | diverged_here | grad_small | nonfinite_next
        # In order of precedence, the first check that fires decides the status.
        checks = [
            (nonfinite_here, Status.NONFINITE),
            (diverged_here, Status.DIVERGED),
            (grad_small, Status.CONVERGED),
            (nonfinite_next, Status.NONFINITE),
            (converged_after, Status.CONVERGED),
        ]
        status = jnp.int32(Status.MAX_STEPS)
        for fired, code in reversed(checks):
            status = jnp.where(fired, jnp.int32(code), status)
        apply = running & ~stop_before
        stops = running & (status != Status.MAX_STEPS)

        def pick(new, old):
            return jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)

        params = pick(new_params, carry.params)
        steps = carry.steps + apply.astype(jnp.int32)
        new_carry = _Carry(
            params=params,
            rule_state=pick(new_rule_state, carry.rule_state),
            status=jnp.where(stops, status, carry.status),
            steps=steps,
            best_loss=jnp.where(running & improved, loss, carry.best_loss)
            if opts.use_patience
            else carry.best_loss,
            since_best=jnp.where(running, since_best, carry.since_best)
            if opts.use_patience
            else carry.since_best,
            params_history=record(carry.params_history, t + 1, params),
        )
        return new_carry, (loss, gnorm)

    # Full batch records params as scan outputs (no per-step scatter); mini-batch walks epochs and
    # writes its records into buffers carried through the loop.
    history = (
        None
        if opts.batch_size is None
        else jax.tree.map(lambda p: jnp.zeros((num_records, *p.shape), p.dtype).at[0].set(p), params0)
    )
    carry0 = _Carry(
        params=params0,
        rule_state=rule_state0,
        status=jnp.int32(Status.MAX_STEPS),
        steps=jnp.int32(0),
        best_loss=jnp.asarray(jnp.inf, dtype),
        since_best=jnp.int32(0),
        params_history=history,
    )

    if opts.batch_size is None:
        carry, (losses, gnorms), params_history = _full_batch_scan(step, carry0, opts)
    else:
        carry, (losses, gnorms) = _epoch_scan(step, carry0, key, opts)
        params_history = carry.params_history

    # The last iterate: its loss completes the history (num_steps + 1 entries).
    loss_T, grad_T = value_and_grad(carry.params, data)
    gnorm_T = jnp.sqrt(_tree_sq_norm(grad_T)).astype(dtype)
    losses = jnp.concatenate([losses, loss_T.astype(dtype)[None]])
    gnorms = jnp.concatenate([gnorms, gnorm_T[None]])
    # A run that stopped keeps its frozen values from the stop on.
    idx = jnp.arange(opts.num_steps + 1)
    stop_step = jnp.where(carry.status != Status.MAX_STEPS, carry.steps, _NO_STOP).astype(jnp.int32)
    frozen = (stop_step != _NO_STOP) & (idx > stop_step)
    stop_at = jnp.clip(stop_step, 0, opts.num_steps)
    losses = jnp.where(frozen, losses[stop_at], losses)
    gnorms = jnp.where(frozen, gnorms[stop_at], gnorms)
    return Trace(
        params=carry.params,
        loss_history=losses,
        params_history=params_history,
        grad_norm_history=gnorms,
        steps=carry.steps,
        status=carry.status,
        stop_step=stop_step,
    )


def _full_batch_scan(step, carry0, opts: RunOptions):
    """Full-batch steps as nested scans: chunks of `record_every` steps, params recorded per chunk."""
    k, num_steps = opts.record_every, opts.num_steps
    num_chunks, rest = divmod(num_steps, k)
    inner = lambda c, t: step(c, t, None)

    def chunk(c, ts):
        c, outs = jax.lax.scan(inner, c, ts, unroll=opts.unroll)
        return c, (outs, c.params)

    if k == 1:
        carry, (outs, records) = jax.lax.scan(
            lambda c, t: (lambda c2, o: (c2, (o, c2.params)))(*inner(c, t)),
            carry0,
            jnp.arange(num_steps),
            unroll=opts.unroll,
        )
    else:
        carry, (outs, records) = jax.lax.scan(
            chunk, carry0, jnp.arange(num_chunks * k).reshape(num_chunks, k)
        )
        outs = jax.tree.map(lambda x: x.reshape(-1), outs)
    if rest:
        carry, rest_outs = jax.lax.scan(
            inner, carry, jnp.arange(num_chunks * k, num_steps), unroll=opts.unroll
        )
        outs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outs, rest_outs)
    history = jax.tree.map(lambda p0, r: jnp.concatenate([p0[None], r]), carry0.params, records)
    return carry, outs, history


def _epoch_scan(step, carry0, key, opts: RunOptions):
    """Mini-batch sampling without replacement, epoch by epoch, inside the compiled loop.

    Each epoch draws one permutation of the examples from `fold_in(key, epoch)` and walks it in
    `n // batch_size` batches (the remainder is left out of that epoch; the next permutation differs).
    Steps past `num_steps` in the last epoch are computed but discarded.
    """
    n, bs = opts.num_examples, opts.batch_size
    per_epoch = n // bs
    num_epochs = -(-opts.num_steps // per_epoch)

    def epoch(carry, e):
        perm = jax.random.permutation(jax.random.fold_in(key, e), n)[: per_epoch * bs]
        batches = perm.reshape(per_epoch, bs)
        ts = e * per_epoch + jnp.arange(per_epoch)

        def body(c, x):
            t, idx = x
            new_c, out = step(c, t, idx)
            # Past the budget: keep the carry (the outputs are sliced away below).
            keep = t < opts.num_steps
            new_c = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new_c, c)
            return new_c, out

        return jax.lax.scan(body, carry, (ts, batches), unroll=opts.unroll)

    carry, (losses, gnorms) = jax.lax.scan(epoch, carry0, jnp.arange(num_epochs))
    return carry, (losses.reshape(-1)[: opts.num_steps], gnorms.reshape(-1)[: opts.num_steps])


_compiled_run = jax.jit(_scan_run, static_argnums=(0, 1, 2))


def enabled_criteria(opts: RunOptions, tols: Tolerances) -> RunOptions:
    """Compiles only the stopping checks some run (or lane) uses: a disabled criterion costs nothing.

    Turning a criterion on or off is a new program; changing its value is not.
    """
    return opts._replace(
        use_tol=bool(np.any(np.asarray(tols.tol) > 0)),
        use_grad_tol=bool(np.any(np.asarray(tols.grad_tol) > 0)),
        use_patience=bool(np.any(np.asarray(tols.patience) < np.iinfo(np.int32).max)),
    )


def use_feature_major(cost, data, opts: RunOptions):
    """Chooses the data layout: feature-major `(d, n)` for `X` when the cost supports it.

    A cost may carry `cost.feature_major`, the same cost for batches `(X.T, y, ...)` (gdjax's
    `make_cost(linear, loss)` does). For `n` examples of `d < n` features, XLA on CPU runs both
    products of a least-squares step (`X w` and `X^T r`) several times faster on the transposed,
    contiguous-rows layout; the results equal the row-major ones up to summation order.
    """
    alt = getattr(cost, "feature_major", None)
    if (
        alt is None
        or not isinstance(data, tuple)
        or len(data) < 2
        or np.ndim(data[0]) != 2
        or not np.shape(data[0])[0] > np.shape(data[0])[1]
    ):
        return cost, data, opts
    X = data[0]
    XT = X.T if isinstance(X, jax.Array) else np.ascontiguousarray(np.asarray(X).T)
    return alt, (XT, *data[1:]), opts._replace(feature_major=True)


def _prepare_data(data: PyTree, dtype) -> PyTree:
    """Casts floating data leaves to the parameters' dtype (precision is the params' choice).

    Host (NumPy) data is cast on the host and handed to the compiled run as is: no device op runs
    here, so a bad batch fails in validation before anything is compiled.
    """

    def cast(x):
        if isinstance(x, jax.Array):
            floating = jnp.issubdtype(x.dtype, jnp.floating)
            return x.astype(dtype) if floating and x.dtype != dtype else x
        x = np.asarray(x)
        return x.astype(dtype) if x.dtype.kind == "f" and x.dtype != dtype else x

    return jax.tree.map(cast, data)


def _struct(tree):
    leaves, treedef = jax.tree.flatten(tree)
    shapes = tuple((tuple(np.shape(x)), np.dtype(getattr(x, "dtype", np.float64))) for x in leaves)
    return treedef, shapes


def _abstract(struct):
    treedef, leaves = struct
    return jax.tree.unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])


class _StructKey:
    """Hashable description of a pytree's structure, shapes and dtypes (for the check cache)."""

    __slots__ = ("struct", "_hash")

    def __init__(self, tree):
        self.struct = _struct(tree)
        self._hash = hash(self.struct)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return isinstance(other, _StructKey) and self.struct == other.struct


@functools.lru_cache(maxsize=256)
def _checked_signature(cost, params_key: _StructKey, data_key: _StructKey):
    """`validation.check_cost` once per (cost, shapes): tracing the cost on every call would cost
    more than a small run."""
    validation.check_cost(cost, _abstract(params_key.struct), _abstract(data_key.struct))


def prepare(
    cost,
    rule: optax.GradientTransformation,
    params0: PyTree,
    data: PyTree,
    *,
    num_steps: int,
    batch_size: int | None,
    key,
    record_every: int,
    unroll: int,
):
    """Validates the arguments of `run` and returns what the compiled scan takes.

    Shared by `run` and `gdjax.sweep`, so both accept and reject exactly the same inputs.
    """
    validation.check_positive_int("num_steps", num_steps)
    validation.check_positive_int("record_every", record_every)
    validation.check_positive_int("unroll", unroll)
    if not isinstance(rule, optax.GradientTransformation):
        raise ValueError(
            f"rule must be an optax.GradientTransformation (e.g. gdjax.rules.sgd(0.1) or "
            f"optax.adam(1e-3)), got {type(rule).__name__}"
        )
    validation.check_params(params0)
    n = validation.check_data(data)
    if batch_size is not None:
        validation.check_positive_int("batch_size", batch_size)
        if n is None:
            raise ValueError("batch_size needs data with a leading example axis; data is None")
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} is larger than the data ({n} examples)")
        if batch_size == n:
            batch_size = None  # every batch is the whole data set: full-batch gradient descent
        elif key is None:
            raise ValueError(
                f"batch_size={batch_size} < {n} examples samples batches at random: pass "
                "key=jax.random.key(seed)"
            )
    dtype = _float_dtype(params0)
    data = _prepare_data(data, dtype)
    _checked_signature(cost, _StructKey(params0), _StructKey(data))
    if key is not None and not (
        isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    ):
        key = jax.random.key(int(key)) if np.ndim(key) == 0 else jax.random.wrap_key_data(key)
    opts = RunOptions(num_steps, batch_size, n, record_every, unroll)
    return params0, data, key, opts


def run(
    cost: Callable[[PyTree, PyTree], jax.Array],
    rule: optax.GradientTransformation,
    params0: PyTree,
    data: PyTree = None,
    *,
    num_steps: int,
    batch_size: int | None = None,
    key: jax.Array | int | None = None,
    tol: float | None = None,
    grad_tol: float | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    divergence_factor: float | None = 100.0,
    record_every: int = 1,
    unroll: int = 1,
    layout: str = "feature_major",
) -> Trace:
    """Minimises `cost(params, data)` with `rule` for up to `num_steps` steps, as one compiled scan.

    Each step evaluates the full-data cost and gradient at the current parameters (the histories),
    asks `rule` for an update from that gradient (full batch) or from the gradient on a sampled batch
    (`batch_size` set), and applies it. Stopping and divergence are decided inside the compiled loop;
    a stopped run is frozen for the remaining steps, so runs of different lengths vmap together.

    Stopping (each optional, the first to fire wins):
      - `tol`: the tutorials' rule, `||params_t - params_{t-1}|| < tol` (global 2-norm).
      - `grad_tol`: `||grad f(params_t)|| < grad_tol` on the full-data gradient.
      - `patience`: `patience` steps in a row without the loss improving on its best by `min_delta`.
    Divergence is a status, not an exception: a non-finite loss, gradient or update gives
    `Status.NONFINITE`, and a loss above `f(params_0) + (divergence_factor - 1) * |f(params_0)|`
    (100x the initial loss by default; `None` disables) gives `Status.DIVERGED`. The run is frozen
    at the last finite iterate before the update that would overflow.

    Args:
      cost: pure `cost(params, batch) -> scalar`.
      rule: any `optax.GradientTransformation`. Rules from `gdjax.rules` keep their hyperparameters
        in their state, so `rules.sgd(0.01)` then `rules.sgd(0.02)` reuses one compilation; an
        Optax optimizer built anew (`optax.adam(lr)`) is a new program for each value.
      params0: starting parameters, any pytree of floating arrays; the run keeps their dtype and the
        floating data is cast to it.
      data: the batch pytree passed to `cost` (e.g. `(X, y)`), every leaf with a leading example
        axis; `None` for costs that ignore it.
      num_steps: number of update steps (the histories have `num_steps + 1` entries).
      batch_size: `None` for full batch; `1` for stochastic, `k` for mini-batch gradient descent,
        sampled without replacement epoch by epoch from `key`.
      key: PRNG key (or integer seed) for sampling; required when `batch_size` < number of examples.
      record_every: keep every `record_every`-th iterate in `params_history` (memory for big models).
      unroll: `lax.scan` unroll factor (results are identical). Leave it at 1 on CPU: with jax 0.10
        an unrolled scan copied its history buffers each step here, 40x slower on a small problem.
      layout: `"feature_major"` (default) lets a cost that supports it (`make_cost(linear, ...)`)
        see `X` stored transposed, which is several times faster on CPU; `"as_given"` passes the
        data untouched. Results agree up to floating-point summation order.

    Returns:
      A `Trace` (see `gdjax.Trace`).

    Example:
      >>> import gdjax
      >>> X, y = gdjax.data.line()  # y = 20 x + 5
      >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
      >>> trace = gdjax.run(cost, gdjax.rules.sgd(0.05), gdjax.init_linear(1), (X, y), num_steps=2000)
      >>> round(float(trace.params["w"][0]), 3), round(float(trace.params["b"]), 3)
      (20.0, 5.0)
    """
    tols = make_tolerances(tol, grad_tol, patience, min_delta, divergence_factor)
    params0, data, key, opts = prepare(
        cost,
        rule,
        params0,
        data,
        num_steps=num_steps,
        batch_size=batch_size,
        key=key,
        record_every=record_every,
        unroll=unroll,
    )
    if layout == "feature_major":
        cost, data, opts = use_feature_major(cost, data, opts)
    elif layout != "as_given":
        raise ValueError(f"layout must be 'feature_major' or 'as_given', got {layout!r}")
    opts = enabled_criteria(opts, tols)
    rule_state0 = rule.init(params0)
    return _compiled_run(cost, rule.update, opts, params0, rule_state0, data, key, tols)


__all__ = ["RunOptions", "Tolerances", "make_tolerances", "prepare", "run"]
