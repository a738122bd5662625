"""Small named results shared by every layer. Nothing here computes."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:  # annotations only: reading results (gdjax.study.drawing) does not import JAX
    import jax

PyTree = Any


class Status(enum.IntEnum):
    """How a run ended. Stored as int32 arrays inside traces so that statuses vmap.

    `MAX_STEPS`: used the whole step budget without meeting a stopping tolerance.
    `CONVERGED`: a stopping tolerance (parameter change, gradient norm, patience) was met.
    `DIVERGED`: the loss grew past `divergence_factor` times its initial value.
    `NONFINITE`: the loss, gradient or parameters became NaN or infinite.
    `INVALID`: a hyperparameter value is outside its domain (a negative or non-finite learning rate,
      a momentum of 1), found inside the program because the value was traced (`jax.jit`,
      `jax.vmap` or `jax.grad` over it) and so could not be refused on the host. No step is taken;
      `Trace.invalid` says which value.
    """

    MAX_STEPS = 0
    CONVERGED = 1
    DIVERGED = 2
    NONFINITE = 3
    INVALID = 4

    def __str__(self) -> str:
        return self.name.lower()


class Trace(NamedTuple):
    """Histories of one run (or, with a leading lane axis, of every lane of a sweep).

    Measurement runs on an evaluation schedule (`eval_steps`: `0, k, 2k, ...` and the last step);
    stepping records only the loss of each step's own batch, which is free.

    Attributes:
      params: final parameters (the last finite iterate for a run that blew up).
      loss_history: `(num_evals,)` full-data cost at `eval_steps`; entry 0 is before any update.
        After a run stops, later entries repeat the frozen value.
      params_history: parameter pytree with a leading axis of records, taken at `record_steps`.
      grad_norm_history: `(num_evals,)` global norm of the full-data gradient at `eval_steps`.
      steps: number of updates applied to the parameters.
      status: a `Status` code (int32).
      stop_step: the step at which the run stopped; `-1` if it used its whole budget.
      eval_steps: `(num_evals,)` int32, the steps evaluated. In a sweep's stacked trace it has the
        lane axis like every other field, `(lanes, num_evals)`, each row the same (so `lane(i)`
        slices it with the rest); `SweepResult.eval_steps` is the shared `(num_evals,)` row.
      batch_loss_history: `(num_steps,)` loss of the batch each step's update used (for full batch,
        the full-data loss at every step), or None when it would exceed the recording cap.
      metrics: `{name: (num_evals,)}`, the user's metrics at `eval_steps`.
      record_steps: `(num_records,)` int32, the steps whose iterates are in `params_history`.
      evaluated_at: None when loss, metrics, `params` and `params_history` are at the iterates;
        otherwise the name of the point the rule asked for (`"schedule_free_eval_params"`: the
        schedule-free average, where the method is meant to be evaluated).
      invalid: for a run whose hyperparameter values were traced, `{name: bool}`: which values lie
        outside their domain (the run's status is then `INVALID`; cost hyperparameters are named
        `cost.<name>`). None when the values were checked on the host, before the run.
    """

    params: PyTree
    loss_history: jax.Array
    params_history: PyTree
    grad_norm_history: jax.Array
    steps: jax.Array
    status: jax.Array
    stop_step: jax.Array
    eval_steps: jax.Array | None = None
    batch_loss_history: jax.Array | None = None
    metrics: dict | None = None
    record_steps: jax.Array | None = None
    evaluated_at: str | None = None
    invalid: dict | None = None

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
      along: `"coordinates"` (the gradient's components, compared one by one) or `"directions"`
        (directional derivatives along random unit directions in the leaf; `index` is then
        `(direction,)`).
      excused: components left out of the verdict of a pair with `fd`: where the cost is not
        differentiable or the finite difference has not converged (`GradCheckReport.kinks`,
        `GradCheckReport.unconverged`).
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
    along: str = "coordinates"
    excused: int = 0


class GradCheckFinding(NamedTuple):
    """One checked coordinate (or direction) of one leaf at one point where the finite differences
    cannot judge the gradient, which is therefore not compared with them there.

    Attributes:
      kind: `"kink"` (the one-sided differences disagree with each other at every step: the cost
        is not differentiable at this point along it) or `"unconverged"` (central differences at
        different steps disagree with each other: the finite difference is not accurate here).
      leaf: the leaf's path in the params pytree.
      index: the coordinate within the leaf, or `(direction,)` along directions.
      point: the checked point (0 is the given params).
      along: `"coordinates"` or `"directions"`.
      a, b: for a kink, the forward and backward one-sided differences `(f(x + h) - f(x)) / h` and
        `(f(x) - f(x - h)) / h`; for unconverged differences, the estimate and its error estimate.
    """

    kind: str
    leaf: str
    index: tuple
    point: int
    along: str
    a: float
    b: float

    @property
    def where(self) -> str:
        """`w[3, 1]`, `lr`, or `0/0 along direction 2`."""
        if self.along == "directions":
            return f"{self.leaf} along direction {self.index[0]}"
        return f"{self.leaf}[{', '.join(map(str, self.index))}]" if self.index else self.leaf


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
      num_directions: random directions checked per leaf and point (0: none).
      zero_leaves: leaves whose gradient is exactly zero at every checked point while the cost
        does not change at all when they move (a piecewise-constant cost, an integer cast, an
        unused leaf): gradient descent cannot move them, so the report fails.
      kinks: `GradCheckFinding`s where the cost is not differentiable at the point (its one-sided
        differences disagree with each other at every step): a warning, unless
        `check_grad(..., kinks="fail")`.
      unconverged: `GradCheckFinding`s where the finite differences did not converge (central
        differences at different steps disagree with each other): a warning, since the gradient
        there could not be checked against them.
      unchecked: leaves whose gradient nothing compared: every finite difference of theirs is
        excused (a kink, or not converged) and no other computation ran beside reverse mode
        (forward mode is skipped through a `jax.custom_vjp`). A warning that says so, not a pass.
      notes: how the finite differences were taken where it is not float64 arithmetic on the
        cost as given: a cost that casts to float32 on the params' path is differenced on
        float32's steps and tolerances, and one that draws random numbers in its own precision
        (float64 would draw other numbers). Printed under the table's first line.

    `status` is `"fail"` when `ok` is false, `"warn"` when it is true but there are kinks or
    unconverged differences, else `"pass"`. `ok` (and `bool(report)`) is true for a warning.
    """

    ok: bool
    rows: tuple[GradCheckRow, ...]
    methods: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]
    num_points: int
    num_coordinates: int
    total_coordinates: int
    num_directions: int = 0
    zero_leaves: tuple[str, ...] = ()
    kinks: tuple[GradCheckFinding, ...] = ()
    unconverged: tuple[GradCheckFinding, ...] = ()
    notes: tuple[str, ...] = ()
    unchecked: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.ok)

    @property
    def status(self) -> str:
        """`"pass"`, `"warn"` (kinks or unconverged differences, nothing wrong found) or `"fail"`."""
        if not self.ok:
            return "fail"
        return "warn" if self.kinks or self.unconverged or self.unchecked else "pass"

    @property
    def failed(self) -> tuple[GradCheckRow, ...]:
        """The rows that failed, in table order."""
        return tuple(r for r in self.rows if not r.ok)

    def records(self) -> list[dict]:
        """The table as a list of plain dicts (one per row), e.g. for `pandas.DataFrame`."""
        return [r._asdict() for r in self.rows]

    @property
    def verdict(self) -> str:
        """One line: `PASS: ...`, `WARN: not differentiable at this point ...` or `FAIL: <pair> on
        [<leaves>] (max rel err x); ...`, naming the computation that disagrees."""
        notes = self._finding_notes()
        if self.ok and not notes:
            along = f" and {self.num_directions} direction(s) per leaf" if self.num_directions else ""
            return (
                f"PASS: {len(self.rows)} comparisons of {', '.join(self.methods)} agree "
                f"at {self.num_points} point(s){along}"
            )
        if self.ok:
            if self.unchecked:
                return (
                    "WARN: " + "; ".join(notes) + f"; nothing else checked the gradient of "
                    f"{_first_few(list(self.unchecked))}, so it is not checked at all"
                )
            return "WARN: " + "; ".join(notes) + "; everything else agrees"
        parts = []
        if self.zero_leaves:
            parts.append(
                f"the gradient is identically zero on {list(self.zero_leaves)} at every checked "
                "point and the cost does not change when they move (piecewise constant, e.g. "
                "jnp.floor or an integer cast, or unused): gradient descent cannot move them"
            )
        by_pair: dict[str, list[GradCheckRow]] = {}
        for r in self.failed:
            label = r.pair + (" along directions" if r.along == "directions" else "")
            by_pair.setdefault(label, []).append(r)
        parts += [
            f"{label} on {[r.leaf for r in rows]} (max rel err {max(r.max_rel_err for r in rows):.3g})"
            for label, rows in by_pair.items()
        ]
        head = "; ".join(parts) + self._suspect()
        return "FAIL: " + "; ".join(x for x in (head, *notes) if x)

    def _suspect(self) -> str:
        """Which computation the failures point at. A method present in every failing pair, while
        the pairs without it pass, is the suspect; finite differences are never blamed, since the
        ones judged are converged and have no kink (the others are excused): the methods that
        disagree with them are."""
        pairs = {r.pair for r in self.failed}
        common = set.intersection(*(set(pair.split(" vs ")) for pair in pairs)) if pairs else set()
        if len(common) == 1 and common != {"fd"}:
            return f"; common to every failure: {common.pop()}"
        wrong = [m for m in ("reverse", "forward", "analytic") if f"{m} vs fd" in pairs]
        if not wrong:
            return ""
        names = {"reverse": "reverse mode", "forward": "forward mode", "analytic": "the analytic gradient"}
        who = " and ".join(names[m] for m in wrong)
        rule = (
            " (a wrong derivative rule: a jax.custom_jvp or custom_vjp, or a derivative taken "
            "through a non-differentiable operation)"
            if set(wrong) & {"reverse", "forward"}
            else ""
        )
        return (
            f"; the suspect is {who}: {'it disagrees' if len(wrong) == 1 else 'they disagree'} "
            f"with finite differences that are converged and whose one-sided differences agree{rule}"
        )

    def _finding_notes(self) -> list[str]:
        notes = []
        if self.kinks:
            k = self.kinks[0]
            notes.append(
                "not differentiable at this point: one-sided differences disagree on "
                f"{_first_few([f.where for f in self.kinks])} (e.g. {k.where} at point {k.point}: "
                f"forward {k.a:.4g}, backward {k.b:.4g}); autodiff gives one one-sided value or "
                "subgradient there, not compared with finite differences"
            )
        if self.unconverged:
            u = max(self.unconverged, key=lambda f: f.b / max(abs(f.a), 1e-300))
            notes.append(
                "finite differences are not converged at this point on "
                f"{_first_few([f.where for f in self.unconverged])} (e.g. {u.where} at point "
                f"{u.point}: {u.a:.6g} +- {u.b:.2g}: steps that disagree); the gradient there is "
                "not checked against them (try another fd_step or other points)"
            )
        return notes

    def __str__(self) -> str:
        width = max([len("leaf")] + [len(r.leaf) for r in self.rows])
        pair_width = max([len("pair")] + [len(r.pair) for r in self.rows])
        directions = any(r.along == "directions" for r in self.rows)
        lines = [
            f"check_grad: {', '.join(self.methods)} at {self.num_points} point(s), "
            f"{self.num_coordinates} of {self.total_coordinates} coordinates"
            + (f", {self.num_directions} random direction(s) per leaf" if self.num_directions else "")
        ]
        lines += [f"  {method} skipped: {reason}" for method, reason in self.skipped]
        lines += [f"  note: {note}" for note in self.notes]
        # The `along` column appears only when some rows are directional: small checks keep the
        # original table.
        along = lambda text: f"  {text:<11}" if directions else ""
        header = (
            f"{'leaf':<{width}}  {'pair':<{pair_width}}{along('along')}  {'max abs err':>11}"
            f"  {'max rel err':>11}  {'err/tol':>9}  {'dtype':>8}  {'point':>5}  status"
        )
        lines += [header, "-" * len(header)]
        for r in self.rows:
            status = ("pass" if r.ok else "FAIL") + ("*" if r.excused else "")
            lines.append(
                f"{r.leaf:<{width}}  {r.pair:<{pair_width}}{along(r.along)}  {r.max_abs_err:11.3e}  "
                f"{r.max_rel_err:11.3e}  {r.err_over_tol:9.3g}  {r.dtype:>8}  {r.point:5d}  "
                f"{status:>6}"
            )
        if any(r.excused for r in self.rows):
            lines.append(
                "* errors where the cost is not differentiable or the finite differences did not "
                "converge are shown but not judged"
            )
        lines.append(self.verdict)
        return "\n".join(lines)


def _first_few(names: list[str], limit: int = 6) -> str:
    """`['a', 'b']`, or the first `limit` distinct names and how many more."""
    unique = list(dict.fromkeys(names))
    more = f" and {len(unique) - limit} more" if len(unique) > limit else ""
    return f"{unique[:limit]}{more}"
