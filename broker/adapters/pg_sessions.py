"""KBS sessions and their single-use nonces in PostgreSQL (the SessionStore port).

The session rows are shared by every replica, so ``auth`` on one replica and ``attest`` on
another see the same challenge, and a nonce is consumed once across all of them: the
consume is one ``UPDATE ... WHERE NOT used RETURNING``, which row locking serialises.
"""

from __future__ import annotations

import asyncpg

from broker.adapters.pg_db import PostgresDB
from broker.errors import NonceReplayed, SessionMissing
from broker.ports import Session

_READ = "session store read"
_WRITE = "session store write"


def _session(row: asyncpg.Record) -> Session:
    return Session(
        id=row["id"],
        tee=row["tee"],
        nonce=row["nonce"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        used=row["used"],
        token=row["token"],
    )


class PostgresSessionStore:
    def __init__(self, db: PostgresDB) -> None:
        self._db = db

    async def create_session(self, session: Session) -> None:
        async with self._db.connection(_WRITE) as conn:
            await conn.execute(
                "INSERT INTO sessions (id, tee, nonce, created_at, expires_at)"
                " VALUES ($1, $2, $3, $4, $5)",
                session.id,
                session.tee,
                session.nonce,
                session.created_at,
                session.expires_at,
            )

    async def get_session(self, session_id: str) -> Session | None:
        async with self._db.connection(_READ) as conn:
            row = await conn.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
        return None if row is None else _session(row)

    async def consume_session(self, session_id: str) -> Session:
        """Atomically marks the session's nonce used (single use across replicas).

        Raises:
            SessionMissing: no such session.
            NonceReplayed: the nonce was already used (here or on another replica).
            BackendError: the database failed.
        """
        async with self._db.connection(_WRITE) as conn:
            # Concurrent consumers queue on the row lock; each re-checks ``NOT used``
            # against the committed row, so only the first one gets a row back.
            row = await conn.fetchrow(
                "UPDATE sessions SET used = true WHERE id = $1 AND NOT used RETURNING *",
                session_id,
            )
        if row is not None:
            return _session(row)
        if await self.get_session(session_id) is None:
            raise SessionMissing("unknown session")
        raise NonceReplayed("the challenge nonce was already used")

    async def set_session_token(self, session_id: str, token: str) -> None:
        async with self._db.connection(_WRITE) as conn:
            await conn.execute("UPDATE sessions SET token = $2 WHERE id = $1", session_id, token)

    async def purge_sessions(self, before: float) -> int:
        async with self._db.connection(_WRITE) as conn:
            status = await conn.execute("DELETE FROM sessions WHERE expires_at < $1", before)
        return int(status.rsplit(" ", 1)[-1])
