"""Tests for the AMD SEV-SNP verifier against the real vectors and synthetic chains."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from broker.errors import (
    CollateralError,
    EvidenceError,
    EvidenceFormatError,
    EvidenceSignatureError,
    FreshnessError,
)
from broker.evidence import get_verifier, pinned_anchors
from broker.evidence.binding import REPORT_DATA_SIZE
from broker.evidence.model import Expectation, TrustAnchors, VerifyContext, evidence_digest
from broker.evidence.snp import (
    REPORT_SIZE,
    Product,
    SNPReport,
    SNPVerifier,
    TCBVersion,
    decode_tcb,
    verify_snp_report,
)
from tests.unit.evidence.test_x509 import ec_key, make_cert, make_crl, rsa_key
from tests.vectors import expected, parse_time, read_bytes, requires_evidence, vector_ids

SNP = "sev-snp"
IDS = vector_ids(SNP)
BASE = "trustee-milan-vcek"
WHEN = datetime(2025, 9, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Vector:
    id: str
    report: bytes
    vek: bytes
    now: datetime
    window: tuple[datetime, datetime]
    data: dict[str, Any]


def vector(vector_id: str) -> Vector:
    data = expected(SNP, vector_id)
    files = data["files"]
    start, end = (parse_time(t) for t in data["time_window"])
    return Vector(
        id=vector_id,
        report=read_bytes(SNP, files["report"]),
        vek=read_bytes(SNP, files.get("vcek") or files["vlek"]),
        now=parse_time(data["verification_time"]),
        window=(start, end),
        data=data,
    )


def ctx(now: datetime = WHEN, **kwargs: Any) -> VerifyContext:
    return VerifyContext(now=now, anchors=pinned_anchors(), **kwargs)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def expectation(report_data: bytes) -> Expectation:
    return Expectation(report_data=report_data, nonce=b"n", runtime_digest=report_data[:48])


# --- real vectors ---------------------------------------------------------------


@requires_evidence
@pytest.mark.parametrize("vector_id", IDS)
def test_vector_verifies_with_expected_claims(vector_id: str) -> None:
    """Each positive vector verifies at its time with exactly the expected claims."""
    v = vector(vector_id)
    result = verify_snp_report(v.report, v.vek, anchors=pinned_anchors(), now=v.now)
    assert result.claims == v.data["claims"]
    assert result.report_data.hex() == v.data["claims"]["report_data"]
    assert result.flags["debug"] is v.data["expected"]["debug"]


@requires_evidence
@pytest.mark.parametrize("vector_id", IDS)
def test_vector_fails_outside_its_window(vector_id: str) -> None:
    """Before the VEK's notBefore and after its notAfter, verification fails on time."""
    v = vector(vector_id)
    for when in (v.window[0] - timedelta(seconds=1), v.window[1] + timedelta(seconds=1)):
        with pytest.raises(CollateralError, match="not valid at"):
            verify_snp_report(v.report, v.vek, anchors=pinned_anchors(), now=when)


@requires_evidence
def test_vlek_vector_has_expired_by_late_2026() -> None:
    """The VLEK expired in December 2025: at today's date it must be refused."""
    v = vector("trustee-milan-vlek")
    with pytest.raises(CollateralError, match="SEV-VLEK"):
        verify_snp_report(
            v.report, v.vek, anchors=pinned_anchors(), now=datetime(2026, 11, 28, tzinfo=UTC)
        )


@requires_evidence
def test_flags_of_policy_relevant_vectors() -> None:
    """Debug policy, VMPL 1 and VLEK signing surface as flags."""
    debug = vector("gosev-milan-debug")
    flags = verify_snp_report(debug.report, debug.vek, anchors=pinned_anchors(), now=WHEN).flags
    assert flags["debug"]
    assert not flags["vmpl_nonzero"]
    assert not flags["signing_key_vlek"]
    vlek = vector("trustee-milan-vlek")
    flags = verify_snp_report(vlek.report, vlek.vek, anchors=pinned_anchors(), now=WHEN).flags
    assert flags["vmpl_nonzero"]
    assert flags["signing_key_vlek"]
    assert not flags["debug"]
    assert flags["smt_allowed"]
    assert flags["reported_tcb_below_current"]


@requires_evidence
@pytest.mark.parametrize(
    ("report_file", "vek_file", "error", "match"),
    [
        ("negative/trustee-milan-vcek.sigflip.report.bin", None, EvidenceSignatureError, "report"),
        (
            "negative/trustee-milan-vcek.measurement-changed.report.bin",
            None,
            EvidenceSignatureError,
            "report signature",
        ),
        ("negative/trustee-milan-vcek.truncated.report.bin", None, EvidenceFormatError, "1000"),
        (None, "negative/trustee-milan-vcek.wrong-vcek.der", EvidenceSignatureError, "report"),
        (None, "negative/fake-vcek-not-amd-signed.der", EvidenceSignatureError, "SEV-VCEK"),
    ],
)
def test_negative_vectors_are_rejected(
    report_file: str | None, vek_file: str | None, error: type[EvidenceError], match: str
) -> None:
    """Every SNP negative fails with its kind of error (signature, chain, format)."""
    report = read_bytes(SNP, report_file or f"{BASE}.report.bin")
    vek = read_bytes(SNP, vek_file or f"{BASE}.vcek.der")
    with pytest.raises(error, match=match):
        verify_snp_report(report, vek, anchors=pinned_anchors(), now=WHEN)


@requires_evidence
def test_vcek_for_a_vlek_report_fails_the_chain() -> None:
    """A VLEK-signed report must chain through the ASVK, so a VCEK cannot stand in."""
    vlek = vector("trustee-milan-vlek")
    vcek = read_bytes(SNP, f"{BASE}.vcek.der")
    with pytest.raises(EvidenceSignatureError, match="names issuer"):
        verify_snp_report(vlek.report, vcek, anchors=pinned_anchors(), now=WHEN)


@requires_evidence
def test_vek_of_another_product_is_rejected() -> None:
    """A Turin VCEK with a Milan v3 report fails on the CPUID family cross-check."""
    milan = vector("oak-milan-oc-release")
    turin = read_bytes(SNP, "oak-turin.vcek.der")
    with pytest.raises(CollateralError, match="family"):
        verify_snp_report(milan.report, turin, anchors=pinned_anchors(), now=WHEN)


@requires_evidence
def test_missing_pinned_root_is_collateral_error() -> None:
    """Without the product's pinned ASK the verifier refuses, naming it."""
    v = vector(BASE)
    anchors = TrustAnchors(pem={"amd-milan-ark": pinned_anchors().get("amd-milan-ark")})
    with pytest.raises(CollateralError, match="amd-milan-ask"):
        verify_snp_report(v.report, v.vek, anchors=anchors, now=WHEN)


@requires_evidence
def test_swapped_pinned_roots_fail_the_chain() -> None:
    """Genoa roots filed under the Milan names do not verify a Milan VCEK."""
    v = vector(BASE)
    genoa = pinned_anchors()
    anchors = TrustAnchors(
        pem={
            "amd-milan-ark": genoa.get("amd-genoa-ark"),
            "amd-milan-ask": genoa.get("amd-genoa-ask"),
        }
    )
    with pytest.raises(EvidenceSignatureError):
        verify_snp_report(v.report, v.vek, anchors=anchors, now=WHEN)


# --- parsing ------------------------------------------------------------------------


def patched(report: bytes, offset: int, value: bytes) -> bytes:
    return report[:offset] + value + report[offset + len(value) :]


@requires_evidence
def test_report_parses_named_fields() -> None:
    """from_bytes exposes the ABI fields at their offsets."""
    report = SNPReport.from_bytes(read_bytes(SNP, f"{BASE}.report.bin"))
    assert (report.version, report.guest_svn, report.vmpl, report.signing_key) == (2, 4, 0, 0)
    assert report.policy == 0x3001F
    assert report.current_fw == (1, 52, 4)
    assert report.signed_bytes == report.raw[:0x2A0]
    assert "raw=" not in repr(report)


@requires_evidence
@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [
        (0x000, (4).to_bytes(4, "little"), "VERSION"),
        (0x000, (1).to_bytes(4, "little"), "VERSION"),
        (0x034, (2).to_bytes(4, "little"), "SIGNATURE_ALGO"),
        (0x030, (4).to_bytes(4, "little"), "VMPL"),
        (0x048, (3 << 2).to_bytes(4, "little"), "SIGNING_KEY"),
        (0x2A0 + 50, b"\x01", "signature area"),
        (0x2E8 + 71, b"\x01", "signature area"),
        (0x49F, b"\x01", "signature area"),
    ],
)
def test_malformed_fields_are_format_errors(offset: int, value: bytes, match: str) -> None:
    """Unsupported or out-of-range fields raise EvidenceFormatError naming the field."""
    report = patched(read_bytes(SNP, f"{BASE}.report.bin"), offset, value)
    with pytest.raises(EvidenceFormatError, match=match):
        SNPReport.from_bytes(report)


@pytest.mark.parametrize("size", [0, REPORT_SIZE - 1, REPORT_SIZE + 1])
def test_wrong_size_is_a_format_error(size: int) -> None:
    """Only exactly 1184 bytes parse."""
    with pytest.raises(EvidenceFormatError, match="1184"):
        SNPReport.from_bytes(bytes(size))


@requires_evidence
def test_unsigned_report_is_refused() -> None:
    """SIGNING_KEY "none" means no signature: refuse before any crypto."""
    v = vector(BASE)
    report = patched(v.report, 0x048, (7 << 2).to_bytes(4, "little"))
    with pytest.raises(EvidenceSignatureError, match="not signed"):
        verify_snp_report(report, v.vek, anchors=pinned_anchors(), now=WHEN)


def test_tcb_layout_differs_on_turin() -> None:
    """Milan/Genoa and Turin read the same 8 bytes differently."""
    raw = bytes([1, 2, 3, 4, 5, 6, 7, 8])
    assert decode_tcb(raw, Product.MILAN) == TCBVersion(bootloader=1, tee=2, snp=7, microcode=8)
    assert decode_tcb(raw, Product.GENOA) == decode_tcb(raw, Product.MILAN)
    turin = decode_tcb(raw, Product.TURIN)
    assert turin == TCBVersion(bootloader=2, tee=3, snp=4, microcode=8, fmc=1)
    assert turin.to_dict() == {"fmc": 1, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 8}
    with pytest.raises(EvidenceFormatError):
        decode_tcb(raw[:7], Product.MILAN)


# --- synthetic chain: VEK binding and CRLs --------------------------------------------

_AMD = "1.3.6.1.4.1.3704.1"


def amd_ext(suffix: str, der: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{_AMD}.{suffix}"), der)


def spl(value: int) -> bytes:
    return bytes([0x02, 0x01, value])


@dataclass(frozen=True)
class Synthetic:
    report: bytes
    vek: bytes
    anchors: TrustAnchors
    ask_serial: int


def synthetic(
    *,
    tcb: tuple[int, int, int, int] = (3, 0, 8, 115),
    hwid: bytes | None = None,
    product: bytes = b"Milan-B0",
    key: ec.EllipticCurvePrivateKey | None = None,
) -> Synthetic:
    """The trustee Milan report re-signed by a test VCEK under a test ARK/ASK."""
    base = read_bytes(SNP, f"{BASE}.report.bin")
    report = SNPReport.from_bytes(base)
    vek_key = key or ec_key("vek")
    extensions = [
        amd_ext("2", bytes([0x16, len(product)]) + product),
        *(amd_ext(f"3.{n}", spl(v)) for n, v in zip((1, 2, 3, 8), tcb, strict=True)),
        amd_ext("4", report.chip_id if hwid is None else hwid),
    ]
    ark = make_cert("Test ARK-Milan", rsa_key("ark"))
    ask = make_cert(
        "Test SEV-Milan",
        rsa_key("ask"),
        issuer="Test ARK-Milan",
        issuer_key=rsa_key("ark"),
        serial=7,
    )
    vek = make_cert(
        "Test SEV-VCEK",
        vek_key,
        issuer="Test SEV-Milan",
        issuer_key=rsa_key("ask"),
        ca=False,
        extensions=extensions,
    )
    signature = vek_key.sign(base[:0x2A0], ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(signature)
    signed = base[:0x2A0] + r.to_bytes(72, "little") + s.to_bytes(72, "little") + base[0x330:]
    pem = serialization.Encoding.PEM
    anchors = TrustAnchors(
        pem={"amd-milan-ark": ark.public_bytes(pem), "amd-milan-ask": ask.public_bytes(pem)}
    )
    return Synthetic(signed, vek.public_bytes(serialization.Encoding.DER), anchors, 7)


@requires_evidence
def test_synthetic_chain_verifies() -> None:
    """A report re-signed under a consistent test chain verifies (the harness is sound)."""
    s = synthetic()
    result = verify_snp_report(s.report, s.vek, anchors=s.anchors, now=WHEN)
    assert result.claims["reported_tcb"] == {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


@requires_evidence
@pytest.mark.parametrize("tcb", [(3, 0, 8, 116), (2, 0, 8, 115), (3, 1, 8, 115), (3, 0, 9, 115)])
def test_vek_tcb_must_equal_reported_tcb(tcb: tuple[int, int, int, int]) -> None:
    """A VEK certifying any other TCB than REPORTED_TCB is refused."""
    s = synthetic(tcb=tcb)
    with pytest.raises(CollateralError, match="REPORTED_TCB"):
        verify_snp_report(s.report, s.vek, anchors=s.anchors, now=WHEN)


@requires_evidence
def test_vcek_hwid_must_equal_chip_id() -> None:
    """A VCEK for another chip is refused even if its key signed the report."""
    s = synthetic(hwid=bytes(range(64)))
    with pytest.raises(CollateralError, match="CHIP_ID"):
        verify_snp_report(s.report, s.vek, anchors=s.anchors, now=WHEN)


@requires_evidence
def test_der_wrapped_hwid_is_accepted() -> None:
    """KDS's DER OCTET STRING form of hwID matches like the raw form."""
    chip = SNPReport.from_bytes(read_bytes(SNP, f"{BASE}.report.bin")).chip_id
    s = synthetic(hwid=bytes([0x04, 0x40]) + chip)
    verify_snp_report(s.report, s.vek, anchors=s.anchors, now=WHEN)


@requires_evidence
def test_unknown_product_is_refused() -> None:
    """A VEK for a product without pinned roots is collateral we cannot use."""
    s = synthetic(product=b"Naples")
    with pytest.raises(CollateralError, match="Naples"):
        verify_snp_report(s.report, s.vek, anchors=s.anchors, now=WHEN)


@requires_evidence
def test_non_p384_vek_is_refused() -> None:
    """The report signature is P-384 only."""
    s = synthetic(key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(EvidenceSignatureError, match="P-384"):
        verify_snp_report(s.report, s.vek, anchors=s.anchors, now=WHEN)


@requires_evidence
def test_revoked_ask_fails_with_crl() -> None:
    """A current ARK-signed CRL listing the ASK fails verification."""
    s = synthetic()
    crl = make_crl("Test ARK-Milan", rsa_key("ark"), [s.ask_serial])
    der = crl.public_bytes(serialization.Encoding.DER)
    with pytest.raises(CollateralError, match="revoked"):
        verify_snp_report(s.report, s.vek, anchors=s.anchors, now=WHEN, crls=[der])
    clean = make_crl("Test ARK-Milan", rsa_key("ark"), [99]).public_bytes(
        serialization.Encoding.DER
    )
    verify_snp_report(s.report, s.vek, anchors=s.anchors, now=WHEN, crls=[clean])


# --- SNPVerifier (KBS evidence) ---------------------------------------------------------


@requires_evidence
def test_registry_returns_snp_verifier() -> None:
    """The registry maps sev-snp to this verifier."""
    assert isinstance(get_verifier("sev-snp"), SNPVerifier)
    assert SNPVerifier.tee == "sev-snp"


@requires_evidence
def test_verifier_accepts_report_and_vcek_form() -> None:
    """{"report", "vcek"} with base64 DER verifies; digest covers the raw report."""
    v = vector(BASE)
    claims = SNPVerifier().verify({"report": b64(v.report), "vcek": b64(v.vek)}, ctx())
    assert claims.tee == "sev-snp"
    assert dict(claims.claims) == v.data["claims"]
    assert claims.evidence_digest == evidence_digest(v.report)


@requires_evidence
def test_verifier_accepts_url_safe_base64() -> None:
    """URL-safe base64 without padding decodes to the same report."""
    v = vector(BASE)
    report = base64.urlsafe_b64encode(v.report).decode().rstrip("=")
    claims = SNPVerifier().verify({"report": report, "vcek": b64(v.vek)}, ctx())
    assert claims.evidence_digest == evidence_digest(v.report)


@requires_evidence
def test_verifier_accepts_pem_vcek_and_json_text() -> None:
    """A PEM VCEK and evidence sent as JSON text are accepted."""
    v = vector(BASE)
    pem = x509.load_der_x509_certificate(v.vek).public_bytes(serialization.Encoding.PEM)
    evidence = json.dumps({"report": b64(v.report), "vcek": pem.decode()})
    SNPVerifier().verify(evidence, ctx())


@requires_evidence
@pytest.mark.parametrize("as_list", [True, False])
def test_verifier_accepts_trustee_cert_chain_form(as_list: bool) -> None:
    """Trustee's {attestation_report, cert_chain:[{cert_type, data}]} form verifies (VLEK)."""
    v = vector("trustee-milan-vlek")

    def enc(data: bytes) -> object:
        return list(data) if as_list else b64(data)

    evidence = {
        "attestation_report": enc(v.report),
        "cert_chain": [
            {"cert_type": "ARK", "data": enc(b"ignored")},
            {"cert_type": "VLEK", "data": enc(v.vek)},
        ],
    }
    claims = SNPVerifier().verify(evidence, ctx())
    assert claims.claims["signing_key"] == "VLEK"
    assert claims.flags["vmpl_nonzero"]


def serde_form(raw: bytes) -> dict[str, Any]:
    """Trustee's (virtee/sev serde) field object for a raw Milan report."""

    def u(offset: int, size: int) -> int:
        return int.from_bytes(raw[offset : offset + size], "little")

    def arr(offset: int, size: int) -> list[int]:
        return list(raw[offset : offset + size])

    def tcb(offset: int) -> dict[str, Any]:
        t = raw[offset : offset + 8]
        return {
            "bootloader": t[0],
            "tee": t[1],
            "_reserved": list(t[2:6]),
            "snp": t[6],
            "microcode": t[7],
        }

    return {
        "version": u(0, 4), "guest_svn": u(4, 4), "policy": u(8, 8),
        "family_id": arr(0x10, 16), "image_id": arr(0x20, 16), "vmpl": u(0x30, 4),
        "sig_algo": u(0x34, 4), "current_tcb": tcb(0x38), "plat_info": u(0x40, 8),
        "_author_key_en": u(0x48, 4), "_reserved_0": u(0x4C, 4),
        "report_data": arr(0x50, 64), "measurement": arr(0x90, 48), "host_data": arr(0xC0, 32),
        "id_key_digest": arr(0xE0, 48), "author_key_digest": arr(0x110, 48),
        "report_id": arr(0x140, 32), "report_id_ma": arr(0x160, 32), "reported_tcb": tcb(0x180),
        "_reserved_1": arr(0x188, 24), "chip_id": arr(0x1A0, 64), "committed_tcb": tcb(0x1E0),
        "current_build": raw[0x1E8], "current_minor": raw[0x1E9], "current_major": raw[0x1EA],
        "_reserved_2": raw[0x1EB], "committed_build": raw[0x1EC], "committed_minor": raw[0x1ED],
        "committed_major": raw[0x1EE], "_reserved_3": raw[0x1EF], "launch_tcb": tcb(0x1F0),
        "_reserved_4": arr(0x1F8, 168),
        "signature": {"r": arr(0x2A0, 72), "s": arr(0x2E8, 72), "_reserved": arr(0x330, 368)},
    }  # fmt: skip


@requires_evidence
@pytest.mark.parametrize("vector_id", ["trustee-milan-vcek", "oak-milan-oc-release"])
def test_verifier_accepts_trustee_field_object(vector_id: str) -> None:
    """Trustee's attestation_report field object rebuilds the signed bytes exactly."""
    v = vector(vector_id)
    evidence = {
        "attestation_report": serde_form(v.report),
        "cert_chain": [{"cert_type": "VCEK", "data": list(v.vek)}],
    }
    claims = SNPVerifier().verify(evidence, ctx())
    assert dict(claims.claims) == v.data["claims"]
    assert claims.evidence_digest == evidence_digest(v.report)


@requires_evidence
def test_trustee_field_object_with_changed_field_fails() -> None:
    """Editing a field of the object breaks the report signature."""
    v = vector(BASE)
    form = serde_form(v.report)
    form["vmpl"] = 1
    evidence = {"attestation_report": form, "vcek": b64(v.vek)}
    with pytest.raises(EvidenceSignatureError):
        SNPVerifier().verify(evidence, ctx())


@requires_evidence
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("measurement", [0] * 47),
        ("policy", -1),
        ("vmpl", True),
        ("reported_tcb", 3),
        ("signature", None),
    ],
)
def test_trustee_field_object_rejects_bad_fields(field: str, value: object) -> None:
    """Missing or ill-typed fields raise EvidenceFormatError naming them."""
    v = vector(BASE)
    form = serde_form(v.report)
    if value is None:
        del form[field]
    else:
        form[field] = value
    with pytest.raises(EvidenceFormatError, match=field):
        SNPVerifier().verify({"attestation_report": form, "vcek": b64(v.vek)}, ctx())


@requires_evidence
def test_verifier_falls_back_to_collateral_vcek() -> None:
    """Without a VEK in the evidence, ctx.collateral["vcek"] is used."""
    v = vector(BASE)
    SNPVerifier().verify({"report": b64(v.report)}, ctx(collateral={"vcek": v.vek}))


@requires_evidence
def test_verifier_without_any_vek_is_collateral_error() -> None:
    """No VEK anywhere: CollateralError."""
    v = vector(BASE)
    with pytest.raises(CollateralError, match="no VCEK"):
        SNPVerifier().verify({"report": b64(v.report), "cert_chain": []}, ctx())


@requires_evidence
def test_verifier_binds_report_data() -> None:
    """With an expectation, REPORT_DATA must equal it; equal passes."""
    v = vector(BASE)
    actual = SNPReport.from_bytes(v.report).report_data
    evidence = {"report": b64(v.report), "vcek": b64(v.vek)}
    SNPVerifier().verify(evidence, ctx(expect=expectation(actual)))
    other = bytes(48).ljust(REPORT_DATA_SIZE, b"\0")
    with pytest.raises(FreshnessError):
        SNPVerifier().verify(evidence, ctx(expect=expectation(other)))


@requires_evidence
def test_modified_report_data_fails_binding_or_signature() -> None:
    """Rewriting REPORT_DATA to the expected value breaks the signature."""
    v = vector(BASE)
    wanted = bytes(range(64))
    forged = patched(v.report, 0x050, wanted)
    evidence = {"report": b64(forged), "vcek": b64(v.vek)}
    with pytest.raises(EvidenceSignatureError):
        SNPVerifier().verify(evidence, ctx(expect=expectation(wanted)))


@pytest.mark.parametrize(
    "evidence",
    [
        None,
        [],
        "not json",
        {},
        {"report": 5},
        {"report": "!!!not base64!!!"},
        {"report": [256]},
        {"attestation_report": {"version": 2}},
        {"attestation_report": {"version": 2}, "vcek": "AAAA"},
        {"report": "AAAA", "cert_chain": "x"},
        {"report": "AAAA", "cert_chain": [{"cert_type": "VCEK"}, {"cert_type": "VLEK"}]},
    ],
)
def test_verifier_rejects_malformed_evidence(evidence: object) -> None:
    """Malformed evidence shapes raise EvidenceFormatError."""
    with pytest.raises(EvidenceFormatError):
        SNPVerifier().verify(evidence, ctx())
