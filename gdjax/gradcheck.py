"""Gradient checks: reverse mode vs forward mode vs central differences vs a hand-derived gradient.

`check_grad(cost, params, batch)` computes the gradient of `cost` with respect to every leaf of the
params pytree in up to four independent ways and compares every pair:

- `reverse`: `jax.grad`, in the params' own dtype (what gdjax's runs use);
- `forward`: `jax.jvp` along each basis direction, in the params' own dtype;
- `fd`: central finite differences of the cost evaluated in float64;
- `analytic`: a hand-derived gradient `analytic(params, batch)`, e.g. `gdjax.reference.mse_grad`.

A wrong analytic formula shows up as every `analytic vs ...` pair failing; a broken `custom_vjp`
as `reverse vs fd` failing while `forward vs fd` passes; a broken `custom_jvp` as both autodiff
modes disagreeing with `fd` while agreeing with each other.

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
`fd_err_i` is the finite difference's own error estimate: `|D(h) - D(2h)|` (three times the
truncation error of `D(h)` when that dominates) plus the round-off bound `10 eps |f| / h`. It lets a
cost at an exact stationary point, or one with a large third derivative (Rosenbrock), pass without
loosening `rtol`, and it is zero for the pairs that do not involve `fd`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax.types import GradCheckReport, GradCheckRow, PyTree
from gdjax.validation import (
    check_cost,
    check_data,
    check_finite_number,
    check_params,
    check_positive_int,
)


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
# the step from vanishing at x_i = 0.
FD_STEP = float(np.finfo(np.float64).eps) ** (1.0 / 3.0)
# Relative round-off of one float64 cost evaluation (a sum of n terms), in units of eps.
_ROUNDOFF_ULPS = 10.0

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
    batch: PyTree = None,
    *,
    analytic: Callable[[PyTree, PyTree], PyTree] | None = None,
    num_points: int | None = None,
    key: jax.Array | int | None = None,
    scale: float = 1.0,
    rtol: float | None = None,
    atol: float = 0.0,
    fd_step: float | None = None,
    max_coordinates: int | None = None,
) -> GradCheckReport:
    """Checks the gradient of `cost` at `params` by computing it four ways and comparing them.

    Every leaf of `params` (any pytree) is checked coordinate by coordinate with reverse mode
    (`jax.grad`), forward mode (`jax.jvp` along basis directions), float64 central differences with
    step `h_i = fd_step * max(1, |x_i|)`, and `analytic(params, batch)` when given. With
    `num_points`, the same comparison runs at `params` and at `num_points - 1` perturbed copies
    `params + scale * normal` in one vmapped call, and each row reports its worst point. The
    normal draws (and the `max_coordinates` sample) come from a NumPy generator seeded by `key`:
    deterministic, and no XLA compilation for a few host-side draws.

    Tolerances come from `TOLERANCES`, keyed by the less precise dtype of each pair: float64
    `rtol = 1e-6`, float32 `rtol = 1e-3` (float32 autodiff against float64 differences: ~sqrt(n) *
    1.2e-7 relative round-off in a cost summing n examples, plus cancellation near an optimum).
    The module docstring defines the error measures.

    Finite differences need float64, so `jax_enable_x64` must be on: this raises a ValueError
    rather than silently checking at float32 accuracy (library code never flips the flag itself).
    Float leaves of `params` and `batch` are cast to float64 for the differences only.

    Args:
      cost: `cost(params, batch) -> scalar`, a pure JAX function.
      params: the point to check at: a pytree of floating-point arrays.
      batch: the data pytree passed to `cost` (None for costs that ignore it).
      analytic: optional hand-derived gradient, `analytic(params, batch)` returning a pytree like
        `params`. A JAX-traceable one is vmapped with the rest; a NumPy one (such as
        `gdjax.reference.mse_grad`) is detected and called once per point.
      num_points: how many points to check (point 0 is `params`); default 1.
      key: PRNG key (or int seed) for the perturbed points and for `max_coordinates`; default 0.
      scale: standard deviation of the perturbations.
      rtol: overrides the table's relative tolerance for every pair.
      atol: absolute tolerance added on top, in gradient units (default 0).
      fd_step: relative finite-difference step; default `eps(float64)**(1/3) ~ 6.1e-6`.
      max_coordinates: check at most this many coordinates of each leaf, drawn without replacement
        from `key` (deterministic). Finite differences cost 4 cost evaluations per coordinate and
        forward mode one jvp, all vmapped, so memory grows with points x coordinates.

    Returns:
      A `GradCheckReport`: `report.ok`, `report.rows` (per leaf and pair: max abs err, max rel
      err, err/tol, worst point), `report.failed`, and `str(report)`, a table ending in a verdict.

    Raises:
      ValueError: float64 disabled; non-finite or inconsistent data; params that are not
        floating point or do not fit the cost; an analytic gradient shaped unlike params; a cost
        jax.grad cannot differentiate.

    Example:
      >>> import jax, gdjax
      >>> jax.config.update("jax_enable_x64", True)
      >>> X, y = gdjax.data.house_prices()
      >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
      >>> report = gdjax.check_grad(
      ...     cost, gdjax.init_linear(1), (X, y), analytic=gdjax.reference.mse_grad, num_points=4
      ... )
      >>> report.ok
      True
    """
    if jax.dtypes.canonicalize_dtype(np.float64) != np.float64:
        raise ValueError(
            "check_grad computes finite differences in float64, but float64 is disabled. Enable it "
            'at start-up with jax.config.update("jax_enable_x64", True) (or JAX_ENABLE_X64=1); '
            "gdjax never changes this flag itself."
        )
    if not callable(cost):
        raise ValueError(f"cost must be callable as cost(params, batch), got {cost!r}")
    if analytic is not None and not callable(analytic):
        raise ValueError(f"analytic must be callable as analytic(params, batch), got {analytic!r}")
    check_positive_int("num_points", num_points, allow_none=True)
    check_positive_int("max_coordinates", max_coordinates, allow_none=True)
    check_finite_number("scale", scale, lower=0.0)
    check_finite_number("atol", atol, lower=0.0)
    if rtol is not None:
        check_finite_number("rtol", rtol, positive=True)
    fd_step = FD_STEP if fd_step is None else fd_step
    check_finite_number("fd_step", fd_step, positive=True, upper=1.0)
    check_params(params)
    check_data(batch)
    check_cost(cost, params, batch)

    path_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = [jax.tree_util.keystr(p, simple=True, separator="/") or "<root>" for p, _ in path_leaves]
    leaves = [jnp.asarray(leaf) for _, leaf in path_leaves]
    out_dtype = jax.eval_shape(cost, params, batch).dtype
    work = [_less_precise(leaf.dtype, out_dtype) for leaf in leaves]
    for dtype in work:
        _tolerance(dtype)  # an unsupported dtype fails here, before any tracing

    traced_analytic, analytic_dtypes = None, None
    if analytic is not None:
        try:
            first = jax.eval_shape(analytic, params, batch)
            traced_analytic = analytic
        except _HOST_ONLY:
            first = analytic(params, batch)  # a NumPy function: its value at point 0
        analytic_dtypes = _check_analytic(first, treedef, leaves, names)
        for dtype in analytic_dtypes:
            _tolerance(dtype)

    key = jax.random.key(key if key is not None else 0) if not isinstance(key, jax.Array) else key
    rng = _host_rng(key)
    indices = _sample_coordinates(rng, leaves, max_coordinates)
    if not sum(idx.size for idx in indices):
        raise ValueError(f"params has no coordinates to check (leaf shapes {[x.shape for x in leaves]})")
    num_points = num_points or 1
    points = _perturb(rng, leaves, num_points, scale)

    out, skipped = _evaluate(cost, treedef, traced_analytic, points, batch, indices, fd_step)
    split = np.cumsum([idx.size for idx in indices])[:-1]
    grads = {m: np.split(np.asarray(out[m]), split, axis=1) for m in METHODS if m in out}
    dtypes = {"reverse": work, "forward": work, "fd": [np.dtype(np.float64)] * len(leaves)}
    if analytic is not None:
        if traced_analytic is None:
            grads["analytic"] = _host_analytic(
                analytic, first, points, batch, treedef, leaves, names, indices
            )
        dtypes["analytic"] = analytic_dtypes
    fd_err = np.split(np.asarray(out["fd_err"]), split, axis=1)
    cost_scale = np.abs(np.asarray(out["cost"])) / np.maximum(1.0, np.asarray(out["xmax"]))

    pairs = [(a, b) for a, b in PAIRS if a in grads and b in grads]
    checked = [k for k, idx in enumerate(indices) if idx.size]
    gscale = {(a, b): _gradient_scale(grads[a], grads[b], checked, cost_scale) for a, b in pairs}
    rows = []
    for k in checked:
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
                )
            )
    return GradCheckReport(
        ok=all(r.ok for r in rows),
        rows=tuple(rows),
        methods=tuple(m for m in METHODS if m in grads),
        skipped=tuple(skipped),
        num_points=num_points,
        num_coordinates=int(sum(idx.size for idx in indices)),
        total_coordinates=int(sum(leaf.size for leaf in leaves)),
    )


def _gradient_scale(ga, gb, checked, cost_scale) -> np.ndarray:
    """`S` per point: the largest component of either estimate over the whole pytree, or the
    cost's own scale `|f| / max(1, max|x|)`, whichever is larger."""
    per_leaf = [np.max(np.fmax(np.abs(ga[k]), np.abs(gb[k])), axis=1) for k in checked]
    largest = np.nan_to_num(np.max(per_leaf, axis=0), nan=0.0, posinf=0.0)
    return np.maximum(largest, cost_scale)


def _compare(a, b, floor, rtol, extra, leaf, pair, dtype, idx, shape) -> GradCheckRow:
    """One row: `a`, `b`, `floor`, `extra` are `(num_points, num_coords)` (or broadcastable)."""
    finite = np.isfinite(a) & np.isfinite(b)
    abs_err = np.where(finite, np.abs(a - b), np.inf)
    size = np.maximum(np.maximum(np.abs(a), np.abs(b)), floor)
    rel_err = abs_err / np.maximum(size, np.finfo(np.float64).tiny)
    allowed = rtol * size + extra
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(abs_err == 0, 0.0, abs_err / allowed)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
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
    )


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


def _evaluate(cost, treedef, traced_analytic, points, batch, indices, fd_step):
    """Runs the compiled comparison; returns its outputs (float64 NumPy) and the skipped methods.

    Forward mode through a `jax.custom_vjp` is undefined and only fails when lowered (a
    TypeError): the computation is then redone without it and the reason is reported.
    """
    offsets = np.cumsum([0] + [int(np.prod(x.shape[1:])) for x in points])[:-1]
    coords = jnp.asarray(np.concatenate([o + idx for o, idx in zip(offsets, indices, strict=True)]))
    skipped = []
    for with_forward in (True, False):
        fn = _compiled(cost, treedef, traced_analytic, with_forward)
        try:
            return jax.device_get(fn(points, batch, coords, fd_step)), tuple(skipped)
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
            f"analytic(params, batch) returned a pytree of structure {jax.tree.structure(out)}, "
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


def _host_analytic(analytic, first, points, batch, treedef, leaves, names, indices) -> list[np.ndarray]:
    """Calls a NumPy analytic gradient point by point (`first`: its value at point 0, which is
    `params` itself); returns per-leaf `(num_points, coords)` float64 arrays."""
    per_point = []
    for p in range(points[0].shape[0]):
        out = first if p == 0 else analytic(treedef.unflatten([x[p] for x in points]), batch)
        _check_analytic(out, treedef, leaves, names)
        got = treedef.flatten_up_to(out)
        per_point.append([np.ravel(np.asarray(g, np.float64))[i] for g, i in zip(got, indices, strict=True)])
    return [np.stack(cols) for cols in zip(*per_point, strict=True)]


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


def _ravel(leaves) -> jax.Array:
    """All leaves as one float64 vector, in leaf order (exact: every float dtype fits)."""
    return jnp.concatenate([jnp.ravel(x).astype(jnp.float64) for x in leaves])


@functools.lru_cache(maxsize=32)
def _compiled(cost, treedef, traced_analytic, with_forward: bool):
    """One jitted function, vmapped over points, per (cost, params structure, analytic, forward):
    calling check_grad again on the same cost (a table of analytic mutants) does not retrace.

    Works on the params flattened to one vector so that the cost appears once per method in the
    compiled program, whatever the number of leaves: each coordinate `i` of `coords` is a
    position in that vector.
    """

    def one_point(leaves, batch, coords, fd_step):
        shapes, dtypes = [x.shape for x in leaves], [x.dtype for x in leaves]
        bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])

        def unravel(flat, dtypes):
            parts = [
                flat[a:b].reshape(s).astype(d)
                for a, b, s, d in zip(bounds[:-1], bounds[1:], shapes, dtypes, strict=True)
            ]
            return treedef.unflatten(parts)

        params = treedef.unflatten(leaves)
        out = {"reverse": _ravel(treedef.flatten_up_to(jax.grad(cost)(params, batch)))[coords]}
        if traced_analytic is not None:
            out["analytic"] = _ravel(treedef.flatten_up_to(traced_analytic(params, batch)))[coords]
        if with_forward:
            # Every leaf dtype converts exactly to and from their promoted dtype.
            flat = jnp.concatenate([jnp.ravel(x).astype(jnp.result_type(*dtypes)) for x in leaves])
            f = lambda v: cost(unravel(v, dtypes), batch)

            def along(i):
                tangent = (jnp.arange(flat.size) == i).astype(flat.dtype)
                return jax.jvp(f, (flat,), (tangent,))[1]

            out["forward"] = jax.vmap(along)(coords).astype(jnp.float64)
        batch64 = jax.tree.map(_to_float64, batch)
        flat64 = _ravel(leaves)
        cost64 = lambda v: cost(unravel(v, [jnp.float64] * len(leaves)), batch64)
        out["fd"], out["fd_err"] = jax.vmap(lambda i: _central_difference(cost64, flat64, i, fd_step))(coords)
        out["cost"] = cost64(flat64)
        out["xmax"] = jnp.max(jnp.abs(flat64))
        return out

    return jax.jit(jax.vmap(one_point, in_axes=(0, None, None, None)))


def _central_difference(f, flat, i, fd_step):
    """Float64 central difference of `f` along coordinate `i` of `flat`, and its error estimate.

    Evaluates `f` at `x_i +- h` and `x_i +- 2h` (4 evaluations, vmapped). The step actually taken,
    `(x + h) - (x - h)`, is the denominator, so that the rounding of `x + h` does not enter the
    quotient (Numerical Recipes, 3rd ed., sec. 5.7).
    """
    x = flat[i]
    h = fd_step * jnp.maximum(1.0, jnp.abs(x))
    xs = x + jnp.array([1.0, -1.0, 2.0, -2.0]) * h
    at_i = jnp.arange(flat.size) == i  # a mask, not a scatter: cheaper to compile under vmap
    fs = jax.vmap(lambda xt: f(jnp.where(at_i, xt, flat)))(xs)
    d1 = (fs[0] - fs[1]) / (xs[0] - xs[1])
    d2 = (fs[2] - fs[3]) / (xs[2] - xs[3])
    roundoff = _ROUNDOFF_ULPS * jnp.finfo(jnp.float64).eps * jnp.max(jnp.abs(fs)) / h
    return d1, jnp.abs(d1 - d2) + roundoff


__all__ = ["FD_STEP", "METHODS", "PAIRS", "TOLERANCES", "Tolerance", "check_grad"]
