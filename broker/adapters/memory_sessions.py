"""KBS sessions and their single-use nonces in process memory (the SessionStore port).

The embedded (SQLite) deployment is one process, so its challenges need not
outlive it: a restart ends every open session, and a nonce handed out before
the restart is unknown afterwards, never usable again. Keeping them in a dict
turns the five store operations of every auth and attest (three of them
fsynced commits, all through one locked connection) into dictionary lookups.
Replicas share their sessions through PostgreSQL instead
(``PostgresSessionStore``).

Every method runs on the event loop without awaiting anything, so each one is
atomic: two attests racing on one nonce cannot both consume it.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from broker.errors import BackendError, NonceReplayed, SessionMissing
from broker.ports import Session

__all__ = ["DEFAULT_MAX_SESSIONS", "MemorySessionStore"]

# A session with its token is about 2 KiB: the bound keeps a flood of auth
# requests from growing the process without limit.
DEFAULT_MAX_SESSIONS: Final = 100_000


class MemorySessionStore:
    """Open sessions of this process, at most ``max_sessions`` of them.

    When the store is full, a new session first makes room by dropping the
    sessions that expired before it was created.
    """

    def __init__(self, *, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self._sessions: dict[str, Session] = {}
        self._max = max_sessions

    def __len__(self) -> int:
        return len(self._sessions)

    async def create_session(self, session: Session) -> None:
        """Raises BackendError on a reused id (ids are random) or when the store is full."""
        if session.id in self._sessions:
            raise BackendError("session store write failed: the session id exists")
        if len(self._sessions) >= self._max:
            await self.purge_sessions(session.created_at)
            if len(self._sessions) >= self._max:
                raise BackendError("too many open sessions: retry later")
        self._sessions[session.id] = session

    async def get_session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def consume_session(self, session_id: str) -> Session:
        """Marks the session's nonce used.

        Raises:
            SessionMissing: no such session.
            NonceReplayed: the nonce was already used.
        """
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionMissing("unknown session")
        if session.used:
            raise NonceReplayed("the challenge nonce was already used")
        consumed = dataclasses.replace(session, used=True)
        self._sessions[session_id] = consumed
        return consumed

    async def set_session_token(self, session_id: str, token: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            self._sessions[session_id] = dataclasses.replace(session, token=token)

    async def purge_sessions(self, before: float) -> int:
        """Drops the sessions that expired before ``before``; returns how many."""
        expired = [sid for sid, s in self._sessions.items() if s.expires_at < before]
        for sid in expired:
            del self._sessions[sid]
        return len(expired)
