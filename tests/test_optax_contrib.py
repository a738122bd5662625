"""Every `optax.contrib` optimizer by name, `rules.get("optax.contrib.<name>")` (issue 20).

Each runs Optax's alias-test problems (the parabola and Rosenbrock of `test_optax_problems.py`) through
`gdjax.run` with gdjax's defaults and the hyperparameters of Optax's own contrib tests
(`optax/contrib/_common_test.py`), against the same loop written in plain Optax: the final params
agree, and where plain Optax reaches the minimiser gdjax does too. Factories that cannot run as a
rule are in `EXCLUDED`, with the reason (the README lists them); a test keeps the two tables
covering `optax.contrib` exactly.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib as contrib
import pytest
from helpers import count_compilations
from jax import lax
from test_optax_problems import TARGETS, TOLERANCE

import gdjax
from gdjax import rules

NUM_STEPS = 10_000
AGREEMENT = 1e-7


class Row(NamedTuple):
    name: str  # optax.contrib.<name>
    hyperparameters: dict[str, Any]
    loose: tuple[str, ...] = ()  # targets where only TOLERANCE agreement holds (see LOOSE)
    extra: tuple[str, ...] = ("value", "grad", "value_fn", "obj_fn")  # what the plain loop passes
    swept: str = "learning_rate"  # the value the no-recompilation test changes

    @property
    def optax_fn(self):
        return getattr(contrib, self.name)(**self.hyperparameters)


# On Rosenbrock, iterates that keep oscillating around the minimiser amplify one-ulp differences
# between two differently fused compiled loops over 10k steps (as for NAdam and LARS in
# test_optax_problems.py): those rows agree with plain Optax to alias_test's tolerance only.
LOOSE = ("rosenbrock",)

# Optax's `_MAIN_OPTIMIZERS_UNDER_TEST` (wrappers around sgd, as there).
ROWS = [
    Row("acprop", {"learning_rate": 1e-3}),
    Row("ademamix", {"learning_rate": 1e-3}, loose=LOOSE),
    Row("simplified_ademamix", {"learning_rate": 1e-3}),
    Row("adopt", {"learning_rate": 1e-2}),
    Row("cocob", {"alpha": 100.0}, swept="alpha"),
    Row("cocob", {"weight_decay": 1e-2}, swept="weight_decay"),
    Row("dadapt_adamw", {"learning_rate": 1e-1}, loose=LOOSE),
    Row("dog", {"learning_rate": 1.0}, loose=LOOSE),
    Row("dowg", {"learning_rate": 1.0}, loose=LOOSE),
    Row("madgrad", {"learning_rate": 1e-2}, loose=LOOSE),
    Row("scale_by_madgrad", {"learning_rate": 1e-2}, loose=LOOSE),
    Row("momo", {"learning_rate": 1e-1}),
    Row("momo_adam", {"learning_rate": 1e-1}),
    Row("muon", {"learning_rate": 1e-2}, loose=LOOSE),
    Row("prodigy", {"learning_rate": 1e-1}, loose=LOOSE),
    Row("schedule_free_sgd", {"learning_rate": 1e-2, "warmup_steps": 5000}),
    Row("schedule_free_adamw", {"learning_rate": 1e-2, "warmup_steps": 5000}, loose=("parabola",)),
    Row("sophia", {"learning_rate": 1e-2}),
    Row("galore", {"learning_rate": 1e-2, "rank": 8}),
    Row(
        "mechanize", {"base_optimizer": optax.sgd(1e-1), "weight_decay": 0.0, "s_init": 1e-6}, swept="s_init"
    ),
    # A constant learning rate only weights the average, uniformly: b1 is the value that matters.
    Row("schedule_free", {"base_optimizer": optax.sgd(1e-2), "learning_rate": 1e-2, "b1": 0.9}, swept="b1"),
    Row(
        "sam",
        {"optimizer": optax.sgd(1e-3), "adv_optimizer": optax.chain(contrib.normalize(), optax.sgd(1e-2))},
        extra=(),  # sam's update takes no extra arguments; gdjax drops them for it
        swept="",
    ),
    Row("split_real_and_imaginary", {"inner": optax.sgd(1e-3)}, swept=""),
]

EXCLUDED = {
    "differentially_private_aggregate": "needs per-example gradients (a leading batch axis on the update)",
    "dpsgd": "needs per-example gradients (a leading batch axis on the update)",
    "hutchinson_estimator_diag_hessian": "estimates a Hessian diagonal (a part of sophia), not an update",
    "normalize": "normalises the gradient, no step size: a part to chain (sam's adversarial step)",
    "reduce_on_plateau": "scales another rule's updates: chain it after one, optax.chain(optax.sgd(lr), ...)",
    "scale_by_acprop": "a scaling part without a learning rate or sign: its alias acprop is tested",
    "scale_by_ademamix": "a scaling part without a learning rate or sign: its alias ademamix is tested",
    "scale_by_adopt": "a scaling part without a learning rate or sign: its alias adopt is tested",
    "scale_by_cocob": "a scaling part without a learning rate or sign: its alias cocob is tested",
    "scale_by_galore": "a scaling part without a learning rate or sign: its alias galore is tested",
    "scale_by_muon": "a scaling part without a learning rate or sign: its alias muon is tested",
    "scale_by_simplified_ademamix": "a scaling part without a learning rate or sign: its alias is tested",
}

CASES = [(row, target) for row in ROWS for target in TARGETS]


def _id(row: Row) -> str:
    values = ",".join(f"{k}={v}" for k, v in row.hyperparameters.items() if isinstance(v, int | float))
    return f"{row.name}({values})"


def test_every_contrib_factory_is_tested_or_excluded_with_a_reason():
    tested = {row.name for row in ROWS}
    assert tested.isdisjoint(EXCLUDED)
    assert tested | set(EXCLUDED) == set(rules._contrib_names())


def _plain_optax(row: Row, target) -> np.ndarray:
    """The same loop in plain Optax, with the extra arguments each needs; evaluated where the method
    says (schedule-free: `schedule_free_eval_params`)."""
    cost = target.cost
    tx = optax.with_extra_args_support(row.optax_fn)

    def body(carry, _):
        params, state = carry
        value, grads = jax.value_and_grad(cost)(params)
        extra = {"value": value, "grad": grads, "value_fn": cost, "obj_fn": cost}
        updates, state = tx.update(grads, state, params, **{k: extra[k] for k in row.extra})
        return (optax.apply_updates(params, updates), state), None

    @jax.jit
    def run(params0):
        params, state = lax.scan(body, (params0, tx.init(params0)), None, length=NUM_STEPS)[0]
        if row.name.startswith("schedule_free"):
            params = contrib.schedule_free_eval_params(state, params)
        return params

    return np.asarray(run(jnp.asarray(target.params0, jnp.float64)))


@pytest.mark.parametrize("row, target", CASES, ids=[f"{_id(r)}-{t}" for r, t in CASES])
def test_contrib_optimizer_on_alias_problems(row, target):
    target = TARGETS[target]
    rule = rules.get(f"optax.contrib.{row.name}", **row.hyperparameters)
    trace = gdjax.run(target.cost, rule, jnp.asarray(target.params0, jnp.float64), None, num_steps=NUM_STEPS)
    ours = np.asarray(trace.params)
    expected = _plain_optax(row, target)
    status = gdjax.Status(int(trace.status))
    if status in (gdjax.Status.DIVERGED, gdjax.Status.NONFINITE):
        # gdjax's verdict must be plain Optax's fate too: ended far above the start (acprop at
        # Optax's settings on Rosenbrock ends at a loss of about 2e5 against 1 at the start).
        assert not np.isfinite(target.cost(expected)) or target.cost(expected) > 100 * target.cost(
            target.params0
        )
    agreement = TOLERANCE if target.id in row.loose else AGREEMENT
    np.testing.assert_allclose(ours, expected, rtol=agreement, atol=agreement)
    if np.allclose(expected, target.minimiser, rtol=TOLERANCE, atol=TOLERANCE):
        np.testing.assert_allclose(ours, target.minimiser, rtol=TOLERANCE, atol=TOLERANCE)


NUMERIC = [row for row in ROWS if row.swept]


@pytest.mark.parametrize("row", NUMERIC, ids=[_id(r) for r in NUMERIC])
def test_contrib_new_value_never_recompiles(row):
    target = TARGETS["parabola"]
    params0 = jnp.asarray(target.params0, jnp.float64)
    name = f"optax.contrib.{row.name}"
    first = gdjax.run(target.cost, rules.get(name, **row.hyperparameters), params0, None, num_steps=20)
    value = row.hyperparameters[row.swept]
    other = {**row.hyperparameters, row.swept: value * 0.5}
    with count_compilations() as c:
        second = gdjax.run(target.cost, rules.get(name, **other), params0, None, num_steps=20)
    assert c.count == 0
    assert not np.array_equal(first.params, second.params)


@pytest.mark.parametrize("name", ["schedule_free_sgd", "schedule_free_adamw"])
def test_schedule_free_is_evaluated_at_its_average(name):
    target = TARGETS["parabola"]
    params0 = jnp.asarray(target.params0, jnp.float64)
    trace = gdjax.run(
        target.cost, rules.get(f"optax.contrib.{name}", learning_rate=1e-2), params0, None, num_steps=200
    )
    assert trace.evaluated_at == "schedule_free_eval_params"
    # Loss history and params are at the evaluated point, and agree with each other.
    np.testing.assert_allclose(trace.loss_history[-1], target.cost(trace.params), rtol=1e-12)
    np.testing.assert_allclose(trace.params_history[-1], trace.params, rtol=0)
    plain = gdjax.run(target.cost, rules.get("sgd", learning_rate=1e-2), params0, None, num_steps=10)
    assert plain.evaluated_at is None


def test_unknown_contrib_name_suggests_the_nearest():
    with pytest.raises(ValueError, match="did you mean 'optax.contrib.prodigy'"):
        rules.get("optax.contrib.prodigi", learning_rate=1.0)
