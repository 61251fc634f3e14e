"""KBS sessions and their single-use nonces in SQLite (the SessionStore port)."""

from __future__ import annotations

import sqlite3

from broker.adapters.sqlite_db import SQLiteDB
from broker.errors import BackendError, NonceReplayed, SessionMissing
from broker.ports import Session


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


class SQLiteSessionStore:
    def __init__(self, db: SQLiteDB) -> None:
        self._db = db

    async def create_session(self, session: Session) -> None:
        try:
            async with self._db.access() as db:
                await db.execute(
                    "INSERT INTO sessions (id, tee, nonce, created_at, expires_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        session.id,
                        session.tee,
                        session.nonce,
                        session.created_at,
                        session.expires_at,
                    ),
                )
        except sqlite3.Error as exc:
            raise BackendError(f"session store write failed: {exc}") from None

    async def get_session(self, session_id: str) -> Session | None:
        try:
            async with (
                self._db.access() as db,
                db.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)) as cur,
            ):
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise BackendError(f"session store read failed: {exc}") from None
        return None if row is None else _session(row)

    async def consume_session(self, session_id: str) -> Session:
        """Atomically marks the session's nonce used (single use across workers)."""
        try:
            async with (
                self._db.access() as db,
                db.execute(
                    "UPDATE sessions SET used = 1 WHERE id = ? AND used = 0 RETURNING *",
                    (session_id,),
                ) as cur,
            ):
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
            async with self._db.access() as db:
                await db.execute("UPDATE sessions SET token = ? WHERE id = ?", (token, session_id))
        except sqlite3.Error as exc:
            raise BackendError(f"session store write failed: {exc}") from None

    async def purge_sessions(self, before: float) -> int:
        try:
            cur = await self._db.conn.execute(
                "DELETE FROM sessions WHERE expires_at < ?", (before,)
            )
            count = cur.rowcount
            await cur.close()
        except sqlite3.Error as exc:
            raise BackendError(f"session store write failed: {exc}") from None
        return count
