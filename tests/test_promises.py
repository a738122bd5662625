"""The README's promises about the core, each a test (issue 19, items 3, 4, 5 and 7).

- Stopping decisions do not depend on `chunk_size`: the stopping tests' norms are summed in an order
  that does not depend on the vmapped width, and a wide float32 sweep with `tol` keeps every status
  and step count for chunk sizes 1, 3, 7 and one call.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gdjax
from gdjax import loop

COST = gdjax.make_cost(gdjax.linear, gdjax.mse)


# ------------------------------------------------------------------ stopping decisions and chunking
@pytest.mark.parametrize("size", [3, 64, 1000])
def test_the_stopping_norm_has_the_same_bits_for_any_vmapped_width(size):
    """XLA's `reduce` orders a vmapped sum by the whole operand's shape (a plain `jnp.sum` of 64
    float32 values differed in 122 of 234 lanes between one call and chunks); the stopping tests'
    norm must not."""
    rows = np.random.default_rng(0).normal(size=(234, size)).astype(np.float32)
    norm = jax.jit(jax.vmap(lambda x: loop._tree_sq_norm({"a": x, "b": x[:2]})))
    whole = np.asarray(norm(rows))
    for width in (1, 2, 3, 7):
        parts = np.concatenate([np.asarray(norm(rows[i : i + width])) for i in range(0, len(rows), width)])
        np.testing.assert_array_equal(parts, whole, err_msg=f"width {width}")
    alone = np.asarray([jax.jit(loop._tree_sq_norm)({"a": x, "b": x[:2]}) for x in rows[:8]])
    np.testing.assert_array_equal(alone, whole[:8])


def _wide_tol_sweep(chunk_size):
    s = gdjax.data.synthetic(0, 64, 3)
    X, y = s.X.astype(np.float32), s.y.astype(np.float32)
    params0 = {"w": np.zeros(3, np.float32), "b": np.zeros((), np.float32)}
    return gdjax.sweep(
        COST,
        "sgd",
        params0,
        (X, y),
        # Step sizes that decay at different speeds: each lane's step norm crosses tol at its own step.
        grid={"learning_rate": np.geomspace(1e-3, 0.5, 39).astype(np.float32), "schedule": "inverse_time"},
        num_steps=200,
        seeds=[0, 1, 2, 3, 4, 5],
        batch_size=8,
        tol=1e-4,
        chunk_size=chunk_size,
    )


def test_a_wide_float32_sweep_with_tol_keeps_statuses_and_steps_for_any_chunk_size():
    whole = _wide_tol_sweep(None)
    status, steps = np.asarray(whole.trace.status), np.asarray(whole.trace.steps)
    assert whole.num_lanes == 234
    assert set(whole.trace.status_name()) == {"converged", "max_steps"}
    assert len(set(steps[steps < 200].tolist())) > 20  # lanes stop at many different steps
    for chunk_size in (1, 3, 7):
        chunked = _wide_tol_sweep(chunk_size)
        np.testing.assert_array_equal(np.asarray(chunked.trace.status), status, err_msg=f"chunk {chunk_size}")
        np.testing.assert_array_equal(np.asarray(chunked.trace.steps), steps, err_msg=f"chunk {chunk_size}")
