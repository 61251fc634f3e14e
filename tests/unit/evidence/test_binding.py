"""The KBS challenge binding digest."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import FreshnessError, MalformedRequest
from broker.evidence.binding import canonical_digest, expectation_for, verify_report_data

TRUSTEE_VECTOR = (
    "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c"
    "4597480a186427c813ca941da78870c3"
)


def test_trustee_published_vector() -> None:
    """SHA-384(JCS(...)) matches the digest Trustee publishes for its binding."""
    assert canonical_digest({"b": 1, "a": "test", "c": {"d": "e"}}).hex() == TRUSTEE_VECTOR


def test_expectation_pads_to_report_data() -> None:
    """The expected REPORT_DATA is the 48-byte digest zero padded to 64 bytes."""
    nonce = base64.b64encode(b"n" * 32).decode()
    exp = expectation_for(nonce, {"kty": "EC"}, "")
    assert len(exp.report_data) == 64
    assert exp.report_data[:48] == exp.runtime_digest
    assert exp.report_data[48:] == b"\0" * 16
    assert exp.nonce == b"n" * 32
    assert exp.runtime_digest == canonical_digest(
        {"additional-evidence": "", "nonce": nonce, "tee-pubkey": {"kty": "EC"}}
    )


def test_key_order_does_not_matter() -> None:
    """JCS makes the digest independent of the JWK member order."""
    nonce = base64.b64encode(b"x" * 32).decode()
    a = expectation_for(nonce, {"kty": "EC", "crv": "P-256", "x": "1", "y": "2"}, "")
    b = expectation_for(nonce, {"y": "2", "x": "1", "crv": "P-256", "kty": "EC"}, "")
    assert a == b


def test_mismatch_raises_freshness_error() -> None:
    """A report data that binds another key fails the comparison."""
    nonce = base64.b64encode(b"x" * 32).decode()
    exp = expectation_for(nonce, {"kty": "EC"}, "")
    other = expectation_for(nonce, {"kty": "RSA"}, "")
    verify_report_data(exp.report_data, exp)
    with pytest.raises(FreshnessError):
        verify_report_data(other.report_data, exp)


def test_bad_nonce_is_malformed() -> None:
    """A nonce that is not standard base64 is a malformed request."""
    with pytest.raises(MalformedRequest):
        expectation_for("not base64!!", {}, "")


@given(
    st.dictionaries(
        st.text(max_size=8), st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8), max_size=5
    )
)
def test_digest_is_deterministic(value: dict[str, object]) -> None:
    """The digest of a JSON value is stable across calls."""
    assert canonical_digest(value) == canonical_digest(dict(reversed(list(value.items()))))
