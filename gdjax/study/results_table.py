"""`Results`: what happened in a study, as pandas `lanes` and `curves`, and what can be asked of it
(the best configurations, the comparison statistics, saving to disk).

`results_model` builds and loads it and re-exports it; the columns are declared in `results_schema`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gdjax import io as gdjax_io
from gdjax.study.results_schema import (
    _BLEW_UP,
    CONVENTIONAL_DEFAULTS,
    FORMAT,
    FORMAT_VERSION,
    ResultsError,
    _is_default,
    _nearest,
)
from gdjax.types import Status


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
    # time_to_target and best_statement by their arguments: a report asks for the same targets in
    # several figures, and the command prints the page's verdict
    _cache: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    # ---------------------------------------------------------------------------------- columns
    @property
    def config_columns(self) -> list[str]:
        """What distinguishes two configurations of one optimizer: its hyperparameters and batch size."""
        return [*self.hyperparameters, "batch_size"]

    @property
    def num_lanes(self) -> int:
        return len(self.lanes)

    @property
    def num_optimizers(self) -> int:
        return int(self.lanes["optimizer"].nunique())

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

    def _profile_options(self, variant: str) -> dict:
        """What every profile of these results is given besides its time-to-target table."""
        return dict(
            config=self.config_columns, variant=variant, lanes=self.lanes, tuning_seeds=self.tuning_seeds
        )

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
        return statistics.performance_profile(ttt, taus=taus, **self._profile_options(variant))

    def profile_ratios(self, eps=1e-3, *, unit: str = "epochs", variant: str = "tuned"):
        """The profile's table: `problem`, `optimizer`, `time` (median over seeds of the best
        configuration), `ratio` to the fastest, and the chosen configuration."""
        from gdjax.study import statistics

        ttt = self.time_to_target(eps, unit=unit)
        return statistics.profile_ratios(ttt, **self._profile_options(variant))

    def scores(self, eps=1e-3, *, unit: str = "epochs", variant: str = "tuned", confidence: float = 0.95):
        """AlgoPerf-style scores (area under the profile for tau in [1, 4], / 3) with a bootstrap
        interval over problems: columns `optimizer`, `variant`, `score`, `ci_low`, `ci_high`."""
        from gdjax.study import statistics

        return statistics.score(self.profile_ratios(eps, unit=unit, variant=variant), confidence=confidence)

    def data_profile(self, eps=1e-3, *, unit: str = "epochs", budgets=None, variant: str = "tuned"):
        """Moré-Wild data profile: columns `optimizer`, `variant`, `budget`, `solved`."""
        from gdjax.study import statistics

        ttt = self.time_to_target(eps, unit=unit)
        return statistics.data_profile(ttt, budgets=budgets, **self._profile_options(variant))

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
        `seed`, `per_problem` (one row per problem)."""
        from gdjax.study import statistics

        self._check_column(by)
        options = self._seeds(options)
        return statistics.compare(self.lanes, a, b, config=self.config_columns, by=by, mode=mode, **options)

    def best_statement(self, *, by: str = "final_loss", mode: str = "min", **options) -> str | None:
        """A "best optimizer" sentence only where every paired comparison supports it, else None."""
        return self._statement("best_statement", by, mode, options)

    def verdict(self, *, by: str = "final_loss", mode: str = "min", **options) -> str:
        """`best_statement`'s sentence, or why the comparisons support none (too few differing pairs
        for the test to reach its level, or a comparison that is not significant)."""
        return self._statement("verdict", by, mode, options)

    def _statement(self, name: str, by: str, mode: str, options: dict):
        """`statistics.<name>` of these lanes, once per arguments (the page states it, and the
        command prints it again)."""
        from gdjax.study import statistics

        self._check_column(by)
        options = self._seeds(options)
        key = (name, by, mode, repr(sorted(options.items())))
        if key not in self._cache:
            self._cache[key] = getattr(statistics, name)(
                self.lanes, config=self.config_columns, by=by, mode=mode, **options
            )
        return self._cache[key]

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
