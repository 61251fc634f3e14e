"""collateral_request: the request derived from evidence names the file that holds its collateral."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.adapters.collateral import CachedCollateral
from broker.adapters.collateral import CollateralRequest as AdapterCollateralRequest
from broker.errors import (
    CollateralError,
    EvidenceError,
    EvidenceFormatError,
    EvidenceSignatureError,
)
from broker.evidence import get_verifier, pinned_anchors
from broker.evidence.azure_hcl import AzureEvidence
from broker.evidence.collateral import CollateralRequest, collateral_request
from broker.evidence.dcap_quote import DCAPQuote
from broker.evidence.model import VerifiedClaims, VerifyContext
from tests.fakes import FakeClock
from tests.vectors import expected, parse_time, read_bytes, requires_evidence, vector_ids

pytestmark = requires_evidence

SNP_IDS = vector_ids("sev-snp")
DCAP_IDS = [(tee, vid) for tee in ("tdx", "sgx") for vid in vector_ids(tee)]
AZ_SNP_IDS = [v for v in vector_ids("azure-vtpm") if v.startswith("az-snp-vtpm")]
TEES = ("sev-snp", "tdx", "sgx", "az-snp-vtpm", "az-tdx-vtpm", "nitro", "sample")
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ATTESTATION_REPORT offsets (AMD ABI spec, table "ATTESTATION_REPORT Structure").
VERSION, KEY_INFO, REPORTED_TCB, CPUID_FAM, CPUID_MOD, CHIP_ID = (
    0x000, 0x048, 0x180, 0x188, 0x189, 0x1A0,
)  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def put(path: Path, data: bytes, mtime: datetime) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


async def fetch(root: Path, req: CollateralRequest, now: datetime) -> dict[str, bytes]:
    source = CachedCollateral(root, max_age=timedelta(days=1), clock=FakeClock(now))
    return dict(await source.fetch(req))


def verify(
    tee: str, evidence: object, now: datetime, collateral: dict[str, bytes]
) -> VerifiedClaims:
    ctx = VerifyContext(now=now, anchors=pinned_anchors(), collateral=collateral)
    return get_verifier(tee).verify(evidence, ctx)


def require(req: CollateralRequest | None) -> CollateralRequest:
    assert req is not None
    return req


# --- SEV-SNP -----------------------------------------------------------------------


@dataclass(frozen=True)
class SNPVector:
    report: bytes
    vek: bytes
    vlek: bool
    product: str
    now: datetime
    claims: dict[str, Any]


def snp_vector(vector_id: str) -> SNPVector:
    data = expected("sev-snp", vector_id)
    files = data["files"]
    return SNPVector(
        report=read_bytes("sev-snp", files["report"]),
        vek=read_bytes("sev-snp", files.get("vcek") or files["vlek"]),
        vlek="vlek" in files,
        product=data["claims"]["vek_product_name_ext"].split("-")[0],
        now=parse_time(data["verification_time"]),
        claims=data["claims"],
    )


def documented_snp_path(root: Path, v: SNPVector) -> Path:
    """The file name as docs/evidence.md tells operators to build it from a report."""
    chip = bytes(64) if v.vlek else v.report[CHIP_ID : CHIP_ID + 64]
    tcb = v.report[REPORTED_TCB : REPORTED_TCB + 8]
    return root / "sev-snp" / v.product / f"{chip.hex()}-{tcb.hex()}.der"


@pytest.mark.parametrize("vector_id", SNP_IDS)
async def test_snp_request_names_the_vek_file(vector_id: str, tmp_path: Path) -> None:
    """Without its VEK, an SNP report's request finds the VEK in the cache, and it verifies."""
    v = snp_vector(vector_id)
    evidence = {"report": b64(v.report)}
    req = require(collateral_request("sev-snp", evidence))
    assert (req.tee, req.product) == ("sev-snp", v.product)
    put(documented_snp_path(tmp_path, v), v.vek, v.now)
    collateral = await fetch(tmp_path, req, v.now)
    assert collateral == {"vcek": v.vek}
    claims = verify("sev-snp", evidence, v.now, collateral)
    assert claims.claims["chip_id"] == v.report[CHIP_ID : CHIP_ID + 64].hex()


@pytest.mark.parametrize("vector_id", SNP_IDS)
def test_snp_evidence_with_its_vek_needs_nothing(vector_id: str) -> None:
    """A VEK in the evidence, in any accepted form, means no request."""
    v = snp_vector(vector_id)
    kind = "VLEK" if v.vlek else "VCEK"
    forms: list[dict[str, Any]] = [
        {"report": b64(v.report), kind.lower(): b64(v.vek)},
        {
            "attestation_report": list(v.report),
            "cert_chain": [{"cert_type": kind, "data": b64(v.vek)}],
        },
    ]
    for evidence in forms:
        assert collateral_request("sev-snp", evidence) is None
        assert collateral_request("snp", json.dumps(evidence)) is None


def test_alias_gives_the_same_request() -> None:
    """Trustee's tee name "snp" is the same as "sev-snp"."""
    evidence = {"report": b64(snp_vector("trustee-milan-vcek").report)}
    assert collateral_request("snp", evidence) == collateral_request("sev-snp", evidence)


def patched(report: bytes, **fields: int) -> dict[str, str]:
    data = bytearray(report)
    for name, value in fields.items():
        if name == "version":
            data[VERSION : VERSION + 4] = value.to_bytes(4, "little")
        elif name == "key_info":
            data[KEY_INFO : KEY_INFO + 4] = value.to_bytes(4, "little")
        elif name == "family":
            data[CPUID_FAM] = value
        elif name == "model":
            data[CPUID_MOD] = value
        elif name == "chip_byte":
            data[CHIP_ID] = value
        else:
            raise AssertionError(name)
    return {"report": b64(bytes(data))}


@pytest.mark.parametrize(
    ("family", "model", "product"),
    [
        (0x19, 0x01, "Milan"),
        (0x19, 0x0F, "Milan"),
        (0x19, 0x11, "Genoa"),
        (0x19, 0xA0, "Genoa"),
        (0x1A, 0x02, "Turin"),
        (0x1A, 0x11, "Turin"),
    ],
)
def test_snp_product_from_cpuid(family: int, model: int, product: str) -> None:
    """Report v3+ names its product through CPUID_FAM_ID and CPUID_MOD_ID."""
    report = snp_vector("oak-milan-oc-release").report
    req = require(collateral_request("sev-snp", patched(report, family=family, model=model)))
    assert req.product == product


@pytest.mark.parametrize(("family", "model"), [(0x19, 0x20), (0x1A, 0x12), (0x17, 0x31), (0, 0)])
def test_snp_unknown_cpu_is_a_collateral_error(family: int, model: int) -> None:
    """A CPU no product covers cannot name a VEK: the guest must send it."""
    report = snp_vector("oak-milan-oc-release").report
    with pytest.raises(CollateralError, match="no supported product"):
        collateral_request("sev-snp", patched(report, family=family, model=model))


def test_snp_v2_report_uses_the_legacy_product() -> None:
    """A v2 report has no CPUID fields: Milan unless the caller says otherwise."""
    evidence = {"report": b64(snp_vector("trustee-milan-vcek").report)}
    assert require(collateral_request("sev-snp", evidence)).product == "Milan"
    req = require(collateral_request("sev-snp", evidence, legacy_product="Genoa"))
    assert req.product == "Genoa"
    with pytest.raises(CollateralError, match="unknown SEV-SNP product"):
        collateral_request("sev-snp", evidence, legacy_product="Rome")


def test_snp_vlek_request_ignores_chip_id() -> None:
    """A VLEK is not chip-specific: the request names an all-zero chip_id."""
    v = snp_vector("trustee-milan-vlek")
    req = require(collateral_request("sev-snp", patched(v.report, chip_byte=0x5A)))
    assert req.chip_id == "0" * 128


def test_snp_masked_chip_id_with_vcek_is_a_collateral_error() -> None:
    """A VCEK-signed report with a zero CHIP_ID cannot name its VCEK."""
    v = snp_vector("trustee-milan-vcek")
    data = bytearray(v.report)
    data[CHIP_ID : CHIP_ID + 64] = bytes(64)
    with pytest.raises(CollateralError, match="CHIP_ID is masked"):
        collateral_request("sev-snp", {"report": b64(bytes(data))})


@pytest.mark.parametrize("key_info", [7 << 2, 1 << 1])
def test_snp_unsigned_report_is_refused(key_info: int) -> None:
    """SIGNING_KEY none or MASK_CHIP_KEY: no VEK could help, the verifier refuses it."""
    report = snp_vector("trustee-milan-vcek").report
    with pytest.raises(EvidenceSignatureError, match="not signed"):
        collateral_request("sev-snp", patched(report, key_info=key_info))


# --- TDX and SGX -------------------------------------------------------------------


def pck_ca_of(quote: bytes) -> str:
    """The PCK CA, read from the quote's certification data the way an operator would."""
    leaf = x509.load_pem_x509_certificates(DCAPQuote.from_bytes(quote).sig.pck_chain_pem)[0]
    cn = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    return {"Intel SGX PCK Processor CA": "processor", "Intel SGX PCK Platform CA": "platform"}[
        str(cn)
    ]


@pytest.mark.parametrize(("tee", "vector_id"), DCAP_IDS)
async def test_dcap_request_names_the_collateral_file(
    tee: str, vector_id: str, tmp_path: Path
) -> None:
    """A quote's request finds its collateral in the cache, fresh at the vector's time."""
    data = expected(tee, vector_id)
    quote = read_bytes(tee, data["files"]["quote"])
    collateral_json = read_bytes(tee, data["files"]["collateral"])
    now = parse_time(data["verification_time"])
    evidence = {"quote": b64(quote)}
    req = require(collateral_request(tee, evidence))
    fmspc = data["claims"]["fmspc"]
    assert (req.tee, req.fmspc, req.ca) == (tee, fmspc, pck_ca_of(quote))
    put(tmp_path / "dcap" / tee / f"{fmspc}-{req.ca}.json", collateral_json, now)
    collateral = await fetch(tmp_path, req, now)
    assert collateral == {"dcap": collateral_json}
    claims = verify(tee, evidence, now, collateral)
    assert claims.claims["fmspc"] == fmspc


@pytest.mark.parametrize(("tee", "vector_id"), DCAP_IDS)
def test_dcap_evidence_with_collateral_needs_nothing(tee: str, vector_id: str) -> None:
    """A "collateral" member in the evidence means no request."""
    data = expected(tee, vector_id)
    evidence = {
        "quote": b64(read_bytes(tee, data["files"]["quote"])),
        "collateral": json.loads(read_bytes(tee, data["files"]["collateral"])),
    }
    assert collateral_request(tee, evidence) is None


def test_dcap_quote_of_the_other_tee_is_refused() -> None:
    """An SGX quote is not TDX evidence (their TCB Infos differ)."""
    quote = read_bytes("sgx", "dcapqvl-sgx-config-swhardening.quote.bin")
    with pytest.raises(EvidenceFormatError, match="not a TDX quote"):
        collateral_request("tdx", {"quote": b64(quote)})


# --- Azure vTPM --------------------------------------------------------------------


@pytest.mark.parametrize("vector_id", AZ_SNP_IDS)
async def test_az_snp_vtpm_request_names_the_vcek_file(vector_id: str, tmp_path: Path) -> None:
    """az-snp-vtpm evidence without its VCEK finds it in the cache, and it verifies."""
    data = expected("azure-vtpm", vector_id)
    evidence = json.loads(read_bytes("azure-vtpm", data["files"]["evidence"]))
    now = parse_time(data["verification_time"])
    assert collateral_request("az-snp-vtpm", evidence) is None
    vcek = AzureEvidence.from_json(evidence).vcek
    assert vcek is not None
    without = {k: v for k, v in evidence.items() if k != "vcek"}
    req = require(collateral_request("azsnpvtpm", without))
    snp = data["claims"]["snp"]
    assert req.product == snp["vek_product_name_ext"].split("-")[0]
    assert req.chip_id == snp["chip_id"]
    put(tmp_path / "sev-snp" / req.product / f"{req.key}.der", vcek, now)
    collateral = await fetch(tmp_path, req, now)
    verify("az-snp-vtpm", without, now, collateral)


async def test_az_tdx_vtpm_request_names_the_collateral_file(tmp_path: Path) -> None:
    """az-tdx-vtpm always needs DCAP collateral for its td_quote; the request finds it."""
    data = expected("azure-vtpm", "az-tdx-vtpm")
    evidence = json.loads(read_bytes("azure-vtpm", data["files"]["evidence"]))
    collateral_json = read_bytes("azure-vtpm", data["files"]["collateral"])
    now = parse_time(data["verification_time"])
    req = require(collateral_request("az-tdx-vtpm", evidence))
    assert (req.tee, req.fmspc) == ("tdx", data["claims"]["tdx"]["fmspc"])
    put(tmp_path / "dcap" / "tdx" / f"{req.fmspc}-{req.ca}.json", collateral_json, now)
    collateral = await fetch(tmp_path, req, now)
    verify("az-tdx-vtpm", evidence, now, collateral)


def test_azure_hardware_kind_must_match() -> None:
    """SNP vTPM evidence is not TDX vTPM evidence."""
    evidence = json.loads(read_bytes("azure-vtpm", "az-snp-vtpm-v2.evidence.json"))
    with pytest.raises(EvidenceFormatError, match="TDREPORT"):
        collateral_request("az-tdx-vtpm", evidence)


# --- Other TEEs, names, shapes -----------------------------------------------------


@pytest.mark.parametrize("tee", ["nitro", "sample"])
@pytest.mark.parametrize("evidence", [{}, "x", None, {"report": "AA=="}])
def test_tees_without_collateral_need_nothing(tee: str, evidence: object) -> None:
    """Nitro and sample evidence never needs collateral."""
    assert collateral_request(tee, evidence) is None


def test_unknown_tee_is_refused() -> None:
    """An unknown tee is an error, never "nothing needed"."""
    with pytest.raises(EvidenceFormatError, match="unknown tee"):
        collateral_request("cca", {})


def test_request_class_is_shared_with_the_adapter() -> None:
    """The adapter module still exports the same CollateralRequest."""
    assert AdapterCollateralRequest is CollateralRequest


@pytest.mark.parametrize("tee", ["az-snp-vtpm", "az-tdx-vtpm", "sev-snp", "tdx", "sgx"])
def test_text_with_lone_surrogates_is_a_format_error(tee: str) -> None:
    """Evidence text that is not valid Unicode is refused as malformed."""
    with pytest.raises(EvidenceFormatError):
        collateral_request(tee, '{"a": "\ud800"}')
    with pytest.raises(EvidenceFormatError):
        collateral_request(tee, "\ud800")


# --- Properties ------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = (
    *("report", "attestation_report", "vcek", "cert_chain", "quote", "collateral"),
    *("hcl_report", "tpm_quote", "td_quote", "version"),
)
SHAPED = st.dictionaries(st.sampled_from(FIELDS), JSON | st.binary(max_size=64).map(b64))


def outcome(tee: str, evidence: object) -> None:
    try:
        req = collateral_request(tee, evidence)
    except EvidenceError:
        return
    assert req is None or isinstance(req, CollateralRequest)


@PROFILE
@given(tee=st.sampled_from(TEES), evidence=JSON | SHAPED)
def test_arbitrary_json_raises_only_evidence_errors(tee: str, evidence: object) -> None:
    """Any JSON value gives None, a request, or an EvidenceError subclass."""
    outcome(tee, evidence)
    outcome(tee, json.dumps(evidence))


@PROFILE
@given(data=st.data())
def test_mutated_reports_and_quotes_raise_only_evidence_errors(data: st.DataObject) -> None:
    """Real reports and quotes with bytes changed give a request or an EvidenceError."""
    tee, blob, field = data.draw(
        st.sampled_from(
            [
                ("sev-snp", read_bytes("sev-snp", "oak-turin.report.bin"), "report"),
                ("sev-snp", read_bytes("sev-snp", "trustee-milan-vlek.report.bin"), "report"),
                ("tdx", read_bytes("tdx", "dcapqvl-tdx-uptodate.quote.bin"), "quote"),
                ("sgx", read_bytes("sgx", "dcapqvl-sgx-config-swhardening.quote.bin"), "quote"),
            ]
        )
    )
    mutated = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(mutated) - 1))
        mutated[index] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(mutated)))
    outcome(tee, {field: b64(bytes(mutated))})
    outcome(tee, {field: b64(bytes(mutated[:cut]))})


@pytest.mark.parametrize("tee", ["az-snp-vtpm", "az-tdx-vtpm", "sev-snp", "tdx", "sgx"])
def test_deeply_nested_json_text_is_a_format_error(tee: str) -> None:
    """JSON text nested past the parser's recursion limit is malformed evidence."""
    with pytest.raises(EvidenceFormatError):
        collateral_request(tee, "[" * 100_000 + "]" * 100_000)
