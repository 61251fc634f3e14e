"""TDXVerifier: Trustee tdx evidence forms, collateral sources and the challenge binding."""

from __future__ import annotations

import base64
import json

import pytest

from broker.errors import CollateralError, EvidenceFormatError, FreshnessError
from broker.evidence import get_verifier
from broker.evidence.binding import REPORT_DATA_SIZE
from broker.evidence.model import Expectation, TrustAnchors, VerifyContext
from broker.evidence.tdx import TDXVerifier
from tests.vectors import expected, parse_time, read_bytes, requires_evidence

pytestmark = requires_evidence

VID = "dcapqvl-tdx-uptodate"


def ctx(*, expect: Expectation | None = None, with_collateral: bool = True) -> VerifyContext:
    collateral = {"dcap": read_bytes("tdx", f"{VID}.collateral.json")} if with_collateral else {}
    return VerifyContext(
        now=parse_time(expected("tdx", VID)["verification_time"]),
        anchors=TrustAnchors(
            pem={"intel-sgx-root-ca": read_bytes("roots", "intel-sgx-root-ca.pem")}
        ),
        expect=expect,
        collateral=collateral,
    )


def quote_b64() -> str:
    return base64.b64encode(read_bytes("tdx", f"{VID}.quote.bin")).decode()


def test_trustee_tdx_evidence_verifies() -> None:
    """The attester's {"cc_eventlog", "quote"} form verifies with collateral from the context."""
    claims = TDXVerifier().verify({"cc_eventlog": None, "quote": quote_b64()}, ctx())
    assert claims.tee == "tdx"
    assert claims.claims["mr_td"] == expected("tdx", VID)["claims"]["mr_td"]
    assert claims.flags["tcb_up_to_date"]
    assert claims.evidence_digest.startswith("sha256:")


def test_collateral_inside_the_evidence_is_used() -> None:
    """A "collateral" object in the evidence stands in for ctx.collateral."""
    collateral = json.loads(read_bytes("tdx", f"{VID}.collateral.json"))
    evidence = {"quote": quote_b64(), "collateral": collateral}
    claims = TDXVerifier().verify(evidence, ctx(with_collateral=False))
    assert claims.claims["tcb_status"] == "UpToDate"


def test_missing_collateral_is_a_collateral_error() -> None:
    """No collateral anywhere means no verification."""
    with pytest.raises(CollateralError, match="no DCAP collateral"):
        TDXVerifier().verify({"quote": quote_b64()}, ctx(with_collateral=False))


def test_report_data_must_bind_the_challenge() -> None:
    """With an expectation set, REPORT_DATA must equal it."""
    report_data = bytes.fromhex(expected("tdx", VID)["claims"]["report_data"])
    good = Expectation(report_data=report_data, nonce=b"n", runtime_digest=report_data[:48])
    TDXVerifier().verify({"quote": quote_b64()}, ctx(expect=good))
    bad = Expectation(report_data=bytes(REPORT_DATA_SIZE), nonce=b"n", runtime_digest=bytes(48))
    with pytest.raises(FreshnessError):
        TDXVerifier().verify({"quote": quote_b64()}, ctx(expect=bad))


@pytest.mark.parametrize(
    "evidence",
    [
        None,
        [],
        {},
        {"quote": 5},
        {"quote": "not base64!"},
        "not json",
        {"quote": base64.b64encode(b"short").decode()},
    ],
)
def test_malformed_evidence_is_a_format_error(evidence: object) -> None:
    """Evidence that is not the documented JSON form is refused as malformed."""
    with pytest.raises(EvidenceFormatError):
        TDXVerifier().verify(evidence, ctx())


def test_non_object_collateral_in_evidence_is_refused() -> None:
    """An evidence "collateral" that is not a JSON object is a collateral error."""
    with pytest.raises(CollateralError):
        TDXVerifier().verify({"quote": quote_b64(), "collateral": "x"}, ctx())


def test_sgx_quote_is_not_tdx_evidence() -> None:
    """An SGX quote sent as TDX evidence is refused."""
    sgx = base64.b64encode(read_bytes("sgx", "dcapqvl-sgx-config-swhardening.quote.bin")).decode()
    with pytest.raises(EvidenceFormatError):
        TDXVerifier().verify({"quote": sgx}, ctx())


def test_registry_returns_the_tdx_verifier() -> None:
    """get_verifier("tdx") is this verifier."""
    assert isinstance(get_verifier("tdx"), TDXVerifier)
