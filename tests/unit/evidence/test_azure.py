"""Azure vTPM evidence (az-snp-vtpm, az-tdx-vtpm) against the real vectors."""

from __future__ import annotations

import base64
import contextlib
import json
import struct
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import (
    CollateralError,
    EvidenceError,
    EvidenceFormatError,
    EvidenceSignatureError,
    FreshnessError,
)
from broker.evidence import get_verifier
from broker.evidence.azure import (
    AzureSNPVTPMVerifier,
    AzureTDXVTPMVerifier,
    verify_az_snp_vtpm,
    verify_az_tdx_vtpm,
)
from broker.evidence.azure_hcl import IGVM_OFFSET, AzureEvidence, HCLReport
from broker.evidence.model import Expectation, TrustAnchors, VerifyContext
from tests.vectors import (
    expected,
    parse_time,
    read_bytes,
    requires_evidence,
    vector_ids,
    vector_path,
)

pytestmark = requires_evidence

TEE_DIR = "azure-vtpm"
IDS = vector_ids(TEE_DIR)


def _anchors() -> TrustAnchors:
    return TrustAnchors(pem={p.stem: p.read_bytes() for p in vector_path("roots").glob("*.pem")})


def _evidence(vector_id: str) -> bytes:
    return read_bytes(TEE_DIR, expected(TEE_DIR, vector_id)["files"]["evidence"])


def _verify(vector_id: str, evidence: Any = None, **kwargs: Any) -> Any:
    exp = expected(TEE_DIR, vector_id)
    evidence = _evidence(vector_id) if evidence is None else evidence
    kwargs.setdefault("now", parse_time(exp["verification_time"]))
    if "collateral" in exp["files"]:
        collateral = read_bytes(TEE_DIR, exp["files"]["collateral"])
        return verify_az_tdx_vtpm(evidence, collateral, anchors=_anchors(), **kwargs)
    return verify_az_snp_vtpm(evidence, anchors=_anchors(), **kwargs)


def _hcl(vector_id: str) -> bytes:
    doc = json.loads(_evidence(vector_id))
    if "report" in doc:
        return bytes(doc["report"])
    text = doc["hcl_report"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.mark.parametrize("vector_id", IDS)
def test_vector_verifies_with_expected_claims(vector_id: str) -> None:
    """Every positive vector verifies at its time with exactly the expected claims."""
    result = _verify(vector_id)
    exp = expected(TEE_DIR, vector_id)
    assert result.claims == exp["claims"]
    assert result.flags["debug"] is exp["expected"]["debug"]


@pytest.mark.parametrize("vector_id", IDS)
@pytest.mark.parametrize("side", ["before", "after"])
def test_vector_fails_outside_time_window(vector_id: str, side: str) -> None:
    """Outside the VCEK or collateral window the evidence is refused."""
    start, end = (parse_time(t) for t in expected(TEE_DIR, vector_id)["time_window"])
    now = start - timedelta(seconds=1) if side == "before" else end + timedelta(seconds=1)
    with pytest.raises(EvidenceError):
        _verify(vector_id, now=now)


@pytest.mark.parametrize(
    "name",
    [
        "az-snp-vtpm-v2.tpm-sigflip.evidence.json",
        "az-snp-vtpm-v2.pcr7-changed.evidence.json",
        "az-snp-vtpm-v2.runtime-data-changed.evidence.json",
    ],
)
def test_negatives_rejected(name: str) -> None:
    """A flipped TPM signature, a changed PCR or edited runtime data is refused."""
    evidence = read_bytes(TEE_DIR, "negative", name)
    with pytest.raises(EvidenceSignatureError):
        _verify("az-snp-vtpm-v2", evidence)


def test_runtime_data_change_caught_by_report_data() -> None:
    """Edited runtime data fails on the REPORT_DATA binding, not elsewhere."""
    evidence = read_bytes(TEE_DIR, "negative", "az-snp-vtpm-v2.runtime-data-changed.evidence.json")
    with pytest.raises(EvidenceSignatureError, match="REPORT_DATA"):
        _verify("az-snp-vtpm-v2", evidence)


@pytest.mark.parametrize("vector_id", IDS)
def test_expected_nonce_checked(vector_id: str) -> None:
    """extraData must equal the expected nonce when one is given."""
    nonce = bytes.fromhex(expected(TEE_DIR, vector_id)["claims"]["tpm_nonce_hex"])
    assert _verify(vector_id, expected_nonce=nonce).tpm_nonce == nonce
    with pytest.raises(FreshnessError):
        _verify(vector_id, expected_nonce=nonce[:-1] + bytes([nonce[-1] ^ 1]))


def test_hcl_report_parses() -> None:
    """HCLReport exposes the hardware part, runtime data and HCLAkPub."""
    hcl = HCLReport.from_bytes(_hcl("az-snp-vtpm-v2"))
    claims = expected(TEE_DIR, "az-snp-vtpm-v2")["claims"]
    assert hcl.report_type == 2
    assert len(hcl.hw_report) == 1184
    assert hcl.runtime_claims == claims["runtime_data"]
    assert hcl.ak_jwk["kid"] == "HCLAkPub"
    assert hcl.runtime_digest.hex() == claims["snp"]["report_data"][:64]


def _patched(data: bytes, offset: int, value: int) -> bytes:
    return data[:offset] + struct.pack("<I", value) + data[offset + 4 :]


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: b"XCLA" + d[4:], "HCLA"),
        (lambda d: _patched(d, 8, 1), "size"),
        (lambda d: _patched(d, IGVM_OFFSET, 1), "size"),
        (lambda d: _patched(d, IGVM_OFFSET + 8, 3), "neither"),
        (lambda d: _patched(d, IGVM_OFFSET + 12, 2), "SHA-256"),
        (lambda d: d[:1000], "size"),
    ],
    ids=["magic", "report-size", "data-size", "report-type", "hash-type", "truncated"],
)
def test_malformed_hcl_report_rejected(edit: Any, match: str) -> None:
    """Structural defects of the HCL report are format errors."""
    with pytest.raises(EvidenceFormatError, match=match):
        HCLReport.from_bytes(edit(_hcl("az-snp-vtpm-v2")))


def test_runtime_data_without_ak_rejected() -> None:
    """Runtime data with no HCLAkPub cannot anchor the TPM quote."""
    data = bytearray(_hcl("az-snp-vtpm-v2"))
    start = IGVM_OFFSET + 20
    pos = data.index(b"HCLAkPub", start)
    data[pos : pos + 8] = b"HCLXkPub"
    with pytest.raises(EvidenceFormatError, match="HCLAkPub"):
        HCLReport.from_bytes(bytes(data))


def test_wrong_hardware_kind_rejected() -> None:
    """An SNP HCL report is not accepted as az-tdx-vtpm evidence, and vice versa."""
    tdx = json.loads(_evidence("az-tdx-vtpm"))
    snp = json.loads(_evidence("az-snp-vtpm-v2"))
    with pytest.raises(EvidenceFormatError):
        _verify("az-snp-vtpm-v2", json.dumps({**snp, "hcl_report": tdx["hcl_report"]}))
    with pytest.raises(EvidenceFormatError):
        _verify("az-tdx-vtpm", json.dumps({**tdx, "hcl_report": snp["hcl_report"]}))


@pytest.mark.parametrize(
    "text",
    [
        b"[]",
        b"not json",
        b'{"version": 3, "tpm_quote": {}}',
        b'{"version": 1, "version": 2}',
        b'{"version": 1, "tpm_quote": {"pcrs": []}, "hcl_report": 5}',
        b'{"version": 1, "tpm_quote": {"pcrs": [], "message": "zz"}, "hcl_report": "AA"}',
        b'{"quote": {"pcrs": [], "message": [256]}, "report": [1]}',
    ],
    ids=["array", "junk", "version", "duplicate", "hcl-type", "hex", "byte-range"],
)
def test_malformed_evidence_json_rejected(text: bytes) -> None:
    """Evidence JSON of no supported layout is a format error."""
    with pytest.raises(EvidenceFormatError):
        AzureEvidence.from_json(text)


def test_legacy_and_versioned_layouts_decode() -> None:
    """Version 0 byte arrays (PEM VCEK) and version 2 text fields both decode."""
    legacy = AzureEvidence.from_json(_evidence("az-snp-vtpm-genoa"))
    current = AzureEvidence.from_json(_evidence("az-snp-vtpm-v2"))
    assert (legacy.version, current.version) == (0, 2)
    assert legacy.vcek is not None
    assert legacy.vcek[:1] == b"\x30"
    assert current.vcek is not None
    assert current.vcek[:1] == b"\x30"


# --- KBS verifiers ---


def _ctx(vector_id: str, expect: Expectation | None = None, **extra: Any) -> VerifyContext:
    exp = expected(TEE_DIR, vector_id)
    collateral = {}
    if "collateral" in exp["files"]:
        collateral["dcap"] = read_bytes(TEE_DIR, exp["files"]["collateral"])
    return VerifyContext(
        now=parse_time(exp["verification_time"]),
        anchors=_anchors(),
        expect=expect,
        collateral={**collateral, **extra},
    )


def _expect_for(vector_id: str, *, report_data: bytes | None = None) -> Expectation:
    claims = expected(TEE_DIR, vector_id)["claims"]
    nonce = bytes.fromhex(claims["tpm_nonce_hex"])
    user_data = bytes.fromhex(claims["runtime_data"]["user-data"])
    return Expectation(
        report_data=user_data if report_data is None else report_data,
        nonce=b"raw nonce",
        runtime_digest=nonce,
    )


def test_registry_returns_azure_verifiers() -> None:
    """The registry maps both Azure tees to their verifiers."""
    assert isinstance(get_verifier("az-snp-vtpm"), AzureSNPVTPMVerifier)
    assert isinstance(get_verifier("az-tdx-vtpm"), AzureTDXVTPMVerifier)


@pytest.mark.parametrize("vector_id", IDS)
def test_verifier_without_expectation(vector_id: str) -> None:
    """Offline KBS verification accepts the decoded JSON object."""
    verifier = AzureTDXVTPMVerifier() if "tdx" in vector_id else AzureSNPVTPMVerifier()
    claims = verifier.verify(json.loads(_evidence(vector_id)), _ctx(vector_id))
    assert claims.tee == verifier.tee
    assert claims.claims == expected(TEE_DIR, vector_id)["claims"]


@pytest.mark.parametrize("vector_id", IDS)
def test_verifier_binds_extra_data_to_runtime_digest(vector_id: str) -> None:
    """extraData == expect.runtime_digest verifies; anything else is a FreshnessError."""
    verifier = AzureTDXVTPMVerifier() if "tdx" in vector_id else AzureSNPVTPMVerifier()
    evidence = json.loads(_evidence(vector_id))
    verifier.verify(evidence, _ctx(vector_id, _expect_for(vector_id)))
    wrong = Expectation(report_data=b"\0" * 64, nonce=b"x", runtime_digest=b"\1" * 48)
    with pytest.raises(FreshnessError):
        verifier.verify(evidence, _ctx(vector_id, wrong))


def test_verifier_v2_requires_user_data_binding() -> None:
    """Version 2 evidence must also mirror the report data in runtime user-data."""
    expect = _expect_for("az-snp-vtpm-v2", report_data=b"\7" * 64)
    with pytest.raises(FreshnessError, match="user-data"):
        AzureSNPVTPMVerifier().verify(
            json.loads(_evidence("az-snp-vtpm-v2")), _ctx("az-snp-vtpm-v2", expect)
        )


def test_raw_nonce_alone_is_not_a_binding() -> None:
    """An extraData equal to the raw nonce but not the digest is refused."""
    claims = expected(TEE_DIR, "az-tdx-vtpm")["claims"]
    nonce = bytes.fromhex(claims["tpm_nonce_hex"])
    expect = Expectation(report_data=b"\0" * 64, nonce=nonce, runtime_digest=b"\1" * 48)
    with pytest.raises(FreshnessError):
        AzureTDXVTPMVerifier().verify(
            json.loads(_evidence("az-tdx-vtpm")), _ctx("az-tdx-vtpm", expect)
        )


def test_tdx_verifier_needs_collateral() -> None:
    """Without DCAP collateral the TD quote cannot be checked."""
    ctx = VerifyContext(now=_ctx("az-tdx-vtpm").now, anchors=_anchors())
    with pytest.raises(CollateralError):
        AzureTDXVTPMVerifier().verify(json.loads(_evidence("az-tdx-vtpm")), ctx)


@pytest.mark.parametrize("evidence", [None, 5, ["x"]])
def test_verifier_rejects_wrong_shapes(evidence: object) -> None:
    """Evidence that is not a JSON object is a format error."""
    with pytest.raises(EvidenceFormatError):
        AzureSNPVTPMVerifier().verify(evidence, _ctx("az-snp-vtpm-v2"))


def test_verifier_enforces_size_limit() -> None:
    """Evidence above max_evidence_bytes is refused."""
    ctx = VerifyContext(now=_ctx("az-snp-vtpm-v2").now, anchors=_anchors(), max_evidence_bytes=100)
    with pytest.raises(EvidenceFormatError, match="too large"):
        AzureSNPVTPMVerifier().verify(json.loads(_evidence("az-snp-vtpm-v2")), ctx)


# --- properties ---


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_hcl_parser_raises_only_format_errors(data: bytes) -> None:
    """HCLReport.from_bytes raises nothing but EvidenceFormatError on junk."""
    with contextlib.suppress(EvidenceFormatError):
        HCLReport.from_bytes(data)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_signed_region_mutations_never_verify(data: st.DataObject) -> None:
    """One changed byte in the SNP report or the runtime data never verifies."""
    doc = json.loads(_evidence("az-snp-vtpm-v2"))
    hcl = bytearray(_hcl("az-snp-vtpm-v2"))
    var_size = struct.unpack_from("<I", hcl, IGVM_OFFSET + 16)[0]
    region = st.one_of(
        st.integers(min_value=32, max_value=32 + 1183),
        st.integers(min_value=IGVM_OFFSET + 20, max_value=IGVM_OFFSET + 19 + var_size),
    )
    index = data.draw(region, label="index")
    hcl[index] ^= data.draw(st.integers(min_value=1, max_value=255), label="mask")
    doc["hcl_report"] = base64.urlsafe_b64encode(bytes(hcl)).decode()
    try:
        _verify("az-snp-vtpm-v2", json.dumps(doc))
    except EvidenceError:
        return
    raise AssertionError(f"mutated HCL report verified (byte {index})")
