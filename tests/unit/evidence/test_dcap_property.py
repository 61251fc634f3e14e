"""Property tests: DCAP parsing and verification raise only EvidenceError, never verify junk."""

from __future__ import annotations

from functools import cache

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import CollateralError, EvidenceError
from broker.evidence.dcap import verify_quote
from broker.evidence.dcap_collateral import Collateral
from broker.evidence.dcap_quote import DCAPQuote
from broker.evidence.model import TrustAnchors
from tests.vectors import expected, parse_time, read_bytes, requires_evidence

pytestmark = requires_evidence

CASES = [
    ("tdx", "dcapqvl-tdx-uptodate"),
    ("tdx", "dcapqvl-tdx-nomatch"),
    ("tdx", "gcp-cos-tdx-uptodate"),
    ("tdx", "trustee-tdx-debug"),
    ("sgx", "dcapqvl-sgx-config-swhardening"),
    ("sgx", "occlum-sgx-debug"),
]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def anchors() -> TrustAnchors:
    return TrustAnchors(pem={"intel-sgx-root-ca": read_bytes("roots", "intel-sgx-root-ca.pem")})


@cache
def vector(index: int) -> tuple[str, bytes, bytes, str]:
    tee, vid = CASES[index]
    return (
        tee,
        read_bytes(tee, f"{vid}.quote.bin"),
        read_bytes(tee, f"{vid}.collateral.json"),
        expected(tee, vid)["verification_time"],
    )


def must_fail(quote: bytes, index: int) -> None:
    tee, _, collateral, when = vector(index)
    try:
        verify_quote(quote, collateral, anchors=anchors(), now=parse_time(when), tee=tee)  # type: ignore[arg-type]
    except EvidenceError:
        return
    raise AssertionError("a mutated or random quote verified")


@SETTINGS
@given(st.binary(max_size=6000))
def test_arbitrary_bytes_are_format_errors(data: bytes) -> None:
    """Random buffers never parse into anything but an EvidenceError."""
    try:
        DCAPQuote.from_bytes(data)
    except EvidenceError:
        return


@SETTINGS
@given(st.sampled_from(range(len(CASES))), st.binary(max_size=5000))
def test_arbitrary_bytes_behind_a_real_header_never_verify(index: int, tail: bytes) -> None:
    """A real header followed by junk never verifies."""
    must_fail(vector(index)[1][:48] + tail, index)


@SETTINGS
@given(st.sampled_from(range(len(CASES))), st.data())
def test_single_byte_mutations_never_verify(index: int, data: st.DataObject) -> None:
    """Changing any one byte of a real quote is detected."""
    quote = bytearray(vector(index)[1])
    at = data.draw(st.integers(0, len(quote) - 1))
    quote[at] ^= data.draw(st.integers(1, 255))
    must_fail(bytes(quote), index)


@SETTINGS
@given(st.sampled_from(range(len(CASES))), st.data())
def test_mutations_in_the_pck_chain_never_verify(index: int, data: st.DataObject) -> None:
    """The unsigned PEM chain region is where a lax parser would let a change through."""
    quote = bytearray(vector(index)[1])
    start = bytes(quote).index(b"-----BEGIN CERTIFICATE-----")
    end = min(bytes(quote).rindex(b"-----END CERTIFICATE-----") + 27, len(quote) - 1)
    at = data.draw(st.integers(start, end))
    quote[at] = data.draw(st.sampled_from(b" \n\r\tA/+=-0\x00").filter(lambda b: b != quote[at]))
    must_fail(bytes(quote), index)


@SETTINGS
@given(st.sampled_from(range(len(CASES))), st.integers(1, 400))
def test_truncations_never_verify(index: int, cut: int) -> None:
    """A quote cut short anywhere is refused."""
    quote = vector(index)[1]
    signed_end = len(quote.rstrip(b"\0"))
    must_fail(quote[: max(0, signed_end - cut)], index)


@SETTINGS
@given(st.binary(max_size=2000))
def test_arbitrary_collateral_is_a_collateral_error(data: bytes) -> None:
    """Random collateral bytes never get past the collateral parser."""
    try:
        Collateral.from_json(data)
    except CollateralError:
        return
