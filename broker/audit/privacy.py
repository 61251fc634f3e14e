"""Keyed hashing of requester identifiers, so exports can be shared without addresses.

Usage::

    key = RequesterKey.generate()                    # 32 random bytes, kept in the data dir
    key.hash("10.1.2.3")                             # 'hmac-sha256:5f0c...'
    redacted = redact_record(record.to_dict(), key)  # client and actor replaced

The same value always gives the same hash under one key, so a reader of a
redacted export can still count and group by requester, and the key holder
can check whether a given address appears (``broker audit hash-requester``,
like Vault's ``/sys/audit-hash``). Without the key the hash reveals nothing
about the value. Empty values stay empty, so "no actor" stays visible.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from broker.errors import ConfigError

__all__ = [
    "HASH_PREFIX",
    "KEY_SIZE",
    "REQUESTER_FIELDS",
    "RequesterKey",
    "redact_record",
]

HASH_PREFIX: Final = "hmac-sha256:"
KEY_SIZE: Final = 32
# The record fields that identify who asked: the network address and the admin principal.
REQUESTER_FIELDS: Final = ("client", "actor")


@dataclass(frozen=True, slots=True)
class RequesterKey:
    """The per-deployment HMAC key; never printed."""

    material: bytes = field(repr=False)

    def __post_init__(self) -> None:
        material: object = self.material
        if not isinstance(material, bytes) or len(material) != KEY_SIZE:
            raise ConfigError(f"the requester HMAC key must be {KEY_SIZE} bytes")

    @classmethod
    def generate(cls) -> RequesterKey:
        return cls(secrets.token_bytes(KEY_SIZE))

    def hash(self, value: str) -> str:
        """``hmac-sha256:<hex>`` of the UTF-8 value; the empty string stays empty."""
        if not value:
            return ""
        digest = hmac.new(self.material, value.encode("utf-8", "replace"), hashlib.sha256)
        return HASH_PREFIX + digest.hexdigest()

    def matches(self, value: str, hashed: str) -> bool:
        """True when ``hashed`` is this key's hash of ``value`` (constant-time compare)."""
        return hmac.compare_digest(self.hash(value).encode(), hashed.encode())


def redact_record(record: Mapping[str, Any], key: RequesterKey) -> dict[str, Any]:
    """A copy of a record dict with its requester fields replaced by their keyed hashes."""
    out = dict(record)
    for name in REQUESTER_FIELDS:
        value = out.get(name)
        if isinstance(value, str):
            out[name] = key.hash(value)
    return out
