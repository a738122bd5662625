"""One optimisation run as one compiled `lax.scan`.

`run(cost, rule, params0, data, num_steps=...) -> Trace` takes any cost `cost(params, data)` and any
`optax.GradientTransformation` (hand-written from `gdjax.rules` or Optax's own) and runs the whole
optimisation inside one jit-compiled program: sampling of stochastic / mini-batches from a PRNG key,
the update rule, stopping tolerances and divergence detection all happen inside the scan, so a run is
a pure function of arrays and `jax.vmap` turns it into a sweep (`gdjax.sweep`).

Rules arrive as arguments (`gdjax.rules` is not imported): a gdjax `Rule` as its hashable spec
plus its values, any other transformation as an opaque `update` with its state. A cost's
hyperparameters (`gdjax.costs.bind(cost, l2=0.1)`) arrive as arrays too, so a new value of either
never recompiles.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gdjax import compile_cache, costs, sampler, validation
from gdjax import progress as gdjax_progress
from gdjax.options import (
    DIVERGENCE_FACTOR,
    DIVERGENCE_PATIENCE,
    Execution,
    Stopping,
    execution_of,
    stopping_of,
)
from gdjax.types import PyTree, Status, Trace

_NO_STOP = -1  # stop_step of a run that used its whole budget


class RunOptions(NamedTuple):
    """The static (shape-deciding) settings of a run: changing one of these recompiles."""

    num_steps: int
    batch_size: int | None  # None: full batch
    num_examples: int | None
    eval_every: int  # steps between evaluations (0, k, 2k, ... and the last step)
    record_every: int  # steps between recorded iterates: a multiple of eval_every
    unroll: int
    feature_major: bool = False  # data is `(X.T, ...)`: examples along axis 1 of the first leaf
    eval_feature_major: bool = False  # mini-batch: data is `(rows, (X.T, ...))`, the second for evaluations
    use_tol: bool = True
    use_grad_tol: bool = True
    use_patience: bool = True
    use_divergence: bool = True
    extra_args: bool = False  # the rule's update takes value=, grad=, value_fn= (optax.lbfgs)
    batch_losses: bool = True  # record the loss of every step's batch
    check_domain: bool = False  # values were traced, so unchecked on the host: check them inside
    checkpoint_every: int | None = None  # reverse mode: keep the carry every this many steps only
    guard_steps: bool = False  # an input was traced (maybe differentiated): zero untaken steps' inputs
    progress_intervals: int = 0  # >0: report the steps done every this many intervals (gdjax.progress)


class Tolerances(NamedTuple):
    """Stopping and divergence thresholds, passed as arrays: changing a value never recompiles.

    A disabled criterion holds a value that can never trigger (`-1` for a norm, `inf` otherwise).
    """

    tol: jax.Array  # stop when ||params_t - params_{t-1}|| < tol
    grad_tol: jax.Array  # stop when ||grad f(params_t)|| < grad_tol
    patience: jax.Array  # stop after this many steps without improving the best loss by min_delta
    min_delta: jax.Array
    divergence_factor: jax.Array  # threshold f(params_0) + (factor - 1)|f(params_0)|
    divergence_patience: jax.Array  # evaluations in a row above the threshold and not falling


def make_tolerances(
    tol=None,
    grad_tol=None,
    patience=None,
    min_delta=0.0,
    divergence_factor=DIVERGENCE_FACTOR,
    divergence_patience=DIVERGENCE_PATIENCE,
) -> Tolerances:
    """Validates stopping settings and packs them as host scalars (`None` disables a criterion)."""
    return tolerances(Stopping(tol, grad_tol, patience, min_delta, divergence_factor, divergence_patience))


@functools.lru_cache(maxsize=512)
def tolerances(stopping: Stopping) -> Tolerances:
    """A (validated) `Stopping` packed as host scalars: a disabled criterion can never trigger."""
    s = stopping
    return Tolerances(
        tol=np.float64(-1.0 if s.tol is None else s.tol),
        grad_tol=np.float64(-1.0 if s.grad_tol is None else s.grad_tol),
        patience=np.int32(np.iinfo(np.int32).max if s.patience is None else s.patience),
        min_delta=np.float64(s.min_delta),
        divergence_factor=np.float64(np.inf if s.divergence_factor is None else s.divergence_factor),
        divergence_patience=np.int32(min(s.divergence_patience, np.iinfo(np.int32).max)),
    )


class _Carry(NamedTuple):
    params: PyTree
    rule_state: Any
    status: jax.Array  # int32 Status code; MAX_STEPS while running
    steps: jax.Array  # int32 updates applied
    best_loss: jax.Array  # best evaluated loss (patience)
    since_best: jax.Array  # int32 evaluations since best_loss last improved
    streak: jax.Array  # int32 evaluations in a row above the divergence threshold and not falling
    last_loss: jax.Array  # the previous evaluation's loss
    threshold: jax.Array  # divergence threshold, set from the first evaluation's loss
    params_history: PyTree  # (num_records, ...) buffers written at evaluations, or None


class Evaluated(NamedTuple):
    """What one evaluation measures on the full data at the current parameters."""

    loss: jax.Array
    grad_norm: jax.Array
    metrics: dict


def _tree_all_finite(tree) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _tree_sq_norm(tree) -> jax.Array:
    """`sum |x|^2` over every leaf, in an order that does not depend on the vmapped width.

    The stopping tests (`tol` on the step, `grad_tol` on the gradient) compare this with a
    threshold. XLA's `reduce` orders its additions by the shape of the whole (vmapped) operand: a
    lane summed in a call of 234 lanes and in one of 3 could differ in the last bit, and with a `tol`
    at the parameters' rounding level (float32, `tol=1e-7`) that flipped `converged` against
    `max_steps` with the `chunk_size` (issue 19). Pairwise sums written as elementwise adds are the
    same arithmetic in every lane, whatever the width.
    """
    total = None
    for x in jax.tree.leaves(tree):
        x = x.astype(jnp.promote_types(x.dtype, jnp.float32))  # float16's squares overflow at 256
        part = _pairwise_sum(jnp.real(x * jnp.conj(x)).reshape(-1))
        total = part if total is None else total + part
    return total


def _pairwise_sum(x: jax.Array) -> jax.Array:
    """`sum(x)` of a 1-D array as a fixed tree of elementwise adds (padded with zeros to a power of 2)."""
    n = x.shape[0]
    if n == 0:
        return jnp.zeros((), x.dtype)
    width = 1 << (n - 1).bit_length()
    if width != n:
        x = jnp.concatenate([x, jnp.zeros(width - n, x.dtype)])
    while x.shape[0] > 1:
        half = x.shape[0] // 2
        x = x[:half] + x[half:]
    return x[0]


def _lane_varying(tree, ref: jax.Array):
    """`tree` with the same values, made to depend on `ref` (a scalar input of the lane).

    Under `jax.vmap` (a sweep's lanes) a loop's carry that starts as a constant (a counter, a status,
    a buffer of zeros) and becomes per-lane in the body makes the batching rules of `lax.scan` and
    `while_loop` batch the whole body again, once per round of such carries, and the nested loops in
    it each time: 24 batchings of the body for the mini-batch adam sweep of the bench, about a third
    of its tracing. Started batched, each loop is batched once. `select(p, x, x)` is `x` for any `p`:
    XLA folds it, and the numbers do not change (bit-identical, checked on the bench's cases).
    """
    same = ref == ref  # a boolean of the lane; its value is irrelevant
    return jax.tree.map(lambda x: jax.lax.select(jnp.broadcast_to(same, jnp.shape(x)), x, x), tree)


def float_dtype(params) -> np.dtype:
    """The real floating dtype of the run: the params' promoted dtype (complex64 -> float32)."""
    leaves = jax.tree.leaves(params)
    dtypes = tuple(x.dtype if hasattr(x, "dtype") else type(x) for x in leaves)
    return _float_dtype_of(dtypes, jax.config.jax_enable_x64)


def measure_dtype(params) -> np.dtype:
    """The dtype of a run's measurements (losses, gradient norms, metrics, the stopping state): the
    params' floating dtype, and at least float32. In float16 a gradient entry of 256 squares past the
    largest number (65504), and a float32 cost of float16 weights (mixed precision) above 65504 would
    be recorded as inf: finite runs were frozen as `nonfinite`."""
    return np.dtype(jnp.promote_types(float_dtype(params), jnp.float32))


@functools.lru_cache(maxsize=256)
def _float_dtype_of(dtypes: tuple, x64: bool) -> np.dtype:
    del x64  # part of the cache key: canonical dtypes depend on it
    dtype = jnp.result_type(*dtypes)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def schedule(opts: RunOptions) -> tuple[np.ndarray, np.ndarray]:
    """The steps evaluated and the steps whose parameters are recorded (read-only host arrays, int64)."""
    return _schedule(opts.num_steps, opts.eval_every, opts.record_every)


@functools.lru_cache(maxsize=64)
def _schedule(num_steps: int, eval_every: int, record_every: int) -> tuple[np.ndarray, np.ndarray]:
    # Steps 0, k, 2k, ... below num_steps, then num_steps: sorted and distinct as built. (`np.unique`
    # of them took 0.12 s per array at 200,000 steps, at every trace of the program.)
    evals = np.append(np.arange(0, num_steps, eval_every), num_steps)
    records = np.append(evals[:-1][:: record_every // eval_every], num_steps)
    for steps in (evals, records):
        steps.flags.writeable = False  # cached: shared by every caller
    return evals, records


def schedule_sizes(opts: RunOptions) -> tuple[int, int]:
    """`len` of the two arrays of `schedule(opts)`, counted without building them (planning a sweep of
    `num_steps=2e7` must not allocate per step)."""
    evals = -(-opts.num_steps // opts.eval_every)  # steps 0, k, 2k, ... below num_steps
    per_record = opts.record_every // opts.eval_every
    return evals + 1, -(-evals // per_record) + 1  # each with the last step


def scan_program(
    cost: Callable,
    spec: Any,
    metrics: tuple,
    opts: RunOptions,
    params0: PyTree,
    hyperparams: Any,
    data: PyTree,
    key: jax.Array | None,
    tols: Tolerances,
) -> Trace:
    """The compiled body of `run`: `scan_pieces` with its histories joined (`join_pieces`)."""
    pieces = scan_pieces(cost, spec, metrics, opts, params0, hyperparams, data, key, tols)
    return join_pieces(pieces, batch_losses_from_evals(opts, spec))


def batch_losses_from_evals(opts: RunOptions, spec: Any) -> bool:
    """Full batch with an evaluation before every step: the batch loss of step t is the evaluation's
    loss at t (the step reuses its gradient), so the program does not write it twice: it is
    `loss_history[:-1]`."""
    reuse = opts.batch_size is None and getattr(spec, "eval_params", None) is None
    return opts.batch_losses and reuse and opts.eval_every == 1


def join_pieces(pieces: Trace, batch_from_evals: bool) -> Trace:
    """A `Trace` from `scan_pieces`: each history's pieces concatenated along their leading (time)
    axis; the batch losses that `batch_from_evals` says are the evaluations' are sliced from them."""

    def join(parts):
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts)

    def joined(field):
        return None if field is None else jax.tree.map(lambda *xs: join(xs), *field)

    loss = join(pieces.loss_history)
    return pieces._replace(
        loss_history=loss,
        grad_norm_history=join(pieces.grad_norm_history),
        params_history=joined(pieces.params_history),
        metrics={name: join(parts) for name, parts in pieces.metrics.items()},
        batch_loss_history=loss[:-1] if batch_from_evals else joined(pieces.batch_loss_history),
    )


def scan_pieces(
    cost: Callable,
    spec: Any,
    metrics: tuple,
    opts: RunOptions,
    params0: PyTree,
    hyperparams: Any,
    data: PyTree,
    key: jax.Array | None,
    tols: Tolerances,
) -> Trace:
    """The run as one scan (under `jax.vmap`, every lane of `gdjax.sweep`): pure in its array
    arguments, vmappable over all of them. Its histories (`loss_history`, `grad_norm_history`, each
    metric, `params_history` and `batch_loss_history`) are tuples of pieces along their leading
    (time) axis, joined by `join_pieces`: under `vmap`, joining inside would put the lane axis first
    (`concatenate`'s batching rule) and make XLA transpose every history of a sweep, which joins them
    after the `vmap` with the lanes second instead (`gdjax.sweep`). `batch_loss_history` is None where
    it is the evaluations' losses (`batch_losses_from_evals`).

    Args: the static `cost`, rule `spec` (a `RuleSpec`, or `Opaque` for a transformation built
    outside gdjax), `metrics` and `opts`; the arrays `params0`, `hyperparams` (`(rule values, cost
    values)`), `data`, `key` and `tols`.

    The loop is a scan over evaluation intervals: each interval evaluates the full-data loss,
    gradient norm and metrics at its first iterate (and decides the stopping rules that need them),
    then takes `eval_every` steps, each on its own batch. A last evaluation follows the last step.
    """
    dtype = measure_dtype(params0)
    tols = jax.tree.map(lambda t: jnp.asarray(t, jnp.int32 if t.dtype == np.int32 else dtype), tols)
    rule_values, cost_values = hyperparams
    base_cost = cost
    if cost_values:
        # The cost's hyperparameters (an L2 weight, a Huber delta) are arrays, like the rule's.
        cost = functools.partial(cost, **cost_values)
    rule_state0 = spec.init(params0, rule_values)
    update = spec.update
    value_and_grad = _guarded_value_and_grad(base_cost, cost_values)
    k, num_steps = opts.eval_every, opts.num_steps
    num_full, rest = divmod(num_steps, k)
    eval_steps, record_steps = schedule(opts)
    per_record = opts.record_every // k
    num_records = len(record_steps)
    full_batch = opts.batch_size is None
    eval_cost, eval_data = cost, data
    if opts.eval_feature_major:
        # Batches are gathered from the row-major copy; full-data evaluations read the feature-major one.
        data, eval_data = data
        eval_cost = cost.feature_major
    eval_value_and_grad = (
        _guarded_value_and_grad(eval_cost, {}) if opts.eval_feature_major else value_and_grad
    )
    false = jnp.zeros((), bool)
    eval_params = getattr(spec, "eval_params", None)

    def point(c: _Carry) -> PyTree:
        """Where loss and metrics are measured: the iterate, or where the rule says (schedule-free)."""
        return c.params if eval_params is None else eval_params(c.rule_state, c.params)

    def evaluate(params) -> tuple[Evaluated, Any]:
        loss, grad = eval_value_and_grad(params, eval_data)
        values = {name: jnp.asarray(fn(params)).astype(dtype) for name, fn in metrics}
        return Evaluated(loss.astype(dtype), jnp.sqrt(_tree_sq_norm(grad)).astype(dtype), values), grad

    def at_evaluation(c: _Carry, ev: Evaluated) -> _Carry:
        """Stopping rules decided on full-data quantities (precedence: first listed wins)."""
        running = c.status == Status.MAX_STEPS
        nonfinite = ~(jnp.isfinite(ev.loss) & jnp.isfinite(ev.grad_norm))
        threshold = c.threshold  # inf: never crossed
        if opts.use_divergence:
            # Set from the first evaluation (the loss at params0): one scalar select, no extra pass.
            threshold = jnp.where(
                jnp.isnan(c.threshold), ev.loss + (tols.divergence_factor - 1) * jnp.abs(ev.loss), c.threshold
            )
            # A transient (a spike that turns around) resets the streak; runaway growth keeps it.
            rising = (ev.loss > threshold) & (ev.loss >= c.last_loss)
            streak = jnp.where(rising, c.streak + 1, 0)
            diverged = streak >= tols.divergence_patience
        else:
            streak, diverged = c.streak, false
        grad_small = ev.grad_norm < tols.grad_tol if opts.use_grad_tol else false
        if opts.use_patience:
            improved = ev.loss < c.best_loss - tols.min_delta
            since_best = jnp.where(improved, 0, c.since_best + 1)
            patience_out = since_best >= tols.patience
            best_loss = jnp.where(improved, ev.loss, c.best_loss)
        else:
            since_best, patience_out, best_loss = c.since_best, false, c.best_loss
        # Overflow while the loss was running away above the threshold is divergence, not a NaN.
        blew_up = jnp.int32(Status.DIVERGED) if opts.use_divergence else jnp.int32(Status.NONFINITE)
        blew_up = jnp.where(c.streak > 0, blew_up, jnp.int32(Status.NONFINITE))
        status = jnp.int32(Status.MAX_STEPS)
        for fired, code in reversed(
            [
                (nonfinite, blew_up),
                (diverged, Status.DIVERGED),
                (grad_small, Status.CONVERGED),
                (patience_out, Status.CONVERGED),
            ]
        ):
            status = jnp.where(fired, jnp.int32(code), status)

        def keep(new, old):
            return jnp.where(running, new, old)

        return c._replace(
            status=keep(status, c.status),
            streak=keep(streak, c.streak),
            last_loss=keep(ev.loss, c.last_loss),
            threshold=threshold,
            best_loss=keep(best_loss, c.best_loss),
            since_best=keep(since_best, c.since_best),
        )

    def step(c: _Carry, t, given=None):
        """One update on the batch of step `t` (or on the full data, reusing `given` if computed)."""
        running = c.status == Status.MAX_STEPS
        if given is not None:
            loss, grad = given
            batch = data
        elif full_batch:
            batch = data
            loss, grad = value_and_grad(c.params, batch)
        else:
            idx = sampler.batch_indices(key, t, opts.num_examples, opts.batch_size)
            batch = jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
            loss, grad = value_and_grad(c.params, batch)
        loss = loss.astype(dtype)
        # JAX's gradient of a real cost of complex params is the conjugate of the steepest-ascent
        # direction; Optax's rules (and gdjax's) expect the direction itself, as Optax's own complex
        # tests pass it (optax/_src/alias_test.py conjugates before `update`).
        grad = jax.tree.map(lambda g: jnp.conj(g) if jnp.iscomplexobj(g) else g, grad)
        finite_in = jnp.isfinite(loss) & _tree_all_finite(grad)
        loss_in, grad_in = loss, grad
        if opts.guard_steps:
            # Double where: a step that is not taken (a frozen lane, a non-finite gradient) gets
            # zeros, so that its zero cotangent never meets an infinite input (`d(-lr g)/d lr = -g`).
            # Only when the run may be differentiated: the selects change how XLA fuses the step,
            # and so its last bits (chaotic problems such as Rosenbrock amplify them).
            use = running & finite_in
            loss_in = jnp.where(use, loss, jnp.zeros_like(loss))
            grad_in = jax.tree.map(lambda g: jnp.where(use, g, jnp.zeros_like(g)), grad)
        if opts.extra_args:
            updates, new_rule_state = update(
                grad_in,
                c.rule_state,
                c.params,
                value=loss_in,
                grad=grad_in,
                value_fn=lambda p: cost(p, batch),
            )
        else:
            updates, new_rule_state = update(grad_in, c.rule_state, c.params)
        new_params = optax.apply_updates(c.params, updates)
        new_params = jax.tree.map(lambda p, q: p.astype(q.dtype), new_params, c.params)
        nonfinite = ~finite_in | ~_tree_all_finite(new_params)
        if opts.use_tol:
            delta = jnp.sqrt(_tree_sq_norm(jax.tree.map(jnp.subtract, new_params, c.params)))
            converged = delta < tols.tol
        else:
            converged = false
        apply = running & ~nonfinite
        blew_up = jnp.where(c.streak > 0, jnp.int32(Status.DIVERGED), jnp.int32(Status.NONFINITE))
        status = jnp.where(nonfinite, blew_up, jnp.int32(Status.MAX_STEPS))
        status = jnp.where(apply & converged, jnp.int32(Status.CONVERGED), status)

        def pick(new, old):
            return jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)

        c = c._replace(
            params=pick(new_params, c.params),
            rule_state=pick(new_rule_state, c.rule_state),
            status=jnp.where(running, status, c.status),
            steps=c.steps + apply.astype(jnp.int32),
        )
        return c, loss

    def record(c: _Carry, i) -> _Carry:
        if c.params_history is None:
            return c
        # Rows at evaluations 0, m, 2m, ...; others write out of bounds, which mode="drop" discards.
        row = jnp.where(i % per_record == 0, i // per_record, num_records)
        if fold_last:
            row = jnp.where(i == num_full, num_records - 1, row)  # the evaluation after the last step
        history = jax.tree.map(lambda h, p: h.at[row].set(p, mode="drop"), c.params_history, point(c))
        return c._replace(params_history=history)

    # The step reuses a full-batch evaluation's gradient, unless it was taken elsewhere.
    reuse = full_batch and eval_params is None

    def interval(c: _Carry, i, length: int, ragged: bool = False):
        """Evaluation `i`, then `length` steps from step `i * k` (`ragged`: `length` is `k`, except
        `rest` for the last interval, chosen inside the program)."""
        at_eval = point(c)
        ev, grad = evaluate(at_eval)
        final = (i == num_full) if fold_last else None
        before = c
        c = at_evaluation(c, ev)
        c = record(c, i)
        t0 = i * k
        if reuse or length == 1:
            stepped, first = step(c, t0, (ev.loss, grad) if reuse else None)
            if fold_last:
                # The interval of the evaluation after the last step runs like every other one and
                # keeps none of its stopping rules and step: the status, the count and the streak
                # are the ones before it (the final rule is applied after the loop, as without the
                # fold), and the params returned are the ones it recorded. (Not taking the step or
                # applying the final rule here, as predicates the step reads, made XLA fuse the rule
                # differently: its last bits left plain Optax's.)
                stepped = stepped._replace(
                    status=jnp.where(final, before.status, stepped.status),
                    steps=jnp.where(final, before.steps, stepped.steps),
                    streak=jnp.where(final, before.streak, stepped.streak),
                )
            c = stepped
            batch_losses = first[None]
            done = 1
        else:
            # Every step of the interval is the scan's one body: a first step traced apart from the
            # scan was a second copy of the step (sampler, gradient, rule) for XLA to compile.
            batch_losses, done = None, 0
        if ragged:
            # One loop of at most `k` steps serves the full intervals and the shorter last one, so
            # the step and the evaluation are compiled once (a scan needs its length on the host).
            # Its bounds are the same in every lane, so under `vmap` it stays one loop.
            keep = opts.batch_losses and not from_evals
            buffer = _lane_varying(jnp.zeros((k,), dtype), tols.divergence_factor) if keep else None
            if keep and batch_losses is not None:
                buffer = buffer.at[0].set(batch_losses[0])

            def body(j, state):
                c, buffer = state
                c, loss = step(c, t0 + j)
                return c, None if buffer is None else buffer.at[j].set(loss)

            c, batch_losses = jax.lax.fori_loop(done, jnp.where(i < num_full, k, rest), body, (c, buffer))
        elif length > done:
            c, more = jax.lax.scan(
                lambda c, t: step(c, t), c, t0 + jnp.arange(done, length), unroll=opts.unroll
            )
            batch_losses = more if batch_losses is None else jnp.concatenate([batch_losses, more])
        if opts.progress_intervals:
            gdjax_progress.report(
                i, every=opts.progress_intervals, eval_every=k, num_steps=num_steps, skip=final
            )
        out = (ev, batch_losses if opts.batch_losses and not from_evals else None)
        return c, (out, at_eval if per_record == 1 else None)

    from_evals = batch_losses_from_evals(opts, spec)
    # An evaluation before every step: the evaluation after the last step is one more interval of
    # the scan, whose step is computed and not kept. The histories are then the scan's own buffers
    # (joining a last row after the loop copied each whole history: 4 x 16 MB for a sweep of 4096
    # lanes x 1000 steps) and XLA compiles the evaluation once, not twice (a quarter of a small
    # full-batch program's compile time). With sparser evaluations the extra interval would be
    # `eval_every` steps.
    fold_last = k == 1 and num_full > 0
    history = None
    if per_record > 1:
        history = jax.tree.map(lambda p: jnp.zeros((num_records, *p.shape), p.dtype), params0)
    invalid = None
    status0 = jnp.int32(Status.MAX_STEPS)
    if opts.check_domain:
        # The host checks (rules.get, bind) saw tracers: check the values here; an invalid run
        # takes no step and says which value (Status.INVALID, Trace.invalid).
        violations = getattr(spec, "violations", None)
        invalid = dict(violations(rule_values)) if violations is not None else {}
        for name, value in cost_values.items():
            invalid[f"cost.{name}"] = ~jnp.all(jnp.isfinite(value))
        if invalid:
            bad = jnp.any(jnp.stack(list(invalid.values())))
            status0 = jnp.where(bad, jnp.int32(Status.INVALID), status0)
    carry = _Carry(
        params=params0,
        rule_state=rule_state0,
        status=status0,
        steps=jnp.int32(0),
        best_loss=jnp.asarray(jnp.inf, dtype),
        since_best=jnp.int32(0),
        streak=jnp.int32(0),
        last_loss=jnp.asarray(-jnp.inf, dtype),
        threshold=jnp.asarray(jnp.nan if opts.use_divergence else jnp.inf, dtype),
        params_history=history,
    )
    carry = _lane_varying(carry, tols.divergence_factor)
    evals, batch_losses, records = [], [], []
    # A ragged last interval joins the loop of the full ones when nothing differentiates the run (a
    # loop of traced length has no reverse mode) and no option needs the scan (blocks, unrolling).
    ragged = bool(num_full and rest and not (opts.guard_steps or opts.checkpoint_every or opts.unroll > 1))
    if ragged:
        carry, ((ev, bl), rec) = jax.lax.scan(
            lambda c, i: interval(c, i, k, ragged=True), carry, jnp.arange(num_full + 1, dtype=jnp.int32)
        )
        evals.append(ev)
        batch_losses.append(None if bl is None else bl.reshape(-1)[:num_steps])
        records.append(rec)
    if num_full and not ragged:
        carry, ((ev, bl), rec) = _scan_intervals(
            lambda c, i: interval(c, i, k),
            carry,
            num_full + int(fold_last),
            opts.checkpoint_every and opts.checkpoint_every // k,
        )
        evals.append(ev)
        batch_losses.append(None if bl is None else bl.reshape(-1)[:num_steps])
        records.append(rec)
    if rest and not ragged:
        carry, ((ev, bl), rec) = interval(carry, jnp.int32(num_full), rest)
        evals.append(jax.tree.map(lambda x: x[None], ev))
        batch_losses.append(bl)
        records.append(None if rec is None else jax.tree.map(lambda x: x[None], rec))
    if fold_last:
        last = jax.tree.map(lambda x: x[-1], evals[-1])  # the scan's last interval
    else:
        final_params = point(carry)
        last, _ = evaluate(final_params)
        evals.append(jax.tree.map(lambda x: x[None], last))
        if per_record == 1:
            records.append(jax.tree.map(lambda x: x[None], final_params))
    running = carry.status == Status.MAX_STEPS
    blew_up = jnp.where(carry.streak > 0, jnp.int32(Status.DIVERGED), jnp.int32(Status.NONFINITE))
    status = jnp.where(~(jnp.isfinite(last.loss) & jnp.isfinite(last.grad_norm)), blew_up, carry.status)
    if opts.use_divergence:
        # A run that ends above the threshold did not come back within its budget: diverged.
        status = jnp.where(last.loss > carry.threshold, jnp.int32(Status.DIVERGED), status)
    carry = carry._replace(status=jnp.where(running, status, carry.status))
    ev = jax.tree.map(lambda *xs: xs, *evals)  # each history: a tuple of pieces

    if per_record == 1:
        # Every evaluation is recorded: params came out of the scan (no per-step scatter).
        params_history = tuple(records)
    elif fold_last:
        params_history = (carry.params_history,)  # the last row was written in the loop
    else:
        last_row = num_records - 1
        params_history = (
            jax.tree.map(lambda h, p: h.at[last_row].set(p), carry.params_history, final_params),
        )
    if fold_last:
        # The params (or where the rule evaluates: schedule-free's average) at the evaluation after
        # the last step are its record, the last row; the carry's took that interval's unkept step.
        final_params = jax.tree.map(lambda h: h[-1], params_history[-1])

    stop_step = jnp.where(carry.status != Status.MAX_STEPS, carry.steps, _NO_STOP).astype(jnp.int32)
    return Trace(
        params=final_params,
        loss_history=ev.loss,
        params_history=params_history,
        grad_norm_history=ev.grad_norm,
        steps=carry.steps,
        status=carry.status,
        stop_step=stop_step,
        eval_steps=jnp.asarray(eval_steps, jnp.int32),
        batch_loss_history=(
            (jnp.concatenate(batch_losses),) if opts.batch_losses and not from_evals else None
        ),
        metrics=ev.metrics,
        record_steps=jnp.asarray(record_steps, jnp.int32),
        invalid=invalid,
    )


def _scan_intervals(body: Callable, carry, num: int, block: int | None):
    """`lax.scan(body, carry, arange(num))`, or, with `block`, a scan over blocks of `block`
    intervals whose inner scan is `jax.checkpoint`ed: reverse mode then stores the carry at block
    boundaries only (`num / block` carries, plus one block's residuals while it is recomputed), at the
    price of running the forward pass twice. The forward values are the same operations in the same
    order.
    """
    idx = jnp.arange(num, dtype=jnp.int32)
    if not block or block >= num:
        return jax.lax.scan(body, carry, idx)
    inner = jax.checkpoint(lambda c, ids: jax.lax.scan(body, c, ids), prevent_cse=False)
    num_blocks, rest = divmod(num, block)
    carry, out = jax.lax.scan(inner, carry, idx[: num_blocks * block].reshape(num_blocks, block))
    out = jax.tree.map(lambda x: x.reshape(num_blocks * block, *x.shape[2:]), out)
    if rest:
        carry, tail = inner(carry, idx[num_blocks * block :])
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, tail)
    return carry, out


def _takes_extra_args(rule) -> bool:
    """Whether a transformation built outside gdjax takes Optax's extra arguments (`value`, `grad`,
    `value_fn`): a `GradientTransformationExtraArgs` whose `update` accepts them by name or as
    `**kwargs` (optax.contrib.sam is one by type, but its update takes none)."""
    if not isinstance(rule, optax.GradientTransformationExtraArgs):
        return False
    try:
        parameters = inspect.signature(rule.update).parameters.values()
    except (TypeError, ValueError):  # no signature to read: as the type says
        return True
    return any(p.kind is p.VAR_KEYWORD or p.name in ("value", "grad", "value_fn") for p in parameters)


def _value_and_grad(cost: Callable) -> Callable:
    """The cost's own `value_and_grad` where it offers one (linear least squares), else autodiff's."""
    return getattr(cost, "value_and_grad", None) or jax.value_and_grad(cost)


def _guarded_value_and_grad(cost: Callable, values: dict) -> Callable:
    """`value_and_grad(params, data)` of `cost` (with its hyperparameter `values`), whose derivative
    with respect to its inputs is zero where its value is not finite.

    A run never takes a step from a point where the loss or gradient is not finite (the lane is
    frozen), so nothing downstream depends on those values: their cotangent is zero. But zero times
    the cost's own infinite derivatives there (`exp` past overflow) is NaN, which would poison the
    hypergradient of every lane of a sweep. This is the double-where trick, applied to the tangents:
    they are masked *before* they meet the infinite Jacobian, so the transpose is a select, never
    `0 * inf`. Without differentiation it is the plain function: no cost to a run.
    """

    def plain(params, data, values):
        fn = functools.partial(cost, **values) if values else cost
        return _value_and_grad(fn)(params, data)

    @jax.custom_jvp
    def guarded(params, data, values):
        return plain(params, data, values)

    @guarded.defjvp
    def guarded_jvp(primals, tangents):
        loss, grad = plain(*primals)
        ok = jnp.isfinite(loss) & _tree_all_finite(grad)

        def mask(t):
            return t if t.dtype == jax.dtypes.float0 else jnp.where(ok, t, jnp.zeros_like(t))

        return jax.jvp(plain, primals, jax.tree.map(mask, tangents))

    return lambda params, data: guarded(params, data, values)


def _run_program(*args) -> Trace:
    """`scan_program` for `run`: the schedule's step numbers are constants, so they are not outputs
    (each output array costs the call about 1.5 us); `run` attaches them from `_schedule_arrays`."""
    return scan_program(*args)._replace(eval_steps=None, record_steps=None)


_compiled_run = jax.jit(_run_program, static_argnums=(0, 1, 2, 3))


@functools.lru_cache(maxsize=256)
def _schedule_arrays(opts: RunOptions) -> tuple[jax.Array, jax.Array]:
    """`schedule(opts)` as device arrays, made once per program's options (arrays are immutable).

    Made eagerly even when `run` is called under a trace (`jax.jit`, `jax.grad`): a `device_put`
    staged into one trace and cached would leak its tracer into the next one (a second jitted call
    then failed with "Execution supplied 2 arguments but compiled program expected 7")."""
    with jax.ensure_compile_time_eval():
        return tuple(jax.device_put(np.asarray(steps, np.int32)) for steps in schedule(opts))


def use_layout(cost, data, layout: str, batch_size):
    """The cost and data a run computes on for `Execution.layout` (before validation of the rest)."""
    if layout != "gram":
        return cost, data, layout
    gram = getattr(cost, "gram_form", None)
    needs = (
        "layout='gram' is the full-batch least-squares fast path: it needs a cost that offers it "
        "(gdjax.make_cost(gdjax.linear, gdjax.mse), or gdjax.least_squares_problem(X, y).cost) and "
        "data=(X, y)"
    )
    if gram is None:
        raise ValueError(needs)
    if batch_size is not None and batch_size != validation.check_data(data):
        raise ValueError(
            f"layout='gram' computes the full-batch gradient from X^T X; it cannot sample mini-batches "
            f"(batch_size={batch_size!r}): use the default layout"
        )
    form = gram(data)  # None from a model cost that is not least squares (a logistic loss, say)
    if form is None:
        raise ValueError(needs)
    gram_cost, stats = form
    return gram_cost, stats, "as_given"


@functools.lru_cache(maxsize=64)
def _device_tolerances(stopping: Stopping, x64: bool) -> Tolerances:
    """`run`'s tolerances on the default device, once per setting (not six transfers per call); those
    of the criteria that are off are None (the program does not read them; an input costs the call
    about 1 us)."""
    del x64  # part of the cache key: the arrays' dtypes depend on it
    host = tolerances(stopping)
    used = enabled_criteria(RunOptions(0, None, None, 1, 1, 1), host)
    host = host._replace(
        tol=host.tol if used.use_tol else None,
        grad_tol=host.grad_tol if used.use_grad_tol else None,
        patience=host.patience if used.use_patience else None,
        min_delta=host.min_delta if used.use_patience else None,
        divergence_factor=host.divergence_factor if used.use_divergence else None,
        divergence_patience=host.divergence_patience if used.use_divergence else None,
    )
    with jax.ensure_compile_time_eval():  # never cache a tracer (see `_schedule_arrays`)
        return jax.device_put(host)


@functools.lru_cache(maxsize=512)
def _enabled_criteria_cached(opts: RunOptions, tols: Tolerances) -> RunOptions:
    return enabled_criteria(opts, tols)  # `run`'s tolerances are host scalars: hashable


@dataclasses.dataclass(frozen=True)
class Opaque:
    """The spec of a transformation that is not a gdjax `Rule` (`optax.adam(0.1)`): its state is
    built outside the program and passed in, and its `update` selects the program by identity."""

    update: Callable

    def init(self, params0: PyTree, state: Any) -> Any:
        del params0
        return state


def rule_parts(rule, params0: PyTree, dtype=None) -> tuple[Any, Any]:
    """`(spec, values)` of a rule for the compiled loop: a gdjax `Rule` is its hashable spec and its
    hyperparameter values (the state is built inside the program); any other transformation is
    `Opaque` with its state built here."""
    spec = getattr(rule, "spec", None)
    if spec is not None and hasattr(spec, "init") and hasattr(rule, "hyperparams"):
        dtype = dtype or float_dtype(params0)
        values = {k: _host_value(v, dtype) for k, v in rule.hyperparams.items()}
        if hasattr(spec, "check_in_dtype"):  # bfloat16 holds 0.999 as 1.0: outside b2's domain
            spec.check_in_dtype(values, rule.hyperparams, dtype)
        return spec, values
    return Opaque(rule.update), rule.init(params0)


def _host_value(value, dtype):
    """A hyperparameter as a host array: floats in the run's dtype (as the state would store them)."""
    if isinstance(value, jax.Array):
        return value
    arr = np.asarray(value)
    if arr.dtype.kind != "f":
        return arr
    with np.errstate(over="ignore"):  # 1e300 in float32 is inf: `check_in_dtype` says so, by name
        return arr.astype(dtype)


def enabled_criteria(opts: RunOptions, tols: Tolerances) -> RunOptions:
    """Compiles only the stopping checks some run (or lane) uses: a disabled criterion costs nothing.

    Turning a criterion on or off is a new program; changing its value is not.
    """
    return opts._replace(
        use_tol=bool(np.any(np.asarray(tols.tol) > 0)),
        use_grad_tol=bool(np.any(np.asarray(tols.grad_tol) > 0)),
        use_patience=bool(np.any(np.asarray(tols.patience) < np.iinfo(np.int32).max)),
        use_divergence=bool(np.any(np.isfinite(np.asarray(tols.divergence_factor)))),
    )


def use_feature_major(cost, data, opts: RunOptions):
    """Chooses the data layout: feature-major `(d, n)` for `X` when the cost supports it.

    A cost may carry `cost.feature_major`, the same cost for batches `(X.T, y, ...)` (gdjax's
    `make_cost(linear, loss)` does). For `n` examples of `d < n` features, XLA on CPU runs both
    products of a full-batch least-squares step (`X w` and `X^T r`) several times faster on the
    transposed, contiguous-rows layout; the results equal the row-major ones up to summation order.
    Mini-batch runs gather their batches from the row-major layout (a batch is contiguous rows) and,
    for `X` up to `EVAL_COPY_BYTES`, evaluate the full data on a feature-major copy (three times
    faster on CPU than on the rows).
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
    if opts.batch_size is None:
        opts = opts._replace(feature_major=True)
        return alt, _feature_major_data(data, opts), opts
    if _nbytes(data[0]) > EVAL_COPY_BYTES:
        return cost, data, opts
    opts = opts._replace(eval_feature_major=True)
    return cost, _feature_major_data(data, opts), opts


def _feature_major_data(data, opts: RunOptions):
    """The data of a run that `use_feature_major` chose to run feature-major (`opts` say how)."""
    if opts.feature_major:
        return (_transposed(data[0]), *data[1:])
    # Mini-batches: gather rows from X as given, evaluate the full data on a transposed copy. Host
    # rows go to the device once here, for both uses (not once more as an argument of the program).
    X = data[0]
    if not isinstance(X, jax.Array) and _nbytes(X) <= SMALL_HOST_TRANSPOSE_BYTES:
        # Transposed by NumPy before the copy: a device transpose would be one more XLA program to
        # compile on a process's first run (0.05-0.2 s), for a copy NumPy makes in microseconds.
        X, XT = jax.device_put((X, _transposed(X)))
    else:
        X = X if isinstance(X, jax.Array) else jax.device_put(X)
        XT = _transposed(X)
    return (X, *data[1:]), (XT, *data[1:])


EVAL_COPY_BYTES = 2**30  # mini-batch runs keep a feature-major copy of X for evaluations up to this size


def _nbytes(x) -> int:
    return math.prod(np.shape(x)) * np.dtype(x.dtype).itemsize


# Host X up to this size is transposed by NumPy, on the host: faster than the copy and XLA's transpose up
# to about 1 MiB on this project's CPU (67 KiB: 9 us against 29 us; 1 MiB: 0.22 ms against 0.34 ms;
# 4 MiB: 1.7 ms against 1.2 ms), and no transpose program to compile on a process's first run.
SMALL_HOST_TRANSPOSE_BYTES = 2**20
_TRANSPOSED: dict[int, tuple] = {}  # id(X) -> (weakref to X, X.T): device arrays are immutable


_device_transpose = jax.jit(jnp.transpose)


def _transposed(X):
    """`X.T`, contiguous, on the device. A device array's transpose is kept while the array lives, so
    repeated runs on the same data pay it once. Host data (mutable, so never cached) is copied to the
    device and transposed there: NumPy's strided transpose of a tall `(n, d)` array is the slow part
    (0.29 s for 1e6 x 32 float32 on this project's CPU, against 0.07 s for the copy and 0.04 s for
    XLA's transpose)."""
    if not isinstance(X, jax.Array):
        if _nbytes(X) <= SMALL_HOST_TRANSPOSE_BYTES:
            return np.ascontiguousarray(np.asarray(X).T)  # a few us, where a device op costs ~20 us
        return _device_transpose(X)  # host data is mutable: no cache
    if isinstance(X, jax.core.Tracer):
        return _device_transpose(X)  # a tracer lives for one trace: no cache
    hit = _TRANSPOSED.get(id(X))
    if hit is not None and hit[0]() is X:
        return hit[1]
    XT = _device_transpose(X)
    try:
        key = id(X)
        # the dict is bound now: at interpreter exit the module global may already be None
        _TRANSPOSED[key] = (weakref.ref(X, lambda _, key=key, cache=_TRANSPOSED: cache.pop(key, None)), XT)
    except TypeError:
        pass
    return XT


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
    shapes = tuple(
        (x.shape, x.dtype)
        if isinstance(x, jax.Array | np.ndarray)
        else (np.shape(x), np.dtype(getattr(x, "dtype", np.float64)))
        for x in leaves
    )
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


# Names a metric may not take: the columns every trace and summary already has.
RESERVED_NAMES = frozenset(
    {
        "loss", "final_loss", "grad_norm", "batch_loss", "status", "steps", "stop_step", "lane", "rule",
        "seed", "start", "batch_size", "suboptimality", "suboptimality_vs_best", "steps_to_target",
        "eval_step", "params",
    }
)  # fmt: skip
MAX_RECORD_BYTES = 64 * 2**20  # default cap of the recorded iterates (and of the batch losses) of a run


def default_eval_every(num_steps: int, batch_size: int | None, num_examples: int | None) -> int:
    """Every step for full batch (free: the step's own gradient is the evaluation); for mini-batches,
    often enough for curves but rarely enough that evaluation (a pass over all `n` examples) costs at
    most about 10% of the stepping (`10 n / batch_size` steps between evaluations)."""
    if batch_size is None or num_examples is None:
        return 1
    return max(1, min(num_steps, -(-10 * num_examples // batch_size)))


def check_metrics(metrics, params0: PyTree, params_key=None) -> tuple[tuple[str, Callable], ...]:
    """Validates `metrics={"name": fn(params) -> scalar}` on the host (abstractly: nothing runs)."""
    if metrics is None:
        return ()
    params_key = params_key or _StructKey(params0)
    if not isinstance(metrics, Mapping):
        raise ValueError(
            f"metrics must be a dict {{name: fn(params) -> scalar}}, got {type(metrics).__name__}"
        )
    out = []
    for name, fn in metrics.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"metric names must be identifiers (letters, digits, _), got {name!r}")
        if name in RESERVED_NAMES:
            raise ValueError(
                f"metric name {name!r} clashes with a built-in column; rename it (e.g. 'test_{name}')"
            )
        if not callable(fn):
            raise ValueError(f"metrics[{name!r}] must be a function fn(params) -> scalar, got {fn!r}")
        _checked_metric(fn, name, params_key)
        out.append((name, fn))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _checked_metric(fn, name: str, params_key: _StructKey):
    try:
        value = jax.eval_shape(fn, _abstract(params_key.struct))
    except Exception as err:  # the user's metric failed: say which, not where in JAX
        raise ValueError(
            f"metrics[{name!r}] failed on the params: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if getattr(value, "shape", None) != () or not jnp.issubdtype(value.dtype, jnp.number):
        raise ValueError(
            f"metrics[{name!r}] must return a real scalar, got "
            f"{getattr(value, 'shape', value)} {getattr(value, 'dtype', '')}".rstrip()
        )
    if jnp.issubdtype(value.dtype, jnp.complexfloating):
        raise ValueError(f"metrics[{name!r}] must return a real scalar, got dtype {value.dtype}")


@functools.lru_cache(maxsize=512)
def _plan(
    params_key: _StructKey,
    num_metrics: int,
    n: int | None,
    *,
    num_steps: int,
    batch_size: int | None,
    eval_every: int | None,
    record_every: int | None,
    unroll: int,
    max_record_bytes: int,
    record_explicit_limit: int | None,
    extra_args: bool,
    itemsize: int,
) -> RunOptions:
    """The static `RunOptions` of validated arguments: the evaluation and record schedules, sized
    against the memory caps (`itemsize`: bytes of the run's floating dtype). A pure function of
    shapes and settings, planned once per program: a repeated call skips it (a refusal is not
    cached, so it raises again)."""
    default = default_eval_every(num_steps, batch_size, n)
    if eval_every is None:
        eval_every = default if record_every is None else math.gcd(record_every, min(default, record_every))
    eval_every = min(eval_every, num_steps)
    num_evals = -(-num_steps // eval_every) + 1
    if num_evals * (2 + num_metrics) * itemsize > 8 * max_record_bytes:
        raise ValueError(
            f"num_steps={num_steps} with eval_every={eval_every} makes {num_evals} evaluations, whose "
            f"histories would need {num_evals * (2 + num_metrics) * itemsize / 2**20:.0f} MiB: pass "
            f"eval_every >= {-(-num_steps * (2 + num_metrics) * itemsize // (8 * max_record_bytes))}"
        )
    params_bytes = max(1, _struct_bytes(params_key))
    explicit_records = record_every is not None
    if record_every is None:
        # Iterates at evaluations, thinned so that the records fit max_record_bytes.
        rows = max(1, max_record_bytes // params_bytes - 1)
        record_every = eval_every * max(1, -(-(num_evals - 1) // rows))
    if record_every % eval_every:
        raise ValueError(
            f"record_every={record_every} must be a multiple of eval_every={eval_every}: iterates are "
            "recorded at evaluations"
        )
    if record_explicit_limit and explicit_records:
        # An explicit record_every is sized before anything is allocated (a sweep checks its lanes'
        # records together against its memory budget instead).
        intervals = num_evals - 1
        num_records = -(-intervals // (record_every // eval_every)) + 1
        if num_records * params_bytes > record_explicit_limit:
            rows = max(2, record_explicit_limit // params_bytes)
            fit = eval_every * -(-intervals // (rows - 1))
            raise ValueError(
                f"record_every={record_every} records {num_records} iterates of {params_bytes} bytes "
                f"({num_records * params_bytes / 2**20:.0f} MiB), more than "
                f"{record_explicit_limit / 2**20:.0f} MiB: pass record_every >= {fit}"
            )
    batch_losses = num_steps * itemsize <= max_record_bytes
    opts = RunOptions(
        num_steps=num_steps,
        batch_size=batch_size,
        num_examples=n,
        eval_every=eval_every,
        record_every=record_every,
        unroll=unroll,
        extra_args=extra_args,
        batch_losses=batch_losses,
    )
    return opts


def _struct_bytes(params_key: _StructKey) -> int:
    return sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in params_key.struct[1])


def prepare(
    cost,
    rule: optax.GradientTransformation,
    params0: PyTree,
    data: PyTree,
    *,
    num_steps: int,
    batch_size: int | None,
    key,
    eval_every: int | None = None,
    record_every: int | None = None,
    metrics=None,
    unroll: int = 1,
    max_record_bytes: int = MAX_RECORD_BYTES,
    record_explicit_limit: int | None = None,
):
    """Validates the arguments of `run` and returns what the compiled scan takes.

    Shared by `run` and `gdjax.sweep`, so both accept and reject exactly the same inputs. Returns
    `(params0, data, key, opts, metrics)`.
    """
    validation.check_positive_int("num_steps", num_steps)
    validation.check_positive_int("eval_every", eval_every, allow_none=True)
    validation.check_positive_int("record_every", record_every, allow_none=True)
    validation.check_positive_int("unroll", unroll)
    if not isinstance(rule, optax.GradientTransformation):
        hint = ""
        if isinstance(rule, str):
            hint = f": a rule by name takes its values, gdjax.rules.get({rule!r}, learning_rate=...)"
        elif hasattr(rule, "gradient_transformation"):  # optax.MultiSteps
            hint = ": pass its .gradient_transformation()"
        elif callable(rule):
            hint = ": call the factory with its values first, e.g. gdjax.rules.adam(1e-3)"
        raise ValueError(
            f"rule must be an optax.GradientTransformation (e.g. gdjax.rules.sgd(0.1) or "
            f"optax.adam(1e-3)), got {type(rule).__name__}{hint}"
        )
    validation.check_params(params0)
    n = validation.check_data(data)
    if batch_size is not None:
        validation.check_positive_int("batch_size", batch_size)
        if n is None:
            raise ValueError("batch_size needs data with a leading example axis; data is None")
        if batch_size > n:
            raise ValueError(f"batch_size={batch_size} is larger than the data ({n} examples)")
        if n > sampler.MAX_EXAMPLES:
            raise ValueError(f"mini-batch sampling supports up to {sampler.MAX_EXAMPLES} examples, got {n}")
        if batch_size == n:
            batch_size = None  # every batch is the whole data set: full-batch gradient descent
        elif key is None:
            raise ValueError(
                f"batch_size={batch_size} < {n} examples samples batches at random: pass "
                "key=jax.random.key(seed)"
            )
    dtype = float_dtype(params0)
    data = _prepare_data(data, dtype)
    params_key = _StructKey(params0)
    _checked_signature(cost, params_key, _StructKey(data))
    metric_fns = check_metrics(metrics, params0, params_key)
    key = validation.as_key(key)
    extra_args = getattr(getattr(rule, "spec", None), "extra_args", _takes_extra_args(rule))
    opts = _plan(
        params_key,
        len(metric_fns),
        n,
        num_steps=num_steps,
        batch_size=batch_size,
        eval_every=eval_every,
        record_every=record_every,
        unroll=unroll,
        max_record_bytes=max_record_bytes,
        record_explicit_limit=record_explicit_limit,
        extra_args=bool(extra_args),
        itemsize=measure_dtype(params0).itemsize,
    )
    return params0, data, key, opts, metric_fns


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
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    eval_every: int | None = None,
    stopping: Stopping | None = None,
    execution: Execution | None = None,
) -> Trace:
    """Minimises `cost(params, data)` with `rule` for up to `num_steps` steps, as one compiled scan.

    Each step asks `rule` for an update from the gradient on its batch (the whole data for full batch;
    `batch_size` examples sampled without replacement otherwise) and applies it; a run computes exactly
    `num_steps` steps. Measurement is separate from stepping: an *evaluation* computes the full-data
    loss, the full-data gradient norm and `metrics` at steps `0, eval_every, 2 eval_every, ...` and
    after the last step, inside the same compiled program. Stopping and divergence are decided inside
    the loop; a stopped run is frozen for the remaining steps, so runs of different lengths vmap
    together.

    Evaluation schedule (`eval_every`): default every step for full batch (free: the step's own
    `value_and_grad` is the evaluation), and `ceil(10 n / batch_size)` steps for mini-batches, so
    that evaluation costs at most about 10% of the stepping. `eval_every=1` gives the tutorials' loss
    at every step. The loss of every step's batch is recorded too (`batch_loss_history`, free).

    Stopping (`stopping=gdjax.Stopping(...)`; each optional, the first to fire wins), and when each is
    checked:
      - `tol` (every step): the tutorials' rule, `||params_t - params_{t-1}|| < tol` (global 2-norm).
      - `grad_tol` (at evaluations): `||grad f(params_t)|| < grad_tol` on the full-data gradient.
      - `patience` (at evaluations): `patience` evaluations in a row without the full-data loss
        improving on its best by `min_delta`.
    Divergence is a status, not an exception:
      - `NONFINITE` (every step and at evaluations): a non-finite loss, gradient norm or update; the
        run is frozen at the last finite iterate.
      - `DIVERGED` (at evaluations): the full-data loss stayed above
        `f(params_0) + (divergence_factor - 1) |f(params_0)|` (100x the initial loss by default) and
        did not fall, for `divergence_patience` (50) evaluations in a row, or it is still above that
        threshold at the last evaluation. A transient spike that turns around (Adagrad or LARS at
        Optax's own settings on Rosenbrock climb to 100x and 8e6x before converging) resets the count;
        runaway growth does not. `divergence_factor=None` disables it.

    Args:
      cost: pure `cost(params, data) -> scalar`.
      rule: any `optax.GradientTransformation`. Rules from `gdjax.rules` keep their hyperparameters
        in their state, so `rules.sgd(0.01)` then `rules.sgd(0.02)` reuses one compilation; an
        Optax optimizer built anew (`optax.adam(lr)`) is a new program for each value. Rules that take
        extra arguments (`optax.lbfgs()`, `optax.polyak_sgd`) get `value`, `grad` and `value_fn`.
      params0: starting parameters, any pytree of floating (or complex) arrays; the run keeps their
        dtype and the floating data is cast to it.
      data: the pytree passed to `cost` (e.g. `(X, y)`), every leaf with a leading example axis;
        `None` for costs that ignore it.
      num_steps: number of update steps.
      batch_size: `None` for full batch; `1` for stochastic, `k` for mini-batch gradient descent,
        sampled without replacement epoch by epoch from `key` (`gdjax.sampler`).
      key: PRNG key (or integer seed) for sampling; required when `batch_size` < number of examples.
      tol: see Stopping (the same as `stopping=Stopping(tol=...)`).
      metrics: `{"name": fn(params) -> scalar}`, evaluated at every evaluation inside the compiled
        program (a held-out loss or accuracy) and returned as `trace.metrics["name"]`. Define each
        function once: a new function object is a new program.
      eval_every: steps between evaluations (see above).
      stopping: a `gdjax.Stopping` (`grad_tol`, `patience`, `min_delta`, `divergence_factor`,
        `divergence_patience`); see Stopping and Divergence above.
      execution: a `gdjax.Execution`: `record_every` (steps between recorded iterates, a multiple of
        `eval_every`; default at every evaluation, thinned so that the records stay under 64 MiB),
        `unroll` and `layout` (`"feature_major"`, the default, lets a cost that offers it see `X`
        stored transposed for full-batch runs; `"as_given"` passes the data untouched; `"gram"`
        runs full-batch least squares on `X^T X`). None of these changes the numbers beyond
        floating-point summation order. `checkpoint_every=k` bounds the memory of reverse mode
        through the run (`jax.grad` of a trace) to O(num_steps / k + k) states.

    A run is a JAX function: it works inside `jax.jit`, `vmap`, `grad`, `jvp` and `hessian` with
    respect to rule and cost hyperparameters, `params0` and the data. A hyperparameter value that
    arrives traced cannot be checked on the host; it is checked inside the program, and a value
    outside its domain (a negative learning rate) ends the run at once with status `invalid`
    (`Trace.invalid` names it).

    Returns:
      A `Trace` (see `gdjax.Trace`): `loss_history`, `grad_norm_history` and `metrics` at
      `eval_steps`; `params_history` at `record_steps`; `batch_loss_history` per step.

    Example:
      >>> import gdjax
      >>> X, y = gdjax.data.line()  # y = 20 x + 5
      >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
      >>> trace = gdjax.run(cost, gdjax.rules.sgd(0.05), gdjax.init_linear(1), (X, y), num_steps=2000)
      >>> round(float(trace.params["w"][0]), 3), round(float(trace.params["b"]), 3)
      (20.0, 5.0)
    """
    compile_cache.from_environment_once()
    stopping = stopping_of(stopping, tol)
    execution = execution_of(execution)
    cost, cost_values = costs.split(cost)
    call_key, leaves = _call_key(
        cost, rule, params0, data, num_steps, batch_size, key, metrics, eval_every, stopping, execution
    )
    hit = None if call_key is None else _PLANS.get(call_key)
    if hit is not None and all(map(_finite_leaf, leaves)):
        trace = _run_planned(hit, rule, params0, data, key, cost_values, stopping)
        if trace is not None:
            return trace
    tols = tolerances(stopping)
    cost, data, layout = use_layout(cost, data, execution.layout, batch_size)
    params0, data, key, opts, metric_fns = prepare(
        cost,
        rule,
        params0,
        data,
        num_steps=num_steps,
        batch_size=batch_size,
        key=key,
        eval_every=eval_every,
        record_every=execution.record_every,
        metrics=metrics,
        unroll=execution.unroll,
        record_explicit_limit=8 * MAX_RECORD_BYTES,
    )
    if layout == "feature_major":
        cost, data, opts = use_feature_major(cost, data, opts)
    opts = _enabled_criteria_cached(opts, tols)
    tols = _device_tolerances(stopping, jax.config.jax_enable_x64)
    dtype = float_dtype(params0)
    spec, values = rule_parts(rule, params0, dtype)
    cost_values = {k: _host_value(v, dtype) for k, v in cost_values.items()}
    if any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves((values, cost_values))):
        opts = opts._replace(check_domain=True)
    if any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves((values, cost_values, params0, data))):
        opts = opts._replace(guard_steps=True)
    if execution.checkpoint_every is not None:
        if execution.checkpoint_every < opts.eval_every and opts.num_steps > opts.eval_every:
            # Blocks are whole evaluation intervals: rounded down to none, nothing would be kept.
            raise ValueError(
                f"checkpoint_every={execution.checkpoint_every} is less than eval_every={opts.eval_every} "
                "(the default for mini-batches is ceil(10 n / batch_size)): the carry is kept at whole "
                "evaluation intervals, so none would be; give eval_every <= checkpoint_every"
            )
        opts = opts._replace(checkpoint_every=execution.checkpoint_every)
    _, step_progress, close_bars = gdjax_progress.callbacks(execution)
    if step_progress is not None:
        every = gdjax_progress.intervals_between_reports(execution.progress_every, opts.eval_every, num_steps)
        opts = opts._replace(progress_intervals=every)
    try:
        with gdjax_progress.listening(step_progress):
            hyperparams = (values, cost_values)
            try:
                trace = _compiled_run(cost, spec, metric_fns, opts, params0, hyperparams, data, key, tols)
            except TypeError as err:
                if "No constant handler" not in str(err) or "Tracer" not in str(err):
                    raise
                raise ValueError(
                    "the cost closes over a value that is being differentiated (a JAX tracer): pass "
                    "it as a cost hyperparameter instead, gdjax.bind(cost, name=value) with `name` a "
                    "keyword parameter of the cost, or as part of params0 or data"
                ) from None
            if step_progress is not None:
                trace = jax.block_until_ready(trace)  # the reports arrive while the bar is listening
    finally:
        close_bars()
    eval_steps, record_steps = _schedule_arrays(opts)
    trace = trace._replace(eval_steps=eval_steps, record_steps=record_steps)
    # Under jax.jit, vmap or grad the trace is made of tracers: a string field would be an invalid
    # output of the transformed function, and no value can be looked at.
    traced = isinstance(trace.loss_history, jax.core.Tracer)
    if getattr(spec, "eval_params", None) is not None and not traced:
        trace = trace._replace(evaluated_at=getattr(spec.eval_params, "__name__", "eval_params").lstrip("_"))
    if isinstance(spec, Opaque) and not traced:
        # gdjax's rules refuse values that cannot move (learning_rate <= 0); an Optax transformation
        # built by hand (optax.sgd(0.0)) is checked after the fact, at the price of one small sync.
        _warn_if_stuck(trace, params0)
    elif call_key is not None and not (opts.check_domain or opts.guard_steps or step_progress is not None):
        _PLANS[call_key] = _Planned(cost, spec, metric_fns, opts, dtype, trace.evaluated_at)
        if len(_PLANS) > _PLANS_MAX:
            _PLANS.pop(next(iter(_PLANS)))
    return trace


class _Planned(NamedTuple):
    """What a `run` call with these static arguments compiles and passes, once validated."""

    cost: Callable  # the cost the program runs (its feature-major form where the data allow)
    spec: Any
    metrics: tuple
    opts: RunOptions
    dtype: np.dtype
    evaluated_at: str | None


_PLANS: dict = {}  # `_call_key` -> `_Planned`: a repeated call skips planning (issue 21, item 5)
_PLANS_MAX = 256


def _leaf_key(x):
    """`(type, shape, dtype)` of an array leaf; None for anything else (a tracer, a Python number)."""
    if type(x) is np.ndarray or (isinstance(x, jax.Array) and not isinstance(x, jax.core.Tracer)):
        return type(x), x.shape, x.dtype
    return None


def _call_key(
    cost, rule, params0, data, num_steps, batch_size, key, metrics, eval_every, stopping, execution
):
    """What a `run` call's plan depends on (every argument's structure, shapes, dtypes and types,
    and the static settings), or None where the call is planned from scratch each time (a rule
    that is not a gdjax `Rule`, the `gram` layout, tracers, leaves that are not arrays, progress)."""
    spec = getattr(rule, "spec", None)
    if (
        spec is None
        or not hasattr(spec, "init")
        or not hasattr(rule, "hyperparams")
        or execution.layout == "gram"
        or execution.progress is True
        or execution.step_progress is not None
        or not (key is None or type(key) is int)
    ):
        return None, ()
    p_leaves, p_def = jax.tree.flatten(params0)
    d_leaves, d_def = jax.tree.flatten(data)
    leaves = (*p_leaves, *d_leaves)
    leaf_keys = tuple(_leaf_key(x) for x in leaves)
    if not p_leaves or None in leaf_keys:
        return None, ()
    try:
        metric_key = None if metrics is None else tuple(metrics.items())
        call_key = (
            cost, spec, p_def, d_def, leaf_keys, num_steps, batch_size, key is None, metric_key,
            eval_every, stopping, execution, jax.config.jax_enable_x64,
        )  # fmt: skip
        hash(call_key)
    except (AttributeError, TypeError):  # metrics that are not a dict, an unhashable setting
        return None, ()
    return call_key, leaves


def _run_planned(planned: _Planned, rule, params0, data, key, cost_values, stopping) -> Trace | None:
    """`run` for a call whose plan is known and whose params and data are finite (`_finite_leaf`):
    the program, with the hyperparameter values. None sends the call to the full path, whose checks
    say what is wrong (a traced hyperparameter)."""
    values = {k: _host_value(v, planned.dtype) for k, v in rule.hyperparams.items()}
    if hasattr(planned.spec, "check_in_dtype"):
        planned.spec.check_in_dtype(values, rule.hyperparams, planned.dtype)
    cost_values = {k: _host_value(v, planned.dtype) for k, v in cost_values.items()}
    for v in (*values.values(), *cost_values.values()):
        if isinstance(v, jax.core.Tracer):
            return None
    opts = planned.opts
    data = _prepare_data(data, planned.dtype)
    if opts.feature_major or opts.eval_feature_major:
        data = _feature_major_data(data, opts)
    # Small host arrays go in as device copies kept by content: a host argument costs the call a
    # transfer (about 5 us each on CPU, more than a tiny run's steps); the values are the same.
    params0, values, cost_values, data = jax.tree.map(_small_on_device, (params0, values, cost_values, data))
    trace = _compiled_run(
        planned.cost,
        planned.spec,
        planned.metrics,
        opts,
        params0,
        (values, cost_values),
        data,
        validation.as_key(key),
        _device_tolerances(stopping, jax.config.jax_enable_x64),
    )
    eval_steps, record_steps = _schedule_arrays(opts)
    evaluated_at = None if isinstance(trace.loss_history, jax.core.Tracer) else planned.evaluated_at
    return trace._replace(eval_steps=eval_steps, record_steps=record_steps, evaluated_at=evaluated_at)


SMALL_ARRAY_BYTES = 256  # host arrays up to this size are passed as device copies kept by content


def _small_on_device(x):
    if type(x) is np.ndarray and x.nbytes <= SMALL_ARRAY_BYTES:
        return _device_copy(x.tobytes(), x.dtype, x.shape, jax.config.jax_default_device)
    return x


@functools.lru_cache(maxsize=1024)
def _device_copy(content: bytes, dtype: np.dtype, shape: tuple, device) -> jax.Array:
    del device  # part of the key: a copy lives where the default device was when it was made
    with jax.ensure_compile_time_eval():  # never cache a tracer (see `_schedule_arrays`)
        return jax.device_put(np.frombuffer(content, dtype).reshape(shape))


def _finite_leaf(x) -> bool:
    """True when a params or data leaf is known to be finite: host arrays are scanned (small ones
    once per content), device arrays must have been checked before (`validation`). False leaves
    the call to the full checks, which say what is wrong."""
    if type(x) is np.ndarray:
        kind = x.dtype.kind
        if kind in "biu":
            return True
        if kind not in "fc":  # bfloat16 ("V") and the rest
            return False
        if x.nbytes <= SMALL_ARRAY_BYTES:
            return _finite_content(x.tobytes(), x.dtype)
        return bool(np.isfinite(x).all())
    return validation._known_finite(x)


@functools.lru_cache(maxsize=1024)
def _finite_content(content: bytes, dtype: np.dtype) -> bool:
    return bool(np.isfinite(np.frombuffer(content, dtype)).all())


class RuleCannotMoveWarning(UserWarning):
    """The rule left the parameters exactly where they started although the gradient was nonzero."""


@jax.jit
def _stuck(params0, params, loss0, grad_norm0, status):
    leaves = zip(jax.tree.leaves(params0), jax.tree.leaves(params), strict=True)
    same = jnp.all(jnp.stack([jnp.all(a == b) for a, b in leaves]))
    # A gradient above round-off (relative to the loss) that moved nothing.
    noticeable = grad_norm0 > jnp.sqrt(jnp.finfo(grad_norm0.dtype).eps) * (1 + jnp.abs(loss0))
    return same & noticeable & (status == Status.MAX_STEPS)


def _warn_if_stuck(trace: Trace, params0) -> None:
    if bool(_stuck(params0, trace.params, trace.loss_history[0], trace.grad_norm_history[0], trace.status)):
        warnings.warn(
            f"the rule did not move the parameters in {int(trace.steps)} steps although the gradient "
            f"norm at the start is {float(trace.grad_norm_history[0]):.3g}: is its learning rate 0 (or "
            "its schedule at 0)? The run's status is max_steps, not converged",
            RuleCannotMoveWarning,
            stacklevel=3,
        )


__all__ = [
    "DIVERGENCE_FACTOR",
    "DIVERGENCE_PATIENCE",
    "RESERVED_NAMES",
    "RuleCannotMoveWarning",
    "RunOptions",
    "Tolerances",
    "float_dtype",
    "make_tolerances",
    "prepare",
    "run",
    "scan_program",
    "schedule_sizes",
]
