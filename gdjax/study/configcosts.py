"""The config's data and cost tables: `[data]`, `[cost]` / `[[cost]]` and a suite's `[[problems]]`.

The losses and test functions a cost may name are the cost registry's (`gdjax.study.problems.COSTS`),
read when a config is; file references (`"file.py:name"`) are resolved against the config's folder.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from gdjax.study import problems as problems_lib
from gdjax.study.configbase import (
    DATA_SOURCES,
    FILE_SOURCES,
    MODELS,
    CostConfig,
    DataConfig,
    Table,
    label_error,
    toml_type,
)
from gdjax.study.tomltext import fmt_path

__all__ = ["read_cost_table", "read_data_table", "read_problem_table"]


_SYNTHETIC_DEFAULTS = {
    "num_examples": 200,
    "num_features": 5,
    "noise": 0.1,
    "condition_number": 1.0,
    "intercept": 1.0,
    "seed": 0,
}


def read_data_table(t: Table) -> DataConfig:
    source = t.str("source", choices=DATA_SOURCES, what="data source")
    standardize = t.bool("standardize", False)
    kw: dict[str, Any] = {}
    if source == "synthetic":
        kw["num_examples"] = t.int("num_examples", _SYNTHETIC_DEFAULTS["num_examples"], minimum=1)
        kw["num_features"] = t.int("num_features", _SYNTHETIC_DEFAULTS["num_features"], minimum=1)
        kw["noise"] = t.float("noise", _SYNTHETIC_DEFAULTS["noise"], minimum=0.0)
        kw["condition_number"] = t.float("condition_number", 1.0, minimum=1.0)
        kw["intercept"] = t.float("intercept", 1.0)
        kw["seed"] = t.int("seed", 0, minimum=0)
    elif source in FILE_SOURCES:
        path = t.str("path")
        if not os.path.isabs(path) and t.src.base_dir is not None:
            path = os.path.join(t.src.base_dir, path)
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            if os.path.exists(path):  # a folder, a FIFO, a device: never opened (a FIFO would block)
                t.fail("path", f"{path} is not a regular file, so not a data file")
            t.fail("path", f"data file not found: {path}")
        kw["path"] = path
        if source == "csv":
            kw["target"] = _column(t, "target", t.take("target", -1))
            features = t.list("features", None)
            if features is not None:
                if not features:
                    t.fail("features", "needs at least one column (or leave it out for all others)")
                kw["features"] = tuple(_column(t, ("features", i), c) for i, c in enumerate(features))
            exclude = t.list("exclude", None)
            if exclude is not None:
                if features is not None:
                    t.fail(
                        "exclude",
                        "give either features (the columns to use) or exclude (the columns to leave out)",
                    )
                kw["exclude"] = tuple(_column(t, ("exclude", i), c) for i, c in enumerate(exclude)) or None
        else:
            kw["x_key"] = t.str("x_key", "X")
            kw["y_key"] = t.str("y_key", "y")
    classes = t.list("classes", None)
    if classes is not None:
        values = tuple(t.check_float(("classes", i), c) for i, c in enumerate(classes))
        if len(values) < 2:
            t.fail("classes", f"needs at least two target values to tell apart, got {classes}")
        if len(set(values)) != len(values):
            t.fail("classes", f"lists a class twice: {classes}")
        kw["classes"] = values
    test_fraction = t.float("test_fraction", None)
    if test_fraction is not None and not 0.0 < test_fraction < 1.0:
        t.fail(
            "test_fraction",
            f"is the fraction of the examples held out for testing, strictly between 0 and 1 "
            f"(e.g. 0.25), got {test_fraction!r}",
        )
    kw["test_fraction"] = test_fraction
    kw["split_per_seed"] = t.bool("split_per_seed", False)
    if kw["split_per_seed"] and test_fraction is None:
        t.fail("split_per_seed", "draws a held-out split per seed: give test_fraction too (e.g. 0.25)")
    hint = f" for source {source!r}" if source else ""
    t.finish(hint)
    return DataConfig(source=source, standardize=standardize, **kw)


def _read_reference(t: Table, key, what: str, value: str | None = None) -> str:
    """A `"file.py:name"` (a path, relative to the config's folder) or `"module:name"` reference.

    Files are resolved to absolute paths and must exist; modules are imported later, when the
    problem is built (importing runs the user's code). `value` is given for an entry of an array
    (`key` is then `("metrics", i)`).
    """
    if value is None:
        value = t.str(key)
    elif not isinstance(value, str):
        t.fail(key, f'expected a "file.py:{what}" or "module:{what}" string, got {toml_type(value)}')
    shown = fmt_path(key) if isinstance(key, tuple) else key
    usage = f'{shown} = "file.py:{what}" (a path relative to this config) or "module:{what}"'
    target, sep, name = value.rpartition(":")
    if not sep or not target.strip() or not name.strip():
        t.fail(key, f"expected {usage}, got {value!r}")
    if not all(part.isidentifier() for part in name.split(".")):
        t.fail(key, f"{name!r} is not a Python name; expected {usage}")
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = target
        if not os.path.isabs(path) and t.src.base_dir is not None:
            path = os.path.join(t.src.base_dir, path)
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            t.fail(
                key, f"file not found: {path} (from {value!r}; relative paths start at the config's folder)"
            )
        return f"{path}:{name}"
    if not all(part.isidentifier() for part in target.split(".")):
        t.fail(key, f"{target!r} is neither a .py file nor a module name; expected {usage}")
    return value


def _column(t: Table, key, value):
    if isinstance(value, bool) or not isinstance(value, int | str):
        t.fail(key, f"a column is a header name or an index, got {toml_type(value)}")
    return value


_DEFAULT_START = {"quadratic": 10.0, "shifted_quadratic": 10.0, "ill_conditioned_quadratic": 1.0}


def read_problem_table(t: Table, default_data: DataConfig | None) -> CostConfig:
    """A `[[problems]]` entry: a cost table's keys (`label` required) and optionally its own `data`
    table; without one it reads the study's `[data]`."""
    if "label" not in t.values:
        t.take("label", None)
        t.fail("label", 'each problem of a suite needs a label = "..." (its name in every table and figure)')
    data_table = t.table("data", None)
    data_cfg = read_data_table(data_table) if data_table is not None else None
    cost = read_cost_table(t, (data_cfg or default_data) is not None)
    if data_cfg is not None and cost.function is not None:
        t.fail("data", "test functions take no data: remove this problem's data table")
    return dataclasses.replace(cost, data=data_cfg)


def _read_metrics(t: Table) -> tuple[str, ...] | None:
    """`metrics = ["file.py:fn", "module:fn"]`: the user's metrics, by distinct function names."""
    raw = t.list("metrics", None, scalar_ok=True)
    if raw is None:
        return None
    refs = tuple(_read_reference(t, ("metrics", i), "metric", v) for i, v in enumerate(raw))
    seen: dict[str, int] = {}
    for i, ref in enumerate(refs):
        name = ref.rpartition(":")[2].rpartition(".")[2]
        if name in seen:
            t.fail(("metrics", i), f"two metrics are named {name!r} (entries {seen[name]} and {i})")
        seen[name] = i
    return refs or None


def read_cost_table(t: Table, has_data: bool) -> CostConfig:
    kinds = [k for k in ("model", "function", "callable") if k in t.values]
    if len(kinds) != 1:
        t.fail(
            None,
            "a cost needs exactly one of 'model' (linear, polynomial), 'function' "
            f"({', '.join(problems_lib.names('function'))}) or 'callable' "
            '("file.py:function", your own cost)'
            + (f"; got {' and '.join(map(repr, kinds))}" if kinds else ""),
        )
    init_noise = t.float("init_noise", 0.0, minimum=0.0)
    metrics = _read_metrics(t)
    init = _read_reference(t, "init", "init") if "init" in t.values else None
    t.take("init", None)
    if init is not None and init_noise:
        t.fail("init_noise", "init(key) draws each seed's start: put the noise in it, or drop init")
    if kinds[0] == "callable":
        callable_ = _read_reference(t, "callable", "cost")
        if init is not None and "params0" in t.values:
            t.fail("params0", "give either params0 (one start) or init (a start per seed), not both")
        if "params0" not in t.values and init is None:
            t.take("params0", None)
            t.fail(
                "params0",
                "a callable cost needs its start: params0 = [0.0, 0.0] (a vector) or params0 = "
                '"file.py:init" (a function init() or init(data) returning the params pytree), or '
                'init = "file.py:init" (init(key), a start per seed)',
            )
        raw = t.values.get("params0")
        if raw is None:
            params0 = None
        elif isinstance(raw, str):
            params0 = _read_reference(t, "params0", "init")
        else:
            values = t.list("params0", scalar_ok=True)
            if not values:
                t.fail("params0", "needs at least one number")
            params0 = tuple(t.check_float(("params0", i), v) for i, v in enumerate(values))
        analytic = _read_reference(t, "analytic", "grad") if "analytic" in t.values else None
        t.take("analytic", None)
        label = t.str("label", callable_.rpartition(":")[2].replace(".", "_"))
        t.finish(" for a callable cost")
        cfg = CostConfig(
            label=label, callable=callable_, params0=params0, analytic=analytic, init_noise=init_noise
        )
    elif kinds[0] == "model":
        model = t.str("model", choices=MODELS, what="model")
        degree = t.int("degree", minimum=1) if model == "polynomial" else None
        loss = t.str("loss", "mse", choices=problems_lib.names("loss"), what="loss")
        if problems_lib.COSTS[loss].linear_only and model != "linear":
            t.fail("loss", f'loss = "{loss}" fits a linear model (set model = "linear"), not a {model} one')
        label = t.str("label", model if degree is None else f"{model}{degree}")
        l2 = t.float("l2", None, minimum=0.0)
        if not has_data:
            t.fail("model", "a model cost needs a [data] table to fit")
        t.finish(f" for model {model!r}")
        cfg = CostConfig(
            label=label, model=model, degree=degree, loss=loss, init_noise=init_noise, l2=l2 or None
        )
    else:
        function = t.str("function", choices=problems_lib.names("function"), what="test function")
        condition_number = None
        if function == "ill_conditioned_quadratic":
            condition_number = t.float("condition_number", minimum=1.0)
        raw_start = t.take("start", None)
        dim = t.int("dim", None, minimum=2 if function == "rosenbrock" else 1)
        if raw_start is None:
            dim = dim or 2
            start = _default_start(function, dim)
        else:
            values = raw_start if isinstance(raw_start, list) else [raw_start]
            start = tuple(t.check_float(("start", i), v) for i, v in enumerate(values))
            if not start:
                t.fail("start", "needs at least one coordinate")
            if not isinstance(raw_start, list):
                start = start * (dim or 1)
            if dim is not None and len(start) != dim:
                t.fail("start", f"has {len(start)} coordinates but dim = {dim}")
            dim = len(start)
            if function == "rosenbrock" and dim < 2:
                t.fail("start", "rosenbrock needs at least 2 coordinates")
        label = t.str("label", function)
        t.finish(f" for function {function!r}")
        cfg = CostConfig(
            label=label,
            function=function,
            dim=dim,
            condition_number=condition_number,
            start=start,
            init_noise=init_noise,
        )
    if (why := label_error(cfg.label)) is not None:
        t.fail("label", why)
    return dataclasses.replace(cfg, metrics=metrics, init=init)


def _default_start(function: str, dim: int) -> tuple[float, ...]:
    if function == "rosenbrock":
        return tuple(-1.2 if i % 2 == 0 else 1.0 for i in range(dim))
    return (_DEFAULT_START[function],) * dim
