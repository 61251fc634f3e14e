"""Resource ids: ``repo/type/tag``, each segment a safe name."""

from __future__ import annotations

import re

from broker.errors import InvalidResourcePath

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_ID_LENGTH = 3 * 128 + 2


def parse_resource_id(text: str) -> str:
    """Validates ``repo/type/tag``; rejects ``..``, empty and over-long segments."""
    if len(text) > MAX_ID_LENGTH:
        raise InvalidResourcePath("resource path too long")
    parts = text.split("/")
    if len(parts) != 3:
        raise InvalidResourcePath("resource path must be repo/type/tag")
    for part in parts:
        if not _SEGMENT.fullmatch(part) or part in {".", ".."} or ".." in part:
            raise InvalidResourcePath(
                "resource path segments must be 1-128 characters of A-Z a-z 0-9 . _ -,"
                " starting with a letter or digit, without '..'"
            )
    return text
