"""What a unit (one sweep) produced, on the host and on disk: `UnitResult`, its part in `parts/`, and
the merged `summary.csv` / `summary.json` / `histories.npz` of a run folder.

A finished unit is saved as a part (`save_part`: its histories and a JSON meta with its summary rows
and lane coordinates) the moment it is done, so an interrupted run resumes from the units that
finished (`load_part` checks a part's meta before trusting it). `merge` joins the finished units into
the run's summary rows (every row with the same columns, `suboptimality_vs_best` measured against the
lowest loss any lane of the study reached) and the arrays of `histories.npz`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

from gdjax.io import csv_text, dumps, leaf_names, trace_arrays, trace_from_arrays
from gdjax.study import runfolder
from gdjax.study.preflight import Unit
from gdjax.study.problems import Problem
from gdjax.study.summary import normalize_rows
from gdjax.sweep import SweepResult
from gdjax.types import PyTree, Status, Trace

__all__ = [
    "UnitResult",
    "histories_of",
    "load_part",
    "merge",
    "save_part",
    "trace_from",
    "unit_result",
    "write_results",
]


@dataclass
class UnitResult:
    """What one unit produced: host arrays, lane coordinates and summary rows."""

    key: str
    trace: Trace  # NumPy, lanes first
    coords: list[dict]
    rows: list[dict]
    compile_seconds: float
    run_seconds: float
    complete: bool = True
    total_lanes: int | None = None
    hyperparameter_names: tuple[str, ...] = ()
    num_steps: int = 0

    def sweep_result(self, f_star: float | None) -> SweepResult:
        return SweepResult(
            trace=self.trace,
            coords=self.coords,
            hyperparameter_names=self.hyperparameter_names,
            compile_seconds=self.compile_seconds,
            run_seconds=self.run_seconds,
            f_star=f_star,
            num_steps=self.num_steps,
        )


def _py(value):
    if isinstance(value, np.generic):
        return value.item()
    return value


def unit_result(cfg, u: Unit, p: Problem, result: SweepResult, complete: bool, total: int) -> UnitResult:
    rows = []
    for row in result.summary(target=cfg.run.target):
        out = {"optimizer": u.optimizer.label}
        if len(cfg.costs) > 1:
            out["cost"] = p.label
        out.update({k: _py(v) for k, v in row.items()})
        rows.append(out)
    return UnitResult(
        key=u.key,
        trace=jax.tree.map(np.asarray, result.trace),
        coords=[{k: _py(v) for k, v in c.items()} for c in result.coords],
        rows=rows,
        compile_seconds=float(result.compile_seconds),
        run_seconds=float(result.run_seconds),
        complete=complete,
        total_lanes=total,
        hyperparameter_names=tuple(result.hyperparameter_names),
        num_steps=u.num_steps,
    )


def disagreement(cfg, u: Unit, p: Problem, r: UnitResult) -> str | None:
    """Why a part read back from `parts/` disagrees with itself, or None: its summary rows must be
    the summary of its own histories and lane coordinates (a part edited by hand, e.g. a final loss
    made text, a learning rate changed or a history overwritten with NaN, is redone, not merged)."""
    try:
        expected = unit_result(cfg, u, p, r.sweep_result(p.f_star), True, r.total_lanes).rows
        same = dumps(expected, indent=None) == dumps(r.rows, indent=None)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        return f"its lanes cannot be summarised ({type(err).__name__}: {err})"
    return None if same else "its summary rows are not the summary of its histories and lanes"


def _coord_arrays(coords: list[dict]) -> dict[str, np.ndarray]:
    """Numeric lane coordinates as arrays (`nan` where a lane has none, e.g. the full batch)."""
    out = {}
    keys = dict.fromkeys(k for c in coords for k in c)
    for k in keys:
        values = [c.get(k) for c in coords]
        if all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
            if all(v is None for v in values):
                continue
            out[f"coords/{k}"] = np.asarray([np.nan if v is None else v for v in values], np.float64)
    return out


def save_part(folder: runfolder.RunFolder, u: UnitResult, template: PyTree, suffix: str = "") -> None:
    meta = {
        "key": u.key,
        "complete": u.complete,
        "lanes": len(u.coords),
        "total_lanes": u.total_lanes,
        "compile_seconds": u.compile_seconds,
        "run_seconds": u.run_seconds,
        "hyperparameter_names": list(u.hyperparameter_names),
        "num_steps": u.num_steps,
        "coords": u.coords,
        "rows": u.rows,
        "metrics": sorted(u.trace.metrics or {}),
    }
    folder.save_part(u.key + suffix, histories_of(u.trace, template), meta)


def histories_of(trace: Trace, template: PyTree) -> dict[str, np.ndarray]:
    """`gdjax.io.trace_arrays` as the run folder stores it: the histories, evaluation steps and metric
    histories (`metrics/<name>`, their names in the part's meta); the per-step batch losses and the
    record steps (and what a run folder's summary says: the point evaluated, the values checked) are
    left out, so `parts/` and `histories.npz` hold what they always have."""
    arrays = trace_arrays(trace, leaf_names(template))
    for k in ("batch_loss_history", "record_steps", "metric_names", "evaluated_at", "invalid_names"):
        arrays.pop(k, None)
    return {k: v for k, v in arrays.items() if not k.startswith("invalid/")}


def trace_from(arrays: dict, template: PyTree, metric_names=None) -> Trace:
    """The inverse of `histories_of`."""
    trace = trace_from_arrays(arrays, template)
    names = metric_names if metric_names is not None else [k[8:] for k in arrays if k.startswith("metrics/")]
    metrics = {n: arrays[f"metrics/{n}"] for n in names} or None
    return trace._replace(eval_steps=arrays.get("eval_steps"), metrics=metrics)


def _check_part_meta(meta: dict) -> None:
    """Raises ValueError unless a part's metadata has the types `save_part` writes (a hostile or
    damaged part, e.g. a count of 10**30, is then redone rather than merged)."""

    def count(k):
        v = meta.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
            raise ValueError(f"{k} is {v!r}, not a count")

    for k in ("lanes", "total_lanes", "num_steps"):
        count(k)
    for k in ("compile_seconds", "run_seconds"):
        v = meta.get(k)
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v < 1e12:
            raise ValueError(f"{k} is {v!r}, not a time")
    if not (isinstance(meta.get("rows"), list) and all(isinstance(r, dict) for r in meta["rows"])):
        raise ValueError("rows is not a list of rows")
    if not isinstance(meta.get("coords"), list) or len(meta["coords"]) != meta["lanes"]:
        raise ValueError("coords does not list every lane")
    for k in ("hyperparameter_names", "metrics"):
        if not (isinstance(meta.get(k, []), list) and all(isinstance(n, str) for n in meta.get(k, []))):
            raise ValueError(f"{k} is not a list of names")


def load_part(folder: runfolder.RunFolder, key: str, template: PyTree, log) -> UnitResult | None:
    """A finished unit from `parts/`; None (with a note) when its part is missing or damaged."""
    names = leaf_names(template)
    required = ["loss_history", "grad_norm_history", "status", "steps", "stop_step"]
    required += [f"params/{n}" for n in names] + [f"params_history/{n}" for n in names]
    meta, arrays, damaged = folder.load_part(key, required)
    if damaged:
        log(f"note: the saved part of {key} is damaged, so it is redone ({damaged})")
        return None
    if meta is None:
        return None
    try:
        _check_part_meta(meta)
        return UnitResult(
            key=key,
            trace=trace_from(arrays, template, meta.get("metrics", [])),
            coords=meta["coords"],
            rows=meta["rows"],
            compile_seconds=meta["compile_seconds"],
            run_seconds=meta["run_seconds"],
            complete=True,
            total_lanes=meta["total_lanes"],
            hyperparameter_names=tuple(meta["hyperparameter_names"]),
            num_steps=meta["num_steps"],
        )
    except (KeyError, TypeError, ValueError) as err:
        log(f"note: the saved part of {key} is damaged, so it is redone ({type(err).__name__}: {err})")
        return None


def merge(
    cfg, unit_list, results: dict[str, UnitResult], problems, arrays: bool = True
) -> tuple[list[dict], dict | None]:
    """The summary rows of the units done, and the arrays of `histories.npz` (None without `arrays`)."""
    rows, out = [], {}
    for u in unit_list:
        r = results.get(u.key)
        if r is None:
            continue
        rows.extend(r.rows)
        if not arrays:
            continue
        for k, v in histories_of(r.trace, problems[u.problem].params0).items():
            out[f"{u.key}/{k}"] = v
        for k, v in _coord_arrays(r.coords).items():
            out[f"{u.key}/{k}"] = v
    if out:
        out["status_names"] = np.asarray([str(s) for s in Status])
    _suboptimality_vs_best(rows, unit_list, results, problems)
    rows = normalize_rows(rows, [results[u.key] for u in unit_list if u.key in results])
    return rows, out if arrays else None


def _suboptimality_vs_best(rows: list[dict], unit_list, results, problems) -> None:
    """Where f* is unknown, `suboptimality_vs_best` = final loss minus the lowest loss any lane of the
    study evaluated on that cost (every optimizer's, as benchopt does), instead of the sweep's own."""
    for pi, p in enumerate(problems):
        if p.f_star is not None:
            continue
        keys = [u.key for u in unit_list if u.problem == pi and u.key in results]
        found = [np.asarray(results[k].trace.loss_history) for k in keys]
        found = [a[np.isfinite(a)] for a in found]
        found = [float(a.min()) for a in found if a.size]
        best = min(found) if found else None
        labels = {results[k].rows[0]["optimizer"] for k in keys if results[k].rows}
        for r in rows:
            if r["optimizer"] in labels and r.get("cost", p.label) == p.label:
                fl = r["final_loss"]
                ok = best is not None and fl is not None and math.isfinite(fl)
                r["suboptimality_vs_best"] = fl - best if ok else None


def write_results(folder: runfolder.RunFolder, rows: list[dict], arrays: dict | None) -> None:
    """The summaries, and `histories.npz` unless `arrays` is None: an incomplete folder holds the
    summaries of the optimizers done so far and no `histories.npz` (their histories are in `parts/`);
    rewriting every history after every optimizer wrote a study's histories once per optimizer
    (quadratic in their number: 37 rewrites of a growing 24 MB file for configs/suite.toml)."""
    folder.write_text("summary.csv", csv_text(rows))
    folder.write_json("summary.json", rows)
    if arrays is None:
        folder.remove("histories.npz")  # one left by a stopped run would not match the summaries
    else:
        folder.write_npz("histories.npz", arrays)
