"""Hashed admin tokens in the SQLite store file (the AdminTokenStore port).

Rows hold the SHA-256 of a token, never the token: a copy of the database
does not let anyone call the admin API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from broker.adapters.sqlite_db import SQLiteDB
from broker.errors import BackendError, Conflict, ResourceNotFound
from broker.ports import AdminTokenInfo

__all__ = ["SQLiteTokenStore"]


def _stamp(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat()


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _info(row: sqlite3.Row) -> AdminTokenInfo:
    return AdminTokenInfo(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        created_at=datetime.fromisoformat(row["created_at"]),
        created_by=row["created_by"],
        expires_at=_when(row["expires_at"]),
        revoked_at=_when(row["revoked_at"]),
    )


class SQLiteTokenStore:
    def __init__(self, db: SQLiteDB) -> None:
        self._db = db

    async def add_token(self, info: AdminTokenInfo, digest: bytes) -> None:
        try:
            async with self._db.transaction() as db:
                await db.execute(
                    "INSERT INTO admin_tokens (digest, id, name, role, created_at, created_by,"
                    " expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        digest,
                        info.id,
                        info.name,
                        info.role,
                        _stamp(info.created_at),
                        info.created_by,
                        _stamp(info.expires_at),
                        _stamp(info.revoked_at),
                    ),
                )
        except sqlite3.IntegrityError:
            raise Conflict("an admin token with this id already exists") from None
        except sqlite3.Error as exc:
            raise BackendError(f"token store write failed: {exc}") from None

    async def token_by_digest(self, digest: bytes) -> AdminTokenInfo | None:
        rows = await self._rows(
            "SELECT id, name, role, created_at, created_by, expires_at, revoked_at"
            " FROM admin_tokens WHERE digest = ?",
            (digest,),
        )
        return _info(rows[0]) if rows else None

    async def list_tokens(self) -> Sequence[AdminTokenInfo]:
        rows = await self._rows(
            "SELECT id, name, role, created_at, created_by, expires_at, revoked_at"
            " FROM admin_tokens ORDER BY created_at, id"
        )
        return [_info(r) for r in rows]

    async def revoke_token(self, token_id: str, now: datetime) -> AdminTokenInfo:
        try:
            async with self._db.transaction() as db:
                await db.execute(
                    "UPDATE admin_tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                    (_stamp(now), token_id),
                )
                async with db.execute(
                    "SELECT id, name, role, created_at, created_by, expires_at, revoked_at"
                    " FROM admin_tokens WHERE id = ?",
                    (token_id,),
                ) as cur:
                    row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"token store write failed: {exc}") from None
        if row is None:
            raise ResourceNotFound(f"no admin token {token_id}")
        return _info(row)

    async def _rows(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        try:
            return self._db.read(sql, args)
        except sqlite3.Error as exc:
            raise BackendError(f"token store read failed: {exc}") from None
