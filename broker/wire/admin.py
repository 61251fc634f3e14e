"""Admin API (``/v1``) messages."""

from __future__ import annotations

import msgspec


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    id: str


class PutSecret(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    # Standard base64 of the secret bytes.
    value: str


class KeyInfo(msgspec.Struct):
    id: str
    kind: str
    current_version: int
    created_at: str
    created_by: str
    size: int


class PolicyFile(msgspec.Struct):
    name: str
    digest: str


class PolicyStatus(msgspec.Struct):
    digest: str
    loaded_at: str
    files: list[PolicyFile]
    last_reload_error: str = ""


class ReloadStatus(msgspec.Struct):
    ok: bool
    digest: str
    loaded_at: str
    error: str = ""
