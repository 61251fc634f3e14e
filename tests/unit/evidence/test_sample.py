"""The simulated TEE verifier."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import EvidenceFormatError, FreshnessError
from broker.evidence import pinned_anchors
from broker.evidence.binding import expectation_for
from broker.evidence.model import VerifyContext
from broker.evidence.sample import SampleVerifier

NOW = datetime(2026, 11, 28, tzinfo=UTC)
NONCE = base64.b64encode(b"\1" * 32).decode()
EXPECT = expectation_for(NONCE, {"kty": "EC"}, "")


def ctx() -> VerifyContext:
    return VerifyContext(now=NOW, anchors=pinned_anchors(), expect=EXPECT)


def test_accepts_trustee_sample_form() -> None:
    """Trustee's sample evidence with the unpadded digest verifies."""
    ev = {"svn": "1", "report_data": base64.b64encode(EXPECT.runtime_digest).decode()}
    claims = SampleVerifier().verify(ev, ctx())
    assert claims.tee == "sample"
    assert claims.claims["svn"] == 1
    assert claims.flags == {"debug": False}
    assert claims.evidence_digest.startswith("sha256:")


def test_optional_measurement_and_debug() -> None:
    """Measurement and debug fields become claims for exercising policies."""
    ev = {
        "svn": 2,
        "report_data": base64.b64encode(EXPECT.report_data).decode(),
        "measurement": "ABCD",
        "debug": True,
    }
    claims = SampleVerifier().verify(ev, ctx())
    assert claims.claims["measurement"] == "abcd"
    assert claims.flags["debug"] is True


def test_wrong_binding_refused() -> None:
    """Report data for another challenge fails with FreshnessError."""
    ev = {"svn": "1", "report_data": base64.b64encode(b"\0" * 64).decode()}
    with pytest.raises(FreshnessError):
        SampleVerifier().verify(ev, ctx())


@pytest.mark.parametrize(
    "ev",
    [
        None,
        [],
        {"svn": "x", "report_data": ""},
        {"svn": True, "report_data": ""},
        {"svn": 1},
        {"svn": 1, "report_data": "!!"},
        {"svn": 1, "report_data": base64.b64encode(b"a" * 65).decode()},
        {"svn": 1, "report_data": "", "measurement": "zz"},
        {"svn": 1, "report_data": "", "debug": "no"},
        {"svn": -1, "report_data": ""},
    ],
)
def test_malformed_refused(ev: Any) -> None:
    """Malformed sample evidence raises EvidenceFormatError."""
    with pytest.raises(EvidenceFormatError):
        SampleVerifier().verify(ev, ctx())


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=12), c, max_size=4),
        max_leaves=10,
    )
)
def test_arbitrary_json_never_verifies(ev: Any) -> None:
    """Arbitrary JSON raises only evidence errors and never verifies."""
    with pytest.raises((EvidenceFormatError, FreshnessError)):
        SampleVerifier().verify(ev, ctx())
