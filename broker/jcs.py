"""RFC 8785 (JCS) canonical JSON, fast for the values the broker hashes and signs.

Usage::

    from broker import jcs
    digest = hashlib.sha256(jcs.dumps({"b": 1, "a": [True, None, "x"]})).digest()

``dumps`` returns exactly the bytes ``rfc8785.dumps`` returns and raises the
same ``CanonicalizationError`` (and subclasses) for the same inputs. Audit
records, receipts and KBS bindings are canonicalised on every request, and the
reference implementation is pure Python (about 40x slower than msgspec on a
release record). msgspec's sorted-key encoder writes the same bytes as JCS for
a plain tree of dicts, lists, tuples, strings, booleans, None and I-JSON-safe
integers whose object keys are ASCII: JCS and msgspec escape strings the same
way (tests/test_jcs.py checks it exhaustively for every code point below
U+0800 and by property for the rest), and ASCII keys sort the same by UTF-16
code unit (JCS) and by code point (msgspec). Everything else (floats, whose
ECMAScript spelling differs from Python's; non-ASCII keys, whose order can
differ above U+FFFF; unsupported types; integers out of range; lone
surrogates) goes to the reference implementation unchanged.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
import rfc8785

__all__ = ["CanonicalizationError", "dumps"]

CanonicalizationError = rfc8785.CanonicalizationError

# RFC 8785 section 3.2.2.3: the reference implementation refuses integers past this.
_MAX_SAFE: Final = 2**53 - 1
# Deeper trees are rare; the reference implementation decides what they do.
_MAX_DEPTH: Final = 64
_encode: Final = msgspec.json.Encoder(order="sorted").encode


def _plain(value: object, depth: int) -> bool:
    """True when msgspec's sorted encoding of ``value`` is its JCS form."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return -_MAX_SAFE <= value <= _MAX_SAFE  # type: ignore[operator]
    if depth >= _MAX_DEPTH:
        return False
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str or not key.isascii() or not _plain(item, depth + 1):
                return False
        return True
    if kind is list or kind is tuple:
        return all(_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return False


def dumps(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value``.

    Raises:
        CanonicalizationError: ``value`` has no canonical form (as ``rfc8785.dumps``).
    """
    if _plain(value, 0):
        try:
            return _encode(value)
        except UnicodeEncodeError:
            pass  # a lone surrogate: the reference implementation names the error
    return rfc8785.dumps(value)
