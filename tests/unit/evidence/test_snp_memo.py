"""The SEV-SNP verifier memoises what depends on a certificate alone (its SPL and
hwID extensions, its key, a chain whose signatures verified once). These tests
warm those memos with a verification that succeeds, then show that every check
depending on the report, on ``now``, on the anchors or on the CRLs still runs.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# Bound to other names: pytest would try to collect ``Test*`` classes here.
from bench.snp_synth import TestAMD as AMD
from bench.snp_synth import TestChip as Chip
from broker.errors import CollateralError, EvidenceSignatureError
from broker.evidence import _x509
from broker.evidence.model import HardwareResult, TrustAnchors, VerifyContext
from broker.evidence.snp import SNPVerifier, verify_snp_report
from broker.evidence.snp_report import (
    _LAYOUT,
    REPORT_SIZE,
    SIGNED_END,
    Product,
    SNPReport,
    decode_tcb,
    tcb_fields,
)

NOW = datetime.now(UTC).replace(microsecond=0)
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_REPORTED_TCB, _SIG_R, _SIG_S = 0x180, 0x2A0, 0x2E8


@pytest.fixture(scope="module")
def amd() -> AMD:
    return AMD.generate(NOW)


@pytest.fixture(scope="module")
def chip(amd: AMD) -> Chip:
    return amd.chip(NOW)


def anchors_of(amd: AMD) -> TrustAnchors:
    return TrustAnchors(pem={"amd-milan-ark": amd.ark_pem, "amd-milan-ask": amd.ask_pem})


def resign(
    report: bytes, key: ec.EllipticCurvePrivateKey, *, reported_tcb: bytes | None = None
) -> bytes:
    """``report`` (REPORTED_TCB replaced if given) signed again by ``key``."""
    body = bytearray(report)
    if reported_tcb is not None:
        body[_REPORTED_TCB : _REPORTED_TCB + 8] = reported_tcb
    r, s = decode_dss_signature(key.sign(bytes(body[:SIGNED_END]), ec.ECDSA(hashes.SHA384())))
    body[_SIG_R : _SIG_R + 72] = r.to_bytes(72, "little")
    body[_SIG_S : _SIG_S + 72] = s.to_bytes(72, "little")
    return bytes(body)


def verify(
    report: bytes,
    chip: Chip,
    anchors: TrustAnchors,
    *,
    now: datetime,
    crls: Sequence[bytes] = (),
) -> HardwareResult:
    return verify_snp_report(report, chip.vcek_der, anchors=anchors, now=now, crls=crls)


def test_memoised_vcek_still_checks_the_report_signature(amd: AMD, chip: Chip) -> None:
    """A report signed by another key, presented with a VCEK that verified before, is refused."""
    good = chip.sign_report(bytes(64))
    verify(good, chip, anchors_of(amd), now=NOW)
    forged = resign(good, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(EvidenceSignatureError, match="does not verify with the VEK"):
        verify(forged, chip, anchors_of(amd), now=NOW)
    verify(good, chip, anchors_of(amd), now=NOW)


def test_memoised_vcek_still_checks_reported_tcb_and_chip_id(amd: AMD, chip: Chip) -> None:
    """The TCB and CHIP_ID comparisons read each report, not a memo of the last one."""
    verify(chip.sign_report(bytes(64)), chip, anchors_of(amd), now=NOW)
    higher = resign(chip.sign_report(bytes(64)), chip.key, reported_tcb=bytes([9] * 8))
    with pytest.raises(CollateralError, match="REPORTED_TCB"):
        verify(higher, chip, anchors_of(amd), now=NOW)
    other_chip = Chip(vcek_der=chip.vcek_der, chip_id=os.urandom(64), tcb=chip.tcb, key=chip.key)
    with pytest.raises(CollateralError, match="hwID"):
        verify(other_chip.sign_report(bytes(64)), chip, anchors_of(amd), now=NOW)


def test_chain_memo_does_not_carry_over_to_other_anchors(amd: AMD, chip: Chip) -> None:
    """A VCEK whose chain verified under one ARK/ASK is refused under another pair
    with the same names but other keys."""
    report = chip.sign_report(bytes(64))
    verify(report, chip, anchors_of(amd), now=NOW)
    impostor = AMD.generate(NOW)
    with pytest.raises(EvidenceSignatureError):
        verify(report, chip, anchors_of(impostor), now=NOW)
    verify(report, chip, anchors_of(amd), now=NOW)


@pytest.mark.parametrize("shift", [timedelta(days=31), timedelta(days=-2)])
def test_validity_is_checked_at_every_now(amd: AMD, chip: Chip, shift: timedelta) -> None:
    """After a verification at ``NOW``, the same VCEK is refused at a time outside
    its window (it is valid from NOW - 1 day to NOW + 30 days)."""
    report = chip.sign_report(bytes(64))
    verify(report, chip, anchors_of(amd), now=NOW)
    with pytest.raises(CollateralError, match="not valid at"):
        verify(report, chip, anchors_of(amd), now=NOW + shift)


def test_revocation_is_checked_after_a_verification_without_crls(amd: AMD, chip: Chip) -> None:
    """A chain verified once without CRLs is refused once a CRL revokes the VCEK."""
    report = chip.sign_report(bytes(64))
    verify(report, chip, anchors_of(amd), now=NOW)
    vcek = x509.load_der_x509_certificate(chip.vcek_der)
    ask = x509.load_pem_x509_certificate(amd.ask_pem)
    revoked = x509.RevokedCertificateBuilder().serial_number(vcek.serial_number)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ask.subject)
        .last_update(NOW - timedelta(hours=1))
        .next_update(NOW + timedelta(days=1))
        .add_revoked_certificate(revoked.revocation_date(NOW - timedelta(hours=1)).build())
        .sign(amd.ask_key, hashes.SHA384(), rsa_padding=_PSS)
    )
    der = crl.public_bytes(serialization.Encoding.DER)
    with pytest.raises(CollateralError, match="revoked"):
        verify(report, chip, anchors_of(amd), now=NOW, crls=[der])


def test_kbs_verifier_refuses_after_memoised_success(amd: AMD, chip: Chip) -> None:
    """The same holds through the KBS entry point, with the VCEK sent in the evidence."""
    ctx = VerifyContext(now=NOW, anchors=anchors_of(amd))
    good = chip.evidence(bytes(64))
    SNPVerifier().verify(good, ctx)
    report = base64.b64decode(good["report"])
    forged = resign(report, ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(EvidenceSignatureError):
        SNPVerifier().verify({**good, "report": base64.b64encode(forged).decode()}, ctx)


def test_per_certificate_memo_is_bounded_and_keeps_no_failures(chip: Chip) -> None:
    calls: list[int] = []
    fail = [True]

    @_x509.per_certificate(2)
    def serial(cert: x509.Certificate) -> int:
        calls.append(cert.serial_number)
        if fail[0]:
            fail[0] = False
            raise CollateralError("first read fails")
        return cert.serial_number

    certs = [x509.load_der_x509_certificate(chip.vcek_der) for _ in range(3)]
    with pytest.raises(CollateralError):
        serial(certs[0])
    assert serial(certs[0]) == certs[0].serial_number  # the failure was not kept
    assert serial(certs[0]) == certs[0].serial_number
    assert len(calls) == 2
    serial(certs[1])
    serial(certs[2])  # evicts certs[0], the oldest entry
    assert len(calls) == 4
    serial(certs[0])
    assert len(calls) == 5


def test_tcb_fields_matches_decode_tcb() -> None:
    raw = bytes(range(1, 9))
    for product in Product:
        assert tcb_fields(raw, product) == decode_tcb(raw, product).to_dict()
        assert list(tcb_fields(raw, product)) == list(decode_tcb(raw, product).to_dict())


def test_layout_reads_the_documented_offsets() -> None:
    """The one-Struct parse reads the same bytes as slicing at the ABI offsets."""
    assert _LAYOUT.size == REPORT_SIZE
    body = bytearray(os.urandom(REPORT_SIZE))
    body[0:4] = (2).to_bytes(4, "little")
    body[0x30:0x38] = bytes([1, 0, 0, 0, 1, 0, 0, 0])  # VMPL 1, SIGNATURE_ALGO 1
    body[0x48:0x4C] = bytes(4)  # KEY_INFO: VCEK
    body[_SIG_R + 48 : _SIG_S] = bytes(_SIG_S - _SIG_R - 48)
    body[_SIG_S + 48 :] = bytes(REPORT_SIZE - _SIG_S - 48)
    data = bytes(body)
    report = SNPReport.from_bytes(data)
    assert report.policy == int.from_bytes(data[0x08:0x10], "little")
    assert report.measurement == data[0x90:0xC0]
    assert report.reported_tcb == data[0x180:0x188]
    assert (report.cpuid_fam_id, report.cpuid_step) == (data[0x188], data[0x18A])
    assert report.chip_id == data[0x1A0:0x1E0]
    assert report.current_fw == (data[0x1EA], data[0x1E9], data[0x1E8])
    assert report.committed_fw == (data[0x1EE], data[0x1ED], data[0x1EC])
    assert report.current_mit_vector == int.from_bytes(data[0x200:0x208], "little")
    assert report.signature_s == int.from_bytes(data[_SIG_S : _SIG_S + 72], "little")
