"""Named regressions for crashes the fuzz harnesses found (each was a non-BrokerError)."""

from __future__ import annotations

import base64
import textwrap
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from broker.errors import EvidenceSignatureError, MalformedRequest
from broker.evidence.dcap_pki import load_pem_chain
from broker.wire import kbs
from fuzz.targets import TARGETS, one_input


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b'{"ve_on\xc9\xc9\xc9ion":461,"tee":"x"}', kbs.AuthRequest),
        (b'{"runtime-data\xbd":{}}', kbs.AttestRequest),
    ],
)
def test_kbs_wire_invalid_utf8_key_is_malformed_request(
    body: bytes, kind: type[kbs.AuthRequest] | type[kbs.AttestRequest]
) -> None:
    """fuzz kbs-wire: invalid UTF-8 in an object key raised UnicodeDecodeError (a 500)."""
    with pytest.raises(MalformedRequest):
        kbs.decode(body, kind)


def _pem_with_x509_version(version_byte: int) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "fuzz")])
    now = datetime(2025, 1, 1, tzinfo=UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    der = bytearray(cert.public_bytes(Encoding.DER))
    # TBSCertificate starts with version [0] EXPLICIT INTEGER: A0 03 02 01 <v>.
    at = bytes(der).index(b"\xa0\x03\x02\x01\x02") + 4
    der[at] = version_byte
    b64 = "\n".join(textwrap.wrap(base64.b64encode(bytes(der)).decode(), 64))
    return f"-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n".encode()


def test_dcap_pck_chain_with_unknown_x509_version_is_evidence_error() -> None:
    """fuzz dcap: a PCK certificate with X.509 version 34 raised InvalidVersion (a 500)."""
    with pytest.raises(EvidenceSignatureError):
        load_pem_chain(_pem_with_x509_version(0x22), error=EvidenceSignatureError)


def test_sample_harness_skips_invalid_utf8_json() -> None:
    """fuzz sample: the harness's own JSON decoding tripped on invalid UTF-8 keys."""
    one_input(TARGETS["sample"])(b'{"svn\xbd\xbd":"1","report_data":""}')
