"""Building audit events from what a service knows; appending them fail-closed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from broker.audit.record import AuditEvent, AuditRecord
from broker.ports import AuditSink
from broker.service.context import RequestContext


def event(
    name: str,
    ctx: RequestContext,
    now: datetime,
    *,
    decision: str,
    tee: str = "",
    evidence_digest: str = "",
    claims: Mapping[str, Any] | None = None,
    policy_digest: str = "",
    reasons: Sequence[str] = (),
    resource: str = "",
    version: int | None = None,
    wrap_alg: str = "",
    pubkey_thumbprint: str = "",
    detail: str = "",
    error_code: str = "",
) -> AuditEvent:
    return AuditEvent(
        event=name,
        time=now,
        request_id=ctx.request_id,
        client=ctx.client,
        actor=ctx.actor,
        tee=tee,
        evidence_digest=evidence_digest,
        # AuditEvent makes its own frozen copy (or takes a FrozenClaims as it is).
        claims=claims,
        policy_digest=policy_digest,
        decision=decision,
        reasons=tuple(reasons),
        resource=resource,
        version=version,
        wrap_alg=wrap_alg,
        pubkey_thumbprint=pubkey_thumbprint,
        detail=detail,
        error_code=error_code,
    )


async def record(sink: AuditSink, ev: AuditEvent) -> AuditRecord | None:
    """Appends and waits for durability; AuditWriteError propagates (fail closed).

    Returns the committed record when the sink gives one back (the SQLite log does).
    """
    committed = await sink.append(ev)
    return committed if isinstance(committed, AuditRecord) else None
