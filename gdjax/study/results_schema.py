"""The results schema: the columns of `Results.lanes` and `Results.curves`, and how one unit's arrays
become their rows.

Each fixed column is declared once, in `LANE_COLUMNS` or `CURVE_COLUMNS`, with its role, dtype, how it
aggregates over seeds and whether the printed table shows it; `_unit_frames` computes it from a unit's
arrays (`_Unit`, what a `SweepResult` and a run folder both provide). A new column is one `Column` row
and one line of `_unit_frames`, both in this file. `results_model` re-exports the public names.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gdjax import io as gdjax_io
from gdjax import spelling

FORMAT = "gdjax-results"
FORMAT_VERSION = 1
_FILES = ("lanes.parquet", "curves.parquet", "problems.parquet", "results.json")


class ResultsError(ValueError):
    """Results that cannot be built, read or merged; the message names the file or argument."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the results schema.

    Attributes:
      name: the column's name in the DataFrame.
      role: "coordinate" (who the lane is), "outcome" (what happened), "metric" (a user's
        measurement) or "provenance" (where the row came from).
      dtype: its pandas dtype ("Int64" and "float64" hold missing values as <NA> / NaN).
      aggregate: how it summarises over seeds in `best_configurations`: "median", "majority",
        "first" or None (not aggregated).
      printed: whether the printed summary table shows it.
      doc: what it means.
    """

    name: str
    role: str
    dtype: str
    aggregate: str | None
    printed: bool
    doc: str


LANE_COLUMNS: tuple[Column, ...] = (
    Column("lane", "coordinate", "int64", None, False, "index of the lane in these results, 0.."),
    Column("problem", "coordinate", "str", "first", True, "the problem (data + cost + start)"),
    Column("optimizer", "coordinate", "str", "first", True, "the optimizer's label"),
    Column("rule", "coordinate", "str", "first", False, "the update rule's registry name"),
    # each hyperparameter by its own name follows here (coordinate, float64 or str)
    Column("seed", "coordinate", "Int64", None, True, "the lane's seed (<NA>: no seed was swept)"),
    Column("start", "coordinate", "Int64", None, False, "index of the starting point (<NA>: one start)"),
    Column("batch_size", "coordinate", "Int64", "first", True, "examples per step (<NA>: full batch)"),
    Column(
        "is_default", "coordinate", "bool", "first", False, "hyperparameters at the rule's one-shot defaults"
    ),
    Column("status", "outcome", "str", "majority", True, "converged, max_steps, diverged, nonfinite"),
    Column("steps", "outcome", "int64", "median", True, "updates applied"),
    Column("stop_step", "outcome", "Int64", None, False, "the step it stopped at (<NA>: used its budget)"),
    Column("initial_loss", "outcome", "float64", "median", False, "full-data loss before any update"),
    Column("final_loss", "outcome", "float64", "median", True, "full-data loss at the last evaluation"),
    Column("best_loss", "outcome", "float64", "median", False, "lowest finite full-data loss evaluated"),
    Column("final_grad_norm", "outcome", "float64", "median", False, "gradient norm at the last evaluation"),
    Column("f_star", "outcome", "float64", "first", False, "the problem's optimal value (NaN: unknown)"),
    Column(
        "f_star_source",
        "provenance",
        "str",
        "first",
        False,
        "how f_star was obtained; 'best found' where it is unknown and suboptimality is measured "
        "against the lowest loss any lane of the problem reached",
    ),
    Column("suboptimality", "outcome", "float64", "median", True, "final_loss - f_star (or - best found)"),
    # each metric's last value by its own name follows here (metric, float64)
    Column("num_examples", "provenance", "Int64", "first", False, "training examples of the problem"),
    Column("compile_seconds", "provenance", "float64", "first", False, "compile time of the lane's unit"),
    Column("run_seconds", "provenance", "float64", "first", False, "run time of the lane's unit"),
    Column("seconds_per_step", "provenance", "float64", "first", False, "run_seconds / num_steps"),
    Column("run", "provenance", "str", "first", False, "the run folder ('' for a Python sweep)"),
    Column("machine", "provenance", "str", "first", False, "platform and JAX backend"),
    Column("gdjax_version", "provenance", "str", "first", False, "gdjax's version"),
    Column("jax_version", "provenance", "str", "first", False, "JAX's version"),
    Column("commit", "provenance", "str", "first", False, "git commit of the working directory, or ''"),
)
CURVE_COLUMNS: tuple[Column, ...] = (
    Column("lane", "coordinate", "int64", None, False, "the lane (a row of `lanes`)"),
    Column("step", "coordinate", "int64", None, False, "the evaluated step (0: before any update)"),
    Column("epoch", "coordinate", "float64", None, False, "examples processed / num_examples"),
    Column("loss", "outcome", "float64", None, False, "full-data loss"),
    Column("grad_norm", "outcome", "float64", None, False, "full-data gradient norm"),
    # each metric by its own name follows here
)
_LANE = {c.name: c for c in LANE_COLUMNS}
# The one-shot defaults a user gets without tuning ("Descending through a Crowded Valley", Schmidt et al.
# 2021, Table 2: the defaults of the optimizers' papers and frameworks). A lane is `is_default` when
# each of its rule's listed hyperparameters is at this value (a hyperparameter not swept is at the
# rule's own default). `Results.with_defaults` sets others.
CONVENTIONAL_DEFAULTS: dict[str, dict[str, float]] = {
    "sgd": {"learning_rate": 1e-2},  # PyTorch's tutorials; Optax's examples
    "gd": {"learning_rate": 1e-2},
    "momentum": {"learning_rate": 1e-2, "momentum": 0.9},
    "nesterov": {"learning_rate": 1e-2, "momentum": 0.9},
    "adagrad": {"learning_rate": 1e-2},  # PyTorch, Duchi et al.
    "rmsprop": {"learning_rate": 1e-3},  # Keras, Tieleman & Hinton
    "adam": {"learning_rate": 1e-3},  # Kingma & Ba
    "optax.adam": {"learning_rate": 1e-3},
    "optax.adamw": {"learning_rate": 1e-3},
    "optax.lion": {"learning_rate": 1e-4},  # Chen et al. 2023: 3-10x smaller than AdamW's
}
_HEAD = ("lane", "problem", "optimizer", "rule")  # columns before the hyperparameters
_RESERVED = frozenset(_LANE) | {c.name for c in CURVE_COLUMNS}
_BLEW_UP = frozenset(gdjax_io.BLEW_UP)
# What identifies a problem when results are merged: the same name must mean the same problem.
_PROBLEM_COLUMNS = ("problem", "num_examples", "num_params", "f_star", "f_star_source", "data_fingerprint")


def _nearest(name: str, options: Iterable[str]) -> str:
    close = spelling.closest(name, options)
    return f" (did you mean {close!r}?)" if close else ""


# ------------------------------------------------------------------------------------ building
@dataclasses.dataclass
class _Unit:
    """One vmapped program's lanes, as arrays: what both a SweepResult and a run folder provide."""

    problem: str
    optimizer: list[str]  # per lane
    rule: list[str]  # per lane
    coords: dict[str, list]  # hyperparameters, seed, start, batch_size: per lane
    loss: np.ndarray  # (lanes, evals)
    grad_norm: np.ndarray  # (lanes, evals)
    eval_steps: np.ndarray  # (evals,)
    status: list[str]
    steps: np.ndarray
    stop_step: np.ndarray  # -1: used its budget
    metrics: dict[str, np.ndarray]  # name -> (lanes, evals)
    num_steps: int
    compile_seconds: float
    run_seconds: float
    f_star: np.ndarray | None = None  # per lane, where it differs by seed (a held-out split per seed)


def _is_default(
    lanes: pd.DataFrame, hyper: Sequence[str], defaults: dict[str, dict[str, float]]
) -> np.ndarray:
    out = np.zeros(len(lanes), bool)
    for rule, values in defaults.items():
        mine = (lanes["rule"] == rule).to_numpy().copy()
        for name, value in values.items():
            if name in hyper and pd.api.types.is_numeric_dtype(lanes[name]):
                mine &= np.isclose(lanes[name].to_numpy(np.float64), value, rtol=1e-9, atol=0.0)
        out |= mine
    return out


def _empty(columns: Sequence[Column]) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=c.dtype) for c in columns})


def _lane_order(hyper: list[str], metrics: list[str]) -> list[str]:
    names = [c.name for c in LANE_COLUMNS]
    at_hyper = names.index("rule") + 1
    at_metrics = names.index("suboptimality") + 1
    return [*names[:at_hyper], *hyper, *names[at_hyper:at_metrics], *metrics, *names[at_metrics:]]


def _ints(values, *, missing=None) -> pd.Series:
    """A nullable integer column; `missing` (e.g. -1) and None become <NA>."""
    return pd.array(
        [
            None if v is None or pd.isna(v) or (missing is not None and v == missing) else int(v)
            for v in values
        ],
        dtype="Int64",
    )


def _unit_frames(u: _Unit, info: pd.Series, hyper, metrics, offset: int):
    n_lanes, n_evals = u.loss.shape
    lane_ids = np.arange(offset, offset + n_lanes)
    loss = np.asarray(u.loss, np.float64)
    finite = np.where(np.isfinite(loss), loss, np.inf)
    best = finite.min(axis=1) if n_evals else np.full(n_lanes, np.nan)
    best = np.where(np.isinf(best), np.nan, best)
    f_star = float(info["f_star"]) if pd.notna(info["f_star"]) else math.nan
    f_star = np.full(n_lanes, f_star) if u.f_star is None else np.asarray(u.f_star, np.float64)
    num_examples = info["num_examples"]
    batch = u.coords.get("batch_size", [None] * n_lanes)
    data: dict[str, Any] = {
        "lane": lane_ids,
        "problem": pd.Series([u.problem] * n_lanes, dtype="str"),
        "optimizer": pd.Series(u.optimizer, dtype="str"),
        "rule": pd.Series(u.rule, dtype="str"),
    }
    for h in hyper:
        values = u.coords.get(h, [None] * n_lanes)
        if any(isinstance(v, str) for v in values):
            data[h] = pd.Series(["" if v is None else str(v) for v in values], dtype="str")
        else:
            data[h] = np.asarray([np.nan if v is None else float(v) for v in values], np.float64)
    data.update(
        seed=_ints(u.coords.get("seed", [None] * n_lanes)),
        start=_ints(u.coords.get("start", [None] * n_lanes)),
        batch_size=_ints(batch),
        status=pd.Series(u.status, dtype="str"),
        steps=np.asarray(u.steps, np.int64),
        stop_step=_ints(np.asarray(u.stop_step).tolist(), missing=-1),
        initial_loss=loss[:, 0] if n_evals else np.full(n_lanes, np.nan),
        final_loss=loss[:, -1] if n_evals else np.full(n_lanes, np.nan),
        best_loss=best,
        final_grad_norm=np.asarray(u.grad_norm, np.float64)[:, -1] if n_evals else np.full(n_lanes, np.nan),
        f_star=f_star,
        f_star_source=pd.Series([str(info["f_star_source"])] * n_lanes, dtype="str"),
        suboptimality=(loss[:, -1] - f_star) if n_evals else np.full(n_lanes, np.nan),
    )
    for m in metrics:
        values = u.metrics.get(m)
        data[m] = np.full(n_lanes, np.nan) if values is None else np.asarray(values, np.float64)[:, -1]
    seconds_per_step = u.run_seconds / u.num_steps if u.num_steps else math.nan
    data.update(
        num_examples=_ints([num_examples] * n_lanes),
        compile_seconds=np.full(n_lanes, float(u.compile_seconds)),
        run_seconds=np.full(n_lanes, float(u.run_seconds)),
        seconds_per_step=np.full(n_lanes, seconds_per_step),
    )
    lanes = pd.DataFrame(data)

    steps = np.asarray(u.eval_steps, np.int64)
    per_lane_batch = np.asarray([np.nan if b is None else float(b) for b in batch], np.float64)
    n = float(num_examples) if pd.notna(num_examples) else math.nan
    # examples processed / n: a full-batch step is one epoch
    scale = np.where(np.isnan(per_lane_batch), 1.0, per_lane_batch / n)
    curves = {
        "lane": np.repeat(lane_ids, n_evals),
        "step": np.tile(steps, n_lanes),
        "epoch": (scale[:, None] * steps[None, :]).ravel(),
        "loss": loss.ravel(),
        "grad_norm": np.asarray(u.grad_norm, np.float64).ravel(),
    }
    for m in metrics:
        values = u.metrics.get(m)
        curves[m] = (
            np.full(n_lanes * n_evals, np.nan) if values is None else np.asarray(values, np.float64).ravel()
        )
    return lanes, pd.DataFrame(curves)


def _fill_best_found(lanes: pd.DataFrame, problems: pd.DataFrame) -> None:
    """Where f* is unknown, suboptimality is measured against the lowest loss any lane of the problem
    reached (every optimizer's, as benchopt does), and `f_star_source` says so. Lanes that carry their
    own f* (a problem split per seed, each seed its own f*) keep it."""
    for _, p in problems.iterrows():
        if pd.notna(p["f_star"]):
            continue
        problem = lanes["problem"] == p["problem"]
        mine = problem & lanes["f_star"].isna()
        if problem.any() and not mine.any():
            continue
        found = lanes.loc[problem, "best_loss"].min()
        lanes.loc[mine, "suboptimality"] = lanes.loc[mine, "final_loss"] - found
        lanes.loc[mine, "f_star_source"] = "best found"
        problems.loc[problems["problem"] == p["problem"], "f_star_source"] = "best found"


def _problem_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "problem": pd.Series([r["problem"] for r in rows], dtype="str"),
            "num_examples": _ints([r.get("num_examples") for r in rows]),
            "num_params": _ints([r.get("num_params") for r in rows]),
            "f_star": np.asarray([np.nan if r.get("f_star") is None else float(r["f_star"]) for r in rows]),
            "f_star_source": pd.Series([r.get("f_star_source") or "" for r in rows], dtype="str"),
            "data_fingerprint": pd.Series([r.get("data_fingerprint") or "" for r in rows], dtype="str"),
        }
    )
    return frame
