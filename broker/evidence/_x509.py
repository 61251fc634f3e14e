"""Certificate helpers shared by the verifiers, on ``cryptography.x509``.

    leaf = load_certificate(der_or_pem)
    verify_chain(leaf, [intermediate], pinned_root, now=now)
    check_revocation([leaf, intermediate, pinned_root], crls, now=now)

Every failure raises a ``broker.errors.EvidenceError`` subclass naming the
certificate subject: ``EvidenceFormatError`` for bytes that do not parse,
``EvidenceSignatureError`` for a signature or issuer that does not match, and
``CollateralError`` for certificates or CRLs outside their validity window and
for revoked certificates.
"""

from __future__ import annotations

import functools
import itertools
import threading
import warnings
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, TypeVar, cast

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import SignatureAlgorithmOID

from broker.errors import CollateralError, EvidenceFormatError, EvidenceSignatureError

__all__ = [
    "CERT_MEMO_SIZE",
    "DEFAULT_MAX_CHAIN_LEN",
    "check_revocation",
    "fingerprint_sha256",
    "load_certificate",
    "load_certificates_pem",
    "load_crl",
    "per_certificate",
    "subject_of",
    "verify_chain",
    "verify_crl_issued_by",
    "verify_issued_by",
    "verify_self_signed",
    "verify_valid_at",
]

DEFAULT_MAX_CHAIN_LEN = 5
_PEM_MARKER = b"-----BEGIN"
# AMD issues every VCEK/VLEK with serial number 0; cryptography still parses
# it but warns (and the test suite turns warnings into errors).
_SERIAL_WARNING = "Parsed a serial number which wasn't positive"

_PSS_OIDS = frozenset({SignatureAlgorithmOID.RSASSA_PSS})
_PKCS1_OIDS = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
    }
)
_ECDSA_OIDS = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
    }
)
_HASHES = (hashes.SHA256, hashes.SHA384, hashes.SHA512)

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])
_CERT_VERSION_TAG = 0xA0  # [0] EXPLICIT Version in TBSCertificate
_CRL_VERSION_TAG = 0x02  # optional INTEGER version in TBSCertList

# What cryptography raises for malformed or unsupported encodings.
_PARSE_ERRORS = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
    # Any other warning cryptography raises while parsing (e.g. a malformed
    # name) means the certificate is malformed: _quietly turns it into an error.
    Warning,
)


def _quietly(parse: Callable[[], _T]) -> _T:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings(
            "ignore", message=_SERIAL_WARNING, category=CryptographyDeprecationWarning
        )
        return parse()


def load_certificate(data: bytes) -> x509.Certificate:
    """One certificate from DER or PEM bytes.

    Raises:
        EvidenceFormatError: the bytes are not a certificate.
    """
    # A fleet sends the same few certificates (one VCEK per host, shared PCK
    # and intermediate certificates) with every report; a certificate object
    # is immutable, so parsing each distinct one once is enough.
    return _load_certificate(bytes(data))


@functools.lru_cache(maxsize=1024)
def _load_certificate(data: bytes) -> x509.Certificate:
    """``load_certificate`` for one byte string (failures are not cached)."""
    try:
        if data.lstrip().startswith(_PEM_MARKER):
            cert = _quietly(lambda: x509.load_pem_x509_certificate(data))
        else:
            cert = _quietly(lambda: x509.load_der_x509_certificate(data))
        _quietly(lambda: _parse_fields(cert))
    except _PARSE_ERRORS as exc:
        raise EvidenceFormatError("certificate does not parse as DER or PEM X.509") from exc
    return cert


def _parse_fields(cert: x509.Certificate) -> None:
    """cryptography parses fields lazily; touch every one we rely on so that
    a malformed field fails here, as a format error, not deep in a check."""
    _ = (cert.subject, cert.issuer, cert.serial_number, cert.extensions)
    _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.signature_algorithm_oid)
    # The signature BIT STRING closes the certificate: its first content byte
    # counts unused bits, which DER requires to be 0 for a whole-byte signature.
    # The parser ignores that byte, so without this check a certificate would
    # have a second spelling that verifies like the first.
    der = cert.public_bytes(serialization.Encoding.DER)
    if der[-len(cert.signature) - 1] != 0:
        raise ValueError("certificate signature has unused bits")
    cert.public_key()


def per_certificate(maxsize: int) -> Callable[[_F], _F]:
    """Memoises ``f(cert, *args)`` per certificate object and ``args``, bounded.

    Only for values derived from the certificate alone: a certificate is
    immutable, so such a value never goes stale. Failures are not memoised;
    they are raised again on the next call. Returned values are shared between
    callers, so they must be immutable. Arguments after the certificate must be
    positional and hashable.

    The key is the certificate's identity, not its value: ``Certificate.__hash__``
    digests the whole encoding on every call, which costs about as much as the
    readings worth memoising, while ``load_certificate`` hands out one object
    per distinct certificate anyway. Each entry holds its certificate, so no
    other object can take over its ``id`` while the entry lives.
    """

    def decorate(derive: _F) -> _F:
        entries: dict[tuple[int, tuple[Hashable, ...]], tuple[x509.Certificate, Any]] = {}
        lock = threading.Lock()

        @functools.wraps(derive)
        def lookup(cert: x509.Certificate, /, *args: Hashable) -> Any:
            key = (id(cert), args)
            entry = entries.get(key)
            if entry is not None and entry[0] is cert:
                return entry[1]
            value = derive(cert, *args)
            with lock:
                # Oldest first (dict order): a bound, not a policy; a fleet's
                # working set of certificates is far below it.
                while len(entries) >= maxsize:
                    del entries[next(iter(entries))]
                entries[key] = (cert, value)
            return value

        return cast(_F, lookup)

    return decorate


def load_certificates_pem(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in file order (at least one).

    Raises:
        EvidenceFormatError: no certificate, or one that does not parse.
    """
    try:
        certs = _quietly(lambda: x509.load_pem_x509_certificates(data))
        for cert in certs:
            _quietly(functools.partial(_parse_fields, cert))
    except _PARSE_ERRORS as exc:
        raise EvidenceFormatError("PEM bundle does not parse") from exc
    return certs


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from DER or PEM bytes.

    Raises:
        EvidenceFormatError: the bytes are not a CRL.
    """
    try:
        if data.lstrip().startswith(_PEM_MARKER):
            return _parsed_crl(_quietly(lambda: x509.load_pem_x509_crl(data)))
        return _parsed_crl(_quietly(lambda: x509.load_der_x509_crl(data)))
    except _PARSE_ERRORS as exc:
        raise EvidenceFormatError("CRL does not parse as DER or PEM") from exc


def load_der_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from DER bytes only, every field it is checked by already decoded.

    Raises:
        EvidenceFormatError: the bytes are not a DER CRL.
    """
    try:
        return _parsed_crl(_quietly(lambda: x509.load_der_x509_crl(data)))
    except _PARSE_ERRORS as exc:
        raise EvidenceFormatError("CRL does not parse as DER") from exc


def _parsed_crl(crl: x509.CertificateRevocationList) -> x509.CertificateRevocationList:
    # cryptography parses fields lazily: a malformed one must fail here, not in a check.
    _ = (crl.issuer, crl.last_update_utc, crl.next_update_utc, crl.extensions)
    _quietly(lambda: [(r.serial_number, r.extensions) for r in crl])
    return crl


def subject_of(cert: x509.Certificate) -> str:
    """The subject as an RFC 4514 string, for messages."""
    return cert.subject.rfc4514_string()


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 over the DER encoding."""
    return cert.fingerprint(hashes.SHA256()).hex()


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")


# Bounds the memos of values derived from one certificate (its encoding, its
# validity window, a verifier's reading of its extensions); the same order as
# the parsed-certificate cache, which hands out the objects they are keyed on.
CERT_MEMO_SIZE = 1024


class _Facts(NamedTuple):
    """What ``verify_chain`` reads from each certificate on every call."""

    der: bytes
    not_before: datetime
    not_after: datetime


@per_certificate(CERT_MEMO_SIZE)
def _facts(cert: x509.Certificate) -> _Facts:
    # public_bytes re-encodes and each validity read builds new datetime objects
    # on every call; none of them can change for one certificate.
    return _Facts(
        cert.public_bytes(serialization.Encoding.DER),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
    )


def verify_valid_at(cert: x509.Certificate, now: datetime) -> None:
    """Raises CollateralError unless notBefore <= now <= notAfter."""
    _require_aware(now)
    _check_window(cert, _facts(cert), now)


def _check_window(cert: x509.Certificate, facts: _Facts, now: datetime) -> None:
    start, end = facts.not_before, facts.not_after
    if not start <= now <= end:
        raise CollateralError(
            f"certificate {subject_of(cert)} is not valid at {now.isoformat()} "
            f"(valid {start.isoformat()} .. {end.isoformat()})"
        )


def _hash_of(signed: x509.Certificate | x509.CertificateRevocationList) -> hashes.HashAlgorithm:
    try:
        algorithm = signed.signature_hash_algorithm
    except UnsupportedAlgorithm as exc:
        raise EvidenceSignatureError("unsupported signature hash algorithm") from exc
    if not isinstance(algorithm, _HASHES):
        raise EvidenceSignatureError("signature hash must be SHA-256, SHA-384 or SHA-512")
    return algorithm


def _verify_signature(
    signed: x509.Certificate | x509.CertificateRevocationList,
    tbs: bytes,
    issuer: x509.Certificate,
    what: str,
) -> None:
    """Checks ``signed``'s signature with the issuer's key, the scheme picked
    from the issuer key type and the signature OID (never from the key alone)."""
    _require_consistent_algorithm(signed, tbs, what)
    oid = signed.signature_algorithm_oid
    algorithm = _hash_of(signed)
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and oid in _PSS_OIDS:
            # RFC 8017 / AMD: MGF1 with the same hash, salt as long as the
            # digest (48 bytes for SHA-384); any other salt fails verification.
            pss = padding.PSS(mgf=padding.MGF1(algorithm), salt_length=algorithm.digest_size)
            key.verify(signed.signature, tbs, pss, algorithm)
        elif isinstance(key, rsa.RSAPublicKey) and oid in _PKCS1_OIDS:
            key.verify(signed.signature, tbs, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and oid in _ECDSA_OIDS:
            key.verify(signed.signature, tbs, ec.ECDSA(algorithm))
        else:
            raise EvidenceSignatureError(
                f"{what}: signature algorithm {oid.dotted_string} does not fit the issuer key "
                f"of {subject_of(issuer)}"
            )
    except InvalidSignature as exc:
        raise EvidenceSignatureError(
            f"{what}: signature does not verify with the key of {subject_of(issuer)}"
        ) from exc


def _der_element(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, end) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        raise EvidenceFormatError("truncated DER element")
    tag, length, start = data[pos], data[pos + 1], pos + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or start + count > len(data):
            raise EvidenceFormatError("bad DER length")
        length, start = int.from_bytes(data[start : start + count], "big"), start + count
    if start + length > len(data):
        raise EvidenceFormatError("truncated DER element")
    return tag, start, start + length


def _signed_algorithms(outer: bytes, tbs: bytes, *, versioned: int) -> tuple[bytes, bytes]:
    """The outer signatureAlgorithm and the one inside the signed TBS part.

    ``versioned`` is the tag of the optional version field that precedes the
    serial number (certificates, 0xA0) or the AlgorithmIdentifier (CRLs, 0x02).
    """
    _, content, _ = _der_element(outer, 0)
    _, _, tbs_end = _der_element(outer, content)
    _, _, alg_end = _der_element(outer, tbs_end)
    outer_alg = outer[tbs_end:alg_end]
    _, pos, _ = _der_element(tbs, 0)
    tag, _, end = _der_element(tbs, pos)
    if tag == versioned:
        pos = end
    if versioned == _CERT_VERSION_TAG:
        _, _, pos = _der_element(tbs, pos)  # serialNumber
    _, _, end = _der_element(tbs, pos)
    return outer_alg, tbs[pos:end]


def _require_consistent_algorithm(
    signed: x509.Certificate | x509.CertificateRevocationList, tbs: bytes, what: str
) -> None:
    # RFC 5280 4.1.1.2 / 5.1.1.2: only the inner copy is signed, so an outer
    # one that differs (e.g. other PSS parameters) would make the bytes malleable.
    versioned = _CERT_VERSION_TAG if isinstance(signed, x509.Certificate) else _CRL_VERSION_TAG
    outer, inner = _signed_algorithms(
        signed.public_bytes(serialization.Encoding.DER), tbs, versioned=versioned
    )
    if outer != inner:
        raise EvidenceSignatureError(f"{what}: signatureAlgorithm differs from the signed one")


def _require_ca(issuer: x509.Certificate) -> x509.BasicConstraints:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise EvidenceSignatureError(f"issuer {subject_of(issuer)} is not a CA certificate")
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return constraints
    if not usage.key_cert_sign:
        raise EvidenceSignatureError(f"issuer {subject_of(issuer)} may not sign certificates")
    return constraints


def verify_issued_by(child: x509.Certificate, issuer: x509.Certificate) -> None:
    """``child`` names ``issuer`` as its issuer and carries its signature.

    Raises:
        EvidenceSignatureError: name mismatch, issuer not a CA, unsupported or
            mismatched algorithm, or a signature that does not verify.
    """
    if child.issuer != issuer.subject:
        raise EvidenceSignatureError(
            f"certificate {subject_of(child)} names issuer {child.issuer.rfc4514_string()}, "
            f"not {subject_of(issuer)}"
        )
    _require_ca(issuer)
    _verify_signature(
        child, child.tbs_certificate_bytes, issuer, f"certificate {subject_of(child)}"
    )


def verify_self_signed(root: x509.Certificate) -> None:
    """Raises EvidenceSignatureError unless ``root`` is a self-signed CA."""
    verify_issued_by(root, root)


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    root: x509.Certificate,
    *,
    now: datetime,
    max_len: int = DEFAULT_MAX_CHAIN_LEN,
) -> None:
    """leaf <- intermediates[0] <- ... <- root, the root being a pinned anchor.

    Every certificate must be valid at ``now``; each one must be signed by the
    next; the root must be self-signed; CA path-length limits are honoured.

    Raises:
        EvidenceFormatError: the chain is longer than ``max_len``.
        CollateralError: a certificate is outside its validity window.
        EvidenceSignatureError: any issuer or signature check fails.
    """
    chain = [leaf, *intermediates, root]
    if len(chain) > max_len:
        raise EvidenceFormatError(f"certificate chain of {len(chain)} exceeds {max_len}")
    _require_aware(now)
    facts = [_facts(cert) for cert in chain]
    for cert, fact in zip(chain, facts, strict=True):
        _check_window(cert, fact, now)
    # Validity depends on `now` and is checked every time; the signatures and path
    # lengths depend only on the certificates' bytes, so a chain that verified once
    # is not verified again (a fleet presents the same VCEK/ASK/ARK over and over).
    _verify_links(tuple(fact.der for fact in facts))


@functools.lru_cache(maxsize=4096)
def _verify_links(ders: tuple[bytes, ...]) -> bool:
    """Signatures and CA constraints of a chain given as DER (failures are not cached)."""
    chain = [load_certificate(der) for der in ders]
    verify_self_signed(chain[-1])
    for below, (child, issuer) in enumerate(itertools.pairwise(chain)):
        verify_issued_by(child, issuer)
        limit = _require_ca(issuer).path_length
        # ``below`` counts the CA certificates between the issuer and the leaf.
        if limit is not None and limit < below:
            raise EvidenceSignatureError(
                f"path length of {subject_of(issuer)} ({limit}) is exceeded"
            )
    return True


def verify_crl_issued_by(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, *, now: datetime
) -> None:
    """The CRL is signed by ``issuer`` and current at ``now``.

    Raises:
        EvidenceSignatureError: wrong issuer or bad signature.
        CollateralError: ``now`` is outside lastUpdate .. nextUpdate (or the
            CRL has no nextUpdate, so freshness cannot be judged).
    """
    _require_aware(now)
    if crl.issuer != issuer.subject:
        raise EvidenceSignatureError(f"CRL is not issued by {subject_of(issuer)}")
    _verify_signature(crl, crl.tbs_certlist_bytes, issuer, f"CRL of {subject_of(issuer)}")
    last, following = crl.last_update_utc, crl.next_update_utc
    if following is None or not last <= now <= following:
        raise CollateralError(
            f"CRL of {subject_of(issuer)} is not current at {now.isoformat()} "
            f"(last update {last.isoformat()}, next update "
            f"{following.isoformat() if following else 'absent'})"
        )


def _is_listed(crl: x509.CertificateRevocationList, serial: int) -> bool:
    return _quietly(lambda: crl.get_revoked_certificate_by_serial_number(serial)) is not None


def check_revocation(
    chain: Sequence[x509.Certificate],
    crls: Sequence[x509.CertificateRevocationList],
    *,
    now: datetime,
) -> None:
    """No certificate of ``chain`` (leaf first) is revoked by a supplied CRL.

    Each CRL must be issued by a CA of the chain and current at ``now``; a CRL
    from anyone else is refused rather than ignored.

    Raises:
        CollateralError: a certificate is revoked, or a CRL is stale or foreign.
        EvidenceSignatureError: a CRL signature does not verify.
    """
    for crl in crls:
        issuer = next((c for c in chain if c.subject == crl.issuer), None)
        if issuer is None:
            raise CollateralError(
                f"CRL issuer {crl.issuer.rfc4514_string()} is not part of the chain"
            )
        verify_crl_issued_by(crl, issuer, now=now)
        for cert in chain:
            if cert.issuer != crl.issuer or cert is issuer:
                continue
            if _is_listed(crl, cert.serial_number):
                raise CollateralError(f"certificate {subject_of(cert)} is revoked")
