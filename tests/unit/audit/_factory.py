"""Builders for audit events, chains and export files shared by the audit tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from broker.audit.export import to_jsonl
from broker.audit.record import AuditEvent, AuditRecord, chain_next

T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def make_event(i: int = 0, **overrides: Any) -> AuditEvent:
    values: dict[str, Any] = {
        "event": "resource.released",
        "time": T0 + timedelta(seconds=i),
        "request_id": f"req-{i}",
        "client": "127.0.0.1",
        "actor": "",
        "tee": "snp",
        "evidence_digest": "sha256:" + "ab" * 32,
        "claims": {"measurement": "00" * 48, "tcb": {"snp": 23, "microcode": 213}, "debug": False},
        "policy_digest": "sha256:" + "cd" * 32,
        "decision": "allow",
        "reasons": ("policy.allowed",),
        "resource": "tenant-a/db/key",
        "version": 3,
        "wrap_alg": "HPKE-X25519-SHA256-AES256GCM",
        "pubkey_thumbprint": "ef" * 32,
        "detail": "",
        "error_code": "",
    }
    values.update(overrides)
    return AuditEvent(**values)


def make_chain(n: int, **overrides: Any) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev: AuditRecord | None = None
    for i in range(n):
        prev = chain_next(prev, make_event(i, **overrides))
        records.append(prev)
    return records


def export_bytes(records: list[AuditRecord]) -> bytes:
    return "".join(to_jsonl(records)).encode("utf-8")
