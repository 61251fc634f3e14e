"""KBS ``auth``: issue a single-use challenge nonce bound to a session."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass

from broker.errors import UnsupportedTEE
from broker.evidence import canonical_tee
from broker.ports import AuditSink, Clock, Session, SessionStore
from broker.service.auditing import event, record
from broker.service.context import RequestContext

NONCE_BYTES = 32


@dataclass(frozen=True, slots=True)
class Challenge:
    session_id: str
    nonce: str
    expires_at: float


class ChallengeService:
    def __init__(
        self,
        sessions: SessionStore,
        audit: AuditSink,
        clock: Clock,
        *,
        enabled_tees: frozenset[str],
        nonce_ttl: int,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._clock = clock
        self._enabled = enabled_tees
        self._ttl = nonce_ttl

    def check_tee(self, name: str) -> str:
        tee = canonical_tee(name)
        if tee not in self._enabled:
            raise UnsupportedTEE(f"tee {tee!r} is not enabled on this broker")
        return tee

    async def auth(self, tee_name: str, ctx: RequestContext) -> Challenge:
        now = self._clock.now()
        tee = self.check_tee(tee_name)
        session = Session(
            id=secrets.token_urlsafe(24),
            tee=tee,
            nonce=base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode(),
            created_at=now.timestamp(),
            expires_at=now.timestamp() + self._ttl,
            used=False,
            token=None,
        )
        await self._sessions.create_session(session)
        await record(self._audit, event("kbs.auth", ctx, now, decision="ok", tee=tee))
        return Challenge(session.id, session.nonce, session.expires_at)
