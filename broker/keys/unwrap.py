"""Enclave side: generate an ephemeral key pair, publish its JWK, open the wrapped key.

Imports only the shared pure modules (never ``keys.wrap``, ``service``,
``adapters`` or ``api``), so the client library can vendor it::

    pair = ClientKeyPair.generate("mlkem768x25519")
    request["tee-pubkey"] = pair.public_jwk()
    ...
    secret = unwrap(response["wrapped"], pair, context=WrapContext(resource, version, jti))

Every failure raises the same ``UnwrapError`` with the same message, so an
attacker probing the client learns nothing about which check failed.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, rsa, x25519
from joserfc import jwe
from joserfc.jwk import ECKey, RSAKey
from nacl.public import PrivateKey as NaClPrivateKey
from nacl.public import SealedBox

from broker.errors import UnwrapError
from broker.keys import _hpke
from broker.keys._b64 import b64url_decode, b64url_encode
from broker.keys._jose import registry_for
from broker.keys.algorithms import (
    CONTENT_ENCRYPTION,
    ECDH_ES_A256KW,
    HPKE_MLKEM768_X25519,
    HPKE_X25519,
    NACL_SEALEDBOX,
    RSA_OAEP_256,
    WrapContext,
)
from broker.keys.envelope import MAX_PLAINTEXT_BYTES, check_members, decode_protected
from broker.keys.jwk import thumbprint

__all__ = ["KEY_KINDS", "ClientKeyPair", "KeyKind", "UnwrapError", "WrapContext", "unwrap"]

KeyKind = Literal["p256", "p521", "rsa", "x25519", "mlkem768x25519", "sealedbox"]
KEY_KINDS: Final[tuple[KeyKind, ...]] = get_args(KeyKind)
RSA_BITS: Final = 3072

_ALG_OF_KIND: Final[dict[KeyKind, str]] = {
    "p256": ECDH_ES_A256KW,
    "p521": ECDH_ES_A256KW,
    "rsa": RSA_OAEP_256,
    "x25519": HPKE_X25519,
    "mlkem768x25519": HPKE_MLKEM768_X25519,
    "sealedbox": NACL_SEALEDBOX,
}
# Which envelope members each layout has; anything else is refused before decryption.
_MEMBERS: Final[dict[str, frozenset[str]]] = {
    ECDH_ES_A256KW: frozenset({"protected", "encrypted_key", "header", "iv", "ciphertext", "tag"}),
    RSA_OAEP_256: frozenset({"protected", "encrypted_key", "iv", "ciphertext", "tag"}),
    HPKE_X25519: frozenset({"protected", "encrypted_key", "ciphertext"}),
    HPKE_MLKEM768_X25519: frozenset({"protected", "encrypted_key", "ciphertext"}),
    NACL_SEALEDBOX: frozenset({"protected", "ciphertext"}),
}


@dataclass(frozen=True, slots=True, eq=False)
class ClientKeyPair:
    """An ephemeral key pair of one ``kind``; the private half never leaves the object.

    Create with ``generate``. ``eq=False``: two pairs are equal only if identical.
    """

    kind: KeyKind
    algorithm: str
    private_key: Any = field(repr=False)
    _public_jwk: Mapping[str, str] = field(repr=False)

    @classmethod
    def generate(cls, kind: KeyKind) -> ClientKeyPair:
        """A fresh key pair of ``kind``.

        Raises:
            ValueError: ``kind`` is not one of ``KEY_KINDS``.
        """
        if kind not in _ALG_OF_KIND:
            raise ValueError(f"unknown key kind {kind!r}")
        alg = _ALG_OF_KIND[kind]
        private_key, jwk = _GENERATORS[kind]()
        return cls(
            kind=kind, algorithm=alg, private_key=private_key, _public_jwk={**jwk, "alg": alg}
        )

    def public_jwk(self) -> dict[str, str]:
        """The public JWK to send as the KBS ``tee-pubkey`` (a fresh copy)."""
        return dict(self._public_jwk)

    def thumbprint(self) -> str:
        """RFC 7638 thumbprint of ``public_jwk()``; the envelope's ``kid``."""
        return thumbprint(self._public_jwk)


def unwrap(envelope: Mapping[str, Any], keypair: ClientKeyPair, *, context: WrapContext) -> bytes:
    """Open a wrapped key released for ``context`` to ``keypair``.

    Raises:
        UnwrapError: for every failure (malformed envelope, other algorithm or
            key, other resource/version/jti, tampering), always the same message.
    """
    try:
        return _unwrap(envelope, keypair, context)
    except Exception:  # noqa: BLE001 - one opaque error by contract (Fernet InvalidToken)
        raise UnwrapError from None


def _unwrap(envelope: Mapping[str, Any], keypair: ClientKeyPair, context: WrapContext) -> bytes:
    # (1) Layout: exactly the members this key's algorithm produces, bounded.
    alg = keypair.algorithm
    check_members(envelope, required=_MEMBERS[alg])
    # (2) Header: our algorithm, our key, our release context.
    header = decode_protected(envelope["protected"])
    _require(header.get("alg") == alg)
    _require(_equal_str(header.get("kid"), keypair.thumbprint()))
    _require(_equal_str(header.get("res"), context.resource))
    _require(_equal_str(header.get("jti"), context.jti))
    ver = header.get("ver")
    _require(isinstance(ver, int) and not isinstance(ver, bool) and ver == context.version)
    # (3) Decrypt; every algorithm authenticates the header and ciphertext.
    plaintext = _OPENERS[alg](envelope, header, keypair, context)
    _require(len(plaintext) <= MAX_PLAINTEXT_BYTES)
    return plaintext


def _open_jose(
    envelope: Mapping[str, Any], header: dict[str, Any], keypair: ClientKeyPair, _: WrapContext
) -> bytes:
    _require(header.get("enc") == CONTENT_ENCRYPTION and "zip" not in header)
    key = (ECKey if keypair.algorithm == ECDH_ES_A256KW else RSAKey).import_key(keypair.private_key)
    data: Any = {name: envelope[name] for name in envelope}
    result = jwe.decrypt_json(data, key, registry=registry_for(keypair.algorithm))
    _require(result.protected == header and result.plaintext is not None)
    return bytes(result.plaintext or b"")


def _open_hpke(
    envelope: Mapping[str, Any], _: dict[str, Any], keypair: ClientKeyPair, context: WrapContext
) -> bytes:
    protected: str = envelope["protected"]
    return _hpke.open_(
        keypair.algorithm,
        keypair.private_key,
        b64url_decode(envelope["encrypted_key"]),
        b64url_decode(envelope["ciphertext"]),
        # Our own expectation, not anything read from the envelope, feeds the key schedule.
        info=context.info(),
        aad=protected.encode("ascii"),
    )


def _open_sealedbox(
    envelope: Mapping[str, Any], _: dict[str, Any], keypair: ClientKeyPair, context: WrapContext
) -> bytes:
    opened = bytes(SealedBox(keypair.private_key).decrypt(b64url_decode(envelope["ciphertext"])))
    prefix = context.info() + b"\x00"
    _require(hmac.compare_digest(opened[: len(prefix)], prefix))
    return opened[len(prefix) :]


def _require(condition: bool) -> None:
    if not condition:
        raise UnwrapError


def _equal_str(value: object, expected: str) -> bool:
    return isinstance(value, str) and hmac.compare_digest(value.encode(), expected.encode())


def _ec(curve: ec.EllipticCurve, crv: str) -> tuple[Any, dict[str, str]]:
    key = ec.generate_private_key(curve)
    size = (curve.key_size + 7) // 8
    numbers = key.public_key().public_numbers()
    return key, {
        "kty": "EC",
        "crv": crv,
        "x": b64url_encode(numbers.x.to_bytes(size, "big")),
        "y": b64url_encode(numbers.y.to_bytes(size, "big")),
    }


def _rsa() -> tuple[Any, dict[str, str]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    numbers = key.public_key().public_numbers()
    return key, {
        "kty": "RSA",
        "n": b64url_encode(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url_encode(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
    }


def _x25519() -> tuple[Any, dict[str, str]]:
    key = x25519.X25519PrivateKey.generate()
    x = b64url_encode(key.public_key().public_bytes_raw())
    return key, {"kty": "OKP", "crv": "X25519", "x": x}


def _mlkem768x25519() -> tuple[Any, dict[str, str]]:
    pq, classical = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    # draft-ietf-hpke-pq SerializePublicKey: ML-KEM-768 encapsulation key || X25519 key.
    pub = pq.public_key().public_bytes_raw() + classical.public_key().public_bytes_raw()
    return hpke.MLKEM768X25519PrivateKey(pq, classical), {"kty": "AKP", "pub": b64url_encode(pub)}


def _sealedbox() -> tuple[Any, dict[str, str]]:
    key = NaClPrivateKey.generate()
    x = b64url_encode(bytes(key.public_key))
    return key, {"kty": "OKP", "crv": "X25519", "x": x}


_GENERATORS: Final = {
    "p256": lambda: _ec(ec.SECP256R1(), "P-256"),
    "p521": lambda: _ec(ec.SECP521R1(), "P-521"),
    "rsa": _rsa,
    "x25519": _x25519,
    "mlkem768x25519": _mlkem768x25519,
    "sealedbox": _sealedbox,
}
_OPENERS: Final = {
    ECDH_ES_A256KW: _open_jose,
    RSA_OAEP_256: _open_jose,
    HPKE_X25519: _open_hpke,
    HPKE_MLKEM768_X25519: _open_hpke,
    NACL_SEALEDBOX: _open_sealedbox,
}
