"""SGXVerifier: Trustee sgx evidence, collateral sources and the challenge binding."""

from __future__ import annotations

import base64

import pytest

from broker.errors import CollateralError, EvidenceFormatError, FreshnessError
from broker.evidence import get_verifier
from broker.evidence.model import Expectation, TrustAnchors, VerifyContext
from broker.evidence.sgx import SGXVerifier
from tests.vectors import expected, parse_time, read_bytes, requires_evidence

pytestmark = requires_evidence


def ctx(vid: str, *, expect: Expectation | None = None) -> VerifyContext:
    return VerifyContext(
        now=parse_time(expected("sgx", vid)["verification_time"]),
        anchors=TrustAnchors(
            pem={"intel-sgx-root-ca": read_bytes("roots", "intel-sgx-root-ca.pem")}
        ),
        expect=expect,
        collateral={"dcap": read_bytes("sgx", f"{vid}.collateral.json")},
    )


def evidence(vid: str) -> dict[str, str]:
    return {"quote": base64.b64encode(read_bytes("sgx", f"{vid}.quote.bin")).decode()}


@pytest.mark.parametrize("vid", ["dcapqvl-sgx-config-swhardening", "occlum-sgx-debug"])
def test_trustee_sgx_evidence_verifies(vid: str) -> None:
    """The attester's {"quote"} form verifies with the expected enclave claims."""
    ex = expected("sgx", vid)
    claims = SGXVerifier().verify(evidence(vid), ctx(vid))
    assert claims.tee == "sgx"
    for name in ("mr_enclave", "mr_signer", "isv_prod_id", "isv_svn", "debug", "fmspc"):
        assert claims.claims[name] == ex["claims"][name]
    assert claims.claims["tcb_status"] == ex["expected"]["tcb_status"]
    assert claims.flags["debug"] is ex["expected"]["debug"]


def test_report_data_must_bind_the_challenge() -> None:
    """A REPORT_DATA that is not the challenge's is a freshness error."""
    vid = "dcapqvl-sgx-config-swhardening"
    bad = Expectation(report_data=bytes(64), nonce=b"n", runtime_digest=bytes(48))
    with pytest.raises(FreshnessError):
        SGXVerifier().verify(evidence(vid), ctx(vid, expect=bad))


def test_tdx_quote_is_not_sgx_evidence() -> None:
    """A TDX quote sent as SGX evidence is refused."""
    vid = "dcapqvl-sgx-config-swhardening"
    tdx = base64.b64encode(read_bytes("tdx", "dcapqvl-tdx-uptodate.quote.bin")).decode()
    with pytest.raises(EvidenceFormatError):
        SGXVerifier().verify({"quote": tdx}, ctx(vid))


def test_missing_collateral_is_a_collateral_error() -> None:
    """No collateral in the evidence or the context fails closed."""
    vid = "dcapqvl-sgx-config-swhardening"
    bare = VerifyContext(now=ctx(vid).now, anchors=ctx(vid).anchors)
    with pytest.raises(CollateralError):
        SGXVerifier().verify(evidence(vid), bare)


def test_registry_returns_the_sgx_verifier() -> None:
    """get_verifier("sgx") is this verifier."""
    assert isinstance(get_verifier("sgx"), SGXVerifier)
