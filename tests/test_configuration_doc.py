"""docs/configuration.md lists every setting, with the real defaults."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from broker.config import _SECTIONS, load_settings
from tests.vectors import REPO_ROOT

DOC = (REPO_ROOT / "docs" / "configuration.md").read_text()


def _block() -> str:
    match = re.search(r"```toml\n(.*?)```", DOC, re.S)
    assert match is not None
    return match.group(1)


def test_documented_block_loads(tmp_path: Path) -> None:
    """The documented configuration loads and equals the built-in defaults."""
    path = tmp_path / "broker.toml"
    path.write_text(_block())
    assert load_settings(path, {}) == load_settings(None, {})


def test_every_setting_documented() -> None:
    """Every section and key of Settings appears in the documented block."""
    data = tomllib.loads(_block())
    for name, cls in _SECTIONS.items():
        assert name in data, name
        for field in dataclasses.fields(cls):
            assert field.name in data[name], f"{name}.{field.name}"
