"""Intel Trust Authority KBS key-transfer policies.

The KBS of Intel Trust Authority (and of Intel SecL before it) attaches a
JSON key-transfer policy to each key::

    {"attestation_type": ["SGX"],
     "sgx": {"attributes": {"mrsigner": [...], "isvprodid": [0],
                            "mrenclave": [...], "isvsvn": 1,
                            "enforce_tcb_upto_date": false}}}

    {"attestation_type": ["TDX"],
     "tdx": {"attributes": {"mrsignerseam": [...], "mrseam": [...],
                            "mrtd": [...], "rtmr0": "...", ...,
                            "enforce_tcb_upto_date": true}}}

Lists mean "any of"; ``isvsvn`` is a minimum. ``attributes`` may also be a
list of such objects (one allow rule each). ``enforce_tcb_upto_date: true``
becomes a deny rule on any TCB status but ``UpToDate``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from broker.policy.importers._emit import PolicyImportError, deny_debug, emit, literal, load_json

_TEES = {"SGX": "sgx", "TDX": "tdx"}
_ANY_OF: Mapping[str, Mapping[str, str]] = {
    "sgx": {
        "mrsigner": "claims.mr_signer",
        "mrenclave": "claims.mr_enclave",
        "isvprodid": "claims.isv_prod_id",
    },
    "tdx": {
        "mrsignerseam": "claims.mr_signer_seam",
        "mrseam": "claims.mr_seam",
        "mrtd": "claims.mr_td",
    },
}
_EXACT: Mapping[str, Mapping[str, str]] = {
    "sgx": {},
    "tdx": {f"rtmr{i}": f"claims.rtmr{i}" for i in range(4)},
}
_MINIMUM: Mapping[str, Mapping[str, str]] = {"sgx": {"isvsvn": "claims.isv_svn"}, "tdx": {}}
_IGNORED = {
    "client_permissions": "client_permissions (TLS client certificate tags) has no counterpart",
    "seamsvn": "seamsvn has no separate claim here (see claims.tee_tcb_svn)",
}


def convert(data: bytes, *, name: str, resources: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """(policy YAML, notes for the operator).

    Raises:
        PolicyImportError: not a key-transfer policy, or an attribute we cannot read.
    """
    doc = load_json(data, "ITA KBS key-transfer policy")
    if not isinstance(doc, Mapping):
        raise PolicyImportError("a key-transfer policy is a JSON object")
    kinds = doc.get("attestation_type")
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(kinds, list) or not kinds:
        raise PolicyImportError("attestation_type must name SGX or TDX")
    notes: list[str] = []
    if "cert_issuer" in doc:
        notes.append("cert_issuer (TLS client CA) dropped: the broker authenticates by attestation")
    rules: list[dict[str, Any]] = []
    for kind in kinds:
        tee = _TEES.get(str(kind).upper())
        if tee is None:
            raise PolicyImportError(f"attestation_type {str(kind)[:20]!r} is not SGX or TDX")
        section = doc.get(tee)
        attributes = section.get("attributes") if isinstance(section, Mapping) else None
        groups = [attributes] if isinstance(attributes, Mapping) else attributes
        if not isinstance(groups, list) or not groups:
            raise PolicyImportError(f"{tee}.attributes is missing")
        rules.append(deny_debug(tee))
        for i, group in enumerate(groups):
            rules += _rules(tee, i, group, notes)
    text = emit(
        name=name,
        description="Converted Intel Trust Authority KBS key-transfer policy",
        resources=resources,
        rules=rules,
        source="an Intel Trust Authority KBS key-transfer policy",
        notes=notes,
    )
    return text, tuple(notes)


def _rules(tee: str, i: int, group: object, notes: list[str]) -> list[dict[str, Any]]:
    if not isinstance(group, Mapping):
        raise PolicyImportError(f"{tee}.attributes[{i}] must be an object")
    when: list[str] = []
    out: list[dict[str, Any]] = []
    for key, value in group.items():
        if key in _ANY_OF[tee]:
            values = value if isinstance(value, list) else [value]
            if not values:
                raise PolicyImportError(f"{tee}.{key} is an empty list: nothing could match")
            items = ", ".join(literal(v) for v in values)
            when.append(f"{_ANY_OF[tee][key]} in [{items}]")
        elif key in _EXACT[tee]:
            when.append(f"{_EXACT[tee][key]} == {literal(value)}")
        elif key in _MINIMUM[tee]:
            when.append(f"{_MINIMUM[tee][key]} >= {literal(value)}")
        elif key == "enforce_tcb_upto_date":
            if value is True:
                out.append(
                    {
                        "name": f"refuse-unsafe-tcb-{tee}-{i}",
                        "tee": tee,
                        "effect": "deny",
                        "when": ['claims.tcb_status != "UpToDate"'],
                    }
                )
        elif key in _IGNORED:
            notes.append(f"{tee}.attributes[{i}]: {_IGNORED[key]}")
        else:
            notes.append(f"{tee}.attributes[{i}]: unknown attribute {key!r}: rule allows nothing")
            when.append("false")
    if not when:
        raise PolicyImportError(f"{tee}.attributes[{i}] pins nothing")
    return [*out, {"name": f"{tee}-attributes-{i}", "tee": tee, "when": when}]
