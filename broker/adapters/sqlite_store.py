"""Keys and KBS sessions in SQLite (the embedded default).

WAL with ``synchronous=FULL``: a created key or a consumed nonce survives a
crash. Every sqlite3 failure becomes a BackendError (503), never a trace.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from broker.errors import BackendError, Conflict, NonceReplayed, ResourceNotFound, SessionMissing
from broker.ports import ResourceInfo, Session, StoredValue

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS resource_versions (
    resource TEXT NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (resource, version)
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    tee TEXT NOT NULL,
    nonce TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    token TEXT
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at);
"""


def _info(row: sqlite3.Row) -> ResourceInfo:
    return ResourceInfo(
        id=row["id"],
        kind=row["kind"],
        current_version=row["current_version"],
        created_at=datetime.fromisoformat(row["created_at"]),
        created_by=row["created_by"],
        size=row["size"],
    )


def _session(row: sqlite3.Row) -> Session:
    return Session(
        id=row["id"],
        tee=row["tee"],
        nonce=row["nonce"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        used=bool(row["used"]),
        token=row["token"],
    )


class SQLiteStore:
    """Implements KeyStore and SessionStore on one database file."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        try:
            self._db = await aiosqlite.connect(self._path, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.execute("PRAGMA foreign_keys=ON")
            await self._db.execute("PRAGMA busy_timeout=5000")
            await self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise BackendError(f"cannot open the key store at {self._path}: {exc}") from None

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise BackendError("key store is not open")
        return self._db

    # -- KeyStore ---------------------------------------------------------

    async def create(
        self, resource: str, *, kind: str, sealed: bytes, size: int, actor: str, now: datetime
    ) -> ResourceInfo:
        stamp = now.astimezone(UTC).isoformat()
        try:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                await self.db.execute(
                    "INSERT INTO resources"
                    " (id, kind, current_version, created_at, created_by, size)"
                    " VALUES (?, ?, 1, ?, ?, ?)",
                    (resource, kind, stamp, actor, size),
                )
                await self.db.execute(
                    "INSERT INTO resource_versions (resource, version, sealed, created_at)"
                    " VALUES (?, 1, ?, ?)",
                    (resource, sealed, stamp),
                )
            except sqlite3.IntegrityError:
                await self.db.execute("ROLLBACK")
                raise Conflict(f"resource {resource} already exists") from None
            await self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None
        return ResourceInfo(resource, kind, 1, now, actor, size)

    async def get_current(self, resource: str) -> StoredValue:
        try:
            async with self.db.execute(
                "SELECT r.*, v.version AS v_version, v.sealed AS v_sealed FROM resources r"
                " JOIN resource_versions v ON v.resource = r.id AND v.version = r.current_version"
                " WHERE r.id = ?",
                (resource,),
            ) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"key store read failed: {exc}") from None
        if row is None:
            raise ResourceNotFound(f"no resource {resource}")
        return StoredValue(info=_info(row), version=row["v_version"], sealed=row["v_sealed"])

    async def info(self, resource: str) -> ResourceInfo:
        try:
            async with self.db.execute("SELECT * FROM resources WHERE id = ?", (resource,)) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"key store read failed: {exc}") from None
        if row is None:
            raise ResourceNotFound(f"no resource {resource}")
        return _info(row)

    async def list(self) -> Sequence[ResourceInfo]:
        try:
            async with self.db.execute("SELECT * FROM resources ORDER BY id") as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise BackendError(f"key store read failed: {exc}") from None
        return [_info(r) for r in rows]

    async def delete(self, resource: str) -> None:
        try:
            cur = await self.db.execute("DELETE FROM resources WHERE id = ?", (resource,))
            deleted = cur.rowcount
            await cur.close()
        except sqlite3.Error as exc:
            raise BackendError(f"key store write failed: {exc}") from None
        if deleted == 0:
            raise ResourceNotFound(f"no resource {resource}")

    async def check_writable(self) -> None:
        try:
            await self.db.execute("BEGIN IMMEDIATE")
            await self.db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise BackendError(f"key store not writable: {exc}") from None

    # -- SessionStore -----------------------------------------------------

    async def create_session(self, session: Session) -> None:
        try:
            await self.db.execute(
                "INSERT INTO sessions (id, tee, nonce, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (session.id, session.tee, session.nonce, session.created_at, session.expires_at),
            )
        except sqlite3.Error as exc:
            raise BackendError(f"session store write failed: {exc}") from None

    async def get_session(self, session_id: str) -> Session | None:
        try:
            async with self.db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"session store read failed: {exc}") from None
        return None if row is None else _session(row)

    async def consume_session(self, session_id: str) -> Session:
        """Atomically marks the session's nonce used (single use across workers)."""
        try:
            async with self.db.execute(
                "UPDATE sessions SET used = 1 WHERE id = ? AND used = 0 RETURNING *", (session_id,)
            ) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"session store write failed: {exc}") from None
        if row is not None:
            return _session(row)
        if await self.get_session(session_id) is None:
            raise SessionMissing("unknown session")
        raise NonceReplayed("the challenge nonce was already used")

    async def set_session_token(self, session_id: str, token: str) -> None:
        try:
            await self.db.execute("UPDATE sessions SET token = ? WHERE id = ?", (token, session_id))
        except sqlite3.Error as exc:
            raise BackendError(f"session store write failed: {exc}") from None

    async def purge_sessions(self, before: float) -> int:
        try:
            cur = await self.db.execute("DELETE FROM sessions WHERE expires_at < ?", (before,))
            count = cur.rowcount
            await cur.close()
        except sqlite3.Error as exc:
            raise BackendError(f"session store write failed: {exc}") from None
        return count
