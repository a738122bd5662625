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
one `Column` row here plus the line that computes it in `_lane_frame`.

Three ways in: `results(sweep_result)` wraps a Python `gdjax.sweep`, `load(path)` reads a run folder
written by `gdjax run` (or a directory written by `Results.save`), and `load([path1, path2])` merges
several (with their provenance columns; different problems under one name are refused).

pandas is imported here and only here in the study face's read path; `import gdjax` never loads it.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import platform
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gdjax import io as gdjax_io
from gdjax.study.summary import SUMMARY_KEYS
from gdjax.types import Status

__all__ = [
    "CURVE_COLUMNS",
    "LANE_COLUMNS",
    "Column",
    "Results",
    "ResultsError",
    "load",
    "merge",
    "results",
]

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
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ------------------------------------------------------------------------------------------ model
@dataclasses.dataclass
class Results:
    """What happened in a study (or a Python sweep): lanes, curves and the problems they ran on.

    Attributes:
      lanes: one row per lane; columns `LANE_COLUMNS`, with the hyperparameters after `rule` and the
        metrics (last values) after `suboptimality`.
      curves: one row per lane and evaluation; columns `CURVE_COLUMNS` then the metrics.
      problems: one row per problem: `problem`, `num_examples`, `num_params`, `f_star` (NaN:
        unknown), `f_star_source`, `data_fingerprint` ('' when unknown).
      hyperparameters: the hyperparameter columns of `lanes`, in order.
      metrics: the metric columns of `lanes` and `curves`, in order.
      splits: `{problem: {"train": indices, "test": indices}}` for problems with a held-out split:
        sorted row indices into the data as read (a run folder's `split.npz`).
      tuning_seeds: the selection protocol (`with_tuning_seeds`, `[outputs] tuning_seeds`): each
        optimizer's configuration is chosen on these seeds and reported on the other, fresh seeds by
        `best_configurations`, `compare`, `best_statement` and the profiles and scores. None: chosen
        and reported on every seed.
    """

    lanes: pd.DataFrame
    curves: pd.DataFrame
    problems: pd.DataFrame
    hyperparameters: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    splits: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    tuning_seeds: tuple[int, ...] | None = None
    # time_to_target by its arguments: a report asks for the same targets in several figures
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    # ---------------------------------------------------------------------------------- columns
    @property
    def config_columns(self) -> list[str]:
        """What distinguishes two configurations of one optimizer: its hyperparameters and batch size."""
        return [*self.hyperparameters, "batch_size"]

    @property
    def num_lanes(self) -> int:
        return len(self.lanes)

    def __repr__(self) -> str:
        problems = ", ".join(self.problems["problem"].tolist())
        optimizers = ", ".join(dict.fromkeys(self.lanes["optimizer"].tolist()))
        return (
            f"Results({self.num_lanes} lanes, {len(self.curves)} curve rows; problems: {problems}; "
            f"optimizers: {optimizers})"
        )

    def _check_column(self, name: str, what: str = "by") -> None:
        if name not in self.lanes.columns:
            raise ResultsError(
                f"{what}={name!r} is not a column of lanes{_nearest(name, self.lanes.columns)}; "
                f"numeric columns: {', '.join(self._numeric_columns())}"
            )

    def _numeric_columns(self) -> list[str]:
        return [c for c in self.lanes.columns if pd.api.types.is_numeric_dtype(self.lanes[c])]

    def with_defaults(self, defaults: dict[str, dict[str, float]]) -> Results:
        """These results with `is_default` marking the lanes at `defaults` (`{rule: {name: value}}`,
        replacing `CONVENTIONAL_DEFAULTS` for the rules it names)."""
        table = {**CONVENTIONAL_DEFAULTS, **defaults}
        lanes = self.lanes.assign(is_default=_is_default(self.lanes, self.hyperparameters, table))
        return dataclasses.replace(self, lanes=lanes)  # a fresh cache: `_cache` is not an init field

    def with_tuning_seeds(self, seeds: Sequence[int] | None) -> Results:
        """These results under the tuning protocol: configurations chosen on `seeds`, everything reported
        on the others (Schmidt et al. 2021: tune on some seeds, rerun the choice on fresh ones). `seeds`
        must be among the lanes' seeds and leave at least one over; None chooses and reports on all."""
        from gdjax.study import statistics

        try:
            checked = statistics.check_tuning_seeds(self.lanes["seed"], seeds)
        except ValueError as err:
            raise ResultsError(str(err)) from None
        return dataclasses.replace(self, tuning_seeds=None if checked is None else tuple(checked))

    @property
    def fresh_seeds(self) -> list[int] | None:
        """The seeds reported on under `tuning_seeds` (None without the protocol)."""
        if self.tuning_seeds is None:
            return None
        return sorted(int(s) for s in pd.unique(self.lanes["seed"].dropna()) if s not in self.tuning_seeds)

    def _seeds(self, options: dict) -> dict:
        """`options` with this protocol's `tuning_seeds` unless the call gives its own (None: all seeds)."""
        return {"tuning_seeds": self.tuning_seeds, **options}

    # -------------------------------------------------------------------------------- summaries
    def best_configurations(self, by: str = "final_loss", mode: str = "min") -> pd.DataFrame:
        """The best configuration of each problem and optimizer, by the median over seeds of `by`.

        A configuration is an optimizer's hyperparameters and batch size (`config_columns`); its
        lanes are its seeds and starts. Lanes that diverged or went non-finite count as `+inf`
        (`-inf` for `mode="max"`), so a configuration that blows up on some seeds is ranked by
        what it really did. Ties go to the configuration listed first. Under `tuning_seeds`,
        configurations are ranked by their median on the tuning seeds (`tuning_median`), and the
        other statistics describe the chosen one's fresh seeds.

        Args:
          by: a numeric column of `lanes` (`final_loss`, `suboptimality`, `steps`, a metric ...).
          mode: "min" or "max" (for an accuracy).

        Returns:
          One row per problem and optimizer: `problem`, `optimizer`, the configuration columns,
          `median` (of `by`), `q25`, `q75`, `min`, `max` (over seeds), `lanes` (how many), `status`
          (the most common one), `statuses` ("3 converged, 2 diverged"), and under `tuning_seeds`
          `tuning_median`. Sorted by problem, then best first (by the ranking median).
        """
        if mode not in ("min", "max"):
            raise ResultsError(f"mode must be 'min' or 'max', got {mode!r}")
        self._check_column(by)
        if not pd.api.types.is_numeric_dtype(self.lanes[by]):
            raise ResultsError(
                f"by={by!r} is not numeric; numeric columns: {', '.join(self._numeric_columns())}"
            )
        worst = math.inf if mode == "min" else -math.inf
        lanes = self.lanes.assign(
            _value=self.lanes[by].astype("float64").where(~self.lanes["status"].isin(_BLEW_UP), worst)
        )
        lanes["_value"] = lanes["_value"].fillna(worst)
        keys = ["problem", "optimizer", *self.config_columns]
        tuning = None
        if self.tuning_seeds is not None:
            from gdjax.study import statistics

            tuning, lanes = statistics._split_seeds(lanes, list(self.tuning_seeds))
            tuning = tuning.groupby(keys, dropna=False, sort=False)["_value"].median().rename("tuning_median")
        grouped = lanes.groupby(keys, dropna=False, sort=False)
        table = grouped["_value"].agg(
            median="median",
            q25=lambda v: _quantile(v, 0.25),
            q75=lambda v: _quantile(v, 0.75),
            min="min",
            max="max",
            lanes="size",
        )
        table["status"] = grouped["status"].agg(_majority)
        table["statuses"] = grouped["status"].agg(_status_text)
        ranked_by = "median"
        if tuning is not None:
            table = table.join(tuning, how="left")
            ranked_by = "tuning_median"
        table = table.reset_index()
        table["_rank"] = table[ranked_by] if mode == "min" else -table[ranked_by]
        best = table.sort_values("_rank", kind="stable").groupby(["problem", "optimizer"], sort=False).head(1)
        best = best.sort_values(["problem", "_rank"], kind="stable").drop(columns="_rank")
        return best.reset_index(drop=True)

    # ------------------------------------------------------------------------------------- disk
    def save(self, path: str | os.PathLike) -> str:
        """Writes these results to the folder `path` (created if missing) as Parquet files.

        `lanes.parquet`, `curves.parquet` and `problems.parquet` are plain pandas tables
        (`pd.read_parquet` reads them without gdjax); `results.json` holds the format, the
        hyperparameter and metric names and the held-out split indices. Each file is written
        atomically. `load(path)` reads them back exactly.
        """
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        for name, frame in (("lanes", self.lanes), ("curves", self.curves), ("problems", self.problems)):
            gdjax_io.atomic_write(os.path.join(path, f"{name}.parquet"), lambda f, fr=frame: fr.to_parquet(f))
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "hyperparameters": list(self.hyperparameters),
            "metrics": list(self.metrics),
            "splits": {p: {k: np.asarray(v).tolist() for k, v in s.items()} for p, s in self.splits.items()},
            "tuning_seeds": None if self.tuning_seeds is None else list(self.tuning_seeds),
        }
        gdjax_io.write_json(os.path.join(path, "results.json"), meta)
        return path

    # ------------------------------------------------------------------------------- statistics
    # Each method is `gdjax.study.statistics`'s function of the same name on these lanes and curves,
    # with the configuration columns filled in; their docstrings give the formulas and columns.
    def time_to_target(self, eps=None, *, unit: str = "steps", threshold=None, metric=None, mode="min"):
        """Time for each lane to reach `f <= f* + eps (f0 - f*)` (or a metric threshold).

        Returns:
          One row per lane (and eps): `problem`, `optimizer`, `seed`, `lane`, the target columns,
          `unit`, `time` (inf when not reached), `reached`, then the lane's other columns. With a
          sparse evaluation schedule the time is the first *evaluation* that meets the target.
          Units: "steps", "epochs" (examples processed / n), "gradient_evaluations", "seconds".
        """
        from gdjax.study import statistics

        key = (tuple(np.atleast_1d(eps).tolist()) if eps is not None else None, unit, threshold, metric, mode)
        if key not in self._cache:
            self._cache[key] = statistics.time_to_target(
                self.lanes, self.curves, eps=eps, threshold=threshold, metric=metric, mode=mode, unit=unit
            )
        return self._cache[key].copy()

    def performance_profile(
        self, eps=1e-3, *, unit: str = "epochs", taus=None, variant: str = "tuned", external=None
    ):
        """Dolan-Moré profile: columns `optimizer`, `variant`, `tau`, `rho` (+ the target's).

        `external=(trials, studies)` scores AlgoPerf's external-tuning protocol instead of the best
        configuration: the median over `studies` of the fastest of `trials` random configurations
        (`gdjax.study.statistics.external_tuning`)."""
        from gdjax.study import statistics

        ttt = self.time_to_target(eps, unit=unit)
        if external is not None:
            trials, studies = external
            protocol = statistics.external_tuning(
                ttt, config=self.config_columns, trials=trials, studies=studies
            )
            return statistics.performance_profile(protocol, config=[], taus=taus)
        return statistics.performance_profile(
            ttt,
            config=self.config_columns,
            taus=taus,
            variant=variant,
            lanes=self.lanes,
            tuning_seeds=self.tuning_seeds,
        )

    def profile_ratios(self, eps=1e-3, *, unit: str = "epochs", variant: str = "tuned"):
        """The profile's table: `problem`, `optimizer`, `time` (median over seeds of the best
        configuration), `ratio` to the fastest, and the chosen configuration."""
        from gdjax.study import statistics

        ttt = self.time_to_target(eps, unit=unit)
        return statistics.profile_ratios(
            ttt, config=self.config_columns, variant=variant, lanes=self.lanes, tuning_seeds=self.tuning_seeds
        )

    def scores(self, eps=1e-3, *, unit: str = "epochs", variant: str = "tuned", confidence: float = 0.95):
        """AlgoPerf-style scores (area under the profile for tau in [1, 4], / 3) with a bootstrap
        interval over problems: columns `optimizer`, `variant`, `score`, `ci_low`, `ci_high`."""
        from gdjax.study import statistics

        return statistics.score(self.profile_ratios(eps, unit=unit, variant=variant), confidence=confidence)

    def data_profile(self, eps=1e-3, *, unit: str = "epochs", budgets=None, variant: str = "tuned"):
        """Moré-Wild data profile: columns `optimizer`, `variant`, `budget`, `solved`."""
        from gdjax.study import statistics

        ttt = self.time_to_target(eps, unit=unit)
        return statistics.data_profile(
            ttt,
            config=self.config_columns,
            budgets=budgets,
            variant=variant,
            lanes=self.lanes,
            tuning_seeds=self.tuning_seeds,
        )

    def expected_best_of_k(self, by: str = "final_loss", mode: str = "min"):
        """Expected best `by` after k configurations drawn without replacement from each optimizer's
        grid, exact: columns `problem`, `optimizer`, `k`, `expected`, `num_configs`."""
        from gdjax.study import statistics

        self._check_column(by)
        return statistics.expected_best_of_k(self.lanes, config=self.config_columns, by=by, mode=mode)

    def compare(self, a: str, b: str, *, by: str = "final_loss", mode: str = "min", **options):
        """Paired comparison of optimizers `a` and `b` on the same (problem, seed) pairs, each at its
        best configuration: one row with `median_difference` (a - b), `ci_low`, `ci_high`,
        `probability_of_improvement`, `p_value` (Wilcoxon), `num_pairs`. Options: `tuning_seeds`
        (choose on these, report on the others; default: these results' `tuning_seeds`), `confidence`,
        `seed`."""
        from gdjax.study import statistics

        self._check_column(by)
        options = self._seeds(options)
        return statistics.compare(self.lanes, a, b, config=self.config_columns, by=by, mode=mode, **options)

    def best_statement(self, *, by: str = "final_loss", mode: str = "min", **options) -> str | None:
        """A "best optimizer" sentence only where every paired comparison supports it, else None."""
        from gdjax.study import statistics

        self._check_column(by)
        options = self._seeds(options)
        return statistics.best_statement(self.lanes, config=self.config_columns, by=by, mode=mode, **options)

    def summarize(self, column: str, *, by=("problem", "optimizer"), **options):
        """Median, IQR, IQM and a bootstrap interval of `column` per group."""
        from gdjax.study import statistics

        self._check_column(column, "column")
        return statistics.summarize(self.lanes, column, by=by, **options)


def _quantile(values: pd.Series, q: float) -> float:
    """`np.quantile` (linear) where infinite values count as infinitely bad: between two infinities of
    one sign the quantile is that infinity (NumPy gives NaN for `inf - inf`)."""
    x = np.sort(values.to_numpy(np.float64))
    with np.errstate(invalid="ignore"):
        r = float(np.quantile(x, q))
    if math.isnan(r) and not np.isnan(x).any():
        r = float(x[math.ceil(q * (len(x) - 1))])
    return r


def _majority(values: pd.Series) -> str:
    counts = values.value_counts(sort=False)
    return str(counts.idxmax()) if len(counts) else ""


def _status_text(values: pd.Series) -> str:
    counts = values.value_counts(sort=False)
    order = [str(s) for s in Status]
    return ", ".join(f"{counts[s]} {s}" for s in sorted(counts.index, key=lambda s: (order + [s]).index(s)))


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
    unit = _Unit(
        problem=problem,
        optimizer=[labels.get(c["rule"], c["rule"]) for c in coords],
        rule=[c["rule"] for c in coords],
        coords={
            **{h: [c.get(h) for c in coords] for h in names},
            **{k: [c.get(k) for c in coords] for k in ("seed", "start", "batch_size")},
        },
        loss=np.asarray(trace.loss_history),
        grad_norm=np.asarray(trace.grad_norm_history),
        eval_steps=eval_steps,
        status=[str(Status(int(s))) for s in np.asarray(trace.status)],
        steps=np.asarray(trace.steps),
        stop_step=np.asarray(trace.stop_step),
        metrics={k: np.asarray(v) for k, v in (trace.metrics or {}).items()},
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
    splits = {
        p: {k: np.asarray(v, np.int64) for k, v in s.items()} for p, s in (meta.get("splits") or {}).items()
    }
    return Results(
        frames["lanes"],
        frames["curves"],
        frames["problems"],
        tuple(meta.get("hyperparameters", ())),
        tuple(meta.get("metrics", ())),
        splits,
        _tuning_seeds(meta.get("tuning_seeds")),
    )


def _tuning_seeds(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ResultsError(f"tuning_seeds must be a list of integer seeds, got {value!r}")
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
        raise ResultsError(f"{os.path.join(path, 'manifest.json')} is not a gdjax manifest")
    if manifest.get("status") != "complete":
        raise ResultsError(
            f"{path} is an incomplete run (status {manifest.get('status')!r}): finish it with "
            f"`gdjax run CONFIG --out {path} --resume` first"
        )
    missing = [f for f in ("summary.json", "histories.npz") if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise ResultsError(f"{path} is missing {', '.join(missing)}: not a complete gdjax run folder")
    rows = _read_json(os.path.join(path, "summary.json"))
    try:
        arrays = gdjax_io.read_npz(os.path.join(path, "histories.npz"))
    except gdjax_io.FileFormatError as err:
        raise ResultsError(str(err)) from None
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
    built = _build(units, problems, _provenance(os.path.abspath(path), manifest), _read_splits(path, name_of))
    return dataclasses.replace(built, tuning_seeds=_tuning_seeds(manifest.get("tuning_seeds")))


def _read_splits(path: str, name_of) -> dict[str, dict[str, np.ndarray]]:
    """The held-out splits `gdjax run` wrote to `split.npz` (`<cost>/train`, `<cost>/test`); a folder
    without a split, or written before splits were saved, has none."""
    file = os.path.join(path, "split.npz")
    if not os.path.isfile(file):
        return {}
    try:
        arrays = gdjax_io.read_npz(file)
    except gdjax_io.FileFormatError as err:
        raise ResultsError(str(err)) from None
    splits: dict[str, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
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
