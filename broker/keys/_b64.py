"""Strict base64url (RFC 4648 section 5, no padding) as JOSE uses it (RFC 7515 section 2)."""

from __future__ import annotations

import base64
import binascii
import re

_ALPHABET = re.compile(r"[A-Za-z0-9_-]*")


def b64url_encode(data: bytes) -> str:
    """Encode without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object) -> bytes:
    """Decode unpadded base64url; reject padding, foreign characters and non-canonical input.

    Raises:
        ValueError: ``text`` is not canonical unpadded base64url.
    """
    if not isinstance(text, str) or _ALPHABET.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc
    # Non-zero trailing bits would let two strings decode to the same bytes.
    if b64url_encode(data) != text:
        raise ValueError("non-canonical base64url")
    return data
