"""``python -m bench --smoke`` runs every benchmark to completion without errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vectors import REPO_ROOT

pytestmark = pytest.mark.slow

BENCHMARKS = ("verify", "wrap", "release", "storm", "replicas")


def test_bench_smoke_runs_every_benchmark(tmp_path: Path) -> None:
    """The smoke run exits 0 within its time bound and reports a table for each benchmark."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in BENCHMARKS:
        assert f"== {name}:" in done.stdout
    results = json.loads(out.read_text())["benchmarks"]
    assert set(results) == set(BENCHMARKS)
    assert all(not r["errors"] for r in results.values())
    assert all(results[name]["rows"] for name in ("wrap", "release", "storm", "replicas"))
