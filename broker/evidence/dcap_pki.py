"""X.509 checks for DCAP: chains to the pinned Intel root, CRLs, the PCK extension.

    certs = load_pem_chain(pem, error=EvidenceSignatureError)
    verify_chain(certs, root, now=now, error=EvidenceSignatureError)
    pck = PCKExtension.from_certificate(certs[0])

The error class is a parameter because the same check means different things:
a broken PCK chain in the quote is bad evidence, a broken TCB signing chain in
the collateral is bad collateral.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from broker.errors import CollateralError, EvidenceError, EvidenceFormatError
from broker.evidence._x509 import load_der_crl

MAX_CHAIN_LEN = 4
SGX_EXTENSION_OID = x509.ObjectIdentifier("1.2.840.113741.1.13.1")
_OID_PREFIX = "1.2.840.113741.1.13.1"


def load_pem_chain(pem: bytes, *, error: type[EvidenceError]) -> list[x509.Certificate]:
    """Certificates of a PEM chain, leaf first; the text must be canonical PEM.

    Canonical means exactly what re-encoding the certificates gives (one NUL
    terminator allowed): PEM parsers skip stray whitespace and unused base64
    bits, and an accepted quote must have no byte that could change unnoticed.
    """
    text = pem.removesuffix(b"\0")
    try:
        certs = x509.load_pem_x509_certificates(text)
    # InvalidVersion (an unknown X.509 version number) is not a ValueError.
    except (ValueError, x509.InvalidVersion) as exc:
        raise error("certificate chain is not valid PEM") from exc
    if not 1 <= len(certs) <= MAX_CHAIN_LEN:
        raise error(f"certificate chain of {len(certs)} certificates")
    if b"".join(c.public_bytes(Encoding.PEM) for c in certs) != text:
        raise error("certificate chain is not canonical PEM")
    for cert in certs:
        _parse_fields(cert, error=error)
    return certs


def _parse_fields(cert: x509.Certificate, *, error: type[EvidenceError]) -> None:
    """cryptography decodes fields lazily; decode the ones used now, so later
    checks cannot fail with a bare ValueError."""
    try:
        with warnings.catch_warnings():
            # Genuine Intel certificates decode cleanly; a warning means malformed.
            warnings.simplefilter("error")
            _ = (cert.subject, cert.issuer, cert.serial_number, cert.extensions)
            _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.public_key())
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
    except (
        ValueError,
        TypeError,
        UnsupportedAlgorithm,
        x509.DuplicateExtension,
        x509.UnsupportedGeneralNameType,
        Warning,
    ) as exc:
        raise error("certificate in the chain is malformed") from exc


def check_valid_at(cert: x509.Certificate, now: datetime, *, error: type[EvidenceError]) -> None:
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise error(f"certificate {_name(cert)} is not valid at {now.isoformat()}")


def verify_chain(
    certs: Sequence[x509.Certificate],
    root: x509.Certificate,
    *,
    now: datetime,
    error: type[EvidenceError],
) -> None:
    """Each certificate signed by the next, the last one the pinned root itself."""
    if certs[-1] != root:
        raise error("certificate chain does not end in the pinned Intel SGX Root CA")
    for cert, issuer in itertools.pairwise(certs):
        check_valid_at(cert, now, error=error)
        _check_is_ca(issuer, error=error)
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm) as exc:
            raise error(f"certificate {_name(cert)} is not signed by {_name(issuer)}") from exc
    check_valid_at(root, now, error=error)


def _check_is_ca(cert: x509.Certificate, *, error: type[EvidenceError]) -> None:
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        raise error(f"issuer {_name(cert)} has no basic constraints") from None
    except ValueError as exc:
        raise error(f"issuer {_name(cert)} has malformed extensions") from exc
    if not constraints.ca:
        raise error(f"issuer {_name(cert)} is not a CA")


def check_not_revoked(
    cert: x509.Certificate,
    crl_der: bytes,
    issuer: x509.Certificate,
    *,
    now: datetime,
) -> None:
    """The CRL must be the issuer's, signed, current, and not list ``cert``."""
    try:
        crl = load_der_crl(crl_der)
    except EvidenceFormatError as exc:
        raise CollateralError("CRL is not valid DER") from exc
    if crl.issuer != issuer.subject or cert.issuer != issuer.subject:
        raise CollateralError(f"CRL of {crl.issuer.rfc4514_string()} does not cover {_name(cert)}")
    key = issuer.public_key()
    try:
        signed = isinstance(key, ec.EllipticCurvePublicKey) and crl.is_signature_valid(key)
    except ValueError:
        signed = False
    if not signed:
        raise CollateralError(f"CRL signature of {_name(issuer)} is invalid")
    next_update = crl.next_update_utc
    if next_update is None or not crl.last_update_utc <= now <= next_update:
        raise CollateralError(f"CRL of {_name(issuer)} is not current at {now.isoformat()}")
    if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
        raise CollateralError(f"certificate {_name(cert)} is revoked")


def verify_p256(
    cert_or_key: x509.Certificate | bytes,
    signature: bytes,
    data: bytes,
    *,
    what: str,
    error: type[EvidenceError],
) -> None:
    """ECDSA-P256/SHA-256 over ``data``; signature and raw keys are r||s, x||y."""
    if len(signature) != 64:
        raise error(f"{what} signature is not 64 bytes")
    try:
        if isinstance(cert_or_key, bytes):
            key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + cert_or_key
            )
        else:
            public = cert_or_key.public_key()
            if not isinstance(public, ec.EllipticCurvePublicKey):
                raise error(f"{what} key is not an EC key")
            key = public
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, UnsupportedAlgorithm) as exc:
        raise error(f"{what} signature is invalid") from exc


def _name(cert: x509.Certificate) -> str:
    return repr(cert.subject.rfc4514_string()[:80])


@dataclass(frozen=True, slots=True)
class PCKExtension:
    """The platform TCB the PCK certificate was issued for (SGX PCK cert spec 1.4)."""

    fmspc: bytes
    pce_id: bytes
    pce_svn: int
    cpu_svn: bytes
    comp_svns: tuple[int, ...]

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PCKExtension:
        try:
            raw = cert.extensions.get_extension_for_oid(SGX_EXTENSION_OID).value
        except x509.ExtensionNotFound:
            raise EvidenceFormatError("PCK certificate has no SGX extension") from None
        except ValueError as exc:
            raise EvidenceFormatError("PCK certificate has malformed extensions") from exc
        if not isinstance(raw, x509.UnrecognizedExtension):
            raise EvidenceFormatError("PCK certificate SGX extension is not raw DER")
        values = dict(_walk(_sequence(raw.value)))
        try:
            comps = tuple(_uint(values[f"{_OID_PREFIX}.2.{i}"]) for i in range(1, 17))
            return cls(
                fmspc=_octets(values[f"{_OID_PREFIX}.4"], 6),
                pce_id=_octets(values[f"{_OID_PREFIX}.3"], 2),
                pce_svn=_uint(values[f"{_OID_PREFIX}.2.17"]),
                cpu_svn=_octets(values[f"{_OID_PREFIX}.2.18"], 16),
                comp_svns=comps,
            )
        except KeyError as exc:
            raise EvidenceFormatError(f"PCK SGX extension lacks {exc.args[0]}") from None


# A DER reader for the one extension cryptography does not parse: the value
# is a tree of SEQUENCE { OID, value } pairs.
def _tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    if pos + 2 > len(data):
        raise EvidenceFormatError("PCK SGX extension: truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 2 or pos + count > len(data):
            raise EvidenceFormatError("PCK SGX extension: bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise EvidenceFormatError("PCK SGX extension: truncated DER value")
    return tag, data[pos : pos + length], pos + length


def _sequence(der: bytes) -> bytes:
    tag, content, end = _tlv(der, 0)
    if tag != 0x30 or end != len(der):
        raise EvidenceFormatError("PCK SGX extension: expected a DER SEQUENCE")
    return content


def _walk(content: bytes, depth: int = 0) -> list[tuple[str, tuple[int, bytes]]]:
    """(OID, (tag, value)) for every pair, nested pairs flattened."""
    if depth > 3:
        raise EvidenceFormatError("PCK SGX extension: nested too deep")
    out: list[tuple[str, tuple[int, bytes]]] = []
    pos = 0
    while pos < len(content):
        tag, pair, pos = _tlv(content, pos)
        if tag != 0x30:
            raise EvidenceFormatError("PCK SGX extension: expected an OID/value pair")
        oid_tag, oid_der, value_pos = _tlv(pair, 0)
        if oid_tag != 0x06:
            raise EvidenceFormatError("PCK SGX extension: expected an OID")
        value_tag, value, _ = _tlv(pair, value_pos)
        out.append((_oid_text(oid_der), (value_tag, value)))
        if value_tag == 0x30:
            out.extend(_walk(value, depth + 1))
    return out


def _oid_text(der: bytes) -> str:
    if not der:
        raise EvidenceFormatError("PCK SGX extension: empty OID")
    parts = [der[0] // 40, der[0] % 40]
    value = 0
    for byte in der[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def _uint(item: tuple[int, bytes]) -> int:
    tag, value = item
    if tag not in (0x02, 0x0A) or not value or value[0] & 0x80:
        raise EvidenceFormatError("PCK SGX extension: expected a non-negative INTEGER")
    return int.from_bytes(value, "big")


def _octets(item: tuple[int, bytes], size: int) -> bytes:
    tag, value = item
    if tag != 0x04 or len(value) != size:
        raise EvidenceFormatError(f"PCK SGX extension: expected {size} octets")
    return value
