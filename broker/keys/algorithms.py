"""Wrapping algorithm names, their ordering, and the release context both sides bind to.

This module is shared by the broker (``keys.wrap``) and the enclave client
(``keys.unwrap``), so it holds only constants and pure values::

    ctx = WrapContext(resource="default/kbs/key", version=3, jti="4f1c...")
    ctx.info()  # b"attested-broker/v1 release\\x00default/kbs/key\\x003\\x004f1c..."
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from broker.errors import InvalidResourcePath, MalformedRequest, UnsupportedKey

# JWE "alg" values. The HPKE names are the registered identifiers of
# draft-ietf-jose-hpke-encrypt (HPKE-3) and draft-skokan-jose-hpke-pq-pqt (HPKE-10).
ECDH_ES_A256KW: Final = "ECDH-ES+A256KW"
RSA_OAEP_256: Final = "RSA-OAEP-256"
HPKE_X25519: Final = "HPKE-3"  # DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM
HPKE_MLKEM768_X25519: Final = "HPKE-10"  # MLKEM768-X25519, SHAKE256, AES-256-GCM
NACL_SEALEDBOX: Final = "nacl-sealedbox"

# The JWE "enc" for the two JOSE key-management algorithms.
CONTENT_ENCRYPTION: Final = "A256GCM"

ALL_ALGORITHMS: Final = frozenset(
    {ECDH_ES_A256KW, RSA_OAEP_256, HPKE_X25519, HPKE_MLKEM768_X25519, NACL_SEALEDBOX}
)
DEFAULT_ALLOWED: Final = ALL_ALGORITHMS

# Higher is stronger. Classical schemes at ~128-bit security share a rank;
# RSA sits below them (2048-bit moduli are ~112-bit), the PQ/T hybrid above.
ALGORITHM_STRENGTH: Final[Mapping[str, int]] = MappingProxyType(
    {
        RSA_OAEP_256: 1,
        ECDH_ES_A256KW: 2,
        NACL_SEALEDBOX: 2,
        HPKE_X25519: 2,
        HPKE_MLKEM768_X25519: 3,
    }
)

INFO_LABEL: Final = b"attested-broker/v1 release\x00"
MAX_RESOURCE_CHARS: Final = 1024
MAX_JTI_CHARS: Final = 256
MAX_VERSION: Final = 2**63 - 1


def algorithms_at_least(minimum: str) -> frozenset[str]:
    """Every algorithm whose strength is at least that of ``minimum``.

    Raises:
        UnsupportedKey: ``minimum`` is not an algorithm name.
    """
    if minimum not in ALGORITHM_STRENGTH:
        raise UnsupportedKey(f"unknown wrapping algorithm {minimum!r}")
    floor = ALGORITHM_STRENGTH[minimum]
    return frozenset(alg for alg, rank in ALGORITHM_STRENGTH.items() if rank >= floor)


@dataclass(frozen=True, slots=True)
class WrapContext:
    """What a wrapped key is bound to: the resource, its version and the token's ``jti``.

    Raises (on construction):
        InvalidResourcePath: ``resource`` is empty, too long or holds NUL.
        MalformedRequest: ``version`` or ``jti`` is out of range.
    """

    resource: str
    version: int
    jti: str

    def __post_init__(self) -> None:
        # NUL separates the fields of info(); forbidding it keeps the encoding injective.
        if not _is_text(self.resource, MAX_RESOURCE_CHARS):
            raise InvalidResourcePath("resource id must be 1-1024 characters without NUL")
        if not _is_version(self.version):
            raise MalformedRequest("resource version must be a non-negative integer")
        if not _is_text(self.jti, MAX_JTI_CHARS):
            raise MalformedRequest("token jti must be 1-256 characters without NUL")

    def info(self) -> bytes:
        """The exact context bytes (HPKE ``info``; sealed-box plaintext prefix)."""
        return b"".join(
            (
                INFO_LABEL,
                self.resource.encode("utf-8"),
                b"\x00",
                str(self.version).encode("ascii"),
                b"\x00",
                self.jti.encode("utf-8"),
            )
        )


def _is_text(value: object, limit: int) -> bool:
    # Lone surrogates are valid str but have no UTF-8 encoding.
    if not isinstance(value, str) or not 0 < len(value) <= limit or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_version(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_VERSION
