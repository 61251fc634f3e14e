"""Guardrails: imports point from adapters to the core, never back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vectors import REPO_ROOT

PACKAGE = REPO_ROOT / "broker"
PURE = ("evidence", "policy", "keys", "audit")
FORBIDDEN_IN_PURE = (
    "aiohttp",
    "asyncio",
    "hvac",
    "aiosqlite",
    "asyncpg",
    "structlog.contextvars",
    "broker.service",
    "broker.adapters",
    "broker.api",
    "broker.cli",
    "broker.config",
    "broker.wiring",
)
FORBIDDEN_IN_CLIENT = (
    "broker.service",
    "broker.adapters",
    "broker.api",
    "broker.wiring",
    "broker.config",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{f.relative_to(REPO_ROOT)} imports {name}"
        for f in files
        for name in sorted(_imports(f))
        if any(name == bad or name.startswith(bad + ".") for bad in forbidden)
    ]


@pytest.mark.parametrize("package", PURE)
def test_pure_core_has_no_io_imports(package: str) -> None:
    """The pure packages import no I/O framework and no adapter or service."""
    assert _violations(sorted((PACKAGE / package).rglob("*.py")), FORBIDDEN_IN_PURE) == []


def test_pure_core_excludes_sqlite_adapter() -> None:
    """The SQLite audit adapter lives in adapters/, not in the pure audit package."""
    assert not (PACKAGE / "audit" / "sqlite_audit.py").exists()


def test_client_has_no_server_imports() -> None:
    """The enclave client library never imports the server side."""
    assert _violations(sorted((PACKAGE / "client").rglob("*.py")), FORBIDDEN_IN_CLIENT) == []


def test_modules_import_cleanly() -> None:
    """Every module imports in a fresh interpreter with warnings as errors."""
    modules = sorted(
        ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if p.name != "__main__.py"
    )
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m.removesuffix('.__init__'))\n"
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
