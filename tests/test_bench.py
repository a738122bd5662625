"""The benchmark script keeps running (at smoke-test sizes): numbers are measured, not asserted."""

import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "bench.py"


@pytest.mark.slow
def test_bench_quick_runs_and_reports_every_comparison(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for label in (
        "(a)",
        "(b)",
        "(c)",
        "sweep:",
        "loop of K runs",
        "inject_hyperparams",
        "gram fast path",
        "sweep vs bare",
        "bare jit(vmap(scan))",
    ):
        assert label in proc.stdout
    assert out.stat().st_size > 0
