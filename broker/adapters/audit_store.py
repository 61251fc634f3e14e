"""Signed checkpoints and published verifier keys, stored next to the records in the audit DB.

Usage::

    store = SQLiteTransparencyStore(Path("audit.db"))
    await store.add_verifier_key(key.key_id, key.verifier_key(), now)
    await store.add_checkpoint(cp)
    await store.latest_checkpoint()         # or checkpoint_at(size)
    await store.verifier_keys()             # every key ever used, oldest first

Two append-only tables in the same SQLite file as the records, with the same
triggers refusing UPDATE and DELETE. Each operation opens its own short-lived
connection on a worker thread: checkpoints are signed once a minute at most,
and the latest one is cached by the service, so there is no hot path here.
Offline tools (``broker audit rotate-key --data-dir``) use the sync functions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Final, TypeVar

from broker.audit.checkpoint import Checkpoint
from broker.audit.record import format_time, parse_time
from broker.errors import AuditWriteError

__all__ = ["SQLiteTransparencyStore", "StoredCheckpoint"]

_T = TypeVar("_T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit_checkpoint (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    size    INTEGER NOT NULL,
    time    TEXT NOT NULL,
    key_id  TEXT NOT NULL,
    note    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_checkpoint_size ON audit_checkpoint(size);
CREATE TABLE IF NOT EXISTS audit_verifier_key (
    key_id       TEXT PRIMARY KEY,
    verifier_key TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint
BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_verifier_key_no_update BEFORE UPDATE ON audit_verifier_key
BEGIN SELECT RAISE(ABORT, 'verifier keys are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_verifier_key_no_delete BEFORE DELETE ON audit_verifier_key
BEGIN SELECT RAISE(ABORT, 'verifier keys are append-only'); END;
"""

StoredCheckpoint = tuple[int, str]
"""``(size, note)`` of a stored checkpoint; the service re-verifies notes it serves."""


class SQLiteTransparencyStore:
    """Checkpoints and verifier keys in the audit database."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5_000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms

    # -- sync (worker thread, or offline tools) ------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._connect()
        try:
            return fn(conn)
        finally:
            conn.close()

    def create_sync(self) -> None:
        self._run(lambda c: c.executescript(_SCHEMA))

    def add_verifier_key_sync(self, key_id: str, verifier_key: str, now: datetime) -> None:
        self._run(
            lambda c: c.execute(
                "INSERT OR IGNORE INTO audit_verifier_key (key_id, verifier_key, created_at)"
                " VALUES (?, ?, ?)",
                (key_id, verifier_key, format_time(now)),
            )
        )

    def verifier_keys_sync(self) -> list[tuple[str, str, datetime]]:
        rows = self._run(
            lambda c: c.execute(
                "SELECT key_id, verifier_key, created_at FROM audit_verifier_key ORDER BY rowid"
            ).fetchall()
        )
        return [(str(k), str(v), parse_time(t)) for k, v, t in rows]

    def _add_checkpoint(self, cp: Checkpoint) -> None:
        self._run(
            lambda c: c.execute(
                "INSERT INTO audit_checkpoint (size, time, key_id, note) VALUES (?, ?, ?, ?)",
                (cp.size, format_time(cp.time), cp.key_id, cp.note),
            )
        )

    def _checkpoint(self, size: int | None) -> StoredCheckpoint | None:
        args: tuple[int, ...] = ()
        if size is None:
            # Worker processes sign from trees that may lag one another: the newest
            # checkpoint is that of the largest tree (the latest signed of those).
            sql = "SELECT size, note FROM audit_checkpoint ORDER BY size DESC, id DESC LIMIT 1"
        else:
            sql = "SELECT size, note FROM audit_checkpoint WHERE size = ? ORDER BY id DESC LIMIT 1"
            args = (size,)
        row = self._run(lambda c: c.execute(sql, args).fetchone())
        return None if row is None else (int(row[0]), str(row[1]))

    # -- async ---------------------------------------------------------------------------------

    async def _io(self, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except sqlite3.Error as exc:
            raise AuditWriteError(f"audit checkpoint store failed: {exc}") from exc

    async def create(self) -> None:
        """Raises: AuditWriteError."""
        await self._io(self.create_sync)

    async def add_verifier_key(self, key_id: str, verifier_key: str, now: datetime) -> None:
        """Publish a key (idempotent). Raises: AuditWriteError."""
        await self._io(lambda: self.add_verifier_key_sync(key_id, verifier_key, now))

    async def verifier_keys(self) -> list[tuple[str, str, datetime]]:
        """``(key_id, verifier key text, created_at)``, oldest first. Raises: AuditWriteError."""
        return await self._io(self.verifier_keys_sync)

    async def add_checkpoint(self, cp: Checkpoint) -> None:
        """Raises: AuditWriteError."""
        await self._io(lambda: self._add_checkpoint(cp))

    async def checkpoint(self, size: int | None = None) -> StoredCheckpoint | None:
        """The newest checkpoint, or the newest of exactly ``size``. Raises: AuditWriteError."""
        return await self._io(lambda: self._checkpoint(size))
