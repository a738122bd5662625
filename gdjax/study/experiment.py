"""Experiments: a validated config turned into data, costs, gradient checks, sweeps and a run folder.

`run_experiment(config, out_dir)` is what `gdjax run` does: it builds each cost's problem (data,
starting point, closed-form answers) and checks the config against it and the gradients
(`gdjax.study.preflight`), runs one `gdjax.sweep` per optimizer (a "unit"; one per cost and
optimizer when the config has several costs), and writes the run folder atomically as it goes
(`gdjax.study.parts`, `provenance`, `runfolder`); the command then draws the config's plots into
it (`PlotStage`):

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
                         (written when the run is complete; until then, the finished
                         optimizers' histories are in parts/)
      split.npz          with [data] test_fraction: the held-out split, `<cost>/train` and
                         `<cost>/test` (sorted row indices into the data as read)
      *.png              the plots named in outputs.plots (drawn by the command after the run)
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

import dataclasses
import datetime
import functools
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from gdjax.io import FileFormatError, inspect_npz, open_regular, read_json
from gdjax.study import config as config_lib
from gdjax.study import runfolder
from gdjax.study.config import ExperimentConfig
from gdjax.study.parts import (
    UnitResult,
    disagreement,
    load_part,
    merge,
    save_part,
    trace_from,
    unit_result,
    write_results,
)
from gdjax.study.preflight import (
    GradCheckFailed,
    Unit,
    build_problems,
    check_gradients,
    check_memory,
    check_sweeps,
    check_units,
    gradcheck_subset,
    gradcheck_text,
    is_line,
    load_data,
    num_lanes,
    seed_problems,
    split_per_seed,
    sweep_args,
    unit_start,
    units,
)
from gdjax.study.problems import Dataset, Problem, split
from gdjax.study.programs import Compiler
from gdjax.study.provenance import git_commit, now, per_seed_info, problem_info, versions
from gdjax.study.summary import (
    METRIC_NAMES,
    SUMMARY_KEYS,
    best_configurations,
    config_key,
    format_summary,
    run_files_problem,
    status_counts,
)
from gdjax.sweep import SweepInterrupted, run_plan, sweep
from gdjax.types import GradCheckReport

# With names re-exported from the modules they moved to (problems, preflight, parts, summary).
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
    "seed_problems",
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


def _sweep_call(cfg: ExperimentConfig, u: Unit, p: Problem, progress=None, seed=None) -> tuple[tuple, dict]:
    """The `(args, kwargs)` of a unit's sweep (with `seed`: that seed's sweep of a problem split per seed)."""
    kwargs = sweep_args(cfg, u, p, progress)
    if seed is not None:
        kwargs["seeds"] = [seed]
    return (p.cost, u.optimizer.rule, unit_start(p), p.data), kwargs


def unit_sweeps(cfg: ExperimentConfig, u: Unit, p: Problem, per_seed=None) -> list[tuple[tuple, dict]]:
    """The `(args, kwargs)` of every sweep a unit runs (one per seed for a problem split per seed)."""
    if split_per_seed(cfg, p):
        per_seed = per_seed or seed_problems(cfg, [p])
        return [_sweep_call(cfg, u, per_seed[(p.label, s)], seed=s) for s in cfg.seeds]
    return [_sweep_call(cfg, u, p)]


def run_unit(
    cfg: ExperimentConfig, u: Unit, p: Problem, *, progress=None, per_seed=None, plan=None
) -> UnitResult:
    """Runs one unit's sweep: its `plan` from `check_sweeps` when given (planned once, before the
    folder was made), else the sweep planned here. Raises `SweepInterrupted` (with `.partial`) if a
    later chunk fails.

    A problem split per seed runs one sweep per seed, each on its own split (`per_seed`, from
    `seed_problems`; built here when not given)."""
    if plan is not None and plan.runnable:
        result, total = run_plan(plan, progress=progress), plan.num_lanes
    elif split_per_seed(cfg, p):
        total = num_lanes(cfg, u, p)
        return _run_per_seed(cfg, u, p, total, progress, per_seed or seed_problems(cfg, [p]))
    else:
        total = num_lanes(cfg, u, p)
        args, kwargs = _sweep_call(cfg, u, p, progress)
        result = sweep(*args, **kwargs)
    result = result.with_f_star(p.f_star)
    return unit_result(cfg, u, p, result, True, total)


def _run_per_seed(cfg, u: Unit, p: Problem, total: int, progress, per_seed: dict) -> UnitResult:
    """One sweep per seed on that seed's split, lanes interleaved into the order one sweep over every
    seed gives (configuration, then seed). Each seed compiles its own program: its training and
    held-out data are constants of the metrics. A failure part-way raises `SweepInterrupted` carrying
    the lanes done so far as `unit_result` (seed by seed)."""
    parts: list[UnitResult] = []
    for seed in cfg.seeds:
        ps = per_seed[(p.label, seed)]
        done = sum(len(r.rows) for r in parts)
        tick = None if progress is None else (lambda d, n, done=done: progress(done + d, total))
        args, kwargs = _sweep_call(cfg, u, ps, tick, seed)
        try:
            result = sweep(*args, **kwargs)
        except SweepInterrupted as err:
            parts.append(unit_result(cfg, u, ps, err.partial.with_f_star(ps.f_star), False, total))
            err.unit_result = _combine(parts, interleave=False)
            raise
        parts.append(unit_result(cfg, u, ps, result.with_f_star(ps.f_star), True, total))
    return _combine(parts, interleave=True)


def _combine(parts: list[UnitResult], interleave: bool) -> UnitResult:
    """Several seeds' unit results as one: lane j of seed k becomes lane `j * num_seeds + k`
    (`interleave`), or the seeds one after another (a partial result)."""
    if interleave:
        order = [(k, j) for j in range(len(parts[0].rows)) for k in range(len(parts))]
    else:
        order = [(k, j) for k, part in enumerate(parts) for j in range(len(part.rows))]
    offsets = np.cumsum([0] + [len(part.rows) for part in parts])
    idx = np.asarray([offsets[k] + j for k, j in order], np.int64)
    trace = jax.tree.map(lambda *xs: np.concatenate(xs)[idx], *[part.trace for part in parts])
    return dataclasses.replace(
        parts[0],
        trace=trace,
        coords=[parts[k].coords[j] for k, j in order],
        rows=[dict(parts[k].rows[j], lane=i) for i, (k, j) in enumerate(order)],
        compile_seconds=sum(part.compile_seconds for part in parts),
        run_seconds=sum(part.run_seconds for part in parts),
        complete=all(part.complete for part in parts),
    )


# ------------------------------------------------------------------------------ summaries and best


# ------------------------------------------------------------------------------------- histories


# ------------------------------------------------------------------------------------ run folder


def default_out_dir(cfg: ExperimentConfig) -> str:
    """`<outputs.dir>/<name>-<YYYYmmdd-HHMMSS>` (a suffix `-2`, `-3`, ... if taken)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(cfg.outputs.dir, f"{cfg.name}-{stamp}")
    path, k = base, 2
    while os.path.exists(path):
        path, k = f"{base}-{k}", k + 1
    return path


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
    ran: bool = True  # False: `--resume` found the folder complete and ran nothing
    units: list[Unit] = field(default_factory=list)  # the sweeps of the run, in order
    histories: dict = field(default_factory=dict)  # the arrays of histories.npz, as written
    splits: dict = field(default_factory=dict)  # the arrays of split.npz, as written

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric the runs recorded (built-in and the config's own), in order."""
        return tuple(dict.fromkeys(m for p in self.problems for m in (p.metrics or {})))


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
    lines += [
        "",
        f"summary.csv and summary.json hold the optimizers done; their histories are in {PARTS}/ "
        "(histories.npz is written when the run is complete).",
    ]
    return "\n".join(lines) + "\n"


def _note_kept(kept: list[str], log) -> None:
    if kept:
        log(f"note: kept what gdjax did not make in {PARTS}/: {', '.join(kept)}")


def run_experiment(
    cfg: ExperimentConfig,
    out: str | None = None,
    *,
    resume: bool = False,
    force: bool = False,
    progress: Callable[[str, int, int], Any] | None = None,
    log: Callable[[str], Any] | None = None,
    command: list[str] | None = None,
    gradcheck_x64: Callable | None = None,
    compile_threads: int | None = None,
) -> RunOutcome:
    """Runs a whole experiment and writes its run folder.

    Args:
      cfg: the validated config.
      out: the run folder (default `default_out_dir(cfg)`).
      resume: finish an interrupted folder: optimizers already done are loaded, the rest rerun.
      force: replace an existing run folder.
      progress: `progress(unit_key, lanes_done, total_lanes)` after each chunk of a sweep.
      log: where one-line messages go (default: nowhere).
      command: the command line, recorded in the manifest.
      gradcheck_x64: a context manager factory the gradient check runs under (the CLI passes one
        that enables float64 for float32 runs; library code does not flip flags itself).
      compile_threads: threads that compile the units' programs ahead of their runs, side by side
        (`gdjax.study.programs`; default `GDJAX_COMPILE_THREADS`, else 1: each unit's sweep compiles
        its own programs when it runs). Results do not depend on it.

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
    started = now()
    out = out or default_out_dir(cfg)
    # The folder and the data are judged before anything is computed (issue 17 item 7, issue 19):
    # an existing --out, a foreign or copied marker, a link, another config or changed data.
    fingerprints = runfolder.data_fingerprints(cfg)
    kind = runfolder.check(cfg, out, resume=resume, force=force, fingerprints=fingerprints, log=log)
    problems = build_problems(cfg)
    per_seed = seed_problems(cfg, problems)  # [data] split_per_seed: each seed's own split
    unit_list = units(cfg)
    check_units(cfg, problems, unit_list)
    check_memory(cfg, problems, unit_list)  # the histories on the host
    plans = check_sweeps(cfg, problems, unit_list)  # each sweep's lanes per call on the devices, once
    manifest_file = os.path.join(out, "manifest.json")
    if kind == "resume" and os.path.lexists(manifest_file):
        old = read_json(manifest_file, what="run manifest", follow=False)
        if not isinstance(old, dict):
            raise FileFormatError(f"{manifest_file} is not a run manifest (not a JSON object)")
        if old.get("status") == "complete" and not os.path.lexists(os.path.join(out, PARTIAL_MARKER)):
            done, _ = runfolder.prepare(cfg, out, resume=True, force=False, fingerprints=fingerprints)
            try:  # a kill after the last manifest (its clean-up, or the plots) left these
                done.clean_temps()
                owned = done.owned()
                for name in (PARTS, runfolder.STAGING):
                    if name in owned:  # gdjax made it
                        _note_kept(done.remove(name), log)
            finally:
                done.unlock()
            log(f"nothing to resume: {out} is complete")
            return dataclasses.replace(read_run(out, cfg=cfg, problems=problems), ran=False)

    # The units' programs compile in threads from here on, beside the gradient check (programs.py);
    # when resuming, once the finished units are known.
    compiler = Compiler(compile_threads)
    try:
        if kind != "resume":
            compiler.start(_unit_calls(cfg, unit_list, problems, per_seed, plans, done=()))
        reports: dict[str, GradCheckReport] = {}
        if cfg.gradcheck.enabled:
            if gradcheck_x64 is not None:
                with gradcheck_x64():
                    reports = check_gradients(cfg, problems)
            else:
                reports = check_gradients(cfg, problems)
        checked = gradcheck_text(reports, cfg, problems) if reports else None  # written with the folder
        if not all(r.ok for r in reports.values()):
            raise GradCheckFailed(reports, checked)
        for p in problems:  # a warning (a kink at a start) does not stop the run
            if p.label in reports:
                subset = gradcheck_subset(cfg, p)
                on = f" (on {subset})" if subset is not None else ""
                log(f"gradient check of {p.label}{on}: {reports[p.label].verdict}")

        folder, resumed = runfolder.prepare(
            cfg, out, resume=resume, force=force, fingerprints=fingerprints, log=log
        )
    except BaseException:
        compiler.close()
        raise
    try:
        manifest = {
            "name": cfg.name,
            "status": "partial",
            "config": cfg.source,
            "command": command if command is not None else list(sys.argv),
            "cwd": os.getcwd(),
            "git_commit": git_commit(),
            "precision": cfg.precision,
            "x64_enabled": bool(jax.config.jax_enable_x64),
            **versions(),
            "started": started,
            "finished": None,
            "compile_seconds": 0.0,
            "run_seconds": 0.0,
            "problems": {p.label: problem_info(p) | per_seed_info(p, cfg.seeds, per_seed) for p in problems},
            "suite": cfg.is_suite,  # problems named by their labels alone (gdjax.study.load)
            # choose configurations on these seeds, report on the others (gdjax.study.load reads it)
            "tuning_seeds": None if cfg.outputs.tuning_seeds is None else list(cfg.outputs.tuning_seeds),
            "gradcheck": {k: r.verdict for k, r in reports.items()} or "disabled",
            "data_files": fingerprints,
            "units": {u.key: {"status": "pending", "lanes": plans[u.key].num_lanes} for u in unit_list},
        }
        results: dict[str, UnitResult] = {}
        # A signal between config.toml and the manifest (a few fsyncs) left a folder where nothing ran:
        # it is started again, not refused for its missing manifest.
        resumed = resumed and os.path.lexists(folder.file("manifest.json"))
        if resumed:
            old = read_json(folder.checked("manifest.json"), what="run manifest", follow=False)
            old = old if isinstance(old, dict) else {}
            if old.get("status") == "complete" and not os.path.lexists(folder.file(PARTIAL_MARKER)):
                # Another gdjax run finished the folder after this one judged it (its gradient check
                # ran before the lock was taken): nothing to resume, and nothing is rerun over it.
                log(f"nothing to resume: {out} is complete (another gdjax run finished it meanwhile)")
                return dataclasses.replace(read_run(out, cfg=cfg, problems=problems), ran=False)
            # A manifest's own fields are kept only where they have their type (a damaged one is redone).
            previous = old.get("resumed")
            manifest["started"] = old["started"] if isinstance(old.get("started"), str) else started
            manifest["resumed"] = [*(previous if isinstance(previous, list) else []), started]
            for u in unit_list:
                r = load_part(folder, u.key, problems[u.problem].params0, log)
                why = None if r is None else disagreement(cfg, u, problems[u.problem], r)
                if why:
                    log(f"note: the saved part of {u.key} is damaged, so it is redone ({why})")
                elif r is not None:
                    results[u.key] = r
            log(f"resuming {out}: {len(results)} of {len(unit_list)} optimizers already done")
            compiler.start(_unit_calls(cfg, unit_list, problems, per_seed, plans, done=results))
        else:
            if kind == "resume":  # --resume of a folder that holds no run yet
                compiler.start(_unit_calls(cfg, unit_list, problems, per_seed, plans, done=()))
            folder.write_text("config.toml", cfg.to_toml())
        splits = {
            f"{p.label}/{part}": index
            for p in problems
            if p.dataset is not None and p.dataset.test_index is not None
            for part, index in (("train", p.dataset.train_index), ("test", p.dataset.test_index))
        }
        if splits:  # the held-out split, for gdjax.study.load (`results.splits`)
            folder.write_npz("split.npz", splits)
        if checked is not None:
            folder.write_text("gradcheck.txt", checked)
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
            # The summaries of the optimizers done; their histories stay in parts/ until the end.
            rows, _ = merge(cfg, unit_list, results, problems, arrays=False)
            write_results(folder, rows, None)
            folder.write_json("manifest.json", manifest)
            folder.write_text(
                PARTIAL_MARKER, _partial_text(cfg, unit_list, results, interrupted, reason, folder.path)
            )

        mark("the run is in progress (or was killed)")
        for u in unit_list:
            if u.key in results:
                continue
            p = problems[u.problem]
            total = plans[u.key].num_lanes
            log(f"running {u.key}: {total} lane(s) x {u.num_steps} steps")
            tick = None
            if progress is not None:
                tick = lambda done, n, key=u.key: progress(key, done, n)  # noqa: E731
                progress(u.key, 0, total)
            try:
                ahead = compiler.wait(u.key)  # its programs, compiled in threads
                r = run_unit(cfg, u, p, progress=tick, per_seed=per_seed, plan=plans[u.key])
                r = dataclasses.replace(r, compile_seconds=r.compile_seconds + ahead)
            except ValueError as err:
                # The sweep refused its input before running a lane (a size only it can judge).
                if not resumed and not results:
                    folder.discard()  # a folder this call made and nothing was written to: no PARTIAL
                    raise ValueError(f"{u.key}: {err}; nothing was written") from err
                mark(f"{u.key} was refused: {err}")
                err.gdjax_run_folder = folder.path
                raise
            except SweepInterrupted as err:
                partial = getattr(err, "unit_result", None)  # a problem split per seed: built per seed
                partial = partial or unit_result(cfg, u, p, err.partial.with_f_star(p.f_star), False, total)
                save_part(folder, partial, p.params0, suffix=".partial")
                info = {"key": u.key, "lanes": len(partial.coords), "total_lanes": total}
                reason = f"{u.key} stopped after {info['lanes']} of {total} lanes ({err.__cause__!r})"
                mark(reason, info)
                raise RunInterrupted(reason, folder.path) from err
            except BaseException as err:
                mark(f"{u.key} was interrupted ({type(err).__name__})")
                err.gdjax_run_folder = folder.path  # where the partial results are, for the caller
                if isinstance(err, Exception):  # a failure (an XLA compile, say), not a signal
                    err.add_note(f"gdjax: while running {u.key}; partial results in {folder.path}")
                raise
            save_part(folder, r, p.params0)
            results[u.key] = r
            mark(f"stopped after {', '.join(results)}")
            if ahead:  # compiled in a thread, side by side with other units' programs
                log(f"  done: compiled ahead in {r.compile_seconds:.2f} s, run {r.run_seconds:.2f} s")
            else:
                c, rs = r.compile_seconds, r.run_seconds
                log(f"  done in {c + rs:.2f} s (compile {c:.2f} s, run {rs:.2f} s)")

        rows, arrays = merge(cfg, unit_list, results, problems)
        write_results(folder, rows, arrays)
        for k in results:
            manifest["units"][k]["status"] = "complete"
            manifest["units"][k]["compile_seconds"] = results[k].compile_seconds
            manifest["units"][k]["run_seconds"] = results[k].run_seconds
        manifest.pop("interrupted", None)
        manifest.update(
            status="complete",
            finished=now(),
            compile_seconds=sum(r.compile_seconds for r in results.values()),
            run_seconds=sum(r.run_seconds for r in results.values()),
            plots=[],
        )
        folder.clean_temps()
        folder.write_json("manifest.json", manifest)
        folder.remove(PARTIAL_MARKER)
        _note_kept(folder.remove(PARTS), log)
    except (KeyboardInterrupt, OSError) as err:
        if os.path.exists(folder.file(PARTIAL_MARKER)):  # stopped while writing the results (a full disk)
            err.gdjax_run_folder = folder.path
        raise
    finally:
        compiler.close()
        folder.unlock()
    return RunOutcome(
        folder.path, rows, results, problems, reports, manifest, [], resumed, True, unit_list, arrays, splits
    )


def _unit_calls(cfg, unit_list, problems, per_seed, plans, done) -> list:
    """`(unit key, sweeps)` of the units not done, for `Compiler.start`: a unit's plan where it has
    one that runs (lowered without planning again), else its sweeps' arguments."""
    return [
        (
            u.key,
            functools.partial(_planned, plans[u.key])
            if plans[u.key].runnable
            else functools.partial(unit_sweeps, cfg, u, problems[u.problem], per_seed),
        )
        for u in unit_list
        if u.key not in done
    ]


def _planned(plan) -> list[tuple[tuple, dict]]:
    return [((plan,), {})]  # `lower_sweep(plan)`


PlotStage = runfolder.PlotStage  # moved to the run folder's module; the old name still works


def _seconds(x) -> bool:
    """A number of seconds as a manifest holds it (a 400-digit integer is not one: no float holds it)."""
    return (type(x) is int and abs(x) < 2**53) or (type(x) is float and math.isfinite(x))


def read_run(path: str, *, cfg: ExperimentConfig | None = None, problems=None) -> RunOutcome:
    """Reads a complete run folder back (rows, histories and manifest).

    Raises:
      FileFormatError: a file that is missing, damaged or of another shape; one line naming it.
    """
    cfg = cfg or config_lib.load(os.path.join(path, "config.toml"))
    problems = problems or build_problems(cfg)
    manifest_file = os.path.join(path, "manifest.json")
    manifest = read_json(manifest_file, what="run manifest", follow=False)
    rows = read_json(os.path.join(path, "summary.json"), what="summary", follow=False)
    if (problem := run_files_problem(path, manifest, rows)) is not None:
        raise FileFormatError(problem)
    # What this reader uses beyond the shared shape: each row's optimizer, each unit's seconds.
    if not all(isinstance(r.get("optimizer"), str) for r in rows):
        raise FileFormatError(f"{os.path.join(path, 'summary.json')} is not a list of summary rows")
    timings = manifest.get("units") or {}
    if not all(_seconds(v.get(k, 0.0)) for v in timings.values() for k in ("compile_seconds", "run_seconds")):
        raise FileFormatError(f"{manifest_file}: 'units' is not a table of units")
    plot_names = manifest.get("plots", [])
    if not isinstance(plot_names, list) or not all(isinstance(p, str) for p in plot_names):
        raise FileFormatError(f"{manifest_file}: 'plots' is not a list of file names")
    results = {}
    histories = os.path.join(path, "histories.npz")
    os.close(open_regular(histories, what="histories file", follow=False))  # a regular file, no link
    inspect_npz(histories)  # plain arrays within the decompressed-size budget, before np.load
    try:
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
                seconds = {k: timings.get(u.key, {}).get(k, 0.0) for k in ("compile_seconds", "run_seconds")}
                results[u.key] = UnitResult(
                    key=u.key,
                    trace=trace_from(arrays, problems[u.problem].params0),
                    coords=[],
                    rows=mine,
                    num_steps=u.num_steps,
                    **seconds,
                )
    except (KeyError, ValueError, TypeError, IndexError, OverflowError) as err:
        if isinstance(err, FileFormatError):
            raise
        raise FileFormatError(
            f"{histories}: does not fit this run's config and manifest ({type(err).__name__}: {err}); "
            "damaged, or not written by gdjax"
        ) from None
    plots = [os.path.join(path, os.path.basename(p)) for p in plot_names]
    return RunOutcome(path, rows, results, problems, {}, manifest, plots, False)
