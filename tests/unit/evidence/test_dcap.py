"""DCAP quote verification against the real TDX and SGX vectors."""

from __future__ import annotations

import base64
import json
import struct
from datetime import datetime, timedelta
from typing import Any

import pytest

from broker.errors import (
    CollateralError,
    EvidenceError,
    EvidenceFormatError,
    EvidenceSignatureError,
)
from broker.evidence.dcap import verify_quote
from broker.evidence.dcap_collateral import Collateral
from broker.evidence.dcap_quote import DCAPQuote
from broker.evidence.model import HardwareResult, TrustAnchors
from tests.vectors import expected, parse_time, read_bytes, requires_evidence, vector_ids

pytestmark = requires_evidence

VECTORS = [(tee, vid) for tee in ("tdx", "sgx") for vid in vector_ids(tee)]
UPTODATE = "dcapqvl-tdx-uptodate"
SGX_BASE = "dcapqvl-sgx-config-swhardening"


def anchors() -> TrustAnchors:
    return TrustAnchors(pem={"intel-sgx-root-ca": read_bytes("roots", "intel-sgx-root-ca.pem")})


def run(tee: str, vid: str, *, quote: bytes | None = None, collateral: bytes | None = None,
        now: datetime | None = None) -> HardwareResult:  # fmt: skip
    ex = expected(tee, vid)
    return verify_quote(
        quote if quote is not None else read_bytes(tee, f"{vid}.quote.bin"),
        collateral if collateral is not None else read_bytes(tee, f"{vid}.collateral.json"),
        anchors=anchors(),
        now=now or parse_time(ex["verification_time"]),
        tee=tee,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(("tee", "vid"), VECTORS)
def test_vector_claims_match_expected(tee: str, vid: str) -> None:
    """Every positive vector verifies at its time with exactly the expected claims."""
    ex = expected(tee, vid)
    result = run(tee, vid)
    for name, value in ex["claims"].items():
        assert result.claims[name] == value, name
    assert result.claims["tcb_status"] == ex["expected"]["tcb_status"]
    assert result.claims["advisory_ids"] == ex["expected"]["advisory_ids"]
    assert result.claims["qe_identity_status"] == ex["expected"]["qe_identity_status"]
    if tee == "tdx":
        assert result.claims["tdx_module_status"] == ex["expected"]["tdx_module_status"]
    assert result.flags["debug"] is ex["expected"]["debug"]
    assert result.report_data.hex() == ex["claims"]["report_data"]


@pytest.mark.parametrize(("tee", "vid"), VECTORS)
@pytest.mark.parametrize("side", ["before", "after"])
def test_vector_fails_outside_time_window(tee: str, vid: str, side: str) -> None:
    """Outside its time window every vector fails on stale collateral or expired certs."""
    start, end = (parse_time(t) for t in expected(tee, vid)["time_window"])
    when = start - timedelta(seconds=1) if side == "before" else end + timedelta(seconds=1)
    with pytest.raises((CollateralError, EvidenceSignatureError)):
        run(tee, vid, now=when)


@pytest.mark.parametrize(("tee", "vid"), VECTORS)
def test_vector_fails_today(tee: str, vid: str) -> None:
    """At the corpus date (late 2026) every DCAP vector must fail on time."""
    with pytest.raises((CollateralError, EvidenceSignatureError)):
        run(tee, vid, now=parse_time("2026-11-28T00:00:00Z"))


def test_policy_flags_of_the_refused_vectors() -> None:
    """Debug, no-match and out-of-date vectors verify but carry the flags a policy refuses."""
    assert run("tdx", "trustee-tdx-debug").flags["debug"]
    assert run("sgx", "occlum-sgx-debug").flags["debug"]
    nomatch = run("tdx", "dcapqvl-tdx-nomatch")
    assert nomatch.flags["tcb_no_match"]
    assert not nomatch.flags["tcb_up_to_date"]
    assert run("tdx", "trustee-tdx-outofdate").flags["tcb_out_of_date"]
    sgx = run("sgx", SGX_BASE).flags
    assert sgx["tcb_configuration_needed"]
    assert sgx["tcb_sw_hardening_needed"]
    clean = run("tdx", UPTODATE).flags
    assert clean["tcb_up_to_date"]
    assert not any(v for k, v in clean.items() if k != "tcb_up_to_date")


def test_gcp_quote_with_zero_padding_is_parsed_by_length() -> None:
    """The 8000-byte GCP buffer is sized from the signature length field."""
    raw = read_bytes("tdx", "gcp-cos-tdx-uptodate.quote.bin")
    assert len(raw) == 8000
    quote = DCAPQuote.from_bytes(raw)
    assert quote.version == 4
    assert quote.sig.pck_chain_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_v5_quote_body_type_3_is_parsed() -> None:
    """A v5 quote carries a TD report 1.5 after its body type and size."""
    quote = DCAPQuote.from_bytes(read_bytes("tdx", "dcapqvl-tdx-nomatch.quote.bin"))
    assert (quote.version, quote.body_type, len(quote.body)) == (5, 3, 648)
    assert "tee_tcb_svn2" in quote.report_claims()


def test_td_with_sept_ve_enabled_is_reported_not_refused() -> None:
    """The Azure td_quote (SEPT_VE_DISABLE=0), which dcap-qvl refuses, verifies with a flag."""
    evidence = json.loads(read_bytes("azure-vtpm", "az-tdx-vtpm.evidence.json"))
    text = evidence["td_quote"]
    quote = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    ex = expected("azure-vtpm", "az-tdx-vtpm")
    result = verify_quote(
        quote,
        read_bytes("azure-vtpm", "az-tdx-vtpm.collateral.json"),
        anchors=anchors(),
        now=parse_time(ex["verification_time"]),
        tee="tdx",
    )
    assert result.flags["sept_ve_enabled"]
    assert result.claims["sept_ve_disable"] is False
    assert result.claims["tcb_status"] == "OutOfDate"
    assert result.claims["advisory_ids"] == ["INTEL-SA-00960", "INTEL-SA-00982", "INTEL-SA-00986"]


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("dcapqvl-tdx-uptodate.sigflip.quote.bin", EvidenceSignatureError),
        ("dcapqvl-tdx-uptodate.mrtd-changed.quote.bin", EvidenceSignatureError),
        ("dcapqvl-tdx-uptodate.truncated.quote.bin", EvidenceFormatError),
    ],
)
def test_tdx_negative_quotes(name: str, error: type[EvidenceError]) -> None:
    """Each TDX negative quote is refused with the expected kind of error."""
    with pytest.raises(error):
        run("tdx", UPTODATE, quote=read_bytes("tdx", "negative", name))


def test_tdx_tampered_tcb_info_is_refused() -> None:
    """A TCB Info edited after Intel signed it fails its signature check."""
    tampered = read_bytes(
        "tdx", "negative", "dcapqvl-tdx-uptodate.tcbinfo-tampered.collateral.json"
    )
    with pytest.raises(CollateralError, match="TCB Info signature"):
        run("tdx", UPTODATE, collateral=tampered)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("dcapqvl-sgx.sigflip.quote.bin", EvidenceSignatureError),
        ("dcapqvl-sgx.mrenclave-changed.quote.bin", EvidenceSignatureError),
        ("dcapqvl-sgx.truncated.quote.bin", EvidenceFormatError),
    ],
)
def test_sgx_negative_quotes(name: str, error: type[EvidenceError]) -> None:
    """Each SGX negative quote is refused with the expected kind of error."""
    with pytest.raises(error):
        run("sgx", SGX_BASE, quote=read_bytes("sgx", "negative", name))


def test_collateral_of_another_platform_is_an_fmspc_mismatch() -> None:
    """A GCP quote with the collateral of another FMSPC, both current, fails on FMSPC."""
    other = "trustee-tdx-outofdate"
    with pytest.raises(CollateralError, match="FMSPC"):
        run(
            "tdx",
            "gcp-cos-tdx-uptodate",
            collateral=read_bytes("tdx", f"{other}.collateral.json"),
            now=parse_time(expected("tdx", other)["verification_time"]),
        )


@pytest.mark.parametrize(("tee", "vid"), VECTORS)
def test_every_foreign_collateral_is_refused(tee: str, vid: str) -> None:
    """A quote never verifies with the collateral of a vector of another FMSPC."""
    fmspc = expected(tee, vid)["claims"]["fmspc"]
    for other in vector_ids(tee):
        ex = expected(tee, other)
        if ex["claims"]["fmspc"] == fmspc:
            continue
        own = parse_time(expected(tee, vid)["verification_time"])
        for when in (parse_time(ex["verification_time"]), own):
            with pytest.raises(EvidenceError):
                run(tee, vid, collateral=read_bytes(tee, f"{other}.collateral.json"), now=when)


def test_quote_of_the_other_tee_is_refused() -> None:
    """An SGX quote is not a TDX quote and vice versa."""
    with pytest.raises(EvidenceFormatError, match="not a TDX"):
        verify_quote(
            read_bytes("sgx", f"{SGX_BASE}.quote.bin"),
            read_bytes("sgx", f"{SGX_BASE}.collateral.json"),
            anchors=anchors(),
            now=parse_time(expected("sgx", SGX_BASE)["verification_time"]),
            tee="tdx",
        )


def test_naive_time_is_refused() -> None:
    """The verification time must carry a timezone."""
    with pytest.raises(EvidenceFormatError):
        run("tdx", UPTODATE, now=datetime(2025, 7, 4))


def test_missing_root_anchor_is_refused() -> None:
    """Without the pinned Intel root nothing verifies."""
    with pytest.raises(EvidenceFormatError, match="intel-sgx-root-ca"):
        verify_quote(
            read_bytes("tdx", f"{UPTODATE}.quote.bin"),
            read_bytes("tdx", f"{UPTODATE}.collateral.json"),
            anchors=TrustAnchors(pem={}),
            now=parse_time(expected("tdx", UPTODATE)["verification_time"]),
            tee="tdx",
        )


def test_other_root_is_refused() -> None:
    """A chain that does not end in the pinned root fails, whatever the quote says."""
    amd = read_bytes("roots", "amd-milan-ark.pem")
    with pytest.raises(EvidenceSignatureError, match="pinned"):
        verify_quote(
            read_bytes("tdx", f"{UPTODATE}.quote.bin"),
            read_bytes("tdx", f"{UPTODATE}.collateral.json"),
            anchors=TrustAnchors(pem={"intel-sgx-root-ca": amd}),
            now=parse_time(expected("tdx", UPTODATE)["verification_time"]),
            tee="tdx",
        )


def _edit_collateral(vid: str, tee: str = "tdx", **changes: Any) -> bytes:
    doc = json.loads(read_bytes(tee, f"{vid}.collateral.json"))
    doc.update(changes)
    return json.dumps(doc).encode()


def test_collateral_without_pck_crl_is_refused() -> None:
    """A PCK CRL that is not DER fails as collateral."""
    with pytest.raises(CollateralError):
        run("tdx", UPTODATE, collateral=_edit_collateral(UPTODATE, pck_crl="00"))


def test_collateral_with_a_foreign_pck_crl_is_refused() -> None:
    """The SGX vector's PCK CRL is the Processor CA's; the TDX PCK is under the Platform CA."""
    sgx = json.loads(read_bytes("sgx", f"{SGX_BASE}.collateral.json"))
    with pytest.raises(CollateralError, match="does not cover"):
        run("tdx", UPTODATE, collateral=_edit_collateral(UPTODATE, pck_crl=sgx["pck_crl"]))


def test_collateral_with_swapped_signatures_is_refused() -> None:
    """A QE Identity signature does not verify the TCB Info."""
    doc = json.loads(read_bytes("tdx", f"{UPTODATE}.collateral.json"))
    with pytest.raises(CollateralError, match="signature"):
        run("tdx", UPTODATE, collateral=_edit_collateral(
            UPTODATE, tcb_info_signature=doc["qe_identity_signature"]))  # fmt: skip


@pytest.mark.parametrize("raw", [b"", b"[]", b"{}", b"not json", b'{"tcb_info": 1}'])
def test_malformed_collateral_is_a_collateral_error(raw: bytes) -> None:
    """Collateral that is not the QuoteCollateralV3 layout is refused up front."""
    with pytest.raises(CollateralError):
        Collateral.from_json(raw)


def _quote(vid: str = UPTODATE, tee: str = "tdx") -> bytearray:
    return bytearray(read_bytes(tee, f"{vid}.quote.bin"))


def test_non_zero_trailing_bytes_are_refused() -> None:
    """Bytes after the signature data must be zero padding, nothing else."""
    raw = _quote("gcp-cos-tdx-uptodate")
    raw[-1] = 1
    with pytest.raises(EvidenceFormatError, match="after the signature data"):
        DCAPQuote.from_bytes(bytes(raw))


def test_non_canonical_pem_is_refused() -> None:
    """Whitespace inside the embedded PEM chain would go unnoticed by a lax parser."""
    raw = _quote()
    at = raw.index(b"\n", raw.index(b"-----BEGIN CERTIFICATE-----") + 30)
    raw[at] = ord(" ")
    with pytest.raises(EvidenceSignatureError, match="PEM"):
        run("tdx", UPTODATE, quote=bytes(raw))


@pytest.mark.parametrize(
    ("offset", "value", "match"),
    [
        (0, 2, "version"),
        (2, 3, "ECDSA-P256"),
        (4, 0x42, "tee type"),
        (12, 0, "vendor"),
    ],
)
def test_header_fields_are_checked(offset: int, value: int, match: str) -> None:
    """Unknown versions, key types, TEE types and QE vendors are format errors."""
    raw = _quote()
    raw[offset] = value
    with pytest.raises(EvidenceFormatError, match=match):
        DCAPQuote.from_bytes(bytes(raw))


def test_v5_body_size_is_checked() -> None:
    """A v5 body size that does not fit the body type is refused with its offset."""
    raw = _quote("dcapqvl-tdx-nomatch")
    struct.pack_into("<I", raw, 50, 584)
    with pytest.raises(EvidenceFormatError, match="offset 50"):
        DCAPQuote.from_bytes(bytes(raw))


def test_oversized_quote_is_refused() -> None:
    """A quote buffer beyond the cap is refused before parsing."""
    with pytest.raises(EvidenceFormatError, match="exceeds"):
        DCAPQuote.from_bytes(bytes(1 << 17))


def test_qe_auth_data_is_bound_by_the_qe_report() -> None:
    """Changing QE auth data breaks the QE REPORT_DATA binding."""
    raw = _quote()
    quote = DCAPQuote.from_bytes(bytes(raw))
    at = bytes(raw).index(quote.sig.qe_auth_data)
    raw[at] ^= 1
    with pytest.raises(EvidenceSignatureError, match="bind"):
        run("tdx", UPTODATE, quote=bytes(raw))
