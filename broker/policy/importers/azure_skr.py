"""Azure Key Vault / Managed HSM Secure Key Release (SKR) policies.

Grammar (learn.microsoft.com, "Azure Key Vault secure key release policy
grammar"): ``{"version": "1.0.0", "anyOf": [authority...]}``, each authority
``{"authority": url, "allOf"|"anyOf": [condition...]}``, each condition a
nested ``allOf``/``anyOf`` or ``{"claim": name, <operator>: value}`` with the
operators ``equals``, ``notEquals``, ``less``, ``lessOrEquals``, ``greater``,
``greaterOrEquals`` and ``exists``.

Each authority becomes one allow rule. Its TEE comes from the
``x-ms-attestation-type`` claim (``sevsnpvm`` -> az-snp-vtpm, ``tdxvm`` ->
az-tdx-vtpm, ``sgx`` -> sgx). The ``authority`` itself has no counterpart:
this broker verifies the hardware evidence against the vendor roots instead
of trusting an attestation service's token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from broker.policy.importers._emit import PolicyImportError, deny_debug, emit, literal, load_json

_TEE_OF_TYPE = {"sevsnpvm": "az-snp-vtpm", "tdxvm": "az-tdx-vtpm", "sgx": "sgx"}
_TYPE_CLAIMS = ("x-ms-attestation-type", "x-ms-isolation-tee.x-ms-attestation-type")
_OPERATORS = {
    "equals": "==",
    "notEquals": "!=",
    "less": "<",
    "lessOrEquals": "<=",
    "greater": ">",
    "greaterOrEquals": ">=",
}
# MAA claim (without the x-ms-isolation-tee. prefix) -> our claim path, per TEE.
_CLAIMS: Mapping[str, Mapping[str, str]] = {
    "az-snp-vtpm": {
        "x-ms-sevsnpvm-is-debuggable": "claims.snp.policy_debug_allowed",
        "x-ms-sevsnpvm-launchmeasurement": "claims.snp.measurement",
        "x-ms-sevsnpvm-hostdata": "claims.snp.host_data",
        "x-ms-sevsnpvm-guestsvn": "claims.snp.guest_svn",
        "x-ms-sevsnpvm-vmpl": "claims.snp.vmpl",
        "x-ms-sevsnpvm-idkeydigest": "claims.snp.id_key_digest",
        "x-ms-sevsnpvm-familyId": "claims.snp.family_id",
        "x-ms-sevsnpvm-imageId": "claims.snp.image_id",
        "x-ms-sevsnpvm-snpfw-svn": "claims.snp.reported_tcb.snp",
        "x-ms-sevsnpvm-microcode-svn": "claims.snp.reported_tcb.microcode",
        "x-ms-sevsnpvm-bootloader-svn": "claims.snp.reported_tcb.bootloader",
        "x-ms-sevsnpvm-tee-svn": "claims.snp.reported_tcb.tee",
    },
    "az-tdx-vtpm": {
        "tdx_mrtd": "claims.tdx.mr_td",
        "tdx_mrseam": "claims.tdx.mr_seam",
        "tdx_mrsignerseam": "claims.tdx.mr_signer_seam",
        "tdx_rtmr0": "claims.tdx.rtmr0",
        "tdx_rtmr1": "claims.tdx.rtmr1",
        "tdx_rtmr2": "claims.tdx.rtmr2",
        "tdx_rtmr3": "claims.tdx.rtmr3",
        "tdx_mrconfigid": "claims.tdx.mr_config_id",
        "tdx_mrowner": "claims.tdx.mr_owner",
        "tdx_mrownerconfig": "claims.tdx.mr_owner_config",
    },
    "sgx": {
        "x-ms-sgx-is-debuggable": "claims.debug",
        "x-ms-sgx-mrenclave": "claims.mr_enclave",
        "x-ms-sgx-mrsigner": "claims.mr_signer",
        "x-ms-sgx-product-id": "claims.isv_prod_id",
        "x-ms-sgx-svn": "claims.isv_svn",
    },
}
MAX_CONDITIONS = 256


def convert(data: bytes, *, name: str, resources: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """(policy YAML, notes for the operator).

    Raises:
        PolicyImportError: not an SKR policy, or no authority names a TEE.
    """
    doc = load_json(data, "Azure SKR policy")
    authorities = doc.get("anyOf") if isinstance(doc, Mapping) else None
    if not isinstance(authorities, list) or not authorities:
        raise PolicyImportError("an SKR policy is an object with a non-empty 'anyOf' list")
    notes: list[str] = []
    rules: list[dict[str, Any]] = []
    for i, authority in enumerate(authorities):
        rules.append(_rule(i, authority, notes))
    tees = sorted({str(r["tee"]) for r in rules})
    debug = [deny_debug(tee) for tee in tees]
    text = emit(
        name=name,
        description=f"Converted Azure SKR policy ({len(rules)} authorities)",
        resources=resources,
        rules=debug + rules,
        source="an Azure Secure Key Release policy",
        notes=notes,
    )
    return text, tuple(notes)


def _rule(i: int, authority: object, notes: list[str]) -> dict[str, Any]:
    if not isinstance(authority, Mapping):
        raise PolicyImportError(f"anyOf[{i}] must be an object")
    kind = "allOf" if "allOf" in authority else "anyOf"
    conditions = authority.get(kind)
    if not isinstance(conditions, list) or not conditions:
        raise PolicyImportError(f"anyOf[{i}] needs a non-empty allOf or anyOf list")
    tee = _find_tee(conditions)
    if tee is None:
        raise PolicyImportError(
            f"anyOf[{i}]: no x-ms-attestation-type condition names a TEE "
            f"({', '.join(sorted(_TEE_OF_TYPE))})"
        )
    if "authority" in authority:
        notes.append(
            f"anyOf[{i}]: authority {str(authority['authority'])[:80]} dropped: "
            "the broker verifies the evidence itself"
        )
    counter = [0]
    parts = [_condition(c, tee, notes, counter) for c in conditions]
    parts = [p for p in parts if p is not None]
    when = parts if kind == "allOf" else [" || ".join(f"({p})" for p in parts)]
    return {"name": f"authority-{i}", "tee": tee, "when": when or ["false"]}


def _find_tee(conditions: list[Any]) -> str | None:
    for cond in conditions:
        if isinstance(cond, Mapping):
            if cond.get("claim") in _TYPE_CLAIMS and cond.get("equals") in _TEE_OF_TYPE:
                return _TEE_OF_TYPE[str(cond["equals"])]
            for key in ("allOf", "anyOf"):
                nested = cond.get(key)
                if isinstance(nested, list) and (tee := _find_tee(nested)) is not None:
                    return tee
    return None


def _condition(cond: object, tee: str, notes: list[str], counter: list[int]) -> str | None:
    counter[0] += 1
    if counter[0] > MAX_CONDITIONS:
        raise PolicyImportError(f"more than {MAX_CONDITIONS} conditions")
    if not isinstance(cond, Mapping):
        raise PolicyImportError("a condition must be an object")
    for key, joiner in (("allOf", " && "), ("anyOf", " || ")):
        if key in cond:
            items = cond[key]
            if not isinstance(items, list) or not items:
                raise PolicyImportError(f"{key} must be a non-empty list")
            parts = [_condition(c, tee, notes, counter) for c in items]
            return joiner.join(f"({p})" for p in parts if p is not None) or "false"
    claim = cond.get("claim")
    if not isinstance(claim, str):
        raise PolicyImportError("a claim condition needs a 'claim' name")
    if claim in _TYPE_CLAIMS:
        return None  # the rule's tee: says it
    short = claim.removeprefix("x-ms-isolation-tee.")
    path = _CLAIMS[tee].get(short)
    operators = [k for k in cond if k != "claim"]
    if len(operators) != 1:
        raise PolicyImportError(f"claim {claim}: exactly one operator expected")
    op = operators[0]
    if path is None:
        notes.append(f"claim {claim} has no counterpart for {tee}: condition set to false")
        return "false"
    if op == "exists":
        return f"has({path})" if cond[op] else f"!has({path})"
    if op not in _OPERATORS:
        raise PolicyImportError(f"claim {claim}: unknown operator {op!r}")
    return f"{path} {_OPERATORS[op]} {literal(cond[op])}"
