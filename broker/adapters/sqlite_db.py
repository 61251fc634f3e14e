"""One SQLite database file for keys and admin tokens, opened the same way everywhere.

WAL with ``synchronous=FULL`` (a created key survives a crash) and
``secure_delete`` (erased key material is overwritten on disk, not just
unlinked from the b-tree). KBS sessions are not here: a single process keeps
them in memory (``MemorySessionStore``). Every sqlite3 failure becomes a BackendError.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from broker.errors import BackendError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    min_release_version INTEGER NOT NULL DEFAULT 1,
    rotate_every INTEGER,
    last_rotated_at TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    size INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS resource_versions (
    resource TEXT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'active',
    sealed BLOB,
    size INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (resource, version)
);
CREATE TABLE IF NOT EXISTS admin_tokens (
    id TEXT PRIMARY KEY,
    digest BLOB NOT NULL UNIQUE,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
"""


class SQLiteDB:
    """One connection, used by one coroutine at a time.

    aiosqlite runs statements of every coroutine on one connection: without
    the lock a statement of one request would land inside another request's
    open transaction (and be rolled back with it), and two transactions would
    collide on BEGIN. Other processes are kept apart by SQLite's own locks.
    """

    # A read on the event loop waits at most this long for a lock (WAL readers
    # rarely wait at all: only while the WAL index is being rebuilt).
    READ_BUSY_TIMEOUT_MS = 250

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            for pragma in (
                "journal_mode=WAL",
                "synchronous=FULL",
                "foreign_keys=ON",
                "busy_timeout=5000",
                "secure_delete=ON",
            ):
                await self._db.execute(f"PRAGMA {pragma}")
            await self._db.executescript(_SCHEMA)
            await self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            # Opened where the store is opened, used on the thread serving requests.
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._reader.row_factory = sqlite3.Row
            for pragma in ("query_only=ON", f"busy_timeout={self.READ_BUSY_TIMEOUT_MS}"):
                self._reader.execute(f"PRAGMA {pragma}")
        except sqlite3.Error as exc:
            await self.close()
            raise BackendError(f"cannot open the store at {self.path}: {exc}") from None

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise BackendError("store is not open")
        return self._db

    def read(self, sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        """A read-only query, run right here on the caller's (the event loop's) thread.

        A key lookup on a local WAL database takes tens of microseconds, far less
        than handing it to the connection's thread and back (two GIL hand-offs and
        a loop wake-up), which dominated the cost of a release. It sees every
        transaction committed before it starts, and never waits for the writer.

        Raises:
            sqlite3.Error: the query failed (callers turn it into a BackendError).
        """
        if self._reader is None:
            raise BackendError("store is not open")
        return self._reader.execute(sql, args).fetchall()

    @asynccontextmanager
    async def access(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, for single autocommit statements."""
        async with self._lock:
            yield self.conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        async with self._lock:
            db = self.conn
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")

    async def check_writable(self) -> None:
        try:
            async with self.transaction() as db:
                # A real write: an empty transaction reports "ok" on a full disk.
                await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.Error as exc:
            raise BackendError(f"store not writable: {exc}") from None
