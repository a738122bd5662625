"""The study face of gdjax: what a person touches, on top of the core (which never imports it).

Modules, each importing only the core and the modules above it in this list:

| module | owns |
|---|---|
| `usercode` | users' own functions named by a config (`"file.py:name"`), imported and checked abstractly |
| `datasets` | a config's data table read, relabelled, split and standardised (`Dataset`) |
| `problems` | the cost registry (`COSTS`) and the `Problem`s its entries build |
| `tomltext` | TOML text: the key-to-line map messages cite, and the writer (`dumps`) |
| `configbase` | `ConfigError`, the names a config may use, the frozen dataclasses, typed table reading |
| `configcosts` | the config's `[data]`, `[cost]` and `[[problems]]` tables (choices from `COSTS`) |
| `configgrids` | the config's `[[optimizers]]` tables: rules, schedules, grids, search |
| `config` | TOML configs read into frozen dataclasses, validated once at the edge |
| `palette` | the colour of each optimizer, the same in every figure |
| `runfolder` | the run folder: ownership marker, lock, parts, PARTIAL marker, interrupts |
| `summary` | summary rows: configurations, the best of each optimizer, the printed table |
| `preflight` | a config's problems built, its units (one sweep each) and the checks before anything runs |
| `parts` | what a unit produced: `UnitResult`, its part on disk, the merged summary and histories |
| `provenance` | a run's manifest entries: time, git commit, versions and devices, each problem's facts |
| `experiment` | orchestration: a config's units run as sweeps and written to a run folder, read back |
| `statbase` | what the statistics share: conventions, checks at the edge, seeded bootstraps |
| `profiles` | time to a target, performance and data profiles, AlgoPerf's score |
| `statistics` | comparisons on results: tuning budgets, uncertainty, paired tests; re-exports `profiles` |
| `results_schema` | the results schema (`LANE_COLUMNS`, `CURVE_COLUMNS`); how a unit becomes rows |
| `results_table` | `Results` (pandas `lanes` and `curves`): best configurations, statistics, save |
| `results_model` | the ways in: `results(sweep_result)`, `load`, `merge`; re-exports the two above |
| `figures` | the registered figures of a comparison, drawn from `Results` |
| `plotstyle` | what the plots share: status styles and colours, labels, log axes, legends, `save` |
| `curveplots` | loss and metric curves of runs, traces and sweeps |
| `sweepplots` | final loss against learning rate |
| `landscapeplots` | figures in parameter space: contours with trajectories, fitted lines |
| `plots` | matplotlib figures of traces and sweeps; re-exports the four above |
| `page` | the self-contained HTML report page |
| `report` | the figures of a finished run |
| `drawing` | the report page's figures drawn in a second process while `gdjax run` draws its plots |
| `cli` | the `gdjax` command |
| `command` | its installed entry point: signal handlers before JAX starts, then `cli` |
"""

__all__ = ["Results", "load", "results"]


def __getattr__(name: str):
    # `gdjax.study.load(path)` and `gdjax.study.results(sweep_result)` without importing pandas until
    # they are used: the command's start-up does not pay for it.
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("gdjax.study.results_model"), name)
    raise AttributeError(f"module 'gdjax.study' has no attribute {name!r}")
