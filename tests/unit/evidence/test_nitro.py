"""AWS Nitro Enclaves attestation documents against the real vectors."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from broker.errors import (
    EvidenceError,
    EvidenceFormatError,
    EvidenceSignatureError,
    FreshnessError,
)
from broker.evidence import get_verifier
from broker.evidence.model import Expectation, TrustAnchors, VerifyContext
from broker.evidence.nitro import NitroDocument, NitroVerifier, verify_nitro_document
from tests.vectors import expected, parse_time, read_bytes, requires_evidence, vector_ids

pytestmark = requires_evidence

ROOT = "aws-nitro-enclaves-root-g1"
IDS = vector_ids("nitro")


def _anchors() -> TrustAnchors:
    return TrustAnchors(pem={ROOT: read_bytes("roots", f"{ROOT}.pem")})


def _vector(vector_id: str) -> tuple[bytes, dict[str, Any]]:
    exp = expected("nitro", vector_id)
    return read_bytes("nitro", exp["files"]["document"]), exp


def _at(vector_id: str) -> datetime:
    return parse_time(expected("nitro", vector_id)["verification_time"])


def _encode_map_with_duplicate(items: list[tuple[Any, Any]]) -> bytes:
    """A definite-length CBOR map that may repeat keys (cbor2 never writes one)."""
    assert len(items) < 24
    return bytes([0xA0 + len(items)]) + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in items)


def _rebuild(
    document: bytes, *, protected: bytes | None = None, payload: bytes | None = None
) -> bytes:
    envelope = cbor2.loads(document)
    if protected is not None:
        envelope[0] = protected
    if payload is not None:
        envelope[2] = payload
    return cbor2.dumps(envelope)


@pytest.mark.parametrize("vector_id", IDS)
def test_vector_verifies_with_expected_claims(vector_id: str) -> None:
    """Every positive vector verifies at its time with exactly the expected claims."""
    document, exp = _vector(vector_id)
    result = verify_nitro_document(
        document, anchors=_anchors(), now=parse_time(exp["verification_time"])
    )
    assert result.claims == exp["claims"]
    assert result.flags == {"debug": exp["expected"]["debug"]}


@pytest.mark.parametrize("vector_id", IDS)
@pytest.mark.parametrize("side", ["before", "after"])
def test_vector_fails_outside_time_window(vector_id: str, side: str) -> None:
    """A second outside the certificate window, the document is refused."""
    document, exp = _vector(vector_id)
    start, end = (parse_time(t) for t in exp["time_window"])
    now = start - timedelta(seconds=1) if side == "before" else end + timedelta(seconds=1)
    with pytest.raises(EvidenceError):
        verify_nitro_document(document, anchors=_anchors(), now=now)


def test_vectors_fail_today() -> None:
    """At the corpus date every Nitro chain has expired."""
    for vector_id in IDS:
        document, _ = _vector(vector_id)
        with pytest.raises(EvidenceError):
            verify_nitro_document(
                document, anchors=_anchors(), now=datetime(2026, 11, 28, tzinfo=UTC)
            )


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("nitrite-prod.sigflip.cbor", EvidenceSignatureError),
        ("nitrite-prod.pcr0-changed.cbor", EvidenceSignatureError),
        ("nitrite-prod.truncated.cbor", EvidenceFormatError),
    ],
)
def test_derived_negatives_rejected(name: str, error: type[EvidenceError]) -> None:
    """Flipped signature, changed PCR0 and truncation each fail the right way."""
    document = read_bytes("nitro", "negative", name)
    with pytest.raises(error):
        verify_nitro_document(document, anchors=_anchors(), now=_at("nitrite-prod"))


def test_upstream_invalid_document_rejected() -> None:
    """The upstream-made invalid document fails on its signature while its chain is valid."""
    document = read_bytes("nitro", "negative", "polygon-invalid.upstream.cbor")
    with pytest.raises(EvidenceSignatureError):
        verify_nitro_document(
            document, anchors=_anchors(), now=datetime(2025, 2, 7, 10, 0, tzinfo=UTC)
        )


def test_duplicate_payload_key_rejected() -> None:
    """A payload map that repeats a key is malformed, whichever value comes last."""
    document, _ = _vector("nitrite-prod")
    payload = cbor2.loads(cbor2.loads(document)[2])
    items = [*payload.items(), ("module_id", "i-00000000000000000-enc0000000000000000")]
    forged = _rebuild(document, payload=_encode_map_with_duplicate(items))
    with pytest.raises(EvidenceFormatError, match="payload"):
        verify_nitro_document(forged, anchors=_anchors(), now=_at("nitrite-prod"))


def test_duplicate_protected_header_key_rejected() -> None:
    """A protected header with two alg entries is malformed."""
    document, _ = _vector("nitrite-prod")
    forged = _rebuild(document, protected=_encode_map_with_duplicate([(1, -7), (1, -35)]))
    with pytest.raises(EvidenceFormatError, match="protected header"):
        verify_nitro_document(forged, anchors=_anchors(), now=_at("nitrite-prod"))


@pytest.mark.parametrize("header", [{1: -7}, {1: -35, 4: b"kid"}, {}])
def test_protected_header_other_than_es384_rejected(header: dict[int, Any]) -> None:
    """Only the exact protected header {1: -35} is accepted."""
    document, _ = _vector("nitrite-prod")
    forged = _rebuild(document, protected=cbor2.dumps(header))
    with pytest.raises(EvidenceFormatError):
        verify_nitro_document(forged, anchors=_anchors(), now=_at("nitrite-prod"))


def test_tagged_cose_sign1_accepted() -> None:
    """The COSE_Sign1 tag 18 form verifies like the untagged array."""
    document, exp = _vector("nitrite-prod")
    tagged = cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(document)))
    result = verify_nitro_document(tagged, anchors=_anchors(), now=_at("nitrite-prod"))
    assert result.claims == exp["claims"]


@pytest.mark.parametrize("suffix", [b"\x00", b"\xa0"])
def test_trailing_bytes_rejected(suffix: bytes) -> None:
    """Bytes after the COSE_Sign1 item are refused rather than ignored."""
    document, _ = _vector("nitrite-prod")
    with pytest.raises(EvidenceFormatError, match="trailing"):
        verify_nitro_document(document + suffix, anchors=_anchors(), now=_at("nitrite-prod"))


def test_wrong_envelope_shape_rejected() -> None:
    """A 3-element array or another tag is not a COSE_Sign1."""
    document, _ = _vector("nitrite-prod")
    envelope = cbor2.loads(document)
    for forged in (cbor2.dumps(envelope[:3]), cbor2.dumps(cbor2.CBORTag(98, envelope))):
        with pytest.raises(EvidenceFormatError):
            verify_nitro_document(forged, anchors=_anchors(), now=_at("nitrite-prod"))


def _p384_ca(subject: x509.Name) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2019, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2049, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA384())
    )
    return cert, key


def _aws_root_subject() -> x509.Name:
    return x509.load_pem_x509_certificate(read_bytes("roots", f"{ROOT}.pem")).subject


def test_other_p384_root_rejected() -> None:
    """Pinning another P-384 CA with the AWS subject name makes every vector fail."""
    other, _ = _p384_ca(_aws_root_subject())
    anchors = TrustAnchors(pem={ROOT: other.public_bytes(serialization.Encoding.PEM)})
    for vector_id in IDS:
        document, _ = _vector(vector_id)
        with pytest.raises(EvidenceSignatureError):
            verify_nitro_document(document, anchors=anchors, now=_at(vector_id))


def test_cabundle_swapped_to_pinned_impostor_root_rejected() -> None:
    """A document whose cabundle[0] is the (impostor) pinned root still fails its chain."""
    other, _ = _p384_ca(_aws_root_subject())
    anchors = TrustAnchors(pem={ROOT: other.public_bytes(serialization.Encoding.PEM)})
    document, _ = _vector("nitrite-prod")
    payload = cbor2.loads(cbor2.loads(document)[2])
    payload["cabundle"][0] = other.public_bytes(serialization.Encoding.DER)
    forged = _rebuild(document, payload=cbor2.dumps(payload))
    with pytest.raises(EvidenceSignatureError):
        verify_nitro_document(forged, anchors=anchors, now=_at("nitrite-prod"))


def test_missing_root_anchor_rejected() -> None:
    """Without the pinned AWS root nothing verifies."""
    document, _ = _vector("nitrite-prod")
    with pytest.raises(EvidenceFormatError):
        verify_nitro_document(document, anchors=TrustAnchors(pem={}), now=_at("nitrite-prod"))


def test_document_older_than_max_age_rejected() -> None:
    """polygon-claim is 190 s old at its verification time: 300 s passes, 60 s fails."""
    document, _ = _vector("polygon-claim")
    now = _at("polygon-claim")
    verify_nitro_document(document, anchors=_anchors(), now=now, max_age_seconds=300)
    with pytest.raises(FreshnessError):
        verify_nitro_document(document, anchors=_anchors(), now=now, max_age_seconds=60)


def test_document_from_the_future_rejected() -> None:
    """A timestamp more than the allowed skew ahead of now is refused."""
    document, exp = _vector("polygon-claim")
    issued = datetime.fromisoformat(exp["claims"]["timestamp"])
    with pytest.raises(FreshnessError):
        verify_nitro_document(document, anchors=_anchors(), now=issued - timedelta(minutes=5))


def test_document_parse_exposes_fields() -> None:
    """NitroDocument.from_bytes decodes the payload without verifying it."""
    document, exp = _vector("polygon-claim")
    doc = NitroDocument.from_bytes(document)
    assert doc.module_id == exp["claims"]["module_id"]
    assert doc.nonce is not None
    assert doc.nonce.hex() == exp["claims"]["nonce"]
    assert doc.public_key is None
    assert len(doc.cabundle) >= 1


# --- NitroVerifier (KBS path) ---


def _ctx(vector_id: str, expect: Expectation | None = None) -> VerifyContext:
    return VerifyContext(
        now=_at(vector_id), anchors=_anchors(), expect=expect, max_age_seconds=3600
    )


def _b64(vector_id: str) -> str:
    return base64.b64encode(_vector(vector_id)[0]).decode()


def test_registry_returns_nitro_verifier() -> None:
    """The registry maps tee "nitro" to NitroVerifier."""
    assert isinstance(get_verifier("nitro"), NitroVerifier)


@pytest.mark.parametrize("shape", ["object", "bare"])
def test_verifier_without_expectation(shape: str) -> None:
    """Offline verification accepts the object form and the bare base64 string."""
    text = _b64("polygon-claim")
    evidence: object = {"attestation_document": text} if shape == "object" else text
    claims = NitroVerifier().verify(evidence, _ctx("polygon-claim"))
    assert claims.tee == "nitro"
    assert claims.claims == expected("nitro", "polygon-claim")["claims"]
    assert claims.evidence_digest.startswith("sha256:")


def _doc_expectation(vector_id: str, *, nonce: bytes | None = None) -> Expectation:
    doc = NitroDocument.from_bytes(_vector(vector_id)[0])
    assert doc.user_data is not None
    assert doc.nonce is not None
    return Expectation(
        report_data=doc.user_data.ljust(64, b"\0")[:64],
        nonce=doc.nonce if nonce is None else nonce,
        runtime_digest=doc.user_data,
    )


def test_verifier_accepts_user_data_equal_to_runtime_digest() -> None:
    """user_data == runtime_digest and nonce == challenge nonce binds the document."""
    expect = _doc_expectation("polygon-claim")
    claims = NitroVerifier().verify(_b64("polygon-claim"), _ctx("polygon-claim", expect))
    assert claims.flags == {"debug": False}


def test_verifier_rejects_other_runtime_digest() -> None:
    """A document whose user_data is not this challenge's digest is refused."""
    expect = Expectation(report_data=b"\1" * 64, nonce=b"\2" * 32, runtime_digest=b"\1" * 48)
    with pytest.raises(FreshnessError):
        NitroVerifier().verify(_b64("polygon-claim"), _ctx("polygon-claim", expect))


def test_verifier_rejects_other_nonce() -> None:
    """Even with matching user_data, a document nonce that differs is refused."""
    expect = _doc_expectation("polygon-claim", nonce=b"\0" * 32)
    with pytest.raises(FreshnessError, match="nonce"):
        NitroVerifier().verify(_b64("polygon-claim"), _ctx("polygon-claim", expect))


def test_verifier_rejects_document_without_user_data() -> None:
    """A document with no user_data cannot bind the tee-pubkey."""
    expect = Expectation(report_data=b"\1" * 64, nonce=b"\2" * 32, runtime_digest=b"\1" * 48)
    with pytest.raises(FreshnessError):
        NitroVerifier().verify(
            _b64("nitro-attest-eu-central-1"), _ctx("nitro-attest-eu-central-1", expect)
        )


def test_verifier_applies_max_age() -> None:
    """The KBS path uses ctx.max_age_seconds for freshness."""
    ctx = VerifyContext(now=_at("polygon-claim"), anchors=_anchors(), max_age_seconds=60)
    with pytest.raises(FreshnessError):
        NitroVerifier().verify(_b64("polygon-claim"), ctx)


@pytest.mark.parametrize(
    "evidence",
    [
        None,
        42,
        {},
        {"attestation_document": 1},
        {"attestation_document": "not base64!"},
        "",
        ["x"],
    ],
)
def test_verifier_rejects_malformed_evidence(evidence: object) -> None:
    """Evidence of the wrong shape is a format error."""
    with pytest.raises(EvidenceFormatError):
        NitroVerifier().verify(evidence, _ctx("polygon-claim"))


def test_verifier_enforces_size_limit() -> None:
    """Documents above max_evidence_bytes are refused before decoding."""
    ctx = VerifyContext(now=_at("polygon-claim"), anchors=_anchors(), max_evidence_bytes=1000)
    with pytest.raises(EvidenceFormatError, match="too large"):
        NitroVerifier().verify(_b64("polygon-claim"), ctx)


def test_verifier_accepts_urlsafe_base64() -> None:
    """URL-safe base64 (without padding) decodes to the same document."""
    text = base64.urlsafe_b64encode(_vector("nitrite-prod")[0]).decode().rstrip("=")
    claims = NitroVerifier().verify(text, _ctx("nitrite-prod"))
    assert claims.flags == {"debug": False}
