"""Gradient checks: reverse mode vs forward mode vs central differences vs a hand-derived gradient.

`check_grad(cost, params, data)` computes the gradient of `cost` with respect to every leaf of the
params pytree in up to four independent ways and compares every pair:

- `reverse`: `jax.grad`, in the params' own dtype (what gdjax's runs use);
- `forward`: `jax.jvp` along each basis direction, in the params' own dtype;
- `fd`: float64 central finite differences, Richardson-extrapolated on a ladder of steps;
- `analytic`: a hand-derived gradient `analytic(params, data)`, e.g. `gdjax.reference.mse_grad`.

A wrong analytic formula shows up as every `analytic vs ...` pair failing; a broken `custom_vjp`
as `reverse vs fd` failing while `forward vs fd` passes; a broken `custom_jvp` as both autodiff
modes disagreeing with `fd` while agreeing with each other.

**What is wrong, not only that something is** (gdjax issues 19 and 20). Finite differences judge
only where they can: per coordinate (or direction) the ladder of steps gives estimates whose mutual
agreement is their error estimate, and

- a *kink*: the one-sided differences `(f(x + h) - f(x)) / h` and `(f(x) - f(x - h)) / h` disagree
  beyond tolerance and their gap does not shrink with `h` (a smooth cost's gap is `|f''| h`): the
  cost is not differentiable at this point (ReLU or `|w|` at 0, a tie in a max). Autodiff returns
  one one-sided value there, by convention; it is not compared with `fd`, and the report warns
  (`report.kinks`, `status == "warn"`), or fails with `kinks="fail"`;
- *unconverged* differences: no step gives estimates that agree to `FD_UNCONVERGED` (a noisy
  cost): they are not compared either, and the report warns that they are not converged;
- anywhere else the differences are converged and kink-free, so a pair with `fd` that fails blames
  the other side: `reverse` and `forward` both (a wrong `custom_jvp`), `reverse` alone (a wrong
  `custom_vjp`), or `analytic`, and the verdict names it.

How two gradient estimates `a`, `b` of one component are compared. The relative error is

    rel_i = |a_i - b_i| / max(|a_i|, |b_i|, floor),   floor = TOLERANCES[dtype].floor * S,

where `S`, the gradient scale at that point, is the larger of the largest gradient component in
the whole params pytree (for that pair) and `|f(params)| / max(1, max|params|)`, the gradient of a
cost of that size over a unit (or params-sized) step. Plain `|a - b| / max(|a|, |b|)` would call
a component that is zero up to round-off (`db` at the optimum, a direction with little curvature)
100% wrong; with the floor, such components are compared on the scale of the rest of the gradient.
A component passes when

    |a_i - b_i| <= rtol * max(|a_i|, |b_i|, floor) + atol [+ fd_err_i when one side is `fd`],

and the report gives `err_over_tol`, the largest ratio of the two sides (pass iff <= 1).
`fd_err_i` is the finite difference's own error estimate (`_extrapolate`): the disagreement of the
chosen Richardson estimate with its neighbours on the step ladder plus a round-off bound `10 eps
|f| / h`. It lets a cost at an exact stationary point, or one with large higher derivatives
(Rosenbrock; the final loss of a 60-step momentum run as a function of its learning rate, where a
fixed step of 6e-6 was 92% off and the chosen step, near 1e-9, agrees with autodiff to 1e-11), pass
without loosening `rtol`, and it is zero for the pairs that do not involve `fd`.

**At model scale** (more than `DIRECTIONS_ABOVE` coordinates, or `num_directions=`), checking every
coordinate costs one jvp and `2 FD_RUNGS + 1` cost evaluations per coordinate (a 17k-parameter MLP
ran out of memory at 45 GB with four). Instead, each leaf is checked along `num_directions` random
unit directions `v` confined to that leaf, all in float64: `<reverse, v>` (one `jax.grad`), the
forward-mode `jvp` along `v`, the differences of `t -> cost(params + t v)` on the step ladder
(`2 FD_RUNGS + 1` cost evaluations per direction) and `<analytic, v>`; plus the per-coordinate
comparison above on `max_coordinates` coordinates drawn from every leaf, in the params' own
dtype; and, for params that are not float64, `reverse vs reverse64`: the gradient in the params'
own dtype against the float64 reverse gradient (the one the directions check) at every
coordinate, for one `jax.grad`.

Why a 5% error in ONE weight's gradient is still caught. Directions are Rademacher, `v_j = +-1 /
sqrt(n)` on a leaf of `n` coordinates, so the error `0.05 g_i` of weight `i` moves every directional
derivative by exactly `0.05 |g_i| / sqrt(n)`, never less (a Gaussian `v_i` can be near zero), while
`<g, v>` itself is about `|g_leaf| / sqrt(n)`. The relative change, `0.05 |g_i| / |g_leaf|`, is
about `0.05 / sqrt(n)` for a typical weight: 6e-4 for the 8,192-weight layer below, against
float64's `rtol = 1e-6` (forward vs reverse agree to ~1e-15, the float64 difference to ~1e-10).
The check therefore catches it unless `|g_i|` is below ~1e-4 of the leaf's gradient norm, i.e. the
weight hardly matters; the sampled coordinates alone would see it with probability
`max_coordinates / n`. Measured on a 17,226-parameter tanh MLP (64-128-64-10, 256 examples,
softmax cross-entropy), with a 5% error in one random weight of the 8,192-weight layer, at
default settings (16 directions and 8 coordinates per leaf), one key per trial: a `custom_vjp`
mutant was caught 70 of 70 times in float32 (50 of them with 32 sampled coordinates per leaf)
and 10 of 10 in float64, a mutant analytic gradient 20 of 20; the worst directional relative
errors were 1e-4 to 8e-4, 100-800x the tolerance. Sampled coordinates alone would have caught
it 8 times in 8,192. The check takes 3-5 s on 2 shared CPU cores, mostly compilation (0.6 s on
a second call); checking every coordinate ran out of memory (45 GB), and checking every
coordinate of a 2,410-parameter MLP took 4.8 s (15 s at 4 points).
These times are from the 4-evaluation difference; the step ladder (`2 FD_RUNGS + 1 = 25`
evaluations per coordinate or direction) took the tests' 2,074-parameter MLP from 3.8 s to 6.6 s
(0.12 s to 0.62 s on a second call), float64, 2 shared CPU cores.

**Float64 without the global flag.** The float64 computations (differences, directional checks)
run inside `jax.enable_x64(True)`, which is scoped to the call and restores the caller's setting;
the params' own dtype computations run under the caller's setting, so a float32 program is checked
as it runs.

**A gradient that is identically zero is not a pass** (gdjax issue 12): a leaf whose reverse-mode
gradient is exactly zero at every checked point, while the cost did not change at all along some
checked coordinate or direction (`f` took one value on the whole step ladder), is reported in
`report.zero_leaves` and fails the report: the cost is piecewise constant there (`jnp.floor`, an
integer cast) or ignores the leaf, and gradient descent cannot move it. A smooth cost at an exact
stationary point is not flagged, because its values change on the larger steps of the ladder
(`f(x + h) - f(x) ~ f'' h^2 / 2`); one whose curvature there is below its own round-off would be,
so check more points.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.core import Literal

from gdjax.types import GradCheckFinding, GradCheckReport, GradCheckRow, PyTree
from gdjax.validation import (
    as_key,
    check_cost,
    check_data,
    check_finite_number,
    check_params,
    check_positive_int,
)

MAX_POINTS_BYTES = 2**30  # the perturbed copies of params that `num_points` stacks on the host


class Tolerance(NamedTuple):
    """`rtol`: allowed relative error; `floor`: fraction of the gradient scale below which a
    component is compared on that absolute scale instead of relative to itself."""

    rtol: float
    floor: float


# Keyed by the less precise of the two computations compared (fd and reference.mse_grad are
# float64; reverse and forward run in the params' dtype, or the cost's output dtype if lower).
# Every mistake this tool exists to catch (a missing factor, a sign, a sum for a mean, a dropped
# term) is an O(1) relative error, so these sit far above round-off and far below the bugs.
TOLERANCES: dict[np.dtype, Tolerance] = {
    # Autodiff agrees to ~1e-13; the float64 central difference with h ~ eps^(1/3) to
    # ~eps^(2/3) ~ 4e-11 times problem constants (its own estimate fd_err is added on top).
    np.dtype(np.float64): Tolerance(rtol=1e-6, floor=1e-3),
    # eps = 1.2e-7. A float32 cost summing n examples carries ~sqrt(n) * eps relative error in its
    # terms (~4e-6 at n = 1000) and a gradient component that cancels (near the optimum) inherits
    # it relative to the gradient scale, hence the larger floor; 1e-3 leaves a 100x margin.
    np.dtype(np.float32): Tolerance(rtol=1e-3, floor=1e-2),
    # eps = 9.8e-4 (float16) and 7.8e-3 (bfloat16): a few ulps of the sum, still well below the
    # 0.5 relative error of a missing factor 2.
    np.dtype(jnp.float16): Tolerance(rtol=3e-2, floor=3e-2),
    np.dtype(jnp.bfloat16): Tolerance(rtol=1e-1, floor=1e-1),
}

METHODS = ("reverse", "forward", "fd", "analytic")
PAIRS = (
    ("reverse", "forward"),
    ("reverse", "fd"),
    ("forward", "fd"),
    ("analytic", "reverse"),
    ("analytic", "forward"),
    ("analytic", "fd"),
)

# Central differences err by h^2 |f'''| / 6 (truncation) + eps |f| / h (round-off); with f''' of the
# size of f / x^3 the sum is smallest at h ~ eps^(1/3) |x|, i.e. a relative error ~eps^(2/3) ~ 4e-11
# in float64 (Nocedal & Wright, Numerical Optimization, 2nd ed., sec. 8.1). max(1, |x_i|) keeps
# the step from vanishing at x_i = 0. That is the ladder's second rung: a function with large
# higher derivatives (the final loss of a 60-step momentum run as a function of its learning rate,
# 1.5e-5, needs h ~ 1e-9) is differentiated on the smaller rungs, a noisy one on the larger.
FD_STEP = float(np.finfo(np.float64).eps) ** (1.0 / 3.0)
# The step ladder: FD_RUNGS steps fd_step * max(1, |x|) * FD_RATIO**(1 - j), j = 0..FD_RUNGS-1,
# i.e. from 4x the classic step down by 4^10 (to ~6e-12 max(1, |x|)): 2 FD_RUNGS + 1 cost
# evaluations per coordinate or direction.
FD_RATIO = 4
FD_RUNGS = 12
_LADDER = np.asarray(float(FD_RATIO) ** (1.0 - np.arange(FD_RUNGS)))
# A finite difference whose own error estimate is above this fraction of the gradient's size is
# "not converged": no step gave differences that agree, and comparisons with it prove little.
FD_UNCONVERGED = 1e-3
# One-sided differences whose gap does not shrink by at least this factor from one step to the
# next, 4x smaller, are a kink (a smooth function's gap shrinks by 4).
_KINK_SHRINK = 2.0
# Relative round-off of one float64 cost evaluation (a sum of n terms), in units of eps.
_ROUNDOFF_ULPS = 10.0
# Refuse directions that would take more host memory than this (issue 12: sizes before allocation).
_MAX_DIRECTION_BYTES = 2 * 2**30

# Above this many coordinates in params, check_grad checks directional derivatives along
# DEFAULT_DIRECTIONS random directions per leaf plus DEFAULT_COORDINATES sampled coordinates per leaf
# instead of every coordinate. Checking all 2,410 coordinates of a 64-32-10 MLP took 4.8 s (float64,
# 2 CPU cores; 14.7 s at 4 points), the directional check 2.5-3.7 s, nearly all compilation.
DIRECTIONS_ABOVE = 2000
DEFAULT_DIRECTIONS = 16
DEFAULT_COORDINATES = 8

# The batched evaluations (forward mode per coordinate or direction, the step ladder's 2 FD_RUNGS + 1
# costs per coordinate or direction, at every point) run in chunks whose values stay under about
# this many elements (1 GiB in float64). Vmapped whole, the 650 coordinates of the digits softmax
# (1,348 examples, 3 points) took 11 GB and 40 s, mostly page faults; in chunks 0.7 GB and 5-6 s.
_CHUNK_ELEMENTS = 2**27

# What a NumPy-only analytic function raises when traced: it is then called point by point.
_HOST_ONLY = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def check_grad(
    cost: Callable[[PyTree, PyTree], jax.Array],
    params: PyTree,
    data: PyTree = None,
    *,
    analytic: Callable[[PyTree, PyTree], PyTree] | None = None,
    num_points: int | None = None,
    key: jax.Array | int | None = None,
    scale: float = 1.0,
    rtol: float | None = None,
    atol: float = 0.0,
    fd_step: float | None = None,
    max_coordinates: int | None = None,
    num_directions: int | None = None,
    kinks: str = "warn",
    points: PyTree | None = None,
) -> GradCheckReport:
    """Checks the gradient of `cost` at `params` by computing it four ways and comparing them.

    Every leaf of `params` (any pytree) is checked coordinate by coordinate with reverse mode
    (`jax.grad`), forward mode (`jax.jvp` along basis directions), float64 central differences with
    step `h_i = fd_step * max(1, |x_i|)`, and `analytic(params, data)` when given. With
    `num_points`, the same comparison runs at `params` and at `num_points - 1` perturbed copies
    `params + scale * normal` in one vmapped call, and each row reports its worst point. The
    normal draws (and the coordinate and direction samples) come from a NumPy generator seeded by
    `key`: deterministic, and no XLA compilation for a few host-side draws.

    At model scale (more than `DIRECTIONS_ABOVE = 2000` coordinates, by default) every leaf is
    also checked along `num_directions` random unit directions, in float64, and the per-coordinate
    comparison runs on a sample of `max_coordinates` coordinates per leaf: a 17k-parameter MLP
    checks in 3-5 s on 2 CPU cores (mostly compilation), and a 5% error in a single weight's gradient is still
    caught (the module docstring says why, and what was measured).

    Tolerances come from `TOLERANCES`, keyed by the less precise dtype of each pair: float64
    `rtol = 1e-6`, float32 `rtol = 1e-3` (float32 autodiff against float64 differences: ~sqrt(n) *
    1.2e-7 relative round-off in a cost summing n examples, plus cancellation near an optimum).
    The module docstring defines the error measures.

    Float64 need not be enabled: the float64 computations run inside `jax.enable_x64(True)`,
    scoped to this call, and the params' own dtype computations under the caller's setting (with
    float64 off, float64 NumPy params are checked as the float32 arrays JAX makes of them). Float
    leaves of `params` and `data` are cast to float64 for the float64 computations only.

    Args:
      cost: `cost(params, data) -> scalar`, a pure JAX function.
      params: the point to check at: a pytree of floating-point arrays.
      data: the pytree passed to `cost` (None for costs that ignore it).
      analytic: optional hand-derived gradient, `analytic(params, data)` returning a pytree like
        `params`. A JAX-traceable one is vmapped with the rest; a NumPy one (such as
        `gdjax.reference.mse_grad`) is detected and called once per point.
      num_points: how many points to check (point 0 is `params`), not counting `points`; default 1.
      key: PRNG key (or int seed) for the perturbed points and the samples; default 0.
      scale: standard deviation of the perturbations.
      rtol: overrides the table's relative tolerance for every pair.
      atol: absolute tolerance added on top, in gradient units (default 0).
      fd_step: relative finite-difference step, the ladder's second rung: the steps are
        `fd_step * max(1, |x_i|) * FD_RATIO**(1 - j)`, `j = 0..FD_RUNGS - 1`; default
        `eps(float64)**(1/3) ~ 6.1e-6`.
      max_coordinates: check at most this many coordinates of each leaf, drawn without replacement
        from `key` (deterministic). Finite differences cost `2 FD_RUNGS + 1` evaluations per
        coordinate and forward mode one jvp, vmapped in chunks that hold about 1 GiB. Default:
        every coordinate, or `DEFAULT_COORDINATES = 8` per leaf when directions are checked.
      num_directions: random unit directions per leaf (Rademacher, confined to the leaf) along
        which reverse, forward, float64 differences and analytic are compared in float64; one jvp
        and `2 FD_RUNGS + 1` cost evaluations each. Default: `DEFAULT_DIRECTIONS = 16` when params
        have more than `DIRECTIONS_ABOVE` coordinates, else 0 (every coordinate is checked instead).
      kinks: `"warn"` (default): a point where the cost is not differentiable (its one-sided
        differences disagree, as for ReLU or `|w|` at 0) is reported in `report.kinks`, and the
        report warns (`report.status == "warn"`, `report.ok` true); `"fail"`: it fails.
      points: more points to check at, a stack like `params` with a leading axis (the starts of a
        sweep's lanes, say): checked after `params` and before the `num_points - 1` random ones.

    Returns:
      A `GradCheckReport`: `report.ok`, `report.rows` (per leaf, pair and `along`: max abs err,
      max rel err, err/tol, worst point), `report.failed`, `report.zero_leaves` (leaves with an
      identically zero gradient, which fail the report), and `str(report)`, a table ending in a
      verdict.

    Raises:
      ValueError: non-finite or inconsistent data; params that are not floating point or do not
        fit the cost; a cost that fails or returns a non-scalar; an analytic gradient shaped
        unlike params; a cost jax.grad cannot differentiate.

    Example:
      >>> import gdjax
      >>> X, y = gdjax.data.house_prices()
      >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
      >>> report = gdjax.check_grad(
      ...     cost, gdjax.init_linear(1), (X, y), analytic=gdjax.reference.mse_grad, num_points=4
      ... )
      >>> report.ok
      True
    """
    if not callable(cost):
        raise ValueError(f"cost must be callable as cost(params, data), got {cost!r}")
    if analytic is not None and not callable(analytic):
        raise ValueError(f"analytic must be callable as analytic(params, data), got {analytic!r}")
    check_positive_int("num_points", num_points, allow_none=True)
    check_positive_int("max_coordinates", max_coordinates, allow_none=True)
    if num_directions is not None and num_directions != 0:
        check_positive_int("num_directions", num_directions)
    check_finite_number("scale", scale, lower=0.0)
    check_finite_number("atol", atol, lower=0.0)
    if rtol is not None:
        check_finite_number("rtol", rtol, positive=True)
    if fd_step is not None:
        check_finite_number("fd_step", fd_step, positive=True, upper=1.0)
    check_params(params)
    complex_leaves = [x for x in jax.tree.leaves(params) if jnp.iscomplexobj(x)]
    if complex_leaves:
        # run and sweep take complex parameters; the comparisons here are of real coordinates.
        raise ValueError(
            "check_grad compares real coordinates; params has complex leaves: check the cost of "
            "(real, imag) pairs instead, e.g. cost(jax.lax.complex(p['re'], p['im']), data)"
        )
    key = as_key(key)  # as `run` reads it: a seed, a typed key or raw key data, and one key only
    if num_points:
        # Every point is a perturbed copy of params (float64 on the host): sized before it is drawn.
        per_point = 8 * sum(int(np.size(leaf)) for leaf in jax.tree.leaves(params))
        if num_points * per_point > MAX_POINTS_BYTES:
            raise ValueError(
                f"num_points={num_points} copies of params need {num_points * per_point / 2**30:.1f} GiB, "
                f"more than {MAX_POINTS_BYTES // 2**30} GiB: use num_points <= "
                f"{max(1, MAX_POINTS_BYTES // per_point)}"
            )
    check_data(data)
    check_cost(cost, params, data)
    if kinks not in ("warn", "fail"):
        raise ValueError(f"kinks must be 'warn' or 'fail', got {kinks!r}")
    given = _given_points(points, params)

    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(p, simple=True, separator="/") or "<root>" for p, _ in path_leaves]
    leaves = [jnp.asarray(leaf) for _, leaf in path_leaves]  # the dtypes the caller's program uses
    out_dtype = jax.eval_shape(cost, params, data).dtype
    work = [_less_precise(leaf.dtype, out_dtype) for leaf in leaves]
    for dtype in work:
        _tolerance(dtype)  # an unsupported dtype fails here, before any tracing
    total = int(sum(leaf.size for leaf in leaves))
    if num_directions is None:
        num_directions = DEFAULT_DIRECTIONS if total > DIRECTIONS_ABOVE else 0
    if max_coordinates is None and num_directions:
        max_coordinates = DEFAULT_COORDINATES
    native, ref_dtype, reference_note = _reference(cost, leaves, treedef, data)
    _tolerance(ref_dtype)
    if fd_step is None:
        # Below float64, round-off (10 eps |f| / h) would leave eps^(1/3) steps unconverged (5e-3 of
        # the gradient in float32): eps^(1/5), where Richardson's h^4 error meets round-off.
        fd_step = FD_STEP if ref_dtype == np.float64 else float(jnp.finfo(ref_dtype).eps) ** (1.0 / 5.0)

    traced_analytic, analytic_dtypes = None, None
    if analytic is not None:
        try:
            try:
                first = jax.eval_shape(analytic, params, data)
                traced_analytic = analytic
            except _HOST_ONLY:
                first = analytic(params, data)  # a NumPy function: its value at point 0
        except Exception as err:
            raise ValueError(
                f"analytic(params, data) raised {type(err).__name__}: {err} (the hand-derived gradient "
                "given as analytic=, called at params)"
            ) from err
        analytic_dtypes = _check_analytic(first, treedef, leaves, names)
        for name, dtype in zip(names, analytic_dtypes, strict=True):
            if not jnp.issubdtype(dtype, jnp.floating):
                raise ValueError(
                    f"analytic(params, data) returned {dtype} for leaf {name!r}: a gradient is "
                    "floating point (cast it, e.g. np.asarray(g, float))"
                )
            _tolerance(dtype)

    key = jax.random.key(key if key is not None else 0) if not isinstance(key, jax.Array) else key
    rng = _host_rng(key)
    indices = _sample_coordinates(rng, leaves, max_coordinates)
    if not sum(idx.size for idx in indices):
        raise ValueError(f"params has no coordinates to check (leaf shapes {[x.shape for x in leaves]})")
    points = _perturb(rng, leaves, num_points or 1, scale)
    if given is not None:  # after params itself, before the random points
        points = [
            np.concatenate([x[:1], g.astype(x.dtype), x[1:]]) for x, g in zip(points, given, strict=True)
        ]
    num_points = int(points[0].shape[0])
    directions = _directions(rng, leaves, num_directions)

    out, skipped = _evaluate(
        cost, treedef, traced_analytic, points, data, indices, fd_step, directions, native, ref_dtype
    )
    values = np.asarray(out["cost"])
    if not np.isfinite(values).all():
        p = int(np.flatnonzero(~np.isfinite(values))[0])
        where = "at params" if p == 0 else f"at point {p} (params moved by scale={scale}: try a smaller one)"
        raise ValueError(f"the cost is {values[p]} {where}: there is no gradient to check there")
    split = np.cumsum([idx.size for idx in indices])[:-1]
    grads = {m: np.split(np.asarray(out[m]), split, axis=1) for m in METHODS if m in out}
    dtypes = {"reverse": work, "forward": work, "fd": [ref_dtype] * len(leaves)}
    analytic_flat = None
    if analytic is not None:
        if traced_analytic is None:
            analytic_flat = _host_analytic(analytic, first, points, data, treedef, leaves, names)
            grads["analytic"] = np.split(analytic_flat[:, _flat_coords(leaves, indices)], split, axis=1)
        else:
            analytic_flat = np.asarray(out["analytic64"]) if directions is not None else None
        dtypes["analytic"] = analytic_dtypes
    fd_err = np.split(np.asarray(out["fd_err"]), split, axis=1)
    cost_scale = np.abs(np.asarray(out["cost"])) / np.maximum(1.0, np.asarray(out["xmax"]))

    pairs = [(a, b) for a, b in PAIRS if a in grads and b in grads]
    checked = [k for k, idx in enumerate(indices) if idx.size]
    gscale = {(a, b): _gradient_scale(grads[a], grads[b], checked, cost_scale) for a, b in pairs}
    fd_scale = _gradient_scale(grads["fd"], grads.get("reverse", grads["fd"]), checked, cost_scale)
    fd_parts = {name: np.split(np.asarray(out[name]), split, axis=1) for name in _FD_FIELDS}
    rows, findings, unchecked = [], [], []
    for k in checked:
        tol = _tolerance(work[k])
        excused, found = _findings(
            {name: part[k] for name, part in fd_parts.items()},
            floor=tol.floor * fd_scale[:, None],
            rtol=tol.rtol if rtol is None else float(rtol),
            atol=atol,
            leaf=names[k],
            along="coordinates",
            idx=indices[k],
            shape=leaves[k].shape,
        )
        findings += found
        if directions is None and np.all(excused) and all("fd" in (a, b) for a, b in pairs):
            unchecked.append(names[k])  # only differences that cannot judge: nothing compared it
        for a, b in pairs:
            dtype = _less_precise(dtypes[a][k], dtypes[b][k])
            tol = _tolerance(dtype)
            rows.append(
                _compare(
                    grads[a][k],
                    grads[b][k],
                    floor=tol.floor * gscale[a, b][:, None],
                    rtol=tol.rtol if rtol is None else float(rtol),
                    extra=atol + (fd_err[k] if "fd" in (a, b) else 0.0),
                    leaf=names[k],
                    pair=f"{a} vs {b}",
                    dtype=dtype,
                    idx=indices[k],
                    shape=leaves[k].shape,
                    excused=excused if "fd" in (a, b) else None,
                )
            )
        if directions is not None and work[k] != np.float64:
            rows.append(_compare_with_float64(k, out, leaves, cost_scale, rtol, atol, names[k], work[k]))
        if directions is not None:
            more, found = _directional_rows(
                k, out, directions, analytic_flat, cost_scale, ref_dtype, rtol, atol, names[k]
            )
            rows += more
            findings += found
    zero_leaves = _zero_leaves(out, grads.get("reverse"), checked, directions, leaves, names, split)
    kink_list = tuple(f for f in findings if f.kind == "kink")
    return GradCheckReport(
        ok=all(r.ok for r in rows) and not zero_leaves and not (kinks == "fail" and kink_list),
        rows=tuple(rows),
        methods=tuple(m for m in METHODS if m in grads),
        skipped=tuple(skipped),
        num_points=num_points,
        num_coordinates=int(sum(idx.size for idx in indices)),
        total_coordinates=total,
        num_directions=int(num_directions),
        zero_leaves=zero_leaves,
        kinks=kink_list,
        unconverged=tuple(f for f in findings if f.kind == "unconverged"),
        notes=(reference_note,) if reference_note else (),
        unchecked=tuple(unchecked),
    )


class _Directions(NamedTuple):
    """`vectors`: `(num_leaves * num_directions, total)` float64 unit vectors, each nonzero on one
    leaf only; `leaf`: the leaf of each; `number`: its index among that leaf's directions."""

    vectors: np.ndarray
    leaf: np.ndarray
    number: np.ndarray


def _directions(rng, leaves, num_directions) -> _Directions | None:
    """Rademacher unit directions, `num_directions` per leaf, confined to that leaf.

    Rademacher rather than Gaussian: every coordinate gets weight exactly `1 / sqrt(n)`, so an error
    in any single coordinate shifts every directional derivative by the same amount; a Gaussian
    component can be near zero and hide it.
    """
    if not num_directions:
        return None
    sizes = [int(leaf.size) for leaf in leaves]
    bounds = np.cumsum([0, *sizes])
    total = int(bounds[-1])
    nonempty = [k for k, n in enumerate(sizes) if n]
    count = len(nonempty) * num_directions
    if count * total * 8 > _MAX_DIRECTION_BYTES:
        raise ValueError(
            f"num_directions={num_directions} needs {count} float64 directions of {total} coordinates "
            f"({count * total * 8 / 2**30:.1f} GiB); pass a smaller num_directions"
        )
    vectors = np.zeros((count, total))
    leaf = np.repeat(nonempty, num_directions)
    number = np.tile(np.arange(num_directions), len(nonempty))
    for row, k in enumerate(leaf):
        signs = rng.integers(0, 2, sizes[k]) * 2.0 - 1.0
        vectors[row, bounds[k] : bounds[k + 1]] = signs / np.sqrt(sizes[k])
    return _Directions(vectors, leaf, number)


def _directional_rows(k, out, directions, analytic_flat, cost_scale, dtype, rtol, atol, name):
    """The float64 directional comparisons of leaf `k`: one row per pair of available methods, and
    the kinks and unconverged differences found along its directions."""
    cols = np.flatnonzero(directions.leaf == k)
    vecs = directions.vectors[cols]
    rev = np.asarray(out["reverse64"])  # (points, total)
    est = {"reverse": rev @ vecs.T}
    if "forward_dir" in out:
        est["forward"] = np.asarray(out["forward_dir"])[:, cols]
    est["fd"] = np.asarray(out["fd_dir"])[:, cols]
    full = [np.linalg.norm(rev, axis=1)]
    if analytic_flat is not None:
        est["analytic"] = analytic_flat @ vecs.T
        full.append(np.linalg.norm(analytic_flat, axis=1))
    fd_err = np.asarray(out["fd_dir_err"])[:, cols]
    # No directional derivative along a unit vector exceeds the gradient's norm: that norm (or the
    # cost's own scale) plays the role of the per-coordinate check's largest component.
    gscale = np.nan_to_num(np.maximum(np.max(full, axis=0), cost_scale), nan=0.0, posinf=0.0)
    tol = _tolerance(dtype)
    shape = (int(directions.number.max()) + 1,)
    excused, findings = _findings(
        {name: np.asarray(out[name.replace("fd", "fd_dir", 1)])[:, cols] for name in _FD_FIELDS},
        floor=tol.floor * gscale[:, None],
        rtol=tol.rtol if rtol is None else float(rtol),
        atol=atol,
        leaf=name,
        along="directions",
        idx=directions.number[cols],
        shape=shape,
    )
    rows = []
    for a, b in PAIRS:
        if a in est and b in est:
            row = _compare(
                est[a],
                est[b],
                floor=tol.floor * gscale[:, None],
                rtol=tol.rtol if rtol is None else float(rtol),
                extra=atol + (fd_err if "fd" in (a, b) else 0.0),
                leaf=name,
                pair=f"{a} vs {b}",
                dtype=dtype,
                idx=directions.number[cols],
                shape=shape,
                excused=excused if "fd" in (a, b) else None,
            )
            rows.append(row._replace(along="directions"))
    return rows, findings


def _compare_with_float64(k, out, leaves, cost_scale, rtol, atol, name, dtype) -> GradCheckRow:
    """Every coordinate of leaf `k`'s reverse gradient in its own dtype against the float64 reverse
    gradient (which the directions check): what a float32 program computes, checked whole for one
    extra `jax.grad`."""
    bounds = np.cumsum([0] + [int(leaf.size) for leaf in leaves])
    rev64 = np.asarray(out["reverse64"])
    largest = np.nan_to_num(np.max(np.abs(rev64), axis=1), nan=0.0, posinf=0.0)
    tol = _tolerance(dtype)
    part = slice(bounds[k], bounds[k + 1])
    return _compare(
        np.asarray(out["reverse_all"])[:, part],
        rev64[:, part],
        floor=tol.floor * np.maximum(largest, cost_scale)[:, None],
        rtol=tol.rtol if rtol is None else float(rtol),
        extra=atol,
        leaf=name,
        pair="reverse vs reverse64",
        dtype=dtype,
        idx=np.arange(leaves[k].size),
        shape=leaves[k].shape,
    )


def _zero_leaves(out, reverse, checked, directions, leaves, names, split) -> tuple[str, ...]:
    """Leaves whose reverse gradient is exactly zero wherever checked, at every point, while the
    cost did not change at all along at least one checked coordinate or direction of theirs."""
    constant = np.split(np.asarray(out["fd_constant"]), split, axis=1)
    bounds = np.cumsum([0] + [int(leaf.size) for leaf in leaves])
    found = []
    for k in checked:
        zero = not np.any(reverse[k])
        flat_somewhere = bool(np.any(constant[k]))
        if directions is not None:
            zero = zero and not np.any(np.asarray(out["reverse64"])[:, bounds[k] : bounds[k + 1]])
            cols = directions.leaf == k
            flat_somewhere = flat_somewhere or bool(np.any(np.asarray(out["fd_dir_constant"])[:, cols]))
        if zero and flat_somewhere:
            found.append(names[k])
    return tuple(found)


def _gradient_scale(ga, gb, checked, cost_scale) -> np.ndarray:
    """`S` per point: the largest component of either estimate over the whole pytree, or the
    cost's own scale `|f| / max(1, max|x|)`, whichever is larger."""
    per_leaf = [np.max(np.fmax(np.abs(ga[k]), np.abs(gb[k])), axis=1) for k in checked]
    largest = np.nan_to_num(np.max(per_leaf, axis=0), nan=0.0, posinf=0.0)
    return np.maximum(largest, cost_scale)


def _compare(a, b, floor, rtol, extra, leaf, pair, dtype, idx, shape, excused=None) -> GradCheckRow:
    """One row: `a`, `b`, `floor`, `extra` are `(num_points, num_coords)` (or broadcastable).

    `excused` (same shape, or None): components shown in the errors but left out of the verdict
    (kinks and unconverged finite differences, for the pairs with `fd`)."""
    finite = np.isfinite(a) & np.isfinite(b)
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf where a or b is not finite
        abs_err = np.where(finite, np.abs(a - b), np.inf)
        size = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
        rel_err = abs_err / np.maximum(size, np.finfo(np.float64).tiny)
    allowed = rtol * size + extra
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(abs_err == 0, 0.0, abs_err / allowed)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    num_excused = 0
    if excused is not None:
        excused = np.broadcast_to(excused, ratio.shape)
        num_excused = int(np.sum(excused & (ratio > 1.0)))
        ratio = np.where(excused, 0.0, ratio)
    point, j = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    worst = float(ratio[point, j])
    return GradCheckRow(
        leaf=leaf,
        pair=pair,
        max_abs_err=float(np.max(abs_err)),
        max_rel_err=float(np.max(rel_err)),
        err_over_tol=worst,
        ok=bool(worst <= 1.0),
        point=int(point),
        index=tuple(int(i) for i in np.unravel_index(int(idx[j]), shape)),
        dtype=str(dtype),
        rtol=rtol,
        excused=num_excused,
    )


def _findings(fd, floor, rtol, atol, leaf, along, idx, shape) -> tuple[np.ndarray, list]:
    """Where the finite differences cannot judge the gradient: kinks and unconverged differences.

    `fd` maps `_FD_FIELDS` to `(num_points, num_coords)` arrays of one leaf (coordinates or
    directions). A kink: the one-sided differences at the chosen step disagree by more than the
    tolerance (`rtol * max(|forward|, |backward|, floor) + atol`, plus the difference's error and
    round-off), and their gap did not shrink by `_KINK_SHRINK` from the step 4x larger (a smooth
    cost's gap, `|f''| h`, shrinks by 4): the cost is not differentiable here, whatever the step.
    Unconverged: elsewhere, the difference's own error estimate is above `FD_UNCONVERGED` of its
    size. Returns the mask of both and their `GradCheckFinding`s.
    """
    forward, backward, gap, prev = fd["fd_forward"], fd["fd_backward"], fd["fd_gap"], fd["fd_gap_prev"]
    size = np.maximum(np.maximum(np.abs(forward), np.abs(backward)), floor)
    with np.errstate(invalid="ignore"):
        kink = (gap > rtol * size + atol + 2.0 * fd["fd_err"] + 4.0 * fd["fd_roundoff"]) & (
            prev < _KINK_SHRINK * gap
        )
        scale = np.maximum(np.abs(fd["fd"]), floor)
        # A zero scale (a zero cost with a zero gradient: w**4 at 0) leaves nothing to be accurate to.
        unconverged = (
            ~kink & ~(fd["fd_err"] <= FD_UNCONVERGED * scale) & ((scale > 0) | ~np.isfinite(fd["fd_err"]))
        )
    found = []
    for kind, mask, a, b in (
        ("kink", kink, forward, backward),
        ("unconverged", unconverged, fd["fd"], fd["fd_err"]),
    ):
        for p, j in zip(*np.nonzero(mask), strict=True):
            index = tuple(int(i) for i in np.unravel_index(int(idx[j]), shape))
            found.append(GradCheckFinding(kind, leaf, index, int(p), along, float(a[p, j]), float(b[p, j])))
    return kink | unconverged, found


def _less_precise(a, b) -> np.dtype:
    a, b = np.dtype(a), np.dtype(b)
    a = a if jnp.issubdtype(a, jnp.floating) else np.dtype(np.float64)
    b = b if jnp.issubdtype(b, jnp.floating) else np.dtype(np.float64)
    return a if jnp.finfo(a).eps >= jnp.finfo(b).eps else b


def _tolerance(dtype) -> Tolerance:
    try:
        return TOLERANCES[np.dtype(dtype)]
    except KeyError:
        known = sorted(str(d) for d in TOLERANCES)
        raise ValueError(f"check_grad has no tolerances for dtype {dtype}; known: {known}") from None


# Primitives that draw random numbers: JAX draws float64 (and int64) values from other bits than
# float32 ones, so under `jax.enable_x64(True)` such a cost is another function.
_RANDOM = frozenset(
    {"random_bits", "random_seed", "random_wrap", "random_split", "random_fold_in", "threefry2x32",
     "rng_bit_generator", "rng_uniform"}
)  # fmt: skip
# Primitives whose inner jaxpr takes the equation's inputs one for one (calls, custom rules).
_CALLS = frozenset(
    {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call",
     "custom_vjp_call_jaxpr", "checkpoint", "remat"}
)  # fmt: skip


def _inner_jaxprs(eqn):
    for param in eqn.params.values():
        for inner in param if isinstance(param, tuple | list) else (param,):
            inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's Jaxpr
            if hasattr(inner, "eqns"):
                yield inner


def _path_precision(jaxpr, dependent) -> tuple[float, bool]:
    """`(eps, random)`: the largest machine epsilon among the floating values of `jaxpr` that depend
    on the inputs marked in `dependent` (the params), and whether it draws random numbers. Inner
    jaxprs of calls follow their inputs one for one; those of loops and branches count as wholly
    dependent when any input of theirs is."""
    dep = {v for v, d in zip(jaxpr.invars, dependent, strict=True) if d}
    eps, random = 0.0, False

    def depends(v) -> bool:
        return not isinstance(v, Literal) and v in dep

    for eqn in jaxpr.eqns:
        random |= eqn.primitive.name in _RANDOM
        hit = any(depends(v) for v in eqn.invars)
        for inner in _inner_jaxprs(eqn):
            one_for_one = eqn.primitive.name in _CALLS and len(inner.invars) == len(eqn.invars)
            marks = [depends(v) for v in eqn.invars] if one_for_one else [hit] * len(inner.invars)
            e, r = _path_precision(inner, marks)
            eps, random = max(eps, e), random or r
        if hit:
            for v in eqn.outvars:
                dtype = getattr(v.aval, "dtype", None)
                if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
                    eps = max(eps, float(jnp.finfo(dtype).eps))
                dep.add(v)
    return eps, random


def _reference(cost, leaves, treedef, data) -> tuple[bool, np.dtype, str | None]:
    """How the finite differences are taken: `(native, dtype, note)`.

    In float64, under `jax.enable_x64(True)` (native False), unless that would not be the caller's
    function, or not float64 arithmetic:
    - a cost that draws random numbers (a fixed-key dropout mask, noise) draws other numbers with
      float64 enabled: the differences are then of the cost as the caller runs it (native), in its
      own precision;
    - a cost that casts to float32 (or lower) on the params' path computes in that precision even
      from float64 params: differences on float64's steps (down to 6e-12) would read its rounding,
      so the steps, the round-off bound and the tolerance are float32's.
    `note` says which, for the report (None for plain float64).
    """
    size = int(sum(np.size(x) for x in leaves))
    unravel = _unraveller(treedef, leaves)

    def trace(dtype, data_spec):
        flat = jax.ShapeDtypeStruct((size,), dtype)
        closed = jax.make_jaxpr(lambda v, d: cost(unravel(v, [dtype] * len(leaves)), d))(flat, data_spec)
        eps, random = _path_precision(closed.jaxpr, [True] + [False] * (len(closed.jaxpr.invars) - 1))
        return eps, random, closed.out_avals[0].dtype

    with jax.enable_x64(True):
        eps, random, out_dtype = trace(jnp.float64, _float64_args(leaves, treedef, data)[1])
    out_eps = float(jnp.finfo(_less_precise(np.float64, out_dtype)).eps)
    if random:
        common = jnp.result_type(*[x.dtype for x in leaves])
        spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), data)
        eps, _, _ = trace(common, spec)
        dtype = _dtype_of_eps(max(eps, float(jnp.finfo(common).eps)))
        return (
            True,
            dtype,
            (
                f"finite differences in {dtype}, as the cost runs: it draws random numbers, which JAX "
                "draws differently with float64 enabled"
            ),
        )
    eps = max(eps, out_eps)
    if eps > float(jnp.finfo(np.float64).eps):
        dtype = _dtype_of_eps(eps)
        return (
            False,
            dtype,
            (
                f"finite differences on {dtype}'s steps: the cost computes in {dtype} on the params' path "
                "(a cast inside it), whatever the params' dtype"
            ),
        )
    return False, np.dtype(np.float64), None


def _dtype_of_eps(eps: float) -> np.dtype:
    for dtype in (jnp.bfloat16, jnp.float16, np.float32, np.float64):
        if float(jnp.finfo(dtype).eps) <= eps:
            return np.dtype(dtype)
    return np.dtype(np.float64)


def _evaluate(
    cost, treedef, traced_analytic, points, data, indices, fd_step, directions, in_place, ref_dtype
):
    """Runs the compiled comparison; returns its outputs (float64 NumPy) and the skipped methods.

    Two compiled programs: the params' own dtype computations under the caller's float64 setting
    (what their program computes), the float64 ones inside `jax.enable_x64(True)` (`in_place`: the
    reference under the caller's setting too, in `ref_dtype`; see `_reference`). Forward mode
    through a `jax.custom_vjp` is undefined and only fails when lowered (a TypeError): the
    computation is then redone without it and the reason is reported.
    """
    coords = _flat_coords([x[0] for x in points], indices)
    skipped = []
    for with_forward in (True, False):
        try:
            native = _compiled_native(cost, treedef, traced_analytic, with_forward)
            out = {
                k: np.asarray(v, np.float64) for k, v in jax.device_get(native(points, data, coords)).items()
            }
            with contextlib.nullcontext() if in_place else jax.enable_x64(True):
                steps_in = None if in_place or ref_dtype == np.float64 else ref_dtype
                ref = _compiled_reference(
                    cost, treedef, traced_analytic, with_forward, directions is not None, in_place, steps_in
                )
                dirs = None if directions is None else (directions.vectors, directions.leaf)
                eps = float(jnp.finfo(ref_dtype).eps)
                got = jax.device_get(ref(points, data, coords, fd_step, eps, dirs))
                out |= {k: np.asarray(v, np.float64) for k, v in got.items()}
            return out, tuple(skipped)
        except TypeError as err:
            if not with_forward:
                raise ValueError(f"differentiating the cost failed: TypeError: {err}") from err
            skipped.append(("forward", str(err).splitlines()[0]))
        except ValueError as err:  # e.g. reverse mode through a while_loop
            raise ValueError(f"differentiating the cost failed: ValueError: {err}") from err
    raise AssertionError("unreachable")


def _check_analytic(out, treedef, leaves, names) -> list[np.dtype]:
    """Checks that an analytic gradient (or its shapes) mirrors params; returns its leaf dtypes."""
    if jax.tree.structure(out) != treedef:
        raise ValueError(
            f"analytic(params, data) returned a pytree of structure {jax.tree.structure(out)}, "
            f"but params have structure {treedef}"
        )
    got = treedef.flatten_up_to(out)
    for name, g, leaf in zip(names, got, leaves, strict=True):
        if tuple(np.shape(g)) != leaf.shape:
            raise ValueError(
                f"analytic gradient for {name} has shape {tuple(np.shape(g))}, "
                f"but params {name} has shape {leaf.shape}"
            )
    return [np.dtype(g.dtype) if hasattr(g, "dtype") else np.dtype(np.float64) for g in got]


def _host_analytic(analytic, first, points, data, treedef, leaves, names) -> np.ndarray:
    """Calls a NumPy analytic gradient point by point (`first`: its value at point 0, which is
    `params` itself); returns it flattened, `(num_points, total)` float64."""
    per_point = []
    for p in range(points[0].shape[0]):
        out = first if p == 0 else analytic(treedef.unflatten([x[p] for x in points]), data)
        _check_analytic(out, treedef, leaves, names)
        per_point.append(
            np.concatenate([np.ravel(np.asarray(g, np.float64)) for g in treedef.flatten_up_to(out)])
        )
    return np.stack(per_point)


def _given_points(points, params) -> list[np.ndarray] | None:
    """The leaves of `points` (a stack of params-like pytrees), checked against `params`."""
    if points is None:
        return None
    treedef = jax.tree.structure(params)
    if jax.tree.structure(points) != treedef:
        raise ValueError(
            f"points must be a stack of params-like pytrees ({treedef}), got {jax.tree.structure(points)}"
        )
    given = [np.asarray(x) for x in treedef.flatten_up_to(points)]
    sizes = set()
    for g, x in zip(given, treedef.flatten_up_to(params), strict=True):
        if g.ndim != np.ndim(x) + 1 or g.shape[1:] != np.shape(x) or g.dtype.kind != "f":
            raise ValueError(
                f"points must stack floating-point leaves shaped like params with a leading axis: "
                f"got {g.dtype} {g.shape} for a leaf of shape {np.shape(x)}"
            )
        if not np.all(np.isfinite(g)):
            raise ValueError("points must be finite")
        sizes.add(g.shape[0])
    if len(sizes) != 1 or sizes == {0}:
        raise ValueError(
            f"points need one nonempty leading axis shared by every leaf, got sizes {sorted(sizes)}"
        )
    return given


def _flat_coords(leaves, indices) -> np.ndarray:
    """The sampled coordinates as positions in all leaves flattened into one vector."""
    offsets = np.cumsum([0] + [int(np.size(x)) for x in leaves])[:-1]
    return np.concatenate([o + idx for o, idx in zip(offsets, indices, strict=True)])


def _float64_args(leaves, treedef, data):
    """Shapes of `(params, data)` with float leaves in float64, for `jax.eval_shape`."""

    def spec(x):
        dtype = jnp.result_type(x)
        return jax.ShapeDtypeStruct(
            np.shape(x), jnp.float64 if jnp.issubdtype(dtype, jnp.floating) else dtype
        )

    return treedef.unflatten([spec(x) for x in leaves]), jax.tree.map(spec, data)


def _host_rng(key) -> np.random.Generator:
    """A NumPy generator seeded from a JAX key: deterministic from `key`, and no XLA compilation
    for a handful of host-side draws (threefry for a few small leaves took over a second to compile)."""
    return np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64).tolist())


def _sample_coordinates(rng, leaves, max_coordinates) -> list[np.ndarray]:
    """Flat indices to check in each leaf: all, or `max_coordinates` drawn without replacement."""
    return [
        np.arange(leaf.size)
        if max_coordinates is None or leaf.size <= max_coordinates
        else np.sort(rng.choice(leaf.size, max_coordinates, replace=False))
        for leaf in leaves
    ]


def _perturb(rng, leaves, num_points, scale) -> list[np.ndarray]:
    """Each leaf stacked over points: row 0 is the leaf itself, rows 1.. add `scale * normal`."""
    out = []
    for leaf in leaves:
        x = np.asarray(leaf)
        noise = rng.standard_normal((num_points - 1, *x.shape))
        out.append(np.concatenate([x[None], (x[None].astype(np.float64) + scale * noise).astype(x.dtype)]))
    return out


def _to_float64(x):
    x = jnp.asarray(x)
    return x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x


def _ravel(leaves, dtype=jnp.float64) -> jax.Array:
    """All leaves as one vector, in leaf order; `dtype` must hold every leaf exactly."""
    return jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves])


def _unraveller(treedef, leaves):
    """`unravel(flat, dtypes)`: the inverse of `_ravel`, leaf `k` cast to `dtypes[k]`."""
    shapes = [x.shape for x in leaves]
    bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

    def unravel(flat, dtypes):
        parts = [
            flat[a:b].reshape(s).astype(d)
            for a, b, s, d in zip(bounds[:-1], bounds[1:], shapes, dtypes, strict=True)
        ]
        return treedef.unflatten(parts)

    return unravel


def _footprint(f, *args) -> int:
    """Elements one call of `f` on `args` computes: the sizes of the values in its jaxpr (and in
    those of its inner calls and loop bodies, once each). Fusion makes the real peak smaller."""

    def size(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            total += sum(int(np.prod(v.aval.shape)) for v in eqn.outvars if hasattr(v.aval, "shape"))
            for param in eqn.params.values():
                for inner in param if isinstance(param, tuple | list) else (param,):
                    inner = getattr(inner, "jaxpr", inner)  # a ClosedJaxpr's Jaxpr
                    if hasattr(inner, "eqns"):
                        total += size(inner)
        return total

    structs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)), args)
    return max(1, size(jax.make_jaxpr(f)(*structs).jaxpr))


def _vmap_in_chunks(f, xs, per_item: int):
    """`jax.vmap(f)(xs)` over the leading axis of the arrays `xs` (a tuple), run as `lax.map` over
    chunks when the whole batch, `per_item` elements each, would pass `_CHUNK_ELEMENTS`."""
    n = int(xs[0].shape[0])
    chunk = max(1, _CHUNK_ELEMENTS // max(1, per_item))
    if chunk >= n:
        return jax.vmap(f)(*xs)
    return jax.lax.map(lambda x: f(*x), xs, batch_size=chunk)


def _over_points(one_point):
    """`jax.jit` of `one_point` vmapped over the points (the leading axis of its first argument's
    leaves; the other arguments shared), called with `num_points=` so that it can size its chunks."""

    def program(points, *shared):
        one = functools.partial(one_point, num_points=int(points[0].shape[0]))
        return jax.vmap(one, in_axes=(0, *[None] * len(shared)))(points, *shared)

    return jax.jit(program)


@functools.lru_cache(maxsize=32)
def _compiled_native(cost, treedef, traced_analytic, with_forward: bool):
    """Reverse, forward and a traced analytic gradient in the params' own dtype, on the sampled
    coordinates, vmapped over points. Cached per (cost, params structure, analytic, forward):
    calling check_grad again on the same cost (a table of analytic mutants) does not retrace.

    Works on the params flattened to one vector so that the cost appears once per method in the
    compiled program, whatever the number of leaves: each coordinate `i` of `coords` is a
    position in that vector.
    """

    def one_point(leaves, data, coords, num_points):
        dtypes = [x.dtype for x in leaves]
        common = jnp.result_type(*dtypes)  # every leaf dtype converts exactly to and from it
        unravel = _unraveller(treedef, leaves)
        params = treedef.unflatten(leaves)
        reverse = _ravel(treedef.flatten_up_to(jax.grad(cost)(params, data)), common)
        out = {"reverse": reverse[coords], "reverse_all": reverse}
        if traced_analytic is not None:
            got = treedef.flatten_up_to(traced_analytic(params, data))
            out["analytic"] = _ravel(got, jnp.result_type(*got))[coords]
        if with_forward:
            flat = _ravel(leaves, common)
            f = lambda v: cost(unravel(v, dtypes), data)

            def along(i):
                tangent = (jnp.arange(flat.size) == i).astype(flat.dtype)
                return jax.jvp(f, (flat,), (tangent,))[1]

            per_item = num_points * _footprint(lambda v: jax.jvp(f, (v,), (v,))[1], flat)
            out["forward"] = _vmap_in_chunks(along, (coords,), per_item)
        return out

    return _over_points(one_point)


@functools.lru_cache(maxsize=32)
def _compiled_reference(
    cost,
    treedef,
    traced_analytic,
    with_forward: bool,
    with_directions: bool,
    native: bool = False,
    steps_in: np.dtype | None = None,
):
    """The float64 computations, vmapped over points; traced under `jax.enable_x64(True)`.

    Central differences on the sampled coordinates, and with directions: the float64 reverse
    gradient (whole), forward mode and central differences along each direction, and a traced
    analytic gradient at the float64 params (whole). `native`: the same in the params' own
    (common) dtype, traced under the caller's setting (`_reference` says when). `steps_in`: the
    coordinates' perturbed values are rounded to this dtype (the one the cost casts the params to)
    before the steps actually taken are measured.
    """

    def one_point(leaves, data, coords, fd_step, eps, dirs, num_points):
        unravel = _unraveller(treedef, leaves)
        if native:
            common = jnp.result_type(*[x.dtype for x in leaves])
            batch64 = data
        else:
            common = jnp.float64
            batch64 = jax.tree.map(_to_float64, data)
        flat64 = _ravel(leaves, common)
        cost64 = lambda v: cost(unravel(v, [common] * len(leaves)), batch64)
        ladder = num_points * (2 * FD_RUNGS + 1) * _footprint(cost64, flat64)  # per coordinate
        fd = _vmap_in_chunks(
            lambda i: _central_difference(cost64, flat64, i, fd_step, eps, steps_in), (coords,), ladder
        )
        out = dict(zip(_FD_FIELDS, fd, strict=True))
        out["cost"] = cost64(flat64)
        out["xmax"] = jnp.max(jnp.abs(flat64))
        if with_directions:
            vectors, dir_leaf = dirs
            grad64 = jax.grad(cost64)(flat64)
            out["reverse64"] = grad64
            leaf_max = jnp.stack([jnp.max(jnp.abs(x), initial=0.0).astype(common) for x in leaves])
            steps = fd_step * jnp.maximum(1.0, leaf_max[dir_leaf])
            d = _vmap_in_chunks(
                lambda v, t: _directional_difference(cost64, flat64, grad64, v, t, eps),
                (vectors, steps),
                ladder,
            )
            out |= {name.replace("fd", "fd_dir", 1): x for name, x in zip(_FD_FIELDS, d, strict=True)}
            if with_forward:
                jvp = lambda v: jax.jvp(cost64, (flat64,), (v,))[1]  # noqa: E731
                out["forward_dir"] = _vmap_in_chunks(jvp, (vectors,), num_points * _footprint(jvp, flat64))
            if traced_analytic is not None:
                params64 = unravel(flat64, [common] * len(leaves))
                out["analytic64"] = _ravel(treedef.flatten_up_to(traced_analytic(params64, batch64)))
        return out

    return _over_points(one_point)


# What `_extrapolate` returns, as keys of the reference computation's outputs (`fd_dir_...` along
# directions).
_FD_FIELDS = (
    "fd",
    "fd_err",
    "fd_constant",
    "fd_forward",
    "fd_backward",
    "fd_gap",
    "fd_gap_prev",
    "fd_roundoff",
)


def _central_difference(f, flat, i, fd_step, eps, steps_in=None):
    """Float64 finite differences of `f` along coordinate `i` of `flat` on the step ladder
    (`_extrapolate` says what comes back).

    Evaluates `f` at `x_i +- h_j` for the `FD_RUNGS` steps `h_j = fd_step * max(1, |x_i|) *
    FD_RATIO**(1 - j)` and at `x` itself (`2 FD_RUNGS + 1` evaluations, vmapped). The steps actually
    taken, `(x + h) - x` and `x - (x - h)`, are the denominators, so that the rounding of `x + h`
    does not enter the quotients (Numerical Recipes, 3rd ed., sec. 5.7).
    """
    x = flat[i]
    hs = fd_step * jnp.maximum(1.0, jnp.abs(x)) * jnp.asarray(_LADDER, x.dtype)
    xs = jnp.concatenate([x + hs, x - hs, x[None]])
    if steps_in is not None:  # the cost rounds its params to `steps_in`: take steps it can see
        xs = xs.astype(steps_in).astype(xs.dtype)
    at_i = jnp.arange(flat.size) == i  # a mask, not a scatter: cheaper to compile under vmap
    fs = jax.vmap(lambda xt: f(jnp.where(at_i, xt, flat)))(xs)
    k = FD_RUNGS
    return _extrapolate(fs[:k], fs[k : 2 * k], fs[-1], xs[:k] - x, x - xs[k : 2 * k], 0.0, eps)


def _directional_difference(f, flat, grad, v, t, eps):
    """Float64 finite differences of `f` along the unit vector `v` on the step ladder `t *
    FD_RATIO**(1 - j)` (`_extrapolate` says what comes back).

    Rounding `x + s v` moves each coordinate by up to `eps |x_j|`, hence `f` by up to
    `eps sum_j |g_j x_j|` over the leaf of `v`, on top of the rounding of `f` itself.
    """
    hs = t * jnp.asarray(_LADDER, flat.dtype)
    fs = jax.vmap(lambda s: f(flat + s * v))(jnp.concatenate([hs, -hs, jnp.zeros(1)]))
    moved = jnp.sum(jnp.where(v != 0, jnp.abs(grad * flat), 0.0))
    k = FD_RUNGS
    return _extrapolate(fs[:k], fs[k : 2 * k], fs[-1], hs, hs, moved, eps)


def _extrapolate(fp, fm, f0, hp, hm, moved, eps):
    """Richardson extrapolation of central differences over the step ladder, the step chosen per
    coordinate (or direction) by the estimates' own agreement, and the one-sided differences there.

    `fp[j] = f(x + hp[j])`, `fm[j] = f(x - hm[j])`, steps shrinking by `FD_RATIO = r`. The central
    differences `D_j` err by `c h_j^2 + O(h_j^4)`, so `R_j = (r^2 D_{j+1} - D_j) / (r^2 - 1)` errs
    by `O(h_j^4)` (Richardson; Numerical Recipes, 3rd ed., sec. 5.7). Where the steps are
    asymptotic and above round-off, neighbouring `R_j` agree to far better than `R_j`'s error bound;
    too large a step (higher derivatives dominate) or too small a one (round-off dominates) shows as
    disagreement. Each interior `R_j` gets the error estimate `max(|R_j - R_{j-1}|, |R_{j+1} -
    R_j|)` plus the round-off bound `2 * _ROUNDOFF_ULPS * eps * (max|f| + moved) / h_{j+1}`, and
    the `R_j` with the smallest estimate is the finite difference (non-finite ones never are).

    Returns `(fd, fd_err, constant, forward, backward, gap, gap_prev, roundoff)`: the chosen
    estimate and its error estimate; whether `f` took one value at every point; the first-order
    one-sided differences `(f(x + h) - f(x)) / h` and `(f(x) - f(x - h)) / h` at the chosen rung's
    smaller step `h`; their gap `|forward - backward|` there and at the next larger step; and the
    round-off bound of one difference at `h`. A smooth `f` has `gap ~ |f''| h`, which shrinks by
    `r` from one step to the next; at a kink the gap is the jump in the derivative, whatever the
    step (`_kinks` tells the two apart).
    """
    r2 = float(FD_RATIO) ** 2
    fs = jnp.concatenate([fp, fm, f0[None]])
    # Per rung, from the values that rung uses: a large step where the cost blows up (a run that
    # diverges) must not inflate the round-off bound of the small ones.
    fmax = jnp.maximum(jnp.maximum(jnp.abs(fp), jnp.abs(fm)), jnp.abs(f0))
    # eps: of the precision the cost computes in (float64, or float32 where it casts: `_reference`).
    eps = jnp.maximum(jnp.asarray(eps, fs.dtype), jnp.finfo(fs.dtype).eps)
    roundoff = _ROUNDOFF_ULPS * eps * (fmax + moved) / jnp.minimum(hp, hm)
    d = (fp - fm) / (hp + hm)
    rich = (r2 * d[1:] - d[:-1]) / (r2 - 1.0)
    diff = jnp.abs(rich[1:] - rich[:-1])
    err = jnp.maximum(diff[:-1], diff[1:]) + 2.0 * roundoff[2:-1] + roundoff[1:-2]
    err = jnp.where(jnp.isfinite(err) & jnp.isfinite(rich[1:-1]), err, jnp.inf)
    best = jnp.argmin(err)
    j = best + 2  # the smaller step of the chosen rung rich[best + 1]
    forward = (fp - f0) / hp
    backward = (f0 - fm) / hm
    gap = jnp.abs(forward - backward)
    return (
        rich[best + 1],
        err[best],
        jnp.all(fs == f0),
        forward[j],
        backward[j],
        gap[j],
        gap[j - 1],
        roundoff[j],
    )


__all__ = [
    "DEFAULT_COORDINATES",
    "DEFAULT_DIRECTIONS",
    "DIRECTIONS_ABOVE",
    "FD_RATIO",
    "FD_RUNGS",
    "FD_STEP",
    "FD_UNCONVERGED",
    "METHODS",
    "PAIRS",
    "TOLERANCES",
    "Tolerance",
    "check_grad",
]
