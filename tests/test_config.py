"""Configs: every shipped config parses and round-trips; every mistake is one ConfigError naming the
key, its line and (where there is one) the nearest valid name."""

import dataclasses
import pathlib
import tomllib

import pytest

import gdjax
from gdjax.study import config
from gdjax.study.config import ConfigError

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


def _shipped():
    return [pytest.param(lambda p=p: config.load(p), id=p.stem) for p in CONFIGS] + [
        pytest.param(config.load_default, id="default")
    ]


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {
        "lr_regimes",
        "batch_vs_stochastic",
        "optimizers_well",
        "optimizers_ill",
        "decay",
        "house_prices",
        "quadratics",
    } <= names


@pytest.mark.parametrize("load", _shipped())
def test_shipped_config_parses_and_round_trips(load):
    cfg = load()
    assert cfg.optimizers and cfg.costs
    text = cfg.to_toml()
    assert tomllib.loads(text) == cfg.to_dict()
    assert config.loads(text) == cfg
    assert config.from_dict(cfg.to_dict()) == cfg


BASE = """\
name = "demo"
precision = "float64"
seeds = [0, 1]

[data]
source = "house_prices"
standardize = true

[cost]
model = "linear"

[run]
num_steps = 100
batch_size = ["full", 2]

[stopping]
tol = 1e-6

[[optimizers]]
rule = "gd"
grid.learning_rate = { logspace = [0.01, 1.0, 3] }

[[optimizers]]
rule = "momentum"
label = "mom"
[optimizers.grid]
learning_rate = [0.1, 0.2]
momentum = 0.9

[outputs]
plots = ["loss_curves", "lr_sweep"]
"""

# (id, text to replace in BASE, replacement, key in the message, words in the message, the line the
# error must point at: a piece of text on that line of the edited config, or None for no line)
ERRORS = [
    (
        "unknown hyperparameter",
        "learning_rate = [0.1",
        "learnig_rate = [0.1",
        "optimizers[1].grid.learnig_rate",
        "did you mean 'learning_rate'?",
        "learnig_rate = [0.1",
    ),
    (
        "unknown top-level key",
        "seeds = [0, 1]",
        "seed = [0, 1]",
        "seed",
        "did you mean 'seeds'?",
        "seed = [0, 1]",
    ),
    (
        "unknown run key",
        "num_steps = 100",
        "num_steps = 100\nbatch_sise = 2",
        "run.batch_sise",
        "did you mean 'batch_size'?",
        "batch_sise",
    ),
    (
        "eval_every beyond an int32 step count",
        "num_steps = 100",
        "num_steps = 100\neval_every = 3000000000",
        "run.eval_every",
        "must be an integer <= 2147483647, got 3000000000",
        "eval_every = 3000000000",
    ),
    (
        "unknown stopping key",
        "tol = 1e-6",
        "tols = 1e-6",
        "stopping.tols",
        "did you mean 'tol'?",
        "tols = 1e-6",
    ),
    (
        "unknown execution key",
        "[stopping]",
        "[execution]\nrecord_evry = 2\n\n[stopping]",
        "execution.record_evry",
        "unknown key 'record_evry' in [execution] (did you mean 'record_every'?)",
        "record_evry",
    ),
    (
        "stopping key in [execution]",
        "[stopping]",
        "[execution]\npatience = 2\n\n[stopping]",
        "execution.patience",
        "it belongs in [stopping]",
        "patience = 2",
    ),
    (
        "run key in [stopping]",
        "tol = 1e-6",
        "tol = 1e-6\neval_every = 5",
        "stopping.eval_every",
        "it belongs in [run]",
        "eval_every = 5",
    ),
    (
        "new stopping key in [run]",
        "num_steps = 100",
        "num_steps = 100\nmin_delta = 0.1",
        "run.min_delta",
        "it belongs in [stopping]",
        "min_delta",
    ),
    (
        "devices in [execution]",
        "[stopping]",
        "[execution]\ndevices = 2\n\n[stopping]",
        "execution.devices",
        "set it with gdjax.sweep(execution=gdjax.Execution(devices=...)), not in a config",
        "devices = 2",
    ),
    (
        "bad tol",
        "tol = 1e-6",
        "tol = -1e-6",
        "stopping.tol",
        "must be a finite number > 0, got -1e-06",
        "tol =",
    ),
    (
        "tol a boolean",
        "tol = 1e-6",
        "tol = true",
        "stopping.tol",
        "expected a number, got a boolean",
        "tol =",
    ),
    (
        "tol an array",
        "tol = 1e-6",
        "tol = [1e-6]",
        "stopping.tol",
        "expected a number, got an array",
        "tol =",
    ),
    (
        "bad patience",
        "tol = 1e-6",
        "tol = 1e-6\npatience = 0",
        "stopping.patience",
        "must be an integer >= 1, got 0",
        "patience = 0",
    ),
    (
        "bad min_delta",
        "tol = 1e-6",
        "tol = 1e-6\nmin_delta = -0.5",
        "stopping.min_delta",
        "must be >= 0.0, got -0.5",
        "min_delta",
    ),
    (
        "bad divergence_factor",
        "tol = 1e-6",
        "tol = 1e-6\ndivergence_factor = 1",
        "stopping.divergence_factor",
        "must be > 1, got 1.0",
        "divergence_factor",
    ),
    (
        "bad divergence_patience",
        "tol = 1e-6",
        "tol = 1e-6\ndivergence_patience = 2.5",
        "stopping.divergence_patience",
        "must be an integer >= 1, got 2.5",
        "divergence_patience",
    ),
    (
        "bad layout",
        "[stopping]",
        '[execution]\nunroll = 2\nlayout = "gramm"\n\n[stopping]',
        "execution.layout",
        "must be one of ['feature_major', 'as_given', 'gram'], got 'gramm' (did you mean 'gram'?)",
        "layout",
    ),
    (
        "bad unroll",
        "[stopping]",
        "[execution]\nunroll = 0\n\n[stopping]",
        "execution.unroll",
        "got 0",
        "unroll",
    ),
    (
        "bad memory_budget",
        "[stopping]",
        '[execution]\nmemory_budget = "lots"\n\n[stopping]',
        "execution.memory_budget",
        "expected a number, got a string ('lots')",
        "memory_budget",
    ),
    (
        "bad value under [run] (old placement)",
        "num_steps = 100",
        "num_steps = 100\npatience = 0",
        "run.patience",
        "must be an integer >= 1, got 0",
        "patience = 0",
    ),
    (
        "given in [run] and [stopping]",
        "num_steps = 100",
        "num_steps = 100\ntol = 1e-5",
        "stopping.tol",
        "tol is given twice, as run.tol (line 14) and as stopping.tol: keep the one in [stopping] "
        "and remove run.tol",
        "tol = 1e-6",
    ),
    (
        "record_every not a multiple of eval_every",
        'batch_size = ["full", 2]',
        'batch_size = ["full", 2]\neval_every = 10\n\n[execution]\nrecord_every = 15',
        "execution.record_every",
        "record_every = 15 must be a multiple of eval_every = 10",
        "record_every = 15",
    ),
    (
        "misspelt required key",
        "num_steps = 100",
        "num_step = 100",
        "run.num_step",
        "did you mean 'num_steps'?",
        "num_step = 100",
    ),
    (
        "wrong type",
        "num_steps = 100",
        'num_steps = "100"',
        "run.num_steps",
        "expected an integer, got a string ('100')",
        "num_steps",
    ),
    (
        "wrong type bool",
        "standardize = true",
        "standardize = 1",
        "data.standardize",
        "expected true or false",
        "standardize",
    ),
    (
        "bad precision",
        'precision = "float64"',
        'precision = "float16"',
        "precision",
        "unknown precision 'float16'",
        "precision",
    ),
    (
        "missing file",
        'source = "house_prices"',
        'source = "csv"\npath = "no_such_file.csv"',
        "data.path",
        "data file not found",
        "no_such_file.csv",
    ),
    (
        "unknown data set",
        'source = "house_prices"',
        'source = "house_price"',
        "data.source",
        "did you mean 'house_prices'?",
        "house_price",
    ),
    (
        "logspace too short",
        "[0.01, 1.0, 3]",
        "[0.01, 1.0]",
        "optimizers[0].grid.learning_rate.logspace",
        "logspace = [lo, hi, num]",
        "logspace",
    ),
    (
        "logspace exponents",
        "[0.01, 1.0, 3]",
        "[-2, 0, 3]",
        "optimizers[0].grid.learning_rate.logspace",
        "must be > 0",
        "logspace",
    ),
    (
        "logspace count",
        "[0.01, 1.0, 3]",
        "[0.01, 1.0, 2.5]",
        "optimizers[0].grid.learning_rate.logspace",
        "num must be an integer >= 2",
        "logspace",
    ),
    (
        "logspace typo",
        "{ logspace =",
        "{ logspac =",
        "optimizers[0].grid.learning_rate.logspac",
        "did you mean 'logspace'?",
        "logspac",
    ),
    (
        "hyperparameter out of range",
        "momentum = 0.9",
        "momentum = 1.5",
        "optimizers[1].grid.momentum",
        "[0, 1)",
        "momentum = 1.5",
    ),
    (
        "negative learning rate in a list",
        "[0.1, 0.2]",
        "[0.1, -0.2]",
        "optimizers[1].grid.learning_rate[1]",
        "> 0",
        "learning_rate = [0.1, -0.2]",
    ),
    (
        "unknown rule",
        'rule = "momentum"',
        'rule = "momentun"',
        "optimizers[1].rule",
        "did you mean 'momentum'?",
        "momentun",
    ),
    (
        "unknown optax rule",
        'rule = "momentum"',
        'rule = "optax.adamm"',
        "optimizers[1].rule",
        "optax.adamm",
        "optax.adamm",
    ),
    (
        "schedule hyperparameter without schedule",
        "momentum = 0.9",
        "momentum = 0.9\ndecay_rate = 0.5",
        "optimizers[1].grid.decay_rate",
        "belongs to schedule 'inverse_time' / 'exponential_decay'",
        "decay_rate",
    ),
    (
        "unknown schedule",
        'label = "mom"',
        'label = "mom"\nschedule = "inverse_squareroot"',
        "optimizers[1].schedule",
        "did you mean 'inverse_sqrt'?",
        "inverse_squareroot",
    ),
    (
        "zero batch size",
        'batch_size = ["full", 2]',
        'batch_size = ["full", 0]',
        "run.batch_size[1]",
        "must be an integer >= 1",
        "batch_size",
    ),
    (
        "batch size word",
        'batch_size = ["full", 2]',
        'batch_size = "all"',
        "run.batch_size",
        '"full"',
        "batch_size",
    ),
    (
        "empty grid axis",
        "[0.1, 0.2]",
        "[]",
        "optimizers[1].grid.learning_rate",
        "empty array",
        "learning_rate = []",
    ),
    (
        "duplicate labels",
        'label = "mom"',
        'label = "gd"',
        "optimizers[1].label",
        "two optimizers are labelled 'gd'",
        'label = "gd"',
    ),
    ("repeated seeds", "seeds = [0, 1]", "seeds = [1, 1]", "seeds", "seeds repeat", "seeds = [1, 1]"),
    ("unknown plot", '"lr_sweep"]', '"lr_swep"]', "outputs.plots[1]", "did you mean 'lr_sweep'?", "plots"),
    (
        "model and function",
        'model = "linear"',
        'model = "linear"\nfunction = "quadratic"',
        "cost",
        "exactly one of 'model'",
        "[cost]",
    ),
    (
        "test function with data",
        'model = "linear"',
        'function = "quadratic"',
        "data",
        "test functions take no data",
        "[data]",
    ),
    (
        "polynomial without degree",
        'model = "linear"',
        'model = "polynomial"',
        "cost.degree",
        "missing required key 'degree'",
        "[cost]",
    ),
    (
        "no optimizers",
        "[[optimizers]]",
        "[[optimizer]]",
        "optimizer",
        "did you mean 'optimizers'?",
        "[[optimizer]]",
    ),
    ("invalid TOML", "tol = 1e-6", "tol = [1e-6", None, "not valid TOML", "[[optimizers]]"),
]


@pytest.mark.parametrize(
    ("old", "new", "key", "words", "line_text"),
    [pytest.param(*row[1:], id=row[0]) for row in ERRORS],
)
def test_config_errors(old, new, key, words, line_text):
    assert old in BASE
    text = BASE.replace(old, new, 1)
    with pytest.raises(ConfigError) as info:
        config.loads(text, source="demo.toml")
    err = info.value
    message = str(err)
    assert words in message
    assert err.key == key
    if key is not None:
        assert f": {key}: " in message
    if line_text is not None:
        lines = text.splitlines()
        assert err.line is not None
        assert line_text in lines[err.line - 1], (err.line, lines[err.line - 1])
        assert message.startswith(f"demo.toml:{err.line}: ")
    assert isinstance(err, ValueError)
    assert "\n" not in message


STOPPING_AND_EXECUTION = """
[stopping]
tol = 1e-6
grad_tol = 1e-9
patience = 5
min_delta = 1e-4
divergence_factor = 50
divergence_patience = 7

[execution]
record_every = 4
unroll = 2
layout = "as_given"
chunk_size = 3
memory_budget = 1e9
"""


def test_stopping_and_execution_tables_are_the_core_objects():
    text = BASE.replace("\n[stopping]\ntol = 1e-6\n", STOPPING_AND_EXECUTION)
    cfg = config.loads(text)
    assert cfg.stopping == gdjax.Stopping(
        tol=1e-6, grad_tol=1e-9, patience=5, min_delta=1e-4, divergence_factor=50.0, divergence_patience=7
    )
    assert cfg.execution == gdjax.Execution(
        record_every=4, unroll=2, layout="as_given", chunk_size=3, memory_budget=1e9
    )
    assert isinstance(cfg.stopping.divergence_factor, float)  # TOML's 50 is the float the object holds
    assert cfg.legacy_keys == frozenset() and cfg.key_path("record_every") == "execution.record_every"
    # The resolved dump writes both tables key for key, and reads back equal.
    d = cfg.to_dict()
    assert d["stopping"] == dataclasses.asdict(cfg.stopping)
    assert d["execution"] == {
        "record_every": 4,
        "unroll": 2,
        "layout": "as_given",
        "chunk_size": 3,
        "memory_budget": 1e9,
    }
    assert set(d["run"]) == {"num_steps", "batch_size"}
    assert config.loads(cfg.to_toml()) == cfg and config.from_dict(d) == cfg


def test_defaults_of_the_option_tables():
    cfg = config.loads(BASE.replace("\n[stopping]\ntol = 1e-6\n", ""))
    assert cfg.stopping == gdjax.Stopping()
    assert cfg.execution == gdjax.Execution(record_every=1)  # every evaluation (here: every step)
    cfg = config.loads(BASE.replace("num_steps = 100", "num_steps = 100\neval_every = 10"))
    assert cfg.execution.record_every == 10


def test_stopping_and_execution_keys_under_run_still_work():
    # Configs written before [stopping] and [execution] existed put these keys under [run].
    old = BASE.replace("\n[stopping]\ntol = 1e-6\n", "").replace(
        "num_steps = 100",
        "num_steps = 100\ntol = 1e-6\ngrad_tol = 1e-9\npatience = 5\ndivergence_factor = 50\n"
        "record_every = 4\nchunk_size = 3",
    )
    new = BASE.replace(
        "tol = 1e-6\n",
        "tol = 1e-6\ngrad_tol = 1e-9\npatience = 5\ndivergence_factor = 50.0\n\n"
        "[execution]\nrecord_every = 4\nchunk_size = 3\n",
    )
    a, b = config.loads(old), config.loads(new)
    assert a == b
    assert a.stopping == gdjax.Stopping(tol=1e-6, grad_tol=1e-9, patience=5, divergence_factor=50.0)
    assert a.execution == gdjax.Execution(record_every=4, chunk_size=3)
    assert a.legacy_keys == {"tol", "grad_tol", "patience", "divergence_factor", "record_every", "chunk_size"}
    assert a.key_path("record_every") == "run.record_every" and b.key_path("tol") == "stopping.tol"
    # Its resolved dump is in the new layout.
    assert "stopping" in a.to_dict() and "tol" not in a.to_dict()["run"]
    assert config.loads(a.to_toml()) == a
    # Mixed: some keys in [run], the others in the new tables.
    mixed = BASE.replace("num_steps = 100", "num_steps = 100\nrecord_every = 4")
    assert config.loads(mixed).execution.record_every == 4


def test_empty_optimizers_is_an_error():
    text = BASE[: BASE.index("[[optimizers]]")].replace('name = "demo"', 'name = "demo"\noptimizers = []')
    with pytest.raises(ConfigError, match="needs at least one \\[\\[optimizers\\]\\] entry"):
        config.loads(text)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.toml")


def test_line_numbers_point_into_the_right_array_element():
    text = BASE.replace("momentum = 0.9", "momentum = 0.9\nb1 = 0.5")
    with pytest.raises(ConfigError) as info:
        config.loads(text)
    assert info.value.key == "optimizers[1].grid.b1"
    assert text.splitlines()[info.value.line - 1] == "b1 = 0.5"


def test_relative_data_path_is_taken_from_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    folder.mkdir()
    (folder / "houses.csv").write_text("bedrooms,price\n1,80\n2,170\n3,100\n3,220\n4,200\n4,270\n5,500\n")
    cfg_file = folder / "study.toml"
    cfg_file.write_text(
        BASE.replace(
            'source = "house_prices"',
            'source = "csv"\npath = "houses.csv"\ntarget = "price"\nfeatures = ["bedrooms"]',
        )
    )
    monkeypatch.chdir(tmp_path)
    cfg = config.load(cfg_file)
    assert cfg.data.path == str(folder / "houses.csv")
    assert cfg.data.features == ("bedrooms",)
    # The resolved dump has the absolute path, so it loads from anywhere.
    assert config.loads(cfg.to_toml()) == cfg


def test_defaults_are_filled_in():
    cfg = config.loads(BASE)
    assert cfg.stopping == gdjax.Stopping(tol=1e-6) and cfg.stopping.divergence_factor == 100.0
    assert cfg.run.batch_size == (None, 2)
    assert cfg.gradcheck == config.GradcheckConfig(enabled=True, num_points=3)
    assert cfg.optimizers[0].label == "gd"
    assert cfg.optimizers[0].schedule == "constant"
    assert cfg.optimizers[0].axes() == {"learning_rate": (0.01, 0.1, 1.0)}
    assert cfg.optimizers[1].fixed() == {"momentum": 0.9}
    assert cfg.optimizers[1].num_points() == 2


@pytest.mark.parametrize(
    ("spec", "values"),
    [
        ("{ logspace = [0.001, 1.0, 4] }", (0.001, 0.01, 0.1, 1.0)),
        ("{ linspace = [0.0, 1.0, 3] }", (0.0, 0.5, 1.0)),
        ("[0.5, 0.25]", (0.5, 0.25)),
        ("0.3", 0.3),
    ],
)
def test_grid_shorthands(spec, values):
    text = BASE.replace("{ logspace = [0.01, 1.0, 3] }", spec)
    if spec.startswith("{ linspace"):
        text = text.replace('rule = "gd"', 'rule = "gd"\nlabel = "gd"').replace(
            "grid.learning_rate = { linspace", "grid.learning_rate = 0.1\ngrid.decay_rate = { linspace"
        )
        text = text.replace('label = "gd"', 'label = "gd"\nschedule = "inverse_time"')
        assert dict(config.loads(text).optimizers[0].grid)["decay_rate"] == values
        return
    assert dict(config.loads(text).optimizers[0].grid)["learning_rate"] == values


def test_several_costs():
    text = """
name = "two"
[[cost]]
function = "quadratic"
start = [10.0]
[[cost]]
function = "ill_conditioned_quadratic"
condition_number = 100.0
dim = 2
[run]
num_steps = 10
[[optimizers]]
rule = "gd"
grid.learning_rate = 0.1
"""
    cfg = config.loads(text)
    assert [c.label for c in cfg.costs] == ["quadratic", "ill_conditioned_quadratic"]
    assert cfg.costs[1].start == (1.0, 1.0)
    assert config.loads(cfg.to_toml()) == cfg


def test_dumps_writes_the_toml_subset():
    values = {
        "name": 'a "quoted" name',
        "x": 1e-6,
        "big": float("inf"),
        "flags": [True, False],
        "table": {"key with space": 1, "nested": {"y": [1, 2]}},
        "items": [{"a": 1}, {"a": 2, "sub": {"b": "c"}}],
    }
    assert tomllib.loads(config.dumps(values)) == values


def test_divergence_detection_turns_off_with_false_and_round_trips():
    """TOML has no null: `divergence_factor = false` is `Stopping(divergence_factor=None)`."""
    cfg = config.loads(BASE.replace("tol = 1e-6", "tol = 1e-6\ndivergence_factor = false"))
    assert cfg.stopping.divergence_factor is None
    text = cfg.to_toml()
    assert "divergence_factor = false" in text
    assert config.loads(text) == cfg
    assert config.loads(BASE).stopping.divergence_factor == gdjax.Stopping().divergence_factor
    with pytest.raises(ConfigError, match="or false to turn it off"):
        config.loads(BASE.replace("tol = 1e-6", "tol = 1e-6\ndivergence_factor = true"))


# --- an outside audit of suites and config checks ---------------------------------------------------
def test_a_single_grid_value_and_a_search_of_the_same_key_are_refused():
    """The search's points replaced the grid's value silently (0.1 was never run)."""
    text = (
        'name = "s"\n[data]\nsource = "line"\n[cost]\nmodel = "linear"\nloss = "mse"\n[run]\nnum_steps = 5\n'
        '[[optimizers]]\nrule = "gd"\ngrid.learning_rate = 0.1\n'
        'search = { points = 5, seed = 3, learning_rate = [0.0001, 1.0, "log"] }\n'
    )
    with pytest.raises(ConfigError, match="learning_rate is a grid axis too: give it in grid or in search"):
        config.loads(text)


def test_memory_advice_never_exceeds_the_sweeps_own_lane_cap():
    from gdjax.sweep import MAX_LANES

    text = (
        'name = "m"\n[data]\nsource = "line"\n[cost]\nmodel = "linear"\nloss = "mse"\n[run]\nnum_steps = 10\n'
        '[[optimizers]]\nrule = "momentum"\ngrid.learning_rate = { logspace = [1e-4, 1.0, 99999] }\n'
        "grid.momentum = { linspace = [0.0, 0.9, 99999] }\n"
    )
    with pytest.raises(ConfigError, match=rf"use at most {MAX_LANES} lanes"):
        config.loads(text)
