"""Grids of runs as one compiled, vmapped, device-sharded program.

`sweep(cost, rule, params0, data, grid=..., num_steps=...) -> SweepResult` runs every combination of
hyperparameter values, seeds and starting points ("lanes") as `jax.vmap` of the same compiled body
that `gdjax.loop.run` uses (`loop.scan_program`), so a lane gives the same numbers as the same
configuration run alone. Each lane builds its rule state inside the program by calling the rule's
rule's spec on that lane's values (`rule.spec.init(params0, values)` with traced values), and every
lane runs the spec's one `update`: new values never recompile; only a new rule family, a new static
option (`schedule=`, `velocity_form=`) or new shapes do.

Lanes. The grid's 1-D entries are crossed into a product in the order given (or zipped with
`grid=Zip({...})`), then crossed with `seeds` and the starts (`params0=Starts(stack)`), the last
varying fastest: lane `(config, seed, start)`. A scalar grid entry is the same for every lane. With
several rules (`rule={"sgd": grid1, "adam": grid2}`), each rule is its own compiled program and the lanes are
concatenated in the order given. The PRNG key of a lane is `gdjax.validation.seed_key(seed)` (equal to
`jax.random.key(seed)` with float64 enabled, and for seeds below 2**32 without): it samples the
mini-batches exactly as `run(..., key=seed)` does, and `Starts(..., init_noise=sigma)`
perturbs each leaf of the start by `sigma * jax.random.normal(k_i, leaf.shape, leaf.dtype)` with keys
`k_i = jax.random.split(jax.random.fold_in(key, NOISE_FOLD), num_leaves)` (the mini-batch sampler
hashes the key's raw bits with the epoch number and never draws from it with `jax.random`).

Seeds and starts. A seed can drive the start too: `params0=Init(fn)` starts every lane of seed `s` at
`fn(init_key(s))`, where `init_key(s) = jax.random.fold_in(gdjax.validation.seed_key(s), INIT_FOLD)`;
`fn` is called once for all seeds, as `jax.vmap(fn)` over their keys, before the compiled program (an
init built from `jax.random` draws and elementwise arithmetic gives `fn(init_key(s))` bit for bit).
Seeds may be zipped instead of crossed: `Starts(stack, zip_seeds=True)` pairs seed `i` with start `i`
(lanes: configurations x seeds), and a `Zip` grid may hold `"seed"`, pairing configuration `i` with
seed `i` (the seeds then come from the grid, not from `seeds=`).

Batch sizes. Lanes share one vmapped program only if they share shapes, and the batch size is a
shape: `batch_size=[1, 8, None]` runs one compiled group per batch size (per rule), concatenated,
and the summary's `batch_size` column says which lane ran which.

Memory. Everything a lane records stays on the device until its chunk ends, so before compiling the
sweep estimates, per lane and in the params' dtype,
`(num_steps // record_every + 1) * params_size` (params history) `+ 2 * (num_steps + 1)` (loss and
gradient-norm histories) `+ 3 * params_size + rule_state_size` (the carry) `+ residual` elements,
where `residual` is the largest intermediate array of one `value_and_grad(cost)` evaluation on the
full data (`n` for full-batch least squares; at least `n` with mini-batches, for the permutation).
Times the lanes of one program call, this must fit `memory_budget` (default: half of the device
memory XLA reports, else half of the host's physical memory); otherwise `sweep` raises a ValueError
with the estimate and a `chunk_size` that fits. Chunks run one after another through the same
compiled program (the last one padded by repeating a lane) and their results are moved to host
memory, where the whole result must fit.

Least squares. For `make_cost(linear, mse)` on `(X, y)` the cost offers `f*` (closed form) to the
summaries, and `execution=Execution(layout="gram")` runs the lanes on `gram_mse` over `X^T X`,
`X^T y`, `y^T y` and the column sums, computed once: a step costs O(d^2) instead of O(n d), with the
same trajectories up to round-off.

Devices. With more than one device (`jax.devices()`, or `Execution(devices=...)`), the lane axis is
sharded over a 1-D `Mesh` named `"lanes"`: the lane-stacked inputs (starts, hyperparameters, keys, tolerances)
carry `NamedSharding(mesh, PartitionSpec("lanes"))`, the data is replicated, and the lanes are
padded to a multiple of the device count. On a multi-GPU host nothing changes: the same call uses
every GPU. On several hosts, call `jax.distributed.initialize()` in every process first, then run
the same `sweep` call in every process: `jax.devices()` then spans the hosts, each process places
its shards of the global inputs (`jax.make_array_from_callback`), and every process receives the
full result (`jax.experimental.multihost_utils.process_allgather`).

Example:
  >>> import jax.numpy as jnp
  >>> import gdjax
  >>> from gdjax.sweep import sweep
  >>> X, y = gdjax.data.house_prices()
  >>> cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
  >>> result = sweep(cost, "momentum", gdjax.init_linear(1), (X, y), num_steps=200,
  ...                grid={"learning_rate": jnp.logspace(-4, -1, 4), "momentum": [0.0, 0.9]})
  >>> result.num_lanes
  8
  >>> sorted(set(result.trace.status_name()))  # lr = 0.1 > 2/L without momentum diverges
  ['diverged', 'max_steps']
  >>> best = result.best()[0]  # the best lane of each rule, diverged lanes left out
  >>> best["momentum"], best["status"]
  (0.9, 'max_steps')
  >>> print(result.summary())  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import contextvars
import dataclasses
import functools
import inspect
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gdjax import compile_cache, costs, loop, options, validation
from gdjax import io as gdjax_io
from gdjax import progress as gdjax_progress
from gdjax import rules as rules_lib
from gdjax.costs import GramStatistics, gram_mse, gram_statistics
from gdjax.options import Execution, Stopping
from gdjax.types import PyTree, Status, Trace

# Grid keys that are stopping settings rather than rule hyperparameters (arrays in loop.Tolerances).
TOLERANCE_NAMES = tuple(f.name for f in dataclasses.fields(Stopping))  # stopping settings: lane axes too
# `fold_in` constant of the init-noise key (the sampler derives its round keys by hashing, not fold_in).
NOISE_FOLD = 2**32 - 1
# `fold_in` constant of the key an `Init` function receives (`init_key`).
INIT_FOLD = 2**32 - 2
# The most values one grid axis (hyperparameter values, seeds, starts) may hold, and the most lanes of
# one sweep: each lane keeps host coordinates and summaries, so these are sized before allocation.
MAX_AXIS = 100_000
MAX_LANES = 10_000_000
# Default cap of the recorded iterates of all the lanes of one program, together.
SWEEP_RECORD_BYTES = 256 * 2**20
_LANES = "lanes"  # mesh axis name
_COORDINATE_NAMES = ("rule", "seed", "start", "batch_size")  # what every lane's coordinates hold
# A sweep validates every value on the host, so no lane is `invalid`: the summary counts the others.
_STATUS_NAMES = tuple(str(s) for s in Status if s != Status.INVALID)
_TOLERANCE_DEFAULTS = Stopping().as_dict()  # the stopping settings, defaults in one place


def _get_f_star(self):
    value = self.__dict__.get("_f_star")
    if callable(value):  # computed on first use: a closed-form f* of big data costs an SVD
        value = value()
        self.__dict__["_f_star"] = value
        self.__dict__["_f_star_source"] = "closed form"
    return value


def _set_f_star(self, value):
    self.__dict__["_f_star"] = value
    self.__dict__["_f_star_source"] = "closed form" if callable(value) else None if value is None else "given"


_SAVE_MEMBER = "sweep"  # the JSON text of a saved SweepResult's coordinates and fields
_SAVE_FORMAT = "gdjax-sweep-result-1"


def _sharding_state(sharding) -> tuple | None:
    """A picklable description of a lane sharding: device ids instead of `Device` objects."""
    if isinstance(sharding, jax.sharding.SingleDeviceSharding):
        (device,) = sharding.device_set
        return ("single", device.id, sharding.memory_kind)
    if isinstance(sharding, NamedSharding):
        mesh = sharding.mesh
        return (
            "named",
            mesh.device_ids.tolist(),
            tuple(mesh.axis_names),
            tuple(sharding.spec),
            sharding.memory_kind,
        )
    return None


def _sharding_from_state(state: tuple | None):
    """The sharding `_sharding_state` described, on this process's devices; None where they are absent."""
    if state is None:
        return None
    by_id = {d.id: d for d in jax.devices()}
    if state[0] == "single":
        _, device, memory_kind = state
        return (
            jax.sharding.SingleDeviceSharding(by_id[device], memory_kind=memory_kind)
            if device in by_id
            else None
        )
    _, ids, axis_names, spec, memory_kind = state
    ids = np.asarray(ids)
    if not all(int(i) in by_id for i in ids.ravel()):
        return None
    devices = np.vectorize(lambda i: by_id[int(i)], otypes=[object])(ids)
    return NamedSharding(Mesh(devices, axis_names), PartitionSpec(*spec), memory_kind=memory_kind)


class GridError(ValueError):
    """A grid value the rule (or the sweep) refuses, with where it is: `key` (the grid key, or None
    when no one key is at fault), `index` (the value's position on its axis; None for a scalar) and
    `reason` (the refusal in the rule's own words). `str(error)` is the sweep's full message; the
    config reader uses the parts to name the key and line (`check_grid`)."""

    def __init__(self, message: str, key: str | None = None, index: int | None = None, reason: str = ""):
        super().__init__(message)
        self.key, self.index, self.reason = key, index, reason or message


class SweepInterrupted(RuntimeError):
    """A chunk (or the progress callback) raised after some chunks completed.

    Attributes:
      partial: a `SweepResult` of the lanes completed before the failure (a prefix of the lanes).
    """

    def __init__(self, message: str, partial: SweepResult):
        super().__init__(message)
        self.partial = partial


# ------------------------------------------------------------------------------------ summaries
# The table type and the writers live in gdjax.io; `gdjax.sweep.SummaryTable` stays importable.
SummaryTable = gdjax_io.SummaryTable


def _py(value):
    """NumPy scalars to Python scalars (for coordinates and summaries)."""
    return value.item() if isinstance(value, np.generic) else value


def _coord_matches(have, want) -> bool:
    if isinstance(have, float) and isinstance(want, int | float | np.number) and not isinstance(want, bool):
        # float32 grids: jnp.logspace(-4, 0, 5)[2] holds 0.009999999776..., and select(learning_rate=0.01)
        # should find it.
        return math.isclose(have, float(want), rel_tol=1e-6, abs_tol=0.0)
    return have == want


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """The lanes of a sweep: stacked trace, coordinates, timings and summaries.

    Attributes:
      trace: the `Trace` of every lane stacked on a leading lane axis (host NumPy arrays); with several
        rules, their lanes concatenated in the order given.
      coords: one dict per lane: `{"rule": name, <grid key>: value, ..., "seed": s, "start": i,
        "batch_size": b}` (`seed` / `start` are None when not swept).
      hyperparameter_names: the grid keys of every rule, in order of first appearance.
      compile_seconds: time spent tracing and compiling the programs of this call (0 when cached).
      run_seconds: time spent executing them (until the results were ready on the devices).
      f_star: the optimal cost used for suboptimality, or None.
      num_steps: the step budget of every lane.
      sharding: the sharding of the lane-stacked outputs of the last program call (padded lanes
        included), e.g. to check how the lanes were spread over devices.
      num_examples: the examples in the data (its leading axis), or None without data; with the
        batch size it turns steps into epochs (`gdjax.study.results`).

    A result pickles (its lazily computed `f_star` resolved; `sharding` rebuilt from device ids in
    the process that unpickles it, None where those devices do not exist there), and `save(path)` /
    `SweepResult.load(path, template)` round-trip it through one `.npz`: the stacked trace as
    `gdjax.io.save_trace` writes it, plus the coordinates and the other fields.
    """

    trace: Trace
    coords: list[dict]
    hyperparameter_names: tuple[str, ...]
    compile_seconds: float
    run_seconds: float
    f_star: float | None = None  # see _lazy_f_star below: may be given as a zero-argument function
    num_steps: int = 0
    sharding: jax.sharding.Sharding | None = None
    num_examples: int | None = None

    def with_f_star(self, f_star: float | None) -> SweepResult:
        """This result with the optimal cost `f_star` for the suboptimality columns (None: unknown)."""
        if f_star is not None:
            validation.check_finite_number("f_star", f_star)
            f_star = float(f_star)
        return dataclasses.replace(self, f_star=f_star)

    # ------------------------------------------------------------------------------ pickle, save
    def __eq__(self, other) -> bool:
        """Equal traces (NaN equals NaN, e.g. a diverged lane's), coordinates and fields; `sharding`
        (where the lanes ran, not what they computed) is not compared."""
        if not isinstance(other, SweepResult):
            return NotImplemented
        mine, theirs = jax.tree.flatten(self.trace), jax.tree.flatten(other.trace)
        if mine[1] != theirs[1]:
            return False
        same_trace = all(
            np.array_equal(a, b, equal_nan=np.issubdtype(np.asarray(a).dtype, np.inexact))
            if isinstance(a, np.ndarray | jax.Array)
            else a == b
            for a, b in zip(mine[0], theirs[0], strict=True)
        )
        fields = ("coords", "hyperparameter_names", "compile_seconds", "run_seconds", "f_star")
        fields += ("num_steps", "num_examples")
        return same_trace and all(getattr(self, k) == getattr(other, k) for k in fields)

    def __getstate__(self) -> dict:
        # A jax `Device` cannot be pickled, and a lazy f* is a closure over the data: both are
        # replaced by what they stand for (reading `f_star` resolves it).
        self.f_star  # noqa: B018
        state = dict(self.__dict__)
        state["trace"] = jax.tree.map(lambda x: np.asarray(x) if isinstance(x, jax.Array) else x, self.trace)
        state["sharding"] = _sharding_state(self.sharding)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        state["sharding"] = _sharding_from_state(state.get("sharding"))
        self.__dict__.update(state)

    def save(self, path: str | os.PathLike) -> str:
        """Writes this result to one `.npz`, atomically; `SweepResult.load(path, template)` reads it.

        The file holds the stacked trace as `gdjax.io.save_trace` writes a trace (so `load_trace`
        reads the trace alone from it) plus a member `sweep` with the coordinates, hyperparameter
        names, `f_star`, `num_steps`, `num_examples` and timings as JSON text. `gdjax.io.save_trace(path,
        result)` does the same. `sharding` is not saved.

        Raises:
          ValueError: a coordinate holds a value JSON cannot hold exactly (a schedule object, a
            function); pickle the result instead.
        """
        meta = {
            "format": _SAVE_FORMAT,
            "coords": self.coords,
            "hyperparameter_names": list(self.hyperparameter_names),
            "compile_seconds": self.compile_seconds,
            "run_seconds": self.run_seconds,
            "f_star": self.f_star,
            "f_star_source": self.f_star_source,
            "num_steps": self.num_steps,
            "num_examples": self.num_examples,
            "evaluated_at": self.trace.evaluated_at,
        }
        for i, c in enumerate(self.coords):
            for k, v in c.items():
                if not (v is None or isinstance(v, bool | int | float | str)):
                    raise ValueError(
                        f"cannot save lane {i}'s coordinate {k}={v!r} ({type(v).__name__}) to a file; "
                        "pickle the result instead"
                    )
        arrays = gdjax_io.trace_arrays(self.trace)
        arrays[_SAVE_MEMBER] = np.asarray(gdjax_io.dumps(meta, indent=None))
        return gdjax_io.write_npz(path, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, template: PyTree) -> SweepResult:
        """Reads a result `save` wrote; `template` gives the params' tree structure (one lane's).

        Raises:
          gdjax.io.FileFormatError: the file is damaged, is a plain trace (no coordinates: read it
            with `gdjax.io.load_trace`) or its parts disagree; the message names the file.
        """
        path = os.fspath(path)
        arrays = gdjax_io.read_npz(path)  # checked before it is read: sizes, no pickles
        if _SAVE_MEMBER not in arrays:
            raise gdjax_io.FileFormatError(
                f"{path} holds a trace without a sweep's coordinates (written by save_trace of a "
                "Trace); read it with gdjax.io.load_trace"
            )
        trace = gdjax_io.trace_from_arrays(arrays, template, source=path)
        try:
            meta = gdjax_io.loads(str(arrays[_SAVE_MEMBER][()]))
        except ValueError as err:
            raise gdjax_io.FileFormatError(f"{path}: member {_SAVE_MEMBER!r} is not JSON ({err})") from None
        lanes = np.shape(trace.loss_history)[0] if np.ndim(trace.loss_history) else None
        if (
            not isinstance(meta, dict)
            or meta.get("format") != _SAVE_FORMAT
            or not isinstance(meta.get("coords"), list)
            or len(meta["coords"]) != lanes
        ):
            raise gdjax_io.FileFormatError(
                f"{path}: member {_SAVE_MEMBER!r} does not describe the {lanes} lanes of its trace (damaged "
                "or not written by SweepResult.save)"
            )
        result = cls(
            trace=trace._replace(evaluated_at=meta.get("evaluated_at")),
            coords=meta["coords"],
            hyperparameter_names=tuple(meta["hyperparameter_names"]),
            compile_seconds=float(meta["compile_seconds"]),
            run_seconds=float(meta["run_seconds"]),
            f_star=meta["f_star"],
            num_steps=int(meta["num_steps"]),
            num_examples=meta.get("num_examples"),
        )
        result.__dict__["_f_star_source"] = meta.get("f_star_source")
        return result

    @property
    def f_star_source(self) -> str | None:
        """Where `f_star` came from: "closed form" (the cost offered it, e.g. least squares), "given"
        (`with_f_star`), or None (unknown)."""
        return self.__dict__.get("_f_star_source")

    @property
    def num_lanes(self) -> int:
        return len(self.coords)

    @property
    def eval_steps(self) -> np.ndarray:
        """The evaluated steps, shared by every lane: `(num_evals,)` (`trace.loss_history[:, j]` is at
        `eval_steps[j]`). `trace.eval_steps` holds the same row once per lane, `(lanes, num_evals)`."""
        steps = self.trace.eval_steps
        if steps is None:  # a trace from before evaluation schedules: every step
            return np.arange(np.shape(self.trace.loss_history)[-1])
        steps = np.asarray(steps)
        return steps[0] if steps.ndim == 2 else steps

    def lane(self, i: int) -> Trace:
        """The `Trace` of lane `i` (as `gdjax.loop.run` would return it, on the host)."""
        if not -self.num_lanes <= i < self.num_lanes:
            raise ValueError(f"lane {i} out of range for {self.num_lanes} lanes")
        return jax.tree.map(lambda x: x[i], self.trace)

    def select(self, **coords) -> list[int]:
        """Indices of the lanes whose coordinates equal `coords` (floats to 1e-6 relative).

        Example: `result.select(rule="sgd", learning_rate=0.1, seed=0)`.
        """
        known = {k for c in self.coords for k in c}
        for name in coords:
            if name not in known:
                raise ValueError(
                    f"no coordinate {name!r}{validation.nearest(name, known)}; coordinates: {sorted(known)}"
                )
        return [
            i
            for i, c in enumerate(self.coords)
            if all(name in c and _coord_matches(c[name], v) for name, v in coords.items())
        ]

    def summary(self, target: float | None = None) -> SummaryTable:
        """One row per lane.

        Keys: `lane`, `rule`, each of `hyperparameter_names`, `seed`, `start`, `batch_size`,
        `final_loss`, `suboptimality` (`final_loss - f_star`; None when `f_star` is unknown, and then
        `suboptimality_vs_best` follows: `final_loss` minus the best loss any lane of this result
        evaluated, the usual stand-in for f*, as benchopt does), `steps_to_target` (first evaluated step whose
        suboptimality (or loss, without `f_star`) is `<= target`; None if never or without `target`),
        `status` (`"converged"`, `"max_steps"`, `"diverged"`, `"nonfinite"`), `steps` (updates
        applied), `stop_step` (None for a lane that used its whole budget), then one column per user
        metric holding its value at the last evaluation.
        """
        if target is not None:
            validation.check_finite_number("target", target)
        losses = np.asarray(self.trace.loss_history)
        final = losses[:, -1]
        sub = None if self.f_star is None else final - self.f_star
        vs_best = {}
        if self.f_star is None:
            finite = losses[np.isfinite(losses)]
            found = float(finite.min()) if finite.size else None
            vs_best = {"suboptimality_vs_best": None if found is None else final - found}
        eval_steps = self.eval_steps
        reach_step = [None] * self.num_lanes
        if target is not None and self.num_lanes:
            gap = losses - self.f_star if self.f_star is not None else losses
            reached = gap <= target
            first = np.argmax(reached, axis=1)
            reach_step = [
                int(eval_steps[f]) if r else None for f, r in zip(first, reached.any(axis=1), strict=True)
            ]
        metrics = {k: np.asarray(v)[:, -1] for k, v in (self.trace.metrics or {}).items()}
        status = np.asarray(self.trace.status)
        steps = np.asarray(self.trace.steps)
        stop = np.asarray(self.trace.stop_step)
        rows = SummaryTable()
        for i, c in enumerate(self.coords):
            row = {"lane": i, "rule": c["rule"]}
            row.update({name: c.get(name) for name in self.hyperparameter_names})
            row.update(
                seed=c.get("seed"),
                start=c.get("start"),
                batch_size=c.get("batch_size"),
                final_loss=float(final[i]),
                suboptimality=None if sub is None else float(sub[i]),
                **{k: None if v is None else float(v[i]) for k, v in vs_best.items()},
                steps_to_target=reach_step[i],
                status=str(Status(int(status[i]))),
                steps=int(steps[i]),
                stop_step=None if status[i] == Status.MAX_STEPS else int(stop[i]),
                **{k: float(v[i]) for k, v in metrics.items()},
            )
            rows.append(row)
        return rows

    def best(self, by: str = "final_loss", mode: str = "min", target: float | None = None) -> SummaryTable:
        """The summary row of the best *lane* of each rule, in rule order.

        "Best" here is one lane: the smallest `by` (`mode="min"`) or the largest (`mode="max"`, for a
        metric such as a held-out accuracy); `by` is any numeric summary column, user metrics
        included. Diverged and non-finite lanes, and lanes whose `by` is None or not finite, are left
        out; a rule with no such lane has no row. Ties go to the lowest lane index. The other notion,
        the best *configuration* pooled over seeds (median, with its spread), is
        `gdjax.study.results(result).best_configurations(by=..., mode=...)` (a DataFrame);
        `gdjax.study.experiment.best_configurations(result.summary())` gives it as rows.
        """
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        rows = self.summary(target)
        if rows and by not in rows[0]:
            raise ValueError(f"cannot rank by {by!r}{validation.nearest(by, rows[0])}; keys: {list(rows[0])}")
        sign = 1.0 if mode == "min" else -1.0
        best: dict[str, dict] = {}
        for row in rows:
            value = row[by]
            if row["status"] in gdjax_io.BLEW_UP or value is None:
                continue
            if not isinstance(value, int | float) or not math.isfinite(value):
                continue
            if row["rule"] not in best or sign * value < sign * best[row["rule"]][by]:
                best[row["rule"]] = row
        order = list(dict.fromkeys(c["rule"] for c in self.coords))
        return SummaryTable(best[r] for r in order if r in best)

    def aggregate(self, over: str | Sequence[str] = "seed", target: float | None = None) -> SummaryTable:
        """Statistics over `over` (e.g. seeds), grouped by every other coordinate.

        Each row holds the group's coordinates, `count`, `final_loss_{mean,std,min,max}`,
        `suboptimality_{mean,std,min,max}` (`suboptimality_vs_best_...` without `f_star`, see
        `summary`), the same four for each user metric, `steps_to_target_mean` (over lanes that
        reached `target`; None if none) and the number of lanes with each status
        (`converged`, `max_steps`, `diverged`, `nonfinite`). All lanes count, diverged ones too;
        `std` is the sample standard deviation (`ddof=1`), None for a group of one lane.
        """
        over = [over] if isinstance(over, str) else list(over)
        keys = ["rule", *self.hyperparameter_names, "seed", "start", "batch_size"]
        for name in over:
            if name not in keys:
                raise ValueError(
                    f"cannot aggregate over {name!r}{validation.nearest(name, keys)}; coordinates: {keys}"
                )
        group_keys = [k for k in keys if k not in over]
        groups: dict[tuple, list[dict]] = {}
        for row in self.summary(target):
            groups.setdefault(tuple(repr(row[k]) for k in group_keys), []).append(row)

        def stats(prefix, values):
            if any(v is None for v in values):
                return {f"{prefix}_{s}": None for s in ("mean", "std", "min", "max")}
            a = np.asarray(values, np.float64)
            return {
                f"{prefix}_mean": float(a.mean()),
                f"{prefix}_std": float(a.std(ddof=1)) if a.size > 1 else None,
                f"{prefix}_min": float(a.min()),
                f"{prefix}_max": float(a.max()),
            }

        table = SummaryTable()
        for rows in groups.values():
            out = {k: rows[0][k] for k in group_keys}
            out["count"] = len(rows)
            out.update(stats("final_loss", [r["final_loss"] for r in rows]))
            for sub in ("suboptimality", "suboptimality_vs_best"):
                if sub in rows[0]:
                    out.update(stats(sub, [r[sub] for r in rows]))
            for name in self.trace.metrics or {}:
                out.update(stats(name, [r[name] for r in rows]))
            reached = [r["steps_to_target"] for r in rows if r["steps_to_target"] is not None]
            out["steps_to_target_mean"] = float(np.mean(reached)) if reached else None
            for name in _STATUS_NAMES:
                out[name] = sum(r["status"] == name for r in rows)
            table.append(out)
        return table


# `f_star` is a dataclass field whose value may be a zero-argument function (the cost's closed-form
# optimum), resolved on first read: a sweep that never asks for suboptimality never pays for it.
SweepResult.f_star = property(
    _get_f_star, _set_f_star, doc="The optimal cost used for suboptimality, or None."
)


# ------------------------------------------------------------------------------- rules and grids
class _Source(NamedTuple):
    """Where a sweep's rule comes from: a registry name, a built gdjax `Rule`, or a user's factory."""

    name: str  # the lanes' `rule` coordinate
    rule: Any  # a name (str), a rules.Rule, or a factory

    def build(self, values: Mapping[str, Any]) -> optax.GradientTransformation:
        """The rule for `values` (static options and numbers), validated as its factory would."""
        if isinstance(self.rule, str):
            return rules_lib.get(self.rule, **values)
        if rules_lib.is_rule(self.rule):
            static = {k: v for k, v in values.items() if k not in self.rule.spec.numeric}
            if static:
                raise ValueError(
                    f"{sorted(static)} would change a built rule's static options: name the rule "
                    f"({self.rule.spec.name!r}) or pass its factory instead"
                )
            return self.rule.replace(**values)
        return self.rule(**values)


def _is_static_value(value) -> bool:
    """Non-numeric settings (schedules, flags, names) select the program instead of being swept."""
    return (
        value is None
        or isinstance(value, bool | str | rules_lib.Schedule)
        or callable(value)
        or (isinstance(value, np.ndarray | np.generic) and value.dtype == np.bool_)
    )


def _registry_factory(rule) -> bool:
    """Whether `rule` is the factory the registry returns for its own name (`rules.momentum`)."""
    name = getattr(rule, "__name__", None)
    return name in rules_lib.names() and getattr(rules_lib, name, None) is rule


def _factory_state(factory, static, name, params, values):
    """A user's factory's state for traced `values` (a sweep's lanes): its host checks cannot run."""
    try:
        return factory(**static, **values).init(params)
    except (jax.errors.TracerBoolConversionError, jax.errors.ConcretizationTypeError) as err:
        raise ValueError(
            f"rule {name!r} is called with traced values inside the sweep's program, and it branches "
            f"on one ({type(err).__name__}): keep Python `if`s on values out of the factory (a "
            "sweep checks every grid value on the host before it runs) or use jnp.where"
        ) from None


def _valid_names(rule, static: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The hyperparameters a rule takes (None when they cannot be known)."""
    schedule = static.get("schedule", "constant")
    if isinstance(rule, str):
        return rules_lib.hyperparameters(rule, schedule=schedule)
    if _registry_factory(rule):
        return rules_lib.hyperparameters(rule.__name__, schedule=schedule)
    try:
        sig = inspect.signature(rule)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in sig.parameters.values() if p.kind in kinds)


def _rule_name(rule) -> str:
    if isinstance(rule, str):
        return rule
    if rules_lib.is_rule(rule):
        return rule.spec.name
    return getattr(rule, "__name__", None) or type(rule).__name__


class _Axis(NamedTuple):
    name: str
    values: list  # Python values, one per grid point
    tolerance: bool
    cost: bool = False  # a hyperparameter of the cost, not of the rule


class _ParsedGrid(NamedTuple):
    source: _Source
    keys: tuple[str, ...]  # every grid key, in order
    axes: list[_Axis]  # 1-D entries
    fixed: dict[str, Any]  # numeric scalars (rule hyperparameters and tolerances)
    static: dict[str, Any]  # non-numeric scalars
    zipped: bool = False  # 1-D entries zipped (grid given as Zip) instead of crossed
    cost_keys: frozenset = frozenset()  # grid keys that are the cost's hyperparameters
    seeds: tuple[int, ...] | None = None  # a Zip grid's "seed" entry: configuration i runs seed i


def _parse_grid(
    rule, grid, *, zip_grid: bool, tolerance_kwargs: Mapping[str, Any], cost_names: tuple[str, ...] = ()
) -> _ParsedGrid:
    if isinstance(rule, optax.GradientTransformation) and not rules_lib.is_rule(rule):
        raise ValueError(
            "rule must be a rule name ('sgd', 'optax.lamb'), a gdjax rule (gdjax.rules.adam(0.1)) or a "
            "factory (gdjax.rules.momentum), not an Optax transformation built with its values baked "
            "in: name it as 'optax.<name>' (e.g. 'optax.adam') so its values can vary per lane"
        )
    if not (isinstance(rule, str) or callable(rule) or rules_lib.is_rule(rule)):
        raise ValueError(f"rule must be a rule name, a gdjax rule or a factory, got {rule!r}")
    name = _rule_name(rule)
    if rules_lib.is_rule(rule) and (grid is None or isinstance(grid, Mapping)):
        # A built rule's values are every lane's defaults: scalar grid entries, shown in the results.
        grid = type(grid or {})({**rule.hyperparams, **(grid or {})})
    if grid is None or not isinstance(grid, Mapping) or len(grid) == 0:
        raise ValueError(
            f"the grid of rule {name!r} is empty: give hyperparameter values, e.g. "
            "grid={'learning_rate': [0.01, 0.1]} (a scalar fixes a value for every lane)"
        )
    axes: list[_Axis] = []
    fixed: dict[str, Any] = {}
    static: dict[str, Any] = {}
    seeds = None
    for key, value in grid.items():
        if not isinstance(key, str):
            raise ValueError(f"grid keys must be hyperparameter names, got {key!r}")
        if key == "seed" and zip_grid:
            seeds = _zipped_seeds(value)
            continue
        if key in _COORDINATE_NAMES:
            advice = {
                "seed": " (seeds cross the grid as sweep(seeds=[...]); a gdjax.Zip grid may hold 'seed' to "
                "pair seed i with configuration i)",
                "start": " (Starts(stack, zip_seeds=True) pairs start i with seed i)",
            }
            raise ValueError(
                f"grid key {key!r} is a lane coordinate of every sweep ({', '.join(_COORDINATE_NAMES)}); "
                f"rename the hyperparameter (a cost's keyword parameter, say){advice.get(key, '')}"
            )
        is_tol = key in TOLERANCE_NAMES
        is_cost = key in cost_names
        if is_cost and _is_static_value(value):
            raise ValueError(
                f"grid[{key!r}] = {value!r}: a cost hyperparameter takes real numbers (a scalar or a 1-D "
                "list of values)"
            )
        if is_tol and tolerance_kwargs[key] != _TOLERANCE_DEFAULTS[key]:
            raise ValueError(f"{key!r} is both in the grid and given as sweep({key}=...): give it once")
        if not is_tol and _is_static_value(value):
            try:
                hash(value)
            except TypeError:
                raise ValueError(
                    f"grid[{key!r}] = {value!r} must be hashable: it selects the program"
                ) from None
            static[key] = value
            continue
        _check_axis_length(f"grid[{key!r}]", value)
        if is_tol and value is None:
            fixed[key] = None  # None disables a tolerance
            continue
        if is_tol and isinstance(value, list | tuple) and any(v is None for v in value):
            axes.append(_Axis(key, list(value), True))  # values checked by loop.make_tolerances
            continue
        if (
            not is_tol
            and isinstance(value, list | tuple)
            and any(isinstance(v, bool | np.bool_) for v in value)
        ):
            # NumPy would read [0.1, True] as [0.1, 1.0]; a flag among numbers is a slip, not a value.
            raise ValueError(
                f"grid[{key!r}] = {value!r}: True/False is not a hyperparameter value; give numbers"
            )
        try:
            arr = np.asarray(value)
        except ValueError:
            arr = np.asarray(value, dtype=object)
        if arr.dtype.kind not in "iuf":
            if arr.ndim == 1 and not is_tol:
                raise ValueError(
                    f"grid[{key!r}] = {value!r}: a non-numeric setting (schedule, flag, name) selects the "
                    "compiled program, so it takes one value per sweep; run one sweep per value"
                )
            raise ValueError(f"grid[{key!r}] must hold real numbers, got {value!r}")
        if arr.ndim > 1:
            raise ValueError(f"grid[{key!r}] must be a scalar or a 1-D array, got shape {arr.shape}")
        if arr.ndim == 0:
            fixed[key] = _py(arr[()])
            continue
        if arr.size == 0:
            raise ValueError(f"grid[{key!r}] is empty: give at least one value")
        # `tolist` makes Python scalars in C (4096 `_py` calls took 5 ms); objects go one by one.
        values = [_py(v) for v in arr] if arr.dtype == object else arr.tolist()
        axes.append(_Axis(key, values, is_tol, is_cost))

    # Raises ValueError for an unknown rule name.
    valid = rule.spec.numeric if rules_lib.is_rule(rule) else _valid_names(rule, static)
    if valid is not None:
        for key in grid:
            if key == "seed":
                continue
            if key in cost_names and key in valid:
                raise ValueError(
                    f"grid key {key!r} names both a hyperparameter of rule {name!r} and one of the cost: "
                    "rename the cost's keyword parameter"
                )
            if (
                key not in TOLERANCE_NAMES
                and key not in static
                and key not in valid
                and key not in cost_names
            ):
                known = [*valid, *cost_names, *TOLERANCE_NAMES]
                raise ValueError(
                    f"rule {name!r} has no hyperparameter {key!r}"
                    f"{validation.nearest(key, known)}; its hyperparameters are "
                    f"{list(valid)}, the cost's are {list(cost_names)} (keyword parameters with numeric "
                    f"defaults), and the stopping settings {list(TOLERANCE_NAMES)} can be grid axes too"
                )
    fixed_cost = [k for k in fixed if k in cost_names]
    for key in fixed_cost:
        validation.check_finite_number(f"grid[{key!r}]", fixed[key])
    for axis in axes:
        if axis.tolerance:
            continue
        arr = np.asarray(axis.values, np.float64)
        if not np.all(np.isfinite(arr)):
            i = int(np.argmin(np.isfinite(arr)))
            reason = f"must be finite, got {axis.values[i]!r}"
            raise GridError(f"grid[{axis.name!r}] {reason}", axis.name, i, f"{axis.name} {reason}")
        if axis.name == "learning_rate" and not np.all(arr > 0):
            i = int(np.argmin(arr > 0))
            reason = f"must be > 0, got {axis.values[i]!r}"
            raise GridError(f"grid['learning_rate'] {reason}", axis.name, i, f"learning_rate {reason}")
    if zip_grid and (axes or seeds):
        lengths = {a.name: len(a.values) for a in axes} | ({"seed": len(seeds)} if seeds else {})
        if len(set(lengths.values())) > 1:
            raise ValueError(f"a Zip grid needs 1-D entries of one length, got lengths {lengths}")
    # A registry factory goes through `rules.get`, which also takes schedule values flat
    # (`decay_rate=...`), and shares its program with a sweep that names the rule.
    source = name if not isinstance(rule, str) and _registry_factory(rule) else rule
    cost_keys = frozenset(k for k in grid if k in cost_names)
    keys = tuple(k for k in grid if k != "seed")
    return _ParsedGrid(_Source(name, source), keys, axes, fixed, static, zip_grid, cost_keys, seeds)


def _zipped_seeds(value) -> tuple[int, ...]:
    """The `"seed"` entry of a Zip grid: one integer seed per configuration."""
    if _axis_length(value) is None:
        raise ValueError(
            f"Zip grid 'seed' = {value!r} must be a 1-D list of seeds, one per configuration (a single seed "
            "for every lane is sweep(seeds=[s]))"
        )
    _check_axis_length("grid['seed']", value)
    values = list(np.asarray(value).ravel().tolist()) if not isinstance(value, list | tuple) else list(value)
    if not values:
        raise ValueError("Zip grid 'seed' is empty: give one seed per configuration")
    return tuple(validation.check_seed("grid['seed']", v) for v in values)


def _axis_length(value) -> int | None:
    """The number of values of a 1-D grid entry without materialising it (None for a scalar)."""
    if isinstance(value, str | bytes | Mapping):
        return None
    if isinstance(value, np.ndarray | jax.Array):
        return value.shape[0] if value.ndim else None
    try:
        return len(value)
    except TypeError:
        return None


def _check_axis_length(name: str, value) -> None:
    """One limit on a grid axis, wherever the grid comes from (a list, a range, an array, a config)."""
    n = _axis_length(value)
    if n is not None and n > MAX_AXIS:
        raise ValueError(
            f"{name} has {n} values, more than a sweep takes on one axis ({MAX_AXIS} at most): split it "
            "into several sweeps, or use fewer values"
        )


def _passes_at_extremes(source: _Source, first: dict, name: str, values: list) -> bool:
    """Whether every value of a numeric axis of a registry rule is valid, from two builds.

    A registry rule (`rules.get`) checks each value on its own against an interval (`> 0`,
    `in [0, 1)`, finite), so finite real values all pass when the smallest and the largest do: two
    builds instead of one per value (about 25 us each; a 4096-value grid spent 0.1 s here). False
    sends the caller to the value-by-value check, which names the first value that fails.
    """
    if len(values) <= 2:
        return False
    kinds = set(map(type, values))  # one pass in C: a 4096-value grid spent 10 ms in isinstance
    if any(issubclass(t, bool | np.bool_) or not issubclass(t, int | float | np.number) for t in kinds):
        return False
    arr = np.asarray(values, np.float64)  # 1-D: every value is a real scalar
    if not np.all(np.isfinite(arr)):
        return False
    try:
        for i in (int(np.argmin(arr)), int(np.argmax(arr))):
            source.build(dict(first, **{name: values[i]}))
    except (ValueError, TypeError):
        return False
    return True


def _validate_values(parsed: _ParsedGrid, tolerance_kwargs):
    """Builds the rule (and the tolerances) once per distinct value on the host, so an invalid value
    fails here with its grid key, before anything is compiled.

    Returns `(spec, base, tol_base)`: the rule's `RuleSpec` (the one program every lane shares),
    the values every lane starts from (the first grid point, defaults included), and the stopping
    settings."""
    source = parsed.source
    rule_axes = [a for a in parsed.axes if not a.tolerance and not a.cost]
    first = {k: v for k, v in parsed.fixed.items() if k not in TOLERANCE_NAMES and k not in parsed.cost_keys}
    first.update({a.name: a.values[0] for a in rule_axes})
    last = dict(first, **{a.name: a.values[-1] for a in rule_axes})

    def build(values, where, key=None, index=None):
        try:
            return source.build({**parsed.static, **values})
        except (ValueError, TypeError) as err:
            if key is None:  # the grid's first or last point: the key its message names
                key = next((k for k in parsed.keys if re.search(rf"\b{re.escape(k)}\b", str(err))), None)
                axis = next((a for a in rule_axes if a.name == key), None)
                index = None if axis is None else (0 if values is first else len(axis.values) - 1)
            raise GridError(f"rule {source.name!r} rejects {where}: {err}", key, index, str(err)) from None

    rule0 = build(first, "the grid's first values " + repr({**parsed.static, **first}))
    for axis in rule_axes:
        values = list(dict.fromkeys(axis.values))
        if isinstance(source.rule, str) and _passes_at_extremes(source, first, axis.name, values):
            continue
        for v in values:
            where = f"grid[{axis.name!r}] = {v!r}"
            build(dict(first, **{axis.name: v}), where, axis.name, axis.values.index(v))
    rule1 = build(last, "the grid's last values " + repr({**parsed.static, **last}))
    if rules_lib.is_rule(rule0):
        spec, base = rule0.spec, rule0.hyperparams
        not_numeric = [a.name for a in rule_axes if a.name not in spec.numeric]
        if not_numeric or rule1.spec != spec:
            raise ValueError(
                f"rule {source.name!r}: {not_numeric or 'its grid'} would change the compiled program "
                f"(not among its numeric hyperparameters {list(spec.numeric)}); run one sweep per value"
            )
    else:
        # A user's factory: its `update` must be shared across values (values kept in the state).
        # One that bakes values into closures (optax.inject_hyperparams too: each call makes a new
        # closure) returns a new `update` on every call, even for equal values, so two calls tell it
        # apart.
        if rule0.update is not rule1.update:
            raise ValueError(
                f"rule {source.name!r} builds a new update function for each hyperparameter value (its "
                "values are baked into closures, as in optax.adam(lr)), so its lanes cannot share one "
                "program. Use a gdjax.rules factory, name an Optax optimizer as 'optax.<name>' (e.g. "
                "'optax.adam'), or write your factory to keep its values in the rule's state and return "
                "one update function defined once (README: 'Your own rule in a sweep')"
            )
        factory, static, update = source.rule, dict(parsed.static), rule0.update
        base = dict(first)
        spec = rules_lib.RuleSpec(
            name=source.name,
            static=tuple((k, rules_lib.static_option(v)) for k, v in sorted(static.items())),
            numeric=tuple(base),
            source=factory,
            extra_args=isinstance(rule0, optax.GradientTransformationExtraArgs),
            init_state=functools.partial(_factory_state, factory, static, source.name),
            make_update=lambda: update,
        )
    base_tol = dict(tolerance_kwargs)  # every stopping setting, the grid's scalars overriding the defaults
    base_tol.update({k: v for k, v in parsed.fixed.items() if k in TOLERANCE_NAMES})
    try:
        loop.make_tolerances(**base_tol)
        for axis in parsed.axes:
            if axis.tolerance:
                for v in axis.values:
                    loop.make_tolerances(**dict(base_tol, **{axis.name: v}))
    except ValueError as err:
        raise ValueError(f"grid tolerance: {err}") from None
    return spec, base, base_tol


def check_grid(
    rule, grid: Mapping[str, Any], *, cost_names: Sequence[str] = (), stopping: Stopping | None = None
) -> None:
    """Validates one rule's grid as `sweep` and `check_sweep` do, on the host (nothing traced or
    compiled): keys, types, sizes, and every value built into the rule. The one validator of grid
    values: the config reader calls it too (it maps a `GridError` to the config's key and line).

    Args:
      rule, grid: as in `sweep` (a `gdjax.Zip` grid is zipped).
      cost_names: grid keys that are the cost's hyperparameters (checked finite, not built).
      stopping: the `Stopping` a tolerance in the grid would override.

    Raises:
      GridError: a value is refused (with its key and position); ValueError: anything else.
    """
    tolerance_kwargs = options.stopping_of(stopping, None).as_dict()
    zipped = isinstance(grid, Zip)
    parsed = _parse_grid(
        rule, grid, zip_grid=zipped, tolerance_kwargs=tolerance_kwargs, cost_names=tuple(cost_names)
    )
    _validate_values(parsed, tolerance_kwargs)


# ------------------------------------------------------------------------------------- groups
@dataclasses.dataclass
class _Group:
    """The lanes of one compiled program: one rule family and one batch size."""

    spec: rules_lib.RuleSpec  # what every lane runs (hashable: selects the program)
    metrics: tuple  # ((name, fn), ...)
    cost: Callable
    opts: loop.RunOptions
    data: PyTree  # prepared (cast) data, shared by every lane
    params0: PyTree  # (L, ...) NumPy
    hp: tuple[dict[str, np.ndarray], dict[str, np.ndarray]]  # (rule, cost) values, (L,) each
    key_data: np.ndarray | None  # (L, *key_shape) uint32
    key_impl: str | None
    tols: loop.Tolerances  # (L,) each
    coords: list[dict]
    bytes_per_lane: int

    @property
    def num_lanes(self) -> int:
        return len(self.coords)


def _num_configs(parsed: _ParsedGrid) -> int:
    """Grid points of one rule, counted without building them."""
    lengths = [len(a.values) for a in parsed.axes]
    if not lengths:
        return len(parsed.seeds) if parsed.seeds else 1
    return lengths[0] if parsed.zipped else math.prod(lengths)


def _num_rule_lanes(parsed: _ParsedGrid, num_seeds: int, num_starts: int, zip_starts: bool) -> int:
    """Lanes of one rule per batch size: configurations x seeds (unless zipped) x starts (unless zipped)."""
    seeds = 1 if parsed.seeds else num_seeds
    return _num_configs(parsed) * seeds * (1 if zip_starts else num_starts)


def _lane_indices(parsed: _ParsedGrid, lanes: _LaneAxes):
    """Per lane: the index of each grid axis's value, of the seed and of the start.

    Lanes are ordered (configuration, seed, start), the last varying fastest; a Zip grid's seeds
    pair seed i with configuration i, and zipped starts pair start i with seed i.
    """
    lengths = [len(a.values) for a in parsed.axes]
    num_configs = _num_configs(parsed)
    if not lengths:
        per_axis = []
    elif parsed.zipped:
        per_axis = [np.arange(num_configs)] * len(lengths)
    else:
        per_axis = list(np.unravel_index(np.arange(num_configs), lengths))
    if parsed.seeds:  # lanes.seeds holds every rule's zipped seeds, in order of first appearance
        config = np.arange(num_configs)
        seed_i = np.asarray([lanes.seeds.index(s) for s in parsed.seeds])
    else:
        config = np.repeat(np.arange(num_configs), lanes.num_seeds)
        seed_i = np.tile(np.arange(lanes.num_seeds), num_configs)
    if lanes.zip_starts:
        start_i = seed_i
    else:
        config = np.repeat(config, lanes.num_starts)
        seed_i = np.repeat(seed_i, lanes.num_starts)
        start_i = np.tile(np.arange(lanes.num_starts), len(seed_i) // lanes.num_starts)
    return [ix[config] for ix in per_axis], seed_i, start_i


def _largest_intermediate(cost, params0, data) -> int:
    """Elements of the largest array one `value_and_grad(cost)` evaluation creates (memory estimate).

    It depends on shapes only: traced once per cost and shapes (a trace costs ~20 ms a call)."""
    try:
        return _largest_intermediate_of(cost, loop._StructKey(params0), loop._StructKey(data))
    except TypeError:  # an unhashable cost
        return _largest_intermediate_traced(cost, params0, data)


@functools.lru_cache(maxsize=128)
def _largest_intermediate_of(cost, params_key, data_key) -> int:
    abstract = loop._abstract
    return _largest_intermediate_traced(cost, abstract(params_key.struct), abstract(data_key.struct))


def _largest_intermediate_traced(cost, params0, data) -> int:
    jaxpr = jax.make_jaxpr(jax.value_and_grad(cost))(params0, data).jaxpr
    largest = 0

    def walk(jaxpr):
        nonlocal largest
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    sub = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                    if hasattr(sub, "eqns"):
                        walk(sub)

    walk(jaxpr)
    return largest


def _tree_size(tree) -> int:
    """Elements of the run's real dtype: a complex element counts twice."""
    return int(sum(np.prod(np.shape(x)) * (2 if np.iscomplexobj(x) else 1) for x in jax.tree.leaves(tree)))


def _default_memory_budget(devices) -> int:
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume a small machine
        host = 4 * 2**30
    limits = []
    for d in devices:
        try:
            stats = d.memory_stats()
        except Exception:  # backends without memory statistics
            stats = None
        if stats and stats.get("bytes_limit"):
            limits.append(int(stats["bytes_limit"]))
    if len(limits) == len(devices) and limits:
        return min(host, sum(limits) // 2)
    return host


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# ------------------------------------------------------------------------- the compiled program
def _lanes_program(cost, metrics, opts, spec, lane_sharding, key_impl, params0, hp, data, key_data, tols):
    """`loop.scan_pieces` vmapped over lanes; each lane builds its rule state from its values.

    The histories come out with the lane axis second (`_lane_axes`), as the loop writes them: moving
    it first made XLA transpose each history after the loop (16 MB each for 4096 lanes of 1000 steps,
    slower than the loop itself). The host moves it first as a NumPy view (`_lanes_first`).
    """
    keys = None if key_data is None else jax.random.wrap_key_data(key_data, impl=key_impl)

    def one(p0, values, key, lane_tols):
        trace = loop.scan_pieces(cost, spec, metrics, opts, p0, values, data, key, lane_tols)
        # The schedule's step numbers are the same in every lane: attached on the host (`_execute`),
        # not written per lane by the device and copied back (2 x 16 MB for 4096 lanes of 1000 steps).
        return trace._replace(eval_steps=None, record_steps=None)

    # `hp` is (rule values, cost values), each a dict of (lanes,) arrays.
    axes = _lane_axes(opts)
    out = jax.vmap(one, out_axes=axes)(params0, hp, keys, tols)
    # Joined after the vmap, along the time axis (the first): a contiguous copy, not a transpose.
    # Batch losses that are the evaluations' losses are not an output: the host slices them.
    out = loop.join_pieces(out, batch_from_evals=False)
    if lane_sharding is not None:
        mesh = lane_sharding.mesh
        spec_of = {axis: NamedSharding(mesh, PartitionSpec(*([None] * axis), _LANES)) for axis in (0, 1)}
        out = type(out)(
            *(
                jax.lax.with_sharding_constraint(field, spec_of[axis]) if field is not None else None
                for field, axis in zip(out, axes, strict=True)
            )
        )
    return out


def _lane_axes(opts: loop.RunOptions) -> Trace:
    """Where each field of a sweep program's output has its lane axis: second in the histories the
    loop writes per evaluation (time first), first elsewhere (final values, and the histories that a
    lane builds whole: thinned records, batch losses)."""
    records_per_eval = opts.record_every == opts.eval_every
    return Trace(
        params=0,
        loss_history=1,
        params_history=1 if records_per_eval else 0,
        grad_norm_history=1,
        steps=0,
        status=0,
        stop_step=0,
        eval_steps=0,
        batch_loss_history=0,
        metrics=1,
        record_steps=0,
        evaluated_at=0,
        invalid=0,
    )


def _lanes_first(out: Trace, axes: Trace, num_lanes: int, batch_from_evals: bool) -> Trace:
    """A program's output on the host, every field with its lanes first (NumPy views, no copy), the
    padding lanes dropped, and the batch losses sliced from the evaluations' where they are those."""

    def first(x, axis):
        return np.moveaxis(np.asarray(x), axis, 0)[:num_lanes]

    fields = [
        None if field is None else jax.tree.map(functools.partial(first, axis=axis), field)
        for field, axis in zip(out, axes, strict=True)
    ]
    trace = type(out)(*fields)
    if batch_from_evals:
        trace = trace._replace(batch_loss_history=trace.loss_history[:, :-1])
    return trace


_program = jax.jit(_lanes_program, static_argnums=(0, 1, 2, 3, 4, 5))
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 64
_COMPILED_LOCK = threading.Lock()  # programs compiled ahead in threads are kept here too (lower_sweep)


def _program_key(statics, args) -> tuple:
    leaves, treedef = jax.tree.flatten(args)
    return (statics, treedef, tuple((x.shape, x.dtype, getattr(x, "sharding", None)) for x in leaves))


def _keep(key, compiled) -> None:
    with _COMPILED_LOCK:
        _COMPILED[key] = compiled
        if len(_COMPILED) > _COMPILED_MAX:
            _COMPILED.popitem(last=False)


def _kept(key):
    with _COMPILED_LOCK:
        compiled = _COMPILED.get(key)
        if compiled is not None:
            _COMPILED.move_to_end(key)
        return compiled


def _compiled(statics, args):
    """The compiled program for these static arguments and input shapes/shardings (cached)."""
    key = _program_key(statics, args)
    compiled = _kept(key)
    if compiled is not None:
        return compiled, 0.0
    t0 = time.perf_counter()
    compiled = _program.lower(*statics, *args).compile()
    seconds = time.perf_counter() - t0
    _keep(key, compiled)
    return compiled, seconds


class LoweredProgram(NamedTuple):
    """One program a sweep would compile, traced and lowered but not compiled (`lower_sweep`).

    `compile()` compiles it (XLA; it releases the GIL, so several compile at once in threads, and it
    reads and fills the persistent compilation cache like any compile) and keeps the executable where
    `sweep` looks first: a later `sweep` of the same program compiles nothing. Returns the seconds
    it took.
    """

    key: tuple
    lowered: Any  # jax.stages.Lowered
    seconds: float  # tracing and lowering

    def compile(self) -> float:
        t0 = time.perf_counter()
        compiled = self.lowered.compile()
        seconds = time.perf_counter() - t0
        _keep(self.key, compiled)
        return seconds


def _place(tree, sharding, device):
    """Puts host arrays on `device`, or as global arrays with `sharding` (works across processes)."""
    if sharding is None:
        return jax.device_put(tree, device)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def _to_host(tree):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


# -------------------------------------------------------------------------------------- sweep
def _seed_list(seeds) -> list[int] | None:
    if seeds is None:
        return None
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        seeds = [seeds]
    _check_axis_length("seeds", seeds)
    seeds = list(np.asarray(seeds).ravel().tolist()) if not isinstance(seeds, list | tuple) else list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. seeds=[0, 1, 2]")
    return [validation.check_seed("seeds", s) for s in seeds]


def _starts_stack(params0, starts):
    """The stacked starting points `(S, ...)` as NumPy arrays of the params' canonical dtype."""

    def canon(x):
        x = np.asarray(x)
        if not jax.numpy.issubdtype(x.dtype, jax.numpy.inexact):  # bfloat16's NumPy kind is "V"
            raise ValueError(f"parameters must be floating point (or complex), got dtype {x.dtype}")
        return x.astype(jax.dtypes.canonicalize_dtype(x.dtype))

    if starts is None:
        if params0 is None:
            raise ValueError(
                "params0 is None: give a starting point (or a stack of them as params0=gdjax.Starts(stack))"
            )
        validation.check_params(params0)
        return jax.tree.map(lambda x: canon(x)[None], params0)
    validation.check_params(starts)
    leaves = jax.tree.leaves(starts)
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if None in sizes or len(sizes) != 1:
        shapes = jax.tree.map(np.shape, starts)
        raise ValueError(f"starts needs one leading (start) axis shared by every leaf, got shapes {shapes}")
    if sizes == {0}:
        raise ValueError("starts is empty: give at least one starting point")
    stack = jax.tree.map(canon, starts)
    if params0 is not None:
        one = jax.tree.map(lambda x: np.shape(x), params0)
        want = jax.tree.map(lambda x: x.shape[1:], stack)
        if jax.tree.structure(params0) != jax.tree.structure(stack) or one != want:
            raise ValueError(f"params0 {one} does not match one start of the stack {want}")
    return stack


def _noise(template, seed: int) -> list[np.ndarray]:
    """Standard-normal perturbations of each leaf of one start for `seed` (see the module docstring)."""
    leaves = jax.tree.leaves(template)
    if _PLAN_ONLY.get() == "check":  # check_sweep: shapes are enough, nothing is computed (nor compiled)
        return [np.zeros(np.shape(x), jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)) for x in leaves]
    key = jax.random.fold_in(validation.seed_key(seed), NOISE_FOLD)
    keys = jax.random.split(key, len(leaves))
    return [np.asarray(jax.random.normal(k, x.shape, x.dtype)) for k, x in zip(keys, leaves, strict=True)]


class Zip(dict):
    """A grid whose 1-D entries are zipped (equal lengths, one lane per position) instead of crossed.

    Example: `grid=gdjax.Zip({"learning_rate": [0.1, 0.01], "momentum": [0.5, 0.9]})` gives two
    configurations, not four.
    """


class Starts(NamedTuple):
    """Starting points of a sweep, passed as its `params0`: a grid axis of starts, and/or noise.

    Attributes:
      points: a stack of starting points (a params pytree with a leading axis), or with
        `stacked=False` one starting point.
      init_noise: perturb each start by `init_noise * normal`, one draw per seed (needs `seeds`).
      stacked: whether `points` has the leading start axis.
      zip_seeds: pair start i with seed i instead of crossing them (the stack holds one start per
        seed, in the order of the seeds): lanes are configurations x seeds, and a lane's `start`
        coordinate is its seed's index.
    """

    points: PyTree
    init_noise: float | None = None
    stacked: bool = True
    zip_seeds: bool = False


class Init(NamedTuple):
    """A start drawn per seed, passed as a sweep's `params0`: `fn(key) -> params`.

    Every lane of seed `s` starts at `fn(init_key(s))`. `fn` must be a pure JAX function of the key
    (it is called as `jax.vmap(fn)` over the seeds' keys, once per sweep, before the compiled
    program), returning a params pytree of floating-point arrays of the same shapes for every key.

    Attributes:
      fn: `fn(key) -> params`, e.g. `lambda k: {"w": 0.1 * jax.random.normal(k, (8,)), "b": 0.0}`.
      like: optional params whose structure and shapes the result must have; its leaves' dtypes
        are the starts' dtypes (the result is cast), e.g. a model's zero start.

    Example:
      >>> import jax, jax.numpy as jnp, gdjax
      >>> X, y = gdjax.data.house_prices()
      >>> init = gdjax.Init(lambda k: {"w": jax.random.normal(k, (1,)), "b": jnp.zeros(())})
      >>> r = gdjax.sweep(gdjax.make_cost(gdjax.linear, gdjax.mse), "gd", init, (X, y),
      ...                 grid={"learning_rate": 0.1}, num_steps=5, seeds=[0, 1])
      >>> [c["seed"] for c in r.coords]
      [0, 1]
    """

    fn: Callable[[jax.Array], PyTree]
    like: PyTree | None = None

    def starts(self, seeds: Sequence[int]) -> PyTree:
        """The starts of `seeds`, stacked `(len(seeds), ...)` as NumPy arrays: what the lanes start at."""
        return _init_stack(self, [validation.check_seed("seeds", s) for s in seeds], False)


def init_key(seed: int) -> jax.Array:
    """The key `Init(fn)` passes to `fn` for the lanes of `seed`:
    `jax.random.fold_in(gdjax.validation.seed_key(seed), INIT_FOLD)`.

    Folded away from the lane key, so the start is independent of anything else drawn from it.
    """
    return jax.random.fold_in(validation.seed_key(validation.check_seed("seed", seed)), INIT_FOLD)


def _init_stack(init: Init, seeds: list[int] | None, plan_only: bool) -> PyTree:
    """`fn(init_key(s))` for every seed, stacked `(num_seeds, ...)` as host arrays (checked once)."""
    if not callable(init.fn):
        raise ValueError(f"Init needs a function fn(key) -> params, got {init.fn!r}")
    if seeds is None:
        raise ValueError("Init(fn) draws each seed's start from its key: pass seeds=[0, 1, ...]")
    one = [init_key(s) for s in seeds]
    keys = jax.random.wrap_key_data(
        np.stack([np.asarray(jax.random.key_data(k)) for k in one]), impl=jax.random.key_impl(one[0])
    )
    name = getattr(init.fn, "__name__", "fn")
    try:
        shapes = jax.eval_shape(init.fn, keys[0])
    except Exception as err:
        raise ValueError(
            f"Init: {name}(key) failed: {type(err).__name__}: {str(err).strip()[:300]}"
        ) from None
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    if not leaves:
        raise ValueError(f"Init: {name}(key) returned no arrays ({shapes!r}); it must return the params")
    for path, leaf in leaves:
        if not jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact):
            raise ValueError(
                f"Init: {name}(key){jax.tree_util.keystr(path)} has dtype {leaf.dtype}; parameters must be "
                "floating point"
            )
    dtypes = None
    if init.like is not None:
        want = jax.tree.map(np.shape, init.like)
        got = jax.tree.map(lambda x: x.shape, shapes)
        if jax.tree.structure(init.like) != jax.tree.structure(shapes) or want != got:
            raise ValueError(f"Init: {name}(key) returns params of shapes {got}, but like= has {want}")
        dtypes = jax.tree.map(lambda x: jax.dtypes.canonicalize_dtype(np.asarray(x).dtype), init.like)
    if plan_only:  # check_sweep: shapes are enough, nothing is computed
        stack = jax.tree.map(lambda x: np.zeros((len(seeds), *x.shape), x.dtype), shapes)
    else:
        stack = jax.tree.map(np.asarray, jax.vmap(init.fn)(keys))
    if dtypes is not None:
        stack = jax.tree.map(lambda x, d: x.astype(d), stack, dtypes)
    validation.check_params(stack)
    return stack


def sweep(
    cost: Callable[[PyTree, PyTree], jax.Array],
    rule: str | Callable[..., optax.GradientTransformation] | Mapping | None,
    params0: PyTree | Starts,
    data: PyTree = None,
    *,
    grid: Mapping[str, Any] | None = None,
    num_steps: int,
    seeds: Sequence[int] | int | None = None,
    batch_size: int | None | Sequence[int | None] = None,
    tol: float | None = None,
    chunk_size: int | None = None,
    metrics: Mapping[str, Callable[[PyTree], jax.Array]] | None = None,
    eval_every: int | None = None,
    stopping: Stopping | None = None,
    execution: Execution | None = None,
) -> SweepResult:
    """Runs a grid of optimisations (hyperparameters x seeds x starts) as one compiled vmapped program.

    Every lane is `gdjax.loop.run(cost, factory(**values), start, data, key=jax.random.key(seed),
    ...)` for its values, seed and start, computed by `jax.vmap` of the same compiled scan, so it
    gives the same numbers (up to the summation order of vmapped reductions). A lane that diverges
    only changes its own status. One program is compiled per rule family, batch size and shapes; a
    second sweep with new values of the same sizes compiles nothing.

    Args:
      cost: pure `cost(params, data) -> scalar`.
      rule: a rule name (`"sgd"`, `"momentum"`, `"optax.lamb"`, see `gdjax.rules.get`), a built gdjax
        rule (`gdjax.rules.adam(0.1)`: its values are the lanes' defaults), or a factory
        (`gdjax.rules.momentum`) whose `update` is shared across values. Several optimizers in one
        call: a mapping `{rule: grid, ...}` (then no `grid=`); one program per rule, lanes
        concatenated in this order.
      params0: the starting parameters (a pytree), or `gdjax.Starts(stack, init_noise=...)`: a stack
        of starting points (a grid axis; `zip_seeds=True` pairs start i with seed i) and/or a
        perturbation of each start per seed, or `gdjax.Init(fn)`: each seed's start `fn(key)`, drawn
        from the seed (`init_key(seed)`, see the module docstring).
      data: the batch pytree (e.g. `(X, y)`), replicated to every lane.
      grid: hyperparameter name -> 1-D values (crossed into a product; `gdjax.Zip({...})` zips them
        instead, and may hold `"seed"`: configuration i runs seed i) or a scalar (fixed). Keys are the
        rule's hyperparameters (`gdjax.rules.hyperparameters(name)`), its non-numeric options as scalars
        (`schedule="inverse_sqrt"`, `velocity_form=True`), or the stopping settings `tol`,
        `grad_tol`, `patience`, `min_delta`, `divergence_factor` as lane axes.
      num_steps: update steps per lane.
      seeds: integer seeds in `[0, 2**63)`, a grid axis: lane key as `run(..., key=seed)` builds it
        (`jax.random.key(seed)` for seeds below 2**32) for mini-batch sampling, `init_noise` and
        `Init`. Needed when `batch_size` samples or `init_noise` or `Init` is used.
      batch_size: None (full batch), an int, or a list of them: one compiled group per batch size.
      tol: as in `gdjax.run` (the same as `stopping=Stopping(tol=...)`).
      chunk_size: run the lanes of each program in chunks of this many (one compiled program for all
        chunks; the last chunk is padded by repeating a lane and the padding dropped). The same as
        `execution=Execution(chunk_size=...)`.
      metrics: `{"name": fn(params) -> scalar}` evaluated per lane at every evaluation (as in
        `gdjax.run`): `trace.metrics["name"]` is `(lanes, num_evals)`, summaries get a column with
        the last value, and `best(by="name", mode="max")` ranks by it.
      eval_every: steps between evaluations, as in `gdjax.run` (default: every step for full batch,
        `ceil(10 n / batch_size)` for mini-batches).
      stopping: a `gdjax.Stopping`, the same for every lane (put a setting in the grid to sweep it).
      execution: a `gdjax.Execution`: `record_every` (default at evaluations, thinned so that all
        lanes' records stay under 256 MiB), `unroll`, `layout` (`"gram"`: full-batch least squares
        on `X^T X`, O(d^2) per step instead of O(n d), the same trajectories up to round-off),
        `chunk_size`, `devices` (default `jax.devices()`), `memory_budget` (bytes one program call may
        need, see the module docstring) and `progress` (`progress(lanes_done, num_lanes)`, called
        after each chunk).

    Suboptimality in summaries uses f*: computed in closed form when the cost offers it
    (`cost.optimal_value(data)`: `make_cost(linear, mse)` on `(X, y)`); otherwise set it with
    `result.with_f_star(value)`, or read `suboptimality_vs_best` (against the best loss any lane
    found).

    Returns:
      A `SweepResult`.

    Raises:
      ValueError: invalid input (before anything is compiled), including a sweep that would not fit
        `memory_budget` without `chunk_size`.
      SweepInterrupted: a chunk or `progress` raised after some chunks completed; `.partial` holds the
        completed lanes.
    """
    compile_cache.from_environment_once()
    stopping = options.stopping_of(stopping, tol)
    execution = options.execution_of(execution, chunk_size)
    if execution.checkpoint_every is not None:
        raise ValueError(
            "Execution(checkpoint_every=...) is for run only (reverse mode through one run); a sweep "
            "is not differentiated: leave it out"
        )
    chunk_size, devices = execution.chunk_size, execution.devices
    progress, memory_budget = execution.progress, execution.memory_budget
    record_every = execution.record_every
    if isinstance(rule, Mapping):
        if grid is not None:
            raise ValueError("give either rule= and grid=, or rule={rule: grid, ...}, not both")
        if not rule:
            raise ValueError("rule is an empty mapping: give {rule name or factory: grid, ...}")
        entries = list(rule.items())
    elif rule is None:
        raise ValueError("rule is None: name a rule ('sgd'), or give several as rule={'sgd': grid, ...}")
    else:
        entries = [(rule, grid)]
    starts = init_noise = init = None
    zip_starts = False
    if isinstance(params0, Init):
        init, params0 = params0, None
    elif isinstance(params0, Starts):
        given = params0
        init_noise = given.init_noise
        starts, params0 = (given.points, None) if given.stacked else (None, given.points)
        zip_starts = bool(given.zip_seeds)
        if zip_starts and not given.stacked:
            raise ValueError("Starts(zip_seeds=True) pairs start i with seed i: give a stack (stacked=True)")
    tolerance_kwargs = stopping.as_dict()
    cost, cost_base = costs.split(cost)  # a bound cost's values: every lane's defaults
    cost_names = costs.hyperparameters(cost)
    parsed_grids = [
        _parse_grid(
            r, g, zip_grid=isinstance(g, Zip), tolerance_kwargs=tolerance_kwargs, cost_names=cost_names
        )
        for r, g in entries
    ]
    names = [p.source.name for p in parsed_grids]
    if len(set(names)) != len(names):
        raise ValueError(f"rules must have distinct names, got {names}")

    zipped_seeds = [p.seeds for p in parsed_grids if p.seeds is not None]
    if zipped_seeds:
        if seeds is not None:
            raise ValueError(
                "seeds are given twice, as sweep(seeds=...) and as the Zip grid's 'seed' entry: give them "
                "once"
            )
        if len(zipped_seeds) != len(parsed_grids):
            raise ValueError(
                "a Zip grid's 'seed' entry pairs seeds with configurations: give one in every rule's grid, "
                "or cross every rule with sweep(seeds=[...])"
            )
        seed_list = list(dict.fromkeys(s for z in zipped_seeds for s in z))
    else:
        seed_list = _seed_list(seeds)
    if init_noise is not None:
        validation.check_finite_number("init_noise", init_noise, lower=0.0)
        if seed_list is None:
            raise ValueError("init_noise needs seeds: each seed draws its own perturbation (seeds=[0, 1, 2])")
    if init is not None:
        stack, zip_starts = _init_stack(init, seed_list, _PLAN_ONLY.get() == "check"), True
    else:
        stack = _starts_stack(params0, starts)
    _check_axis_length("params0 (the stack of starts)", jax.tree.leaves(stack)[0])
    num_starts = jax.tree.leaves(stack)[0].shape[0]
    if zip_starts and init is None:
        if seed_list is None:
            raise ValueError(
                "Starts(zip_seeds=True) pairs start i with seed i: pass seeds=[...], one per start"
            )
        if num_starts != len(seed_list):
            raise ValueError(
                f"Starts(zip_seeds=True) pairs start i with seed i: the stack has {num_starts} starts but "
                f"there are {len(seed_list)} seeds"
            )
    if isinstance(batch_size, list | tuple):
        _check_axis_length("batch_size", batch_size)
    batch_sizes = list(batch_size) if isinstance(batch_size, list | tuple) else [batch_size]
    if not batch_sizes:
        raise ValueError("batch_size is an empty list: give None, an int, or a non-empty list")
    for b in batch_sizes:
        validation.check_positive_int("batch_size", b, allow_none=True)
    if len(set(batch_sizes)) != len(batch_sizes):
        raise ValueError(f"batch_size lists a size twice: {batch_sizes}")
    num_seeds = 1 if seed_list is None else len(seed_list)
    num_lanes = sum(_num_rule_lanes(p, num_seeds, num_starts, zip_starts) for p in parsed_grids)
    num_lanes *= len(batch_sizes)
    if num_lanes > MAX_LANES:
        raise ValueError(
            f"the sweep has {num_lanes} lanes (grid points x seeds x starts x batch sizes), more than "
            f"{MAX_LANES} in one call: split it into several sweeps, or use fewer values per axis"
        )
    validation.check_positive_int("chunk_size", chunk_size, allow_none=True)
    if memory_budget is not None:
        validation.check_finite_number("memory_budget", memory_budget, positive=True)
    devices = list(jax.devices()) if devices is None else list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(f"devices must be a non-empty list of jax devices, got {devices!r}")
    num_examples = validation.check_data(data)
    offered = getattr(cost, "optimal_value", None)
    # Resolved on first use; NumPy data is copied, so that later changes to it cannot change f*.
    frozen = jax.tree.map(lambda x: x.copy() if isinstance(x, np.ndarray) else x, data)
    f_star = functools.partial(offered, frozen) if callable(offered) else None

    run_cost, run_data, run_batch_sizes = cost, data, list(batch_sizes)
    if execution.layout == "gram":
        if any(b is not None and b != num_examples for b in batch_sizes):
            raise ValueError(
                f"layout='gram' computes the full-batch gradient from X^T X; it cannot sample "
                f"mini-batches (batch_size={batch_size!r}): use the default layout"
            )
        run_cost, run_data, _ = loop.use_layout(cost, data, "gram", None)
        run_batch_sizes = [None] * len(batch_sizes)
    for b in run_batch_sizes:
        if b is not None and seed_list is None and num_examples is not None and num_examples > b:
            raise ValueError(
                f"batch_size={b} samples mini-batches at random: pass seeds=[0, ...] (lane key "
                "jax.random.key(seed))"
            )

    lanes = _LaneAxes.build(stack, starts is not None, seed_list, init_noise, zip_starts)
    if eval_every is None and len(run_batch_sizes) > 1:
        # Lanes of every batch size stack into one trace: they share the most frequent default schedule.
        eval_every = min(
            loop.default_eval_every(num_steps, None if b == num_examples else b, num_examples)
            for b in run_batch_sizes
        )
    run_options = dict(
        num_steps=num_steps,
        eval_every=eval_every,
        record_every=record_every,
        metrics=metrics,
        unroll=execution.unroll,
    )
    if isinstance(metrics, Mapping):
        # A summary row has a column per grid key and per metric: one name would be both.
        keys = dict.fromkeys(k for p in parsed_grids for k in p.keys)
        clash = [name for name in metrics if name in keys]
        if clash:
            raise ValueError(
                f"metric name {clash[0]!r} is also a grid key of this sweep: its column in summaries "
                f"would replace the hyperparameter's; rename the metric (e.g. 'metric_{clash[0]}')"
            )
    groups = []
    for parsed in parsed_grids:
        spec, base, tol_base = _validate_values(parsed, tolerance_kwargs)
        lane_params, hp, tols, key_data, coord_values, seed_i, start_i = _lane_values(
            parsed, parsed.zipped, lanes, tol_base, base, cost_base
        )
        if hasattr(spec, "check_in_dtype"):  # the values as the lanes keep them (bfloat16: 0.999 is 1)
            rule_hp = hp[0]
            originals = {k: coord_values.get(k, [base.get(k)]) for k in rule_hp}
            for name in rule_hp:
                try:
                    spec.check_in_dtype({name: rule_hp[name]}, originals, loop.float_dtype(lanes.stack))
                except ValueError as err:
                    raise GridError(f"rule {parsed.source.name!r}: {err}", name, None, str(err)) from None
        rule0 = spec.build(base)
        for shown_bs, bs in zip(batch_sizes, run_batch_sizes, strict=True):
            p0, prepared, _, opts, metric_fns = loop.prepare(
                run_cost,
                rule0,
                jax.tree.map(lambda x: x[0], lane_params),
                run_data,
                batch_size=bs,
                key=None if seed_list is None else validation.seed_key(seed_list[0]),
                # The records of all lanes share one cap (they are stacked on the host too).
                max_record_bytes=max(1, SWEEP_RECORD_BYTES // len(seed_i)),
                **run_options,
            )
            opts = loop.enabled_criteria(opts, tols)
            # The memory estimate traces the cost as given; the layout is chosen after it (below).
            coords = [
                {
                    "rule": parsed.source.name,
                    **{k: coord_values[k][i] for k in parsed.keys},
                    "seed": None if seed_list is None else seed_list[seed_i[i]],
                    "start": None if starts is None else int(start_i[i]),
                    "batch_size": shown_bs,
                }
                for i in range(len(seed_i))
            ]
            groups.append(
                _Group(
                    spec=spec,
                    metrics=metric_fns,
                    cost=run_cost,
                    opts=opts,
                    data=prepared,
                    params0=lane_params,
                    hp=hp,
                    key_data=key_data,
                    key_impl=lanes.key_impl,
                    tols=tols,
                    coords=coords,
                    bytes_per_lane=_bytes_per_lane(run_cost, prepared, rule0, p0, opts, len(metric_fns)),
                )
            )

    call_lanes = _check_memory(groups, chunk_size, devices, memory_budget, record_every)
    hp_names = tuple(dict.fromkeys(k for p in parsed_grids for k in p.keys))
    meta = dict(hyperparameter_names=hp_names, f_star=f_star, num_steps=num_steps, num_examples=num_examples)
    plan = _Plan(groups, call_lanes, chunk_size, devices, progress, meta, memory_budget, execution)
    if _PLAN_ONLY.get():
        return plan
    return _run_plan(plan, execution)


def _run_plan(plan: _Plan, execution: Execution) -> SweepResult:
    groups = plan.groups
    if execution.layout == "feature_major":
        # The same data layout as `run`, so that a lane reproduces the run alone. Chosen only now:
        # a sweep refused above (or a plan) moves and transposes no data.
        groups = [_feature_major(g) for g in groups]
    if _LOWER_ONLY.get():
        return _lower(groups, plan.call_lanes, plan.chunk_size, plan.devices, execution)
    return _execute(groups, plan.call_lanes, plan.chunk_size, plan.devices, execution, plan.meta)


def _feature_major(group: _Group) -> _Group:
    cost, data, opts = loop.use_feature_major(group.cost, group.data, group.opts)
    return dataclasses.replace(group, cost=cost, data=data, opts=opts)


class _Plan(NamedTuple):
    groups: list
    call_lanes: list[int]
    chunk_size: int | None
    devices: list
    progress: Any
    meta: dict
    memory_budget: float | None
    execution: Execution | None = None


# "check" (check_sweep: starts from `Init` are not drawn) or "plan" (plan_sweep: a plan that runs)
_PLAN_ONLY = contextvars.ContextVar("gdjax_sweep_plan_only", default=False)
_LOWER_ONLY = contextvars.ContextVar("gdjax_sweep_lower_only", default=False)


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """What a sweep would compile and run, from `check_sweep` or `plan_sweep` (nothing is compiled or
    run).

    Attributes:
      num_lanes: lanes of the whole sweep.
      programs: one `(rule, batch_size, lanes)` per compiled program.
      lanes_per_call: lanes each program runs per call (its chunk, padded to the devices).
      bytes_per_lane: the memory estimate of one lane of each program (see the module docstring).
      bytes_per_call: the largest estimate of one program call, checked against the budget.
      memory_budget: the budget it was checked against, in bytes.
    """

    num_lanes: int
    programs: list[tuple[str, int | None, int]]
    lanes_per_call: list[int]
    bytes_per_lane: list[int]
    bytes_per_call: int
    memory_budget: float
    _program: _Plan | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def runnable(self) -> bool:
        """Whether `run_plan` can run it (a plan of `plan_sweep`, not of `check_sweep`)."""
        return self._program is not None


def check_sweep(*args: Any, **kwargs: Any) -> SweepPlan:
    """Validates a sweep without compiling or running it: the same arguments as `sweep`.

    Raises the same `ValueError`s `sweep` would raise before running a lane (bad values, sizes that
    do not fit the memory budget, with the advice), and otherwise returns the `SweepPlan`. A caller
    that writes results to disk asks first, so an impossible sweep leaves nothing behind.
    """
    return _plan(args, kwargs, "check")


def plan_sweep(*args: Any, **kwargs: Any) -> SweepPlan:
    """`check_sweep`, keeping what it planned so that `run_plan(plan)` runs the sweep without
    validating or planning it again (the `gdjax run` command plans each sweep once, before its run
    folder exists). Starts drawn by a `gdjax.Init` are drawn here."""
    return _plan(args, kwargs, "plan")


def run_plan(plan: SweepPlan, *, progress: Callable[[int, int], Any] | None = None) -> SweepResult:
    """Runs a sweep planned by `plan_sweep`: the same result as `sweep` with the same arguments.

    Args:
      plan: what `plan_sweep` returned.
      progress: `progress(lanes_done, num_lanes)` after each chunk (replaces the plan's `Execution`'s).
    """
    if not isinstance(plan, SweepPlan) or not plan.runnable:
        raise ValueError("run_plan runs what plan_sweep returned (check_sweep's plans only validate)")
    execution = plan._program.execution
    if progress is not None:
        execution = dataclasses.replace(execution, progress=progress)
    return _run_plan(plan._program, execution)


def _plan(args, kwargs, mode: str) -> SweepPlan:
    token = _PLAN_ONLY.set(mode)
    try:
        plan = sweep(*args, **kwargs)
    finally:
        _PLAN_ONLY.reset(token)
    budget = _default_memory_budget(plan.devices) if plan.memory_budget is None else float(plan.memory_budget)
    return SweepPlan(
        num_lanes=sum(g.num_lanes for g in plan.groups),
        programs=[(g.coords[0]["rule"], g.coords[0]["batch_size"], g.num_lanes) for g in plan.groups],
        lanes_per_call=list(plan.call_lanes),
        bytes_per_lane=[g.bytes_per_lane for g in plan.groups],
        bytes_per_call=max(n * g.bytes_per_lane for n, g in zip(plan.call_lanes, plan.groups, strict=True)),
        memory_budget=budget,
        _program=plan if mode == "plan" else None,
    )


def lower_sweep(*args: Any, **kwargs: Any) -> list[LoweredProgram]:
    """The programs `sweep(*args, **kwargs)` would compile, traced and lowered ahead of time.

    The same arguments as `sweep`, or a plan of `plan_sweep` alone (`lower_sweep(plan)`: not
    validated or planned again); nothing is compiled or run. Each distinct program not compiled
    yet in this process is returned once, as a `LoweredProgram`: compile them (one after another,
    or in threads: XLA compiles release the GIL), and the sweep itself then only runs. A study
    does this for all its units with `GDJAX_COMPILE_THREADS` (`gdjax.study.programs`).
    """
    token = _LOWER_ONLY.set(True)
    try:
        if len(args) == 1 and not kwargs and isinstance(args[0], SweepPlan):
            return run_plan(args[0])
        return sweep(*args, **kwargs)
    finally:
        _LOWER_ONLY.reset(token)


class _LaneAxes(NamedTuple):
    """The seed and start axes every rule's grid is crossed (or zipped) with."""

    stack: PyTree  # (num_starts, ...) NumPy starting points
    has_starts: bool  # the lanes' `start` coordinate is the index into `stack` (else None)
    seeds: list[int] | None
    seed_keys: np.ndarray | None  # (num_seeds, *key_shape) uint32 key data
    key_impl: str | None
    noise: list[list[np.ndarray]] | None  # per seed, per leaf: standard-normal perturbations
    init_noise: float | None
    zip_starts: bool = False  # start i belongs to seed i (Starts(zip_seeds=True), Init)

    @classmethod
    def build(cls, stack, has_starts, seeds, init_noise, zip_starts=False) -> _LaneAxes:
        seed_keys = key_impl = noise = None
        if seeds is not None:
            keys = [validation.seed_key(s) for s in seeds]
            seed_keys = np.stack([np.asarray(jax.random.key_data(k)) for k in keys])
            key_impl = str(jax.random.key_impl(keys[0]))
            if init_noise:
                noise = [_noise(jax.tree.map(lambda x: x[0], stack), s) for s in seeds]
        return cls(stack, has_starts, seeds, seed_keys, key_impl, noise, init_noise, zip_starts)

    @property
    def num_seeds(self) -> int:
        return 1 if self.seeds is None else len(self.seeds)

    @property
    def num_starts(self) -> int:
        return jax.tree.leaves(self.stack)[0].shape[0]


def _lane_values(
    parsed: _ParsedGrid, zip_grid: bool, lanes: _LaneAxes, tol_base: dict, base: dict, cost_base: dict
):
    """Host arrays of every lane of one rule: starts, hyperparameters, tolerances, keys, coordinates."""
    axis_idx, seed_i, start_i = _lane_indices(parsed, lanes)
    num = len(seed_i)
    leaves, treedef = jax.tree.flatten(lanes.stack)
    lane_leaves = []
    for j, leaf in enumerate(leaves):
        x = leaf[start_i]
        if lanes.noise is not None:
            eps = np.stack([per_seed[j] for per_seed in lanes.noise])[seed_i]
            x = (x + np.asarray(lanes.init_noise, leaf.dtype) * eps).astype(leaf.dtype)
        lane_leaves.append(x)
    lane_params = jax.tree.unflatten(treedef, lane_leaves)

    # Hyperparameters in the params' dtype: what a Python float becomes in the rule's state at init
    # (Optax's inject_hyperparams would keep a float64 array as float64).
    dtype = loop.float_dtype(lanes.stack)
    hp = {k: np.full(num, v, dtype) for k, v in base.items()}
    cost_hp = {k: np.full(num, v, dtype) for k, v in cost_base.items()}
    cost_hp.update({k: np.full(num, v, dtype) for k, v in parsed.fixed.items() if k in parsed.cost_keys})
    encoded = loop.make_tolerances(**tol_base)
    tol_fields = {f: np.full(num, getattr(encoded, f)) for f in loop.Tolerances._fields}
    coord_values = {k: [v] * num for k, v in {**parsed.static, **parsed.fixed}.items()}
    for axis, idx in zip(parsed.axes, axis_idx, strict=True):
        if axis.tolerance:
            codes = [
                getattr(loop.make_tolerances(**dict(tol_base, **{axis.name: v})), axis.name)
                for v in axis.values
            ]
            tol_fields[axis.name] = np.asarray(codes, tol_fields[axis.name].dtype)[idx]
        else:
            target = cost_hp if axis.cost else hp
            with np.errstate(over="ignore"):  # a value the dtype cannot hold: `check_in_dtype` names it
                target[axis.name] = np.asarray(axis.values, np.float64).astype(dtype)[idx]
        coord_values[axis.name] = [axis.values[i] for i in idx]
    key_data = None if lanes.seed_keys is None else lanes.seed_keys[seed_i]
    return lane_params, (hp, cost_hp), loop.Tolerances(**tol_fields), key_data, coord_values, seed_i, start_i


def _bytes_per_lane(cost, data, rule, params0, opts: loop.RunOptions, num_metrics: int) -> int:
    """The memory estimate of one lane (see the module docstring)."""
    params_size = _tree_size(params0)
    state_size = _state_size(rule, params0)
    # The full-data evaluation is the largest working set (a mini-batch step needs only its batch).
    residual = _largest_intermediate(cost, params0, data)
    num_evals, num_records = loop.schedule_sizes(opts)  # counted: planning allocates nothing per step
    elements = (
        num_records * params_size
        + (2 + num_metrics) * num_evals
        + (opts.num_steps if opts.batch_losses else 0)
        + 3 * params_size
        + state_size
        + residual
    )
    return elements * loop.measure_dtype(params0).itemsize  # at least float32: the histories


_STATE_SIZES: dict = {}  # (rule spec, params and values' shapes) -> elements of the rule's state


def _state_size(rule, params0) -> int:
    """Elements of `rule.init(params0)`: shapes only, traced once per gdjax rule spec and shapes
    (`eval_shape` of the init cost a sweep call about 5 ms); other rules are traced every call."""
    spec, values = getattr(rule, "spec", None), getattr(rule, "hyperparams", None)
    key = None
    if spec is not None and isinstance(values, Mapping):
        try:
            key = (spec, loop._StructKey(params0), loop._StructKey(dict(values)))
            hash(key)
        except TypeError:
            key = None
    size = None if key is None else _STATE_SIZES.get(key)
    if size is None:
        size = _tree_size(jax.eval_shape(rule.init, params0))
        if key is not None and len(_STATE_SIZES) < 256:
            _STATE_SIZES[key] = size
    return size


def _check_memory(groups, chunk_size, devices, memory_budget, record_every) -> list[int]:
    """Lanes per program call of each group (padded to the devices); raises if a call needs more
    than the budget."""
    num_devices = len(devices)
    budget = _default_memory_budget(devices) if memory_budget is None else float(memory_budget)
    call_lanes = [
        _round_up(min(chunk_size, g.num_lanes) if chunk_size else g.num_lanes, num_devices) for g in groups
    ]
    # A call of one lane per device is padded to two where the budget allows: XLA compiles a 1-lane
    # vmap's products as matrix-vector kernels, whose sums are ordered unlike the matrix-matrix ones
    # every wider call shares, so chunk_size=1 gave other last bits (and other evaluations).
    call_lanes = [
        2 * num_devices if n < 2 * num_devices <= g.num_lanes and 2 * num_devices * g.bytes_per_lane <= budget
        else n
        for n, g in zip(call_lanes, groups, strict=True)
    ]  # fmt: skip
    need = max(n * g.bytes_per_lane for n, g in zip(call_lanes, groups, strict=True))
    if need > budget:
        per_lane = max(g.bytes_per_lane for g in groups)
        fit = int(budget // per_lane) // num_devices * num_devices
        advice = (
            f"chunk_size={fit}"
            if fit >= 1
            else f"a larger record_every or eval_every (even {num_devices} lane(s) per call do not fit)"
        )
        what = f"chunks of {chunk_size} lanes need" if chunk_size else "the sweep needs"
        raise ValueError(
            f"{what} about {_fmt_bytes(need)} of histories and working memory in one program call "
            f"({per_lane} bytes per lane), more than memory_budget={_fmt_bytes(budget)}: pass {advice}"
        )
    return call_lanes


def _execute(groups, call_lanes, chunk_size, devices, execution, meta) -> SweepResult:
    """Runs every group chunk by chunk; completed lanes survive a later failure (SweepInterrupted)."""
    progress, step_progress, close_bars = gdjax_progress.callbacks(execution)
    try:
        return _execute_chunks(
            groups, call_lanes, chunk_size, devices, progress, (step_progress, execution.progress_every), meta
        )
    finally:
        close_bars()


def _shardings(devices) -> tuple:
    """(lanes split over the devices, replicated), or (None, None) on one device."""
    if len(devices) == 1:
        return None, None
    mesh = Mesh(np.asarray(devices), (_LANES,))
    return NamedSharding(mesh, PartitionSpec(_LANES)), NamedSharding(mesh, PartitionSpec())


def _statics(g: _Group, lane_sharding, step_progress: bool, progress_every) -> tuple:
    """The static arguments of a group's program."""
    opts = g.opts
    if step_progress:  # a static setting: a new hyperparameter value reuses it
        every = gdjax_progress.intervals_between_reports(progress_every, opts.eval_every, opts.num_steps)
        opts = opts._replace(progress_intervals=every)
    return (g.cost, g.metrics, opts, g.spec, lane_sharding, g.key_impl)


def _chunk_args(g: _Group, lo: int, hi: int, padded: int, data, lane_sharding, device) -> tuple:
    """The placed inputs of the program call that runs lanes `lo:hi` of a group. The last chunk
    repeats its first lane up to the common size, so it runs the same program (the repeats are
    dropped from its results)."""
    idx = np.concatenate([np.arange(lo, hi), np.full(padded - (hi - lo), lo)])
    lane_inputs = (
        jax.tree.map(lambda x: x[idx], g.params0),
        jax.tree.map(lambda x: x[idx], g.hp),
        None if g.key_data is None else g.key_data[idx],
        jax.tree.map(lambda x: x[idx], g.tols),
    )
    p0, hp, key_data, tols = _place(lane_inputs, lane_sharding, device)
    return (p0, hp, data, key_data, tols)


def _lower(groups, call_lanes, chunk_size, devices, execution) -> list[LoweredProgram]:
    """Each distinct program of the groups not compiled yet, lowered with the inputs of its first
    call (every chunk of a group runs the same program)."""
    lane_sharding, replicated = _shardings(devices)
    step_progress = execution.step_progress is not None or execution.progress is True
    out, seen = [], set()
    for g, padded in zip(groups, call_lanes, strict=True):
        statics = _statics(g, lane_sharding, step_progress, execution.progress_every)
        data = _place(g.data, replicated, devices[0])
        args = _chunk_args(
            g, 0, min(chunk_size or g.num_lanes, g.num_lanes), padded, data, lane_sharding, devices[0]
        )
        key = _program_key(statics, args)
        if key in seen or _kept(key) is not None:
            continue
        seen.add(key)
        t0 = time.perf_counter()
        lowered = _program.lower(*statics, *args)
        out.append(LoweredProgram(key, lowered, time.perf_counter() - t0))
    return out


def _execute_chunks(groups, call_lanes, chunk_size, devices, progress, steps, meta) -> SweepResult:
    lane_sharding, replicated = _shardings(devices)
    step_progress, progress_every = steps
    total = sum(g.num_lanes for g in groups)
    all_coords = [c for g in groups for c in g.coords]
    pieces: list[Trace] = []
    timing = {"compile_seconds": 0.0, "run_seconds": 0.0, "sharding": None}
    done = 0
    try:
        for g, padded in zip(groups, call_lanes, strict=True):
            data = _place(g.data, replicated, devices[0])
            statics = _statics(g, lane_sharding, step_progress is not None, progress_every)
            step = chunk_size or g.num_lanes
            for lo in range(0, g.num_lanes, step):
                hi = min(lo + step, g.num_lanes)
                args = _chunk_args(g, lo, hi, padded, data, lane_sharding, devices[0])
                compiled, seconds = _compiled(statics, args)
                timing["compile_seconds"] += seconds
                t0 = time.perf_counter()
                with gdjax_progress.listening(step_progress):
                    out = jax.block_until_ready(compiled(*args))
                timing["run_seconds"] += time.perf_counter() - t0
                timing["sharding"] = out.status.sharding  # the lanes' (first axis)
                piece = _lanes_first(
                    _to_host(out), _lane_axes(g.opts), hi - lo, loop.batch_losses_from_evals(g.opts, g.spec)
                )
                eval_steps, record_steps = loop.schedule(g.opts)
                pieces.append(
                    piece._replace(
                        eval_steps=np.broadcast_to(eval_steps.astype(np.int32), (hi - lo, eval_steps.size)),
                        record_steps=np.broadcast_to(
                            record_steps.astype(np.int32), (hi - lo, record_steps.size)
                        ),
                    )
                )
                done += hi - lo
                if progress is not None:
                    progress(done, total)
    except Exception as err:
        if done == 0:
            raise
        partial = _result(pieces, all_coords[:done], **meta, **timing)
        raise SweepInterrupted(
            f"sweep stopped after {done} of {total} lanes ({type(err).__name__}: {err}); the completed "
            "lanes are in .partial",
            partial,
        ) from err
    return _result(pieces, all_coords, **meta, **timing)


def _result(pieces, coords, **fields) -> SweepResult:
    # One chunk (the usual case) is the result as it came back: no copy of its histories.
    trace = pieces[0] if len(pieces) == 1 else jax.tree.map(_joined, *pieces)
    return SweepResult(trace=trace, coords=coords, **fields)


def _joined(*parts: np.ndarray) -> np.ndarray:
    """Chunks' (or groups') arrays as one, read-only like a single call's histories."""
    out = np.concatenate(parts)
    out.flags.writeable = False
    return out


__all__ = [
    "NOISE_FOLD",
    "TOLERANCE_NAMES",
    "GramStatistics",
    "GridError",
    "INIT_FOLD",
    "Init",
    "SummaryTable",
    "SweepInterrupted",
    "Starts",
    "SweepPlan",
    "SweepResult",
    "check_grid",
    "check_sweep",
    "LoweredProgram",
    "lower_sweep",
    "plan_sweep",
    "run_plan",
    "Zip",
    "gram_mse",
    "gram_statistics",
    "init_key",
    "sweep",
]
