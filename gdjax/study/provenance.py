"""Where a run came from, for its manifest: the time, the git commit, the versions and devices, and
what each problem is (size, f* and how it was found, curvature, the minimiser)."""

from __future__ import annotations

import datetime
import platform
import subprocess
from typing import Any

import jax
import numpy as np

from gdjax._version import __version__
from gdjax.study.problems import Problem

__all__ = ["git_commit", "now", "per_seed_info", "problem_info", "versions"]


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def versions() -> dict:
    import optax

    try:
        devices = [str(d) for d in jax.devices()]
        backend = jax.default_backend()
    except RuntimeError:  # no backend could start
        devices, backend = [], None
    return {
        "gdjax": __version__,
        "jax": jax.__version__,
        "jaxlib": _dist_version("jaxlib"),
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backend": backend,
        "devices": devices,
    }


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def problem_info(p: Problem) -> dict:
    info: dict[str, Any] = {"num_params": p.num_params, "f_star": p.f_star, **p.curvature}
    if p.f_star_source:
        info["f_star_source"] = p.f_star_source
    if p.dataset is not None:
        info["num_examples"] = int(p.dataset.X.shape[0])
        info["num_features"] = int(p.dataset.X.shape[1])
    if p.minimizer is not None:
        info["minimizer"] = jax.tree.map(lambda x: np.asarray(x, np.float64).tolist(), p.minimizer)
        if p.dataset is not None and p.dataset.standardizer is not None and p.config.model == "linear":
            raw = p.dataset.standardizer.unstandardize(p.minimizer)
            info["minimizer_original_scale"] = jax.tree.map(lambda x: np.asarray(x).tolist(), raw)
    return info


def per_seed_info(p: Problem, seeds, per_seed: dict) -> dict:
    """The manifest's f* of a problem split per seed (`per_seed`: `{(label, seed): problem}`, from
    `gdjax.study.preflight.seed_problems`): one per seed (`f_star_per_seed`), none overall."""
    if (p.label, seeds[0]) not in per_seed:
        return {}
    values = {str(s): per_seed[(p.label, s)].f_star for s in seeds}
    if all(v is None for v in values.values()):
        return {}
    source = f"{p.f_star_source}, on each seed's training split" if p.f_star_source else "each seed's split"
    return {"f_star": None, "f_star_source": source, "f_star_per_seed": values}
