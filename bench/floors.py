"""Raw primitive floors: one signature verify, one key agreement, one encrypt.

Each factory does its set-up (key generation, signing) once and returns the
zero-argument callable that is timed.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, mlkem, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.evidence import pinned_anchors

Op = Callable[[], object]


def ecdsa_verify(curve: ec.EllipticCurve, algorithm: hashes.HashAlgorithm, size: int) -> Op:
    """One ECDSA verify of a ``size``-byte message."""
    key = ec.generate_private_key(curve)
    message = os.urandom(size)
    signature = key.sign(message, ec.ECDSA(algorithm))
    public = key.public_key()
    return lambda: public.verify(signature, message, ec.ECDSA(algorithm))


def p384_verify() -> Op:
    # 0x2A0 bytes: the signed part of an SNP ATTESTATION_REPORT.
    return ecdsa_verify(ec.SECP384R1(), hashes.SHA384(), 0x2A0)


def p256_verify() -> Op:
    # About the size of a TDX quote header and body.
    return ecdsa_verify(ec.SECP256R1(), hashes.SHA256(), 632)


def rsa2048_pkcs1_verify() -> Op:
    """RSASSA-PKCS1-v1_5 / SHA-256, as a vTPM quote is signed."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = os.urandom(145)
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    public = key.public_key()
    return lambda: public.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def rsa4096_pss_verify() -> Op:
    """The pinned ARK-Milan key checking the real ASK-Milan signature (RSASSA-PSS, SHA-384)."""
    anchors = pinned_anchors()
    ark = x509.load_pem_x509_certificate(anchors.get("amd-milan-ark"))
    ask = x509.load_pem_x509_certificate(anchors.get("amd-milan-ask"))
    public = ark.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    tbs, signature = ask.tbs_certificate_bytes, ask.signature
    return lambda: public.verify(signature, tbs, pss, hashes.SHA384())


def ecdh_ephemeral(curve: ec.EllipticCurve) -> Op:
    """What ECDH-ES must do per message: an ephemeral key pair and one exchange."""
    peer = ec.generate_private_key(curve).public_key()

    def op() -> bytes:
        return ec.generate_private_key(curve).exchange(ec.ECDH(), peer)

    return op


def x25519_ephemeral() -> Op:
    """An ephemeral X25519 key pair and one exchange (DHKEM encap, sealed box)."""
    peer = x25519.X25519PrivateKey.generate().public_key()
    return lambda: x25519.X25519PrivateKey.generate().exchange(peer)


def mlkem768_x25519_encap() -> Op:
    """One ML-KEM-768 encapsulation plus an ephemeral X25519 exchange (the hybrid KEM)."""
    pq = mlkem.MLKEM768PrivateKey.generate().public_key()
    classical = x25519.X25519PrivateKey.generate().public_key()

    def op() -> object:
        pq.encapsulate()
        return x25519.X25519PrivateKey.generate().exchange(classical)

    return op


def rsa_oaep_encrypt(bits: int) -> Op:
    """One RSA-OAEP (SHA-256) encryption of a 32-byte key."""
    public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    payload = os.urandom(32)
    return lambda: public.encrypt(payload, oaep)


def aes_gcm_open() -> Op:
    """One AES-256-GCM decryption of a sealed 32-byte value."""
    key = AESGCM(AESGCM.generate_key(256))
    nonce, aad = os.urandom(12), b"broker-sealed-v1\0bench/key/k0\x001"
    sealed = key.encrypt(nonce, os.urandom(32), aad)
    return lambda: key.decrypt(nonce, sealed, aad)


def chain(*ops: Op) -> Op:
    """The ops one after the other: the floor of a composite piece of work."""

    def op() -> None:
        for each in ops:
            each()

    return op
