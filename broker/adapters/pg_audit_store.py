"""Signed checkpoints and published verifier keys in PostgreSQL, shared by every replica.

Usage::

    store = PostgresTransparencyStore(db)
    await store.create()
    await store.add_verifier_key(key.key_id, key.verifier_key(), now)
    await store.add_checkpoint(cp)
    await store.checkpoint()                # or checkpoint(size)
    await store.verifier_keys()             # every key any replica ever used, oldest first

The API of ``SQLiteTransparencyStore`` (without its sync functions for offline tools).
Both tables are append-only (triggers). Replicas sign checkpoints on their own, from
trees that may lag a little behind one another, so "the newest checkpoint" is the one of
the largest tree (the latest signed among those), not simply the last row inserted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from broker.adapters.audit_store import StoredCheckpoint
from broker.adapters.pg_audit_schema import (
    TRANSPARENCY_COMPONENT,
    TRANSPARENCY_SCHEMA,
    TRANSPARENCY_VERSION,
    migrate_component,
)
from broker.adapters.pg_db import PostgresDB
from broker.audit.checkpoint import Checkpoint
from broker.errors import AuditWriteError, BackendError

__all__ = ["PostgresTransparencyStore"]

_WHAT = "audit checkpoint store"


class PostgresTransparencyStore:
    """Checkpoints and verifier keys on the shared database; ``db`` is opened by its owner."""

    def __init__(self, db: PostgresDB) -> None:
        self.db = db

    async def create(self) -> None:
        """Create or check the tables. Raises: AuditWriteError."""
        try:
            await migrate_component(
                self.db, TRANSPARENCY_COMPONENT, TRANSPARENCY_VERSION, TRANSPARENCY_SCHEMA
            )
        except BackendError as exc:
            raise _audit_error(exc) from None

    async def add_verifier_key(self, key_id: str, verifier_key: str, now: datetime) -> None:
        """Publish a key (idempotent: the first time stays). Raises: AuditWriteError."""
        try:
            async with self.db.connection(_WHAT) as conn:
                await conn.execute(
                    "INSERT INTO audit_verifier_key (key_id, verifier_key, created_at)"
                    " VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING",
                    key_id,
                    verifier_key,
                    now.astimezone(UTC),
                )
        except BackendError as exc:
            raise _audit_error(exc) from None

    async def verifier_keys(self) -> list[tuple[str, str, datetime]]:
        """``(key_id, verifier key text, created_at)``, oldest first. Raises: AuditWriteError."""
        try:
            async with self.db.connection(_WHAT) as conn:
                rows = await conn.fetch(
                    "SELECT key_id, verifier_key, created_at FROM audit_verifier_key ORDER BY id"
                )
        except BackendError as exc:
            raise _audit_error(exc) from None
        return [(str(r[0]), str(r[1]), r[2].astimezone(UTC)) for r in rows]

    async def add_checkpoint(self, cp: Checkpoint) -> None:
        """Raises: AuditWriteError."""
        try:
            async with self.db.connection(_WHAT) as conn:
                await conn.execute(
                    "INSERT INTO audit_checkpoint (size, time, key_id, note)"
                    " VALUES ($1, $2, $3, $4)",
                    cp.size,
                    cp.time.astimezone(UTC),
                    cp.key_id,
                    cp.note,
                )
        except BackendError as exc:
            raise _audit_error(exc) from None

    async def checkpoint(self, size: int | None = None) -> StoredCheckpoint | None:
        """The checkpoint of the largest tree (the newest of those), or the newest of
        exactly ``size``. Raises: AuditWriteError."""
        try:
            async with self.db.connection(_WHAT) as conn:
                row = await conn.fetchrow(
                    "SELECT size, note FROM audit_checkpoint"
                    " WHERE $1::bigint IS NULL OR size = $1"
                    " ORDER BY size DESC, id DESC LIMIT 1",
                    size,
                )
        except BackendError as exc:
            raise _audit_error(exc) from None
        return None if row is None else (int(row[0]), str(row[1]))


def _audit_error(exc: BackendError) -> AuditWriteError:
    return AuditWriteError(exc.message, retryable=exc.retryable)
