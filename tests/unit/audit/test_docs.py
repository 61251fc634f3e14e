"""docs/audit-format.md stays true: its example verifies and its tables match the code."""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

from click.testing import CliRunner

from broker.audit.chain import verify_jsonl
from broker.audit.record import RECORD_KEYS
from broker.cli.audit import audit

DOC = Path(__file__).resolve().parents[3] / "docs" / "audit-format.md"


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _example() -> bytes:
    block = re.search(r"```jsonl\n(.*?)```", _doc(), re.S)
    assert block is not None
    return block.group(1).encode("utf-8")


def test_field_table_lists_exactly_the_record_fields() -> None:
    """The field table names every v1 field and nothing else."""
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", _doc(), re.M))
    assert documented == RECORD_KEYS


def test_example_chain_verifies() -> None:
    """The example chain in the document verifies from genesis."""
    report = verify_jsonl(io.BytesIO(_example()), require_genesis=True)
    assert report.count == 2
    assert report.head_hash in _doc()


def test_example_output_line_is_what_verify_prints(tmp_path: Path) -> None:
    """The success line shown in the document is the command's real output."""
    path = tmp_path / "example.jsonl"
    path.write_bytes(_example())
    result = CliRunner().invoke(audit, ["verify", str(path)])
    assert result.exit_code == 0
    assert result.stdout.strip() in _doc()


def test_shell_recipe_for_the_hash() -> None:
    """Deleting the hash member from a line gives the bytes whose SHA-256 is that hash."""
    for line in _example().splitlines():
        stored = re.search(rb'"hash":"([0-9a-f]{64})",', line)
        assert stored is not None
        canonical = re.sub(rb'"hash":"[0-9a-f]{64}",', b"", line)
        assert hashlib.sha256(canonical).hexdigest().encode() == stored.group(1)
