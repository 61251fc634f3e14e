"""How the enclave client checks the broker's certificate.

The certificate must chain to ``ca_file`` (or the system trust store) and
name the host. With pins, its SubjectPublicKeyInfo must also hash (SHA-256)
to one of them; the check runs inside the TLS handshake, so a request (the
evidence, a bearer token) is never written to a connection that fails it.
Pins are base64 (the ``pin-sha256`` form of RFC 7469) or hex; give two during
a key rollover.

    openssl x509 -in broker.pem -pubkey -noout | openssl pkey -pubin -outform der \\
        | openssl dgst -sha256 -binary | base64
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ssl
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.errors import ConfigError

__all__ = ["client_context", "parse_pin", "spki_sha256"]

_DIGEST_BYTES = 32


def spki_sha256(cert_der: bytes) -> bytes:
    """SHA-256 of the certificate's DER SubjectPublicKeyInfo."""
    key = x509.load_der_x509_certificate(cert_der).public_key()
    return hashlib.sha256(
        key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    ).digest()


def parse_pin(text: str) -> bytes:
    """A 32-byte digest from base64 or hex text.

    Raises:
        ConfigError: neither form, or not 32 bytes.
    """
    text = text.strip().removeprefix("sha256/")
    digest: bytes | None = None
    if len(text) == 2 * _DIGEST_BYTES:
        try:
            digest = bytes.fromhex(text)
        except ValueError:
            digest = None
    if digest is None:
        try:
            digest = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            digest = None
    if digest is None or len(digest) != _DIGEST_BYTES:
        raise ConfigError("pin-sha256: expected a SHA-256 digest in base64 or hex")
    return digest


class _PinnedSSLObject(ssl.SSLObject):
    """Fails the handshake unless the peer's SPKI digest is pinned."""

    pins: tuple[bytes, ...] = ()

    def do_handshake(self) -> None:
        super().do_handshake()
        der = self.getpeercert(binary_form=True)
        if der is None:
            raise ssl.SSLCertVerificationError("the broker presented no certificate")
        seen = spki_sha256(der)
        # Every pin is compared (no early exit): the timing tells nothing about which matched.
        matched = [hmac.compare_digest(seen, pin) for pin in self.pins]
        if not any(matched):
            raise ssl.SSLCertVerificationError(
                "the broker's certificate key does not match the pinned SHA-256"
            )


def client_context(
    *,
    ca_file: str | None = None,
    pin_sha256: Sequence[str] = (),
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A verifying client context: TLS 1.2+, hostname checked, optional pins and client cert.

    Raises:
        ConfigError: a file cannot be loaded or a pin is malformed.
    """
    pins = tuple(parse_pin(p) for p in pin_sha256)
    if ca_file:
        # A private CA replaces the system store: no public CA can vouch for the broker.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"ca-file: cannot load {ca_file} ({_reason(exc)})") from None
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cert-file/key-file: cannot load ({_reason(exc)})") from None
    if pins:
        pinned = type("PinnedSSLObject", (_PinnedSSLObject,), {"pins": pins})
        ctx.sslobject_class = pinned
    return ctx


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return exc.strerror or type(exc).__name__
