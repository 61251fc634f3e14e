"""Creating, listing and revoking stored admin tokens. Every action is audited.

A token is 256 bits from ``secrets`` with a ``bkt_`` prefix (so secret
scanners can spot one); it is shown once, at creation, and only its SHA-256
is stored. Audit records name the token's id, name and role, never the token.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from broker.audit.record import AuditEvent
from broker.errors import MalformedRequest
from broker.ports import AdminTokenInfo, AdminTokenStore, AuditSink, Clock
from broker.service.admin import ROLES, token_digest
from broker.service.auditing import event, record
from broker.service.context import RequestContext

TOKEN_PREFIX: Final = "bkt_"  # noqa: S105 - a prefix, not a secret
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_PERIOD = re.compile(r"(\d{1,9})([mhdw])")
_UNIT: Final = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MIN_LIFETIME: Final = 60
MAX_LIFETIME: Final = 2 * 365 * 86400


def parse_lifetime(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` -> a duration (a minute up to two years).

    Raises:
        MalformedRequest: any other text.
    """
    match = _PERIOD.fullmatch(text.strip())
    if match is None:
        raise MalformedRequest("expires must look like 30d, 12h, 90m or 2w")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if not MIN_LIFETIME <= seconds <= MAX_LIFETIME:
        raise MalformedRequest("expires must be between a minute and two years")
    return timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    info: AdminTokenInfo
    # Shown to the caller once; never stored, logged or audited.
    token: str = field(repr=False)


class AdminTokenService:
    def __init__(self, store: AdminTokenStore, audit: AuditSink, clock: Clock) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock

    async def create(
        self, *, name: str, role: str, expires: str | None, ctx: RequestContext
    ) -> IssuedToken:
        """Raises MalformedRequest for a bad name, role or lifetime."""
        if not _NAME.fullmatch(name):
            raise MalformedRequest(
                "name: 1-64 of letters, digits and . _ @ - (letter or digit first)"
            )
        if role not in ROLES:
            raise MalformedRequest(f"role must be one of {sorted(ROLES)}")
        lifetime = None if expires is None else parse_lifetime(expires)
        now = self._clock.now()
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        info = AdminTokenInfo(
            id=secrets.token_hex(8),
            name=name,
            role=role,
            created_at=now,
            created_by=ctx.actor,
            expires_at=None if lifetime is None else now + lifetime,
            revoked_at=None,
        )
        await self._store.add_token(info, token_digest(token))
        # Durably audited before the token is handed out: no unaudited credential exists.
        await record(self._audit, self._event("admin.token_created", info, ctx, now))
        return IssuedToken(info=info, token=token)

    async def list(self) -> Sequence[AdminTokenInfo]:
        return await self._store.list_tokens()

    async def revoke(self, token_id: str, ctx: RequestContext) -> AdminTokenInfo:
        """Raises ResourceNotFound; revoking a revoked token changes nothing but is audited."""
        now = self._clock.now()
        info = await self._store.revoke_token(token_id, now)
        await record(self._audit, self._event("admin.token_revoked", info, ctx, now))
        return info

    @staticmethod
    def _event(name: str, info: AdminTokenInfo, ctx: RequestContext, now: datetime) -> AuditEvent:
        expires = "" if info.expires_at is None else f" expires={info.expires_at.isoformat()}"
        return event(
            name,
            ctx,
            now,
            decision="ok",
            resource=f"token/{info.id}",
            detail=f"name={info.name} role={info.role}{expires}",
        )
