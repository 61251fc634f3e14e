"""Client-side TLS: pins, contexts, refusing pins over plain HTTP."""

from __future__ import annotations

import base64
import hashlib
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.client import BrokerClient
from broker.client.tls import client_context, parse_pin, spki_sha256
from broker.errors import ConfigError
from tests.tls_certs import issue, make_ca


def test_spki_digest_and_pin_forms(tmp_path: Path) -> None:
    """The pin is SHA-256 of the DER SPKI, accepted as base64, sha256/-base64 or hex."""
    leaf = issue(make_ca(tmp_path, "ca"), tmp_path, "server")
    spki = leaf.cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.sha256(spki).digest()
    assert spki_sha256(leaf.cert.public_bytes(Encoding.DER)) == digest
    b64 = base64.b64encode(digest).decode()
    assert parse_pin(b64) == digest
    assert parse_pin("sha256/" + b64) == digest
    assert parse_pin(digest.hex()) == digest
    assert parse_pin(digest.hex().upper()) == digest


@pytest.mark.parametrize("bad", ["", "abc", "zz" * 32, base64.b64encode(b"x" * 31).decode()])
def test_malformed_pins(bad: str) -> None:
    """Anything but a 32-byte digest is a ConfigError."""
    with pytest.raises(ConfigError, match="pin-sha256"):
        parse_pin(bad)


def test_context_with_ca_file_trusts_only_it(tmp_path: Path) -> None:
    """With a CA file, the context verifies hostnames and holds that CA alone."""
    ca = make_ca(tmp_path, "ca")
    ctx = client_context(ca_file=str(ca.cert_file))
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert len(ctx.get_ca_certs()) == 1


def test_context_errors(tmp_path: Path) -> None:
    """Unreadable CA or client certificate files are ConfigErrors."""
    with pytest.raises(ConfigError, match="ca-file"):
        client_context(ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="cert-file"):
        client_context(cert_file=str(tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ca_file": "ca.pem"},
        {"pin_sha256": ["A" * 43 + "="]},
        {"cert_file": "c.pem", "key_file": "k.pem"},
    ],
)
def test_tls_options_need_https(kwargs: dict[str, object]) -> None:
    """A pin or CA on an http:// URL fails instead of being silently ignored."""
    with pytest.raises(ConfigError, match="https"):
        BrokerClient("http://127.0.0.1:8300", **kwargs)  # type: ignore[arg-type]
