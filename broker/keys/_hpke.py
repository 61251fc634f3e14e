"""HPKE single-shot seal/open (RFC 9180 section 6.1) with a non-empty ``aad``.

draft-ietf-jose-hpke-encrypt section 5 requires the HPKE ``aad`` to be the
JWE Additional Authenticated Data (the ASCII protected header). The public
``cryptography`` ``Suite.encrypt``/``decrypt`` take no ``aad``; the library's
own ``_encrypt_with_aad``/``_decrypt_with_aad`` (used by its RFC 9180 vector
tests) do. They are reached only here, so a change in that API touches one
module and fails loudly in tests rather than silently dropping the binding.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import x25519

from broker.keys.algorithms import HPKE_MLKEM768_X25519, HPKE_X25519

PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
PrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey

SUITES: Final[dict[str, hpke.Suite]] = {
    HPKE_X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM),
    HPKE_MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.SHAKE256, hpke.AEAD.AES_256_GCM
    ),
}
ENC_LENGTH: Final[dict[str, int]] = {
    HPKE_X25519: hpke.KEM.X25519.enc_length(),
    HPKE_MLKEM768_X25519: hpke.KEM.MLKEM768_X25519.enc_length(),
}


def seal(
    alg: str, public_key: PublicKey, plaintext: bytes, *, info: bytes, aad: bytes
) -> tuple[bytes, bytes]:
    """Return ``(enc, ciphertext)`` for HPKE base mode under ``alg``'s suite."""
    out = rust_openssl.hpke._encrypt_with_aad(
        SUITES[alg], plaintext, public_key, info=info, aad=aad
    )
    n = ENC_LENGTH[alg]
    return out[:n], out[n:]


def open_(
    alg: str, private_key: PrivateKey, enc: bytes, ciphertext: bytes, *, info: bytes, aad: bytes
) -> bytes:
    """Open an HPKE base-mode ciphertext; raises the library's error on any failure."""
    if len(enc) != ENC_LENGTH[alg]:
        raise ValueError("encapsulated key has the wrong length")
    return rust_openssl.hpke._decrypt_with_aad(
        SUITES[alg], enc + ciphertext, private_key, info=info, aad=aad
    )
