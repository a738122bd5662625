"""Runs the classic studies through `gdjax run` and writes experiments/README.md from their results.

Every study is a config in `configs/` (plus the default study of a bare `gdjax run`), run by the same
code path as the command (`gdjax.study.cli.main`), into `runs/studies/<name>/`. The README's tables and
notes are computed from those run folders (summary.json, manifest.json, histories.npz), and the
figures are copied into `experiments/figures/`, so every number in the README comes from a run.

    python experiments/run_studies.py                 # every study: about two minutes on a laptop CPU
    python experiments/run_studies.py --only decay    # rerun one study; the others are read back
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

import jax
import numpy as np

from gdjax import data, reference
from gdjax.study import cli, config, experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = ROOT / "experiments"
FIGURES = HERE / "figures"

# (name, config file relative to the repository root; None for the default study)
STUDIES = [
    ("default", None),
    ("lr_regimes", "configs/lr_regimes.toml"),
    ("quadratics", "configs/quadratics.toml"),
    ("house_prices", "configs/house_prices.toml"),
    ("batch_vs_stochastic", "configs/batch_vs_stochastic.toml"),
    ("optimizers_well", "configs/optimizers_well.toml"),
    ("optimizers_ill", "configs/optimizers_ill.toml"),
    ("decay", "configs/decay.toml"),
    ("digits", "configs/digits.toml"),
    ("suite", "configs/suite.toml"),
]

TITLES = {
    "default": "The default study (`gdjax run`)",
    "lr_regimes": "1. Learning-rate regimes and the 2/L boundary",
    "quadratics": "2. The tutorials' quadratics",
    "house_prices": "3. House prices: gradient descent vs the closed form",
    "batch_vs_stochastic": "4. Batch vs stochastic vs mini-batch at an equal budget",
    "optimizers_well": "5a. Six optimizers, well-conditioned",
    "optimizers_ill": "5b. Six optimizers, ill-conditioned",
    "decay": "6. Constant vs decaying step sizes",
    "digits": "7. Six optimizers on real data: the bundled digits, with a held-out split",
    "suite": "8. A suite: four tuned optimizers on nine problems with exact f*",
}


class Study:
    """One study's run folder, read back."""

    def __init__(self, name: str, cfg_path: str | None, folder: pathlib.Path):
        self.name, self.cfg_path, self.folder = name, cfg_path, folder
        self.cfg = config.load(folder / "config.toml")
        self.rows = json.loads((folder / "summary.json").read_text())
        self.manifest = json.loads((folder / "manifest.json").read_text())
        with np.load(folder / "histories.npz", allow_pickle=False) as z:
            self.arrays = {k: z[k] for k in z.files}

    def of(self, optimizer: str, cost: str | None = None) -> list[dict]:
        return [
            r for r in self.rows if r["optimizer"] == optimizer and (cost is None or r.get("cost") == cost)
        ]

    def problem(self, label: str | None = None) -> dict:
        problems = self.manifest["problems"]
        return problems[label] if label else next(iter(problems.values()))

    def median(self, rows: list[dict], key: str = "suboptimality") -> float:
        return float(np.median([r[key] for r in rows]))


def run_study(name: str, cfg_path: str | None, out_root: pathlib.Path) -> pathlib.Path:
    folder = out_root / name
    argv = ["run", *([str(ROOT / cfg_path)] if cfg_path else []), "--out", str(folder), "--force", "-q"]
    print(f"gdjax {' '.join(argv)}", flush=True)
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"study {name} failed (exit code {code})")
    return folder


# --------------------------------------------------------------------------------------- formatting
def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1e5 or abs(value) < 1e-3:
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}"
    return str(value)


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return lines


METRICS = {"accuracy": "accuracy", "test_loss": "test loss", "test_accuracy": "test accuracy"}


def best_table(study: Study) -> list[str]:
    best = experiment.best_configurations(study.rows, study.cfg.outputs.rank_by)
    counts = experiment.status_counts(study.rows)
    swept = dict.fromkeys(  # in config order: a set's order would change from run to run
        k
        for opt in study.cfg.optimizers
        for k in list(opt.axes()) + list(opt.fixed())
        if not isinstance(dict(opt.grid).get(k), bool)
    )
    several = len(study.cfg.costs) > 1
    vs_best = all(b["suboptimality"] is None for b in best)
    metrics = [m for m in METRICS if best and m in best[0]]
    header = (["cost"] if several else []) + ["optimizer", "best configuration", "final loss"]
    header += ["f - best" if vs_best else "f - f*", *(METRICS[m] for m in metrics)]
    header += ["steps", "status", "lanes: converged / max_steps / diverged / nonfinite"]
    rows = []
    for b in best:
        key = b["optimizer"] if b.get("cost") is None else f"{b['cost']}.{b['optimizer']}"
        hp = ", ".join(f"{k} = {fmt(b[k])}" for k in swept if b.get(k) is not None)
        if b.get("schedule") not in (None, "constant"):
            hp = f"schedule = {b['schedule']}, " + hp
        if b.get("batch_size") is not None:
            hp += f", batch_size = {b['batch_size']}"
        c = counts[key]
        median = f" (median of {b['seeds']})" if b["seeds"] > 1 else ""
        rows.append(
            ([b["cost"]] if several else [])
            + [
                b["optimizer"],
                hp,
                fmt(b["final_loss"]) + median,
                fmt(b["suboptimality_vs_best"] if vs_best else b["suboptimality"]),
                *(fmt(b[m]) for m in metrics),
                fmt(b["steps"]),
                b["status"],
                f"{c['converged']} / {c['max_steps']} / {c['diverged']} / {c['nonfinite']}",
            ]
        )
    return table(header, rows)


def problem_line(study: Study) -> str:
    parts = []
    for label, p in study.manifest["problems"].items():
        bits = [f"{p['num_params']} parameters"]
        if "num_examples" in p:
            bits.insert(0, f"{p['num_examples']} examples x {p['num_features']} features")
        if p.get("f_star") is not None:
            bits.append(f"f* = {fmt(p['f_star'], 8)}")
        if p.get("L") is not None:
            bits.append(f"L = {fmt(p['L'])}, mu = {fmt(p['mu'])}, 2/L = {fmt(p['max_stable_lr'])}")
            bits.append(f"condition number L/mu = {fmt(p['condition_number'])}")
        parts.append((f"`{label}`: " if len(study.manifest["problems"]) > 1 else "") + ", ".join(bits))
    return "; ".join(parts)


# ------------------------------------------------------------------------------------ study notes
def notes_default(s: Study) -> list[str]:
    gd = s.of("gd")
    stable = max(r["learning_rate"] for r in gd if r["status"] != "diverged")
    diverged = min(r["learning_rate"] for r in gd if r["status"] == "diverged")
    fastest = min((r for r in gd if r["status"] == "converged"), key=lambda r: r["steps"])
    return [
        f"- GD: the largest learning rate that did not diverge is {fmt(stable)}, the smallest that did "
        f"{fmt(diverged)}: the predicted bound 2/L = {fmt(s.problem()['max_stable_lr'])} lies between.",
        f"- The fastest GD run (learning rate {fmt(fastest['learning_rate'])}, next to the optimal "
        f"2/(L + mu) = {fmt(s.problem()['best_lr'])}) stopped after {fastest['steps']} steps.",
        f"- Mini-batches of 2 (learning rate 0.05, five seeds) end at a median f - f* of "
        f"{fmt(s.median(s.of('minibatch')))}: the gradient noise keeps them from settling.",
    ]


REGIME_NAMES = ["crawling", "good", "oscillating but converging", "divergent"]


def notes_lr_regimes(s: Study) -> list[str]:
    p = s.problem()
    bound, L = p["max_stable_lr"], p["L"]
    regimes = sorted(s.of("regimes"), key=lambda r: r["learning_rate"])
    rows = []
    for name, r in zip(REGIME_NAMES, regimes, strict=True):
        steps = r["steps"] if r["status"] == "converged" else f"({r['status']} after {r['steps']})"
        rows.append(
            [name, r["learning_rate"], r["learning_rate"] * L, r["status"], steps, r["suboptimality"]]
        )
    sweep = s.of("sweep")
    stable = max(r["learning_rate"] for r in sweep if r["status"] != "diverged")
    diverged = min(r["learning_rate"] for r in sweep if r["status"] == "diverged")
    converged = [r for r in sweep if r["status"] == "converged"]
    fastest = min(converged, key=lambda r: r["steps"])
    slowest = min(r["learning_rate"] for r in converged)
    lines = [
        f"Steps to converge under the parameter-change tolerance (`tol = {s.cfg.stopping.tol:g}`, at most "
        f"{s.cfg.run.num_steps} steps):",
        "",
        *table(["regime", "learning rate", "lr x L", "status", "steps to converge", "final f - f*"], rows),
        "",
        f"- Observed boundary: lr = {fmt(stable)} (did not diverge) and lr = {fmt(diverged)} (diverged), "
        f"vs 2/L = {fmt(bound)}: the boundary sits within a factor {fmt(diverged / stable, 3)} bracket "
        f"around 2/L ({fmt(stable / bound, 3)} x 2/L to {fmt(diverged / bound, 3)} x 2/L).",
        f"- In the sweep, {len(converged)} of {len(sweep)} learning rates converged within the budget, "
        f"from lr = {fmt(slowest)} up; the fastest was lr = {fmt(fastest['learning_rate'])} "
        f"({fmt(fastest['learning_rate'] / bound, 3)} x 2/L) in {fastest['steps']} steps. With mu = "
        f"{fmt(p['mu'])}, the slow direction contracts by at best |1 - lr mu| = "
        f"{fmt(1 - fastest['learning_rate'] * p['mu'])} per step, so even the best constant step needs "
        "hundreds of steps: the cost of a condition number near 100.",
    ]
    return lines


def notes_quadratics(s: Study) -> list[str]:
    rows = []
    for cost in ("quadratic", "shifted"):
        for r in sorted(s.of("gd", cost=cost), key=lambda r: r["learning_rate"]):
            x = float(s.arrays[f"{cost}.gd/params/x"][r["lane"], 0])
            steps = r["steps"] if r["status"] == "converged" else f"({r['steps']})"
            rows.append([cost, r["learning_rate"], abs(1 - 2 * r["learning_rate"]), r["status"], steps, x])
    return [
        "Both costs have f'' = 2 (L = 2, 2/L = 1), so each step multiplies the error x - x* by (1 - 2 lr):",
        "",
        *table(["cost", "learning rate", "contraction abs(1 - 2 lr)", "status", "steps", "final x"], rows),
        "",
        "- lr = 0.5 lands on the minimum in one step; lr = 0.1 and lr = 0.9 contract equally fast "
        "(0.8 per step), one from one side, the other alternating sides, so their curves coincide.",
        "- lr = 1 bounces between x* + 10 and x* - 10 for ever (it never meets the tolerance), lr = 1.1 "
        "diverges. The shift changes nothing but where the minimum is.",
    ]


def notes_house_prices(s: Study) -> list[str]:
    X, y = data.house_prices()
    exact = reference.least_squares(X, y, full_output=True)
    z = data.Standardizer.fit(X)
    rows = [["least squares (closed form)", float(exact.params["w"][0]), float(exact.params["b"]), 0.0, "-"]]
    for b in experiment.best_configurations(s.rows):
        name, lane = b["optimizer"], b["lanes"][0]
        fit = z.unstandardize(
            {"w": s.arrays[f"{name}/params/w"][lane], "b": s.arrays[f"{name}/params/b"][lane]}
        )
        diff = max(abs(float(fit["w"][0] - exact.params["w"][0])), abs(float(fit["b"] - exact.params["b"])))
        rows.append(
            [
                f"{name} (lr = {fmt(b['learning_rate'])})",
                float(fit["w"][0]),
                float(fit["b"]),
                diff,
                b["steps"],
            ]
        )
    return [
        f"Fitted line price = w x bedrooms + b (coefficients mapped back from the standardised feature); "
        f"f* = {fmt(exact.f_star, 8)}:",
        "",
        *table(["fit", "w", "b", "max abs difference from closed form", "steps"], rows),
    ]


def notes_batch_vs_stochastic(s: Study) -> list[str]:
    n = s.problem()["num_examples"]
    rows = []
    for opt in s.cfg.optimizers:
        mine = s.of(opt.label)
        b = mine[0]["batch_size"] or n
        for lr in opt.axes()["learning_rate"]:
            lanes = [r for r in mine if np.isclose(r["learning_rate"], lr)]
            rows.append([opt.label, b, mine[0]["steps"], mine[0]["steps"] * b, lr, s.median(lanes)])
    full = min(r[5] for r in rows if r[0] == "full_batch")
    sgd = min(r[5] for r in rows if r[0] == "stochastic")
    return [
        "Median final f - f* over the seeds, every learning rate:",
        "",
        *table(
            ["optimizer", "batch size", "steps", "examples processed", "learning rate", "final f - f*"], rows
        ),
        "",
        f"- At the same 5000 examples, full-batch GD reaches f - f* = {fmt(full)}; the best stochastic "
        f"run stops improving around {fmt(sgd)} ({fmt(sgd / full, 2)} x higher): a constant step cannot "
        "average out the sampling noise.",
        "- Per epoch, early progress is the same for all three at their best learning rates (the loss "
        "curves overlap for the first ~20 epochs); larger stochastic steps go faster early but settle "
        "at a higher noise floor (per-optimizer figures).",
    ]


def notes_optimizers(s: Study) -> list[str]:
    best = experiment.best_configurations(s.rows)
    ranked = sorted(best, key=lambda b: b["suboptimality"])
    order = ", ".join(f"{b['optimizer']} ({fmt(b['suboptimality'])})" for b in ranked)
    p = s.problem()
    lines = [
        f"- Ranked by median final f - f* after {s.cfg.run.num_steps} steps at each one's best learning "
        f"rate: {order}.",
        f"- GD's stable learning rates end at 2/L = {fmt(p['max_stable_lr'])}: every GD lane with a larger "
        f"one diverged ({sum(r['status'] == 'diverged' for r in s.of('gd'))} of {len(s.of('gd'))} GD lanes).",
    ]
    if p["condition_number"] > 100:
        lines.append(
            f"- With L/mu = {fmt(p['condition_number'])}, GD's error along the flattest direction shrinks by "
            f"at most 1 - 2 mu/(L + mu) = {fmt(1 - 2 * p['mu'] / (p['L'] + p['mu']))} per step, so it is "
            "still far from f* when the budget ends; momentum helps. The ill-conditioning of this data is "
            "axis-aligned (features on different scales), which the per-coordinate scaling of AdaGrad and "
            "Adam undoes: they do best here, and would not on a rotated problem."
        )
    return lines


def notes_decay(s: Study) -> list[str]:
    f_star = s.problem()["f_star"]
    rows = []
    for opt in s.cfg.optimizers:
        mine = s.of(opt.label)
        configs: dict[tuple, list[dict]] = {}
        for r in mine:
            configs.setdefault(tuple(r.get(k) for k in opt.axes()), []).append(r)
        for key, lanes in configs.items():
            losses = s.arrays[f"{opt.label}/loss_history"][[r["lane"] for r in lanes]]
            at = [float(np.median(losses[:, t]) - f_star) for t in (500, 2000, losses.shape[1] - 1)]
            step = {"constant": "lr", "inverse_sqrt": "lr / sqrt(t + 1)", "inverse_time": "lr / (1 + d t)"}
            hp = ", ".join(f"{k} = {fmt(v)}" for k, v in zip(opt.axes(), key, strict=True))
            hp = hp or ", ".join(f"{k} = {fmt(v)}" for k, v in opt.fixed().items())
            rows.append([opt.label, step[opt.schedule], hp, *at])
    constant = [r for r in rows if r[0] == "constant"]
    decayed = min(r[5] for r in rows if r[0] != "constant")
    return [
        "Median f - f* over five seeds after 500, 2000 and 5000 stochastic steps:",
        "",
        *table(["optimizer", "step size", "hyperparameters", "t = 500", "t = 2000", "t = 5000"], rows),
        "",
        f"- Each constant step stalls at a noise floor that grows with the step (from {fmt(constant[0][5])} "
        f"at lr = {constant[0][2].split('= ')[1]} to {fmt(constant[-1][5])} at the largest): the large step "
        "gets there first and then goes no further.",
        f"- The decaying steps keep going down; the best ends at {fmt(decayed)}, "
        f"{fmt(min(r[5] for r in constant) / decayed, 2)} x below the best constant step.",
        "- The textbook lr / (1 + t) (decay_rate = 1) shrinks the step so fast that it crawls: its steps "
        "add up to only lr x ln(t).",
    ]


def notes_digits(s: Study) -> list[str]:
    best = experiment.best_configurations(s.rows, "test_loss")
    fit = experiment.best_configurations(s.rows)
    p = s.problem()
    n_test = round(s.cfg.data.test_fraction * (p["num_examples"] / (1 - s.cfg.data.test_fraction)))
    rows = []
    for b, f in zip(best, fit, strict=True):
        rows.append(
            [
                b["optimizer"],
                b["learning_rate"],
                b["test_loss"],
                b["test_accuracy"],
                f["learning_rate"],
                f["final_loss"],
                f["test_loss"],
                f["test_accuracy"],
            ]
        )
    top = max(b["test_accuracy"] for b in best)
    leaders = ", ".join(b["optimizer"] for b in best if b["test_accuracy"] == top)
    worst = sorted(best, key=lambda b: b["test_accuracy"])[:2]
    edge = all(
        f["learning_rate"] == max(opt.axes()["learning_rate"])
        for f, opt in zip(fit, s.cfg.optimizers, strict=True)
    )
    gd = sorted(s.of("gd"), key=lambda r: r["learning_rate"])
    turn = min(gd, key=lambda r: r["test_loss"])
    return [
        f"{p['num_examples']} training images, {n_test} held out (drawn with seed {s.cfg.seeds[0]}); the "
        "best learning rate of each optimizer by held-out loss (the table above) against the one with "
        "the lowest training loss:",
        "",
        *table(
            [
                "optimizer",
                "lr (by test loss)",
                "test loss",
                "test accuracy",
                "lr (by training loss)",
                "training loss",
                "test loss",
                "test accuracy",
            ],
            rows,
        ),
        "",
        "- Every optimizer fits the training images almost perfectly; ranked by training loss "
        + ("the largest learning rate of every grid wins" if edge else "the largest learning rates win")
        + ", ranked by held-out loss the winner sits inside the grid. "
        f"For GD the held-out loss falls to {fmt(turn['test_loss'])} at lr = {fmt(turn['learning_rate'])} "
        f"and rises again to {fmt(gd[-1]['test_loss'])} at lr = {fmt(gd[-1]['learning_rate'])}, while "
        f"its training loss keeps falling ({fmt(turn['final_loss'])} to {fmt(gd[-1]['final_loss'])}): "
        "in 300 steps, a larger step is less early stopping, and an unregularised softmax overfits.",
        f"- The best held-out accuracy is {fmt(top)} ({leaders}); the lowest are "
        f"{worst[0]['optimizer']}'s ({fmt(worst[0]['test_accuracy'])}) and {worst[1]['optimizer']}'s "
        f"({fmt(worst[1]['test_accuracy'])}).",
        "- f* is unknown, so `f - best` is the final training loss minus the lowest loss any lane of the "
        "study reached.",
    ]


NOTES = {
    "default": notes_default,
    "lr_regimes": notes_lr_regimes,
    "quadratics": notes_quadratics,
    "house_prices": notes_house_prices,
    "batch_vs_stochastic": notes_batch_vs_stochastic,
    "optimizers_well": notes_optimizers,
    "optimizers_ill": notes_optimizers,
    "decay": notes_decay,
    "digits": notes_digits,
}


def suite_section(s: Study) -> list[str]:
    """The suite's comparison, computed from the run folder's `Results` (as `gdjax report` does)."""
    import pandas as pd

    from gdjax import study as study_face

    r = study_face.load(s.folder)
    problems = [
        [
            p["problem"],
            "-" if pd.isna(p["num_examples"]) else int(p["num_examples"]),
            p["num_params"],
            fmt(float(p["f_star"]), 8),
            p["f_star_source"],
        ]
        for p in r.problems.to_dict("records")
    ]
    lines = [
        "Problems and their reference optima:",
        "",
        *table(["problem", "examples", "parameters", "f*", "f* from"], problems),
        "",
    ]
    rows = []
    for opt in dict.fromkeys(r.lanes["optimizer"]):
        row = [opt]
        for eps in (1e-1, 1e-3, 1e-6):
            sc = r.scores(eps, unit="steps").set_index("optimizer").loc[opt]
            row.append(f"{sc['score']:.2f} [{sc['ci_low']:.2f}, {sc['ci_high']:.2f}]")
        rows.append(row)
    lines += [
        "Scores (area under the performance profile for tau in [1, 4], / 3; time in steps to reach "
        "f <= f* + eps (f0 - f*) for each optimizer's fastest learning rate per problem, median over "
        "seeds), with 95% bootstrap intervals over the nine problems:",
        "",
        *table(["optimizer", "eps = 0.1", "eps = 0.001", "eps = 1e-6"], rows),
        "",
    ]
    pairs = []
    names = list(dict.fromkeys(r.lanes["optimizer"]))
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            c = r.compare(a, b, by="suboptimality").iloc[0]
            pairs.append(
                [
                    a,
                    b,
                    c["median_difference"],
                    f"[{fmt(c['ci_low'])}, {fmt(c['ci_high'])}]",
                    c["probability_of_improvement"],
                    c["p_value"],
                    int(c["num_pairs"]),
                ]
            )
    verdict = r.best_statement(by="suboptimality")
    lines += [
        "Paired comparisons of the final f - f* of each optimizer's best configuration, over every "
        "(problem, seed) pair (a - b: negative favours a):",
        "",
        *table(["a", "b", "median a - b", "95% interval", "P(a better)", "Wilcoxon p", "pairs"], pairs),
        "",
        verdict
        or "No optimizer is significantly better than every other one here: the report says so "
        "rather than name a winner.",
        "",
        "The whole comparison, with its figures, is the run folder's `report.html` "
        "(`gdjax report runs/studies/suite` re-renders it).",
        "",
    ]
    for name in ("performance_profile", "data_profile", "loss_curves"):
        png = s.folder / "figures" / f"{name}.png"
        if png.exists():
            target = FIGURES / f"suite-{name}.png"
            shutil.copyfile(png, target)
            lines += [f"![suite: {name}](figures/{target.name})", ""]
    return lines


# ------------------------------------------------------------------------------------------ README
def section(study: Study) -> list[str]:
    m = study.manifest
    command = f"gdjax run {study.cfg_path}" if study.cfg_path else "gdjax run"
    checks = m["gradcheck"]
    checks = "; ".join(checks.values()) if isinstance(checks, dict) else checks
    lines = [
        f"## {TITLES[study.name]}",
        "",
        " ".join(study.cfg.description.split()),
        "",
        f"```\n{command}\n```",
        "",
    ]
    if study.cfg.is_suite:
        lines += [
            f"Precision {study.cfg.precision}; gradient checks: all PASS."
            if all(v.startswith("PASS") for v in m["gradcheck"].values())
            else f"Gradient checks: {checks}.",
            "",
        ]
        lines += suite_section(study)
    else:
        lines += [
            f"Problem: {problem_line(study)}. Precision {study.cfg.precision}; gradient check: {checks}.",
            "",
            "Best configuration of each optimizer (pooled over seeds; all lanes counted on the right):",
            "",
            *best_table(study),
            "",
            *NOTES[study.name](study),
            "",
        ]
    for png in m.get("plots", []):
        target = FIGURES / f"{study.name}-{png}"
        shutil.copyfile(study.folder / png, target)
        lines += [f"![{study.name}: {png[:-4]}](figures/{target.name})", ""]
    reused = (
        " (programs compiled for an earlier study of the same shapes, reused)"
        if m["compile_seconds"] < 0.05
        else ""
    )
    lines += [
        f"<sub>{sum(u['lanes'] for u in m['units'].values())} runs in {len(m['units'])} compiled sweeps: "
        f"compile {m['compile_seconds']:.1f} s{reused}, run {m['run_seconds']:.2f} s.</sub>",
        "",
    ]
    return lines


def write_readme(studies: list[Study]) -> None:
    m = studies[0].manifest
    lines = [
        "# The classic gradient-descent studies",
        "",
        "Generated by `python experiments/run_studies.py` from the run folders of `gdjax run` (do not edit "
        "by hand). Each study is a config in [`configs/`](../configs); every number and figure below "
        "comes from its run folder (`summary.json`, `manifest.json`, `histories.npz`).",
        "",
        f"Machine: {m['backend']} ({', '.join(m['devices'])}), jax {m['jax']}, optax {m['optax']}, "
        f"numpy {m['numpy']}, python {m['python']}.",
        "",
        "Conventions: `f - f*` is the final loss minus the closed-form optimum (`f - best`, where f* is "
        "unknown: minus the lowest loss any lane of the study reached); a lane is one run (one "
        "configuration and seed); `converged` means the stopping tolerance was met, `max_steps` that the "
        "budget ran out, `diverged` that the loss exceeded 100x its start. Where seeds vary, figures "
        "show the median with a min-max band.",
        "",
    ]
    for study in studies:
        lines += section(study)
    (HERE / "README.md").write_text("\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", choices=[n for n, _ in STUDIES], help="rerun only these"
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "studies"), help="where the run folders go")
    args = parser.parse_args(argv)
    out_root = pathlib.Path(args.out)
    for name, cfg_path in STUDIES:
        if args.only is None or name in args.only:
            run_study(name, cfg_path, out_root)
    # Reading the float64 studies back builds float64 arrays: as the CLI does, turn float64 on.
    jax.config.update("jax_enable_x64", True)
    if FIGURES.exists():
        shutil.rmtree(FIGURES)
    FIGURES.mkdir(parents=True)
    studies = [Study(name, cfg_path, out_root / name) for name, cfg_path in STUDIES]
    write_readme(studies)
    print(f"wrote {HERE / 'README.md'} and {len(list(FIGURES.iterdir()))} figures", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
