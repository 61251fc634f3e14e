"""Root-key rotation as an audited use case; the backend does the work.

The local store re-seals every value under a new root key
(``adapters.local_root_key``); a Vault backend rotates its transit key and
rewraps. Either way the rotation is audited with who asked for it.
"""

from __future__ import annotations

from broker.ports import AuditSink, Clock, RootKeyManager, RotationResult
from broker.service.auditing import event, record
from broker.service.context import RequestContext


class RootKeyService:
    def __init__(self, manager: RootKeyManager, audit: AuditSink, clock: Clock) -> None:
        self._manager = manager
        self._audit = audit
        self._clock = clock

    async def rotate(self, ctx: RequestContext) -> RotationResult:
        now = self._clock.now()
        result = await self._manager.rotate()
        await record(
            self._audit,
            event(
                "admin.root_key_rotated",
                ctx,
                now,
                decision="ok",
                detail=f"resealed {result.resealed} values; root key id {result.key_id}",
            ),
        )
        return result
