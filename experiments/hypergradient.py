"""Learning an L2 strength by gradient descent through unrolled runs, checked, against a grid.

A ridge regression on 50 noisy examples of 40 features is trained by 500 steps of gradient descent
(`gdjax.run`). Its held-out loss (200 other examples) as a function of `log(l2)` is differentiated
with `jax.grad` straight through the run (a hypergradient), checked with `gdjax.check_grad`
(reverse mode, forward mode and float64 finite differences, which must agree), and followed by
Adam for 60 outer steps. The learned strength is then compared with the best of a 41-point grid
of strengths run as one `gdjax.sweep`. Runs in a few seconds on 2 CPU cores:

    python experiments/hypergradient.py
"""

from __future__ import annotations

import time

import jax

jax.config.update("jax_enable_x64", True)  # float64: the hypergradient is checked to 1e-6

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import gdjax  # noqa: E402

NUM_STEPS = 500  # inner gradient-descent steps of each run
OUTER_STEPS = 100
GRID = np.logspace(-4, 1, 41)


def ridge(params, data, l2=0.0):
    X, y = data
    residual = X @ params["w"] + params["b"] - y
    return jnp.mean(residual**2) + l2 * jnp.sum(params["w"] ** 2)


def mse(params, data):
    return ridge(params, data, 0.0)


def main() -> dict:
    started = time.perf_counter()
    full = gdjax.data.synthetic(0, 250, 40, noise=5.0, condition_number=10.0)
    X, y = np.asarray(full.X), np.asarray(full.y)
    train, val = (X[:50], y[:50]), (X[50:], y[50:])
    params0 = {"w": jnp.zeros(40), "b": jnp.zeros(())}
    learning_rate = 0.5 * gdjax.reference.curvature(train[0]).max_stable_lr  # a quarter of 2/L
    rule = gdjax.rules.sgd(learning_rate)

    def heldout(h, train):
        """Held-out MSE after NUM_STEPS of gradient descent on the ridge cost with l2 = exp(h)."""
        cost = gdjax.bind(ridge, l2=jnp.exp(h["log_l2"]))
        trace = gdjax.run(cost, rule, params0, train, num_steps=NUM_STEPS)
        return mse(trace.params, val)

    h = {"log_l2": jnp.asarray(np.log(1e-3))}
    report = gdjax.check_grad(heldout, h, train, num_points=3, scale=1.0)
    assert report.ok and report.status == "pass", str(report)

    value_and_grad = jax.jit(jax.value_and_grad(heldout))
    opt = optax.adam(0.1)
    state = opt.init(h)
    start_loss = float(value_and_grad(h, train)[0])
    for _ in range(OUTER_STEPS):
        loss, g = value_and_grad(h, train)
        updates, state = opt.update(g, state)
        h = optax.apply_updates(h, updates)
    learned_l2 = float(jnp.exp(h["log_l2"]))
    learned_loss = float(value_and_grad(h, train)[0])
    # The same check as at the start (3 points, scale 1) reuses its compiled programs.
    learned_check = gdjax.check_grad(heldout, h, train, num_points=3, scale=1.0)

    result = gdjax.sweep(
        ridge,
        gdjax.rules.sgd,
        params0,
        train,
        grid={"learning_rate": learning_rate, "l2": GRID},
        num_steps=NUM_STEPS,
    )
    final = result.trace.params
    grid_losses = np.array(
        [float(mse({"w": final["w"][i], "b": final["b"][i]}, val)) for i in range(len(GRID))]
    )
    best = int(np.argmin(grid_losses))

    print(f"ridge, 50 examples x 40 features, {NUM_STEPS} GD steps at learning rate {learning_rate:.3g}")
    print(f"hypergradient check at l2 = 1e-3 (3 points):      {report.verdict}")
    print(f"hypergradient check at the learned l2 (3 points): {learned_check.verdict}")
    rows = [
        ("start", 1e-3, start_loss),
        (f"learned: Adam on log(l2), {OUTER_STEPS} hypergradient steps", learned_l2, learned_loss),
        (f"best of a {len(GRID)}-point grid (gdjax.sweep)", GRID[best], grid_losses[best]),
    ]
    print(f"\n{'':<46}{'l2':>10}  {'held-out MSE':>12}")
    for label, l2, loss in rows:
        print(f"{label:<46}{l2:>10.4g}  {loss:>12.4f}")
    print(f"\n{time.perf_counter() - started:.1f} s")
    return {
        "learned_l2": learned_l2,
        "learned_loss": learned_loss,
        "grid_l2": float(GRID[best]),
        "grid_loss": float(grid_losses[best]),
        "check": report,
        "learned_check": learned_check,
    }


if __name__ == "__main__":
    main()
