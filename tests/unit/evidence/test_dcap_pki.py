"""CRL checks of the DCAP PKI: a malformed CRL is a collateral error, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.errors import CollateralError
from broker.evidence.dcap_pki import check_not_revoked

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test CRL Issuer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _crl(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bytes:
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(NOW - timedelta(hours=1))
        .next_update(NOW + timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(serialization.Encoding.DER)


def test_a_current_crl_that_lists_nothing_passes() -> None:
    """The issuer's own, signed, current CRL without the certificate passes."""
    key, cert = _ca()
    check_not_revoked(cert, _crl(key, cert), cert, now=NOW)


def test_a_crl_whose_fields_do_not_parse_is_a_collateral_error() -> None:
    """DER that loads but whose lazily parsed issuer name is malformed is refused cleanly."""
    key, cert = _ca()
    der = _crl(key, cert)
    name = cert.subject.public_bytes()
    start = der.index(name)
    found = 0
    # Every single-byte change inside the issuer name: whatever cryptography
    # accepts at load and refuses later must come out as CollateralError.
    for offset in range(len(name)):
        for value in (0x00, 0x05, 0x1F, 0x80, 0xFF):
            mutated = bytearray(der)
            mutated[start + offset] = value
            try:
                x509.load_der_x509_crl(bytes(mutated)).issuer
            except ValueError:
                found += 1
                with pytest.raises(CollateralError):
                    check_not_revoked(cert, bytes(mutated), cert, now=NOW)
            else:
                with pytest.raises(CollateralError):
                    check_not_revoked(cert, bytes(mutated), cert, now=NOW)
    assert found  # the lazily parsed case really was exercised
