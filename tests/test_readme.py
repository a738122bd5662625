"""Every Python snippet in the README runs as written, each in a fresh process, in a temp dir.

A fresh process per snippet, but not a fresh interpreter's imports: the snippets run in children
forked from a `multiprocessing` fork server that has imported JAX, Optax and gdjax and done nothing
else (no device, no config change, no computation), so each child starts in the state a new
interpreter is in after `import jax, optax, gdjax`. A snippet still needs its own imports (it runs
in an empty namespace) and sets its own JAX options. That saves about 2 s of imports per snippet. A
snippet that reads or sets environment variables (which JAX reads when it is imported) runs in a
new interpreter instead.
"""

import multiprocessing
import os
import pathlib
import re
import subprocess
import sys
import traceback

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SNIPPETS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
PRELOAD = ["jax", "jax.numpy", "optax", "gdjax"]
TIMEOUT = 300


def test_readme_has_snippets():
    assert len(SNIPPETS) >= 3


def _run_snippet(code: str, cwd: str, out_path: str, err_path: str) -> None:
    """The child: stdout and stderr (file descriptors 1 and 2, so warnings and C-level output too) go
    to files; the snippet runs as `__main__`; an exception is printed and exits with 1."""
    os.chdir(cwd)
    sys.path[0:0] = [""]  # as `python -c` does: the working folder first
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, path in ((1, out_path), (2, err_path)):
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(handle, fd)
        os.close(handle)
    code_object = compile(code, "<readme snippet>", "exec")
    try:
        exec(code_object, {"__name__": "__main__", "__builtins__": __builtins__})
    except SystemExit as err:
        sys.stdout.flush()
        os._exit(err.code if isinstance(err.code, int) else 1)
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


@pytest.fixture(scope="module")
def forkserver():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _in_forked_child(context, code: str, tmp_path: pathlib.Path) -> tuple[int, str, str]:
    out, err = tmp_path / ".stdout", tmp_path / ".stderr"
    child = context.Process(target=_run_snippet, args=(code, str(tmp_path), str(out), str(err)))
    child.start()
    child.join(TIMEOUT)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"the snippet ran for more than {TIMEOUT} s")
    return child.exitcode, out.read_text(), err.read_text()


def _in_new_interpreter(code: str, tmp_path: pathlib.Path) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tmp_path, forkserver):
    code = SNIPPETS[index]
    if "environ" in code or "getenv" in code:
        returncode, stdout, stderr = _in_new_interpreter(code, tmp_path)
    else:
        returncode, stdout, stderr = _in_forked_child(forkserver, code, tmp_path)
    assert returncode == 0, stderr[-3000:]
    assert stdout.strip(), "a README snippet should print what it shows"


def test_a_snippet_runs_as_a_new_interpreter_would_run_it(tmp_path, forkserver):
    """The forked child's JAX is as imported: float32 and the default rank promotion (the suite's
    conftest sets float64 and `raise` in its own process only), no device started before the fork,
    and a failing snippet's traceback and exit status come back."""
    code = (
        "import jax, jax.numpy as jnp\n"
        "print(jnp.ones(3).dtype, jax.config.jax_numpy_rank_promotion)\n"
        "import os; print(os.getcwd())\n"
    )
    returncode, stdout, stderr = _in_forked_child(forkserver, code, tmp_path)
    assert returncode == 0, stderr
    assert stdout.split() == ["float32", "allow", str(tmp_path)]
    assert _in_new_interpreter(code, tmp_path)[1] == stdout
    returncode, _, stderr = _in_forked_child(forkserver, "import gdjax\nundefined_name\n", tmp_path)
    assert returncode == 1
    assert "NameError: name 'undefined_name' is not defined" in stderr


def test_ci_runs_the_readme_test_command():
    ci = (README.parent / ".ci" / "run").read_text()
    command = re.search(r"Tests \(.*?\n\n```bash\n(.*?)\n```", README.read_text(), flags=re.S).group(1)
    assert command in ci.splitlines()
