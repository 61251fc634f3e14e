"""Admin API (``/v1``) messages."""

from __future__ import annotations

from typing import Annotated

import msgspec


class CreateKey(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    # e.g. "30d": rotate on schedule.
    rotate_every: str | None = None


# Bounded so that every store (SQLite, PostgreSQL integer columns) can hold the value.
Version = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


class KeySettings(msgspec.Struct, forbid_unknown_fields=True):
    min_release_version: Version | None = None
    # "30d", "12h"...; "never" turns scheduled rotation off.
    rotate_every: str | None = None


class RotateKey(msgspec.Struct, forbid_unknown_fields=True):
    # For secrets only: the new value, standard base64.
    value: str | None = None


class PutSecret(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    # Standard base64 of the secret bytes; or, instead,
    value: str | None = None
    # a Vault KV v2 reference "path#field" or "path#field@version", read at release time.
    vault_kv: str | None = None


class VersionInfo(msgspec.Struct):
    version: int
    state: str
    created_at: str
    created_by: str


class KeyInfo(msgspec.Struct, omit_defaults=True):
    id: str
    kind: str
    current_version: int
    min_release_version: int
    rotate_every: int | None
    last_rotated_at: str
    created_at: str
    created_by: str
    size: int
    versions: list[VersionInfo] | None = None


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
