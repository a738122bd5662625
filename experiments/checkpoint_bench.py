"""Reverse mode through a long run, with and without `Execution(checkpoint_every=k)` (issue 20).

`jax.grad` of the final loss with respect to the learning rate, through 10,000 steps of gradient
descent on a 10,000-parameter linear least-squares model (64 examples x 9,999 features + bias,
float32). Reports XLA's temporary-buffer size for the compiled gradient program
(`jax.jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes`) and the wall time of one
call after compilation (best of 3).

    python experiments/checkpoint_bench.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import gdjax

NUM_STEPS = 10_000
N, D = 64, 9_999


def main(every=(None, 1000, 100, 10)):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32) / np.sqrt(D)
    y = rng.normal(size=N).astype(np.float32)
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    params0 = gdjax.init_linear(D, jnp.float32)
    print(f"{'checkpoint_every':>16}  {'temp MiB':>9}  {'time s':>7}  d loss / d lr")
    for k in every:
        execution = gdjax.Execution(record_every=NUM_STEPS, checkpoint_every=k)

        def final(lr, execution=execution):
            trace = gdjax.run(
                cost, gdjax.rules.sgd(lr), params0, (X, y), num_steps=NUM_STEPS, execution=execution
            )
            return trace.loss_history[-1]

        compiled = jax.jit(jax.grad(final)).lower(jnp.float32(0.1)).compile()
        temp = compiled.memory_analysis().temp_size_in_bytes
        times = []
        for _ in range(3):
            start = time.perf_counter()
            grad = jax.block_until_ready(compiled(jnp.float32(0.1)))
            times.append(time.perf_counter() - start)
        print(f"{str(k):>16}  {temp / 2**20:9.1f}  {min(times):7.2f}  {float(grad):.6g}")


if __name__ == "__main__":
    main()
