"""Parse and validate the enclave's ``tee-pubkey`` JWK; RFC 7638 thumbprints.

``parse_public_jwk`` is the only door from an untrusted JSON object to a
``RecipientKey``; it refuses anything it does not fully understand::

    key = parse_public_jwk({"kty": "OKP", "crv": "X25519", "x": "..."})
    key.alg         # "HPKE-3"
    key.thumbprint  # RFC 7638 SHA-256 thumbprint, base64url

Accepted shapes (everything else raises ``UnsupportedKey``):

    EC  P-256 | P-521   {"kty","crv","x","y"}        -> ECDH-ES+A256KW
    RSA >= 2048 bits    {"kty","n","e"}              -> RSA-OAEP-256
    OKP X25519          {"kty","crv","x"}            -> HPKE-3
    OKP X25519          {..., "alg":"nacl-sealedbox"} -> nacl-sealedbox
    AKP                 {"kty","alg":"HPKE-10","pub"} -> HPKE-10 (MLKEM768-X25519)
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, rsa, x25519

from broker.errors import UnsupportedKey
from broker.keys._b64 import b64url_decode, b64url_encode
from broker.keys.algorithms import (
    ECDH_ES_A256KW,
    HPKE_MLKEM768_X25519,
    HPKE_X25519,
    NACL_SEALEDBOX,
    RSA_OAEP_256,
)

__all__ = [
    "MLKEM768_PUBLIC_BYTES",
    "MLKEM768_X25519_PUBLIC_BYTES",
    "RecipientKey",
    "parse_public_jwk",
    "thumbprint",
]

RecipientPublicKey = (
    ec.EllipticCurvePublicKey
    | rsa.RSAPublicKey
    | x25519.X25519PublicKey
    | hpke.MLKEM768X25519PublicKey
)

# Members that only a private JWK carries (RFC 7518 6.2.2, 6.3.2, 6.4; AKP "priv").
PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv", "seed"})
MAX_MEMBERS: Final = 32
MIN_RSA_BITS: Final = 2048
MAX_RSA_BITS: Final = 16384
MAX_RSA_EXPONENT_BYTES: Final = 8
X25519_BYTES: Final = 32
MLKEM768_PUBLIC_BYTES: Final = 1184
# draft-ietf-hpke-pq SerializePublicKey for MLKEM768-X25519: ML-KEM-768 ek || X25519 pk.
MLKEM768_X25519_PUBLIC_BYTES: Final = MLKEM768_PUBLIC_BYTES + X25519_BYTES
_CURVES: Final[dict[str, tuple[ec.EllipticCurve, int]]] = {
    "P-256": (ec.SECP256R1(), 32),
    "P-521": (ec.SECP521R1(), 66),
}
# RFC 7638 section 3.2 required members; AKP per draft-ietf-cose-dilithium.
_THUMBPRINT_MEMBERS: Final[dict[str, tuple[str, ...]]] = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
    "AKP": ("alg", "kty", "pub"),
}


@dataclass(frozen=True, slots=True)
class RecipientKey:
    """A validated public key and the wrapping algorithm it selects.

    Built only by ``parse_public_jwk``; ``jwk`` holds the members that define
    the key (the thumbprint input), never anything the sender added beside them.
    """

    alg: str
    key: RecipientPublicKey
    jwk: Mapping[str, str]
    thumbprint: str


def parse_public_jwk(jwk: Mapping[str, Any]) -> RecipientKey:
    """Validate ``jwk`` and choose its wrapping algorithm (cached: one enclave's
    key is parsed for every resource it fetches).

    Raises:
        UnsupportedKey: not a JSON object, private members present, unknown or
            unsupported ``kty``/``crv``/``alg``, short RSA modulus, malformed
            or off-curve coordinates.
    """
    # (1) Shape: a small object with string member names.
    if not isinstance(jwk, Mapping):
        raise UnsupportedKey("tee-pubkey must be a JWK object")
    if len(jwk) <= MAX_MEMBERS and all(isinstance(v, str) for v in jwk.values()):
        try:
            items = tuple(sorted(jwk.items()))
        except TypeError:  # non-string member names: refused below
            return _parse_uncached(jwk)
        return _parse_cached(items)
    return _parse_uncached(jwk)


@functools.lru_cache(maxsize=4096)
def _parse_cached(items: tuple[tuple[str, str], ...]) -> RecipientKey:
    return _parse_uncached(dict(items))


def _parse_uncached(jwk: Mapping[str, Any]) -> RecipientKey:
    if len(jwk) > MAX_MEMBERS or not all(isinstance(name, str) for name in jwk):
        raise UnsupportedKey("tee-pubkey has too many or non-string members")
    # (2) A private key sent by mistake is refused outright, whatever its type.
    leaked = sorted(PRIVATE_MEMBERS.intersection(jwk))
    if leaked:
        raise UnsupportedKey(
            f"tee-pubkey carries private members {leaked}; send only the public key"
        )
    # (3) Intended use must be encryption when stated (RFC 7517 4.2).
    if "use" in jwk and jwk["use"] != "enc":
        raise UnsupportedKey("tee-pubkey 'use' must be 'enc'")
    # (4) Per key type.
    kty = jwk.get("kty")
    if kty == "EC":
        return _parse_ec(jwk)
    if kty == "RSA":
        return _parse_rsa(jwk)
    if kty == "OKP":
        return _parse_okp(jwk)
    if kty == "AKP":
        return _parse_akp(jwk)
    if kty == "oct":
        raise UnsupportedKey("symmetric (oct) keys cannot receive a wrapped key")
    raise UnsupportedKey(f"unsupported JWK kty {_show(kty)}")


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK SHA-256 thumbprint (base64url) of a public JWK's required members.

    Raises:
        UnsupportedKey: the ``kty`` is unknown or a required member is missing.
    """
    kty = jwk.get("kty")
    names = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if names is None or not all(isinstance(jwk.get(n), str) for n in names):
        raise UnsupportedKey("cannot compute a thumbprint for this JWK")
    canonical = json.dumps(
        {n: jwk[n] for n in names}, separators=(",", ":"), sort_keys=True, ensure_ascii=False
    )
    return b64url_encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def _show(value: object) -> str:
    # Echo short identifiers back to the caller, never a long attacker-chosen blob.
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _member(jwk: Mapping[str, Any], name: str) -> bytes:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise UnsupportedKey(f"JWK member {name!r} missing or not a string")
    try:
        return b64url_decode(value)
    except ValueError:
        raise UnsupportedKey(f"JWK member {name!r} is not base64url") from None


def _check_alg(jwk: Mapping[str, Any], *accepted: str) -> None:
    if "alg" in jwk and jwk["alg"] not in accepted:
        raise UnsupportedKey(f"JWK alg {_show(jwk['alg'])} does not fit this key type")


def _finish(alg: str, key: RecipientPublicKey, jwk: Mapping[str, Any], kty: str) -> RecipientKey:
    members = {n: str(jwk[n]) for n in _THUMBPRINT_MEMBERS[kty]}
    return RecipientKey(alg=alg, key=key, jwk=members, thumbprint=thumbprint(members))


def _parse_ec(jwk: Mapping[str, Any]) -> RecipientKey:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _CURVES:
        raise UnsupportedKey(f"EC curve {_show(crv)} is not supported (P-256 or P-521)")
    _check_alg(jwk, ECDH_ES_A256KW)
    curve, size = _CURVES[crv]
    x, y = _member(jwk, "x"), _member(jwk, "y")
    # RFC 7518 6.2.1.2: coordinates are the full field size, no shorter or longer.
    if len(x) != size or len(y) != size:
        raise UnsupportedKey("EC coordinates have the wrong length for the curve")
    try:
        key = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), curve
        ).public_key()
    except ValueError:
        raise UnsupportedKey("EC point is not on the curve") from None
    return _finish(ECDH_ES_A256KW, key, jwk, "EC")


def _parse_rsa(jwk: Mapping[str, Any]) -> RecipientKey:
    _check_alg(jwk, RSA_OAEP_256)
    n, e = _member(jwk, "n"), _member(jwk, "e")
    # RFC 7518 6.3.1: minimal big-endian encodings.
    if not n or not e or n[0] == 0 or e[0] == 0:
        raise UnsupportedKey("RSA n and e must be minimal non-empty integers")
    bits = int.from_bytes(n, "big").bit_length()
    if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
        raise UnsupportedKey(f"RSA modulus of {bits} bits is outside {MIN_RSA_BITS}-{MAX_RSA_BITS}")
    if len(e) > MAX_RSA_EXPONENT_BYTES:
        raise UnsupportedKey("RSA public exponent is too large")
    try:
        key = rsa.RSAPublicNumbers(int.from_bytes(e, "big"), int.from_bytes(n, "big")).public_key()
    except ValueError:
        raise UnsupportedKey("RSA public key is invalid") from None
    return _finish(RSA_OAEP_256, key, jwk, "RSA")


def _parse_okp(jwk: Mapping[str, Any]) -> RecipientKey:
    if jwk.get("crv") != "X25519":
        raise UnsupportedKey(f"OKP curve {_show(jwk.get('crv'))} is not supported (X25519 only)")
    _check_alg(jwk, HPKE_X25519, NACL_SEALEDBOX)
    alg = NACL_SEALEDBOX if jwk.get("alg") == NACL_SEALEDBOX else HPKE_X25519
    x = _member(jwk, "x")
    if len(x) != X25519_BYTES:
        raise UnsupportedKey("X25519 public key must be 32 bytes")
    return _finish(alg, x25519.X25519PublicKey.from_public_bytes(x), jwk, "OKP")


def _parse_akp(jwk: Mapping[str, Any]) -> RecipientKey:
    if jwk.get("alg") != HPKE_MLKEM768_X25519:
        raise UnsupportedKey(f"AKP alg {_show(jwk.get('alg'))} is not supported, use HPKE-10")
    pub = _member(jwk, "pub")
    if len(pub) != MLKEM768_X25519_PUBLIC_BYTES:
        raise UnsupportedKey("MLKEM768-X25519 public key must be 1216 bytes")
    try:
        pq = mlkem.MLKEM768PublicKey.from_public_bytes(pub[:MLKEM768_PUBLIC_BYTES])
    except ValueError:
        raise UnsupportedKey("ML-KEM-768 encapsulation key is invalid") from None
    classical = x25519.X25519PublicKey.from_public_bytes(pub[MLKEM768_PUBLIC_BYTES:])
    return _finish(HPKE_MLKEM768_X25519, hpke.MLKEM768X25519PublicKey(pq, classical), jwk, "AKP")
