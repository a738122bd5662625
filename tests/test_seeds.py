"""Seeds drive everything random in a lane (issue 18 item 6): starts drawn by `gdjax.Init(fn)` from the
seed's key, seeds zipped with starts and with configurations, a held-out split per seed, and the tuning
protocol (choose configurations on tuning seeds, report on fresh ones)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import gdjax
import gdjax.study
from gdjax.study import config as config_lib
from gdjax.study import experiment, page, results_model
from gdjax.study import statistics as st
from gdjax.study.config import ConfigError

COST = gdjax.make_cost(gdjax.linear, gdjax.mse)


@pytest.fixture(scope="module")
def data():
    X, y = gdjax.data.synthetic(0, 40, 3, noise=0.3)[:2]
    return X, y


def init_fn(key):
    k1, k2 = jax.random.split(key)
    return {"w": 0.5 * jax.random.normal(k1, (3,)), "b": jax.random.uniform(k2, (), minval=-1.0)}


def _starts(result):
    """Each lane's start: the first recorded iterate."""
    return jax.tree.map(lambda x: np.asarray(x)[:, 0], result.trace.params_history)


# Every sweep below has the same shapes and settings (4 lanes of sgd, 6 steps, batches of 8), so they share
# one compiled program: the module compiles it once.
def _sgd(data, params0, grid=None, **kwargs):
    grid = {"learning_rate": [0.01, 0.05]} if grid is None else grid
    return gdjax.sweep(COST, "sgd", params0, data, grid=grid, num_steps=6, batch_size=8, **kwargs)


@pytest.fixture(scope="module")
def init_sweep(data):
    return _sgd(data, gdjax.Init(init_fn), seeds=[0, 7])


# --- Init: a start per seed ------------------------------------------------------------------------


def test_init_start_is_fn_of_the_documented_key(init_sweep):
    starts = _starts(init_sweep)
    assert [c["seed"] for c in init_sweep.coords] == [0, 7, 0, 7]  # lr 0.01: seeds 0, 7; lr 0.05: ...
    for lane, c in enumerate(init_sweep.coords):
        # the oracle builds the documented key by hand: fold_in(jax.random.key(seed), 2**32 - 2)
        expected = init_fn(jax.random.fold_in(jax.random.key(c["seed"]), 2**32 - 2))
        for name in ("w", "b"):
            np.testing.assert_array_equal(starts[name][lane], np.asarray(expected[name]))
        assert c["start"] is None
    np.testing.assert_array_equal(
        jax.random.key_data(gdjax.init_key(7)),
        jax.random.key_data(jax.random.fold_in(jax.random.key(7), 2**32 - 2)),
    )


def test_init_same_seed_gives_bit_identical_lanes_and_different_seeds_different_starts(data, init_sweep):
    again = _sgd(data, gdjax.Init(init_fn), seeds=[0, 7])
    for a, b in zip(jax.tree.leaves(init_sweep.trace), jax.tree.leaves(again.trace), strict=True):
        np.testing.assert_array_equal(a, b)
    starts = _starts(init_sweep)
    np.testing.assert_array_equal(starts["w"][0], starts["w"][2])  # one seed, one start for every config
    assert not np.allclose(starts["w"][0], starts["w"][1])
    # a seed's start does not depend on which other seeds the sweep runs
    other = _starts(_sgd(data, gdjax.Init(init_fn), seeds=[7, 3]))
    np.testing.assert_array_equal(other["w"][0], starts["w"][1])


def test_init_like_casts_to_the_start_dtype_and_checks_shapes():
    like = {"w": jnp.zeros(3, jnp.float32), "b": jnp.zeros((), jnp.float32)}
    starts = gdjax.Init(init_fn, like=like).starts([2, 3])
    assert starts["w"].dtype == np.float32 and starts["w"].shape == (2, 3)
    np.testing.assert_array_equal(starts["w"][0], np.asarray(init_fn(gdjax.init_key(2))["w"], np.float32))


# --- zipped seeds ------------------------------------------------------------------------------------


def test_zip_grid_pairs_configuration_i_with_seed_i(data):
    rates, seeds = [0.01, 0.02, 0.04, 0.08], [5, 9, 11, 13]
    zipped = _sgd(data, gdjax.init_linear(3), gdjax.Zip(learning_rate=rates, seed=seeds))
    assert [(c["learning_rate"], c["seed"]) for c in zipped.coords] == list(zip(rates, seeds, strict=True))
    assert "seed" not in zipped.hyperparameter_names
    for lane, lr in enumerate(rates):
        # the oracle crosses this rate with every seed (sweep(seeds=...), the crossing code path)
        crossed = _sgd(data, gdjax.init_linear(3), {"learning_rate": [lr]}, seeds=seeds)
        assert [c["seed"] for c in crossed.coords] == seeds
        for other in range(len(seeds)):
            same = np.allclose(zipped.trace.loss_history[lane], crossed.trace.loss_history[other], rtol=1e-12)
            assert same == (other == lane)


def test_starts_zip_seeds_pairs_start_i_with_seed_i(data):
    stack = {"w": jnp.arange(6.0).reshape(2, 3) / 10, "b": jnp.asarray([1.0, 2.0])}
    result = _sgd(data, gdjax.Starts(stack, zip_seeds=True), seeds=[3, 4])
    assert result.num_lanes == 4  # configurations x seeds, not x starts
    starts = _starts(result)
    for lane, c in enumerate(result.coords):
        i = [3, 4].index(c["seed"])
        assert c["start"] == i
        np.testing.assert_array_equal(starts["w"][lane], np.asarray(stack["w"][i]))


def _bad_sweeps(data):
    def run(params0, grid=None, **kw):
        return gdjax.sweep(
            COST, "sgd", params0, data, grid=grid or {"learning_rate": 0.01}, num_steps=2, **kw
        )

    stack = {"w": jnp.zeros((3, 3)), "b": jnp.zeros(3)}
    return {
        "zip length": (
            lambda: run(gdjax.init_linear(3), gdjax.Zip(learning_rate=[0.1, 0.2], seed=[0, 1, 2])),
            "one length",
        ),
        "starts vs seeds": (
            lambda: run(gdjax.Starts(stack, zip_seeds=True), seeds=[0, 1]),
            "3 starts but there are 2 seeds",
        ),
        "zip starts without seeds": (lambda: run(gdjax.Starts(stack, zip_seeds=True)), "pass seeds"),
        "seed not zipped": (lambda: run(gdjax.init_linear(3), {"learning_rate": 0.1, "seed": [0, 1]}), "Zip"),
        "seeds twice": (
            lambda: run(gdjax.init_linear(3), gdjax.Zip(learning_rate=[0.1], seed=[0]), seeds=[0]),
            "give them once",
        ),
        "scalar zipped seed": (
            lambda: run(gdjax.init_linear(3), gdjax.Zip(learning_rate=[0.1], seed=3)),
            "1-D",
        ),
        "init without seeds": (lambda: run(gdjax.Init(init_fn)), "pass seeds"),
        "init wrong shapes": (
            lambda: run(gdjax.Init(lambda k: jnp.zeros(5), like=gdjax.init_linear(3)), seeds=[0]),
            "like= has",
        ),
        "init wrong pytree for the cost": (
            lambda: run(gdjax.Init(lambda k: jnp.zeros(5)), seeds=[0]),
            "cost",
        ),
        "init integers": (lambda: run(gdjax.Init(lambda k: jnp.zeros(3, int)), seeds=[0]), "floating point"),
        "init fails": (
            lambda: run(gdjax.Init(lambda k: jnp.zeros(3) + "x"), seeds=[0]),
            "Init: <lambda>(key)",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_sweeps(None)))  # the table, without its data
def test_bad_seed_input_is_a_one_line_error(data, case):
    call, words = _bad_sweeps(data)[case]
    with pytest.raises(ValueError) as info:
        call()
    assert words in str(info.value) and "\n" not in str(info.value)


# --- configs -------------------------------------------------------------------------------------------

INIT_PY = """
import jax
import jax.numpy as jnp


def init(key):
    return {"w": 0.1 * jax.random.normal(key, (2,)), "b": jnp.zeros(())}


def wrong(key):
    return {"w": jnp.zeros(5), "b": jnp.zeros(())}
"""

STUDY = """
name = "seeds"
precision = "float64"
seeds = [0, 1]

[gradcheck]
enabled = false

[data]
source = "synthetic"
num_examples = 40
num_features = 2
noise = 0.5
seed = 3
test_fraction = 0.25
split_per_seed = true

[cost]
model = "linear"
init = "init.py:init"

[run]
num_steps = 5

[[optimizers]]
rule = "gd"
grid.learning_rate = [0.05, 0.2]

[outputs]
plots = []
tuning_seeds = [0]
"""


def _config(tmp_path, text=STUDY, **replace):
    (tmp_path / "init.py").write_text(INIT_PY)
    for old, new in replace.items():
        old = old.replace("__", " = ")
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "study.toml"
    path.write_text(text)
    return config_lib.load(str(path))


@pytest.mark.parametrize(
    ("swap", "key", "words"),
    [
        ({}, None, None),  # the config as written reads
        ({"test_fraction = 0.25": ""}, "data.split_per_seed", "test_fraction"),
        ({"tuning_seeds = [0]": "tuning_seeds = [4]"}, "outputs.tuning_seeds", "not among the study's seeds"),
        ({"tuning_seeds = [0]": "tuning_seeds = [1, 0]"}, "outputs.tuning_seeds", "no fresh seeds"),
        ({"tuning_seeds = [0]": "tuning_seeds = []"}, "outputs.tuning_seeds", "at least one seed"),
        ({"tuning_seeds = [0]": "tuning_sedes = [0]"}, "outputs.tuning_sedes", "did you mean 'tuning_seeds'"),
        ({"split_per_seed = true": "split_per_sed = true"}, "data.split_per_sed", "did you mean"),
        ({'init = "init.py:init"': 'init = "missing.py:init"'}, "cost.init", "file not found"),
        ({'init = "init.py:init"': 'init = "init.py:init"\ninit_noise = 0.1'}, "cost.init_noise", "init"),
    ],
)
def test_config_keys_are_checked_at_their_line(tmp_path, swap, key, words):
    (tmp_path / "init.py").write_text(INIT_PY)
    text = STUDY
    for old, new in swap.items():
        text = text.replace(old, new)
    if key is None:
        cfg = config_lib.loads(text, base_dir=str(tmp_path))
        assert cfg.outputs.tuning_seeds == (0,) and cfg.data.split_per_seed and cfg.cost.init.endswith("init")
        assert config_lib.loads(cfg.to_toml()) == cfg
        return
    with pytest.raises(ConfigError) as info:
        config_lib.loads(text, base_dir=str(tmp_path))
    assert info.value.key == key and words in info.value.message and info.value.line is not None


def test_callable_cost_takes_init_or_params0_not_both(tmp_path):
    (tmp_path / "init.py").write_text(INIT_PY + "\n\ndef cost(p, data):\n    return (p['w'] ** 2).sum()\n")
    base = 'name = "c"\n[cost]\ncallable = "init.py:cost"\n{start}\n[run]\nnum_steps = 2\n'
    base += '[[optimizers]]\nrule = "gd"\ngrid.learning_rate = 0.1\n'
    cfg = config_lib.loads(base.format(start='init = "init.py:init"'), base_dir=str(tmp_path))
    assert cfg.cost.params0 is None
    with pytest.raises(ConfigError, match="not both"):
        config_lib.loads(base.format(start='init = "init.py:init"\nparams0 = [0.0]'), base_dir=str(tmp_path))


def test_an_init_of_the_wrong_shape_is_refused_at_its_key(tmp_path):
    cfg = _config(tmp_path, **{'init = "init.py:init"': 'init = "init.py:wrong"'})
    with pytest.raises(ConfigError) as info:
        experiment.build_problems(cfg)
    assert info.value.key == "cost.init" and "like= has" in info.value.message


def test_split_per_seed_differs_across_seeds_and_is_reproducible(tmp_path):
    cfg = _config(tmp_path)
    problems = experiment.build_problems(cfg)
    per_seed = experiment.seed_problems(cfg, problems)
    again = experiment.seed_problems(cfg, experiment.build_problems(cfg))
    X_all = gdjax.data.synthetic(3, 40, 2, noise=0.5)[0]
    for seed in cfg.seeds:
        p = per_seed[("linear", seed)]
        np.testing.assert_array_equal(p.dataset.X, again[("linear", seed)].dataset.X)
        # the oracle: the documented split, drawn by NumPy from the seed (10 of 40 held out)
        order = np.random.default_rng(seed).permutation(40)
        np.testing.assert_array_equal(p.dataset.X_raw, X_all[np.sort(order[10:])])
    assert per_seed[("linear", 0)] is problems[0]
    assert not np.array_equal(per_seed[("linear", 0)].dataset.X_raw, per_seed[("linear", 1)].dataset.X_raw)


def test_a_study_with_init_split_per_seed_and_tuning_seeds_runs_end_to_end(tmp_path):
    cfg = _config(tmp_path)
    outcome = experiment.run_experiment(cfg, str(tmp_path / "run"))
    X_all, y_all = gdjax.data.synthetic(3, 40, 2, noise=0.5)[:2]
    result = outcome.results["gd"]
    starts = jax.tree.map(lambda x: np.asarray(x)[:, 0], result.trace.params_history)
    r = gdjax.study.load(outcome.folder)
    assert r.tuning_seeds == (0,) and r.fresh_seeds == [1]
    assert [c["seed"] for c in result.coords] == [0, 1, 0, 1]  # (configuration, seed), as one sweep
    for lane, row in r.lanes.iterrows():
        seed = int(row["seed"])
        # each seed's start is init(init_key(seed)), whatever its configuration
        key = jax.random.fold_in(jax.random.key(seed), 2**32 - 2)
        np.testing.assert_array_equal(starts["w"][lane], 0.1 * np.asarray(jax.random.normal(key, (2,))))
        # each seed's f*: least squares on its own training split (NumPy on the documented split)
        train = np.sort(np.random.default_rng(seed).permutation(40)[10:])
        A = np.column_stack([X_all[train], np.ones(len(train))])
        coef = np.linalg.lstsq(A, y_all[train], rcond=None)[0]
        f_star = np.mean((A @ coef - y_all[train]) ** 2)
        assert row["f_star"] == pytest.approx(f_star, rel=1e-9)
        assert row["suboptimality"] == pytest.approx(row["final_loss"] - f_star, rel=1e-9, abs=1e-12)
    assert r.lanes.groupby("seed")["f_star"].nunique().eq(1).all() and r.lanes["f_star"].nunique() == 2
    # the note the report page puts above its tables (drawing the page's figures takes seconds)
    note = page._protocol(r)
    assert "chosen on the tuning seeds [0]" in note and "fresh seeds [1]" in note


# --- the tuning protocol: choose on tuning seeds, report on fresh ones --------------------------------

# One optimizer, two configurations, four seeds. On every seed lr 1.0 scores 2. lr 0.1 scores 1 on the
# tuning seeds 0, 1 and 5 on the fresh seeds 2, 3: chosen on all seeds (medians 3 vs 2) lr 1.0 wins;
# chosen on seeds 0, 1 lr 0.1 wins, and its honest report (fresh seeds) is 5.
VALUES = {0.1: [1.0, 1.0, 5.0, 5.0], 1.0: [2.0, 2.0, 2.0, 2.0]}


def _lanes(values=VALUES, optimizer="a"):
    rows = [
        {"problem": "p", "optimizer": optimizer, "learning_rate": lr, "seed": s, "final_loss": v}
        for lr, vs in values.items()
        for s, v in enumerate(vs)
    ]
    lanes = pd.DataFrame(rows).assign(batch_size=pd.array([pd.NA] * len(rows), dtype="Int64"))
    return lanes.assign(seed=lanes["seed"].astype("Int64"), status="max_steps")


def _results(lanes):
    lanes = lanes.assign(lane=np.arange(len(lanes)))
    return results_model.Results(lanes, pd.DataFrame(), pd.DataFrame({"problem": ["p"]}), ("learning_rate",))


def test_best_configuration_is_chosen_on_tuning_seeds_and_reported_on_fresh_ones():
    r = _results(_lanes())
    everything = r.best_configurations().iloc[0]
    assert (everything["learning_rate"], everything["median"]) == (1.0, 2.0)
    best = r.with_tuning_seeds([0, 1]).best_configurations().iloc[0]
    assert (best["learning_rate"], best["tuning_median"], best["median"], best["lanes"]) == (0.1, 1.0, 5.0, 2)
    rows = [dict(row, lane=i, steps=5) for i, row in enumerate(_lanes().to_dict("records"))]
    for row in rows:
        row.update(seed=int(row["seed"]), batch_size=None, suboptimality=None)
    (plain,) = experiment.best_configurations(rows)
    (chosen,) = experiment.best_configurations(rows, tuning_seeds=(0, 1))
    assert (plain["learning_rate"], plain["final_loss"]) == (1.0, 2.0)
    assert (chosen["learning_rate"], chosen["final_loss"], chosen["seeds"]) == (0.1, 5.0, 2)
    assert "learning_rate=0.1" in experiment.format_summary(
        rows, tuning_seeds=(0, 1)
    )  # what `gdjax run` prints


def test_profiles_choose_on_tuning_seeds_and_time_the_fresh_seeds():
    ttt = _lanes().rename(columns={"final_loss": "time"}).assign(final_loss=0.0)
    plain = st.profile_ratios(ttt, config=["learning_rate"]).iloc[0]
    tuned = st.profile_ratios(ttt, config=["learning_rate"], tuning_seeds=[0, 1]).iloc[0]
    assert (plain["learning_rate"], plain["time"]) == (1.0, 2.0)
    assert (tuned["learning_rate"], tuned["time"]) == (0.1, 5.0)


def test_compare_uses_the_results_protocol_by_default():
    lanes = pd.concat([_lanes(), _lanes({0.1: [3.0, 3.0, 3.0, 3.0]}, optimizer="b")], ignore_index=True)
    r = _results(lanes).with_tuning_seeds([0, 1])
    row = r.compare("a", "b").iloc[0]
    # a's choice (lr 0.1) on the fresh seeds 2, 3 scores 5 against b's 3: a is worse by 2 on both pairs
    assert (row["median_difference"], row["num_pairs"]) == (2.0, 2)
    every = r.compare("a", "b", tuning_seeds=None).iloc[0]  # a's choice on all seeds: lr 1.0, better by 1
    assert (every["median_difference"], every["num_pairs"]) == (-1.0, 4)


@pytest.mark.parametrize(
    ("seeds", "words"),
    [([9], "not among the seeds"), ([0, 1, 2, 3], "no fresh seeds"), ([], "non-empty"), ("0", "list")],
)
def test_bad_tuning_seeds_are_refused(seeds, words):
    with pytest.raises(results_model.ResultsError, match=words):
        _results(_lanes()).with_tuning_seeds(seeds)
    with pytest.raises(ValueError, match=words):
        st.compare(pd.concat([_lanes(), _lanes(optimizer="b")]), "a", "b", config=[], tuning_seeds=seeds)


def test_the_protocol_survives_save_and_load_and_merging_two_protocols_is_refused(tmp_path):
    r = _results(_lanes()).with_tuning_seeds([0, 1])
    r.save(tmp_path / "saved")
    assert gdjax.study.load(tmp_path / "saved").tuning_seeds == (0, 1)
    with pytest.raises(results_model.ResultsError, match="different tuning seeds"):
        results_model.merge([r, r.with_tuning_seeds([2])])
