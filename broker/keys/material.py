"""Secret bytes that never print themselves."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SecretBytes:
    """Key material or a secret. ``repr``/``str`` are redacted; use ``.reveal()``."""

    _value: bytes = field(repr=False)

    def reveal(self) -> bytes:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"SecretBytes(<{len(self._value)} bytes redacted>)"

    __str__ = __repr__

    def fingerprint(self) -> str:
        """A short non-reversible id, safe for logs (SHA-256 prefix of a domain-separated hash)."""
        return hashlib.sha256(b"broker-secret-fp\0" + self._value).hexdigest()[:16]
