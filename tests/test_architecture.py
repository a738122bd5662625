"""The shape of the core: one rule representation, option objects, the least-squares problem object,
and cost hyperparameters as arrays (swept like a rule's, never recompiled)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gdjax
from gdjax import costs, reference, rules
from tests.helpers import count_compilations

COST = gdjax.make_cost(gdjax.linear, gdjax.mse)


def _data(n=40, d=3, seed=0):
    s = gdjax.data.synthetic(seed, n, d)
    return np.asarray(s.X), np.asarray(s.y)


def ridge(params, data, l2=0.0):
    X, y = data
    r = X @ params["w"] + params["b"] - y
    return jnp.mean(r * r) + l2 * jnp.sum(params["w"] ** 2)


def huber(params, data, delta=1.0):
    X, y = data
    r = jnp.abs(X @ params["w"] + params["b"] - y)
    return jnp.mean(jnp.where(r < delta, 0.5 * r**2, delta * (r - 0.5 * delta)))


# ------------------------------------------------------------------------------------ rules
@pytest.mark.parametrize(
    "make",
    [
        lambda lr: rules.sgd(lr),
        lambda lr: rules.adam(lr, b1=0.8),
        lambda lr: rules.rmsprop(lr, momentum=0.5, centered=True),
        lambda lr: rules.get("optax.lamb", learning_rate=lr),
        lambda lr: rules.get("momentum", learning_rate=lr, schedule="exponential_decay", decay_rate=0.9),
    ],
)
def test_a_rule_is_a_hashable_spec_plus_values(make):
    a, b = make(0.1), make(0.2)
    assert isinstance(a, optax.GradientTransformationExtraArgs) and isinstance(a, gdjax.Rule)
    assert a.spec == b.spec and hash(a.spec) == hash(b.spec)
    assert a.update == b.update and hash(a.update) == hash(b.update)
    assert a.hyperparams["learning_rate"] == 0.1 and b.hyperparams["learning_rate"] == 0.2
    assert set(a.hyperparams) == set(a.spec.numeric)
    # The spec rebuilds the same rule inside a program from the values alone.
    params = {"w": jnp.ones(3), "b": jnp.zeros(())}
    s1, s2 = a.init(params), a.spec.init(params, a.hyperparams)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(jnp.all(x == y)), s1, s2))


def test_static_options_make_different_specs():
    assert rules.adam(0.1).spec != rules.adam(0.1, nesterov=True).spec
    assert rules.sgd(0.1).spec != rules.sgd(0.1, schedule="inverse_sqrt").spec
    assert rules.get("optax.adam", learning_rate=0.1).spec != rules.adam(0.1).spec


def test_rule_replace_validates_in_the_factory_s_terms():
    rule = rules.adam(0.1)
    assert rule.replace(learning_rate=0.3).hyperparams["learning_rate"] == 0.3
    with pytest.raises(ValueError, match="learning_rate must be"):
        rule.replace(learning_rate=-1.0)
    with pytest.raises(ValueError, match="no numeric hyperparameter 'lr'"):
        rule.replace(lr=0.1)


def test_run_with_new_values_of_rule_and_cost_never_recompiles():
    X, y = _data()
    p0 = gdjax.init_linear(3)
    gdjax.run(costs.bind(ridge, l2=0.1), rules.adam(0.01), p0, (X, y), num_steps=20)
    with count_compilations() as counter:
        for lr, l2 in [(0.02, 0.2), (0.05, 0.0), (0.1, 1.5)]:
            gdjax.run(costs.bind(ridge, l2=l2), rules.adam(lr), p0, (X, y), num_steps=20)
    assert counter.count == 0


def test_run_builds_the_rule_state_inside_the_program_identically():
    X, y = _data()
    p0 = gdjax.init_linear(3)
    rule = rules.get("optax.adamw", learning_rate=0.05, weight_decay=0.01)
    t = gdjax.run(COST, rule, p0, (X, y), num_steps=30)
    # Reference: plain optax, stepped by hand in float64.
    tx = optax.adamw(0.05, weight_decay=0.01)
    params, state = p0, tx.init(p0)
    for _ in range(30):
        g = jax.grad(COST)(params, (X, y))
        u, state = tx.update(g, state, params)
        params = optax.apply_updates(params, u)
    np.testing.assert_allclose(t.params["w"], params["w"], rtol=1e-9, atol=1e-12)


def test_sweep_takes_a_built_rule_its_values_are_the_lanes_defaults():
    X, y = _data()
    p0 = gdjax.init_linear(3)
    res = gdjax.sweep(
        COST, rules.adam(0.1, b1=0.5), p0, (X, y), grid={"learning_rate": [0.01, 0.1]}, num_steps=30
    )
    for i, lr in enumerate([0.01, 0.1]):
        alone = gdjax.run(COST, rules.adam(lr, b1=0.5), p0, (X, y), num_steps=30)
        np.testing.assert_allclose(res.trace.loss_history[i], alone.loss_history, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="static options"):
        gdjax.sweep(COST, rules.adam(0.1), p0, (X, y), grid={"nesterov": True}, num_steps=5)


def test_sweep_refuses_an_optax_transformation_with_baked_values():
    X, y = _data()
    with pytest.raises(ValueError, match="optax.<name>"):
        gdjax.sweep(
            COST, optax.adam(0.1), gdjax.init_linear(3), (X, y), grid={"learning_rate": [0.1]}, num_steps=5
        )


# ---------------------------------------------------------------------------------- options
def test_option_objects_validate_when_built_and_name_the_field():
    with pytest.raises(ValueError, match="grad_tol"):
        gdjax.Stopping(grad_tol=-1.0)
    with pytest.raises(ValueError, match="divergence_factor must be > 1"):
        gdjax.Stopping(divergence_factor=0.5)
    with pytest.raises(ValueError, match="divergence_patience"):
        gdjax.Stopping(divergence_patience=0)
    with pytest.raises(ValueError, match="did you mean 'feature_major'"):
        gdjax.Execution(layout="feature_majr")
    with pytest.raises(ValueError, match="record_every"):
        gdjax.Execution(record_every=0)
    with pytest.raises(ValueError, match="chunk_size"):
        gdjax.Execution(chunk_size=0)


def test_tol_and_chunk_size_given_twice_are_refused():
    X, y = _data()
    p0 = gdjax.init_linear(3)
    with pytest.raises(ValueError, match="tol is given twice"):
        gdjax.run(COST, rules.sgd(0.1), p0, (X, y), num_steps=5, tol=1e-3, stopping=gdjax.Stopping(tol=1e-4))
    with pytest.raises(ValueError, match="chunk_size is given twice"):
        gdjax.sweep(
            COST, "sgd", p0, (X, y), grid={"learning_rate": [0.1]}, num_steps=5, chunk_size=2,
            execution=gdjax.Execution(chunk_size=3),
        )  # fmt: skip
    with pytest.raises(ValueError, match="stopping must be a gdjax.Stopping"):
        gdjax.run(COST, rules.sgd(0.1), p0, (X, y), num_steps=5, stopping={"tol": 1e-3})


def test_signatures_stay_small_and_keep_the_documented_spellings():
    import inspect

    run_params = list(inspect.signature(gdjax.run).parameters)
    sweep_params = list(inspect.signature(gdjax.sweep).parameters)
    assert len(run_params) <= 12 and len(sweep_params) <= 14
    for name in (
        "cost",
        "rule",
        "params0",
        "data",
        "num_steps",
        "batch_size",
        "key",
        "tol",
        "metrics",
        "eval_every",
    ):
        assert name in run_params
    for name in ("grid", "num_steps", "seeds", "batch_size", "tol", "chunk_size", "metrics", "eval_every"):
        assert name in sweep_params


def test_stopping_defaults_live_in_one_place():
    import importlib

    sweep_module = importlib.import_module("gdjax.sweep")
    from gdjax import loop, options

    assert loop.DIVERGENCE_FACTOR == options.DIVERGENCE_FACTOR == gdjax.Stopping().divergence_factor
    assert sweep_module.TOLERANCE_NAMES == tuple(f.name for f in dataclasses.fields(gdjax.Stopping))


# ------------------------------------------------------------------------ least squares
def test_least_squares_problem_carries_cost_data_f_star_curvature_and_fast_forms():
    X, y = _data(60, 4)
    p = gdjax.least_squares_problem(X, y)
    assert p.cost == COST and p.cost.least_squares
    assert p.f_star == pytest.approx(reference.optimal_cost(X, y), rel=1e-12)
    assert p.curvature == reference.curvature(X)
    assert p.cost.optimal_value(p.data) == pytest.approx(p.f_star, rel=1e-12)
    fast = gdjax.run(
        p.cost, rules.sgd(0.1), p.params0(), p.data, num_steps=50, execution=gdjax.Execution(layout="gram")
    )
    plain = gdjax.run(p.cost, rules.sgd(0.1), p.params0(), p.data, num_steps=50)
    np.testing.assert_allclose(fast.loss_history, plain.loss_history, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="layout='gram'"):
        gdjax.run(
            ridge, rules.sgd(0.1), p.params0(), p.data, num_steps=5, execution=gdjax.Execution(layout="gram")
        )
    logistic = gdjax.make_cost(gdjax.linear, gdjax.logistic)  # a model cost, but not least squares
    labels = (p.y > np.median(p.y)).astype(float)
    with pytest.raises(ValueError, match="layout='gram' .* needs a cost that offers it"):
        gdjax.run(
            logistic,
            rules.sgd(0.1),
            p.params0(),
            (X, labels),
            num_steps=5,
            execution=gdjax.Execution(layout="gram"),
        )


def test_make_cost_is_equal_for_equal_parts_so_it_never_recompiles():
    X, y = _data()
    assert gdjax.make_cost(gdjax.linear, gdjax.mse) == gdjax.make_cost(gdjax.linear)
    gdjax.run(
        gdjax.make_cost(gdjax.linear, gdjax.mse), rules.sgd(0.1), gdjax.init_linear(3), (X, y), num_steps=5
    )
    with count_compilations() as counter:
        gdjax.run(
            gdjax.make_cost(gdjax.linear, gdjax.mse),
            rules.sgd(0.2),
            gdjax.init_linear(3),
            (X, y),
            num_steps=5,
        )
    assert counter.count == 0


def test_sweep_suboptimality_uses_the_f_star_the_cost_offers_or_the_one_given():
    X, y = _data()
    res = gdjax.sweep(COST, "sgd", gdjax.init_linear(3), (X, y), grid={"learning_rate": [0.1]}, num_steps=50)
    assert res.f_star == pytest.approx(reference.optimal_cost(X, y), rel=1e-12)
    other = gdjax.sweep(
        ridge, "sgd", gdjax.init_linear(3), (X, y), grid={"learning_rate": [0.1]}, num_steps=50
    )
    assert other.f_star is None
    assert other.with_f_star(0.5).f_star == 0.5
    with pytest.raises(ValueError, match="f_star must be finite"):
        other.with_f_star(float("nan"))


# ------------------------------------------------------------------------ cost hyperparameters
def test_cost_hyperparameters_are_keyword_parameters_with_numeric_defaults():
    assert costs.hyperparameters(ridge) == ("l2",)
    assert costs.hyperparameters(huber) == ("delta",)
    assert costs.hyperparameters(COST) == ()
    assert costs.hyperparameters(costs.bind(ridge, l2=0.3)) == ("l2",)
    with pytest.raises(ValueError, match="no hyperparameter 'l1'.*did you mean 'l2'"):
        costs.bind(ridge, l1=0.1)
    with pytest.raises(ValueError, match="must be finite"):
        costs.bind(ridge, l2=float("inf"))
    with pytest.raises(ValueError, match="must be a scalar"):
        costs.bind(ridge, l2=[0.1, 0.2])


def test_cost_hyperparameters_are_grid_axes_one_program_each_lane_equals_its_run():
    X, y = _data()
    p0 = gdjax.init_linear(3)
    grid = {"learning_rate": [0.05, 0.1], "l2": [0.0, 0.5, 2.0]}
    res = gdjax.sweep(ridge, "sgd", p0, (X, y), grid=grid, num_steps=80)
    assert res.num_lanes == 6 and "l2" in res.hyperparameter_names
    for i, c in enumerate(res.coords):
        alone = gdjax.run(
            costs.bind(ridge, l2=c["l2"]), rules.sgd(c["learning_rate"]), p0, (X, y), num_steps=80
        )
        np.testing.assert_allclose(res.trace.loss_history[i], alone.loss_history, rtol=1e-12, atol=1e-14)
    # The oracle the code cannot influence: ridge in closed form (unpenalised intercept).
    n = X.shape[0]
    Xc, yc = X - X.mean(0), y - y.mean()
    w = np.linalg.solve(Xc.T @ Xc / n + 2.0 * np.eye(3), Xc.T @ yc / n)
    long = gdjax.run(costs.bind(ridge, l2=2.0), rules.sgd(0.1), p0, (X, y), num_steps=3000)
    np.testing.assert_allclose(long.params["w"], w, rtol=1e-7, atol=1e-9)
    # New values of both kinds: no new program.
    with count_compilations() as counter:
        gdjax.sweep(
            ridge, "sgd", p0, (X, y), grid={"learning_rate": [0.02, 0.3], "l2": [0.1, 0.2, 0.4]}, num_steps=80
        )
    assert counter.count == 0
    summary = res.summary()
    assert [row["l2"] for row in summary] == [c["l2"] for c in res.coords]


def test_bound_cost_values_are_the_sweep_defaults_and_mix_with_mini_batches():
    X, y = _data(64)
    p0 = gdjax.init_linear(3)
    res = gdjax.sweep(
        costs.bind(huber, delta=0.5), "sgd", p0, (X, y), grid={"learning_rate": [0.1, 0.2]}, num_steps=40,
        batch_size=8, seeds=[0, 1],
    )  # fmt: skip
    for i, c in enumerate(res.coords):
        alone = gdjax.run(
            costs.bind(huber, delta=0.5), rules.sgd(c["learning_rate"]), p0, (X, y), num_steps=40,
            batch_size=8,
            key=jax.random.key(c["seed"]),
        )  # fmt: skip
        np.testing.assert_allclose(res.trace.batch_loss_history[i], alone.batch_loss_history, rtol=1e-12)


def test_bad_cost_hyperparameter_grids_are_named():
    X, y = _data()
    p0 = gdjax.init_linear(3)
    with pytest.raises(ValueError, match="grid\\['l2'\\] must be finite"):
        gdjax.sweep(
            ridge, "sgd", p0, (X, y), grid={"learning_rate": [0.1], "l2": [0.1, float("nan")]}, num_steps=5
        )
    with pytest.raises(ValueError, match="takes real numbers"):
        gdjax.sweep(ridge, "sgd", p0, (X, y), grid={"learning_rate": [0.1], "l2": "big"}, num_steps=5)
    with pytest.raises(ValueError, match="the cost's are \\['l2'\\]"):
        gdjax.sweep(ridge, "sgd", p0, (X, y), grid={"learning_rate": [0.1], "l3": [0.1]}, num_steps=5)

    def clash(params, data, learning_rate=0.0):
        return ridge(params, data) + learning_rate

    with pytest.raises(ValueError, match="names both a hyperparameter of rule 'sgd' and one of the cost"):
        gdjax.sweep(clash, "sgd", p0, (X, y), grid={"learning_rate": [0.1]}, num_steps=5)


# ------------------------------------------------------------------------ rules that cannot move
def test_an_optax_rule_that_cannot_move_is_flagged_and_a_moving_one_is_not():
    import warnings

    X, y = _data()
    p0 = gdjax.init_linear(3)
    with pytest.warns(gdjax.loop.RuleCannotMoveWarning, match="learning rate 0"):
        trace = gdjax.run(COST, optax.sgd(0.0), p0, (X, y), num_steps=10)
    assert trace.status_name() == "max_steps"
    with warnings.catch_warnings():
        warnings.simplefilter("error", gdjax.loop.RuleCannotMoveWarning)
        gdjax.run(COST, optax.sgd(0.1), p0, (X, y), num_steps=10)
        # Started at the optimum: nothing to move, nothing to flag.
        w = reference.least_squares(X, y)
        gdjax.run(
            COST, optax.sgd(0.0), {"w": jnp.asarray(w["w"]), "b": jnp.asarray(w["b"])}, (X, y), num_steps=3
        )
    with pytest.raises(ValueError, match="learning_rate must be"):
        rules.sgd(0.0)  # gdjax's own rules refuse it up front


# ------------------------------------------------------------------------ check_sweep
def test_check_sweep_validates_without_compiling_and_plans_the_calls():
    X, y = _data()
    p0 = gdjax.init_linear(3)
    with count_compilations() as counter:
        plan = gdjax.check_sweep(
            COST, {"sgd": {"learning_rate": [0.1, 0.2]}, "adam": {"learning_rate": [0.01]}}, p0, (X, y),
            num_steps=10, chunk_size=1,
        )  # fmt: skip
    assert counter.count == 0
    assert plan.num_lanes == 3 and [p[0] for p in plan.programs] == ["sgd", "adam"]
    # sgd's one-lane chunks are padded to two (issue 19: a 1-lane vmap orders its sums differently).
    assert plan.lanes_per_call == [2, 1] and plan.bytes_per_call <= plan.memory_budget
    with pytest.raises(ValueError, match="memory_budget"):
        gdjax.check_sweep(
            COST, "sgd", p0, (X, y), grid={"learning_rate": [0.1] * 4}, num_steps=1000, eval_every=1,
            execution=gdjax.Execution(memory_budget=1000),
        )  # fmt: skip


def test_a_planned_sweep_runs_without_validating_or_planning_again(monkeypatch):
    import importlib

    from gdjax.sweep import plan_sweep, run_plan

    sweep_module = importlib.import_module("gdjax.sweep")
    X, y = _data()
    args = (
        COST,
        {"sgd": {"learning_rate": [0.1, 0.2]}, "adam": {"learning_rate": [0.01]}},
        gdjax.init_linear(3),
    )
    kwargs = dict(data=(X, y), num_steps=10, seeds=[0, 1], batch_size=4, chunk_size=2)
    expected = gdjax.sweep(*args, **kwargs)
    plan, checked = plan_sweep(*args, **kwargs), gdjax.check_sweep(*args, **kwargs)
    assert plan.num_lanes == expected.num_lanes and plan.lanes_per_call == [2, 2]

    def again(*a, **k):
        raise AssertionError("validated or planned again")

    for name in ("_parse_grid", "_validate_values", "_check_memory", "_bytes_per_lane"):
        monkeypatch.setattr(sweep_module, name, again)
    seen = []
    result = run_plan(plan, progress=lambda done, total: seen.append((done, total)))
    timings = dict(compile_seconds=expected.compile_seconds, run_seconds=expected.run_seconds)
    assert dataclasses.replace(result, **timings) == expected and seen[-1] == (6, 6)  # bit for bit
    with pytest.raises(ValueError, match="plan_sweep"):
        run_plan(checked)  # check_sweep's plans only validate


def test_a_planned_sweep_draws_the_same_noised_starts_as_the_sweep():
    """`plan_sweep` draws `init_noise`'s perturbations (only `check_sweep` skips them): a planned
    sweep with noised starts runs bit for bit like `sweep`, each seed from its own start."""
    from gdjax.sweep import plan_sweep, run_plan

    X, y = _data()
    args = (COST, "sgd", gdjax.Starts(gdjax.init_linear(3), init_noise=0.5, stacked=False), (X, y))
    kwargs = dict(grid={"learning_rate": [0.1]}, num_steps=5, seeds=[0, 1, 2])
    expected = gdjax.sweep(*args, **kwargs)
    result = run_plan(plan_sweep(*args, **kwargs))
    timings = dict(compile_seconds=expected.compile_seconds, run_seconds=expected.run_seconds)
    assert dataclasses.replace(result, **timings) == expected
    assert len(set(np.asarray(result.trace.loss_history)[:, 0].tolist())) == 3


def test_a_study_whose_sweep_is_refused_leaves_no_folder(tmp_path, monkeypatch):
    import importlib

    from gdjax.study import config as config_lib
    from gdjax.study import experiment

    sweep_module = importlib.import_module("gdjax.sweep")
    monkeypatch.setattr(sweep_module, "_default_memory_budget", lambda devices: 1000)
    import pathlib

    cfg = config_lib.load(str(pathlib.Path(__file__).parents[1] / "configs" / "house_prices.toml"))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="memory_budget.*nothing was written"):
        experiment.run_experiment(cfg, str(out))
    assert not out.exists()


def test_minibatch_evaluations_on_the_feature_major_copy_equal_the_rows():
    X, y = _data(300, 4)
    p0 = gdjax.init_linear(4)
    kw = dict(num_steps=200, batch_size=16, key=3, eval_every=20)
    fast = gdjax.run(COST, rules.sgd(0.05), p0, (X, y), **kw)
    rows = gdjax.run(COST, rules.sgd(0.05), p0, (X, y), execution=gdjax.Execution(layout="as_given"), **kw)
    np.testing.assert_array_equal(fast.batch_loss_history, rows.batch_loss_history)  # same batches
    np.testing.assert_allclose(fast.loss_history, rows.loss_history, rtol=1e-12)
    np.testing.assert_allclose(fast.grad_norm_history, rows.grad_norm_history, rtol=1e-10)
    # A lane of a sweep takes the same path as the run alone.
    res = gdjax.sweep(
        COST,
        "sgd",
        p0,
        (X, y),
        grid={"learning_rate": [0.05]},
        seeds=[3],
        **{k: v for k, v in kw.items() if k != "key"},
    )
    np.testing.assert_allclose(res.trace.loss_history[0], fast.loss_history, rtol=1e-12)


def test_a_cost_hyperparameter_may_not_shadow_a_lane_coordinate():
    X, y = _data()

    def noisy(params, data, seed=0.0):
        return ridge(params, data) + 0.0 * seed

    with pytest.raises(ValueError, match="grid key 'seed' is a lane coordinate"):
        gdjax.sweep(
            noisy,
            "sgd",
            gdjax.init_linear(3),
            (X, y),
            grid={"learning_rate": [0.1], "seed": [1.0]},
            num_steps=5,
        )


def test_reference_oracles_the_study_uses():
    x = jnp.array([-1.2, 1.0, 0.5])
    np.testing.assert_allclose(
        reference.rosenbrock_grad(np.asarray(x)), jax.grad(costs.rosenbrock)(x), rtol=1e-12
    )
    X, _ = _data(50, 3)
    eig = np.linalg.eigvalsh(reference.mse_hessian(X))
    assert reference.curvature_of(eig) == pytest.approx(reference.curvature(X))
    c = reference.curvature_of([2.0, 8.0])
    assert (c.L, c.mu, c.max_stable_lr, c.best_lr, c.condition_number) == (8.0, 2.0, 0.25, 0.2, 4.0)
    xs = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(reference.polynomial_features(xs, 3), np.stack([xs, xs**2, xs**3], 1))
    np.testing.assert_allclose(
        costs.polynomial_features(jnp.asarray(xs), 3), reference.polynomial_features(xs, 3)
    )
    with pytest.raises(ValueError, match="positive largest eigenvalue"):
        reference.curvature_of([0.0, -1.0])
