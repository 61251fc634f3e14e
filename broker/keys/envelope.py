"""The flattened JWE JSON envelope shared by the broker and the enclave client.

Layout (RFC 7516 section 7.2.2, flattened syntax)::

    {"protected": b64url(JSON header),  # always; carries alg, kid, res, ver, jti
     "encrypted_key": ...,              # JOSE algs: wrapped CEK; HPKE: encapsulated key
     "header": {"epk": {...}},          # ECDH-ES+A256KW only
     "iv": ..., "tag": ...,             # JOSE algs only (A256GCM)
     "ciphertext": ...}                 # always

See docs/protocol.md ("Key wrapping") for the per-algorithm rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from broker.keys._b64 import b64url_decode, b64url_encode

ENVELOPE_MEMBERS: Final = frozenset(
    {"protected", "encrypted_key", "header", "iv", "ciphertext", "tag"}
)
# A released secret is small; these bound the work before any crypto runs.
MAX_PLAINTEXT_BYTES: Final = 1 << 20
MAX_MEMBER_CHARS: Final = 2 * MAX_PLAINTEXT_BYTES
MAX_PROTECTED_CHARS: Final = 8192


def encode_protected(header: Mapping[str, Any]) -> str:
    """Compact UTF-8 JSON, base64url: the value of the ``protected`` member."""
    text = json.dumps(dict(header), separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return b64url_encode(text.encode("utf-8"))


def decode_protected(value: object) -> dict[str, Any]:
    """Decode a ``protected`` member into a JSON object.

    Raises:
        ValueError: not base64url, not UTF-8 JSON, not an object, or duplicate names.
    """
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PROTECTED_CHARS:
        raise ValueError("protected header missing or oversized")
    data = json.loads(b64url_decode(value).decode("utf-8"), object_pairs_hook=_no_duplicates)
    if not isinstance(data, dict):
        raise ValueError("protected header is not an object")
    return data


def check_members(envelope: object, *, required: frozenset[str]) -> None:
    """Exactly the ``required`` members (plus nothing unknown), each bounded.

    Raises:
        ValueError: a member is missing, unexpected, of the wrong type or oversized.
    """
    if not isinstance(envelope, Mapping) or set(envelope) != required:
        raise ValueError("envelope members do not match the algorithm")
    for name in required:
        value = envelope[name]
        if name == "header":
            if not isinstance(value, Mapping):
                raise ValueError("header must be an object")
        elif not isinstance(value, str) or len(value) > MAX_MEMBER_CHARS:
            raise ValueError(f"{name} must be a bounded string")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7516 5.2 step 4: duplicate header names must be rejected.
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError("duplicate header name")
        result[name] = value
    return result
