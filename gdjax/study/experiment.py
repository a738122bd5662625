"""Experiments: a validated config turned into data, costs, gradient checks, sweeps and a run folder.

`run_experiment(config, out_dir)` is what `gdjax run` does: it builds each cost's problem (data,
starting point, closed-form answers), checks the gradients, runs one `gdjax.sweep` per optimizer
(a "unit"; one per cost and optimizer when the config has several costs), and writes the run folder
atomically as it goes:

    <run folder>/
      .gdjax-run         the marker, written first: the folder it was written for and the list of
                         what gdjax made here (see gdjax.study.runfolder)
      .gdjax-lock        while a run writes the folder: the lock it holds
      .gdjax-staging/    while plots are drawn: they are moved into place once listed
      config.toml        the resolved config (defaults filled in, grids expanded, paths absolute)
      manifest.json      versions, devices, precision, timings, git commit, command, status,
                         the sha256 and size of every data file and cost module (data_files)
      gradcheck.txt      the gradient-check report of every cost
      summary.csv/.json  one row per lane of every optimizer
      histories.npz      loss / grad-norm / params histories, statuses, steps, per optimizer
      *.png              the plots named in outputs.plots
      parts/             per-optimizer results while the run is incomplete (what --resume builds
                         on); removed once the run is complete
      PARTIAL            only in an incomplete folder: what is done, what is left, how to finish

A run is a pure function of the config (every random draw comes from its seeds), so an interrupted
folder is finished by rerunning the optimizers that are not done and merging: the result is the one
an uninterrupted run writes. Library code here never flips JAX flags: `precision = "float64"` needs
`jax_enable_x64` on (the `gdjax` command sets it), and the gradient check needs float64 too (the
command runs it under `jax.enable_x64(True)` for float32 studies).
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from gdjax._version import __version__
from gdjax.io import (
    FileFormatError,
    csv_text,
    inspect_npz,
    leaf_names,
    open_regular,
    read_json,
    trace_arrays,
    trace_from_arrays,
)
from gdjax.study import config as config_lib
from gdjax.study import runfolder
from gdjax.study.config import ExperimentConfig
from gdjax.study.preflight import (
    GradCheckFailed,
    Unit,
    build_problems,
    check_gradients,
    check_memory,
    check_sweeps,
    check_units,
    gradcheck_text,
    is_line,
    load_data,
    num_lanes,
    sweep_args,
    unit_start,
    units,
)
from gdjax.study.problems import Dataset, Problem, split
from gdjax.study.summary import (
    METRIC_NAMES,
    SUMMARY_KEYS,
    best_configurations,
    config_key,
    format_summary,
    normalize_rows,
    status_counts,
)
from gdjax.sweep import SweepInterrupted, SweepResult, sweep
from gdjax.types import GradCheckReport, PyTree, Status, Trace

# Re-exported from the modules they moved to (gdjax.study.problems / preflight / summary).
__all__ = [
    "METRIC_NAMES",
    "SUMMARY_KEYS",
    "Dataset",
    "GradCheckFailed",
    "Problem",
    "RunInterrupted",
    "RunOutcome",
    "Unit",
    "UnitResult",
    "best_configurations",
    "build_problems",
    "config_key",
    "check_gradients",
    "format_summary",
    "gradcheck_text",
    "is_line",
    "load_data",
    "read_run",
    "run_experiment",
    "split",
    "status_counts",
    "units",
]

FILES = ("config.toml", "manifest.json", "gradcheck.txt", "summary.csv", "summary.json", "histories.npz")
PARTIAL_MARKER = runfolder.PARTIAL_MARKER
PARTS = runfolder.PARTS


class RunInterrupted(RuntimeError):
    """A run stopped part-way; `folder` holds the finished optimizers and a PARTIAL marker."""

    def __init__(self, message: str, folder: str):
        super().__init__(message)
        self.folder = folder


# ------------------------------------------------------------------------------------------- data


# --------------------------------------------------------------------------------------- problems


# ------------------------------------------------------------------------------------------ units


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


def _unit_result(cfg, u: Unit, p: Problem, result: SweepResult, complete: bool, total: int) -> UnitResult:
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


def run_unit(cfg: ExperimentConfig, u: Unit, p: Problem, *, progress=None) -> UnitResult:
    """Runs one unit's sweep. Raises `SweepInterrupted` (with `.partial`) if a later chunk fails."""
    total = num_lanes(cfg, u, p)
    result = sweep(p.cost, u.optimizer.rule, unit_start(p), p.data, **sweep_args(cfg, u, p, progress))
    result = result.with_f_star(p.f_star)
    return _unit_result(cfg, u, p, result, True, total)


# ------------------------------------------------------------------------------ summaries and best


# ------------------------------------------------------------------------------------- histories
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


# ------------------------------------------------------------------------------------ run folder
def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def _versions() -> dict:
    import optax

    try:
        devices = [str(d) for d in jax.devices()]
        backend = jax.default_backend()
    except RuntimeError:  # no backend could start
        devices, backend = [], None
    return {
        "gdjax": __version__,
        "jax": jax.__version__,
        "jaxlib": _dist_version("jaxlib"),
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": backend,
        "devices": devices,
    }


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _problem_info(p: Problem) -> dict:
    info: dict[str, Any] = {"num_params": p.num_params, "f_star": p.f_star, **p.curvature}
    if p.f_star_source:
        info["f_star_source"] = p.f_star_source
    if p.dataset is not None:
        info["num_examples"] = int(p.dataset.X.shape[0])
        info["num_features"] = int(p.dataset.X.shape[1])
    if p.minimizer is not None:
        info["minimizer"] = jax.tree.map(lambda x: np.asarray(x, np.float64).tolist(), p.minimizer)
        if p.dataset is not None and p.dataset.standardizer is not None and p.config.model == "linear":
            raw = p.dataset.standardizer.unstandardize(p.minimizer)
            info["minimizer_original_scale"] = jax.tree.map(lambda x: np.asarray(x).tolist(), raw)
    return info


def default_out_dir(cfg: ExperimentConfig) -> str:
    """`<outputs.dir>/<name>-<YYYYmmdd-HHMMSS>` (a suffix `-2`, `-3`, ... if taken)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(cfg.outputs.dir, f"{cfg.name}-{stamp}")
    path, k = base, 2
    while os.path.exists(path):
        path, k = f"{base}-{k}", k + 1
    return path


def _save_part(folder: runfolder.RunFolder, u: UnitResult, template: PyTree, suffix: str = "") -> None:
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
    folder.save_part(u.key + suffix, _trace_arrays(u.trace, template), meta)


def _trace_arrays(trace: Trace, template: PyTree) -> dict[str, np.ndarray]:
    """`gdjax.io.trace_arrays` as the run folder stores it: the histories, evaluation steps and metric
    histories (`metrics/<name>`, their names in the part's meta); the per-step batch losses and the
    record steps are left out, so `parts/` and `histories.npz` hold what they always have."""
    arrays = trace_arrays(trace, leaf_names(template))
    for k in ("batch_loss_history", "record_steps", "metric_names"):
        arrays.pop(k, None)
    return arrays


def _trace_from(arrays: dict, template: PyTree, metric_names=None) -> Trace:
    """The inverse of `_trace_arrays`."""
    trace = trace_from_arrays(arrays, template)
    names = metric_names if metric_names is not None else [k[8:] for k in arrays if k.startswith("metrics/")]
    metrics = {n: arrays[f"metrics/{n}"] for n in names} or None
    return trace._replace(eval_steps=arrays.get("eval_steps"), metrics=metrics)


def _check_part_meta(meta: dict) -> None:
    """Raises ValueError unless a part's metadata has the types `_save_part` writes (a hostile or
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


def _load_part(folder: runfolder.RunFolder, key: str, template: PyTree, log) -> UnitResult | None:
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
            trace=_trace_from(arrays, template, meta.get("metrics", [])),
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


@dataclass
class RunOutcome:
    """What `run_experiment` did: the folder, the rows of every lane, and what it wrote."""

    folder: str
    rows: list[dict]
    results: dict[str, UnitResult]
    problems: list[Problem]
    reports: dict[str, GradCheckReport]
    manifest: dict
    plots: list[str] = field(default_factory=list)
    resumed: bool = False

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric the runs recorded (built-in and the config's own), in order."""
        return tuple(dict.fromkeys(m for p in self.problems for m in (p.metrics or {})))


def _merge(cfg, unit_list, results: dict[str, UnitResult], problems) -> tuple[list[dict], dict]:
    rows, arrays = [], {}
    for u in unit_list:
        r = results.get(u.key)
        if r is None:
            continue
        rows.extend(r.rows)
        for k, v in _trace_arrays(r.trace, problems[u.problem].params0).items():
            arrays[f"{u.key}/{k}"] = v
        for k, v in _coord_arrays(r.coords).items():
            arrays[f"{u.key}/{k}"] = v
    if arrays:
        arrays["status_names"] = np.asarray([str(s) for s in Status])
    _suboptimality_vs_best(rows, unit_list, results, problems)
    return normalize_rows(rows, [results[u.key] for u in unit_list if u.key in results]), arrays


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


def _write_results(folder: runfolder.RunFolder, rows: list[dict], arrays: dict) -> None:
    folder.write_text("summary.csv", csv_text(rows))
    folder.write_json("summary.json", rows)
    folder.write_npz("histories.npz", arrays)


def _partial_text(cfg, unit_list, results, interrupted: dict | None, reason: str, folder: str) -> str:
    done = [u.key for u in unit_list if u.key in results]
    pending = [u.key for u in unit_list if u.key not in results and (interrupted or {}).get("key") != u.key]
    src = cfg.source if cfg.source and os.path.isfile(cfg.source) else "CONFIG"
    if cfg.source == "<default study>":
        src = ""
    lines = [
        "This run folder is incomplete: " + reason,
        f"Finish it with:  gdjax run {src + ' ' if src else ''}--out {folder} --resume",
        "",
        "done:     " + (", ".join(f"{k} ({len(results[k].coords)} lanes)" for k in done) or "none"),
    ]
    if interrupted:
        lines.append(
            f"partial:  {interrupted['key']}: {interrupted['lanes']} of {interrupted['total_lanes']} lanes "
            f"(chunks done, in {PARTS}/{interrupted['key']}.partial.npz; rerun in full on --resume)"
        )
    lines.append("pending:  " + (", ".join(pending) or "none"))
    return "\n".join(lines) + "\n"


def run_experiment(
    cfg: ExperimentConfig,
    out: str | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    draw: Callable[..., list[str]] | None = None,
    progress: Callable[[str, int, int], Any] | None = None,
    log: Callable[[str], Any] | None = None,
    command: list[str] | None = None,
    gradcheck_x64: Callable | None = None,
) -> RunOutcome:
    """Runs a whole experiment and writes its run folder.

    Args:
      cfg: the validated config.
      out: the run folder (default `default_out_dir(cfg)`).
      resume: finish an interrupted folder: optimizers already done are loaded, the rest rerun.
      force: replace an existing run folder.
      draw: `draw(cfg, problems, units, results, folder) -> paths` draws the plots once every
        optimizer is done (the command passes `gdjax.study.report.draw_plots`, which sits above this module).
      progress: `progress(unit_key, lanes_done, total_lanes)` after each chunk of a sweep.
      log: where one-line messages go (default: nowhere).
      command: the command line, recorded in the manifest.
      gradcheck_x64: a context manager factory the gradient check runs under (the CLI passes one
        that enables float64 for float32 runs; library code does not flip flags itself).

    Returns:
      A `RunOutcome`.

    Raises:
      ConfigError / ValueError: invalid config or folder, before anything is written; an existing
        `out` (without `resume` or `force`), a folder gdjax does not own, a link in it, another
        config or changed data files are refused before anything is computed.
      GradCheckFailed: a cost's gradient check failed, before anything is written.
      RunInterrupted: a sweep failed part-way (the folder is marked partial); a KeyboardInterrupt
        (or any other exception) during a sweep propagates as itself after the folder is marked
        partial, with the folder's path in its `gdjax_run_folder` attribute.
    """
    log = log or (lambda message: None)
    started = _now()
    out = out or default_out_dir(cfg)
    # The folder and the data are judged before anything is computed (issue 17 item 7, issue 19):
    # an existing --out, a foreign or copied marker, a link, another config or changed data.
    fingerprints = runfolder.data_fingerprints(cfg)
    kind = runfolder.check(cfg, out, resume=resume, force=force, fingerprints=fingerprints, log=log)
    problems = build_problems(cfg)
    unit_list = units(cfg)
    check_units(cfg, problems, unit_list)
    check_memory(cfg, problems, unit_list)
    check_sweeps(cfg, problems, unit_list)
    manifest_file = os.path.join(out, "manifest.json")
    if kind == "resume" and os.path.lexists(manifest_file):
        old = read_json(manifest_file, what="run manifest", follow=False)
        if not isinstance(old, dict):
            raise FileFormatError(f"{manifest_file} is not a run manifest (not a JSON object)")
        if old.get("status") == "complete" and not os.path.lexists(os.path.join(out, PARTIAL_MARKER)):
            done, _ = runfolder.prepare(cfg, out, resume=True, force=False, fingerprints=fingerprints)
            done.unlock()
            log(f"nothing to resume: {out} is complete")
            return read_run(out, cfg=cfg, problems=problems)

    reports: dict[str, GradCheckReport] = {}
    if cfg.gradcheck.enabled:
        if gradcheck_x64 is not None:
            with gradcheck_x64():
                reports = check_gradients(cfg, problems)
        else:
            reports = check_gradients(cfg, problems)
        if not all(r.ok for r in reports.values()):
            raise GradCheckFailed(reports)
        for label, report in reports.items():  # a warning (a kink at a start) does not stop the run
            log(f"gradient check of {label}: {report.verdict}")

    folder, resumed = runfolder.prepare(
        cfg, out, resume=resume, force=force, fingerprints=fingerprints, log=log
    )
    try:
        manifest = {
            "name": cfg.name,
            "status": "partial",
            "config": cfg.source,
            "command": command if command is not None else list(sys.argv),
            "cwd": os.getcwd(),
            "git_commit": _git_commit(),
            "precision": cfg.precision,
            "x64_enabled": bool(jax.config.jax_enable_x64),
            **_versions(),
            "started": started,
            "finished": None,
            "compile_seconds": 0.0,
            "run_seconds": 0.0,
            "problems": {p.label: _problem_info(p) for p in problems},
            "suite": cfg.is_suite,  # problems named by their labels alone (gdjax.study.load)
            "gradcheck": {k: r.verdict for k, r in reports.items()} or "disabled",
            "data_files": fingerprints,
            "units": {
                u.key: {"status": "pending", "lanes": num_lanes(cfg, u, problems[u.problem])}
                for u in unit_list
            },
        }
        results: dict[str, UnitResult] = {}
        if resumed:
            old = read_json(folder.checked("manifest.json"), what="run manifest", follow=False)
            old = old if isinstance(old, dict) else {}
            manifest["started"] = old.get("started", started)
            manifest["resumed"] = [*old.get("resumed", []), started]
            for u in unit_list:
                r = _load_part(folder, u.key, problems[u.problem].params0, log)
                if r is not None:
                    results[u.key] = r
            log(f"resuming {out}: {len(results)} of {len(unit_list)} optimizers already done")
        else:
            folder.write_text("config.toml", cfg.to_toml())
        if reports:
            folder.write_text("gradcheck.txt", gradcheck_text(reports))
        elif not os.path.lexists(folder.file("gradcheck.txt")):
            folder.write_text("gradcheck.txt", "gradient check disabled (gradcheck.enabled = false)\n")

        def mark(reason: str, interrupted: dict | None = None):
            for k in results:
                manifest["units"][k]["status"] = "complete"
            if interrupted:
                manifest["units"][interrupted["key"]]["status"] = (
                    f"partial ({interrupted['lanes']} lanes done)"
                )
            manifest["compile_seconds"] = sum(r.compile_seconds for r in results.values())
            manifest["run_seconds"] = sum(r.run_seconds for r in results.values())
            manifest["status"] = "partial"
            manifest["interrupted"] = reason
            rows, arrays = _merge(cfg, unit_list, results, problems)
            _write_results(folder, rows, arrays)
            folder.write_json("manifest.json", manifest)
            folder.write_text(
                PARTIAL_MARKER, _partial_text(cfg, unit_list, results, interrupted, reason, folder.path)
            )

        mark("the run is in progress (or was killed)")
        for u in unit_list:
            if u.key in results:
                continue
            p = problems[u.problem]
            total = num_lanes(cfg, u, p)
            log(f"running {u.key}: {total} lane(s) x {u.num_steps} steps")
            tick = None
            if progress is not None:
                tick = lambda done, n, key=u.key: progress(key, done, n)  # noqa: E731
                progress(u.key, 0, total)
            try:
                r = run_unit(cfg, u, p, progress=tick)
            except ValueError as err:
                # The sweep refused its input before running a lane (a size only it can judge).
                if not resumed and not results:
                    folder.discard()  # a folder this call made and nothing was written to: no PARTIAL
                    raise ValueError(f"{u.key}: {err}; nothing was written") from err
                mark(f"{u.key} was refused: {err}")
                err.gdjax_run_folder = folder.path
                raise
            except SweepInterrupted as err:
                partial = _unit_result(cfg, u, p, err.partial.with_f_star(p.f_star), False, total)
                _save_part(folder, partial, p.params0, suffix=".partial")
                info = {"key": u.key, "lanes": len(partial.coords), "total_lanes": total}
                reason = f"{u.key} stopped after {info['lanes']} of {total} lanes ({err.__cause__!r})"
                mark(reason, info)
                raise RunInterrupted(reason, folder.path) from err
            except BaseException as err:
                mark(f"{u.key} was interrupted ({type(err).__name__})")
                err.gdjax_run_folder = folder.path  # where the partial results are, for the caller
                raise
            _save_part(folder, r, p.params0)
            results[u.key] = r
            mark(f"stopped after {', '.join(results)}")
            log(
                f"  done in {r.compile_seconds + r.run_seconds:.2f} s (compile {r.compile_seconds:.2f} s, "
                f"run {r.run_seconds:.2f} s)"
            )

        rows, arrays = _merge(cfg, unit_list, results, problems)
        _write_results(folder, rows, arrays)
        drawn = []
        if draw is not None:  # drawn aside, then each name listed as gdjax's before it is moved in
            for path in draw(cfg, problems, unit_list, results, folder.staging()):
                moved = folder.adopt(path)
                if moved is None:
                    log(
                        f"note: {folder.file(os.path.basename(path))} is not gdjax's, so it was kept "
                        "and that plot not written; rename it to get the plot"
                    )
                else:
                    drawn.append(moved)
            folder.remove(runfolder.STAGING)
        for k in results:
            manifest["units"][k]["status"] = "complete"
            manifest["units"][k]["compile_seconds"] = results[k].compile_seconds
            manifest["units"][k]["run_seconds"] = results[k].run_seconds
        manifest.pop("interrupted", None)
        manifest.update(
            status="complete",
            finished=_now(),
            compile_seconds=sum(r.compile_seconds for r in results.values()),
            run_seconds=sum(r.run_seconds for r in results.values()),
            plots=[os.path.basename(p) for p in drawn],
        )
        folder.clean_temps()
        folder.write_json("manifest.json", manifest)
        folder.remove(PARTIAL_MARKER)
        folder.remove(PARTS)
    except KeyboardInterrupt as err:
        if os.path.exists(folder.file(PARTIAL_MARKER)):  # stopped while writing results or plots
            err.gdjax_run_folder = folder.path
        raise
    finally:
        folder.unlock()
    return RunOutcome(folder.path, rows, results, problems, reports, manifest, drawn, resumed)


def read_run(path: str, *, cfg: ExperimentConfig | None = None, problems=None) -> RunOutcome:
    """Reads a complete run folder back (rows, histories and manifest)."""
    cfg = cfg or config_lib.load(os.path.join(path, "config.toml"))
    problems = problems or build_problems(cfg)
    manifest = read_json(os.path.join(path, "manifest.json"), what="run manifest", follow=False)
    rows = read_json(os.path.join(path, "summary.json"), what="summary", follow=False)
    if not isinstance(manifest, dict) or not isinstance(rows, list):
        raise FileFormatError(f"{path} does not hold a gdjax run's manifest.json and summary.json")
    results = {}
    histories = os.path.join(path, "histories.npz")
    os.close(open_regular(histories, what="histories file", follow=False))  # a regular file, no link
    inspect_npz(histories)  # plain arrays within the decompressed-size budget, before np.load
    with np.load(histories, allow_pickle=False) as z:
        for u in units(cfg):
            prefix = u.key + "/"
            arrays = {k[len(prefix) :]: z[k] for k in z.files if k.startswith(prefix)}
            if not arrays:
                continue
            mine = [
                r
                for r in rows
                if r["optimizer"] == u.optimizer.label
                and r.get("cost", None) in (None, problems[u.problem].label)
            ]
            results[u.key] = UnitResult(
                key=u.key,
                trace=_trace_from(arrays, problems[u.problem].params0),
                coords=[],
                rows=mine,
                compile_seconds=manifest["units"].get(u.key, {}).get("compile_seconds", 0.0),
                run_seconds=manifest["units"].get(u.key, {}).get("run_seconds", 0.0),
                num_steps=u.num_steps,
            )
    plots = [os.path.join(path, p) for p in manifest.get("plots", [])]
    return RunOutcome(path, rows, results, problems, {}, manifest, plots, False)
