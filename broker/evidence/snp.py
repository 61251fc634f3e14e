"""AMD SEV-SNP attestation reports: verify against pinned AMD roots.

    result = verify_snp_report(report_bytes, vcek_der, anchors=pinned_anchors(), now=now)
    result.claims["measurement"], result.flags["debug"]

Layout and semantics follow the AMD "SEV Secure Nested Paging Firmware ABI
Specification" (publication 56860): Table "ATTESTATION_REPORT Structure",
Table "TCB_VERSION Structure" and Table "Guest Policy Structure". The VEK
certificate extensions follow AMD's "Versioned Chip Endorsement Key (VCEK)
Certificate and KDS Interface Specification" (publication 57230).

The pieces: ``snp_report`` (report layout, ``SNPReport.from_bytes``, TCB
decoding), ``snp_vek`` (VEK certificate extensions), ``snp_evidence`` (KBS
evidence JSON forms). This module holds the verification steps and the KBS
verifier, and re-exports the report names for callers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from broker.errors import CollateralError, EvidenceSignatureError
from broker.evidence import _x509, snp_vek
from broker.evidence.binding import verify_report_data
from broker.evidence.model import (
    HardwareResult,
    TrustAnchors,
    VerifiedClaims,
    VerifyContext,
    evidence_digest,
)
from broker.evidence.snp_evidence import decode_evidence
from broker.evidence.snp_report import (
    FAMILY,
    HWID_LEN,
    POLICY_DEBUG,
    POLICY_MIGRATE_MA,
    POLICY_SINGLE_SOCKET,
    POLICY_SMT,
    REPORT_SIZE,
    SIGNING_NONE,
    SIGNING_VCEK,
    SIGNING_VLEK,
    Product,
    SNPReport,
    TCBVersion,
    decode_tcb,
    tcb_fields,
)

__all__ = [
    "REPORT_SIZE",
    "Product",
    "SNPReport",
    "SNPVerifier",
    "TCBVersion",
    "decode_tcb",
    "verify_snp_report",
]


def _anchor(anchors: TrustAnchors, name: str) -> x509.Certificate:
    if name not in anchors.pem:
        raise CollateralError(f"no pinned AMD certificate {name!r}")
    return _x509.load_certificate(anchors.get(name))


def _verify_vek_chain(
    report: SNPReport,
    vek: x509.Certificate,
    product: Product,
    *,
    anchors: TrustAnchors,
    now: datetime,
    crls: Sequence[bytes],
) -> None:
    stem = f"amd-{product.value.lower()}"
    ark = _anchor(anchors, f"{stem}-ark")
    # VCEK-signed reports chain through the ASK, VLEK-signed ones through the ASVK.
    middle = "asvk" if report.signing_key == SIGNING_VLEK else "ask"
    signer = _anchor(anchors, f"{stem}-{middle}")
    _x509.verify_chain(vek, [signer], ark, now=now, max_len=3)
    if crls:
        _x509.check_revocation([vek, signer, ark], [_x509.load_crl(c) for c in crls], now=now)


_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())


@_x509.per_certificate(_x509.CERT_MEMO_SIZE)
def _p384_key(vek: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = vek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise EvidenceSignatureError("VEK public key is not ECDSA P-384")
    return key


def _verify_signature(report: SNPReport, vek: x509.Certificate) -> None:
    key = _p384_key(vek)
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed_bytes, _ECDSA_SHA384)
    except InvalidSignature as exc:
        raise EvidenceSignatureError("SNP report signature does not verify with the VEK") from exc


def _verify_vek_binding(
    report: SNPReport, vek: x509.Certificate, product: Product, reported: Mapping[str, int]
) -> None:
    certified = snp_vek.certified_tcb(vek, tuple(reported))
    if certified != reported:
        raise CollateralError(
            f"VEK certifies TCB {dict(certified)}, the report claims REPORTED_TCB {dict(reported)}"
        )
    if report.signing_key != SIGNING_VCEK:
        return  # a VLEK is not chip-specific: no hwID to compare
    size = HWID_LEN[product]
    if report.chip_id[size:] != bytes(64 - size) or all(
        c != report.chip_id[:size] for c in snp_vek.hwid_candidates(vek)
    ):
        raise CollateralError("VCEK hwID does not match the report CHIP_ID")


def _claims(
    report: SNPReport, product: Product, product_name: str, reported: dict[str, int]
) -> dict[str, Any]:
    return {
        "report_version": report.version,
        "guest_svn": report.guest_svn,
        "policy": hex(report.policy),
        "policy_debug_allowed": report.policy_bit(POLICY_DEBUG),
        "policy_smt_allowed": report.policy_bit(POLICY_SMT),
        "policy_migrate_ma": report.policy_bit(POLICY_MIGRATE_MA),
        "policy_single_socket": report.policy_bit(POLICY_SINGLE_SOCKET),
        "vmpl": report.vmpl,
        "signature_algo": report.signature_algo,
        "signing_key": "VLEK" if report.signing_key == SIGNING_VLEK else "VCEK",
        "author_key_en": report.author_key_en,
        "mask_chip_key": report.mask_chip_key,
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "host_data": report.host_data.hex(),
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "chip_id": report.chip_id.hex(),
        "platform_info": hex(report.platform_info),
        "reported_tcb": reported,
        "current_tcb": tcb_fields(report.current_tcb, product),
        "committed_tcb": tcb_fields(report.committed_tcb, product),
        "launch_tcb": tcb_fields(report.launch_tcb, product),
        "current_fw": ".".join(str(part) for part in report.current_fw),
        "cpuid_fam_id": hex(report.cpuid_fam_id),
        "cpuid_mod_id": hex(report.cpuid_mod_id),
        "vek_product_name_ext": product_name,
    }


def _flags(report: SNPReport, claims: Mapping[str, Any]) -> dict[str, bool]:
    return {
        "debug": report.policy_bit(POLICY_DEBUG),
        "vmpl_nonzero": report.vmpl != 0,
        "signing_key_vlek": report.signing_key == SIGNING_VLEK,
        "smt_allowed": report.policy_bit(POLICY_SMT),
        "migrate_ma_allowed": report.policy_bit(POLICY_MIGRATE_MA),
        "author_key_en": report.author_key_en == 1,
        "reported_tcb_below_current": claims["reported_tcb"] != claims["current_tcb"],
    }


def verify_snp_report(
    report: bytes,
    vek_der: bytes,
    *,
    anchors: TrustAnchors,
    now: datetime,
    crls: Sequence[bytes] = (),
) -> HardwareResult:
    """Verifies a raw ATTESTATION_REPORT and its VCEK/VLEK; no challenge binding.

    Raises:
        EvidenceFormatError: the report or certificate does not parse.
        EvidenceSignatureError: the chain or the report signature is bad, or
            the report is unsigned (SIGNING_KEY none, MASK_CHIP_KEY set).
        CollateralError: a certificate is outside its validity or revoked, a
            root is not pinned, or the VEK does not certify this TCB / chip.
    """
    # (1) Parse: exact size, known VERSION, SIGNATURE_ALGO and SIGNING_KEY.
    parsed = SNPReport.from_bytes(report)
    vek = _x509.load_certificate(vek_der)
    if parsed.signing_key == SIGNING_NONE or parsed.mask_chip_key:
        raise EvidenceSignatureError("SNP report is not signed (SIGNING_KEY none or MASK_CHIP_KEY)")
    # (2) Chain: product from the VEK; VEK <- ASK|ASVK <- ARK (pinned, self-signed),
    #     all valid at `now`, none revoked by the supplied CRLs.
    product_name = snp_vek.product_name(vek)
    product = snp_vek.product_of(product_name)
    _verify_vek_chain(parsed, vek, product, anchors=anchors, now=now, crls=crls)
    if parsed.version >= 3 and parsed.cpuid_fam_id != FAMILY[product]:
        raise CollateralError(
            f"report CPUID family 0x{parsed.cpuid_fam_id:x} is not a {product.value} family"
        )
    # (3) Signature: ECDSA P-384 / SHA-384 over bytes 0x000..0x29F by the VEK.
    _verify_signature(parsed, vek)
    # (4) The VEK certifies exactly REPORTED_TCB and, for a VCEK, this CHIP_ID.
    reported = tcb_fields(parsed.reported_tcb, product)
    _verify_vek_binding(parsed, vek, product, reported)
    # (5) Claims in the vendor vocabulary; policy-relevant facts as flags.
    claims = _claims(parsed, product, product_name, reported)
    return HardwareResult(
        claims=claims, flags=_flags(parsed, claims), report_data=parsed.report_data
    )


class SNPVerifier:
    """KBS verifier for ``sev-snp`` evidence.

    The accepted JSON forms are listed in ``snp_evidence.decode_evidence``.
    Supplied ASK/ARK entries are ignored: only the pinned roots count.
    """

    tee = "sev-snp"

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims:
        """Raises an EvidenceError subclass unless the evidence verifies and,
        when ``ctx.expect`` is set, REPORT_DATA binds the challenge."""
        report, vek = decode_evidence(evidence, ctx)
        result = verify_snp_report(report, vek, anchors=ctx.anchors, now=ctx.now)
        if ctx.expect is not None:
            verify_report_data(result.report_data, ctx.expect)
        return VerifiedClaims(
            tee=self.tee,
            claims=result.claims,
            flags=result.flags,
            evidence_digest=evidence_digest(report),
        )
