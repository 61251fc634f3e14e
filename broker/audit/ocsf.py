"""Audit records as OCSF 1.3 events (class API Activity, 6003), for SIEM ingestion.

Usage::

    for line in to_ocsf_lines(records):      # AuditRecord or record dicts
        out.write(line)                      # one JSON object per line

Every request to the broker is an API call whose outcome the broker decided,
so each record maps to one "API Activity" event of the "Application
Activity" category, with the ``security_control`` profile carrying the
allow/deny outcome. The mapping is tabled in ``docs/audit-format.md``.
Nothing is dropped: record fields without an OCSF attribute go to
``unmapped`` under their own names. An OCSF event is a view of the record and
cannot be verified; the JSONL export stays the evidence.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from broker import __version__
from broker.audit.privacy import RequesterKey
from broker.audit.record import AuditRecord, format_time

__all__ = [
    "OCSF_VERSION",
    "activity_for",
    "to_ocsf",
    "to_ocsf_lines",
]

OCSF_VERSION: Final = "1.3.0"
PRODUCT_NAME: Final = "attested-broker"
CLASS_UID: Final = 6003
CATEGORY_UID: Final = 6

# activity_id of API Activity; 99 is OCSF's "Other".
CREATE, READ, UPDATE, DELETE, OTHER = 1, 2, 3, 4, 99
_ACTIVITY_NAMES: Final = {CREATE: "Create", READ: "Read", UPDATE: "Update", DELETE: "Delete"}
# Exact event names first, then the last word of the event name.
_EVENT_ACTIVITY: Final = {
    "kbs.auth": CREATE,  # opens a session and issues a challenge
    "kbs.attest": CREATE,  # issues an attestation token
    "resource.released": READ,
    "resource.denied": READ,
    "admin.policy_reload": UPDATE,
}
_SUFFIX_ACTIVITY: Final = (
    (("_created", "_restored"), CREATE),
    (("_rotated", "_configured", "_retired", "_updated", "_reload"), UPDATE),
    (("_deleted", "_destroyed"), DELETE),
)
# decision -> (severity_id, severity, status_id, status)
_OUTCOME: Final = {
    "allow": (1, "Informational", 1, "Success"),
    "ok": (1, "Informational", 1, "Success"),
    "error": (2, "Low", 2, "Failure"),
    "deny": (3, "Medium", 2, "Failure"),
}
# decision -> (action_id, action, disposition_id, disposition) of the security_control profile
_CONTROL: Final = {
    "allow": (1, "Allowed", 1, "Allowed"),
    "deny": (2, "Denied", 2, "Blocked"),
}
_UNMAPPED: Final = (
    "format",
    "prev_hash",
    "tee",
    "evidence_digest",
    "claims",
    "policy_digest",
    "reasons",
    "version",
    "wrap_alg",
    "pubkey_thumbprint",
)


def activity_for(event: str) -> int:
    """The API Activity ``activity_id`` for an audit event name (99 when none fits)."""
    if event in _EVENT_ACTIVITY:
        return _EVENT_ACTIVITY[event]
    for suffixes, activity in _SUFFIX_ACTIVITY:
        if event.endswith(suffixes):
            return activity
    return OTHER


def _endpoint(client: str) -> dict[str, str]:
    try:
        return {"ip": str(ipaddress.ip_address(client))}
    except ValueError:
        return {"name": client or "unknown"}


def _actor(record: AuditRecord) -> dict[str, Any]:
    if record.actor:
        return {"user": {"name": record.actor, "type": "Admin", "type_id": 2}}
    # Workloads have no identity but their TEE type and their (thumbprinted) key.
    return {"app_name": f"tee:{record.tee}" if record.tee else "kbs-client"}


def _message(record: AuditRecord) -> str:
    """A one-line summary, e.g. ``resource.denied deny; db/key v3; reasons: policy.x``."""
    parts = [f"{record.event} {record.decision}"]
    if record.resource:
        version = f" v{record.version}" if record.version is not None else ""
        parts.append(f"{record.resource}{version}")
    if record.reasons:
        parts.append("reasons: " + ", ".join(record.reasons))
    if record.error_code:
        parts.append(f"error: {record.error_code}")
    return "; ".join(parts)


def to_ocsf(
    record: AuditRecord | Mapping[str, Any], requester_key: RequesterKey | None = None
) -> dict[str, Any]:
    """One OCSF API Activity event for one audit record (a record dict is parsed strictly).

    With ``requester_key``, the client address and the admin actor appear only
    as their keyed hashes (``src_endpoint.name``, ``actor.user.name``).

    Raises:
        AuditRecordInvalid: the dict is not a valid format-1 record.
    """
    rec = record if isinstance(record, AuditRecord) else AuditRecord.from_dict(record)
    if requester_key is not None:
        return _redacted(to_ocsf(rec), rec, requester_key)
    activity = activity_for(rec.event)
    severity_id, severity, status_id, status = _OUTCOME[rec.decision]
    full = rec.to_dict(with_hash=True)
    metadata: dict[str, Any] = {
        "version": OCSF_VERSION,
        "product": {"name": PRODUCT_NAME, "vendor_name": PRODUCT_NAME, "version": __version__},
        "uid": rec.hash,
        "sequence": rec.seq,
        "event_code": rec.event,
        "log_name": "audit",
        "original_time": format_time(rec.time),
    }
    if rec.request_id:
        metadata["correlation_uid"] = rec.request_id
    event: dict[str, Any] = {
        "class_uid": CLASS_UID,
        "class_name": "API Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity,
        "activity_name": _ACTIVITY_NAMES.get(activity, "Other"),
        "type_uid": CLASS_UID * 100 + activity,
        "type_name": f"API Activity: {_ACTIVITY_NAMES.get(activity, 'Other')}",
        # OCSF timestamp_t is milliseconds; metadata.original_time keeps the microseconds.
        "time": int(rec.time.timestamp() * 1000),
        "severity_id": severity_id,
        "severity": severity,
        "status_id": status_id,
        "status": status,
        "message": _message(rec),
        "metadata": metadata,
        "actor": _actor(rec),
        "api": {"operation": rec.event, "request": {"uid": rec.request_id}},
        "src_endpoint": _endpoint(rec.client),
        "unmapped": {name: full[name] for name in _UNMAPPED},
    }
    if rec.error_code:
        event["status_code"] = rec.error_code
        event["api"]["response"] = {"error": rec.error_code, "error_message": rec.detail}
    if rec.detail:
        event["status_detail"] = rec.detail
    if rec.resource:
        resource: dict[str, Any] = {"name": rec.resource, "uid": rec.resource, "type": "resource"}
        if rec.version is not None:
            resource["data"] = {"version": rec.version}
        event["resources"] = [resource]
    if rec.decision in _CONTROL:
        action_id, action, disposition_id, disposition = _CONTROL[rec.decision]
        event |= {
            "action_id": action_id,
            "action": action,
            "disposition_id": disposition_id,
            "disposition": disposition,
        }
        metadata["profiles"] = ["security_control"]
    return event


def _redacted(event: dict[str, Any], rec: AuditRecord, key: RequesterKey) -> dict[str, Any]:
    event["src_endpoint"] = {"name": key.hash(rec.client) or "unknown"}
    if rec.actor:
        event["actor"]["user"]["name"] = key.hash(rec.actor)
    return event


def to_ocsf_lines(
    records: Iterable[AuditRecord | Mapping[str, Any]], requester_key: RequesterKey | None = None
) -> Iterator[str]:
    """OCSF JSONL: one compact JSON event per line, keys sorted, UTF-8 text.

    Raises:
        AuditRecordInvalid: at the first record dict that is not a valid record.
    """
    for record in records:
        event = to_ocsf(record, requester_key)
        yield json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n"
