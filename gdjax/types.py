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
      stop_step: the step at which the run stopped; `-1` if it used its whole budget.
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


class GradCheckRow(NamedTuple):
    """One comparison of two gradient computations on one params leaf, worst over points.

    Attributes:
      leaf: the leaf's path in the params pytree (`"w"`, `"hidden/0"`; `"<root>"` for a bare array).
      pair: `"<method> vs <method>"`, methods being `reverse`, `forward`, `fd`, `analytic`.
      max_abs_err: largest `|a_i - b_i|` over the checked coordinates and points.
      max_rel_err: largest `|a_i - b_i| / max(|a_i|, |b_i|, floor)`; `floor` keeps components
        that are zero up to round-off from reading as 100% wrong (see `gdjax.gradcheck`).
      err_over_tol: largest error divided by its allowed error; the comparison passes iff <= 1.
      ok: whether the comparison passed.
      point: index of the point with the largest `err_over_tol` (0 is the given params).
      index: index, within the leaf, of the worst component at that point.
      dtype: the dtype whose tolerances were used (the less precise of the two computations).
      rtol: the relative tolerance used.
    """

    leaf: str
    pair: str
    max_abs_err: float
    max_rel_err: float
    err_over_tol: float
    ok: bool
    point: int
    index: tuple
    dtype: str
    rtol: float


class GradCheckReport(NamedTuple):
    """What `gdjax.check_grad` found: one `GradCheckRow` per (leaf, pair) and a verdict.

    `str(report)` is a fixed-width table ending in a one-line verdict; `bool(report)` is `report.ok`,
    so `assert report, report` reads as it should.

    Attributes:
      ok: every comparison passed.
      rows: the comparisons, leaf by leaf in params order, pairs in a fixed order.
      methods: the gradient computations compared, e.g. `("reverse", "forward", "fd", "analytic")`.
      skipped: `(method, reason)` for computations that could not run (forward mode through a
        `jax.custom_vjp`).
      num_points: points checked (point 0 is the given params).
      num_coordinates: coordinates checked per point, over all leaves.
      total_coordinates: coordinates in the params pytree.
    """

    ok: bool
    rows: tuple[GradCheckRow, ...]
    methods: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    num_points: int
    num_coordinates: int
    total_coordinates: int

    def __bool__(self) -> bool:
        return bool(self.ok)

    @property
    def failed(self) -> tuple[GradCheckRow, ...]:
        """The rows that failed, in table order."""
        return tuple(r for r in self.rows if not r.ok)

    def records(self) -> list[dict]:
        """The table as a list of plain dicts (one per row), e.g. for `pandas.DataFrame`."""
        return [r._asdict() for r in self.rows]

    @property
    def verdict(self) -> str:
        """One line: `PASS: ...` or `FAIL: <pair> on [<leaves>] (max rel err x); ...`."""
        if self.ok:
            return (
                f"PASS: {len(self.rows)} comparisons of {', '.join(self.methods)} agree "
                f"at {self.num_points} point(s)"
            )
        by_pair: dict[str, list[GradCheckRow]] = {}
        for r in self.failed:
            by_pair.setdefault(r.pair, []).append(r)
        parts = [
            f"{pair} on {[r.leaf for r in rows]} (max rel err {max(r.max_rel_err for r in rows):.3g})"
            for pair, rows in by_pair.items()
        ]
        # A method present in every failing pair, while the pairs without it pass, is the suspect.
        common = set.intersection(*(set(pair.split(" vs ")) for pair in by_pair))
        suspect = f"; common to every failure: {common.pop()}" if len(common) == 1 else ""
        return "FAIL: " + "; ".join(parts) + suspect

    def __str__(self) -> str:
        width = max([len("leaf")] + [len(r.leaf) for r in self.rows])
        pair_width = max([len("pair")] + [len(r.pair) for r in self.rows])
        lines = [
            f"check_grad: {', '.join(self.methods)} at {self.num_points} point(s), "
            f"{self.num_coordinates} of {self.total_coordinates} coordinates"
        ]
        lines += [f"  {method} skipped: {reason}" for method, reason in self.skipped]
        header = (
            f"{'leaf':<{width}}  {'pair':<{pair_width}}  {'max abs err':>11}  {'max rel err':>11}"
            f"  {'err/tol':>9}  {'dtype':>8}  {'point':>5}  status"
        )
        lines += [header, "-" * len(header)]
        for r in self.rows:
            lines.append(
                f"{r.leaf:<{width}}  {r.pair:<{pair_width}}  {r.max_abs_err:11.3e}  "
                f"{r.max_rel_err:11.3e}  {r.err_over_tol:9.3g}  {r.dtype:>8}  {r.point:5d}  "
                f"{'pass' if r.ok else 'FAIL':>6}"
            )
        lines.append(self.verdict)
        return "\n".join(lines)
