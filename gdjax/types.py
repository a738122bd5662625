"""Small named results shared by every layer. Nothing here computes."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

import jax

PyTree = Any


class Status(enum.IntEnum):
    """How a run ended. Stored as int32 arrays inside traces so that statuses vmap.

    `MAX_STEPS`: used the whole step budget without meeting a stopping tolerance.
    `CONVERGED`: a stopping tolerance (parameter change, gradient norm, patience) was met.
    `DIVERGED`: the loss grew past `divergence_factor` times its initial value.
    `NONFINITE`: the loss, gradient or parameters became NaN or infinite.
    """

    MAX_STEPS = 0
    CONVERGED = 1
    DIVERGED = 2
    NONFINITE = 3

    def __str__(self) -> str:
        return self.name.lower()


class Trace(NamedTuple):
    """Histories of one run (or, with a leading grid axis, of every lane of a sweep).

    Attributes:
      params: final parameters (the last finite iterate for a diverged run).
      loss_history: `(num_steps + 1,)` full-data cost; entry 0 is before any update. After a run
        stops, the remaining entries repeat the frozen value.
      params_history: parameter pytree with a leading axis of `num_steps // record_every + 1`
        records, taken at steps `0, record_every, 2 * record_every, ...`.
      grad_norm_history: `(num_steps + 1,)` global norm of the full-data gradient at each iterate.
      steps: number of updates applied to the parameters.
      status: a `Status` code (int32).
      stop_step: the step at which the run stopped; `num_steps` if it used its whole budget.
    """

    params: PyTree
    loss_history: jax.Array
    params_history: PyTree
    grad_norm_history: jax.Array
    steps: jax.Array
    status: jax.Array
    stop_step: jax.Array

    @property
    def final_loss(self) -> jax.Array:
        """Loss at the final parameters (last entry of `loss_history`)."""
        return self.loss_history[..., -1]

    def status_name(self) -> str | list:
        """Status as lower-case text: a string for one run, a nested list for a sweep."""
        import numpy as np

        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return str(Status(int(codes)))
        return np.vectorize(lambda c: str(Status(int(c))), otypes=[object])(codes).tolist()
