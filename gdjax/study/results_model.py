"""The study face's model of what happened: one schema, and `Results` with `lanes` and `curves`.

Every table gdjax shows about a study is derived from two pandas DataFrames:

- `Results.lanes`: one row per lane (one optimisation run): who it was (problem, optimizer,
  hyperparameters, seed, start, batch size), what happened (status, steps, losses, metrics) and
  where it came from (run folder, machine, versions, timings);
- `Results.curves`: one row per lane and evaluation (step, epoch, loss, gradient norm, metrics).

Their fixed columns are declared once, in `LANE_COLUMNS` and `CURVE_COLUMNS`, each with its role
(`coordinate`: who the lane is; `outcome`: what happened; `metric`: a user's measurement;
`provenance`: where the row came from), dtype, how it aggregates over seeds and whether the printed
table shows it. Hyperparameter and metric columns are added by name for each study. A new column is
one `Column` row plus the line that computes it in `_unit_frames`, both in `results_schema`.

Three modules: `results_schema` (the columns and how a unit's arrays become rows), `results_table`
(the `Results` class and what can be asked of it) and this one (building and loading it); every
public name is importable from here.

Three ways in: `results(sweep_result)` wraps a Python `gdjax.sweep`, `load(path)` reads a run folder
written by `gdjax run` (or a directory written by `Results.save`), and `load([path1, path2])` merges
several (with their provenance columns; different problems under one name are refused).

pandas is imported here and only here in the study face's read path; `import gdjax` never loads it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gdjax import io as gdjax_io
from gdjax.study.results_schema import (  # noqa: F401  (re-exported: the schema lives there; privates used below)
    _RESERVED,
    CONVENTIONAL_DEFAULTS,
    CURVE_COLUMNS,
    FORMAT,
    FORMAT_VERSION,
    LANE_COLUMNS,
    Column,
    ResultsError,
    _empty,
    _fill_best_found,
    _is_default,
    _lane_order,
    _problem_frame,
    _Unit,
    _unit_frames,
)
from gdjax.study.results_table import Results  # noqa: F401  (re-exported: the model lives there)
from gdjax.study.summary import SUMMARY_KEYS, run_files_problem
from gdjax.types import Status

__all__ = [
    "CURVE_COLUMNS",
    "LANE_COLUMNS",
    "Column",
    "Results",
    "ResultsError",
    "load",
    "merge",
    "of_run",
    "results",
]


def _provenance(run: str = "", manifest: dict | None = None) -> dict[str, str]:
    import jax

    from gdjax._version import __version__

    m = manifest or {}
    backend = m.get("backend") or jax.default_backend()
    machine = f"{m.get('platform') or platform.platform()} ({backend})"
    return {
        "run": run,
        "machine": machine,
        "gdjax_version": str(m.get("gdjax") or __version__),
        "jax_version": str(m.get("jax") or jax.__version__),
        "commit": str(m.get("git_commit") or ""),
    }


def _build(
    units: Sequence[_Unit], problems: pd.DataFrame, provenance: dict[str, str], splits=None
) -> Results:
    hyper = list(
        dict.fromkeys(k for u in units for k in u.coords if k not in ("seed", "start", "batch_size"))
    )
    clash = [h for h in hyper if h in _RESERVED]
    if clash:
        raise ResultsError(f"hyperparameter names {clash} collide with result columns; rename them")
    metrics = list(dict.fromkeys(k for u in units for k in u.metrics))
    clash = [m for m in metrics if m in _RESERVED or m in hyper]
    if clash:
        raise ResultsError(
            f"metric names {clash} collide with result columns or hyperparameters; rename them"
        )
    info = problems.set_index("problem")
    lane_frames, curve_frames, offset = [], [], 0
    for u in units:
        lanes, curves = _unit_frames(u, info.loc[u.problem], hyper, metrics, offset)
        lane_frames.append(lanes)
        curve_frames.append(curves)
        offset += len(lanes)
    lanes = pd.concat(lane_frames, ignore_index=True) if lane_frames else _empty(LANE_COLUMNS)
    curves = pd.concat(curve_frames, ignore_index=True) if curve_frames else _empty(CURVE_COLUMNS)
    _fill_best_found(lanes, problems)
    lanes["is_default"] = _is_default(lanes, hyper, CONVENTIONAL_DEFAULTS)
    for k, v in provenance.items():
        lanes[k] = pd.Series([v] * len(lanes), dtype="str")
    lanes = lanes[_lane_order(hyper, metrics)]
    return Results(lanes, curves, problems, tuple(hyper), tuple(metrics), dict(splits or {}))


# ------------------------------------------------------------------------------- Python sweeps
def results(
    sweep_result,
    *,
    problem: str = "problem",
    num_examples: int | None = None,
    optimizers: dict[str, str] | None = None,
    tuning_seeds: Sequence[int] | None = None,
) -> Results:
    """The `Results` of a Python `gdjax.sweep`.

    Args:
      sweep_result: what `gdjax.sweep` returned.
      problem: the name of the problem the sweep ran on.
      num_examples: the number of training examples (for epochs); default the sweep's own
        (`sweep_result.num_examples`, the leading axis of its data).
      optimizers: labels for the rules (`{"sgd": "sgd_tuned"}`); by default the rule's name.
      tuning_seeds: choose configurations on these seeds, report on the others (`with_tuning_seeds`).

    Returns:
      Results whose `f_star` is the sweep's (`result.f_star`, e.g. the closed form of least
      squares; `with_f_star(v)` sets it), or the best found where unknown.
    """
    from gdjax.sweep import SweepResult

    if not isinstance(sweep_result, SweepResult):
        raise ResultsError(f"results() takes what gdjax.sweep returned, got {type(sweep_result).__name__}")
    trace = sweep_result.trace
    coords = sweep_result.coords
    names = list(sweep_result.hyperparameter_names)
    labels = optimizers or {}
    unknown = sorted(set(labels) - {c["rule"] for c in coords})
    if unknown:
        raise ResultsError(f"optimizers names rules the sweep did not run: {unknown}")
    # the sweep's cost offered its own f* (e.g. least squares' closed form) unless one was set by hand
    f_star = sweep_result.f_star
    if num_examples is None:
        num_examples = getattr(sweep_result, "num_examples", None)
    num_examples_value = None if num_examples is None else int(num_examples)
    eval_steps = np.asarray(sweep_result.eval_steps)
    keep, seedless = _seed_independent(trace, coords)
    coords = [dict(coords[i], seed=None) if i in seedless else coords[i] for i in keep]

    def lanes(x):
        return np.asarray(x)[keep]

    unit = _Unit(
        problem=problem,
        optimizer=[labels.get(c["rule"], c["rule"]) for c in coords],
        rule=[c["rule"] for c in coords],
        coords={
            **{h: [c.get(h) for c in coords] for h in names},
            **{k: [c.get(k) for c in coords] for k in ("seed", "start", "batch_size")},
        },
        loss=lanes(trace.loss_history),
        grad_norm=lanes(trace.grad_norm_history),
        eval_steps=eval_steps,
        status=[str(Status(int(s))) for s in lanes(trace.status)],
        steps=lanes(trace.steps),
        stop_step=lanes(trace.stop_step),
        metrics={k: lanes(v) for k, v in (trace.metrics or {}).items()},
        num_steps=int(sweep_result.num_steps or (eval_steps[-1] if eval_steps.size else 0)),
        compile_seconds=float(sweep_result.compile_seconds),
        run_seconds=float(sweep_result.run_seconds),
    )
    problems = _problem_frame(
        [
            {
                "problem": problem,
                "num_examples": num_examples_value,
                "num_params": int(sum(np.prod(np.shape(x)[1:]) for x in _leaves(trace.params))),
                "f_star": f_star,
                "f_star_source": ""
                if f_star is None
                else ("closed form" if sweep_result.f_star_source == "closed form" else "SweepResult.f_star"),
            }
        ]
    )
    return _build([unit], problems, _provenance()).with_tuning_seeds(tuning_seeds)


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)


def _seed_independent(trace, coords: list[dict]) -> tuple[list[int], set[int]]:
    """The lanes to keep, and those whose seed did not matter. A configuration whose lanes of every
    seed are bit-identical (full batch from one start: the seed draws nothing) is one run, kept once
    with no seed, as `gdjax run` writes it; counted once per seed, every paired test would see
    identical pairs and call a single comparison significant."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(coords):
        if c.get("seed") is not None:
            groups.setdefault(repr(sorted((k, repr(v)) for k, v in c.items() if k != "seed")), []).append(i)
    loss, status, steps = (np.asarray(x) for x in (trace.loss_history, trace.status, trace.steps))
    drop, seedless = set(), set()
    for lanes in groups.values():
        first, rest = lanes[0], lanes[1:]
        same = all(
            np.array_equal(loss[i], loss[first], equal_nan=True)
            and status[i] == status[first]
            and steps[i] == steps[first]
            for i in rest
        )
        if rest and same:
            seedless.add(first)
            drop.update(rest)
    return [i for i in range(len(coords)) if i not in drop], seedless


# -------------------------------------------------------------------------------- run folders
def load(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Results:
    """Reads results from disk: a run folder of `gdjax run`, or a folder written by `Results.save`.

    A list of paths is read one by one and merged (`merge`): the provenance columns (`run`,
    `machine`, versions, `commit`) tell the rows apart, lanes are renumbered, and two folders whose
    problems share a name but not their data, size or `f*` are refused.
    """
    if not isinstance(path, str | os.PathLike):
        paths = list(path)
        if not paths:
            raise ResultsError("load() needs at least one path")
        seen: dict[str, str] = {}
        for p in map(os.fspath, paths):
            real = os.path.realpath(p)
            if real in seen:  # its lanes would count twice: in the seeds, the bootstraps, the paired tests
                raise ResultsError(f"{p} is given twice (first as {seen[real]}): give each run once")
            seen[real] = p
        return merge([load(p) for p in paths])
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ResultsError(
            f"{path}: no such folder (give a run folder of `gdjax run` or one `Results.save` wrote)"
        )
    if os.path.isfile(os.path.join(path, "results.json")):
        return _load_saved(path)
    if os.path.isfile(os.path.join(path, "manifest.json")):
        return _load_run_folder(path)
    raise ResultsError(
        f"{path} is neither a run folder (no manifest.json) nor saved results (no results.json)"
    )


def _load_saved(path: str) -> Results:
    meta = _read_json(os.path.join(path, "results.json"))
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ResultsError(f"{os.path.join(path, 'results.json')} is not a gdjax results file")
    if meta.get("version") != FORMAT_VERSION:
        raise ResultsError(
            f"{path}: results format version {meta.get('version')!r}; "
            f"this gdjax reads version {FORMAT_VERSION}"
        )
    frames = {}
    for name in ("lanes", "curves", "problems"):
        file = os.path.join(path, f"{name}.parquet")
        try:
            frames[name] = pd.read_parquet(file)
        except Exception as err:  # pyarrow raises several types for a damaged file
            raise ResultsError(
                f"{file} is not a readable Parquet file: {type(err).__name__}: {err}"
            ) from None
    file = os.path.join(path, "results.json")
    hyperparameters = _column_names(meta, "hyperparameters", file, frames["lanes"])
    metrics = _column_names(meta, "metrics", file, frames["lanes"], frames["curves"])
    return Results(
        frames["lanes"],
        frames["curves"],
        frames["problems"],
        hyperparameters,
        metrics,
        _saved_splits(meta.get("splits"), file),
        _tuning_seeds(meta.get("tuning_seeds"), file),
    )


def _column_names(meta: dict, key: str, file: str, *frames: pd.DataFrame) -> tuple[str, ...]:
    """`meta[key]`: names of columns every frame has (a damaged file is one line naming it)."""
    names = meta.get(key, [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ResultsError(f"{file}: {key} must be a list of column names, got {names!r}")
    for frame in frames:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise ResultsError(
                f"{file} names {key} {missing} that the saved tables do not have: the folder is damaged "
                "or its files come from different saves"
            )
    return tuple(names)


def _saved_splits(value, file: str) -> dict[str, dict[str, np.ndarray]]:
    """The held-out split indices of `results.json`: {problem: {"train"|"test": [int, ...]}}."""
    if value is None:
        return {}
    ok = isinstance(value, dict) and all(
        isinstance(s, dict)
        and all(
            isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
            for v in s.values()
        )
        for s in value.values()
    )
    if not ok:
        raise ResultsError(
            f"{file}: splits must map each problem to lists of example indices "
            '({"problem": {"train": [0, 2, ...], "test": [...]}})'
        )
    return {p: {k: np.asarray(v, np.int64).reshape(-1) for k, v in s.items()} for p, s in value.items()}


def _tuning_seeds(value, file: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ResultsError(f"{file}: tuning_seeds must be a list of integer seeds, got {value!r}")
    return tuple(value)


def _read_json(file: str):
    try:
        return gdjax_io.read_json(file)
    except (gdjax_io.FileFormatError, RecursionError, OSError) as err:
        raise ResultsError(
            str(err) if isinstance(err, gdjax_io.FileFormatError) else f"{file}: {err}"
        ) from None


def _load_run_folder(path: str) -> Results:
    manifest = _read_json(os.path.join(path, "manifest.json"))
    if not isinstance(manifest, dict):
        raise ResultsError(run_files_problem(path, manifest, []))
    if manifest.get("status") != "complete":
        raise ResultsError(
            f"{path} is an incomplete run (status {manifest.get('status')!r}): finish it with "
            f"`gdjax run CONFIG --out {path} --resume` first"
        )
    missing = [f for f in ("summary.json", "histories.npz") if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ResultsError(f"{path} is missing {', '.join(missing)}: not a complete gdjax run folder")
    rows = _read_json(os.path.join(path, "summary.json"))
    if (problem := run_files_problem(path, manifest, rows)) is not None:
        raise ResultsError(problem)
    try:
        arrays = gdjax_io.read_npz(os.path.join(path, "histories.npz"))
    except gdjax_io.FileFormatError as err:
        raise ResultsError(str(err)) from None
    try:
        return _from_run(path, manifest, rows, arrays, _read_splits(path))
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as err:
        if isinstance(err, ResultsError):
            raise
        raise ResultsError(
            f"{path}: its manifest.json, summary.json and histories.npz do not fit together "
            f"({type(err).__name__}: {err}); damaged, or not written by gdjax"
        ) from None


def of_run(outcome) -> Results:
    """The `Results` of a run `gdjax.study.experiment.run_experiment` just finished, from what it holds
    in memory (its rows, histories, splits and manifest, as they were written): the same as
    `load(outcome.folder)` without reading the folder back."""
    if not outcome.ran or not outcome.histories:  # `--resume` of a complete folder: nothing in memory
        return load(outcome.folder)
    manifest, rows = (gdjax_io.loads(gdjax_io.dumps(x)) for x in (outcome.manifest, outcome.rows))
    return _from_run(outcome.folder, manifest, rows, outcome.histories, outcome.splits)


def _from_run(path: str, manifest: dict, rows, arrays: dict, split_arrays: dict) -> Results:
    """A run folder's `Results` from its manifest, summary rows, histories and held-out splits."""
    problems_info = manifest.get("problems") or {}
    study = str(manifest.get("name") or os.path.basename(os.path.normpath(path)))
    several = len(problems_info) > 1
    suite = bool(manifest.get("suite"))

    def name_of(cost_label: str) -> str:
        # a suite's problems by their labels; a study's costs as study/cost; one cost: the study
        if suite:
            return cost_label
        return f"{study}/{cost_label}" if several else study

    unit_keys = list((manifest.get("units") or {}).keys())
    all_metrics = {k.split("/metrics/", 1)[1] for k in arrays if "/metrics/" in k}
    units = []
    for key in unit_keys:
        prefix = key + "/"
        mine = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        if "loss_history" not in mine:
            raise ResultsError(
                f"{path}/histories.npz has no histories of unit {key!r} listed in manifest.json"
            )
        cost_label, label = (
            key.split(".", 1) if several and "." in key else (next(iter(problems_info), ""), key)
        )
        unit_rows = [
            r for r in rows if r.get("optimizer") == label and (not several or r.get("cost") == cost_label)
        ]
        loss = np.asarray(mine["loss_history"])
        if len(unit_rows) != loss.shape[0]:
            raise ResultsError(
                f"{path}: summary.json has {len(unit_rows)} rows for {key!r} but histories.npz "
                f"has {loss.shape[0]} lanes"
            )
        metric_names = [k[len("metrics/") :] for k in mine if k.startswith("metrics/")]
        # summary rows hold every unit's columns: another unit's metric is not a hyperparameter here
        hyper = [
            k for k in (unit_rows[0] if unit_rows else {}) if k not in SUMMARY_KEYS and k not in all_metrics
        ]
        eval_steps = mine.get("eval_steps")
        if eval_steps is None:  # written before evaluation schedules: every step
            eval_steps = np.arange(loss.shape[1])
        eval_steps = np.asarray(eval_steps)
        eval_steps = eval_steps[0] if eval_steps.ndim == 2 else eval_steps
        unit_info = (manifest.get("units") or {}).get(key, {})
        per_seed = (problems_info.get(cost_label) or {}).get("f_star_per_seed")  # [data] split_per_seed
        if isinstance(per_seed, dict):
            per_seed = np.asarray(
                [
                    np.nan if per_seed.get(str(r.get("seed"))) is None else per_seed[str(r["seed"])]
                    for r in unit_rows
                ],
                np.float64,
            )
        else:
            per_seed = None
        units.append(
            _Unit(
                problem=name_of(cost_label),
                optimizer=[label] * len(unit_rows),
                rule=[str(r.get("rule", label)) for r in unit_rows],
                coords={
                    **{h: [r.get(h) for r in unit_rows] for h in hyper},
                    **{k: [r.get(k) for r in unit_rows] for k in ("seed", "start", "batch_size")},
                },
                loss=loss,
                grad_norm=np.asarray(mine.get("grad_norm_history", np.full_like(loss, np.nan))),
                eval_steps=eval_steps,
                status=[str(r.get("status")) for r in unit_rows],
                steps=np.asarray(mine.get("steps", [r.get("steps", 0) for r in unit_rows])),
                stop_step=np.asarray(mine.get("stop_step", [-1] * len(unit_rows))),
                metrics={m: np.asarray(mine[f"metrics/{m}"]) for m in metric_names},
                num_steps=int(eval_steps[-1]) if eval_steps.size else 0,
                compile_seconds=float(unit_info.get("compile_seconds", 0.0)),
                run_seconds=float(unit_info.get("run_seconds", 0.0)),
                f_star=per_seed,
            )
        )
    # the files' contents, not where they were: the same data copied elsewhere is the same problem
    files = manifest.get("data_files") if isinstance(manifest.get("data_files"), dict) else {}
    fingerprint = ",".join(sorted(str(v.get("sha256")) for v in files.values() if isinstance(v, dict)))
    problems = _problem_frame(
        [
            {
                "problem": name_of(label),
                "num_examples": info.get("num_examples"),
                "num_params": info.get("num_params"),
                "f_star": info.get("f_star"),
                "f_star_source": info.get("f_star_source")
                or ("closed form" if info.get("f_star") is not None else ""),
                "data_fingerprint": fingerprint,
            }
            for label, info in problems_info.items()
        ]
    )
    splits = _splits(os.path.join(path, "split.npz"), split_arrays, name_of)
    built = _build(units, problems, _provenance(os.path.abspath(path), manifest), splits)
    return dataclasses.replace(
        built, tuning_seeds=_tuning_seeds(manifest.get("tuning_seeds"), os.path.join(path, "manifest.json"))
    )


def _read_splits(path: str) -> dict[str, np.ndarray]:
    """The held-out splits `gdjax run` wrote to `split.npz` (`<cost>/train`, `<cost>/test`); a folder
    without a split, or written before splits were saved, has none."""
    file = os.path.join(path, "split.npz")
    if not os.path.isfile(file):
        return {}
    try:
        return gdjax_io.read_npz(file)
    except gdjax_io.FileFormatError as err:
        raise ResultsError(str(err)) from None


def _splits(file: str, arrays: dict, name_of) -> dict[str, dict[str, np.ndarray]]:
    """`{problem: {"train": indices, "test": indices}}` from the arrays of `split.npz`, checked."""
    splits: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        label, _, part = key.rpartition("/")
        if part not in ("train", "test") or not label or np.ndim(value) != 1:
            raise ResultsError(f"{file}: member {key!r} is not a split (<cost>/train or <cost>/test, 1-D)")
        if not np.issubdtype(value.dtype, np.integer):
            raise ResultsError(f"{file}: member {key!r} must hold integer indices, got {value.dtype}")
        splits.setdefault(name_of(label), {})[part] = value.astype(np.int64)
    return splits


# ------------------------------------------------------------------------------------- merging
def merge(parts: Sequence[Results]) -> Results:
    """Several `Results` as one: lanes renumbered, curves re-keyed, problems checked for clashes.

    Raises:
      ResultsError: two parts name one problem but disagree on its size, `f*` or data.
    """
    parts = list(parts)
    if not parts:
        raise ResultsError("merge() needs at least one Results")
    if len(parts) == 1:
        return parts[0]
    protocols = {r.tuning_seeds for r in parts}
    if len(protocols) > 1:
        shown = ", ".join(f"{_where(r, i)}: {r.tuning_seeds}" for i, r in enumerate(parts))
        raise ResultsError(
            f"cannot merge results chosen on different tuning seeds ({shown}); set one protocol on each "
            "with with_tuning_seeds(...) first"
        )
    known: dict[str, tuple[pd.Series, str]] = {}
    for i, r in enumerate(parts):
        where = _where(r, i)
        for _, p in r.problems.iterrows():
            name = p["problem"]
            if name in known:
                other, other_where = known[name]
                diff = [
                    c
                    for c in ("num_examples", "num_params", "f_star", "data_fingerprint")
                    if not _same(p[c], other[c])
                ]
                if diff:
                    raise ResultsError(
                        f"cannot merge: problem {name!r} differs between {other_where} and {where} "
                        f"({', '.join(f'{c}: {other[c]!r} vs {p[c]!r}' for c in diff)}); give one of them "
                        f"another name"
                    )
            else:
                known[name] = (p, where)
    lanes, curves, offset = [], [], 0
    for r in parts:
        lanes.append(r.lanes.assign(lane=r.lanes["lane"] + offset))
        curves.append(r.curves.assign(lane=r.curves["lane"] + offset))
        offset += len(r.lanes)
    hyper = tuple(dict.fromkeys(h for r in parts for h in r.hyperparameters))
    metrics = tuple(dict.fromkeys(m for r in parts for m in r.metrics))
    lanes_frame = pd.concat(lanes, ignore_index=True)
    for h in hyper:  # a hyperparameter one part did not sweep does not apply to its lanes
        if lanes_frame[h].dtype == object:
            lanes_frame[h] = lanes_frame[h].astype("float64")
    problems = _problem_frame([p.to_dict() for p, _ in known.values()])
    _fill_best_found(lanes_frame, problems)  # f* unknown: the best found is now over every part's lanes
    lanes_frame = lanes_frame[_lane_order(list(hyper), list(metrics))]
    splits = {}
    for r in parts:
        splits.update(r.splits)
    curves_frame = pd.concat(curves, ignore_index=True)
    return Results(lanes_frame, curves_frame, problems, hyper, metrics, splits, protocols.pop())


def _where(r: Results, i: int) -> str:
    runs = [x for x in dict.fromkeys(r.lanes["run"].tolist()) if x] if "run" in r.lanes else []
    return runs[0] if runs else f"part {i}"


def _same(a, b) -> bool:
    if pd.isna(a) and pd.isna(b):
        return True
    if pd.isna(a) or pd.isna(b):
        return False
    if isinstance(a, float | np.floating) or isinstance(b, float | np.floating):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    return a == b
