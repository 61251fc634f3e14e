"""TCB evaluation of a DCAP quote against verified TCB Info and QE Identity.

    result = evaluate_tcb(quote, pck, signed)
    result.status, result.advisory_ids

Follows the Intel QVL rules (QuoteVerification "TCB level selection",
"TDX module check", "convergeTcbStatus"): the first TCB level, in Intel's
order, whose every component the platform meets gives the status; the QE and
the TDX module statuses can only make it worse. No level matching is not an
error here: it is reported as ``NoMatchingTcbLevel`` for the policy to refuse.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.errors import CollateralError, EvidenceSignatureError
from broker.evidence.dcap_collateral import SignedCollateral
from broker.evidence.dcap_pki import PCKExtension
from broker.evidence.dcap_quote import DCAPQuote, EnclaveReport

NO_MATCH = "NoMatchingTcbLevel"
_OUT_OF_DATE = ("OutOfDate", "OutOfDateConfigurationNeeded")


@dataclass(frozen=True, slots=True)
class TCBResult:
    status: str
    advisory_ids: tuple[str, ...]
    qe_status: str
    tdx_module_status: str | None
    tcb_date: str | None
    eval_data_number: int


@dataclass(frozen=True, slots=True)
class _Level:
    status: str
    advisories: tuple[str, ...]
    date: str | None


def evaluate_tcb(quote: DCAPQuote, pck: PCKExtension, signed: SignedCollateral) -> TCBResult:
    """Raises CollateralError for collateral of another platform or a malformed
    one, EvidenceSignatureError when the QE or TDX module is not Intel's."""
    try:
        return _evaluate(quote, pck, signed.tcb_info, signed.qe_identity)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        # Intel-signed documents of an unexpected shape: refuse, never guess.
        raise CollateralError(f"TCB Info or QE Identity has an unexpected layout: {exc!r}") from exc


def _evaluate(
    quote: DCAPQuote, pck: PCKExtension, tcb_info: Mapping[str, Any], qe_id: Mapping[str, Any]
) -> TCBResult:
    # (T1) The collateral must be for this platform.
    if bytes.fromhex(tcb_info["fmspc"]) != pck.fmspc:
        raise CollateralError(
            f"TCB Info is for FMSPC {tcb_info['fmspc'].lower()}, the PCK for {pck.fmspc.hex()}"
        )
    if bytes.fromhex(tcb_info["pceId"]) != pck.pce_id:
        raise CollateralError("TCB Info PCE id does not match the PCK certificate")
    # (T2) The QE that signed is Intel's, at a known TCB level.
    qe = _qe_level(EnclaveReport.from_bytes(quote.sig.qe_report), qe_id)
    # (T3) Platform TCB level (TDX: also TEE_TCB_SVN; TD 1.5: both SVN arrays).
    platform = _platform_level(quote.tee_tcb_svn, quote, pck, tcb_info)
    module: _Level | None = None
    if quote.is_tdx:
        module = _tdx_module_level(quote, quote.tee_tcb_svn, tcb_info)
        svn2 = quote.tee_tcb_svn2
        if svn2 is not None and platform.status != NO_MATCH:
            current = _platform_level(svn2, quote, pck, tcb_info)
            platform = _relaunch(platform, current)
    # (T4) Converge: the QE and the TDX module can only lower the status.
    status = platform.status
    for part in (qe, module):
        if part is not None and status != NO_MATCH:
            status = _converge(status, part.status)
    advisories: list[str] = []
    for part in (platform, qe, module):
        for advisory in part.advisories if part else ():
            if advisory not in advisories:
                advisories.append(advisory)
    return TCBResult(
        status=status,
        advisory_ids=tuple(advisories),
        qe_status=qe.status,
        tdx_module_status=module.status if module else None,
        tcb_date=platform.date,
        eval_data_number=int(tcb_info["tcbEvaluationDataNumber"]),
    )


def _level(entry: Mapping[str, Any]) -> _Level:
    advisories = entry.get("advisoryIDs", [])
    if not isinstance(advisories, list) or not all(isinstance(a, str) for a in advisories):
        raise TypeError("advisoryIDs")
    status = entry["tcbStatus"]
    if not isinstance(status, str):
        raise TypeError("tcbStatus")
    date = entry.get("tcbDate")
    return _Level(status, tuple(advisories), date if isinstance(date, str) else None)


def _masked_equal(actual: bytes, expected_hex: str, mask_hex: str) -> bool:
    expected, mask = bytes.fromhex(expected_hex), bytes.fromhex(mask_hex)
    if len(expected) != len(actual) or len(mask) != len(actual):
        return False
    return all(a & m == e & m for a, e, m in zip(actual, expected, mask, strict=True))


def _qe_level(report: EnclaveReport, qe_id: Mapping[str, Any]) -> _Level:
    misc = report.misc_select.to_bytes(4, "big")
    genuine = (
        report.mr_signer == bytes.fromhex(qe_id["mrsigner"])
        and report.isv_prod_id == int(qe_id["isvprodid"])
        and _masked_equal(misc, qe_id["miscselect"], qe_id["miscselectMask"])
        and _masked_equal(report.attributes, qe_id["attributes"], qe_id["attributesMask"])
    )
    if not genuine:
        raise EvidenceSignatureError("the quoting enclave does not match Intel's QE Identity")
    for entry in qe_id["tcbLevels"]:
        if report.isv_svn >= int(entry["tcb"]["isvsvn"]):
            return _level(entry)
    return _Level(NO_MATCH, (), None)


def _platform_level(
    tee_tcb_svn: bytes, quote: DCAPQuote, pck: PCKExtension, tcb_info: Mapping[str, Any]
) -> _Level:
    # TEE_TCB_SVN[1] > 0 names the TDX module version; its SVN in byte 0 is then
    # judged by tdxModuleIdentities, not by the TCB levels.
    skip = (0, 1) if quote.is_tdx and tee_tcb_svn[1] > 0 else ()
    for entry in tcb_info["tcbLevels"]:
        tcb = entry["tcb"]
        if not _components_meet(pck.comp_svns, tcb["sgxtcbcomponents"], ()):
            continue
        if pck.pce_svn < int(tcb["pcesvn"]):
            continue
        if quote.is_tdx and not _components_meet(tee_tcb_svn, tcb["tdxtcbcomponents"], skip):
            continue
        return _level(entry)
    return _Level(NO_MATCH, (), None)


def _components_meet(svns: Sequence[int], components: Sequence[Any], skip: Sequence[int]) -> bool:
    if len(components) != 16:
        raise ValueError("a TCB level must list 16 components")
    return all(svns[i] >= int(comp["svn"]) for i, comp in enumerate(components) if i not in skip)


def _tdx_module_level(
    quote: DCAPQuote, tee_tcb_svn: bytes, tcb_info: Mapping[str, Any]
) -> _Level | None:
    version, svn = tee_tcb_svn[1], tee_tcb_svn[0]
    if version == 0:
        module = tcb_info["tdxModule"]
        _check_module(quote, module)
        return None
    wanted = f"TDX_{version:02X}"
    for identity in tcb_info.get("tdxModuleIdentities", []):
        if str(identity["id"]).upper() == wanted:
            _check_module(quote, identity)
            for entry in identity["tcbLevels"]:
                if svn >= int(entry["tcb"]["isvsvn"]):
                    return _level(entry)
            return _Level(NO_MATCH, (), None)
    return _Level(NO_MATCH, (), None)


def _check_module(quote: DCAPQuote, module: Mapping[str, Any]) -> None:
    if quote.mr_signer_seam != bytes.fromhex(module["mrsigner"]) or not _masked_equal(
        quote.seam_attributes, module["attributes"], module["attributesMask"]
    ):
        raise EvidenceSignatureError("the TDX module does not match Intel's TDX module identity")


def _converge(status: str, part: str) -> str:
    """Intel QVL convergeTcbStatus: a worse QE or module status wins."""
    if part == "Revoked" or status == "Revoked":
        return "Revoked"
    if part == NO_MATCH:
        return NO_MATCH
    if part in _OUT_OF_DATE:
        if "Configuration" in status:
            return "OutOfDateConfigurationNeeded"
        if status in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
    return status


def _relaunch(launch: _Level, current: _Level) -> _Level:
    """TD 1.5: the module now running may be newer than the one the TD started on."""
    if current.status == NO_MATCH:
        return current
    merged = launch.advisories + tuple(a for a in current.advisories if a not in launch.advisories)
    status = launch.status
    if status in _OUT_OF_DATE and current.status not in _OUT_OF_DATE:
        status = "RelaunchAdvised"
    return _Level(status, merged, launch.date)
