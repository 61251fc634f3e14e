"""Access to the real attestation vectors in ``../shared/evidence``.

The folder sits beside the repository (never copied into it); set
``BROKER_EVIDENCE_DIR`` to point elsewhere. Tests that need it skip with a
clear reason where it is absent.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EVIDENCE_DIR = Path(
    os.environ.get("BROKER_EVIDENCE_DIR", str(REPO_ROOT.parent / "shared" / "evidence"))
)

requires_evidence = pytest.mark.skipif(
    not (EVIDENCE_DIR / "MANIFEST.md").is_file(),
    reason=f"real evidence vectors not found at {EVIDENCE_DIR} (set BROKER_EVIDENCE_DIR)",
)


def vector_path(*parts: str) -> Path:
    return EVIDENCE_DIR.joinpath(*parts)


def read_bytes(*parts: str) -> bytes:
    return vector_path(*parts).read_bytes()


def expected(tee_dir: str, vector_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        vector_path(tee_dir, f"{vector_id}.expected.json").read_text()
    )
    return data


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def vector_ids(tee_dir: str) -> list[str]:
    folder = vector_path(tee_dir)
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".expected.json") for p in folder.glob("*.expected.json"))
