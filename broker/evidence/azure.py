"""Azure confidential VMs with a paravisor vTPM: az-snp-vtpm and az-tdx-vtpm.

The evidence (JSON, as Trustee's attesters emit it) carries three things:

* the HCL report: a 32-byte header, the hardware report (SNP ATTESTATION_REPORT
  or TDX TDREPORT, in a 1184-byte slot) and the IGVM request data whose
  variable part is the runtime data JSON holding the TPM attestation key
  ``HCLAkPub`` (a JWK);
* a TPM2_Quote (TPMS_ATTEST, RSA signature, the 24 SHA-256 PCRs);
* the VCEK (SNP) or a DCAP TD quote (TDX; a TDREPORT can only be checked by
  the CPU that made it).

The chain of trust: hardware signature -> REPORT_DATA[0:32] = SHA-256(runtime
data) -> HCLAkPub -> TPM quote -> PCRs and extraData.

Nonce binding (KBS): Trustee's attester passes the KBS report data, the
SHA-384 of the canonical runtime data (``{nonce, tee-pubkey, ...}``), as the
TPM2_Quote qualifying data, so the verifier requires
``TPMS_ATTEST.extraData == expect.runtime_digest``: that binds both the
challenge nonce and the tee-pubkey. The raw nonce alone is never accepted. In
evidence version 2 the attester also copies the report data into the runtime
data's ``user-data`` (zero padded to 64 bytes); there it must equal
``expect.report_data`` as well.

Evidence layouts: version 0 (no ``version``; byte arrays, PEM VCEK), versions
1 and 2 (hex TPM fields, base64url ``hcl_report``, ``vcek`` and ``td_quote``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.errors import (
    CollateralError,
    EvidenceFormatError,
    EvidenceSignatureError,
    FreshnessError,
)
from broker.evidence.azure_hcl import (
    HCL_TYPE_SNP,
    HCL_TYPE_TDX,
    HCL_VMPL,
    SNP_VMPL_OFFSET,
    TDX_CLAIMS,
    AzureEvidence,
    HCLReport,
    evidence_bytes,
    hex_bytes,
    user_data_of,
)
from broker.evidence.dcap import verify_quote as verify_dcap_quote
from broker.evidence.model import (
    HardwareResult,
    TrustAnchors,
    VerifiedClaims,
    VerifyContext,
    evidence_digest,
)
from broker.evidence.snp import verify_snp_report
from broker.evidence.tpm import VerifiedQuote, verify_quote

__all__ = [
    "AzureResult",
    "AzureSNPVTPMVerifier",
    "AzureTDXVTPMVerifier",
    "verify_az_snp_vtpm",
    "verify_az_tdx_vtpm",
]


@dataclass(frozen=True, slots=True)
class AzureResult:
    """Evidence that verified, with the TPM nonce left for the caller to bind."""

    claims: dict[str, Any]
    flags: dict[str, bool]
    tpm_nonce: bytes
    user_data: str | None
    version: int


def verify_az_snp_vtpm(
    evidence_json: bytes | str | Mapping[str, Any],
    *,
    anchors: TrustAnchors,
    now: datetime,
    expected_nonce: bytes | None = None,
    vcek_der: bytes | None = None,
) -> AzureResult:
    """Verifies az-snp-vtpm evidence; ``vcek_der`` stands in for a missing VCEK.

    Raises:
        EvidenceFormatError, EvidenceSignatureError, CollateralError: as the
            steps below and ``verify_snp_report`` describe.
        FreshnessError: ``expected_nonce`` is given and differs from extraData.
    """
    # (1) Decode the evidence and the HCL report (runtime data, HCLAkPub).
    evidence = AzureEvidence.from_json(evidence_json)
    hcl = HCLReport.from_bytes(evidence.hcl_report)
    if hcl.report_type != HCL_TYPE_SNP:
        raise EvidenceFormatError("HCL report does not hold an SNP report")
    # (2) Hardware: the SNP report verifies against the VCEK and pinned AMD
    #     roots, and was requested from VMPL0 (by the paravisor).
    vek = evidence.vcek or vcek_der
    if vek is None:
        raise CollateralError("no VCEK in the evidence or the collateral")
    hardware = verify_snp_report(hcl.hw_report, vek, anchors=anchors, now=now)
    if int.from_bytes(hcl.hw_report[SNP_VMPL_OFFSET : SNP_VMPL_OFFSET + 4], "little") != HCL_VMPL:
        raise EvidenceSignatureError("SNP report was not requested from VMPL0")
    return _finish(evidence, hcl, hardware, "snp", expected_nonce)


def verify_az_tdx_vtpm(
    evidence_json: bytes | str | Mapping[str, Any],
    collateral_json: bytes,
    *,
    anchors: TrustAnchors,
    now: datetime,
    expected_nonce: bytes | None = None,
) -> AzureResult:
    """Verifies az-tdx-vtpm evidence with DCAP collateral for its TD quote.

    Raises:
        EvidenceFormatError, EvidenceSignatureError, CollateralError: as the
            steps below and ``broker.evidence.dcap.verify_quote`` describe.
        FreshnessError: ``expected_nonce`` is given and differs from extraData.
    """
    # (1) Decode the evidence and the HCL report (runtime data, HCLAkPub).
    evidence = AzureEvidence.from_json(evidence_json)
    hcl = HCLReport.from_bytes(evidence.hcl_report)
    if hcl.report_type != HCL_TYPE_TDX:
        raise EvidenceFormatError("HCL report does not hold a TDREPORT")
    if evidence.td_quote is None:
        raise EvidenceFormatError("az-tdx-vtpm evidence has no td_quote")
    # (2) Hardware: the TD quote verifies through DCAP (PCK chain, QE, TCB).
    hardware = verify_dcap_quote(
        evidence.td_quote, collateral_json, anchors=anchors, now=now, tee="tdx"
    )
    return _finish(evidence, hcl, hardware, "tdx", expected_nonce)


class AzureSNPVTPMVerifier:
    """KBS verifier for ``tee = "az-snp-vtpm"``; binding in the module docstring."""

    tee = "az-snp-vtpm"

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims:
        """Raises EvidenceError subclasses; see ``verify_az_snp_vtpm``."""
        raw = evidence_bytes(evidence, ctx.max_evidence_bytes)
        result = verify_az_snp_vtpm(
            raw,
            anchors=ctx.anchors,
            now=ctx.now,
            expected_nonce=_expected_nonce(ctx),
            vcek_der=ctx.collateral.get("vcek"),
        )
        return _bind(self.tee, raw, result, ctx)


class AzureTDXVTPMVerifier:
    """KBS verifier for ``tee = "az-tdx-vtpm"``; binding in the module docstring."""

    tee = "az-tdx-vtpm"

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims:
        """Raises EvidenceError subclasses; see ``verify_az_tdx_vtpm``."""
        raw = evidence_bytes(evidence, ctx.max_evidence_bytes)
        collateral = ctx.collateral.get("dcap")
        if collateral is None:
            raise CollateralError("no DCAP collateral for the TD quote")
        result = verify_az_tdx_vtpm(
            raw, collateral, anchors=ctx.anchors, now=ctx.now, expected_nonce=_expected_nonce(ctx)
        )
        return _bind(self.tee, raw, result, ctx)


def _finish(
    evidence: AzureEvidence,
    hcl: HCLReport,
    hardware: HardwareResult,
    kind: str,
    expected_nonce: bytes | None,
) -> AzureResult:
    # (3) Runtime data: its SHA-256 is the first half of REPORT_DATA, so the
    #     hardware vouches for HCLAkPub.
    if not hmac.compare_digest(hardware.report_data[:32], hcl.runtime_digest):
        raise EvidenceSignatureError("SHA-256 of the HCL runtime data is not in REPORT_DATA")
    # (4) TPM quote: signed by HCLAkPub; the PCR values hash to pcrDigest.
    quote = verify_quote(
        evidence.tpm_message, evidence.tpm_signature, evidence.tpm_pcrs, hcl.ak_jwk
    )
    # (5) Nonce: extraData is the verifier's qualifying data.
    if expected_nonce is not None and not hmac.compare_digest(quote.nonce, expected_nonce):
        raise FreshnessError("TPM quote extraData does not match the expected nonce")
    # (6) Claims.
    return AzureResult(
        claims=_claims(hcl, quote, hardware, kind),
        flags=dict(hardware.flags),
        tpm_nonce=quote.nonce,
        user_data=user_data_of(hcl.runtime_claims),
        version=evidence.version,
    )


def _claims(
    hcl: HCLReport, quote: VerifiedQuote, hardware: HardwareResult, kind: str
) -> dict[str, Any]:
    n = base64.urlsafe_b64decode(hcl.ak_jwk["n"] + "=" * (-len(hcl.ak_jwk["n"]) % 4))
    if kind == "snp":
        hw_claims = dict(hardware.claims)
        source = "snp.report_data[0:32]"
    else:
        hw_claims = {k: hardware.claims[k] for k in TDX_CLAIMS if k in hardware.claims}
        source = "td_quote.report_data[0:32]"
    return {
        "tpm_quote": "ok",
        "tpm_nonce_hex": quote.nonce.hex(),
        "pcr_selection_sha256": sorted(quote.pcrs),
        "pcrs_sha256": {str(i): quote.pcrs[i].hex() for i in sorted(quote.pcrs)},
        "hcl_report_type": kind.upper(),
        "runtime_data": hcl.runtime_claims,
        "ak_pub_sha256_of_n": hashlib.sha256(n).hexdigest(),
        kind: hw_claims,
        "report_data_binding": f"{source} == SHA-256(HCL runtime data)",
    }


def _bind(tee: str, raw: bytes, result: AzureResult, ctx: VerifyContext) -> VerifiedClaims:
    # Version 2 mirrors the report data into the runtime data's user-data.
    if ctx.expect is not None and result.version == 2:
        user_data = hex_bytes(result.user_data)
        if user_data is None or not hmac.compare_digest(user_data, ctx.expect.report_data):
            raise FreshnessError("runtime user-data does not carry the challenge report data")
    return VerifiedClaims(
        tee=tee, claims=result.claims, flags=result.flags, evidence_digest=evidence_digest(raw)
    )


def _expected_nonce(ctx: VerifyContext) -> bytes | None:
    return None if ctx.expect is None else ctx.expect.runtime_digest
