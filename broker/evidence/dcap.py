"""Intel SGX / TDX DCAP quote verification against supplied collateral.

    result = verify_quote(quote, collateral_json, anchors=anchors, now=now, tee="tdx")
    result.claims["mr_td"], result.claims["tcb_status"], result.flags["debug"]

Two independent verifiers must agree: this package's own (pyca/cryptography)
and ``dcap-qvl``. dcap-qvl refuses some genuine quotes outright (debug TDs and
enclaves, SEPT_VE_DISABLE=0, a non-zero MRSERVICETD, no matching TCB level);
a key-release policy must see those and say why it refuses, so for exactly
those refusals, when the parsed quote confirms the reason, the own verifier's
result stands. The collateral is always passed in; nothing here touches the
network.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

import dcap_qvl  # type: ignore[import-untyped,unused-ignore]
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.errors import (
    CollateralError,
    EvidenceError,
    EvidenceFormatError,
    EvidenceSignatureError,
)
from broker.evidence.binding import verify_report_data
from broker.evidence.dcap_collateral import Collateral, verify_collateral
from broker.evidence.dcap_pki import (
    PCKExtension,
    check_not_revoked,
    load_pem_chain,
    verify_chain,
    verify_p256,
)
from broker.evidence.dcap_quote import DCAPQuote
from broker.evidence.dcap_tcb import NO_MATCH, TCBResult, evaluate_tcb
from broker.evidence.model import (
    HardwareResult,
    TrustAnchors,
    VerifiedClaims,
    VerifyContext,
    evidence_digest,
)

__all__ = ["decode_quote_evidence", "verify_evidence", "verify_quote"]

ROOT_ANCHOR = "intel-sgx-root-ca"
# The extension ships partial stubs; every value it returns is checked here.
_QVL: Any = dcap_qvl
_STATUS_FLAGS: dict[str, Callable[[str], bool]] = {
    "tcb_up_to_date": lambda s: s == "UpToDate",
    "tcb_out_of_date": lambda s: s.startswith("OutOfDate"),
    "tcb_configuration_needed": lambda s: "Configuration" in s,
    "tcb_sw_hardening_needed": lambda s: "SWHardeningNeeded" in s,
    "tcb_relaunch_advised": lambda s: s.startswith("RelaunchAdvised"),
    "tcb_no_match": lambda s: s == NO_MATCH,
}


def verify_quote(
    quote: bytes,
    collateral_json: bytes,
    *,
    anchors: TrustAnchors,
    now: datetime,
    tee: Literal["tdx", "sgx"],
) -> HardwareResult:
    """Verifies a DCAP quote at ``now``; returns its claims and policy flags.

    Steps:
      (1) Parse the quote (v3/v4/v5) and check it is a ``tee`` quote.
      (2) PCK chain (in the quote) to the pinned Intel SGX Root CA, valid at now.
      (3) QE report signed by the PCK key; QE REPORT_DATA binds the attestation
          key and QE auth data.
      (4) Quote signed by the attestation key over header and body.
      (5) Collateral: Intel signatures, dates, CRLs (PCK and intermediate CA
          not revoked).
      (6) TCB evaluation: QE identity, platform TCB level, TDX module.
      (7) Second opinion: dcap-qvl must agree, or refuse for a reason the
          quote itself confirms.
      (8) Claims and flags. A revoked TCB fails here; every other status is
          the policy's to judge.

    Raises:
        EvidenceFormatError: malformed quote or a quote of another TEE.
        EvidenceSignatureError: a bad signature or certificate chain.
        CollateralError: missing, malformed, stale, revoked or foreign collateral.
        EvidenceError: the two verifiers disagree.
    """
    if now.tzinfo is None:
        raise EvidenceFormatError("verification time must be timezone-aware")
    now = now.astimezone(UTC)
    # (1)
    parsed = DCAPQuote.from_bytes(quote)
    if parsed.is_tdx != (tee == "tdx"):
        raise EvidenceFormatError(f"quote is not a {tee.upper()} quote")
    root = _pinned_root(anchors)
    # (2)
    pck_chain = load_pem_chain(parsed.sig.pck_chain_pem, error=EvidenceSignatureError)
    if len(pck_chain) != 3:
        raise EvidenceSignatureError("PCK chain must be PCK, intermediate CA and root")
    verify_chain(pck_chain, root, now=now, error=EvidenceSignatureError)
    pck = PCKExtension.from_certificate(pck_chain[0])
    # (3)
    sig = parsed.sig
    verify_p256(
        pck_chain[0], sig.qe_report_signature, sig.qe_report,
        what="QE report", error=EvidenceSignatureError,
    )  # fmt: skip
    _check_qe_binding(parsed)
    # (4)
    verify_p256(
        sig.attestation_key, sig.signature, parsed.signed,
        what="quote", error=EvidenceSignatureError,
    )  # fmt: skip
    # (5)
    collateral = Collateral.from_json(collateral_json)
    signed = verify_collateral(collateral, root, now=now, tee=tee)
    check_not_revoked(pck_chain[1], collateral.root_ca_crl, root, now=now)
    check_not_revoked(pck_chain[0], collateral.pck_crl, pck_chain[1], now=now)
    # (6)
    tcb = evaluate_tcb(parsed, pck, signed)
    # (7)
    _second_opinion(
        raw=quote, collateral_json=collateral_json, root=root, now=now, parsed=parsed, tcb=tcb
    )
    # (8)
    if tcb.status == "Revoked":
        raise CollateralError("the platform TCB level is revoked")
    return _result(parsed, pck, pck_chain[0], tcb)


def _pinned_root(anchors: TrustAnchors) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(anchors.get(ROOT_ANCHOR))
    except ValueError as exc:
        raise EvidenceFormatError(f"pinned root {ROOT_ANCHOR!r} is not a PEM certificate") from exc


def _check_qe_binding(quote: DCAPQuote) -> None:
    sig = quote.sig
    expected = hashlib.sha256(sig.attestation_key + sig.qe_auth_data).digest() + bytes(32)
    if sig.qe_report[320:384] != expected:
        raise EvidenceSignatureError("QE report data does not bind the attestation key")


# dcap-qvl 0.7.0 refusals of genuine evidence, and the quote facts that confirm them.
_KNOWN_REFUSALS: dict[str, Callable[[DCAPQuote, TCBResult], bool]] = {
    "Debug mode is enabled": lambda q, t: q.debug,
    "SEPT_VE_DISABLE is not enabled": lambda q, t: not q.sept_ve_disable,
    "Invalid MR service TD": lambda q, t: q.mr_servicetd_set,
    "No matching TCB level found": lambda q, t: t.status == NO_MATCH,
}


def _second_opinion(
    *,
    raw: bytes,
    collateral_json: bytes,
    root: x509.Certificate,
    now: datetime,
    parsed: DCAPQuote,
    tcb: TCBResult,
) -> None:
    try:
        qvl_collateral = _QVL.QuoteCollateralV3.from_json(collateral_json.decode())
        report = _QVL.verify_with_root_ca(
            raw, qvl_collateral, root.public_bytes(Encoding.DER), int(now.timestamp())
        )
        status, advisories = str(report.status), sorted(str(a) for a in report.advisory_ids)
    except (ValueError, RuntimeError, TypeError, UnicodeDecodeError) as exc:
        message = str(exc)
        for reason, confirmed in _KNOWN_REFUSALS.items():
            if reason in message and confirmed(parsed, tcb):
                return
        raise EvidenceError(f"dcap-qvl refused a quote this verifier accepted: {message}") from exc
    if status != tcb.status or advisories != sorted(tcb.advisory_ids):
        raise EvidenceError(
            f"verifiers disagree on the TCB: dcap-qvl {status} {advisories}, "
            f"own {tcb.status} {sorted(tcb.advisory_ids)}"
        )


def _result(
    parsed: DCAPQuote, pck: PCKExtension, leaf: x509.Certificate, tcb: TCBResult
) -> HardwareResult:
    claims: dict[str, Any] = parsed.report_claims()
    claims.update(
        fmspc=pck.fmspc.hex(),
        quote_version=parsed.version,
        pck_validity=[
            leaf.not_valid_before_utc.isoformat(),
            leaf.not_valid_after_utc.isoformat(),
        ],
        tcb_status=tcb.status,
        advisory_ids=list(tcb.advisory_ids),
        qe_identity_status=tcb.qe_status,
        tcb_date=tcb.tcb_date,
        tcb_eval_data_number=tcb.eval_data_number,
    )
    if parsed.is_tdx:
        claims["tdx_module_status"] = tcb.tdx_module_status
    flags = {name: test(tcb.status) for name, test in _STATUS_FLAGS.items()}
    flags["debug"] = parsed.debug
    if parsed.is_tdx:
        flags["sept_ve_enabled"] = not parsed.sept_ve_disable
        flags["mr_servicetd_set"] = parsed.mr_servicetd_set
    return HardwareResult(claims=claims, flags=flags, report_data=parsed.report_data)


def verify_evidence(
    evidence: object, ctx: VerifyContext, *, tee: Literal["tdx", "sgx"]
) -> VerifiedClaims:
    """The Trustee guest evidence JSON for ``tee``, bound to ``ctx.expect``.

    Accepted forms: ``{"quote": <base64>, ...}`` as Trustee's attesters send it
    (TDX adds ``cc_eventlog`` / ``aa_eventlog``, which are not evaluated here),
    optionally with ``"collateral": <QuoteCollateralV3 object>``; otherwise the
    collateral comes from ``ctx.collateral["dcap"]``.

    Raises:
        EvidenceFormatError, EvidenceSignatureError, CollateralError: see verify_quote.
        FreshnessError: REPORT_DATA does not bind the challenge.
    """
    quote, supplied = decode_quote_evidence(evidence, limit=ctx.max_evidence_bytes)
    collateral = _collateral_bytes(supplied, ctx)
    result = verify_quote(quote, collateral, anchors=ctx.anchors, now=ctx.now, tee=tee)
    if ctx.expect is not None:
        verify_report_data(result.report_data, ctx.expect)
    return VerifiedClaims(
        tee=tee,
        claims=result.claims,
        flags=result.flags,
        evidence_digest=evidence_digest(quote),
    )


def decode_quote_evidence(evidence: object, *, limit: int) -> tuple[bytes, object]:
    """The raw quote and the evidence's own ``collateral`` member (None when absent).

    The forms are those of ``verify_evidence``; ``limit`` bounds the quote.

    Raises:
        EvidenceFormatError: not a JSON object with a standard base64 ``quote``.
    """
    doc = _evidence_object(evidence)
    return _decode_quote(doc.get("quote"), limit), doc.get("collateral")


def _evidence_object(evidence: object) -> dict[str, Any]:
    if isinstance(evidence, (str, bytes)):
        try:
            evidence = json.loads(evidence)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise EvidenceFormatError("evidence is not JSON") from exc
    if not isinstance(evidence, dict):
        raise EvidenceFormatError("evidence must be a JSON object with a 'quote' field")
    return evidence


def _decode_quote(value: object, limit: int) -> bytes:
    if not isinstance(value, str):
        raise EvidenceFormatError("evidence field 'quote' missing or not a string")
    if len(value) > limit * 4 // 3 + 4:
        raise EvidenceFormatError("quote exceeds the evidence size limit")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceFormatError("evidence field 'quote' is not standard base64") from exc


def _collateral_bytes(value: object, ctx: VerifyContext) -> bytes:
    if value is not None:
        if not isinstance(value, dict):
            raise CollateralError("evidence field 'collateral' must be a JSON object")
        return json.dumps(value).encode()
    supplied = ctx.collateral.get("dcap")
    if supplied is None:
        raise CollateralError("no DCAP collateral supplied")
    return supplied
