"""Property tests: the SNP parser and verifier only ever raise our own errors."""

from __future__ import annotations

import base64
import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import EvidenceError, EvidenceFormatError
from broker.evidence import _x509, pinned_anchors
from broker.evidence.model import VerifyContext
from broker.evidence.snp import REPORT_SIZE, SNPReport, SNPVerifier, verify_snp_report
from tests.vectors import read_bytes, requires_evidence, vector_ids

SNP = "sev-snp"
WHEN = datetime(2025, 9, 1, tzinfo=UTC)
PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def pairs() -> list[tuple[bytes, bytes]]:
    out = []
    for vector_id in vector_ids(SNP):
        vek = "vlek" if vector_id.endswith("vlek") else "vcek"
        out.append(
            (read_bytes(SNP, f"{vector_id}.report.bin"), read_bytes(SNP, f"{vector_id}.{vek}.der"))
        )
    return out


@PROFILE
@given(st.binary(max_size=2 * REPORT_SIZE))
def test_parser_raises_only_format_errors(data: bytes) -> None:
    """Arbitrary bytes parse or raise EvidenceFormatError, nothing else."""
    with contextlib.suppress(EvidenceFormatError):
        SNPReport.from_bytes(data)


@PROFILE
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE))
def test_parser_on_report_sized_noise(data: bytes) -> None:
    """Random 1184-byte buffers parse or raise EvidenceFormatError."""
    with contextlib.suppress(EvidenceFormatError):
        SNPReport.from_bytes(data)


@requires_evidence
@PROFILE
@given(st.binary(min_size=REPORT_SIZE, max_size=REPORT_SIZE), st.sampled_from([0, 1, 2, 3, 4]))
def test_noise_never_verifies(data: bytes, which: int) -> None:
    """Random reports paired with a real VEK never verify."""
    _, vek = pairs()[which % len(pairs())]
    with pytest.raises(EvidenceError):
        verify_snp_report(data, vek, anchors=pinned_anchors(), now=WHEN)


@requires_evidence
@PROFILE
@given(st.data())
def test_single_byte_mutation_never_verifies(data: st.DataObject) -> None:
    """Flipping any bits of one byte of a real report makes it fail with an EvidenceError."""
    report, vek = data.draw(st.sampled_from(pairs()))
    index = data.draw(st.integers(0, REPORT_SIZE - 1))
    mask = data.draw(st.integers(1, 0xFF))
    mutated = bytearray(report)
    mutated[index] ^= mask
    with pytest.raises(EvidenceError):
        verify_snp_report(bytes(mutated), vek, anchors=pinned_anchors(), now=WHEN)


@requires_evidence
@PROFILE
@given(st.data())
def test_vek_mutation_never_verifies(data: st.DataObject) -> None:
    """Mutating one byte of the VEK certificate fails with an EvidenceError."""
    report, vek = data.draw(st.sampled_from(pairs()))
    index = data.draw(st.integers(0, len(vek) - 1))
    mask = data.draw(st.integers(1, 0xFF))
    mutated = bytearray(vek)
    mutated[index] ^= mask
    with pytest.raises(EvidenceError):
        verify_snp_report(report, bytes(mutated), anchors=pinned_anchors(), now=WHEN)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


@PROFILE
@given(
    st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"report": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())},
            optional={"vcek": json_values, "cert_chain": json_values},
        ),
    )
)
def test_verifier_raises_only_evidence_errors(evidence: object) -> None:
    """Arbitrary JSON evidence raises an EvidenceError and never verifies."""
    ctx = VerifyContext(now=WHEN, anchors=pinned_anchors())
    with pytest.raises(EvidenceError):
        SNPVerifier().verify(evidence, ctx)


@requires_evidence
@pytest.mark.parametrize("unused", [1, 7])
def test_vek_with_unused_signature_bits_never_verifies(unused: int) -> None:
    """A real VEK whose signature BIT STRING claims unused bits is refused, though
    its signed part and signature are unchanged (a second spelling of one certificate)."""
    for report, vek in pairs():
        mutated = bytearray(vek)
        signature = _x509.load_certificate(vek).signature
        mutated[-len(signature) - 1] = unused
        with pytest.raises(EvidenceFormatError):
            verify_snp_report(report, bytes(mutated), anchors=pinned_anchors(), now=WHEN)
