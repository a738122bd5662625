"""The two floors stay visible: the core never imports the study face, and imports point downward."""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "gdjax"
CORE = sorted(p for p in PACKAGE.glob("*.py"))
STUDY = sorted((PACKAGE / "study").glob("*.py"))
# The study face's modules, lowest first: each may import the core and the modules before it.
STUDY_ORDER = [
    "usercode",
    "datasets",
    "problems",
    "tomltext",
    "configbase",
    "configcosts",
    "configgrids",
    "config",
    "palette",
    "runfolder",
    "summary",
    "preflight",
    "parts",
    "provenance",
    "programs",
    "experiment",
]
STUDY_ORDER += [
    "statbase",
    "profiles",
    "statistics",
    "results_schema",
    "results_table",
    "results_model",
    "figures",
    "plotstyle",
    "curveplots",
    "sweepplots",
    "landscapeplots",
    "plots",
    "page",
    "report",
    "drawing",
    "cli",
    "command",
]


def _gdjax_imports(path: pathlib.Path) -> set[str]:
    """Every `gdjax...` module a file imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "gdjax"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gdjax":
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_import_gdjax_loads_neither_the_study_face_nor_matplotlib():
    code = (
        "import sys, gdjax\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('gdjax.study', 'matplotlib')))\n"
        "assert not bad, bad\n"
        "gdjax.run, gdjax.sweep, gdjax.check_grad, gdjax.GDRegressor\n"
        "assert not [m for m in sys.modules if m.startswith('gdjax.study')]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_old_spellings_load_the_study_face_on_first_use():
    code = (
        "import sys, gdjax\n"
        "assert gdjax.load_config is gdjax.study.config.load\n"
        "assert gdjax.ConfigError.__module__ == 'gdjax.study.config'\n"
        "assert callable(gdjax.run_experiment) and gdjax.ExperimentConfig\n"
        "assert 'gdjax.study.config' in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", CORE, ids=[p.name for p in CORE])
def test_core_never_imports_the_study_face(path):
    bad = sorted(m for m in _gdjax_imports(path) if m.startswith("gdjax.study"))
    if path.name == "__init__.py":  # names the study modules only as strings, for lazy loading
        assert not bad
    if path.name == "__main__.py":  # `python -m gdjax`: the console script's entry, never imported
        assert bad == ["gdjax.study.command", "gdjax.study.command.main"], bad  # by `import gdjax`
        return
    assert not bad, f"{path.name} imports {bad}"


def test_python_m_gdjax_is_only_the_commands_entry_point():
    code = "import sys, gdjax, gdjax.loop\nassert 'gdjax.__main__' not in sys.modules\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_every_study_module_has_a_place_in_the_order():
    assert sorted(p.stem for p in STUDY if p.stem != "__init__") == sorted(STUDY_ORDER)


@pytest.mark.parametrize("name", STUDY_ORDER)
def test_study_modules_import_only_downward(name):
    path = PACKAGE / "study" / f"{name}.py"
    above = set(STUDY_ORDER[STUDY_ORDER.index(name) :])
    bad = sorted(m for m in _gdjax_imports(path) if m.startswith("gdjax.study.") and m.split(".")[2] in above)
    assert not bad, f"gdjax.study.{name} imports {bad}, which sit at or above it"


CONFIG_STAGE = {"config", "configbase", "configcosts", "configgrids", "datasets", "problems", "preflight"}


def test_a_config_passes_the_config_and_problem_modules_once(tmp_path, monkeypatch):
    # `gdjax run CONFIG` down to the report: once the first results exist (gdjax.study.parts), the
    # orchestration (cli, experiment) never goes back to the config or problem modules, and the
    # report is drawn from the run it holds, not the folder read back.
    from gdjax.study import drawing, figures
    from tests.helpers import run_cli
    from tests.test_faults import TINY  # no gradient check, no plots

    study = TINY.replace("num_steps = 200", "num_steps = 20")
    study = study.replace(
        'rule = "momentum"\ngrid.learning_rate = [0.01, 0.1]\n', 'rule = "adam"\ngrid.learning_rate = 0.1\n'
    )

    monkeypatch.setattr(figures, "draw", lambda results, names=None: {})  # the page without its figures: fast
    monkeypatch.setattr(drawing, "start", lambda: None)  # drawn in this process, where the patch holds
    (tmp_path / "flow.toml").write_text(study.replace("grid.momentum = 0.9\n", ""))
    orchestrators = ("gdjax.study.cli", "gdjax.study.experiment")
    flow, loads = [], []

    def record(frame, event, arg):
        if event != "call":
            return
        module = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "_load_run_folder":
            loads.append(module)
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        if module.startswith("gdjax.study.") and caller in orchestrators and caller != module:
            flow.append(module.split(".")[2])

    sys.setprofile(record)
    try:
        code, _, err = run_cli("run", str(tmp_path / "flow.toml"), "--out", str(tmp_path / "run"), "-q")
    finally:
        sys.setprofile(None)
    assert code == 0, err
    assert (tmp_path / "run" / "report.html").is_file()
    assert "parts" in flow and "report" in flow and "page" in flow
    after = flow[flow.index("parts") :]
    assert not CONFIG_STAGE & set(after), after
    assert not loads
