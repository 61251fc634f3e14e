"""Seed inputs: read at run time from the evidence folder beside the repository.

The folder is never copied into the repository; ``BROKER_EVIDENCE_DIR``
overrides its location. Without it, harnesses start from the inputs they
generate themselves.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from broker.evidence import pinned_anchors
from broker.evidence.model import TrustAnchors

REPO_ROOT = Path(__file__).resolve().parent.parent
FALLBACK_NOW = datetime(2025, 9, 1, tzinfo=UTC)


def evidence_dir() -> Path:
    default = REPO_ROOT.parent / "shared" / "evidence"
    return Path(os.environ.get("BROKER_EVIDENCE_DIR", str(default)))


def read(*parts: str) -> bytes | None:
    path = evidence_dir().joinpath(*parts)
    return path.read_bytes() if path.is_file() else None


def files(folder: str, pattern: str) -> list[bytes]:
    """Every file of ``folder`` (and its ``negative`` subfolder) matching ``pattern``."""
    base = evidence_dir() / folder
    paths = [*sorted(base.glob(pattern)), *sorted((base / "negative").glob(pattern))]
    return [p.read_bytes() for p in paths if p.is_file()]


def verification_time(folder: str, vector_id: str) -> datetime:
    raw = read(folder, f"{vector_id}.expected.json")
    if raw is None:
        return FALLBACK_NOW
    text = str(json.loads(raw)["verification_time"])
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@cache
def anchors() -> TrustAnchors:
    """The vendor roots the broker pins (package data, not the evidence folder)."""
    return pinned_anchors()
