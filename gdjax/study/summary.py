"""The summary rows of a run: configurations, the best of each optimizer, and the printed table.

A summary row is one lane (`gdjax.SweepResult.summary` plus the optimizer's and cost's labels).
Lanes that differ only in seed (or start) form one configuration (`config_key`); `best_configurations`
pools them by the median over seeds, and `format_summary` is the table `gdjax run` prints.
"""

from __future__ import annotations

import math
import os

import numpy as np

from gdjax.io import BLEW_UP, format_number, format_table
from gdjax.types import Status

__all__ = [
    "METRIC_NAMES",
    "SUMMARY_KEYS",
    "best_configurations",
    "config_key",
    "format_summary",
    "normalize_rows",
    "status_counts",
]


def run_files_problem(folder: str, manifest, rows) -> str | None:
    """What is wrong with the shape of a run folder's `manifest.json` and `summary.json` (valid JSON
    of another shape: a damaged or hostile file), or None. One check for every reader of a run
    folder (`gdjax report`, `--resume`), so each names the file the same way."""
    manifest_file, summary_file = (os.path.join(folder, f) for f in ("manifest.json", "summary.json"))
    if not isinstance(manifest, dict):
        return f"{manifest_file} is not a gdjax manifest"
    if not (isinstance(rows, list) and all(isinstance(r, dict) for r in rows)):
        return f"{summary_file} is not a list of summary rows"
    for key in ("units", "problems"):
        entries = manifest.get(key)
        if entries is not None and not (
            isinstance(entries, dict) and all(isinstance(v, dict) for v in entries.values())
        ):
            return f"{manifest_file}: {key!r} is not a table of {key}"
    return None


METRIC_NAMES = ("accuracy", "test_loss", "test_accuracy")  # the metrics a study records (Problem.metrics)


_OUTCOME_KEYS = (
    "lane",
    "rule",
    "seed",
    "start",
    "final_loss",
    "suboptimality",
    "suboptimality_vs_best",
    "steps_to_target",
    "status",
    "steps",
    "stop_step",
    *METRIC_NAMES,
)


def _all_metrics(metrics) -> tuple[str, ...]:
    """The built-in metric names and the user's (`metrics`: a config's `[cost] metrics`, by name)."""
    return (*METRIC_NAMES, *(m for m in metrics if m not in METRIC_NAMES))


def config_key(row: dict, metrics=()) -> tuple:
    """What makes a lane's configuration: every column but the outcomes (and the user's `metrics`)."""
    outcomes = set(_OUTCOME_KEYS).union(metrics)
    return tuple((k, repr(v)) for k, v in row.items() if k not in outcomes)


def best_configurations(
    rows: list[dict], by: str = "final_loss", metrics=(), tuning_seeds=None
) -> list[dict]:
    """The best configuration of each optimizer (and cost), pooled over seeds.

    Lanes that differ only in seed (or start) form one configuration. A configuration is scored by
    the median `by` of its lanes (`final_loss` or `test_loss`: lowest; `accuracy` or
    `test_accuracy`: highest), exactly, ties going to the configuration listed first; a lane that
    diverged or has no finite value counts as the worst. That is the rule of the report page
    (`Results.best_configurations`) and of the statistics (`compare`), so the three choose the same
    configuration. (Rounding the median to 6 significant digits and letting the faster win a tie, as
    this table once did, chose adam's first learning rate in the default study, f - f* = 0.0047,
    where the page chose one with 1.1e-5: at a loss of 5691.73 the two round alike.) `metrics`
    names the config's own metrics (`[cost] metrics`), outcomes like the built-in ones, never part
    of a configuration.

    With `tuning_seeds` (`[outputs] tuning_seeds`), configurations are scored on the lanes of those
    seeds only, and the row reports the chosen configuration's other (fresh) seeds; a lane without a
    seed (a deterministic run) counts on both sides.

    `rows` are a study's summary rows (`summary.json`) or a Python sweep's `result.summary()`, whose
    `rule` stands for the optimizer and whose metrics (the columns after `stop_step`) are outcomes;
    `gdjax.study.results(result).best_configurations(by=..., mode=...)` is the DataFrame form, with
    quartiles.

    Returns:
      One row per optimizer: its configuration's columns, `final_loss` / `suboptimality` / `steps`
      (and the metrics, `suboptimality_vs_best`) as medians over the seeds, `seeds` (how many
      lanes), and `lanes` (their indices).
    """
    rows, sweep_metrics = _study_rows(rows)
    metrics = tuple(dict.fromkeys((*metrics, *sweep_metrics)))
    if rows and not any(by in r for r in rows):
        raise ValueError(f"cannot rank by {by!r}{_nearest(by, rows[0])}; columns: {', '.join(rows[0])}")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        unit = (r.get("cost"), r["optimizer"])
        groups.setdefault((unit, config_key(r, metrics)), []).append(r)
    best: dict[tuple, tuple] = {}

    def on(members: list[dict], tuning: bool) -> list[dict]:
        if tuning_seeds is None:
            return members
        return [m for m in members if m.get("seed") is None or (m["seed"] in tuning_seeds) == tuning]

    for (unit, _), everyone in groups.items():
        members = on(everyone, True) or everyone
        # The rule of the page and of the statistics (`Results.best_configurations`, `compare`): the
        # median over seeds, a lane that blew up or has no finite value counting as the worst.
        sign = -1.0 if by in ("accuracy", "test_accuracy") else 1.0
        values = [
            math.inf
            if m["status"] in BLEW_UP or not isinstance(m.get(by), int | float) or not math.isfinite(m[by])
            else sign * m[by]
            for m in members
        ]
        score = float(np.median(values))
        if unit not in best or score < best[unit][0]:
            best[unit] = (score, everyone)
    out = []
    for unit in dict.fromkeys(k for k, _ in groups):
        members = on(best[unit][1], False) or best[unit][1]
        row = {k: v for k, v in members[0].items() if k not in ("lane", "seed", "start", "stop_step")}
        subs = [m["suboptimality"] for m in members]
        for name in ("suboptimality_vs_best", *_all_metrics(metrics)):
            if name in row:
                values = [m[name] for m in members]
                row[name] = None if None in values else float(np.median(values))
        row.update(
            final_loss=float(np.median([m["final_loss"] for m in members])),
            suboptimality=None if None in subs else float(np.median(subs)),
            steps=float(np.median([m["steps"] for m in members])),
            status=_majority([m["status"] for m in members]),
            seeds=len(members),
            lanes=[m["lane"] for m in members],
        )
        out.append(row)
    return out


def _study_rows(rows) -> tuple[list[dict], tuple[str, ...]]:
    """Summary rows as a study's: a `SweepResult.summary()` row gets `optimizer` = its `rule`, and its
    metrics (the columns `summary` puts after `stop_step`) are named, so they are not configuration."""
    rows = [dict(r) for r in rows]
    if not rows or "optimizer" in rows[0]:
        return rows, ()
    if "rule" not in rows[0]:
        raise ValueError(
            "best_configurations takes summary rows with an 'optimizer' (a study's summary.json) or a "
            f"'rule' (SweepResult.summary()); these have {', '.join(rows[0])}"
        )
    keys = list(rows[0])
    metrics = tuple(keys[keys.index("stop_step") + 1 :]) if "stop_step" in keys else ()
    return [{"optimizer": r["rule"], **r} for r in rows], metrics


def _majority(values: list[str]) -> str:
    counts = {v: values.count(v) for v in values}
    top = max(counts.values())
    name = next(v for v in values if counts[v] == top)
    return name if top == len(values) else f"{name} ({top}/{len(values)})"


def status_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per optimizer (and cost): how many lanes ended in each status."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        key = r["optimizer"] if r.get("cost") is None else f"{r['cost']}.{r['optimizer']}"
        counts = out.setdefault(key, {str(s): 0 for s in Status})
        counts[r["status"]] += 1
    return out


def _counts_text(c: dict) -> str:
    return f"{c['converged']}/{c['max_steps']}/{c['diverged']}/{c['nonfinite']}"


def format_summary(rows: list[dict], by: str = "final_loss", metrics=(), tuning_seeds=None) -> str:
    """The table `gdjax run` prints: best configuration per optimizer (by `by`, chosen on
    `tuning_seeds` and reported on the others when given) and its status counts."""
    best = best_configurations(rows, by, metrics, tuning_seeds)
    names = _all_metrics(metrics)
    counts = status_counts(rows)
    skip = {"optimizer", "cost", "rule", "batch_size", "final_loss", "suboptimality", "steps_to_target"}
    skip |= {"status", "steps", "seeds", "lanes", "schedule", "suboptimality_vs_best", *names}
    shown = [m for m in names if any(b.get(m) is not None for b in best)]
    vs_best = any(b.get("suboptimality") is None and b.get("suboptimality_vs_best") is not None for b in best)
    # Where some lanes ran mini-batches, a configuration on the full data says so ("full"), as the
    # config spells it: left out, the table could not tell it from a default.
    mixed = any(r.get("batch_size") is not None for r in rows)
    table = []
    for b in best:
        key = b["optimizer"] if b.get("cost") is None else f"{b['cost']}.{b['optimizer']}"
        hp = ", ".join(f"{k}={format_number(v)}" for k, v in b.items() if k not in skip and v is not None)
        if b.get("batch_size") is not None or mixed:
            hp += f"{', ' if hp else ''}batch_size={b.get('batch_size') or 'full'}"
        c = counts[key]
        table.append(
            {
                "optimizer": key,
                "best configuration": hp or "-",
                "final loss": format_number(b["final_loss"]),
                **(
                    {"f - best": format_number(b.get("suboptimality_vs_best"))}
                    if vs_best
                    else {"f - f*": format_number(b["suboptimality"])}
                ),
                **{m.replace("_", " "): format_number(b.get(m)) for m in shown},
                "steps": format_number(b["steps"]),
                "status": b["status"],
                "lanes (conv/max/div/nan)": _counts_text(c),
            }
        )
    missing = [k for k in counts if k not in {t["optimizer"] for t in table}]
    for key in missing:
        c = counts[key]
        table.append(
            {
                "optimizer": key,
                "best configuration": "(every lane blew up)",
                "final loss": "-",
                **({"f - best": "-"} if vs_best else {"f - f*": "-"}),
                **{m.replace("_", " "): "-" for m in shown},
                "steps": "-",
                "status": "-",
                "lanes (conv/max/div/nan)": _counts_text(c),
            }
        )
    return format_table(table) if table else ""


_ROW_HEAD = ("optimizer", "cost", "lane", "rule")


_ROW_TAIL = ("seed", "start", "batch_size", "final_loss", "suboptimality", "suboptimality_vs_best")


_ROW_TAIL += ("steps_to_target", *METRIC_NAMES, "status", "steps", "stop_step")


_OPTIONAL_TAIL = {"suboptimality_vs_best", *METRIC_NAMES}  # columns only some studies have


# A summary row's columns that are not hyperparameters (how `gdjax.study.load` tells them apart).
SUMMARY_KEYS = frozenset(_ROW_HEAD + _ROW_TAIL)


def normalize_rows(rows: list[dict], results: list) -> list[dict]:
    """Every row with the same columns in one order: who, hyperparameters, then outcomes."""
    hp = list(dict.fromkeys(k for r in results for k in r.hyperparameter_names))
    names = dict.fromkeys(k for r in results for k in (r.trace.metrics or {}))
    user = [m for m in names if m not in METRIC_NAMES]  # the config's own metrics, last
    present = set().union(*(r.keys() for r in rows)) if rows else set()
    cols = [c for c in _ROW_HEAD if c in present] + [c for c in hp if c not in _ROW_HEAD + _ROW_TAIL]
    cols += [c for c in present if c not in cols and c not in _ROW_TAIL and c not in user]
    cols += [c for c in _ROW_TAIL if c not in _OPTIONAL_TAIL or c in present] + user
    return [{c: r.get(c) for c in cols} for r in rows]


def _nearest(name: str, options) -> str:
    from gdjax.validation import nearest  # here: validation imports JAX, which reading results does not need

    return nearest(name, options)
