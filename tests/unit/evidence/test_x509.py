"""Tests for the shared certificate helpers (broker.evidence._x509)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from broker.errors import CollateralError, EvidenceFormatError, EvidenceSignatureError
from broker.evidence import _x509
from tests.vectors import expected, parse_time, read_bytes, requires_evidence, vector_path

NOW = datetime(2025, 9, 1, tzinfo=UTC)
START = NOW - timedelta(days=365)
END = NOW + timedelta(days=365)

IssuerKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@cache
def rsa_key(tag: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(tag: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def pss(salt: int = 48) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=salt)


def make_cert(
    subject: str,
    key: IssuerKey,
    *,
    issuer: str | None = None,
    issuer_key: IssuerKey | None = None,
    ca: bool = True,
    path_length: int | None = None,
    start: datetime = START,
    end: datetime = END,
    salt: int = 48,
    serial: int = 1,
    extensions: Sequence[x509.ExtensionType] = (),
) -> x509.Certificate:
    """A test certificate; RSA issuers sign with RSA-PSS SHA-384 like AMD."""
    signer = issuer_key or key
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer or subject))
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True
        )
    )
    for ext in extensions:
        builder = builder.add_extension(ext, critical=False)
    if isinstance(signer, rsa.RSAPrivateKey):
        return builder.sign(signer, hashes.SHA384(), rsa_padding=pss(salt))
    return builder.sign(signer, hashes.SHA384())


def make_crl(
    issuer: str,
    key: IssuerKey,
    serials: Sequence[int],
    *,
    last: datetime = START,
    following: datetime = END,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name(issuer))
        .last_update(last)
        .next_update(following)
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(START).build()
        )
    if isinstance(key, rsa.RSAPrivateKey):
        return builder.sign(key, hashes.SHA384(), rsa_padding=pss())
    return builder.sign(key, hashes.SHA384())


def rsa_chain() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    root = make_cert("Test ARK", rsa_key("root"))
    mid = make_cert("Test ASK", rsa_key("mid"), issuer="Test ARK", issuer_key=rsa_key("root"))
    leaf = make_cert(
        "Test VCEK", ec_key("leaf"), issuer="Test ASK", issuer_key=rsa_key("mid"), ca=False
    )
    return leaf, mid, root


def ec_chain() -> tuple[x509.Certificate, x509.Certificate, x509.Certificate]:
    root = make_cert("EC Root", ec_key("ec-root"))
    mid = make_cert("EC Mid", ec_key("ec-mid"), issuer="EC Root", issuer_key=ec_key("ec-root"))
    leaf = make_cert(
        "EC Leaf", ec_key("ec-leaf"), issuer="EC Mid", issuer_key=ec_key("ec-mid"), ca=False
    )
    return leaf, mid, root


def pinned(name_: str) -> x509.Certificate:
    return _x509.load_certificate(vector_path("roots", f"{name_}.pem").read_bytes())


# --- loading ------------------------------------------------------------------


def test_load_certificate_accepts_der_and_pem() -> None:
    """DER and PEM encodings of one certificate load to equal objects."""
    leaf, _, _ = rsa_chain()
    der = leaf.public_bytes(serialization.Encoding.DER)
    pem = leaf.public_bytes(serialization.Encoding.PEM)
    assert _x509.load_certificate(der) == _x509.load_certificate(pem) == leaf


@pytest.mark.parametrize("data", [b"", b"\x30\x03\x02\x01", b"-----BEGIN CERTIFICATE-----\nxx"])
def test_load_certificate_rejects_garbage(data: bytes) -> None:
    """Bytes that are not a certificate raise EvidenceFormatError."""
    with pytest.raises(EvidenceFormatError):
        _x509.load_certificate(data)


@requires_evidence
def test_serial_zero_vcek_loads_without_warning() -> None:
    """AMD's serial-0 VCEK loads even when every warning is an error."""
    data = read_bytes("sev-snp", "trustee-milan-vcek.vcek.der")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cert = _x509.load_certificate(data)
    assert _x509.subject_of(cert).startswith("CN=SEV-VCEK")


def test_load_certificates_pem_reads_a_bundle() -> None:
    """A PEM bundle yields every certificate in order; junk raises."""
    leaf, mid, root = rsa_chain()
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, mid, root))
    assert _x509.load_certificates_pem(bundle) == [leaf, mid, root]
    with pytest.raises(EvidenceFormatError):
        _x509.load_certificates_pem(b"no pem here")


def test_load_crl_accepts_der_and_pem_and_rejects_garbage() -> None:
    """CRLs load from DER and PEM; other bytes raise EvidenceFormatError."""
    crl = make_crl("Test ARK", rsa_key("root"), [5])
    for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
        assert _x509.load_crl(crl.public_bytes(encoding)) == crl
    with pytest.raises(EvidenceFormatError):
        _x509.load_crl(b"\x00\x01")


@requires_evidence
def test_fingerprint_of_pinned_milan_ark() -> None:
    """The ARK-Milan fingerprint matches the published value."""
    assert _x509.fingerprint_sha256(pinned("amd-milan-ark")) == (
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"
    )


# --- validity -----------------------------------------------------------------


@pytest.mark.parametrize("when", [START - timedelta(seconds=1), END + timedelta(seconds=1)])
def test_verify_valid_at_rejects_outside_window(when: datetime) -> None:
    """A certificate outside its window raises CollateralError naming it and the window."""
    leaf, _, _ = rsa_chain()
    with pytest.raises(CollateralError, match=r"Test VCEK.*not valid at.*valid"):
        _x509.verify_valid_at(leaf, when)


def test_verify_valid_at_accepts_window_edges() -> None:
    """notBefore and notAfter themselves are inside the window."""
    leaf, _, _ = rsa_chain()
    _x509.verify_valid_at(leaf, leaf.not_valid_before_utc)
    _x509.verify_valid_at(leaf, leaf.not_valid_after_utc)


def test_verify_valid_at_requires_aware_time() -> None:
    """A naive `now` is a programming error, not a verdict."""
    leaf, _, _ = rsa_chain()
    with pytest.raises(ValueError, match="timezone-aware"):
        _x509.verify_valid_at(leaf, datetime(2025, 9, 1))


# --- issuance -----------------------------------------------------------------


@requires_evidence
def test_real_amd_chain_verifies() -> None:
    """VCEK <- SEV-Milan <- ARK-Milan verify with RSA-PSS SHA-384 salt 48."""
    vcek = _x509.load_certificate(read_bytes("sev-snp", "trustee-milan-vcek.vcek.der"))
    _x509.verify_chain(vcek, [pinned("amd-milan-ask")], pinned("amd-milan-ark"), now=NOW)


@requires_evidence
def test_real_amd_wrong_issuer_is_rejected() -> None:
    """The Milan ASK does not issue a Turin VCEK; ASK is not the root."""
    turin = _x509.load_certificate(read_bytes("sev-snp", "oak-turin.vcek.der"))
    with pytest.raises(EvidenceSignatureError, match="names issuer"):
        _x509.verify_issued_by(turin, pinned("amd-milan-ask"))
    with pytest.raises(EvidenceSignatureError):
        _x509.verify_self_signed(pinned("amd-milan-ask"))


@requires_evidence
def test_outer_signature_algorithm_must_match_the_signed_one() -> None:
    """Changing the unsigned outer PSS salt parameter is detected, not ignored."""
    der = read_bytes("sev-snp", "trustee-milan-vcek.vcek.der")
    salt = b"\xa2\x03\x02\x01\x30"
    outer = der.rindex(salt)
    assert outer != der.index(salt)
    tampered = der[:outer] + b"\xa2\x03\x02\x01\x31" + der[outer + len(salt) :]
    with pytest.raises(EvidenceSignatureError, match="differs"):
        _x509.verify_issued_by(_x509.load_certificate(tampered), pinned("amd-milan-ask"))


def test_pss_with_other_salt_is_rejected() -> None:
    """RSA-PSS SHA-384 with a 32-byte salt fails: AMD's scheme fixes 48."""
    child = make_cert(
        "Salty", ec_key("leaf"), issuer="Test ARK", issuer_key=rsa_key("root"), salt=32
    )
    with pytest.raises(EvidenceSignatureError, match="does not verify"):
        _x509.verify_issued_by(child, rsa_chain()[2])


def test_ecdsa_chain_verifies() -> None:
    """An all-ECDSA chain (Nitro, Intel style) verifies."""
    leaf, mid, root = ec_chain()
    _x509.verify_chain(leaf, [mid], root, now=NOW)


def test_signature_by_other_key_is_rejected() -> None:
    """Same issuer name, other key: EvidenceSignatureError."""
    leaf, _, _ = ec_chain()
    impostor = make_cert("EC Mid", ec_key("impostor"), issuer="EC Root", issuer_key=ec_key("x"))
    with pytest.raises(EvidenceSignatureError, match="does not verify"):
        _x509.verify_issued_by(leaf, impostor)


def test_algorithm_must_fit_issuer_key() -> None:
    """An ECDSA-signed child cannot be checked against an RSA issuer of the same name."""
    child = make_cert("Child", ec_key("leaf"), issuer="Test ARK", issuer_key=ec_key("ec-root"))
    with pytest.raises(EvidenceSignatureError, match="does not fit"):
        _x509.verify_issued_by(child, rsa_chain()[2])


def test_non_ca_issuer_is_rejected() -> None:
    """A leaf certificate cannot issue another certificate."""
    leaf, _, _ = ec_chain()
    child = make_cert("Grandchild", ec_key("gc"), issuer="EC Leaf", issuer_key=ec_key("ec-leaf"))
    with pytest.raises(EvidenceSignatureError, match="not a CA"):
        _x509.verify_issued_by(child, leaf)


def test_key_usage_without_cert_sign_is_rejected() -> None:
    """A CA whose KeyUsage lacks keyCertSign cannot issue certificates."""
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    issuer = make_cert("No Sign", ec_key("ns"), extensions=[usage])
    child = make_cert("Child", ec_key("c"), issuer="No Sign", issuer_key=ec_key("ns"), ca=False)
    with pytest.raises(EvidenceSignatureError, match="may not sign"):
        _x509.verify_issued_by(child, issuer)


def test_path_length_is_enforced() -> None:
    """A root with pathLen 0 cannot sit above an intermediate CA."""
    root = make_cert("Short Root", ec_key("sr"), path_length=0)
    mid = make_cert("Mid", ec_key("m"), issuer="Short Root", issuer_key=ec_key("sr"))
    leaf = make_cert("Leaf", ec_key("l"), issuer="Mid", issuer_key=ec_key("m"), ca=False)
    with pytest.raises(EvidenceSignatureError, match="path length"):
        _x509.verify_chain(leaf, [mid], root, now=NOW)


def test_chain_longer_than_max_is_rejected() -> None:
    """The chain length cap is checked before any signature."""
    leaf, mid, root = ec_chain()
    with pytest.raises(EvidenceFormatError, match="exceeds"):
        _x509.verify_chain(leaf, [mid], root, now=NOW, max_len=2)


def test_chain_with_expired_intermediate_is_rejected() -> None:
    """Any expired certificate of the chain fails it with CollateralError."""
    leaf, _, root = ec_chain()
    old = make_cert(
        "EC Mid", ec_key("ec-mid"), issuer="EC Root", issuer_key=ec_key("ec-root"), end=START
    )
    with pytest.raises(CollateralError, match="EC Mid"):
        _x509.verify_chain(leaf, [old], root, now=NOW)


# --- revocation ---------------------------------------------------------------


def test_revoked_intermediate_is_rejected() -> None:
    """A CRL from the root that lists the intermediate fails the chain."""
    leaf, mid, root = rsa_chain()
    crl = make_crl("Test ARK", rsa_key("root"), [mid.serial_number])
    with pytest.raises(CollateralError, match="revoked"):
        _x509.check_revocation([leaf, mid, root], [crl], now=NOW)


def test_unrelated_serial_is_not_revoked() -> None:
    """A current CRL that lists other serials passes."""
    leaf, mid, root = rsa_chain()
    _x509.check_revocation(
        [leaf, mid, root], [make_crl("Test ARK", rsa_key("root"), [999])], now=NOW
    )


def test_stale_crl_is_rejected() -> None:
    """A CRL past nextUpdate is stale collateral."""
    leaf, mid, root = rsa_chain()
    crl = make_crl("Test ARK", rsa_key("root"), [], last=START, following=START + timedelta(1))
    with pytest.raises(CollateralError, match="not current"):
        _x509.check_revocation([leaf, mid, root], [crl], now=NOW)


def test_foreign_crl_is_rejected() -> None:
    """A CRL whose issuer is not in the chain is refused, not ignored."""
    leaf, mid, root = rsa_chain()
    with pytest.raises(CollateralError, match="not part of the chain"):
        _x509.check_revocation([leaf, mid, root], [make_crl("Other", rsa_key("x"), [])], now=NOW)


def test_forged_crl_is_rejected() -> None:
    """A CRL naming the root but signed by another key fails its signature."""
    leaf, mid, root = rsa_chain()
    forged = make_crl("Test ARK", rsa_key("forger"), [])
    with pytest.raises(EvidenceSignatureError):
        _x509.check_revocation([leaf, mid, root], [forged], now=NOW)


@requires_evidence
def test_cached_chain_still_checks_validity() -> None:
    """A chain whose signatures verified before is still refused outside its validity window."""
    from datetime import timedelta

    from broker.errors import CollateralError as _CollateralError
    from broker.evidence import pinned_anchors
    from broker.evidence._x509 import _verify_links, load_certificate, verify_chain

    vek = load_certificate(read_bytes("sev-snp", "trustee-milan-vcek.vcek.der"))
    anchors = pinned_anchors()
    ask = load_certificate(anchors.get("amd-milan-ask"))
    ark = load_certificate(anchors.get("amd-milan-ark"))
    when = parse_time(expected("sev-snp", "trustee-milan-vcek")["verification_time"])
    verify_chain(vek, [ask], ark, now=when, max_len=3)
    hits = _verify_links.cache_info().hits
    verify_chain(vek, [ask], ark, now=when, max_len=3)
    assert _verify_links.cache_info().hits == hits + 1
    with pytest.raises(_CollateralError):
        verify_chain(vek, [ask], ark, now=when + timedelta(days=365 * 10), max_len=3)
