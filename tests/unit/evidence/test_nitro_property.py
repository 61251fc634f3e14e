"""Property tests: the Nitro parser and verifier fail closed on any input."""

from __future__ import annotations

import contextlib
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import EvidenceError, EvidenceFormatError
from broker.evidence.model import TrustAnchors
from broker.evidence.nitro import NitroDocument, verify_nitro_document
from tests.vectors import expected, parse_time, read_bytes, requires_evidence

pytestmark = requires_evidence

ROOT = "aws-nitro-enclaves-root-g1"
BASE = "polygon-claim"  # smallest document with nonce and user_data


def _anchors() -> TrustAnchors:
    return TrustAnchors(pem={ROOT: read_bytes("roots", f"{ROOT}.pem")})


def _document() -> bytes:
    return read_bytes("nitro", expected("nitro", BASE)["files"]["document"])


def _now() -> datetime:
    return parse_time(expected("nitro", BASE)["verification_time"])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_raise_only_format_errors(data: bytes) -> None:
    """NitroDocument.from_bytes raises nothing but EvidenceFormatError on junk."""
    with contextlib.suppress(EvidenceFormatError):
        NitroDocument.from_bytes(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_verify(data: bytes) -> None:
    """Random bytes never verify, and fail only with EvidenceError."""
    try:
        verify_nitro_document(data, anchors=_anchors(), now=_now())
    except EvidenceError:
        return
    raise AssertionError("random bytes verified")


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_single_byte_mutations_never_verify(data: st.DataObject) -> None:
    """Changing any one byte of a real document makes it fail with EvidenceError."""
    document = bytearray(_document())
    index = data.draw(st.integers(min_value=0, max_value=len(document) - 1), label="index")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    document[index] ^= mask
    try:
        verify_nitro_document(bytes(document), anchors=_anchors(), now=_now())
    except EvidenceError:
        return
    raise AssertionError(f"mutated document verified (byte {index} ^ {mask:#x})")


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_truncations_never_verify(data: st.DataObject) -> None:
    """Every proper prefix of a real document is malformed."""
    document = _document()
    length = data.draw(st.integers(min_value=0, max_value=len(document) - 1), label="length")
    try:
        verify_nitro_document(document[:length], anchors=_anchors(), now=_now())
    except EvidenceFormatError:
        return
    raise AssertionError("truncated document verified")
