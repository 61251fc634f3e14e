"""Errors of the audit record format (shared by the record and its JSON values)."""

from __future__ import annotations

from broker.errors import BrokerError

__all__ = ["AuditHashMismatch", "AuditRecordInvalid"]


class AuditRecordInvalid(BrokerError):
    """An audit event or record does not satisfy format v1."""

    code = "AuditRecordInvalid"


class AuditHashMismatch(AuditRecordInvalid):
    """A well-formed record whose stored ``hash`` is not the hash of its content."""

    code = "AuditHashMismatch"
