"""The claims and flags each TEE's verifier reports, with their CEL types.

Lint type-checks every condition against this schema, so that a misspelt
claim or a comparison of an integer with a string is caught before a policy
goes live (at run time both simply deny). The schema is taken from what the
verifiers in ``broker.evidence`` emit for the real evidence corpus (the
``*.expected.json`` claims) and from their code, including claims that only
some reports carry (``tee_tcb_svn2``, ``mr_servicetd``: TD 1.5 quotes).

Example::

    kind = claim_type("sev-snp", ("reported_tcb", "snp"))   # ClaimType(kind="int")
    suggest("sev-snp", ("measurment",))                     # "claims.measurement"
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ANY",
    "BOOL",
    "FLAGS",
    "INT",
    "MEASUREMENT_CLAIM",
    "SCHEMAS",
    "STRING",
    "ClaimType",
    "claim_at",
    "claim_type",
    "flag_names",
    "measurement_of",
    "suggest",
    "synthetic_claims",
]


@dataclass(frozen=True, slots=True)
class ClaimType:
    """``kind`` is ``string``, ``int``, ``bool``, ``list``, ``map`` or ``any``.

    A ``map`` has named ``fields`` (fixed layout) or, when ``fields`` is
    empty, string keys from ``keys`` whose values are ``element``. ``hex``
    strings are lower-case; ``nullable`` values may be ``null``.
    """

    kind: str
    doc: str = ""
    fields: Mapping[str, ClaimType] = field(default_factory=dict)
    element: ClaimType | None = None
    keys: tuple[str, ...] = ()
    hex_bytes: int = 0
    nullable: bool = False
    example: object = None

    def describe(self) -> str:
        if self.kind == "string" and self.hex_bytes:
            text = f"hex ({self.hex_bytes} bytes)"
        elif self.kind == "list" and self.element is not None:
            text = f"list of {self.element.describe()}"
        elif self.kind == "map" and not self.fields and self.element is not None:
            text = f"map of {self.element.describe()}"
        else:
            text = self.kind
        return text + " or null" if self.nullable else text


STRING = ClaimType("string")
INT = ClaimType("int")
BOOL = ClaimType("bool")
ANY = ClaimType("any")


def _hex(size: int, doc: str = "") -> ClaimType:
    return ClaimType("string", doc=doc, hex_bytes=size)


def _str(doc: str = "", example: str = "") -> ClaimType:
    return ClaimType("string", doc=doc, example=example)


def _int(doc: str = "") -> ClaimType:
    return ClaimType("int", doc=doc)


def _bool(doc: str = "") -> ClaimType:
    return ClaimType("bool", doc=doc)


def _list(element: ClaimType, doc: str = "") -> ClaimType:
    return ClaimType("list", doc=doc, element=element)


def _pcrs(count: int, size: int, doc: str) -> ClaimType:
    return ClaimType("map", doc=doc, element=_hex(size), keys=tuple(str(i) for i in range(count)))


_TCB_MILAN = {
    "bootloader": _int(),
    "tee": _int(),
    "snp": _int("SNP firmware SVN"),
    "microcode": _int(),
    "fmc": _int("Turin only"),
}


def _tcb(doc: str) -> ClaimType:
    return ClaimType("map", doc=doc, fields=_TCB_MILAN)


_SNP: dict[str, ClaimType] = {
    "report_version": _int("ATTESTATION_REPORT VERSION"),
    "guest_svn": _int("GUEST_SVN"),
    "policy": _str("guest POLICY, hex text", "0x30000"),
    "policy_debug_allowed": _bool("POLICY.DEBUG"),
    "policy_smt_allowed": _bool("POLICY.SMT"),
    "policy_migrate_ma": _bool("POLICY.MIGRATE_MA"),
    "policy_single_socket": _bool("POLICY.SINGLE_SOCKET"),
    "vmpl": _int("VMPL that requested the report"),
    "signature_algo": _int(),
    "signing_key": _str("VCEK or VLEK", "VCEK"),
    "author_key_en": _int(),
    "mask_chip_key": _int(),
    "measurement": _hex(48, "launch MEASUREMENT"),
    "report_data": _hex(64, "REPORT_DATA"),
    "host_data": _hex(32, "HOST_DATA"),
    "family_id": _hex(16),
    "image_id": _hex(16),
    "id_key_digest": _hex(48),
    "author_key_digest": _hex(48),
    "report_id": _hex(32),
    "report_id_ma": _hex(32),
    "chip_id": _hex(64),
    "platform_info": _str("PLATFORM_INFO, hex text", "0x1"),
    "reported_tcb": _tcb("REPORTED_TCB: the TCB the report was signed under"),
    "current_tcb": _tcb("CURRENT_TCB"),
    "committed_tcb": _tcb("COMMITTED_TCB"),
    "launch_tcb": _tcb("LAUNCH_TCB"),
    "current_fw": _str("firmware version", "1.55.29"),
    "cpuid_fam_id": _str("CPUID family, hex text (report v3+)", "0x19"),
    "cpuid_mod_id": _str("CPUID model, hex text (report v3+)", "0x1"),
    "vek_product_name_ext": _str("product of the VCEK/VLEK", "Milan-B0"),
}

_DCAP_COMMON: dict[str, ClaimType] = {
    "report_data": _hex(64, "REPORT_DATA"),
    "debug": _bool("debug TD / enclave"),
    "fmspc": _hex(6, "platform FMSPC"),
    "quote_version": _int(),
    "pck_validity": _list(STRING, "PCK certificate not-before, not-after"),
    "tcb_status": _str("matched TCB level status", "UpToDate"),
    "advisory_ids": _list(STRING, "Intel advisories of the matched TCB level"),
    "qe_identity_status": _str("QE identity TCB status", "UpToDate"),
    "tcb_date": ClaimType("string", doc="TCB date of the matched level", nullable=True),
    "tcb_eval_data_number": _int(),
}

_TDX: dict[str, ClaimType] = {
    "tee_tcb_svn": _hex(16, "TEE_TCB_SVN"),
    "mr_seam": _hex(48, "MRSEAM"),
    "mr_signer_seam": _hex(48, "MRSIGNERSEAM"),
    "seam_attributes": _hex(8),
    "td_attributes": _hex(8, "TD_ATTRIBUTES"),
    "xfam": _hex(8),
    "mr_td": _hex(48, "MRTD: the initial TD image"),
    "mr_config_id": _hex(48),
    "mr_owner": _hex(48),
    "mr_owner_config": _hex(48),
    "rtmr0": _hex(48),
    "rtmr1": _hex(48),
    "rtmr2": _hex(48),
    "rtmr3": _hex(48),
    "tee_tcb_svn2": _hex(16, "TD 1.5 (quote v5) only"),
    "mr_servicetd": _hex(48, "TD 1.5 (quote v5) only"),
    "sept_ve_disable": _bool("TD_ATTRIBUTES.SEPT_VE_DISABLE"),
    "tdx_module_status": ClaimType("string", doc="TDX module identity status", nullable=True),
    **_DCAP_COMMON,
}

_SGX: dict[str, ClaimType] = {
    "cpu_svn": _hex(16, "CPUSVN"),
    "misc_select": _int(),
    "attributes": _hex(16, "ATTRIBUTES"),
    "mr_enclave": _hex(32, "MRENCLAVE"),
    "mr_signer": _hex(32, "MRSIGNER"),
    "isv_prod_id": _int("ISVPRODID"),
    "isv_svn": _int("ISVSVN"),
    **_DCAP_COMMON,
}

_NITRO: dict[str, ClaimType] = {
    "module_id": _str("enclave id"),
    "timestamp_ms": _int("document time, ms since the epoch"),
    "timestamp": _str("document time, RFC 3339"),
    "public_key": ClaimType("string", doc="hex, when the enclave set one", nullable=True),
    "user_data": ClaimType("string", doc="hex, when the enclave set it", nullable=True),
    "nonce": ClaimType("string", doc="hex, when the enclave set it", nullable=True),
    "digest": _str("PCR bank", "SHA384"),
    "pcrs": _pcrs(16, 48, "PCR index (string) -> value"),
    "debug_mode": _bool("PCR0-2 all zero: started with a console"),
    "leaf_cert_subject": _str(),
}

_VTPM: dict[str, ClaimType] = {
    "tpm_quote": _str("always ok once verified", "ok"),
    "tpm_nonce_hex": ClaimType("string", doc="TPM extraData (hex)"),
    "pcr_selection_sha256": _list(INT),
    "pcrs_sha256": _pcrs(24, 32, "vTPM SHA-256 PCR index (string) -> value"),
    "hcl_report_type": _str("SNP or TDX"),
    "runtime_data": ClaimType("map", doc="HCL runtime data (JSON as sent)", element=ANY),
    "ak_pub_sha256_of_n": _hex(32),
    "report_data_binding": _str(),
}

# The Azure TDX verifier passes on this subset of the TD quote's claims.
_AZ_TDX_FIELDS = {
    k: v
    for k, v in _TDX.items()
    if k
    not in (
        "quote_version",
        "pck_validity",
        "tee_tcb_svn2",
        "mr_servicetd",
        "qe_identity_status",
        "tcb_date",
        "tcb_eval_data_number",
    )
}

SCHEMAS: Mapping[str, Mapping[str, ClaimType]] = {
    "sample": {
        "svn": _int("security version the guest claims"),
        "report_data": _hex(64),
        "measurement": _str("hex, when the guest sent one"),
        "debug": _bool(),
    },
    "sev-snp": _SNP,
    "tdx": _TDX,
    "sgx": _SGX,
    "nitro": _NITRO,
    "az-snp-vtpm": {
        **_VTPM,
        "snp": ClaimType("map", doc="the SNP report's claims", fields=_SNP),
    },
    "az-tdx-vtpm": {
        **_VTPM,
        "tdx": ClaimType("map", doc="the TD quote's claims", fields=_AZ_TDX_FIELDS),
    },
}

_DCAP_FLAGS = (
    "debug",
    "tcb_up_to_date",
    "tcb_out_of_date",
    "tcb_configuration_needed",
    "tcb_sw_hardening_needed",
    "tcb_relaunch_advised",
    "tcb_no_match",
)
_SNP_FLAGS = (
    "debug",
    "smt_allowed",
    "migrate_ma_allowed",
    "vmpl_nonzero",
    "author_key_en",
    "signing_key_vlek",
    "reported_tcb_below_current",
)
_TDX_FLAGS = (*_DCAP_FLAGS, "sept_ve_enabled", "mr_servicetd_set")

FLAGS: Mapping[str, tuple[str, ...]] = {
    "sample": ("debug",),
    "sev-snp": _SNP_FLAGS,
    "tdx": _TDX_FLAGS,
    "sgx": _DCAP_FLAGS,
    "nitro": ("debug",),
    "az-snp-vtpm": _SNP_FLAGS,
    "az-tdx-vtpm": _TDX_FLAGS,
}


# The claim that pins what code runs, per TEE: what ``broker refs add`` takes
# from a piece of evidence and what simulation reports group by.
MEASUREMENT_CLAIM: Mapping[str, tuple[str, ...]] = {
    "sample": ("measurement",),
    "sev-snp": ("measurement",),
    "tdx": ("mr_td",),
    "sgx": ("mr_enclave",),
    "nitro": ("pcrs", "0"),
    "az-snp-vtpm": ("snp", "measurement"),
    "az-tdx-vtpm": ("tdx", "mr_td"),
}


def measurement_of(tee: str, claims: Mapping[str, Any]) -> str | None:
    """The value of the TEE's measurement claim, if the claims carry it."""
    value: Any = claims
    for name in MEASUREMENT_CLAIM.get(tee, ()):
        if not isinstance(value, Mapping) or name not in value:
            return None
        value = value[name]
    return value if isinstance(value, str) and value is not claims else None


def claim_at(claims: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """The value at ``path`` in a claims document.

    Raises:
        KeyError: no value there.
    """
    value: Any = claims
    for name in path:
        if not isinstance(value, Mapping) or name not in value:
            raise KeyError(".".join(path))
        value = value[name]
    return value


def flag_names(tee: str) -> tuple[str, ...]:
    return FLAGS.get(tee, ())


def claim_type(tee: str, path: tuple[str, ...]) -> ClaimType | None:
    """The type at ``claims.<path>`` for ``tee``, or None if no such claim.

    A path that goes below an ``any`` value resolves to ``any``.
    """
    fields = SCHEMAS.get(tee)
    if fields is None or not path:
        return None
    current = fields.get(path[0])
    for name in path[1:]:
        if current is None:
            return None
        if current.kind == "any":
            return ANY
        if current.kind == "map" and current.fields:
            current = current.fields.get(name)
        elif current.kind == "map" and current.element is not None:
            if current.keys and name not in current.keys:
                return None
            current = current.element
        else:
            return None
    return current


def suggest(tee: str, path: tuple[str, ...]) -> str | None:
    """The closest known ``claims.`` path to ``path`` (for "did you mean")."""
    known = [".".join(p) for p in _paths(SCHEMAS.get(tee, {}), ())]
    wanted = ".".join(path)
    match = difflib.get_close_matches(wanted, known, n=1, cutoff=0.6)
    if not match:
        leaf = difflib.get_close_matches(path[-1], [k.rsplit(".", 1)[-1] for k in known], n=1)
        match = [k for k in known if leaf and k.rsplit(".", 1)[-1] == leaf[0]][:1]
    return f"claims.{match[0]}" if match else None


def _paths(fields: Mapping[str, ClaimType], prefix: tuple[str, ...]) -> list[tuple[str, ...]]:
    out = []
    for name, kind in fields.items():
        out.append((*prefix, name))
        if kind.kind == "map" and kind.fields:
            out += _paths(kind.fields, (*prefix, name))
    return out


def synthetic_claims(tee: str) -> dict[str, Any]:
    """A claims document of the right shape and types for ``tee``, for
    type-checking conditions by running them (values are placeholders)."""
    return {name: _value(kind) for name, kind in SCHEMAS.get(tee, {}).items()}


def _value(kind: ClaimType) -> Any:
    if kind.kind == "string":
        return "00" * kind.hex_bytes if kind.hex_bytes else str(kind.example or "x")
    if kind.kind == "int":
        return 0
    if kind.kind == "bool":
        return False
    if kind.kind == "list":
        return [_value(kind.element)] if kind.element is not None else []
    if kind.kind == "map" and kind.fields:
        return {name: _value(sub) for name, sub in kind.fields.items()}
    if kind.kind == "map" and kind.element is not None:
        return {key: _value(kind.element) for key in kind.keys}
    return {}
