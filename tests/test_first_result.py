"""Time to first result: the persistent compilation cache, a plain call without eager device work, and
the one-loop program (a shorter last interval joins the loop of the full ones). Speed itself is
measured by `experiments/bench.py --only-first-call`, not asserted here."""

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from helpers import count_compilations, rtol

import gdjax
from gdjax import loop, rules
from gdjax.study import config, experiment, preflight, programs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A child process runs a tiny sweep and reports what JAX's cache did (JAX's own monitoring events,
# not timings): `hits` counts executables loaded from the persistent cache.
CHILD = textwrap.dedent(
    """
    import json, sys
    import jax
    from jax import monitoring
    events = []
    monitoring.register_event_listener(lambda name, **kw: events.append(name))
    import gdjax
    assert jax.config.jax_compilation_cache_dir is None  # importing changes no JAX setting
    if sys.argv[1] == "call":
        gdjax.enable_compile_cache(sys.argv[2])
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    result = gdjax.sweep(cost, "sgd", gdjax.init_linear(1), (X, y), grid={"learning_rate": [0.01, 0.02]},
                         num_steps=7)
    print(json.dumps({"hits": events.count("/jax/compilation_cache/cache_hits"),
                      "folder": jax.config.jax_compilation_cache_dir,
                      "loss": result.trace.loss_history[:, -1].tolist()}))
    """
)


def _child(mode: str, folder, env_value=None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GDJAX_COMPILE_CACHE"}
    if env_value is not None:
        env["GDJAX_COMPILE_CACHE"] = env_value
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(folder)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["call", "env"])
def test_a_second_process_loads_the_programs_from_the_cache(tmp_path, mode):
    folder = tmp_path / "cache"
    env_value = str(folder) if mode == "env" else "off"
    first = _child(mode, folder, env_value)
    assert first["folder"] == str(folder) and first["hits"] == 0
    assert any(folder.iterdir())  # the compiled programs were written
    second = _child(mode, folder, env_value)
    assert second["hits"] >= 1  # ...and loaded, not compiled
    assert second["loss"] == first["loss"]  # the loaded program computes the same bits


def test_the_cache_stays_off_unless_asked(tmp_path):
    out = _child("none", tmp_path / "unused", env_value="off")
    assert out["folder"] is None and out["hits"] == 0
    assert not (tmp_path / "unused").exists()


def test_a_cache_folder_that_cannot_be_made_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="cannot use .* as the compilation cache"):
        gdjax.enable_compile_cache(blocker / "cache")


@pytest.mark.parametrize(
    ("env_value", "want"), [(None, "{xdg}/gdjax/jax"), ("off", "None"), ("{tmp}/mine", "{tmp}/mine")]
)
def test_the_command_turns_the_cache_on_unless_told_otherwise(tmp_path, env_value, want):
    """The command's switch is the Python API's (`compile_cache.from_environment`), on by default."""
    xdg = tmp_path / "xdg"
    env = {k: v for k, v in os.environ.items() if k != "GDJAX_COMPILE_CACHE"}
    env.update(XDG_CACHE_HOME=str(xdg), PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
    if env_value is not None:
        env["GDJAX_COMPILE_CACHE"] = env_value.format(tmp=tmp_path)
    code = (
        "import jax; from gdjax.study import cli; cli._use_compile_cache(); "
        "print(jax.config.jax_compilation_cache_dir)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == want.format(xdg=xdg, tmp=tmp_path)


# ------------------------------------------------------------------------------- a plain call
def test_init_linear_builds_host_arrays_of_the_default_float_dtype():
    params = gdjax.init_linear(3)
    want = jax.dtypes.canonicalize_dtype(float)
    assert all(type(x) is np.ndarray and x.dtype == want for x in params.values())
    assert params["w"].shape == (3,) and params["b"].shape == ()
    softmax = gdjax.init_linear(3, np.float32, num_outputs=4)
    assert softmax["w"].shape == (3, 4) and softmax["b"].dtype == np.float32
    assert not any(np.any(x) for x in (*params.values(), *softmax.values()))


def test_a_first_minibatch_call_on_host_data_compiles_one_program():
    """The feature-major copy of small host data is made by NumPy, not by an XLA transpose compiled on a
    process's first run; the numbers equal those of device data (whose copy XLA transposes)."""
    shape = (2011, 29)  # no other test's shape, so nothing is compiled yet; 228 KiB, above the old 64 KiB
    rng = np.random.default_rng(3)
    X = rng.normal(size=shape).astype(np.float32)
    y = (X @ rng.normal(size=shape[1]) > 0).astype(np.float32)
    cost = gdjax.make_cost(gdjax.linear, gdjax.logistic)
    kwargs = dict(num_steps=20, batch_size=16, eval_every=5)
    with count_compilations() as compiled:
        host = gdjax.run(
            cost, rules.adam(0.01), gdjax.init_linear(shape[1], np.float32), (X, y), key=2, **kwargs
        )
    assert compiled.count == 1
    with count_compilations() as compiled:
        swept = gdjax.sweep(cost, "adam", gdjax.init_linear(shape[1], np.float32), (X, y),
                            grid={"learning_rate": [0.01, 0.02]}, seeds=[2], **kwargs)  # fmt: skip
    assert compiled.count == 1
    device = gdjax.run(
        cost,
        rules.adam(0.01),
        gdjax.init_linear(shape[1], np.float32),
        jax.device_put((X, y)),
        key=2,
        **kwargs,
    )
    assert _same_bits(host, device)
    # A lane is the run alone up to the order of vmapped sums (design.md).
    np.testing.assert_allclose(swept.trace.loss_history[0], host.loss_history, rtol=rtol(np.float32))


def test_lane_varying_keeps_the_values_and_is_batched_under_vmap():
    """The loop carries of a sweep start batched (so vmap batches each loop body once) with unchanged
    values, whatever the lane's reference value is (NaN included)."""
    tree = {"count": np.int32(3), "buffer": np.arange(4.0), "flag": np.bool_(True)}
    refs = np.array([0.5, np.nan, np.inf])
    out = jax.vmap(lambda r: loop._lane_varying(tree, r))(refs)
    for name, x in tree.items():
        np.testing.assert_array_equal(out[name], np.broadcast_to(x, (3, *np.shape(x))))
        assert out[name].dtype == np.asarray(x).dtype
    # Batched inside the vmap, not only broadcast on the way out: an unbatched output may leave with
    # out_axes=None, a batched one may not.
    jax.vmap(lambda r: tree, out_axes=None)(refs)
    with pytest.raises(ValueError, match="out_axes"):
        jax.vmap(lambda r: loop._lane_varying(tree, r), out_axes=None)(refs)
    alone = loop._lane_varying(tree, np.nan)
    assert all(np.array_equal(alone[k], v) for k, v in tree.items())


def test_a_factory_called_again_shares_its_spec_and_update():
    a, b = rules.adam(0.1), rules.adam(0.2, b1=0.5)
    assert a.spec is b.spec and a.update == b.update
    assert rules.adam(0.1, nesterov=True).spec != a.spec  # a static option is another program
    assert rules.rmsprop(0.1, momentum=0.9).spec != rules.rmsprop(0.1).spec  # another state


def _plain(params0, data, learning_rate=0.01):
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    return gdjax.run(cost, rules.sgd(learning_rate), params0, data, num_steps=10)


def _same_bits(a: gdjax.Trace, b: gdjax.Trace) -> bool:
    leaves = [jax.tree.leaves(t._replace(evaluated_at=None)) for t in (a, b)]
    return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in zip(*leaves, strict=True))


def test_a_repeated_call_gives_the_same_bits_and_checks_its_values_again():
    """A second call with the same structure skips planning; its values are still checked (host arrays
    each time, by content), so a NaN or an array changed in place is seen."""
    X, y = gdjax.data.house_prices()
    loop._PLANS.clear()
    first = _plain(gdjax.init_linear(1), (X, y))
    again = _plain(gdjax.init_linear(1), (X.copy(), y.copy()))
    assert len(loop._PLANS) == 1 and _same_bits(first, again)
    bad = X.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"data\[0\] contains a non-finite value \(nan\) at index \(3, 0\)"):
        _plain(gdjax.init_linear(1), (bad, y))
    params = gdjax.init_linear(1)
    params["w"][0] = np.inf
    with pytest.raises(ValueError, match=r"params\['w'\] contains non-finite values"):
        _plain(params, (X, y))
    with pytest.raises(ValueError, match="non-finite"):  # a device array never checked before
        _plain(gdjax.init_linear(1), (jax.numpy.asarray(bad), y))
    # Changed in place: the planned call sees the new values (oracle: the full path, plans cleared).
    moved = X.copy()
    _plain(gdjax.init_linear(1), (moved, y))
    moved *= 2.0
    planned = _plain(gdjax.init_linear(1), (moved, y))
    loop._PLANS.clear()
    assert _same_bits(planned, _plain(gdjax.init_linear(1), (moved, y)))
    assert not _same_bits(planned, first)
    # A new hyperparameter value reuses the plan and the program, with its own result.
    faster = _plain(gdjax.init_linear(1), (X, y), learning_rate=0.02)
    assert len(loop._PLANS) == 1 and not _same_bits(faster, first)


def _bench():
    spec = importlib.util.spec_from_file_location(
        "gdjax_bench", os.path.join(ROOT, "experiments", "bench.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.parametrize(("eval_every", "extra"), [(10_000, 6), (None, 15)])
def test_the_step_loop_runs_few_kernels_beyond_the_bare_scan(eval_every, extra):
    """Structure, not speed: the optimized HLO's step loop of a tiny run holds at most `extra` kernels
    more than the bare `jit(scan)` of the same math (13 and 22 against 7 when written: the count must
    not grow; packing the bookkeeping into vectors cut it to 12 and 15 but slowed a 4096-lane sweep
    1.3x and no step got faster, so it was taken out)."""
    bench = _bench()
    X, y = (a.astype(np.float32) for a in gdjax.data.house_prices())
    p0 = gdjax.init_linear(1, np.float32)
    T = 20_000

    @jax.jit
    def bare(w, b):
        def body(c, _):
            w, b = c
            r = w @ X.T + b - y
            return (w - 0.01 * 2 * (X.T @ r) / 7, b - 0.01 * 2 * jax.numpy.mean(r)), jax.numpy.mean(r * r)

        return jax.lax.scan(body, (w, b), None, length=T)

    (bare_loop,) = bench.loop_body_kernels(bare.lower(p0["w"], p0["b"]).compile().as_text())
    text = bench._compiled_run_text(
        bench.COST, rules.sgd(0.01), p0, (X, y), num_steps=T, eval_every=eval_every
    )
    step_loop = bench.loop_body_kernels(text)[0]
    assert step_loop["kernels"] <= bare_loop["kernels"] + extra, (step_loop, bare_loop)


# --------------------------------------------------------------------------- the one-loop program
@pytest.mark.parametrize("batch_size", [None, 3])
def test_a_shorter_last_interval_follows_the_same_trajectory(batch_size):
    """num_steps = 23 with eval_every = 5 runs its last 3 steps in the loop of the full intervals; the
    oracle is the same run evaluated at every step (a plain scan), read at the evaluated steps."""
    X, y = gdjax.data.house_prices()
    cost = gdjax.make_cost(gdjax.linear, gdjax.mse)
    kw = dict(num_steps=23, batch_size=batch_size, key=0)
    ragged = gdjax.run(
        cost, rules.momentum(0.01, momentum=0.5), gdjax.init_linear(1), (X, y), eval_every=5, **kw
    )
    every = gdjax.run(
        cost, rules.momentum(0.01, momentum=0.5), gdjax.init_linear(1), (X, y), eval_every=1, **kw
    )
    np.testing.assert_array_equal(ragged.eval_steps, [0, 5, 10, 15, 20, 23])
    np.testing.assert_allclose(ragged.loss_history, every.loss_history[ragged.eval_steps], rtol=1e-12)
    np.testing.assert_allclose(ragged.batch_loss_history, every.batch_loss_history, rtol=1e-12)
    for leaf, want in zip(jax.tree.leaves(ragged.params), jax.tree.leaves(every.params), strict=True):
        np.testing.assert_allclose(leaf, want, rtol=1e-12)
    assert int(ragged.steps) == 23 and ragged.batch_loss_history.shape == (23,)


# ------------------------------------------------------------------- a study's programs, compiled once
# Two sgd units of the same shapes (two learning rates each) share one program; adam is another.
SHARED_STUDY = """
name = "shared"
precision = "float64"
seeds = [0, 1]

[data]
source = "house_prices"
standardize = true

[cost]
model = "linear"
init_noise = 0.1

[run]
num_steps = 20
batch_size = 2

[gradcheck]
enabled = false

[[optimizers]]
rule = "sgd"
label = "small"
grid.learning_rate = [0.01, 0.02]

[[optimizers]]
rule = "sgd"
label = "large"
grid.learning_rate = [0.1, 0.2]

[[optimizers]]
rule = "adam"
grid.learning_rate = [0.1, 0.2]

[outputs]
plots = []
"""


# The same units on the full batch, from one start: smaller programs, quicker to compile.
FULL_BATCH = SHARED_STUDY.replace("init_noise = 0.1\n", "").replace("batch_size = 2\n", "")


def _fresh_programs():
    """Forgets every program compiled so far in this process (JAX's and the sweep's own cache)."""
    jax.clear_caches()
    importlib.import_module("gdjax.sweep")._COMPILED.clear()


def test_planning_a_study_compiles_nothing():
    """`check_sweep` (seeds, init_noise, mini-batches) and the memory check do no device work: JAX
    reports no compilation, not even of the small programs that making a PRNG key or a noise draw needs.
    The study's own plans (`check_sweeps`, `plan_sweep`) are the ones its run executes, so they draw
    `init_noise`'s perturbations (small programs the run would compile anyway), and no sweep program."""
    cfg = config.loads(SHARED_STUDY)
    problems = preflight.build_problems(cfg)
    unit_list = preflight.units(cfg)
    calls = [c for u in unit_list for c in experiment.unit_sweeps(cfg, u, problems[u.problem])]
    _fresh_programs()
    with count_compilations() as compiled:
        preflight.check_memory(cfg, problems, unit_list)
        for args, kwargs in calls:
            gdjax.check_sweep(*args, **kwargs)
    assert compiled.count == 0
    with count_compilations() as compiled:
        preflight.check_sweeps(cfg, problems, unit_list)
    assert compiled.of("jit(_lanes_program)") == 0
    full = config.loads(FULL_BATCH)  # no init_noise: nothing to draw, nothing compiled
    problems, unit_list = preflight.build_problems(full), preflight.units(full)
    with count_compilations() as compiled:
        preflight.check_memory(full, problems, unit_list)
        preflight.check_sweeps(full, problems, unit_list)
    assert compiled.count == 0


def _run_study(folder, threads):
    _fresh_programs()
    with count_compilations() as compiled:
        out = experiment.run_experiment(config.loads(FULL_BATCH), str(folder), compile_threads=threads)
    return out, compiled.of("jit(_lanes_program)")


@pytest.fixture(scope="module")
def serial_study(tmp_path_factory):
    """The study with each sweep compiling its own programs when it runs (no threads)."""
    return _run_study(tmp_path_factory.mktemp("serial") / "run", 1)


def _arrays(folder) -> dict:
    with np.load(os.path.join(folder, "histories.npz")) as z:
        return {k: z[k] for k in z.files}


def _outcomes(rows) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("seconds")} for r in rows]


def test_a_study_compiles_each_program_once_and_concurrently_to_the_same_bits(
    tmp_path, monkeypatch, serial_study
):
    """Serially (each sweep compiles its own) and in threads (compiled ahead): two programs for three
    units, and the same histories and outcomes bit for bit."""
    serial, serial_programs = serial_study
    sweep_module = importlib.import_module("gdjax.sweep")
    validated = []
    real = sweep_module._validate_values
    monkeypatch.setattr(sweep_module, "_validate_values", lambda *a: validated.append(1) or real(*a))
    threaded, threaded_programs = _run_study(tmp_path / "threaded", 2)
    assert serial_programs == threaded_programs == 2
    # Each unit's values are checked by the config reader and planned once (3 + 3): lowered ahead
    # from its plan, not planned again (9 when the threads planned each sweep anew).
    assert len(validated) == 6
    assert threaded.manifest["units"]["large"]["compile_seconds"] == 0.0  # small's program ran it
    a, b = _arrays(serial.folder), _arrays(threaded.folder)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert _outcomes(serial.rows) == _outcomes(threaded.rows)


def test_a_program_that_fails_ahead_is_compiled_by_its_own_sweep(tmp_path, monkeypatch, serial_study):
    """Lowering ahead is an optimisation: when it fails, each unit's sweep compiles (and would raise)
    as it always did, and the study's results are unchanged."""

    def fail(*args, **kwargs):
        raise RuntimeError("cannot lower")

    monkeypatch.setattr(programs, "lower_sweep", fail)
    out, num_programs = _run_study(tmp_path / "fallback", 2)
    assert num_programs == 2
    assert _outcomes(out.rows) == _outcomes(serial_study[0].rows)


def test_compile_threads_from_the_environment(monkeypatch):
    monkeypatch.setenv(programs.ENV, "3")
    assert programs.threads() == 3
    monkeypatch.setenv(programs.ENV, "0")
    with pytest.raises(ValueError, match="GDJAX_COMPILE_THREADS must be a positive integer"):
        programs.threads()
    monkeypatch.delenv(programs.ENV)
    assert programs.threads() == 1  # compiling in threads did not pay on 2 cores (README)


def test_a_unit_that_fails_is_named(tmp_path, monkeypatch):
    """A failure inside a unit (an XLA compile error, say) propagates as itself, with a note naming
    the unit and the run folder."""

    def fail(cfg, u, p, **kwargs):
        raise RuntimeError("XLA could not compile")

    monkeypatch.setattr(experiment, "run_unit", fail)
    with pytest.raises(RuntimeError, match="XLA could not compile") as caught:
        experiment.run_experiment(config.loads(FULL_BATCH), str(tmp_path / "run"), compile_threads=1)
    assert caught.value.__notes__ == [f"gdjax: while running small; partial results in {tmp_path / 'run'}"]
