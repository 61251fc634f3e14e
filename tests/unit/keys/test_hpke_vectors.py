"""RFC 9180 Appendix A test vectors, base mode, opened through cryptography's HPKE.

The values below are copied from RFC 9180 Appendix A (A.1.1, A.2.1, A.6.1:
"Base Setup Information" and the sequence-number-0 "Encryptions" entry). The
cryptography API cannot take a fixed ephemeral key, so only the open side is
checked: a single-shot open of ``enc || ct`` with ``skRm``, ``info`` and the
vector's ``aad`` must yield ``pt``. Sequence 0 is the only entry a single-shot
open reproduces (later entries use incremented nonces of the same context).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from broker.keys import _hpke
from broker.keys.algorithms import HPKE_X25519

INFO = "4f6465206f6e2061204772656369616e2055726e"  # "Ode on a Grecian Urn"
PT = "4265617574792069732074727574682c20747275746820626561757479"  # "Beauty is truth, ..."
AAD0 = "436f756e742d30"  # "Count-0"


@dataclass(frozen=True)
class Vector:
    name: str
    kem: hpke.KEM
    kdf: hpke.KDF
    aead: hpke.AEAD
    sk_rm: str
    pk_rm: str
    enc: str
    ct0: str


VECTORS = [
    # RFC 9180 A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM
    Vector(
        "A.1.1",
        hpke.KEM.X25519,
        hpke.KDF.HKDF_SHA256,
        hpke.AEAD.AES_128_GCM,
        sk_rm="4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
        pk_rm="3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
        enc="37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
        ct0="f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a9"
        "6d8770ac83d07bea87e13c512a",
    ),
    # RFC 9180 A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305
    Vector(
        "A.2.1",
        hpke.KEM.X25519,
        hpke.KDF.HKDF_SHA256,
        hpke.AEAD.CHACHA20_POLY1305,
        sk_rm="8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb",
        pk_rm="4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a",
        enc="1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a",
        ct0="1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db"
        "21993c62ce81883d2dd1b51a28",
    ),
    # RFC 9180 A.6.1: DHKEM(P-521, HKDF-SHA512), HKDF-SHA512, AES-256-GCM
    Vector(
        "A.6.1",
        hpke.KEM.P521,
        hpke.KDF.HKDF_SHA512,
        hpke.AEAD.AES_256_GCM,
        sk_rm="01462680369ae375e4b3791070a7458ed527842f6a98a79ff5e0d4cbde83c2"
        "7196a3916956655523a6a2556a7af62c5cadabe2ef9da3760bb21e005202f7b24628"
        "47",
        pk_rm="0401b45498c1714e2dce167d3caf162e45e0642afc7ed435df7902ccae0e84"
        "ba0f7d373f646b7738bbbdca11ed91bdeae3cdcba3301f2457be452f271fa6837580"
        "e661012af49583a62e48d44bed350c7118c0d8dc861c238c72a2bda17f64704f464b"
        "57338e7f40b60959480c0e58e6559b190d81663ed816e523b6b6a418f66d2451ec64",
        enc="040138b385ca16bb0d5fa0c0665fbbd7e69e3ee29f63991d3e9b5fa740aab89"
        "00aaeed46ed73a49055758425a0ce36507c54b29cc5b85a5cee6bae0cf1c21f2731e"
        "ce2013dc3fb7c8d21654bb161b463962ca19e8c654ff24c94dd2898de12051f1ed06"
        "92237fb02b2f8d1dc1c73e9b366b529eb436e98a996ee522aef863dd5739d2f29b0",
        ct0="170f8beddfe949b75ef9c387e201baf4132fa7374593dfafa90768788b7b2b20"
        "0aafcc6d80ea4c795a7c5b841a",
    ),
]


def _private_key(v: Vector) -> x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey:
    raw = bytes.fromhex(v.sk_rm)
    if v.kem == hpke.KEM.X25519:
        return x25519.X25519PrivateKey.from_private_bytes(raw)
    return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP521R1())


def _public_bytes(key: x25519.X25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(key, x25519.X25519PrivateKey):
        return key.public_key().public_bytes_raw()
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.name)
def test_vector_recipient_key_matches(v: Vector) -> None:
    """skRm from the vector yields the vector's pkRm."""
    assert _public_bytes(_private_key(v)).hex() == v.pk_rm


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.name)
def test_vector_sequence_zero_opens(v: Vector) -> None:
    """A single-shot open of enc || ct0 with the vector's info and aad gives pt."""
    suite = hpke.Suite(v.kem, v.kdf, v.aead)
    pt = rust_openssl.hpke._decrypt_with_aad(
        suite,
        bytes.fromhex(v.enc + v.ct0),
        _private_key(v),
        info=bytes.fromhex(INFO),
        aad=bytes.fromhex(AAD0),
    )
    assert pt.hex() == PT


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.name)
def test_vector_wrong_aad_fails(v: Vector) -> None:
    """The same ciphertext under another aad does not open."""
    suite = hpke.Suite(v.kem, v.kdf, v.aead)
    with pytest.raises(InvalidTag):
        rust_openssl.hpke._decrypt_with_aad(
            suite,
            bytes.fromhex(v.enc + v.ct0),
            _private_key(v),
            info=bytes.fromhex(INFO),
            aad=b"Count-1",
        )


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v.name)
def test_vector_wrong_info_fails(v: Vector) -> None:
    """The same ciphertext under another info does not open."""
    suite = hpke.Suite(v.kem, v.kdf, v.aead)
    with pytest.raises(InvalidTag):
        rust_openssl.hpke._decrypt_with_aad(
            suite, bytes.fromhex(v.enc + v.ct0), _private_key(v), info=b"", aad=bytes.fromhex(AAD0)
        )


def test_broker_hpke3_suite_opens_a11() -> None:
    """The broker's HPKE-3 suite is RFC 9180 A.1's suite and opens its sequence-0 vector."""
    v = VECTORS[0]
    key = _private_key(v)
    assert isinstance(key, x25519.X25519PrivateKey)
    pt = _hpke.open_(
        HPKE_X25519,
        key,
        bytes.fromhex(v.enc),
        bytes.fromhex(v.ct0),
        info=bytes.fromhex(INFO),
        aad=bytes.fromhex(AAD0),
    )
    assert pt.hex() == PT
