"""Audit record format v1: one event, numbered and hash-linked to its predecessor.

Usage::

    event = AuditEvent(event="resource.released", time=now, request_id="r-1",
                       decision="allow", resource="tenant-a/db/key", version=3)
    first = chain_next(None, event)          # seq 0, prev_hash = GENESIS_HASH
    second = chain_next(first, other_event)  # seq 1, prev_hash = first.hash
    line = first.canonical_bytes()           # RFC 8785 JSON, without "hash"

The record dict (``to_dict``) is the wire and storage form; ``from_dict``
validates it strictly and, when a ``hash`` member is present, checks it
against the recomputed hash. ``docs/audit-format.md`` describes every field.

Events carry identifiers and digests only: there is no field that could hold
key material, and ``detail`` is a short human note, never a secret.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, cast

import msgspec

from broker import jcs
from broker.audit.claims import (
    MAX_SAFE_INT,
    FrozenClaims,
    clean_str,
    freeze_event_claims,
    freeze_json,
    strict_str,
    thaw,
)
from broker.audit.errors import AuditHashMismatch, AuditRecordInvalid

__all__ = [
    "DECISIONS",
    "FORMAT_VERSION",
    "GENESIS_HASH",
    "MAX_DETAIL_CHARS",
    "RECORD_KEYS",
    "AuditEvent",
    "AuditHashMismatch",
    "AuditRecord",
    "AuditRecordInvalid",
    "FrozenClaims",
    "chain_next",
    "format_time",
    "parse_time",
]

FORMAT_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64
DECISIONS: Final = frozenset({"allow", "deny", "error", "ok"})
MAX_DETAIL_CHARS: Final = 1024

_EVENT_RE: Final = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")
_TIME_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")

_STR_FIELDS: Final = (
    "request_id",
    "client",
    "actor",
    "tee",
    "evidence_digest",
    "policy_digest",
    "resource",
    "wrap_alg",
    "pubkey_thumbprint",
    "detail",
    "error_code",
)


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with exactly six fractional digits, e.g. ``2025-01-02T03:04:05.000006Z``.

    Fixed width, so the text sorts in time order (the SQLite adapter relies on it).

    Raises:
        AuditRecordInvalid: ``t`` is naive.
    """
    if t.tzinfo is None or t.utcoffset() is None:
        raise AuditRecordInvalid("audit time must be timezone-aware")
    return _utc_text(t)


# An event's time is formatted for its check, its hash, its stored body and its
# row: the same instant several times over. Equal instants in other zones give
# the same text, so they may share an entry.
@functools.lru_cache(maxsize=256)
def _utc_text(t: datetime) -> str:
    return t.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """Inverse of ``format_time``; accepts only its exact output.

    Raises:
        AuditRecordInvalid: any other spelling, or an impossible date.
    """
    if not _TIME_RE.fullmatch(text):
        raise AuditRecordInvalid(
            "time is not RFC 3339 UTC with microseconds (YYYY-MM-DDTHH:MM:SS.ffffffZ)"
        )
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError:
        raise AuditRecordInvalid("time is not a valid date and time") from None


def _check_int(value: object, name: str, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    # bool is an int subclass; true/false must never pass as a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise AuditRecordInvalid(f"{name} must be an integer")
    if not 0 <= value <= MAX_SAFE_INT:
        raise AuditRecordInvalid(f"{name} is out of range")


def _check_event_fields(obj: AuditEvent | AuditRecord) -> None:
    """Invariants shared by events and records (values already normalised)."""
    if not _EVENT_RE.fullmatch(strict_str(obj.event, "event")):
        raise AuditRecordInvalid("event must be a dotted lowercase name such as 'kbs.auth'")
    if strict_str(obj.decision, "decision") not in DECISIONS:
        raise AuditRecordInvalid(f"decision must be one of {sorted(DECISIONS)}")
    for name in _STR_FIELDS:
        strict_str(getattr(obj, name), name)
    if len(obj.detail) > MAX_DETAIL_CHARS:
        raise AuditRecordInvalid(f"detail is longer than {MAX_DETAIL_CHARS} characters")
    if not isinstance(obj.reasons, tuple):
        raise AuditRecordInvalid("reasons must be a tuple of strings")
    for reason in obj.reasons:
        strict_str(reason, "reasons[]")
    _check_int(obj.version, "version", optional=True)
    if obj.claims is not None and not isinstance(obj.claims, MappingProxyType):
        raise AuditRecordInvalid("claims must be a JSON object or null")


# -- event and record ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What the service hands to the audit log. Normalised on construction.

    ``time`` must be timezone-aware and is kept in UTC. ``claims`` is deep-copied
    into an immutable JSON value (integers beyond +/-(2**53-1) become decimal
    text). ``detail`` longer than ``MAX_DETAIL_CHARS`` is cut. Lone surrogates
    in text become U+FFFD.

    Raises:
        AuditRecordInvalid: on a value format v1 cannot hold.
    """

    event: str
    time: datetime
    request_id: str = ""
    client: str = ""
    actor: str = ""
    tee: str = ""
    evidence_digest: str = ""
    claims: Mapping[str, Any] | None = None
    policy_digest: str = ""
    decision: str = "ok"
    reasons: tuple[str, ...] = ()
    resource: str = ""
    version: int | None = None
    wrap_alg: str = ""
    pubkey_thumbprint: str = ""
    detail: str = ""
    error_code: str = ""
    # RFC 8785 bytes of ``claims``: the record's hash and its stored body splice
    # them in instead of canonicalising the claims again for each.
    _claims_jcs: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        setter = object.__setattr__
        format_time(self.time)  # rejects naive times
        setter(self, "time", self.time.astimezone(UTC))
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                setter(self, name, clean_str(value))
        # Values typed by annotation only: callers may still hand in a list or a non-str.
        detail: object = self.detail
        if isinstance(detail, str) and len(detail) > MAX_DETAIL_CHARS:
            setter(self, "detail", detail[: MAX_DETAIL_CHARS - 1] + "\u2026")
        reasons: object = self.reasons
        if isinstance(reasons, list | tuple):
            setter(
                self, "reasons", tuple(clean_str(r) if isinstance(r, str) else r for r in reasons)
            )
        claims: object = self.claims
        if isinstance(claims, FrozenClaims):
            setter(self, "claims", claims.value)
            canonical = claims.canonical
        elif claims is not None:
            if not isinstance(claims, Mapping):
                raise AuditRecordInvalid("claims must be a JSON object or None")
            frozen, canonical = freeze_event_claims(claims)
            setter(self, "claims", frozen)
        else:
            canonical = b"null"
        _check_event_fields(self)
        setter(self, "_claims_jcs", canonical)


_EVENT_FIELD_NAMES: Final = tuple(f.name for f in fields(AuditEvent) if f.init)
_encode_sorted: Final = msgspec.json.Encoder(order="sorted").encode


def _claims_jcs(claims: Mapping[str, Any] | None) -> bytes:
    return jcs.dumps(thaw(claims))


RECORD_KEYS: Final = frozenset({"format", "seq", "prev_hash", "hash", *_EVENT_FIELD_NAMES})


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One link of the audit chain. Holding one means its fields satisfy format v1.

    ``hash`` is computed on construction: SHA-256 (hex) of ``canonical_bytes()``.
    Build records with ``chain_next`` or ``from_dict``, not by hand.

    Raises:
        AuditRecordInvalid: on construction with values format v1 cannot hold.
    """

    format: int
    seq: int
    prev_hash: str
    event: str
    time: datetime
    request_id: str
    client: str
    actor: str
    tee: str
    evidence_digest: str
    claims: Mapping[str, Any] | None
    policy_digest: str
    decision: str
    reasons: tuple[str, ...]
    resource: str
    version: int | None
    wrap_alg: str
    pubkey_thumbprint: str
    detail: str
    error_code: str
    hash: str = field(init=False, compare=False)
    # Hashed, leaf-hashed and stored for every record: computed once.
    _canonical: bytes = field(init=False, compare=False, repr=False)
    # Given by ``chain_next`` from the event; computed when omitted.
    _claims_jcs: bytes = field(default=b"", compare=False, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        # from_dict passes JSON values straight through: check types at run time.
        fmt: object = self.format
        if type(fmt) is not int or fmt != FORMAT_VERSION:
            raise AuditRecordInvalid(f"unsupported record format {fmt!r}")
        _check_int(self.seq, "seq")
        prev_hash: object = self.prev_hash
        if not isinstance(prev_hash, str) or not _HASH_RE.fullmatch(prev_hash):
            raise AuditRecordInvalid("prev_hash must be 64 lowercase hex digits")
        time: object = self.time
        if not isinstance(time, datetime) or time.tzinfo is not UTC:
            raise AuditRecordInvalid("time must be a UTC datetime")
        _check_event_fields(self)
        if self.seq == 0 and self.prev_hash != GENESIS_HASH:
            raise AuditRecordInvalid("the record with seq 0 must have the genesis prev_hash")
        if not self._claims_jcs:
            object.__setattr__(self, "_claims_jcs", _claims_jcs(self.claims))
        canonical = self._encode(with_hash=False)
        object.__setattr__(self, "_canonical", canonical)
        object.__setattr__(self, "hash", hashlib.sha256(canonical).hexdigest())

    def _encode(self, *, with_hash: bool) -> bytes:
        # RFC 8785 spliced from parts: every member but claims is a string, a
        # safe integer, null or a list of strings (checked above) under an ASCII
        # name, for which msgspec's sorted encoding is the canonical form, and the
        # claims go in as their own canonical bytes.
        out: dict[str, Any] = {"format": self.format, "seq": self.seq, "prev_hash": self.prev_hash}
        for name in _EVENT_FIELD_NAMES:
            out[name] = getattr(self, name)
        out["time"] = format_time(self.time)
        out["claims"] = msgspec.Raw(self._claims_jcs)
        out["reasons"] = list(self.reasons)
        if with_hash:
            out["hash"] = self.hash
        return _encode_sorted(out)

    def to_dict(self, *, with_hash: bool = True) -> dict[str, Any]:
        """The record as plain JSON values, in schema order; ``hash`` last."""
        out: dict[str, Any] = {
            "format": self.format,
            "seq": self.seq,
            "prev_hash": self.prev_hash,
        }
        for name in _EVENT_FIELD_NAMES:
            out[name] = getattr(self, name)
        out["time"] = format_time(self.time)
        out["claims"] = thaw(self.claims)
        out["reasons"] = list(self.reasons)
        if with_hash:
            out["hash"] = self.hash
        return out

    def canonical_bytes(self) -> bytes:
        """RFC 8785 (JCS) bytes of the record without its own ``hash``: what is hashed."""
        return self._canonical

    def body_bytes(self) -> bytes:
        """RFC 8785 (JCS) bytes of the whole record, ``hash`` included: what is stored."""
        return self._encode(with_hash=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditRecord:
        """Parse a record dict (a decoded JSONL line or a stored row) strictly.

        Every key of format v1 must be present with its JSON type; no other key
        may appear. If ``hash`` is present it must equal the recomputed hash.

        Raises:
            AuditRecordInvalid: naming the first problem found.
        """
        if not isinstance(data, Mapping):
            raise AuditRecordInvalid("record is not a JSON object")
        keys = set(data)
        missing = RECORD_KEYS - keys - {"hash"}
        if missing:
            raise AuditRecordInvalid(f"missing field {sorted(missing)[0]!r}")
        extra = keys - RECORD_KEYS
        if extra:
            raise AuditRecordInvalid(f"unknown field {sorted(map(str, extra))[0]!r}")
        claims = data["claims"]
        if claims is not None and not isinstance(claims, Mapping):
            raise AuditRecordInvalid("claims must be a JSON object or null")
        reasons = data["reasons"]
        if not isinstance(reasons, list):
            raise AuditRecordInvalid("reasons must be an array of strings")
        record = cls(
            format=data["format"],
            seq=data["seq"],
            prev_hash=data["prev_hash"],
            event=strict_str(data["event"], "event"),
            time=parse_time(strict_str(data["time"], "time")),
            claims=None
            if claims is None
            else cast("Mapping[str, Any]", freeze_json(claims, lenient=False)),
            reasons=tuple(reasons),
            **{name: data[name] for name in (*_STR_FIELDS, "decision", "version")},
        )
        if "hash" in data and data["hash"] != record.hash:
            raise AuditHashMismatch("hash does not match the record's canonical bytes")
        return record


def chain_next(prev: AuditRecord | None, event: AuditEvent) -> AuditRecord:
    """The record that follows ``prev`` (or starts the chain) for ``event``.

    Raises:
        AuditRecordInvalid: only if ``prev`` is at the end of the sequence range.
    """
    values = {name: getattr(event, name) for name in _EVENT_FIELD_NAMES}
    if prev is None:
        return AuditRecord(
            format=FORMAT_VERSION,
            seq=0,
            prev_hash=GENESIS_HASH,
            _claims_jcs=event._claims_jcs,
            **values,
        )
    return AuditRecord(
        format=FORMAT_VERSION,
        seq=prev.seq + 1,
        prev_hash=prev.hash,
        _claims_jcs=event._claims_jcs,
        **values,
    )
