"""What a run checks and builds before anything is computed: gradient checks, units and pre-flight checks.

`run_experiment` (gdjax.study.experiment) calls these in order: the problems are built
(`gdjax.study.problems.build_problems`), the config's units listed (`units`: one sweep per cost and
optimizer), then checked against the data (`check_units`), the host memory (`check_memory`) and
the sweeps themselves (`check_sweeps`: each sweep planned once by `gdjax.sweep.plan_sweep`, the
plan the run then executes), and the gradients checked
(`check_gradients`) - all before a run folder is made.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gdjax import costs, data
from gdjax.gradcheck import check_grad
from gdjax.study import config as config_lib
from gdjax.study.config import ExperimentConfig, OptimizerConfig
from gdjax.study.problems import (
    COSTS,
    Dataset,
    Problem,
    ProblemError,
    build_problem,
    load_reference,
    read_data,
)
from gdjax.study.summary import METRIC_NAMES, SUMMARY_KEYS
from gdjax.sweep import MAX_LANES, NOISE_FOLD, Init, Starts, SweepPlan, check_sweep, plan_sweep
from gdjax.types import GradCheckReport, PyTree
from gdjax.validation import nearest

__all__ = [
    "GradCheckFailed",
    "Unit",
    "check_gradients",
    "check_memory",
    "check_sweeps",
    "check_units",
    "gradcheck_data",
    "gradcheck_examples",
    "gradcheck_subset",
    "gradcheck_text",
    "noised_starts",
    "num_lanes",
    "seed_problems",
    "split_per_seed",
    "sweep_args",
    "unit_start",
    "units",
]


# --------------------------------------------------------------------------------------- problems
def load_data(cfg: ExperimentConfig, d=None, where: str = "data") -> Dataset | None:
    """Loads, splits and standardises data in float64 (default: the study's `[data]`; a suite's
    problem passes its own, with `where` its place in the config); None for test functions."""
    d = cfg.data if d is None else d
    if d is None:
        return None
    try:
        return read_data(d, cfg.seeds[0])
    except ProblemError as err:
        raise cfg.error(f"{where}.{err.key}", str(err)) from None


def _dtype(cfg: ExperimentConfig):
    if cfg.precision == "float64" and not jax.config.jax_enable_x64:
        raise ValueError(
            'precision = "float64" needs float64 enabled: jax.config.update("jax_enable_x64", True) at '
            "start-up (the gdjax command does this for you); gdjax never flips the flag itself"
        )
    return jnp.float64 if cfg.precision == "float64" else jnp.float32


def build_problems(cfg: ExperimentConfig, dataset: Dataset | None = None) -> list[Problem]:
    """One `Problem` per cost of the config (or per problem of a suite), each built by its entry of
    the cost registry (`gdjax.study.problems.COSTS`). The study's `[data]` is loaded once and shared
    (`dataset`, if given, is it); a suite's problem loads its own."""
    dtype = _dtype(cfg)
    if dataset is None and cfg.data is not None and any(c.data is None for c in cfg.costs):
        dataset = load_data(cfg)
    problems = []
    for i, c in enumerate(cfg.costs):
        if cfg.is_suite:
            key = f"problems[{i}]"
        else:
            key = f"cost[{i}]" if len(cfg.costs) > 1 else "cost"
        d = cfg.data_of(c)
        own = dataset if c.data is None else load_data(cfg, c.data, f"{key}.data")
        if own is not None:
            try:
                names = d.features if d.source == "csv" else None
                data.check_representable(own.X, own.y, dtype, source=d.path or d.source, columns=names)
                if own.X_test is not None:
                    data.check_representable(
                        own.X_test, own.y_test, dtype, source=d.path or d.source, columns=names
                    )
            except ValueError as err:
                raise cfg.error("precision", str(err)) from None
        try:
            p = build_problem(c, own, dtype, seed=cfg.seeds[0])
        except ProblemError as err:
            raise cfg.error(f"{key}.{err.key}", str(err)) from None
        for j, ref in enumerate(c.metrics or ()):
            name = ref.rpartition(":")[2].rpartition(".")[2]
            if name in SUMMARY_KEYS and name not in METRIC_NAMES:
                raise cfg.error(
                    f"{key}.metrics[{j}]",
                    f"a metric may not be named {name!r}: a summary column has that name",
                )
        problems.append(p)
    _check_cost_keys(cfg, problems)
    _check_inits(cfg, problems)
    return problems


def split_per_seed(cfg: ExperimentConfig, p: Problem) -> bool:
    """Whether each seed of `p` draws its own held-out split (`[data] split_per_seed = true`)."""
    d = cfg.data_of(p.config)
    return d is not None and d.split_per_seed


def seed_problems(cfg: ExperimentConfig, problems: list[Problem]) -> dict[tuple[str, int], Problem]:
    """`{(label, seed): problem}` for the problems split per seed: the problem on that seed's split
    (its training data, held-out metrics and f*); the first seed's is the problem itself."""
    out = {}
    for p in problems:
        if split_per_seed(cfg, p):
            for seed in cfg.seeds:
                out[(p.label, seed)] = p if seed == cfg.seeds[0] else _seed_problem(cfg, p, seed)
    return out


def _seed_problem(cfg: ExperimentConfig, p: Problem, seed: int) -> Problem:
    # load_data splits with the config's first seed: the same config with `seed` first, and this cost only
    first = (seed, *[s for s in cfg.seeds if s != seed])
    return build_problems(dataclasses.replace(cfg, seeds=first, costs=(p.config,)))[0]


def _check_cost_keys(cfg: ExperimentConfig, problems: list[Problem]) -> None:
    """Every grid key that is not the rule's must be a hyperparameter of every (callable) cost.

    The config reader lets such keys through only when every cost is a callable (it cannot see a
    cost's parameters before importing it); here each cost is loaded, so the key is checked, with the
    nearest name of the rule's and the cost's as a suggestion.
    """
    for i, opt in enumerate(cfg.optimizers):
        for key in opt.cost_keys():
            for j, p in enumerate(problems):
                names = costs.hyperparameters(p.cost)
                if key in names:
                    continue
                where = f"cost[{j}]" if len(problems) > 1 else "cost"
                valid = [*opt.rule_hyperparameters(), *names]
                raise cfg.error(
                    f"optimizers[{i}].grid.{key}",
                    f"unknown hyperparameter {key!r}: not one of rule {opt.rule!r}, nor of the {where} "
                    f"{p.config.callable}{nearest(key, valid)}; valid: {', '.join(valid)} "
                    "(a cost's hyperparameters are its keyword parameters with numeric defaults, "
                    "cost(params, data, l2=0.0))",
                )


SKIP_GRADCHECK = "to run without the check, set `[gradcheck] enabled = false` in the config"


class GradCheckFailed(RuntimeError):
    """The gradient check of a cost failed: nothing was run. `reports` maps cost label -> report."""

    def __init__(self, reports: dict[str, GradCheckReport], text: str | None = None):
        self.reports = reports
        self.text = text if text is not None else gradcheck_text(reports)  # as gradcheck.txt would be
        failed = [k for k, r in reports.items() if not r.ok]
        super().__init__(
            f"gradient check failed for cost {', '.join(map(repr, failed))}: "
            + "; ".join(reports[k].verdict for k in failed)
            + f" ({SKIP_GRADCHECK})"
        )


def check_gradients(cfg: ExperimentConfig, problems: list[Problem]) -> dict[str, GradCheckReport]:
    """`check_grad` of every cost at the points its runs start from, and at random points, on at
    most `[gradcheck] max_examples` of its training examples (`gradcheck_data`).

    The points: the problem's start; with `init_noise`, the noised start of every seed, exactly as
    the sweep's lanes draw them (`noised_starts`); and `gradcheck.num_points - 1` random points.
    A cost that is not differentiable at a point (a ReLU model initialised at zero) gives a
    warning, not a failure. Needs float64 enabled (finite differences in float64); checks in the
    runs' dtype.
    """
    reports = {}
    for p in problems:
        reports[p.label] = check_grad(
            p.cost,
            p.params0,
            gradcheck_data(cfg, p),
            analytic=p.analytic,
            num_points=cfg.gradcheck.num_points,
            key=cfg.seeds[0],
            points=noised_starts(p, cfg.seeds),
        )
    return reports


def noised_starts(p: Problem, seeds) -> PyTree | None:
    """The start of each seed's lanes when the cost has `init_noise` (else None), stacked: each
    leaf plus `init_noise * jax.random.normal(k_i, ...)` in its dtype, with the sweep's keys
    `k_i = jax.random.split(jax.random.fold_in(jax.random.key(seed), NOISE_FOLD), num_leaves)`.
    With `init`, each seed's start `init(gdjax.init_key(seed))`."""
    if p.config.init is not None:
        return _init(p).starts(seeds)
    if not p.config.init_noise:
        return None
    leaves, treedef = jax.tree.flatten(p.params0)
    leaves = [np.asarray(x, jax.dtypes.canonicalize_dtype(np.asarray(x).dtype)) for x in leaves]
    stacked = []
    for seed in seeds:
        keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), NOISE_FOLD), len(leaves))
        stacked.append(
            [
                (
                    x
                    + np.asarray(p.config.init_noise, x.dtype)
                    * np.asarray(jax.random.normal(k, x.shape, x.dtype))
                ).astype(x.dtype)
                for k, x in zip(keys, leaves, strict=True)
            ]
        )
    return treedef.unflatten([np.stack(column) for column in zip(*stacked, strict=True)])


def gradcheck_data(cfg: ExperimentConfig, p: Problem):
    """The data the gradient check of `p` uses: its training data, or `[gradcheck] max_examples`
    of its examples drawn without replacement with the first seed (in their order)."""
    n = gradcheck_examples(cfg, p)
    if n is None:
        return p.data
    X, y = p.data
    rows = np.sort(np.random.default_rng(cfg.seeds[0]).choice(X.shape[0], n, replace=False))
    return np.asarray(X)[rows], np.asarray(y)[rows]


def gradcheck_examples(cfg: ExperimentConfig, p: Problem) -> int | None:
    """How many examples the gradient check of `p` uses when it uses a subset, else None."""
    if p.data is None or p.data[0].shape[0] <= cfg.gradcheck.max_examples:
        return None
    return cfg.gradcheck.max_examples


def gradcheck_subset(cfg: ExperimentConfig, p: Problem) -> str | None:
    """ "4,096 of the 400,000 training examples, drawn with seed 0" when the check of `p` uses a
    subset, else None."""
    n = gradcheck_examples(cfg, p)
    if n is None:
        return None
    return f"{n:,} of the {p.data[0].shape[0]:,} training examples, drawn with seed {cfg.seeds[0]}"


def gradcheck_text(
    reports: dict[str, GradCheckReport], cfg: ExperimentConfig | None = None, problems=()
) -> str:
    """The reports as `gradcheck.txt` holds them; with `cfg` and `problems`, each says which
    examples it was checked on when it was a subset."""
    subsets = {
        p.label: f"checked on {subset} ([gradcheck] max_examples)\n"
        for p in problems
        if (subset := gradcheck_subset(cfg, p)) is not None
    }
    text = "\n\n".join(f"cost {k!r}\n{subsets.get(k, '')}{report}" for k, report in reports.items()) + "\n"
    if not all(r.ok for r in reports.values()):
        text += f"{SKIP_GRADCHECK}\n"
    return text


class Unit(NamedTuple):
    """One sweep of a run: one optimizer on one cost."""

    key: str  # the optimizer's label, or "<cost>.<optimizer>" with several costs
    problem: int  # index into the problems
    optimizer: OptimizerConfig
    num_steps: int
    batch_size: tuple[int | None, ...]


def units(cfg: ExperimentConfig) -> list[Unit]:
    """The sweeps of a config, in the order they run (costs outer, optimizers inner)."""
    out = []
    for i, c in enumerate(cfg.costs):
        for opt in cfg.optimizers:
            key = opt.label if len(cfg.costs) == 1 else f"{c.label}.{opt.label}"
            out.append(
                Unit(
                    key=key,
                    problem=i,
                    optimizer=opt,
                    num_steps=opt.num_steps or cfg.run.num_steps,
                    batch_size=opt.batch_size or cfg.run.batch_size,
                )
            )
    return out


def check_units(cfg: ExperimentConfig, problems: list[Problem], unit_list: list[Unit]) -> None:
    """Checks what needs the data (batch sizes against the number of examples, plots)."""
    for u in unit_list:
        p = problems[u.problem]
        n = None if p.data is None else p.data[0].shape[0]
        for b in u.batch_size:
            if b is None:
                continue
            key = f"optimizers[{cfg.optimizers.index(u.optimizer)}].batch_size"
            if u.optimizer.batch_size is None:
                key = "run.batch_size"
            if n is None:
                raise cfg.error(key, "test functions take no data, so there is nothing to sample")
            if b > n:
                raise cfg.error(key, f"batch_size = {b} is larger than the data ({n} examples)")
    for i, name in enumerate(cfg.outputs.plots):
        key = f"outputs.plots[{i}]"
        if name in ("contour", "contour_grid") and not any(p.num_params == 2 for p in problems):
            sizes = ", ".join(f"{p.label}: {p.num_params}" for p in problems)
            raise cfg.error(key, f"contour plots need a cost of exactly two parameters ({sizes})")
        if name == "fitted_line" and not any(is_line(p) for p in problems):
            raise cfg.error(key, "fitted_line needs a linear model on one feature")
        if name == "accuracy" and not any("accuracy" in (p.metrics or {}) for p in problems):
            losses = " or ".join(f'"{n}"' for n, s in COSTS.items() if "accuracy" in s.figures)
            raise cfg.error(
                key,
                f"accuracy curves need a cost that records accuracy: a classification loss ({losses}), "
                'or a callable cost with metrics = ["file.py:accuracy"]',
            )
    by = cfg.outputs.rank_by
    if by != "final_loss":
        lacking = [p.label for p in problems if by not in (p.metrics or {})]
        if lacking:
            need = (
                "[data] test_fraction"
                if by == "test_loss"
                else 'a classification loss (cost.loss = "logistic" or "cross_entropy")'
            )
            if by == "test_accuracy":
                need += " and [data] test_fraction"
            raise cfg.error(
                "outputs.rank_by",
                f"ranking by {by} needs {need}; cost {', '.join(map(repr, lacking))} has no {by}",
            )
    if cfg.outputs.x_axis == "epochs" and any(p.data is None for p in problems):
        raise cfg.error("outputs.x_axis", "epochs count examples: test functions have no data")


def check_sweeps(
    cfg: ExperimentConfig, problems: list[Problem], unit_list: list[Unit]
) -> dict[str, SweepPlan]:
    """Plans every unit's sweep once (`gdjax.sweep.plan_sweep`: validated, its memory planned against
    the device budget, nothing compiled or run), so a sweep it would refuse is refused before any
    folder is made, and the run executes these plans (`run_plan`) instead of planning again.

    Returns `{unit key: SweepPlan}`; a unit split per seed runs one sweep per seed on its own data,
    so its plan only validates (`check_sweep`)."""
    plans = {}
    for u in unit_list:
        p = problems[u.problem]
        planner = check_sweep if split_per_seed(cfg, p) else plan_sweep
        try:
            plans[u.key] = planner(p.cost, u.optimizer.rule, unit_start(p), p.data, **sweep_args(cfg, u, p))
        except ValueError as err:
            raise ValueError(f"{u.key}: {err}; nothing was written") from err
    return plans


def check_memory(cfg: ExperimentConfig, problems: list[Problem], unit_list: list[Unit]) -> None:
    """Refuses a study whose histories cannot fit in host memory, before any folder is made.

    Every lane of every optimizer keeps, on the host, its recorded iterates (`params_history`: one
    copy of the parameters per `record_every` steps), its loss, gradient-norm and metric histories
    (one entry per evaluation) and its per-step batch losses; the finished run holds them all at
    once to write `histories.npz`. The config reader bounds the loss histories alone; this adds the
    iterates, which scale with the number of parameters only known once the data is loaded (a
    650-parameter classifier recording every step of 10^6 steps needs 2.6 GB per lane). Raises a
    `ConfigError` naming the key to change, with values that fit.
    """
    budget = config_lib.MEMORY_FRACTION * config_lib.host_memory()
    itemsize = 8 if cfg.precision == "float64" else 4
    every = cfg.run.eval_every or 1
    total = 0.0
    worst = None
    for u in unit_list:
        p = problems[u.problem]
        lanes = num_lanes(cfg, u, p)
        num_evals = -(-u.num_steps // every) + 1
        num_records = -(-u.num_steps // cfg.execution.record_every) + 1
        series = 2 + len(p.metrics or {})
        per_lane = itemsize * (
            num_records * p.num_params + series * num_evals + u.num_steps + 4 * p.num_params
        )
        need = lanes * per_lane
        total += need
        if worst is None or need > worst[0]:
            worst = (need, u, p, lanes, num_records)
    if worst is None or total <= budget:
        return
    need, u, p, lanes, num_records = worst
    share = budget * need / total  # what this unit may take, at the study's proportions
    fixed = itemsize * lanes * ((2 + len(p.metrics or {})) * (-(-u.num_steps // every) + 1) + u.num_steps)
    records_fit = int((share - fixed) // (itemsize * lanes * p.num_params)) - 5
    advice = []
    if records_fit >= 2:
        record_every = -(-u.num_steps // (records_fit - 1))
        record_every = -(-record_every // every) * every  # a multiple of eval_every
        table = cfg.key_path("record_every").split(".")[0]
        advice.append(f"[{table}] record_every = {record_every} (iterates every {record_every} steps)")
    lanes_fit = min(int(budget * lanes // total), MAX_LANES)  # and the sweep's own cap
    if lanes_fit >= 1:
        advice.append(f"at most {lanes_fit} lanes for {u.key} (fewer grid values, seeds or batch sizes)")
    steps_fit = int(u.num_steps * budget // total)
    if steps_fit >= 1:
        key = "num_steps"
        advice.append(f"{key} <= {steps_fit}")
    grid_key = f"optimizers[{cfg.optimizers.index(u.optimizer)}].grid"
    key = cfg.key_path("record_every") if records_fit >= 2 else grid_key
    raise cfg.error(
        key,
        f"the study would keep about {config_lib.gb(total)} of histories in memory ({u.key}: "
        f"{lanes} lanes x {num_records} recorded iterates of {p.num_params} parameters), more than the "
        f"{config_lib.gb(budget)} gdjax allows itself here; nothing was written. Use "
        + (" or ".join(advice) if advice else "a smaller study"),
    )


def is_line(p: Problem) -> bool:
    return p.config.model == "linear" and p.dataset is not None and p.dataset.X.shape[1] == 1


def _random(cfg: ExperimentConfig, u: Unit, p: Problem) -> bool:
    if split_per_seed(cfg, p):
        return True
    n = None if p.data is None else p.data[0].shape[0]
    random_start = p.config.init_noise > 0 or p.config.init is not None
    return random_start or any(b is not None and b < n for b in u.batch_size)


def sweep_args(cfg: ExperimentConfig, u: Unit, p: Problem, progress=None) -> dict:
    """The `sweep` arguments of a unit: its grid and [run] settings, and the config's own `Stopping`
    and `Execution` objects (with the progress callback)."""
    batch = list(u.batch_size) if len(u.batch_size) > 1 else u.batch_size[0]
    return dict(
        grid=u.optimizer.sweep_grid(),
        num_steps=u.num_steps,
        seeds=list(cfg.seeds) if _random(cfg, u, p) else None,
        batch_size=batch,
        metrics=p.metrics,
        eval_every=cfg.run.eval_every,
        stopping=cfg.stopping,
        execution=dataclasses.replace(cfg.execution, progress=progress),
    )


def _init(p: Problem) -> Init | None:
    """The problem's start drawn per seed (`[cost] init = "file.py:init"`, `init(key)`), or None."""
    if p.config.init is None:
        return None
    return Init(load_reference(p.config.init), like=p.params0)


def _check_inits(cfg: ExperimentConfig, problems: list[Problem]) -> None:
    """Each `init` loads and returns params shaped like the problem's start (traced, on the first seed)."""
    for i, p in enumerate(problems):
        if p.config.init is None:
            continue
        key = f"problems[{i}]" if cfg.is_suite else (f"cost[{i}]" if len(cfg.costs) > 1 else "cost")
        try:
            _init(p).starts(cfg.seeds[:1])
        except ValueError as err:
            raise cfg.error(f"{key}.init", str(err)) from None


def unit_start(p: Problem):
    """A unit's `params0`: the problem's start, perturbed or drawn per seed when the config asks."""
    if p.config.init is not None:
        return _init(p)
    if p.config.init_noise:
        return Starts(p.params0, init_noise=p.config.init_noise, stacked=False)
    return p.params0


def num_lanes(cfg: ExperimentConfig, u: Unit, p: Problem) -> int:
    """Lanes of a unit: grid points x seeds (when sampled) x batch sizes."""
    seeds = len(cfg.seeds) if _random(cfg, u, p) else 1
    return u.optimizer.num_points() * seeds * len(u.batch_size)
