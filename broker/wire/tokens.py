"""Admin token API (``/v1/tokens``) messages. No message ever carries a token digest."""

from __future__ import annotations

import msgspec


class CreateToken(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    role: str
    # "30d", "12h", "90m", "2w"; none: the token lives until revoked.
    expires: str | None = None


class TokenInfo(msgspec.Struct):
    id: str
    name: str
    role: str
    # "active", "expired" or "revoked", at the time of the answer.
    state: str
    created_at: str
    created_by: str
    expires_at: str | None
    revoked_at: str | None


class CreatedToken(msgspec.Struct):
    # The bearer token: shown in this answer only, never again.
    token: str
    info: TokenInfo
