"""Hashed admin tokens in PostgreSQL (the AdminTokenStore port), shared by every replica.

The table has its own ``schema_versions`` row (component ``admin-tokens``), created by
``migrate()`` under the lock ``PostgresDB`` migrates under, so replicas starting
together do not race. Only the SHA-256 of a token is stored, never the token.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import asyncpg

from broker.adapters.pg_db import PostgresDB
from broker.errors import BackendError, Conflict, ResourceNotFound
from broker.ports import AdminTokenInfo

__all__ = ["SCHEMA_COMPONENT", "SCHEMA_VERSION", "PostgresTokenStore"]

SCHEMA_COMPONENT: Final = "admin-tokens"
SCHEMA_VERSION: Final = 1
_SCHEMA_LOCK: Final = "attested-broker schema"  # the lock PostgresDB migrates under

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS admin_tokens (
    id TEXT COLLATE "C" PRIMARY KEY,
    digest BYTEA NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);
"""

_READ: Final = "token store read"
_WRITE: Final = "token store write"


def _utc(when: datetime | None) -> datetime | None:
    return None if when is None else when.astimezone(UTC)


def _info(row: asyncpg.Record) -> AdminTokenInfo:
    return AdminTokenInfo(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


class PostgresTokenStore:
    def __init__(self, db: PostgresDB) -> None:
        self._db = db

    async def migrate(self) -> None:
        """Create the table (idempotent) and record or check its schema version.

        Raises:
            BackendError: the server failed, or the stored version is newer (not retryable).
        """
        async with self._db.transaction("creating the admin token schema") as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _SCHEMA_LOCK)
            await conn.execute(_SCHEMA)
            found = await conn.fetchval(
                "SELECT version FROM schema_versions WHERE component = $1", SCHEMA_COMPONENT
            )
            if found is None:
                await conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES ($1, $2)",
                    SCHEMA_COMPONENT,
                    SCHEMA_VERSION,
                )
            elif found > SCHEMA_VERSION:
                raise BackendError(
                    f"the {SCHEMA_COMPONENT} schema is version {found}; this broker supports"
                    f" up to {SCHEMA_VERSION}",
                    retryable=False,
                )

    async def add_token(self, info: AdminTokenInfo, digest: bytes) -> None:
        async with self._db.transaction(_WRITE) as conn:
            row = await conn.fetchrow(
                "INSERT INTO admin_tokens (digest, id, name, role, created_at, created_by,"
                " expires_at, revoked_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING id",
                digest,
                info.id,
                info.name,
                info.role,
                _utc(info.created_at),
                info.created_by,
                _utc(info.expires_at),
                _utc(info.revoked_at),
            )
        if row is None:
            raise Conflict("an admin token with this id already exists")

    async def token_by_digest(self, digest: bytes) -> AdminTokenInfo | None:
        async with self._db.connection(_READ) as conn:
            row = await conn.fetchrow(
                "SELECT id, name, role, created_at, created_by, expires_at, revoked_at"
                " FROM admin_tokens WHERE digest = $1",
                digest,
            )
        return None if row is None else _info(row)

    async def list_tokens(self) -> Sequence[AdminTokenInfo]:
        async with self._db.connection(_READ) as conn:
            rows = await conn.fetch(
                "SELECT id, name, role, created_at, created_by, expires_at, revoked_at"
                " FROM admin_tokens ORDER BY created_at, id"
            )
        return [_info(r) for r in rows]

    async def revoke_token(self, token_id: str, now: datetime) -> AdminTokenInfo:
        async with self._db.transaction(_WRITE) as conn:
            row = await conn.fetchrow(
                "UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, $1)"
                " WHERE id = $2"
                " RETURNING id, name, role, created_at, created_by, expires_at, revoked_at",
                _utc(now),
                token_id,
            )
        if row is None:
            raise ResourceNotFound(f"no admin token {token_id}")
        return _info(row)
