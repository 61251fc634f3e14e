"""Static checks run as part of the suite: ruff and mypy --strict on broker/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.vectors import REPO_ROOT


def _tool(name: str) -> list[str]:
    return [sys.executable, "-m", name]


@pytest.mark.slow
def test_ruff_check() -> None:
    """ruff finds nothing in broker/, tests/ and bench/."""
    result = subprocess.run(
        [*_tool("ruff"), "check", "broker", "tests", "bench"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_ruff_format() -> None:
    """The code is formatted by ruff format."""
    result = subprocess.run(
        [*_tool("ruff"), "format", "--check", "broker", "tests", "bench"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_strict() -> None:
    """mypy --strict passes on broker/."""
    env = {**os.environ, "MYPY_CACHE_DIR": str(REPO_ROOT / ".mypy_cache")}
    result = subprocess.run(
        [*_tool("mypy"), "--strict", "broker"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_tools_installed() -> None:
    """The test extras bring ruff and mypy."""
    assert (
        shutil.which("ruff")
        or subprocess.run([*_tool("ruff"), "--version"], check=False).returncode == 0
    )
