"""What progress reports from inside the compiled loop cost: steps/s of a mini-batch sweep, off and on.

Run:  python experiments/progress_bench.py [--quick]

The same sweep (16 learning rates x 2 seeds, linear least squares, batch 32, an evaluation every 10
steps) runs with no progress, with the default report interval (about 50 reports per program call)
and with a report at every evaluation (the most the reports can cost). Each is compiled first, then
timed as the best of 7 calls, interleaved (`SweepResult.run_seconds`, compilation excluded); steps/s counts
lane-steps. Results are asserted bit-identical.
"""

from __future__ import annotations

import argparse

import numpy as np

import gdjax

REPEATS = 7


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    num_steps = 2_000 if args.quick else 20_000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2048, 16))
    y = X @ rng.normal(size=16) + 0.1 * rng.normal(size=2048)
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    grid = {"learning_rate": list(np.geomspace(1e-3, 1e-1, 16))}
    reports: dict[str, list[int]] = {"default interval": [], "every evaluation": []}
    settings = {
        "off": gdjax.Execution(),
        "default interval": gdjax.Execution(step_progress=lambda d, n: reports["default interval"].append(d)),
        "every evaluation": gdjax.Execution(
            step_progress=lambda d, n: reports["every evaluation"].append(d), progress_every=10
        ),
    }
    calls = {
        name: dict(num_steps=num_steps, batch_size=32, eval_every=10, seeds=[0, 1], execution=execution)
        for name, execution in settings.items()
    }
    base = None
    for call in calls.values():  # compile each, and check the results are the same bit for bit
        first = gdjax.sweep(cost, "sgd", gdjax.init_linear(16), (X, y), grid=grid, **call)
        base = first.trace.loss_history if base is None else base
        np.testing.assert_array_equal(first.trace.loss_history, base)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for seen in reports.values():
        seen.clear()
    for _ in range(REPEATS):  # interleaved, so that a busy machine slows every setting alike
        for name, call in calls.items():
            times[name].append(
                gdjax.sweep(cost, "sgd", gdjax.init_linear(16), (X, y), grid=grid, **call).run_seconds
            )
    print(f"sweep: 32 lanes x {num_steps} steps, batch 32, eval_every 10 (best of {REPEATS})")
    for name, seconds in times.items():
        rate = 32 * num_steps / min(seconds)
        print(f"  {name:<17} {min(seconds):7.3f} s  {rate / 1e6:6.2f} M lane-steps/s")
    print("  reports per call: " + ", ".join(f"{k}: {len(v) // REPEATS}" for k, v in reports.items()))


if __name__ == "__main__":
    main()
