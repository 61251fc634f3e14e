"""A short run of every fuzz harness, each in its own process: no crash."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS
from tests.vectors import REPO_ROOT

SECONDS = 3


def _fuzz(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "fuzz", "--artifacts", str(tmp_path), *args]
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_harness_runs_without_crash(tmp_path: Path, name: str) -> None:
    """The harness fuzzes for a few seconds and neither crashes nor writes a crash input."""
    result = _fuzz(tmp_path, "--target", name, "--seconds", str(SECONDS))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Uncaught Python exception" not in output
    assert not list(tmp_path.rglob("crash-*")), output[-4000:]


@pytest.mark.parametrize("name", ["kbs-wire", "sample"])
def test_random_mutator_fallback_runs(tmp_path: Path, name: str) -> None:
    """Without atheris the seeded random mutator applies the same pass/crash rule."""
    result = _fuzz(tmp_path, "--target", name, "--runs", "300", "--no-atheris")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "no crash" in result.stdout


def test_list_names_every_harness(tmp_path: Path) -> None:
    """--list prints one line per registered harness."""
    result = _fuzz(tmp_path, "--list")
    assert result.stdout.split() == list(TARGETS)
