"""JSON values of audit events: deep immutable copies, and their RFC 8785 bytes.

Usage::

    frozen = freeze_claims({"claims": claims, "flags": flags})  # once per token
    AuditEvent(event="resource.released", time=now, claims=frozen)  # no second copy

Events normalise what they are given (lone surrogates become U+FFFD, integers
beyond +/-(2**53-1) become decimal text); records read back are checked
strictly instead. The fast path covers the plain trees every event carries
and is property-tested against the general one and the reference RFC 8785
implementation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, cast

import msgspec

from broker import jcs
from broker.audit.errors import AuditRecordInvalid

__all__ = [
    "MAX_JSON_DEPTH",
    "MAX_SAFE_INT",
    "FrozenClaims",
    "clean_str",
    "freeze_claims",
    "freeze_event_claims",
    "freeze_json",
    "strict_str",
    "thaw",
]

# I-JSON (RFC 7493 section 2.2) / RFC 8785 section 3.2.2.3: integers beyond
# this magnitude are not interoperable, so the event type records them as text.
MAX_SAFE_INT: Final = 2**53 - 1
MAX_JSON_DEPTH: Final = 32


def clean_str(s: str) -> str:
    """``s``, with any lone surrogate replaced by U+FFFD."""
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
    """``freeze_json`` for the common case, or _NotPlain.

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


def freeze_event_claims(claims: Mapping[str, Any]) -> tuple[Mapping[str, Any], bytes]:
    """The event's frozen claims and their RFC 8785 bytes."""
    try:
        frozen = cast("Mapping[str, Any]", _freeze_plain(claims, 1))
    except _NotPlain:
        frozen = cast("Mapping[str, Any]", freeze_json(claims, lenient=True))
        return frozen, jcs.dumps(thaw(frozen))
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
    return FrozenClaims(*freeze_event_claims(claims))


def freeze_json(value: object, *, lenient: bool, depth: int = 0) -> object:
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
        return clean_str(value) if lenient else strict_str(value, "claims")
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for k, v in value.items():
            out[_freeze_key(k, lenient=lenient)] = freeze_json(v, lenient=lenient, depth=depth + 1)
        return MappingProxyType(out)
    if isinstance(value, list | tuple):
        return tuple(freeze_json(v, lenient=lenient, depth=depth + 1) for v in value)
    raise AuditRecordInvalid(f"claims hold a non-JSON value of type {type(value).__name__}")


def _freeze_key(key: object, *, lenient: bool) -> str:
    if not isinstance(key, str):
        raise AuditRecordInvalid("claims object keys must be strings")
    return clean_str(key) if lenient else strict_str(key, "claims")


def thaw(value: object) -> object:
    """Plain dicts and lists again, from what ``freeze_json`` made."""
    kind = type(value)
    if kind is MappingProxyType:
        return {k: thaw(v) for k, v in value.items()}  # type: ignore[attr-defined]
    if kind is tuple:
        return [thaw(v) for v in value]  # type: ignore[attr-defined]
    return value


def strict_str(value: object, name: str) -> str:
    """``value`` if it is text that encodes as UTF-8.

    Raises:
        AuditRecordInvalid: naming ``name``.
    """
    if not isinstance(value, str):
        raise AuditRecordInvalid(f"{name} must be a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditRecordInvalid(f"{name} is not valid Unicode text") from None
    return value
