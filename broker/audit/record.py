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
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, cast

import msgspec

from broker import jcs
from broker.errors import BrokerError

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
    "freeze_claims",
    "parse_time",
]

FORMAT_VERSION: Final = 1
GENESIS_HASH: Final = "0" * 64
DECISIONS: Final = frozenset({"allow", "deny", "error", "ok"})
MAX_DETAIL_CHARS: Final = 1024
# I-JSON (RFC 7493 section 2.2) / RFC 8785 section 3.2.2.3: integers beyond
# this magnitude are not interoperable, so the event type records them as text.
MAX_SAFE_INT: Final = 2**53 - 1
MAX_JSON_DEPTH: Final = 32

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


class AuditRecordInvalid(BrokerError):
    """An audit event or record does not satisfy format v1."""

    code = "AuditRecordInvalid"


class AuditHashMismatch(AuditRecordInvalid):
    """A well-formed record whose stored ``hash`` is not the hash of its content."""

    code = "AuditHashMismatch"


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


# -- JSON values --------------------------------------------------------------------------------


def _clean_str(s: str) -> str:
    # Lone surrogates (e.g. from surrogateescape-decoded headers) cannot be
    # encoded as UTF-8, and so not canonicalised; U+FFFD keeps the rest.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")
    return s


class _NotPlain(Exception):
    """Internal: a value outside ``_freeze_plain``'s fast path."""


def _freeze_plain(value: object, depth: int) -> object:
    """``_freeze`` for the common case, or _NotPlain.

    Handles only what msgspec's sorted encoder writes exactly as RFC 8785 does:
    ASCII strings, None, booleans, safe integers, lists and dicts with ASCII
    string keys. Exact types, because isinstance against the Mapping ABC costs
    more than the copy, and every event carries claims.
    """
    kind = type(value)
    if kind is str:
        if value.isascii():  # type: ignore[attr-defined]
            return value
    elif value is None or kind is bool:
        return value
    elif kind is int:
        if -MAX_SAFE_INT <= value <= MAX_SAFE_INT:  # type: ignore[operator]
            return value
    elif depth < MAX_JSON_DEPTH:
        if kind is dict:
            out: dict[str, object] = {}
            for k, v in value.items():  # type: ignore[attr-defined]
                if type(k) is not str or not k.isascii():
                    raise _NotPlain
                out[k] = _freeze_plain(v, depth + 1)
            return MappingProxyType(out)
        if kind is list or kind is tuple:
            return tuple(_freeze_plain(v, depth + 1) for v in value)  # type: ignore[attr-defined]
    raise _NotPlain


def _proxy_as_dict(value: object) -> object:
    if type(value) is MappingProxyType:
        return dict(value)
    raise NotImplementedError


_encode_frozen: Final = msgspec.json.Encoder(order="sorted", enc_hook=_proxy_as_dict).encode


def _freeze_claims(claims: Mapping[str, Any]) -> tuple[Mapping[str, Any], bytes]:
    """The event's frozen claims and their RFC 8785 bytes."""
    try:
        frozen = cast("Mapping[str, Any]", _freeze_plain(claims, 1))
    except _NotPlain:
        frozen = cast("Mapping[str, Any]", _freeze(claims, lenient=True))
        return frozen, jcs.dumps(_thaw(frozen))
    return frozen, _encode_frozen(frozen)


@dataclass(frozen=True, slots=True)
class FrozenClaims(Mapping[str, Any]):
    """Claims already normalised for events, with their RFC 8785 bytes: the claims
    of one token, audited by each of its releases, are frozen once. Build with
    ``freeze_claims``; an event given one takes both as they are."""

    value: Mapping[str, Any]
    canonical: bytes = field(repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.value[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.value)

    def __len__(self) -> int:
        return len(self.value)


def freeze_claims(claims: Mapping[str, Any]) -> FrozenClaims:
    """``claims`` as an event would hold them (see ``AuditEvent``).

    Raises:
        AuditRecordInvalid: a value format v1 cannot hold.
    """
    if not isinstance(claims, Mapping):
        raise AuditRecordInvalid("claims must be a JSON object or None")
    return FrozenClaims(*_freeze_claims(claims))


def _freeze(value: object, *, lenient: bool, depth: int = 0) -> object:
    """A deep, immutable copy of a JSON value (mappings -> MappingProxyType, arrays -> tuple).

    ``lenient`` (events) turns unsafe integers into decimal text and repairs
    lone surrogates; strict mode (records read back) rejects both.
    """
    if depth > MAX_JSON_DEPTH:
        raise AuditRecordInvalid(f"claims nest deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) <= MAX_SAFE_INT:
            return value
        if lenient:
            return str(value)
        raise AuditRecordInvalid("claims hold an integer beyond +/-(2**53-1)")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditRecordInvalid("claims hold a non-finite number")
        return value
    if isinstance(value, str):
        return _clean_str(value) if lenient else _strict_str(value, "claims")
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for k, v in value.items():
            out[_freeze_key(k, lenient=lenient)] = _freeze(v, lenient=lenient, depth=depth + 1)
        return MappingProxyType(out)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v, lenient=lenient, depth=depth + 1) for v in value)
    raise AuditRecordInvalid(f"claims hold a non-JSON value of type {type(value).__name__}")


def _freeze_key(key: object, *, lenient: bool) -> str:
    if not isinstance(key, str):
        raise AuditRecordInvalid("claims object keys must be strings")
    return _clean_str(key) if lenient else _strict_str(key, "claims")


def _thaw(value: object) -> object:
    kind = type(value)
    if kind is MappingProxyType:
        return {k: _thaw(v) for k, v in value.items()}  # type: ignore[attr-defined]
    if kind is tuple:
        return [_thaw(v) for v in value]  # type: ignore[attr-defined]
    return value


def _strict_str(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise AuditRecordInvalid(f"{name} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditRecordInvalid(f"{name} is not valid Unicode text") from None
    return value


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
    if not _EVENT_RE.fullmatch(_strict_str(obj.event, "event")):
        raise AuditRecordInvalid("event must be a dotted lowercase name such as 'kbs.auth'")
    if _strict_str(obj.decision, "decision") not in DECISIONS:
        raise AuditRecordInvalid(f"decision must be one of {sorted(DECISIONS)}")
    for name in _STR_FIELDS:
        _strict_str(getattr(obj, name), name)
    if len(obj.detail) > MAX_DETAIL_CHARS:
        raise AuditRecordInvalid(f"detail is longer than {MAX_DETAIL_CHARS} characters")
    if not isinstance(obj.reasons, tuple):
        raise AuditRecordInvalid("reasons must be a tuple of strings")
    for reason in obj.reasons:
        _strict_str(reason, "reasons[]")
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
                setter(self, name, _clean_str(value))
        # Values typed by annotation only: callers may still hand in a list or a non-str.
        detail: object = self.detail
        if isinstance(detail, str) and len(detail) > MAX_DETAIL_CHARS:
            setter(self, "detail", detail[: MAX_DETAIL_CHARS - 1] + "\u2026")
        reasons: object = self.reasons
        if isinstance(reasons, list | tuple):
            setter(
                self, "reasons", tuple(_clean_str(r) if isinstance(r, str) else r for r in reasons)
            )
        claims: object = self.claims
        if isinstance(claims, FrozenClaims):
            setter(self, "claims", claims.value)
            canonical = claims.canonical
        elif claims is not None:
            if not isinstance(claims, Mapping):
                raise AuditRecordInvalid("claims must be a JSON object or None")
            frozen, canonical = _freeze_claims(claims)
            setter(self, "claims", frozen)
        else:
            canonical = b"null"
        _check_event_fields(self)
        setter(self, "_claims_jcs", canonical)


_EVENT_FIELD_NAMES: Final = tuple(f.name for f in fields(AuditEvent) if f.init)
_encode_sorted: Final = msgspec.json.Encoder(order="sorted").encode


def _claims_jcs(claims: Mapping[str, Any] | None) -> bytes:
    return jcs.dumps(_thaw(claims))


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
        out["claims"] = _thaw(self.claims)
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
            event=_strict_str(data["event"], "event"),
            time=parse_time(_strict_str(data["time"], "time")),
            claims=None
            if claims is None
            else cast("Mapping[str, Any]", _freeze(claims, lenient=False)),
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
