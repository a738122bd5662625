"""Times gdjax against the plain alternatives, in one process, and prints ratios.

Run:  python experiments/bench.py            (full sizes, a few minutes on 2 CPU cores)
      python experiments/bench.py --quick    (small sizes, a smoke test)
      python experiments/bench.py --only-first-call   (the time-to-first-result table alone)
      python experiments/bench.py --only-default-study   (that table's default-study row alone: cold,
                                                  warm, and warm with the report page; best of 3)
      python experiments/bench.py --only-small   (tiny problems: per step, kernels per step, a plain
                                                  call, 4096 learning rates on 7 points)

Every number is a median over repeats after a warm-up call; compile time is reported apart from run
time. Baselines, all timed here in the same process:
  - the tutorials' NumPy loop (one NumPy step per Python iteration),
  - a Python loop calling a jitted Optax step,
  - the C limit probes in ../shared/bench (tight float32 loops, built with gcc -O3 -march=native),
    when that folder is beside the checkout,
  - for sweeps: a Python loop of `gdjax.run` calls, an Optax optimizer rebuilt (so recompiled) per
    value, and `optax.inject_hyperparams` under `jax.vmap`.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import importlib
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gdjax
from gdjax import rules
from gdjax.options import Execution

F32 = np.float32
COST = gdjax.make_cost(gdjax.linear, gdjax.mse)
BENCH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compiles if needed)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def first_call_time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def load_c_probes():
    if not os.path.exists(os.path.join(BENCH_DIR, "ref.py")):
        return None, None
    sys.path.insert(0, BENCH_DIR)
    import ref  # noqa: PLC0415  (the yardstick lives outside the package on purpose)

    try:
        return ref, ref.load()
    except Exception as err:  # no compiler: report without the C yardstick
        print(f"  (C probes unavailable: {err})")
        return None, None


# ------------------------------------------------------------------------------ baselines
def numpy_tutorial_loop(x, y, lr, num_steps):
    """The tutorials' loop on one feature: predictions, residuals, partial derivatives, update."""
    w, b, n = F32(0), F32(0), len(x)
    lr = F32(lr)
    history = np.empty(num_steps, F32)
    for t in range(num_steps):
        r = w * x + b - y
        history[t] = np.mean(r * r)
        dw = F32(2) / n * np.sum(r * x)
        db = F32(2) / n * np.sum(r)
        w, b = w - lr * dw, b - lr * db
    return w, b, history


def python_loop_over_jitted_optax_step(opt, params, data, num_steps):
    @jax.jit
    def step(params, state):
        loss, grad = jax.value_and_grad(COST)(params, data)
        updates, state = opt.update(grad, state, params)
        return optax.apply_updates(params, updates), state, loss

    def go():
        p, s = params, opt.init(params)
        losses = []
        for _ in range(num_steps):
            p, s, loss = step(p, s)
            losses.append(loss)
        return jax.block_until_ready((p, losses[-1]))

    return go


# ------------------------------------------------------------------------------ single runs
def bench_small(num_steps: int, repeats: int, results: dict):
    X, y = gdjax.data.house_prices()
    X, y = X.astype(F32), y.astype(F32)
    lr = 0.01
    p0 = gdjax.init_linear(1, jnp.float32)

    def gd():
        # A new rule object every call, as a user would write it: must not recompile.
        return jax.block_until_ready(gdjax.run(COST, rules.sgd(lr), p0, (X, y), num_steps=num_steps))

    compile_s = first_call_time(gd)
    run_s = median_time(gd, repeats)
    numpy_s = median_time(lambda: numpy_tutorial_loop(X[:, 0], y, lr, num_steps), max(1, repeats // 10))
    jitted_loop = python_loop_over_jitted_optax_step(
        optax.sgd(lr), p0, (jnp.asarray(X), jnp.asarray(y)), num_steps
    )
    jit_loop_s = median_time(jitted_loop, max(1, repeats // 10))
    trace = gd()
    w_np, b_np, _ = numpy_tutorial_loop(X[:, 0], y, lr, num_steps)
    results["a_house_10k"] = dict(
        num_steps=num_steps,
        gdjax_first_call_s=compile_s,
        gdjax_s=run_s,
        numpy_loop_s=numpy_s,
        jitted_step_loop_s=jit_loop_s,
        speedup_vs_numpy=numpy_s / run_s,
        speedup_vs_jitted_step_loop=jit_loop_s / run_s,
        max_abs_diff_w_vs_numpy=float(abs(trace.params["w"][0] - w_np)),
    )
    r = results["a_house_10k"]
    print(f"(a) house prices, {num_steps} steps, float32, whole gdjax.run call")
    print(
        f"    gdjax.run          {r['gdjax_s'] * 1e3:9.3f} ms   (first call incl. compile {compile_s:.2f} s)"
    )
    print(f"    NumPy loop         {numpy_s * 1e3:9.3f} ms   -> gdjax {r['speedup_vs_numpy']:.0f}x faster")
    print(
        f"    loop of jit steps  {jit_loop_s * 1e3:9.3f} ms   "
        f"-> gdjax {r['speedup_vs_jitted_step_loop']:.0f}x faster"
    )


def bench_per_step_small(num_steps: int, repeats: int, results: dict, ref, lib):
    X, y = gdjax.data.house_prices()
    X, y = X.astype(F32), y.astype(F32)
    p0 = gdjax.init_linear(1, jnp.float32)
    data = (jnp.asarray(X), jnp.asarray(y))
    rule = rules.sgd(0.01)
    gd = lambda: jax.block_until_ready(gdjax.run(COST, rule, p0, data, num_steps=num_steps))
    run_s = median_time(gd, repeats)
    out = dict(num_steps=num_steps, gdjax_ns_per_step=run_s / num_steps * 1e9)
    print(f"(b) house prices, {num_steps} steps: gdjax {out['gdjax_ns_per_step']:.1f} ns/step", end="")
    if lib is not None:
        c_s = median_time(lambda: ref.tiny(lib, X[:, 0], y, 0.01, num_steps), repeats)
        out.update(c_ns_per_step=c_s / num_steps * 1e9, ratio_vs_c=run_s / c_s)
        print(f", C loop {out['c_ns_per_step']:.1f} ns/step -> ratio {out['ratio_vs_c']:.2f}x", end="")
    print()
    results["b_house_per_step"] = out


def make_big(n: int, d: int):
    s = gdjax.data.synthetic(0, n, d, noise=0.1)
    return s.X.astype(F32), s.y.astype(F32)


def bench_big_full_batch(n: int, d: int, num_steps: int, repeats: int, results: dict, ref, lib):
    X, y = make_big(n, d)
    lr = float(0.5 * gdjax.reference.curvature(X[:2000]).max_stable_lr)
    p0 = gdjax.init_linear(d, jnp.float32)
    data = (jnp.asarray(X), jnp.asarray(y))
    out = dict(n=n, d=d, num_steps=num_steps)
    for layout in ("feature_major", "as_given"):
        gd = lambda layout=layout: jax.block_until_ready(
            gdjax.run(COST, rules.sgd(lr), p0, data, num_steps=num_steps, execution=Execution(layout=layout))
        )
        out[f"gdjax_{layout}_us_per_step"] = median_time(gd, repeats) / num_steps * 1e6
    line = (
        f"(c) n={n}, d={d}, full batch: gdjax {out['gdjax_feature_major_us_per_step']:.0f} us/step "
        f"(row-major as given: {out['gdjax_as_given_us_per_step']:.0f})"
    )
    if lib is not None and d in (20, 32):
        c_s = median_time(lambda: ref.fused(lib, X, y, lr, num_steps), repeats)
        out.update(c_us_per_step=c_s / num_steps * 1e6)
        out["ratio_vs_c"] = out["gdjax_feature_major_us_per_step"] / out["c_us_per_step"]
        line += f", fused C+OpenMP {out['c_us_per_step']:.0f} us/step -> ratio {out['ratio_vs_c']:.2f}x"
    print(line)
    results["c_big_full_batch"] = out


# ------------------------------------------------------------------------------------ sweeps
def bench_sweep(n: int, d: int, K: int, num_steps: int, results: dict, ref, lib, rebuild_sample: int):
    from gdjax.sweep import sweep

    X, y = make_big(n, d)
    bound = gdjax.reference.curvature(X[:5000]).max_stable_lr
    lrs = np.geomspace(1e-3 * bound, 0.9 * bound, K).astype(F32)
    p0 = gdjax.init_linear(d, jnp.float32)
    data = (jnp.asarray(X), jnp.asarray(y))
    out = dict(n=n, d=d, K=K, num_steps=num_steps)

    def do_sweep(gram=False):
        execution = Execution(layout="gram") if gram else None
        res = sweep(
            COST, "sgd", p0, data, grid={"learning_rate": lrs}, num_steps=num_steps, execution=execution
        )
        jax.block_until_ready(res.trace.loss_history)
        return res

    out["sweep_first_call_s"] = first_call_time(do_sweep)
    out["sweep_s"] = median_time(do_sweep, 2)
    out["sweep_lane_steps_per_s"] = K * num_steps / out["sweep_s"]
    out["gram_sweep_first_call_s"] = first_call_time(lambda: do_sweep(gram=True))
    out["gram_sweep_s"] = median_time(lambda: do_sweep(gram=True), 2)

    # (i) a Python loop of K gdjax.run calls (compiled once, reused).
    def loop_of_runs():
        for lr in lrs:
            jax.block_until_ready(gdjax.run(COST, rules.sgd(float(lr)), p0, data, num_steps=num_steps).params)

    out["loop_of_runs_s"] = median_time(loop_of_runs, 1)

    # (ii) an Optax optimizer rebuilt per value: every value is a new program. Timed on a sample of
    # values and scaled to K (the per-value cost is compile + run, the same for every value).
    def rebuild(lr):
        opt = optax.sgd(float(lr))

        @jax.jit
        def run_one(p):
            def body(carry, _):
                p, s = carry
                loss, g = jax.value_and_grad(COST)(p, data)
                u, s = opt.update(g, s, p)
                return (optax.apply_updates(p, u), s), loss

            return jax.lax.scan(body, (p, opt.init(p)), None, length=num_steps)

        return jax.block_until_ready(run_one(p0))

    t = time.perf_counter()
    for lr in lrs[:rebuild_sample]:
        rebuild(lr)
    out["rebuild_per_value_s"] = (time.perf_counter() - t) / rebuild_sample
    out["rebuild_all_s_estimated"] = out["rebuild_per_value_s"] * K

    # (iii) optax.inject_hyperparams under vmap.
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)

    @jax.jit
    def injected(lrs):
        def one(lr):
            s = opt.init(p0)
            s.hyperparams["learning_rate"] = lr

            def body(carry, _):
                p, s = carry
                loss, g = jax.value_and_grad(COST)(p, data)
                u, s = opt.update(g, s, p)
                return (optax.apply_updates(p, u), s), loss

            return jax.lax.scan(body, (p0, s), None, length=num_steps)

        return jax.vmap(one)(lrs)

    lrs_j = jnp.asarray(lrs)
    out["inject_first_call_s"] = first_call_time(lambda: jax.block_until_ready(injected(lrs_j)))
    out["inject_s"] = median_time(lambda: jax.block_until_ready(injected(lrs_j)), 2)

    # Memory bound of the vmapped step: the (n, K) residual matrix is written once and read once per
    # step (X itself stays in cache-friendly reuse), at the bandwidth this machine streams memory.
    residual_bytes = 2 * n * K * 4
    if lib is not None:
        big = np.ones(64 * 1024 * 1024 // 4, F32)
        lib.stream_read.restype = ctypes.c_float
        ptr = big.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        nthreads = ctypes.c_int(os.cpu_count() or 1)
        s = median_time(lambda: lib.stream_read(ptr, ctypes.c_long(big.size), nthreads), 5)
        bandwidth = big.nbytes / s
        out["stream_read_GBps"] = bandwidth / 1e9
        out["memory_bound_s"] = residual_bytes * num_steps / bandwidth
        out["ratio_vs_memory_bound"] = out["sweep_s"] / out["memory_bound_s"]
    out["speedup_vs_loop_of_runs"] = out["loop_of_runs_s"] / out["sweep_s"]
    out["speedup_vs_rebuild"] = out["rebuild_all_s_estimated"] / out["sweep_s"]
    out["speedup_vs_inject"] = out["inject_s"] / out["sweep_s"]
    out["gram_speedup_vs_sweep"] = out["sweep_s"] / out["gram_sweep_s"]
    results["sweep"] = out
    print(f"sweep: K={K} learning rates, n={n}, d={d}, {num_steps} full-batch steps, float32")
    print(
        f"    gdjax.sweep        {out['sweep_s']:8.3f} s  (first call {out['sweep_first_call_s']:.2f} s; "
        f"{out['sweep_lane_steps_per_s']:.3g} lane-steps/s)"
    )
    print(
        f"    loop of K runs     {out['loop_of_runs_s']:8.3f} s  "
        f"-> sweep {out['speedup_vs_loop_of_runs']:.1f}x faster"
    )
    print(
        f"    rebuild per value  {out['rebuild_all_s_estimated']:8.3f} s  (est. from {rebuild_sample} values)"
        f" -> sweep {out['speedup_vs_rebuild']:.1f}x faster"
    )
    print(
        f"    inject_hyperparams {out['inject_s']:8.3f} s  (first call {out['inject_first_call_s']:.2f} s)"
        f" -> sweep {out['speedup_vs_inject']:.1f}x faster"
    )
    if "memory_bound_s" in out:
        print(
            f"    memory bound       {out['memory_bound_s']:8.3f} s  "
            f"({out['stream_read_GBps']:.1f} GB/s read)"
            f" -> sweep at {out['ratio_vs_memory_bound']:.2f}x the bound"
        )
    print(
        f"    gram fast path     {out['gram_sweep_s']:8.3f} s  "
        f"(first call {out['gram_sweep_first_call_s']:.2f} s)"
        f" -> {out['gram_speedup_vs_sweep']:.0f}x faster than the plain sweep"
    )


# ------------------------------------------------------------------------------ engine cost model
def _per_step(fn, num_steps: int, repeats: int) -> float:
    return median_time(fn, repeats) / num_steps


def bare_minibatch_scan(n: int, d: int, bs: int, num_steps: int, lr: float):
    """The bare program a mini-batch run is judged against: a permutation (a sort) per epoch, then a
    scan over its batches, SGD on least squares, nothing else."""
    per_epoch = n // bs
    num_epochs = -(-num_steps // per_epoch)

    @jax.jit
    def go(w, b, X, y, key):
        def epoch(c, e):
            perm = jax.random.permutation(jax.random.fold_in(key, e), n)[: per_epoch * bs]

            def body(c, idx):
                w, b = c
                Xb, yb = X[idx], y[idx]
                r = Xb @ w + b - yb
                return (w - lr * 2 * (r @ Xb) / bs, b - lr * 2 * jnp.mean(r)), jnp.mean(r * r)

            return jax.lax.scan(body, c, perm.reshape(per_epoch, bs))

        return jax.lax.scan(epoch, (w, b), jnp.arange(num_epochs))

    return go


def bench_engine(results: dict, quick: bool):
    """The rows of the engine issue, side by side in one process (see README)."""
    out: dict = {}
    print("engine: each ratio against the bare program (a hand-written jit of lax.scan), same process")
    # Mini-batch SGD: O(batch) per step, evaluation on its default schedule.
    for label, n, d, bs in (("minibatch_1e5", 100_000, 20, 32), ("minibatch_1e6", 1_000_000, 32, 1024)):
        if quick:
            n //= 50
        X, y = make_big(n, d)
        lr = 1e-3
        num_steps = 2 * (n // bs)  # two epochs
        p0 = gdjax.init_linear(d, jnp.float32)
        data = (jnp.asarray(X), jnp.asarray(y))
        run = lambda num_steps=num_steps, data=data, p0=p0, bs=bs, lr=lr: jax.block_until_ready(  # noqa: E731
            gdjax.run(COST, rules.sgd(lr), p0, data, num_steps=num_steps, batch_size=bs, key=0)
        )
        bare = bare_minibatch_scan(n, d, bs, num_steps, lr)
        bare_call = lambda bare=bare, p0=p0, data=data: jax.block_until_ready(  # noqa: E731
            bare(p0["w"], p0["b"], *data, jax.random.key(0))
        )
        row = dict(n=n, d=d, batch_size=bs, num_steps=num_steps)
        row["gdjax_us_per_step"] = _per_step(run, num_steps, 3) * 1e6
        row["bare_us_per_step"] = _per_step(bare_call, num_steps, 3) * 1e6
        row["ratio_vs_bare"] = row["gdjax_us_per_step"] / row["bare_us_per_step"]
        out[label] = row
        print(
            f"    mini-batch n={n} d={d} batch {bs}, 2 epochs: gdjax {row['gdjax_us_per_step']:.1f} us/step, "
            f"bare scan + sorted permutation per epoch {row['bare_us_per_step']:.1f} us/step "
            f"-> {row['ratio_vs_bare']:.2f}x"
        )
        if label == "minibatch_1e6":
            # 30 steps: their cost beyond the run's two evaluations, against one epoch of steps.
            t30 = median_time(lambda run=run: run(num_steps=30), 3)
            t1 = median_time(lambda run=run: run(num_steps=1), 3)
            epoch = row["gdjax_us_per_step"] * 1e-6 * (n // bs)
            row.update(
                t30_s=t30,
                t1_s=t1,
                whole_30_over_epoch=t30 / epoch,
                marginal_30_over_epoch=(t30 - t1) / epoch,
            )
            print(
                f"    30 steps on n={n}: whole call {t30 * 1e3:.1f} ms = "
                f"{row['whole_30_over_epoch']:.2f} of an epoch's steps ({epoch * 1e3:.0f} ms), "
                f"two full-data evaluations included; a 1-step call {t1 * 1e3:.1f} ms"
            )

    # Large full batch.
    n, d, T = (20_000, 32, 10) if quick else (1_000_000, 32, 20)
    X, y = make_big(n, d)
    XT = np.ascontiguousarray(X.T)
    lr = 0.01
    p0 = gdjax.init_linear(d, jnp.float32)
    data = (jnp.asarray(X), jnp.asarray(y))

    @jax.jit
    def bare_big(w, b, XT, y):
        def body(c, _):
            w, b = c
            r = w @ XT + b - y
            return (w - lr * 2 * (XT @ r) / n, b - lr * 2 * jnp.mean(r)), jnp.mean(r * r)

        return jax.lax.scan(body, (w, b), None, length=T)

    def numpy_loop():
        w, b = np.zeros(d, F32), F32(0)
        for _ in range(T):
            r = w @ XT + b - y
            w, b = w - F32(lr * 2 / n) * (XT @ r), b - F32(lr * 2) * r.mean()
        return w

    big = dict(n=n, d=d)
    big["gdjax_ms"] = (
        _per_step(lambda: jax.block_until_ready(gdjax.run(COST, rules.sgd(lr), p0, data, num_steps=T)), T, 3)
        * 1e3
    )
    dXT, dy = jnp.asarray(XT), jnp.asarray(y)
    big["bare_ms"] = _per_step(lambda: jax.block_until_ready(bare_big(p0["w"], p0["b"], dXT, dy)), T, 3) * 1e3
    big["numpy_ms"] = _per_step(numpy_loop, T, 2) * 1e3
    big.update(
        ratio_vs_bare=big["gdjax_ms"] / big["bare_ms"], ratio_vs_numpy=big["gdjax_ms"] / big["numpy_ms"]
    )
    # The same call with the data given as NumPy arrays (copied to the device and transposed there on
    # every call: a host array may change between calls), against device data (transposed once).
    host_call = lambda: jax.block_until_ready(gdjax.run(COST, rules.sgd(lr), p0, (X, y), num_steps=T))  # noqa: E731
    device_call = lambda: jax.block_until_ready(gdjax.run(COST, rules.sgd(lr), p0, data, num_steps=T))  # noqa: E731
    big["numpy_data_call_ms"] = median_time(host_call, 3) * 1e3
    big["device_data_call_ms"] = median_time(device_call, 3) * 1e3
    out["full_batch_large"] = big
    print(
        f"    full batch n={n} d={d}: gdjax {big['gdjax_ms']:.2f} ms/step (data given row-major, device), "
        f"bare feature-major scan {big['bare_ms']:.2f} -> {big['ratio_vs_bare']:.2f}x, "
        f"NumPy loop on X (d, n) {big['numpy_ms']:.2f} -> {big['ratio_vs_numpy']:.2f}x"
    )
    print(
        f"    the whole {T}-step call: data as NumPy arrays {big['numpy_data_call_ms']:.0f} ms, "
        f"as device arrays {big['device_data_call_ms']:.0f} ms (the rest: copy, transpose, finite check)"
    )
    results["engine"] = out


def bare_sweep_programs(n: int, bs: int | None, num_steps: int):
    """The bare programs a sweep is judged against: `jax.jit(jax.vmap(scan))` of plain SGD on least
    squares, float32, nothing else. Full batch: feature-major `X.T` (the layout gdjax uses), the loss
    of every step. Mini-batch: `bs` row indices drawn per step from the lane's key (O(batch), with
    replacement), the batch loss of every step, and a full-data loss at the start and the end (the
    two evaluations gdjax's default schedule makes in a run shorter than 10 epochs)."""
    if bs is None:

        def one(lr, w, b, XT, y):
            def body(c, _):
                w, b = c
                r = w @ XT + b - y
                return (w - lr * 2 * (XT @ r) / n, b - lr * 2 * jnp.mean(r)), jnp.mean(r * r)

            return jax.lax.scan(body, (w, b), None, length=num_steps)

        return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None)))
    return _bare_minibatch(n, bs, num_steps)


def bare_autodiff_sweep_program(num_steps: int):
    """The full-batch bare program with `jax.value_and_grad` for the gradient, as gdjax computes it:
    separates what autodiff's form of the gradient costs from what gdjax's loop adds."""

    def one(lr, w, b, XT, y):
        loss = lambda w, b: jnp.mean((w @ XT + b - y) ** 2)  # noqa: E731

        def body(c, _):
            value, (gw, gb) = jax.value_and_grad(loss, argnums=(0, 1))(*c)
            return (c[0] - lr * gw, c[1] - lr * gb), value

        return jax.lax.scan(body, (w, b), None, length=num_steps)

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, None, None)))


def _bare_minibatch(n: int, bs: int, num_steps: int):
    def one_mb(lr, key, w, b, X, y):
        def full_loss(w, b):
            r = X @ w + b - y
            return jnp.mean(r * r)

        def body(c, t):
            w, b = c
            idx = jax.random.randint(jax.random.fold_in(key, t), (bs,), 0, n)
            Xb, yb = X[idx], y[idx]
            r = Xb @ w + b - yb
            return (w - lr * 2 * (r @ Xb) / bs, b - lr * 2 * jnp.mean(r)), jnp.mean(r * r)

        first = full_loss(w, b)
        (w, b), losses = jax.lax.scan(body, (w, b), jnp.arange(num_steps))
        return (w, b), losses, first, full_loss(w, b)

    return jax.jit(jax.vmap(one_mb, in_axes=(0, 0, None, None, None, None)))


def bench_sweep_engine(results: dict, quick: bool):
    """Issue 10 item 8: a sweep of K learning rates against the bare `jit(vmap(scan))` of the same math
    and against a Python loop of K `gdjax.run` calls, side by side in one process, float32."""
    out: dict = {}
    n, d, K = (2_000, 20, 8) if quick else (100_000, 20, 256)
    X, y = make_big(n, d)
    bound = float(gdjax.reference.curvature(X[:5000]).max_stable_lr)
    p0 = gdjax.init_linear(d, jnp.float32)
    data = (jnp.asarray(X), jnp.asarray(y))
    w0 = jnp.zeros((d,), jnp.float32)
    b0 = jnp.zeros((), jnp.float32)
    repeats = 2 if quick else 3
    print(
        f"sweep vs bare: K={K} lanes, n={n}, d={d}, float32; per lane-step times, "
        "compile apart from run (median of warm calls)"
    )
    # Full batch: K learning rates. Mini-batch: K/4 learning rates x 4 seeds, batch 32.
    num_seeds = 4
    for label, bs, num_steps in (
        ("full_batch", None, 10 if quick else 50),
        ("minibatch_32", 32, 50 if quick else 1000),
    ):
        lanes_lr = K if bs is None else K // num_seeds
        lrs = np.geomspace(1e-3 * bound, 0.9 * bound, lanes_lr).astype(F32)
        seeds = None if bs is None else list(range(num_seeds))
        lane_lrs = lrs if bs is None else np.repeat(lrs, num_seeds)  # gdjax's lane order: seeds fastest
        lane_seeds = None if bs is None else np.tile(np.arange(num_seeds), lanes_lr)
        lane_steps = K * num_steps

        def do_sweep(lrs=lrs, bs=bs, seeds=seeds, num_steps=num_steps):
            res = gdjax.sweep(
                COST, "sgd", p0, data, grid={"learning_rate": lrs}, num_steps=num_steps, seeds=seeds,
                batch_size=bs,
            )  # fmt: skip
            jax.block_until_ready(res.trace.loss_history)
            return res

        row = dict(n=n, d=d, lanes=K, batch_size=bs, num_steps=num_steps, seeds=num_seeds if bs else None)
        t = time.perf_counter()
        first = do_sweep()
        row["gdjax_first_call_s"] = time.perf_counter() - t
        row["gdjax_compile_s"] = first.compile_seconds
        warm = []
        for _ in range(repeats):
            t = time.perf_counter()
            res = do_sweep()
            warm.append((time.perf_counter() - t, res.run_seconds))
        row["gdjax_call_s"] = statistics.median(w for w, _ in warm)
        row["gdjax_device_s"] = statistics.median(r for _, r in warm)

        # (a) the bare program, compiled and warmed up first.
        bare = bare_sweep_programs(n, bs, num_steps)
        lrs_j = jnp.asarray(lane_lrs)
        if bs is None:
            args = (lrs_j, w0, b0, jnp.asarray(np.ascontiguousarray(X.T)), data[1])
        else:
            keys = jax.vmap(jax.random.key)(jnp.asarray(lane_seeds))
            args = (lrs_j, keys, w0, b0, *data)
        t = time.perf_counter()
        compiled = bare.lower(*args).compile()
        row["bare_compile_s"] = time.perf_counter() - t
        row["bare_s"] = median_time(
            lambda compiled=compiled, args=args: jax.block_until_ready(compiled(*args)), repeats
        )
        if bs is None:
            auto = bare_autodiff_sweep_program(num_steps).lower(*args).compile()
            row["bare_autodiff_s"] = median_time(
                lambda auto=auto, args=args: jax.block_until_ready(auto(*args)), repeats
            )

        # (b) a Python loop of K gdjax.run calls (warm: the first call compiles, outside the timing).
        def loop_of_runs(lane_lrs=lane_lrs, lane_seeds=lane_seeds, bs=bs, num_steps=num_steps):
            for i, lr in enumerate(lane_lrs):
                key = None if bs is None else int(lane_seeds[i])
                tr = gdjax.run(
                    COST, rules.sgd(float(lr)), p0, data, num_steps=num_steps, batch_size=bs, key=key
                )
                jax.block_until_ready(tr.loss_history)

        row["loop_of_runs_s"] = median_time(loop_of_runs, 1 if not quick else 2)
        for name in ("gdjax_call", "gdjax_device", "bare", "loop_of_runs"):
            row[f"{name}_ns_per_lane_step"] = row[f"{name}_s"] / lane_steps * 1e9
        row["speed_vs_bare"] = row["bare_s"] / row["gdjax_call_s"]  # target >= 0.8
        if "bare_autodiff_s" in row:
            row["bare_autodiff_ns_per_lane_step"] = row["bare_autodiff_s"] / lane_steps * 1e9
            row["speed_vs_bare_autodiff"] = row["bare_autodiff_s"] / row["gdjax_call_s"]
        row["speed_vs_bare_device_only"] = row["bare_s"] / row["gdjax_device_s"]
        row["speedup_vs_loop_of_runs"] = row["loop_of_runs_s"] / row["gdjax_call_s"]  # target >= 1.3
        out[label] = row
        what = "full batch" if bs is None else f"batch {bs}, {lanes_lr} learning rates x {num_seeds} seeds"
        print(f"    {what}, {num_steps} steps:")
        print(
            f"      gdjax.sweep      {row['gdjax_call_ns_per_lane_step']:9.1f} ns/lane-step "
            f"(device part {row['gdjax_device_ns_per_lane_step']:.1f}; "
            f"compile {row['gdjax_compile_s']:.2f} s, first call {row['gdjax_first_call_s']:.2f} s)"
        )
        print(
            f"      bare jit(vmap(scan)) {row['bare_ns_per_lane_step']:5.1f} ns/lane-step "
            f"(compile {row['bare_compile_s']:.2f} s) -> gdjax speed / bare speed "
            f"{row['speed_vs_bare']:.2f} (device part {row['speed_vs_bare_device_only']:.2f}; target >= 0.8)"
        )
        if "bare_autodiff_s" in row:
            print(
                f"      bare, jax.grad   {row['bare_autodiff_ns_per_lane_step']:9.1f} ns/lane-step "
                f"-> gdjax speed / its speed {row['speed_vs_bare_autodiff']:.2f} (autodiff's gradient)"
            )
        print(
            f"      loop of K runs   {row['loop_of_runs_ns_per_lane_step']:9.1f} ns/lane-step "
            f"-> gdjax {row['speedup_vs_loop_of_runs']:.2f}x faster than the loop of runs (target >= 1.3x)"
        )
    results["sweep_engine"] = out


def _bench_big_grid(quick: bool) -> dict:
    """A big grid on the tutorial's 7 points (the tutorials' learning-rate sweep, scaled up): the
    host work per lane (validating every value) and the in-scan cost per lane-step both show here."""
    K, T = (512, 200) if quick else (4096, 1000)
    X, y = gdjax.data.house_prices()
    X, y = X.astype(F32), y.astype(F32)
    p0 = gdjax.init_linear(1, jnp.float32)
    lrs = np.geomspace(1e-4, 0.08, K).astype(F32)  # 2/L = 0.0813: every lane is stable
    XT = jnp.asarray(np.ascontiguousarray(X.T))

    def one(lr, w, b):
        def body(c, _):
            w, b = c
            r = w @ XT + b - y
            return (w - lr * 2 * (XT @ r) / 7, b - lr * 2 * jnp.mean(r)), jnp.mean(r * r)

        return jax.lax.scan(body, (w, b), None, length=T)

    bare = jax.jit(jax.vmap(one, in_axes=(0, None, None)))
    results = []

    def sweep_call(keep: list | None = None, **kwargs):
        def call():
            res = gdjax.sweep(COST, "sgd", p0, (X, y), grid={"learning_rate": lrs}, num_steps=T, **kwargs)
            jax.block_until_ready(res.trace.loss_history)
            if keep is not None:
                keep.append(res.run_seconds)

        return call

    # The same sweep with the two default features the bare program does not have turned off: the
    # divergence rule and the per-step parameter records (params recorded at the start and the end).
    features_off = dict(
        stopping=gdjax.Stopping(divergence_factor=None), execution=gdjax.Execution(record_every=T)
    )
    row = dict(lanes=K, num_steps=T)
    lrs_device = jnp.asarray(lrs)
    best = interleaved_best(
        {
            "gdjax": sweep_call(results),
            "bare": lambda: jax.block_until_ready(bare(lrs_device, p0["w"], p0["b"])),
            "no_divergence": sweep_call(stopping=features_off["stopping"]),
            "no_divergence_no_records": sweep_call(**features_off),
        },
        3 if quick else 5,
    )
    row["gdjax_s"], row["bare_s"] = best["gdjax"], best["bare"]
    row["gdjax_no_divergence_s"] = best["no_divergence"]
    row["gdjax_no_divergence_no_records_s"] = best["no_divergence_no_records"]
    row["gdjax_device_s"] = min(results[1:])
    # Kernels per step of each program's loop (the sweep's program is the one its calls just used).
    sweep_module = importlib.import_module("gdjax.sweep")
    (program, *_) = reversed(sweep_module._COMPILED.values())
    row["kernels_per_step"] = {
        "gdjax": loop_body_kernels(program.as_text())[0]["kernels"],
        "bare": loop_body_kernels(bare.lower(lrs_device, p0["w"], p0["b"]).compile().as_text())[0]["kernels"],
    }
    lane_steps = K * T
    print(
        f"    big grid on the 7 points, {K} learning rates x {T} steps: gdjax.sweep "
        f"{row['gdjax_s'] * 1e3:.0f} ms ({row['gdjax_s'] / lane_steps * 1e9:.0f} ns/lane-step; device part "
        f"{row['gdjax_device_s'] * 1e3:.0f} ms), bare jit(vmap(scan)) {row['bare_s'] * 1e3:.0f} ms "
        f"({row['bare_s'] / lane_steps * 1e9:.0f} ns/lane-step) -> gdjax speed / bare speed "
        f"{row['bare_s'] / row['gdjax_s']:.2f} (device part {row['bare_s'] / row['gdjax_device_s']:.2f}); "
        f"kernels per step: gdjax {row['kernels_per_step']['gdjax']}, bare {row['kernels_per_step']['bare']}"
    )
    print(
        f"      the same sweep without the divergence rule: {row['gdjax_no_divergence_s'] * 1e3:.0f} ms "
        f"({row['bare_s'] / row['gdjax_no_divergence_s']:.2f}); also without per-step parameter records "
        f"(what the bare program computes): {row['gdjax_no_divergence_no_records_s'] * 1e3:.0f} ms "
        f"({row['bare_s'] / row['gdjax_no_divergence_no_records_s']:.2f})"
    )
    return row


# ------------------------------------------------------------------------------ small problems
def interleaved_best(fns: dict, rounds: int, calls: int = 1) -> dict:
    """Best time of each function over `rounds` rounds of `calls` calls, the functions taking turns
    within each round (the machine is shared: a slow minute hits every function alike)."""
    for fn in fns.values():
        fn()  # warm-up (compiles if needed)
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(calls):
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def loop_body_kernels(hlo_text: str) -> list[dict]:
    """The kernels XLA runs per iteration of each `while` loop of an optimized HLO module
    (`compiled.as_text()`): its fusions, copies and other non-trivial instructions, by kind."""
    bodies = set(re.findall(r"while\(.*?body=%?([\w.\-]+)", hlo_text))
    trivial = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast"}
    out, current = [], None
    for line in hlo_text.splitlines():
        if not line.startswith(" "):
            name = line.split(" ", 1)[0].lstrip("%")
            current = {"body": name, "kinds": collections.Counter()} if name in bodies else None
            if current is not None:
                out.append(current)
            continue
        if current is not None and (m := re.search(r"= \S+ ([\w-]+)\(", line)):
            if m.group(1) not in trivial:
                current["kinds"][m.group(1)] += 1
    for body in out:
        body["kernels"] = sum(body["kinds"].values())
    return out


def _compiled_run_text(cost, rule, params0, data, **kwargs) -> str:
    """The optimized HLO of the program `gdjax.run` dispatches for these arguments."""
    from gdjax import loop

    seen = {}
    program = loop._compiled_run

    def capture(*args):
        seen["args"] = args
        return program(*args)

    loop._compiled_run, plans = capture, dict(loop._PLANS)
    loop._PLANS.clear()  # the full path, whose arguments are captured
    try:
        gdjax.run(cost, rule, params0, data, **kwargs)
    finally:
        loop._compiled_run = program
        loop._PLANS.update(plans)
    return program.lower(*seen["args"]).compile().as_text()


def bench_small_problems(results: dict, quick: bool) -> None:
    """Issue 21 items 4 and 5: tiny problems against the bare scan (per step, kernels per step, a
    plain call) and a 4096-lane grid on the 7 points against the bare `jit(vmap(scan))`."""
    out: dict = {}
    X, y = gdjax.data.house_prices()
    X, y = X.astype(F32), y.astype(F32)
    p0 = gdjax.init_linear(1, jnp.float32)
    XT = np.ascontiguousarray(X.T)

    def bare_scan(num_steps):
        @jax.jit
        def go(w, b, XT, y):
            def body(c, _):
                w, b = c
                r = w @ XT + b - y
                return (w - 0.01 * 2 * (XT @ r) / 7, b - 0.01 * 2 * jnp.mean(r)), jnp.mean(r * r)

            return jax.lax.scan(body, (w, b), None, length=num_steps)

        return go

    def bare_with_features(num_steps, histories: bool):
        """The bare scan plus what gdjax's step promises, written by hand: a step whose loss, gradient
        or result is not finite is not taken and stops the run (a status and a count of steps in the
        carry); with `histories`, the gradient norm and both parameters recorded every step too, as
        gdjax's default evaluation does (no divergence rule, no metrics)."""

        @jax.jit
        def go(w, b, XT, y):
            def body(c, _):
                w, b, status, steps = c
                r = w @ XT + b - y
                gw, gb, loss = 2 * (XT @ r) / 7, 2 * jnp.mean(r), jnp.mean(r * r)
                nw, nb = w - 0.01 * gw, b - 0.01 * gb
                finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(gw)) & jnp.isfinite(gb)
                finite = finite & jnp.all(jnp.isfinite(nw)) & jnp.isfinite(nb)
                apply = (status == 0) & finite
                out = (loss, jnp.sqrt(jnp.sum(gw * gw) + gb * gb), w, b) if histories else loss
                carry = (
                    jnp.where(apply, nw, w),
                    jnp.where(apply, nb, b),
                    jnp.where((status == 0) & ~finite, 3, status),
                    steps + apply.astype(jnp.int32),
                )
                return carry, out

            return jax.lax.scan(body, (w, b, jnp.int32(0), jnp.int32(0)), None, length=num_steps)

        return go

    print(
        "small problems: the 7-point house data, float32, against the bare jit(scan) (same process, "
        "interleaved, best of several)"
    )
    # Kernels per step: the instructions XLA runs per iteration of the step loop (fusions, copies, the
    # loop counter's add; the loop's compare runs in its condition, one more for every program).
    T = 20_000 if quick else 200_000
    bare_go = bare_scan(T)
    bare_text = bare_go.lower(p0["w"], p0["b"], XT, y).compile().as_text()
    (bare_body,) = loop_body_kernels(bare_text)
    kernels = {"bare": dict(bare_body["kinds"]) | {"total": bare_body["kernels"]}}
    for label, kw in (("sparse", dict(eval_every=10_000)), ("default", {})):
        text = _compiled_run_text(COST, rules.sgd(0.01), p0, (X, y), num_steps=T, **kw)
        step_loop = loop_body_kernels(text)[0]  # the innermost loop (the steps) comes first
        kernels[label] = dict(step_loop["kinds"]) | {"total": step_loop["kernels"]}
    out["kernels_per_step"] = kernels
    print(
        "    kernels per step (loop body): bare scan {bare}, gdjax with eval_every=10000 {sparse}, "
        "gdjax default (an evaluation every step) {default}".format(
            **{k: v["total"] for k, v in kernels.items()}
        )
    )
    # Per step, 200,000 steps.
    checked, recorded = bare_with_features(T, False), bare_with_features(T, True)
    calls = {
        "bare": lambda: jax.block_until_ready(bare_go(p0["w"], p0["b"], XT, y)),
        "sparse": lambda: jax.block_until_ready(
            gdjax.run(COST, rules.sgd(0.01), p0, (X, y), num_steps=T, eval_every=10_000)
        ),
        "default": lambda: jax.block_until_ready(gdjax.run(COST, rules.sgd(0.01), p0, (X, y), num_steps=T)),
        "bare_checked": lambda: jax.block_until_ready(checked(p0["w"], p0["b"], XT, y)),
        "bare_checked_recorded": lambda: jax.block_until_ready(recorded(p0["w"], p0["b"], XT, y)),
    }
    best = interleaved_best(calls, 3 if quick else 7)
    per = {f"{k}_ns_per_step": v / T * 1e9 for k, v in best.items()}
    per["sparse_ratio"], per["default_ratio"] = best["sparse"] / best["bare"], best["default"] / best["bare"]
    per["sparse_vs_same_features"] = best["sparse"] / best["bare_checked"]
    per["default_vs_same_features"] = best["default"] / best["bare_checked_recorded"]
    out["per_step"] = per
    print(
        f"    {T} steps, per step: bare scan {per['bare_ns_per_step']:.1f} ns; gdjax eval_every=10000 "
        f"{per['sparse_ns_per_step']:.1f} ns -> {per['sparse_ratio']:.2f}x (target <= 1.3); gdjax default "
        f"{per['default_ns_per_step']:.1f} ns -> {per['default_ratio']:.2f}x (target <= 2)"
    )
    print(
        f"    the bare scan with gdjax's per-step promise written by hand (a non-finite step is not taken "
        f"and stops the run): {per['bare_checked_ns_per_step']:.1f} ns "
        f"({best['bare_checked'] / best['bare']:.2f}x the bare scan; gdjax eval_every=10000 is "
        f"{per['sparse_vs_same_features']:.2f}x it); with the gradient norm and both parameters "
        f"recorded every step too: {per['bare_checked_recorded_ns_per_step']:.1f} ns "
        f"({best['bare_checked_recorded'] / best['bare']:.2f}x; gdjax default is "
        f"{per['default_vs_same_features']:.2f}x it)"
    )
    # A plain call: a new rule and NumPy arguments each call, the whole call with its results ready.
    bare10 = bare_scan(10)
    calls = {
        "bare": lambda: jax.block_until_ready(bare10(p0["w"], p0["b"], XT, y)),
        "gdjax": lambda: jax.block_until_ready(
            gdjax.run(COST, rules.sgd(0.01), gdjax.init_linear(1, np.float32), (X, y), num_steps=10)
        ),
    }
    best = interleaved_best(calls, 10 if quick else 30, calls=20)
    plain = {"gdjax_us": best["gdjax"] * 1e6, "bare_us": best["bare"] * 1e6}
    plain["ratio"] = best["gdjax"] / best["bare"]
    out["plain_call"] = plain
    print(
        f"    a plain call, run(cost, rules.sgd(0.01), init_linear(1), data, num_steps=10): gdjax "
        f"{plain['gdjax_us']:.0f} us, one call of the bare jitted scan {plain['bare_us']:.0f} us -> "
        f"{plain['ratio']:.1f}x (target <= 5)"
    )
    out["big_grid_tiny_data"] = _bench_big_grid(quick)
    results["small_problems"] = out


# ----------------------------------------------------------------------- time to first result
# Each case runs in fresh processes (this script again, with --first-call-case): a researcher's rerun
# pays the import, the tracing and XLA's compilation before the first number. "first" is the first
# call of the case in its process (results on the host), "second" the same call again.
FIRST_CALL_CASES = {
    # name: (verb, layout, loss, rule, lanes (learning rates, seeds) or None, batch_size, num_steps)
    "run, full batch, least squares, sgd": ("run", "full", "mse", "sgd", None, None, 500),
    "run, mini-batch, logistic, adam": ("run", "mini", "logistic", "adam", None, 32, 1000),
    "sweep, full batch, least squares, sgd (9 lr)": ("sweep", "full", "mse", "sgd", (9, 1), None, 500),
    "sweep, mini-batch, logistic, adam (9 lr x 5 seeds)": (
        "sweep",
        "mini",
        "logistic",
        "adam",
        (9, 5),
        32,
        1000,
    ),
}


def _first_call_data(loss: str):
    """Least squares: 1000 x 10 synthetic; logistic: breast-cancer sized (569 x 30), labels from a plane."""
    rng = np.random.default_rng(0)
    if loss == "mse":
        X = rng.normal(size=(1000, 10)).astype(F32)
        return X, (X @ rng.normal(size=10) + 1.0 + 0.1 * rng.normal(size=1000)).astype(F32)
    X = rng.normal(size=(569, 30)).astype(F32)
    return X, (X @ rng.normal(size=30) + 0.3 * rng.normal(size=569) > 0).astype(F32)


def _first_call_gdjax(case: str):
    verb, _, loss, rule, lanes, batch, num_steps = FIRST_CALL_CASES[case]
    X, y = _first_call_data(loss)
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse if loss == "mse" else gdjax.logistic)
    lr = 0.01
    if verb == "run":
        factory = getattr(rules, rule)
        return lambda: jax.device_get(
            gdjax.run(
                cost,
                factory(lr),
                gdjax.init_linear(X.shape[1]),
                (X, y),
                num_steps=num_steps,
                batch_size=batch,
                key=0,
            )  # fmt: skip
        )
    num_lr, num_seeds = lanes
    grid = {"learning_rate": np.logspace(-3, -1, num_lr).astype(F32)}
    seeds = list(range(num_seeds)) if batch else None
    return lambda: gdjax.sweep(
        cost, rule, gdjax.init_linear(X.shape[1]), (X, y), grid=grid, seeds=seeds, batch_size=batch,
        num_steps=num_steps,
    )  # fmt: skip


def _first_call_bare(case: str):
    """What a user writes in 20 lines: `jit(scan)` (or `jit(vmap(vmap(scan)))` over learning rates and
    seeds with `optax.inject_hyperparams`) of the same math, recording the loss of every step; the
    mini-batches sampled with replacement by `jax.random.randint`."""
    verb, _, loss_name, rule, lanes, batch, num_steps = FIRST_CALL_CASES[case]
    X, y = _first_call_data(loss_name)
    n, d = X.shape

    def loss(p, xb, yb):
        z = xb @ p["w"] + p["b"]
        if loss_name == "mse":
            return jnp.mean((z - yb) ** 2)
        return jnp.mean(jnp.logaddexp(0.0, z) - yb * z)

    opt = optax.inject_hyperparams(getattr(optax, rule))(learning_rate=0.01)

    def one(lr, key, X, y):
        p = {"w": jnp.zeros(d, F32), "b": jnp.zeros((), F32)}
        state = opt.init(p)
        state.hyperparams["learning_rate"] = lr

        def step(c, k):
            p, state = c
            if batch is None:
                value, g = jax.value_and_grad(loss)(p, X, y)
            else:
                idx = jax.random.randint(k, (batch,), 0, n)
                value, g = jax.value_and_grad(loss)(p, X[idx], y[idx])
            u, state = opt.update(g, state, p)
            return (optax.apply_updates(p, u), state), value

        (p, _), losses = jax.lax.scan(step, (p, state), jax.random.split(key, num_steps))
        return p, losses

    if verb == "run":
        f = jax.jit(one)
        lrs, keys = jnp.float32(0.01), jax.random.key(0)
    else:
        f = jax.jit(jax.vmap(jax.vmap(one, (None, 0, None, None)), (0, None, None, None)))
        lrs = jnp.asarray(np.logspace(-3, -1, lanes[0]).astype(F32))
        keys = jax.vmap(jax.random.key)(jnp.arange(lanes[1]))
    fn = lambda: jax.device_get(f(lrs, keys, X, y))  # noqa: E731
    fn.program = f, (lrs, keys, X, y)
    return fn


def _timed_compile(jitted, statics: tuple, args: tuple, parts: dict):
    """`jitted`'s program for these arguments, traced, lowered and compiled, each part's CPU seconds
    added to `parts`."""
    c0 = time.process_time()
    traced = jitted.trace(*statics, *args)
    c1 = time.process_time()
    lowered = traced.lower()
    c2 = time.process_time()
    compiled = lowered.compile()
    c3 = time.process_time()
    for name, seconds in (("trace", c1 - c0), ("lower", c2 - c1), ("compile", c3 - c2)):
        parts[name] += seconds
    return compiled


def _first_call_parts_child(case: str, mode: str) -> None:
    """Runs in a fresh process: CPU seconds of the first call's parts as JSON on the last line (the
    program gdjax or the bare code compiles is traced, lowered and compiled apart; "rest" is the
    remainder: validation, planning, data preparation, the run, the copy to the host)."""
    import importlib

    parts = dict.fromkeys(("trace", "lower", "compile"), 0.0)
    if mode == "gdjax":
        sweep_module, loop_module = (importlib.import_module(f"gdjax.{m}") for m in ("sweep", "loop"))
        sweep_module._compiled = lambda statics, args: (
            _timed_compile(sweep_module._program, statics, args, parts),
            0.0,
        )
        run_program = loop_module._compiled_run
        loop_module._compiled_run = lambda *a: _timed_compile(run_program, a[:4], a[4:], parts)(*a[4:])
        fn = _first_call_gdjax(case)
    else:
        f, args = _first_call_bare(case).program
        fn = lambda: jax.device_get(_timed_compile(f, (), args, parts)(*args))  # noqa: E731
    c0 = time.process_time()
    fn()
    total = time.process_time() - c0
    print(json.dumps({**parts, "rest": total - sum(parts.values()), "total": total}))


def bench_first_call_parts(results: dict, quick: bool) -> None:
    """What the first call is made of: CPU seconds of tracing, lowering, XLA's compilation and the rest,
    gdjax against the bare program, each case in fresh processes (the better total of 2)."""
    print(
        "\nparts of the first call (CPU seconds of a fresh process: trace / lower / compile / rest = total)"
    )
    env = dict({k: v for k, v in os.environ.items() if k != "GDJAX_COMPILE_CACHE"}, GDJAX_COMPILE_CACHE="off")
    rows = []
    for case in list(FIRST_CALL_CASES)[1::2] if quick else list(FIRST_CALL_CASES):
        row = {"case": case}
        for mode in ("gdjax", "bare"):
            outs = [_child(["--first-call-case", case, "--mode", mode, "--parts"], env) for _ in range(2)]
            row[mode] = min(outs, key=lambda o: o["total"])
        rows.append(row)
        text = {
            m: " / ".join(f"{row[m][k]:.2f}" for k in ("trace", "lower", "compile", "rest"))
            + f" = {row[m]['total']:.2f}"
            for m in ("gdjax", "bare")
        }
        print(f"  {case:50s} gdjax {text['gdjax']} | bare {text['bare']}")
    results["first_call_parts"] = rows


def _first_call_child(case: str, mode: str) -> None:
    """Runs in a fresh process: prints `{"first": s, "second": s}` as JSON on the last line."""
    fn = (_first_call_gdjax if mode == "gdjax" else _first_call_bare)(case)
    out = {}
    for name in ("first", "second"):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        out[name], out[f"{name}_cpu"] = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps(out))


def _child(args: list[str], env: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _study_seconds(
    folder: str, env: dict, config: str | None = None, plots: bool = False
) -> tuple[float, float]:
    """Wall and CPU seconds of `gdjax run [config]` (default: the embedded default study; no plots
    and no report page unless `plots`), a fresh process."""
    t0, c0 = time.perf_counter(), _children_cpu()
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from gdjax.study.command import main; sys.exit(main())", "run",
         *([config] if config else []), "--out", folder, *([] if plots else ["--no-plots"]), "-q"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"gdjax run failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0, _children_cpu() - c0


# Studies of several units: each unit's programs compiled by its own sweep when it runs (one after
# another), against compiled ahead in threads beside the gradient check (gdjax.study.programs).
STUDIES = (None, "configs/optimizers_ill.toml", "configs/digits.toml")
STUDY_REPEATS = 3


def bench_study_compiles(tmp: str, env: dict, results: dict) -> None:
    """Whole `gdjax run --no-plots` processes, compilation cache off, with `GDJAX_COMPILE_THREADS=1`
    (the default) and one thread per core (at least 2), interleaved; best of `STUDY_REPEATS` each."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rows = []
    for i, config in enumerate(STUDIES):
        times = {"serial": [], "threads": []}
        for r in range(STUDY_REPEATS):
            for mode in times:
                threads = 1 if mode == "serial" else max(2, os.cpu_count() or 1)
                mode_env = dict(env, GDJAX_COMPILE_CACHE="off", GDJAX_COMPILE_THREADS=str(threads))
                path = None if config is None else os.path.join(root, config)
                times[mode].append(_study_seconds(os.path.join(tmp, f"study{i}-{mode}-{r}"), mode_env, path))
        (serial, serial_cpu), (threads, threads_cpu) = (min(times[m]) for m in ("serial", "threads"))
        name = config or "default study"
        rows.append({"study": name, "serial_s": serial, "threads_s": threads, "serial_cpu_s": serial_cpu,
                     "threads_cpu_s": threads_cpu})  # fmt: skip
        print(
            f"  {name:30s} (cache off) compiled unit by unit {serial:6.2f} [{serial_cpu:6.2f}], "
            f"ahead in threads {threads:6.2f} [{threads_cpu:6.2f}]: {threads / serial:.2f} of the wall time"
        )
    results["study_compiles"] = rows


def bench_default_study(results: dict, repeats: int = 3) -> None:
    """The default study as a user runs it, whole processes, best of `repeats` (interleaved; each
    repeat with its own empty compilation cache): `gdjax run --no-plots` cold (the cache empty) and
    warm (filled by the cold run), and `gdjax run` warm with the plots and the report page."""
    print(
        f"\ndefault study, `gdjax run` as whole processes, best of {repeats} (wall seconds [CPU seconds]; "
        f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})"
    )
    env = {k: v for k, v in os.environ.items() if k != "GDJAX_COMPILE_CACHE"}
    times: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": [], "warm_plots": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            cache_env = dict(env, GDJAX_COMPILE_CACHE=os.path.join(tmp, f"cache{r}"))
            for name in times:
                folder = os.path.join(tmp, f"{name}{r}")
                times[name].append(_study_seconds(folder, cache_env, plots=name == "warm_plots"))
    best = {name: (min(w for w, _ in t), min(c for _, c in t)) for name, t in times.items()}
    (cold, cold_cpu), (warm, warm_cpu), (page, page_cpu) = best["cold"], best["warm"], best["warm_plots"]
    results["default_study_repeats"] = {
        "repeats": repeats,
        **{f"{name}_s": w for name, (w, _) in best.items()},
        **{f"{name}_cpu_s": c for name, (_, c) in best.items()},
        "all": {name: t for name, t in times.items()},
    }
    print(
        f"  --no-plots: cold {cold:5.2f} [{cold_cpu:5.2f}], warm {warm:5.2f} [{warm_cpu:5.2f}]: "
        f"{warm / cold:.2f} [{warm_cpu / cold_cpu:.2f}] of cold (target <= 0.5)\n"
        f"  with the plots and report.html, warm: {page:5.2f} [{page_cpu:5.2f}], "
        f"{page / warm:.1f}x [{page_cpu / warm_cpu:.1f}x] the run without them"
    )


def bench_first_call(results: dict, quick: bool) -> None:
    """The "time to first result" table: each case's first and second call in a fresh process, for
    gdjax (without and with a warm persistent compilation cache) and for the bare program."""
    print(
        "\ntime to first result (a fresh process per cell; first call: tracing, compiling, running, results "
        "on the host; seconds of wall time, [CPU seconds of the process], which other jobs on the machine "
        "disturb less)"
    )
    device = jax.devices()[0]
    print(f"  device: {device.device_kind} ({jax.default_backend()})")
    env = {k: v for k, v in os.environ.items() if k != "GDJAX_COMPILE_CACHE"}
    rows = []
    cases = list(FIRST_CALL_CASES)[1::2] if quick else list(FIRST_CALL_CASES)
    off = dict(env, GDJAX_COMPILE_CACHE="off")
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases):
            cache_env = dict(env, GDJAX_COMPILE_CACHE=os.path.join(tmp, f"cache{i}"))
            bare = _child(["--first-call-case", case, "--mode", "bare"], off)
            cold = _child(["--first-call-case", case, "--mode", "gdjax"], off)
            _child(["--first-call-case", case, "--mode", "gdjax"], cache_env)  # fills the cache
            warm = _child(["--first-call-case", case, "--mode", "gdjax"], cache_env)
            row = {"case": case}
            for prefix, out in (("gdjax", cold), ("gdjax_cached", warm), ("bare", bare)):
                row.update({f"{prefix}_{k}_s": v for k, v in out.items()})
            rows.append(row)
            print(
                f"  {case:50s} gdjax first {row['gdjax_first_s']:5.2f} [{row['gdjax_first_cpu_s']:5.2f}]"
                f", cache warm {row['gdjax_cached_first_s']:5.2f} [{row['gdjax_cached_first_cpu_s']:5.2f}]"
                f", second {row['gdjax_second_s']:6.3f} | bare first {row['bare_first_s']:5.2f} "
                f"[{row['bare_first_cpu_s']:5.2f}], second {row['bare_second_s']:6.3f} | first call "
                f"{row['gdjax_first_s'] / row['bare_first_s']:.2f}x bare "
                f"[{row['gdjax_first_cpu_s'] / row['bare_first_cpu_s']:.2f}x] (target <= 1.5x)"
            )
        if not quick:
            bench_study_compiles(tmp, env, results)
            cache_env = dict(env, GDJAX_COMPILE_CACHE=os.path.join(tmp, "study-cache"))
            (cold, cold_cpu), (warm, warm_cpu) = (
                _study_seconds(os.path.join(tmp, name), cache_env) for name in ("cold", "warm")
            )
            results["default_study"] = {
                "cold_s": cold,
                "warm_s": warm,
                "cold_cpu_s": cold_cpu,
                "warm_cpu_s": warm_cpu,
            }
            print(
                f"  default study (`gdjax run --no-plots`, the whole process): cold {cold:5.2f} "
                f"[{cold_cpu:5.2f}], warm compile cache {warm:5.2f} [{warm_cpu:5.2f}]: {warm / cold:.2f} "
                f"[{warm_cpu / cold_cpu:.2f}] of cold (target <= 0.5)"
            )
    results["first_call"] = {"device": str(device.device_kind), "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    parser.add_argument("--json", help="also write the numbers to this JSON file")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--only-engine", action="store_true", help="only the engine cost-model rows")
    parser.add_argument(
        "--only-sweep-engine",
        action="store_true",
        help="only the engine issue's sweep rows (gdjax.sweep vs bare jit(vmap(scan)) vs a loop of runs)",
    )
    parser.add_argument(
        "--only-small",
        action="store_true",
        help="only the small-problem rows (per step, kernels per step, a plain call, a 4096-lane grid)",
    )
    parser.add_argument(
        "--only-first-call",
        action="store_true",
        help="only the time-to-first-result table (each case in fresh processes)",
    )
    parser.add_argument(
        "--only-default-study",
        action="store_true",
        help="only the default study's row: cold, warm, and warm with the report page (best of 3)",
    )
    parser.add_argument(
        "--only-first-call-parts",
        action="store_true",
        help="only what a first call is made of: tracing, lowering, compiling, the rest (fresh processes)",
    )
    parser.add_argument("--first-call-case", help=argparse.SUPPRESS)  # a child process's case
    parser.add_argument("--mode", choices=("gdjax", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--parts", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.first_call_case:
        (_first_call_parts_child if args.parts else _first_call_child)(args.first_call_case, args.mode)
        return None
    q = args.quick
    print(
        f"gdjax {gdjax.__version__}, jax {jax.__version__}, optax {optax.__version__}, "
        f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}"
    )
    ref, lib = load_c_probes()
    results: dict = {"backend": jax.default_backend(), "cpu_count": os.cpu_count(), "quick": q}
    if args.only_first_call:
        bench_first_call(results, q)
        return _write(results, args.json)
    if args.only_default_study:
        bench_default_study(results, 1 if q else 3)
        return _write(results, args.json)
    if args.only_first_call_parts:
        bench_first_call_parts(results, q)
        return _write(results, args.json)
    if args.only_sweep_engine:
        bench_sweep_engine(results, q)
        return _write(results, args.json)
    if args.only_small:
        bench_small_problems(results, q)
        return _write(results, args.json)
    bench_engine(results, q)
    bench_sweep_engine(results, q)
    bench_small_problems(results, q)
    if args.only_engine:
        return _write(results, args.json)
    bench_small(1000 if q else 10_000, 5 if q else 50, results)
    bench_per_step_small(20_000 if q else 200_000, 3 if q else 10, results, ref, lib)
    bench_big_full_batch(5_000 if q else 100_000, 20, 20 if q else 200, 2 if q else 5, results, ref, lib)
    if not args.skip_sweep:
        bench_sweep(
            2_000 if q else 100_000,
            20,
            8 if q else 256,
            20 if q else 500,
            results,
            ref,
            lib,
            rebuild_sample=2 if q else 4,
        )
    if not q:  # fresh processes per cell: minutes; `--only-first-call --quick` is its smoke test
        bench_first_call(results, q)
    return _write(results, args.json)


def _write(results: dict, path: str | None) -> dict:
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
