"""Which collateral a piece of evidence needs, named by values taken from it.

    req = collateral_request("sev-snp", evidence)     # None: nothing to fetch
    collateral = {} if req is None else await source.fetch(req)  # e.g. CachedCollateral
    ctx = VerifyContext(now=now, anchors=anchors, collateral=collateral)

Guests often send SEV-SNP evidence without the VCEK, and DCAP quotes only
carry the PCK chain, never Intel's TCB Info, QE Identity and CRLs. This module
reads the evidence far enough to name what is missing; it verifies nothing.
Every value read here is checked again by the verifier (the VEK must certify
the report's CHIP_ID and REPORTED_TCB, the TCB Info must be for the PCK's
FMSPC), so a request built from forged evidence can only fetch collateral that
then fails to verify it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from broker.errors import (
    CollateralError,
    EvidenceFormatError,
    EvidenceSignatureError,
    UnsupportedTEE,
)
from broker.evidence import canonical_tee
from broker.evidence.azure_hcl import (
    HCL_TYPE_SNP,
    HCL_TYPE_TDX,
    AzureEvidence,
    HCLReport,
    evidence_bytes,
)
from broker.evidence.dcap import decode_quote_evidence
from broker.evidence.dcap_pki import PCKExtension, load_pem_chain
from broker.evidence.dcap_quote import DCAPQuote
from broker.evidence.snp_evidence import decode_parts
from broker.evidence.snp_report import SIGNING_NONE, SIGNING_VLEK, Product, SNPReport

__all__ = [
    "DCAP_TEES",
    "DEFAULT_MAX_EVIDENCE_BYTES",
    "LEGACY_SNP_PRODUCT",
    "PCK_CAS",
    "SNP_PRODUCTS",
    "CollateralRequest",
    "collateral_request",
]

SNP_PRODUCTS = frozenset(p.value for p in Product)
DCAP_TEES = frozenset({"tdx", "sgx"})
PCK_CAS = frozenset({"processor", "platform"})
# Report versions before 3 carry no CPUID fields: the first SNP generation is
# assumed (docs/evidence.md says what a Genoa site with such firmware does).
LEGACY_SNP_PRODUCT = Product.MILAN.value
DEFAULT_MAX_EVIDENCE_BYTES = 1 << 20

_CHIP_ID_HEX = 128  # CHIP_ID is 64 bytes in every report version
_TCB_HEX = 16  # TCB_VERSION is 8 bytes
_FMSPC_HEX = 12  # FMSPC is 6 bytes
_HEX = re.compile(r"[0-9a-f]*")

# CPUID family and model ranges per product (report v3+, offsets 0x188/0x189).
# Bergamo and Siena (family 0x19, models 0xA0-0xAF) are Genoa parts for AMD KDS.
_PRODUCT_BY_CPUID: tuple[tuple[int, range, Product], ...] = (
    (0x19, range(0x00, 0x10), Product.MILAN),
    (0x19, range(0x10, 0x20), Product.GENOA),
    (0x19, range(0xA0, 0xB0), Product.GENOA),
    (0x1A, range(0x00, 0x12), Product.TURIN),
)
# The issuer of a PCK certificate names the CA, whose CRL the collateral holds.
_PCK_CA_BY_ISSUER = {
    "Intel SGX PCK Processor CA": "processor",
    "Intel SGX PCK Platform CA": "platform",
}


@dataclass(frozen=True, slots=True)
class CollateralRequest:
    """What collateral is needed, named by values taken from the evidence.

    SEV-SNP: ``chip_id`` (128 hex chars), ``reported_tcb`` (16 hex chars of
    the raw TCB_VERSION) and ``product`` (Milan, Genoa or Turin). TDX and SGX:
    ``fmspc`` (12 hex chars) and ``ca`` (``processor`` or ``platform``, the PCK
    CA that issued the platform's PCK certificate). Keys become file names and
    URL parts, so anything but exact-length hex is refused here, once.

    Raises:
        CollateralError: unknown tee, or a key that is missing or malformed.
    """

    tee: str
    chip_id: str = ""
    reported_tcb: str = ""
    product: str = ""
    fmspc: str = ""
    ca: str = ""

    def __post_init__(self) -> None:
        unused: tuple[str, ...]
        for name in ("chip_id", "reported_tcb", "fmspc"):
            object.__setattr__(self, name, str(getattr(self, name)).lower())
        if self.tee == "sev-snp":
            _require_hex("chip_id", self.chip_id, _CHIP_ID_HEX)
            _require_hex("reported_tcb", self.reported_tcb, _TCB_HEX)
            if self.product not in SNP_PRODUCTS:
                raise CollateralError(f"unknown SEV-SNP product {self.product[:16]!r}")
            unused = (self.fmspc, self.ca)
        elif self.tee in DCAP_TEES:
            _require_hex("fmspc", self.fmspc, _FMSPC_HEX)
            if self.ca not in PCK_CAS:
                raise CollateralError(f"unknown PCK CA {self.ca[:16]!r}")
            unused = (self.chip_id, self.reported_tcb, self.product)
        else:
            raise CollateralError(f"no collateral is defined for tee {self.tee[:16]!r}")
        if any(unused):
            raise CollateralError(f"collateral request sets keys that {self.tee} does not use")

    @classmethod
    def for_snp(cls, chip_id: bytes, reported_tcb: bytes, product: str) -> CollateralRequest:
        """From the raw CHIP_ID and REPORTED_TCB fields of an SNP report."""
        return cls(
            "sev-snp", chip_id=chip_id.hex(), reported_tcb=reported_tcb.hex(), product=product
        )

    @classmethod
    def for_dcap(cls, tee: str, fmspc: bytes, ca: str) -> CollateralRequest:
        """From the FMSPC and issuing CA of a quote's PCK certificate."""
        return cls(tee, fmspc=fmspc.hex(), ca=ca)

    @property
    def key(self) -> str:
        """The entry name in collateral stores."""
        if self.tee == "sev-snp":
            return f"{self.chip_id}-{self.reported_tcb}"
        return f"{self.fmspc}-{self.ca}"


def _require_hex(name: str, value: str, length: int) -> None:
    if len(value) != length or not _HEX.fullmatch(value):
        raise CollateralError(f"collateral key {name} must be {length} hex characters")


# --- From evidence to request -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Options:
    legacy_product: str
    limit: int


_Rule = Callable[[object, _Options], CollateralRequest | None]


def collateral_request(
    tee: str,
    evidence: object,
    *,
    legacy_product: str = LEGACY_SNP_PRODUCT,
    max_evidence_bytes: int = DEFAULT_MAX_EVIDENCE_BYTES,
) -> CollateralRequest | None:
    """The collateral ``tee``'s verifier will need for ``evidence``, or None.

    None means the evidence already carries what its verifier needs (a VCEK or
    VLEK, a ``collateral`` member), or that the TEE uses no collateral (nitro,
    sample). ``tee`` is a KBS tee name (aliases such as ``snp`` are accepted);
    ``evidence`` is the decoded ``primary_evidence``, as verifiers take it.

    SEV-SNP reports of version 2 do not name their product; the request then
    says ``legacy_product``. Reports signed by a VLEK name an all-zero chip_id:
    a VLEK is not tied to one chip. The rules and the resulting file names are
    in docs/evidence.md, "Pre-loading collateral".

    Raises:
        EvidenceFormatError: unknown tee, or evidence the verifier would refuse
            as malformed (the same checks, so the same message).
        EvidenceSignatureError: an unsigned SNP report, or a PCK chain that is
            not canonical PEM or not issued by an Intel PCK CA.
        CollateralError: the collateral cannot be named from the evidence
            (masked CHIP_ID, unknown CPU model), so the guest must send it.
    """
    try:
        name = canonical_tee(tee)
    except UnsupportedTEE:
        raise EvidenceFormatError(f"unknown tee {tee[:32]!r}") from None
    rule = _RULES.get(name)
    if rule is None:
        raise EvidenceFormatError(f"no collateral rule for tee {name!r}")
    return rule(evidence, _Options(legacy_product=legacy_product, limit=max_evidence_bytes))


def _no_collateral(evidence: object, opts: _Options) -> None:
    return None


def _sev_snp(evidence: object, opts: _Options) -> CollateralRequest | None:
    report, vek = decode_parts(evidence, limit=opts.limit)
    if vek is not None:
        return None
    return _snp_request(report, opts.legacy_product)


def _dcap(tee: str) -> _Rule:
    def rule(evidence: object, opts: _Options) -> CollateralRequest | None:
        quote, supplied = decode_quote_evidence(evidence, limit=opts.limit)
        if supplied is not None:
            return None
        return _dcap_request(tee, quote)

    return rule


def _az_snp_vtpm(evidence: object, opts: _Options) -> CollateralRequest | None:
    parsed, hcl = _azure(evidence, opts, HCL_TYPE_SNP)
    if parsed.vcek is not None:
        return None
    return _snp_request(hcl.hw_report, opts.legacy_product)


def _az_tdx_vtpm(evidence: object, opts: _Options) -> CollateralRequest | None:
    parsed, _ = _azure(evidence, opts, HCL_TYPE_TDX)
    if parsed.td_quote is None:
        raise EvidenceFormatError("az-tdx-vtpm evidence has no td_quote")
    # The evidence has no place for DCAP collateral: it is always needed.
    return _dcap_request("tdx", parsed.td_quote)


_RULES: dict[str, _Rule] = {
    "sev-snp": _sev_snp,
    "tdx": _dcap("tdx"),
    "sgx": _dcap("sgx"),
    "az-snp-vtpm": _az_snp_vtpm,
    "az-tdx-vtpm": _az_tdx_vtpm,
    "nitro": _no_collateral,
    "sample": _no_collateral,
}


# --- SEV-SNP ----------------------------------------------------------------------


def _snp_request(raw: bytes, legacy_product: str) -> CollateralRequest:
    # (1) Parse as the verifier does; an unsigned report needs no VEK, it fails.
    report = SNPReport.from_bytes(raw)
    if report.signing_key == SIGNING_NONE or report.mask_chip_key:
        raise EvidenceSignatureError("SNP report is not signed (SIGNING_KEY none or MASK_CHIP_KEY)")
    # (2) Product: from CPUID_FAM_ID / CPUID_MOD_ID, which v2 reports lack.
    product = legacy_product if report.version < 3 else _snp_product(report).value
    # (3) Chip: a VLEK certifies a TCB for a cloud provider, not one chip, and the
    #     verifier compares no hwID for it; a VCEK needs the unmasked CHIP_ID.
    if report.signing_key == SIGNING_VLEK:
        chip_id = bytes(len(report.chip_id))
    elif any(report.chip_id):
        chip_id = report.chip_id
    else:
        raise CollateralError("SNP report CHIP_ID is masked: the evidence must carry its VCEK")
    # (4) REPORTED_TCB raw, as the VEK certifies it.
    return CollateralRequest.for_snp(chip_id, report.reported_tcb, product)


def _snp_product(report: SNPReport) -> Product:
    family, model = report.cpuid_fam_id, report.cpuid_mod_id
    for want_family, models, product in _PRODUCT_BY_CPUID:
        if family == want_family and model in models:
            return product
    # A wrong guess could only fetch a VEK the chain check refuses; no guess at all
    # makes the cause plain.
    raise CollateralError(
        f"SNP report CPUID family 0x{family:x} model 0x{model:x} is no supported product:"
        " the evidence must carry its VEK"
    )


# --- DCAP ---------------------------------------------------------------------------


def _dcap_request(tee: str, raw: bytes) -> CollateralRequest:
    # (1) Parse; the TCB Info differs between TDX and SGX, so the kind must match.
    quote = DCAPQuote.from_bytes(raw)
    if quote.is_tdx != (tee == "tdx"):
        raise EvidenceFormatError(f"quote is not a {tee.upper()} quote")
    # (2) The PCK leaf of the certification data: FMSPC from its SGX extension,
    #     the CA (whose CRL the collateral carries) from its issuer.
    leaf = load_pem_chain(quote.sig.pck_chain_pem, error=EvidenceSignatureError)[0]
    fmspc = PCKExtension.from_certificate(leaf).fmspc
    return CollateralRequest.for_dcap(tee, fmspc, _pck_ca(leaf))


def _pck_ca(leaf: x509.Certificate) -> str:
    names = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    cns = [n.value for n in names if isinstance(n.value, str)]
    if len(cns) != 1 or cns[0] not in _PCK_CA_BY_ISSUER:
        raise EvidenceSignatureError("PCK certificate is not issued by an Intel PCK CA")
    return _PCK_CA_BY_ISSUER[cns[0]]


# --- Azure vTPM ---------------------------------------------------------------------


def _azure(evidence: object, opts: _Options, kind: int) -> tuple[AzureEvidence, HCLReport]:
    parsed = AzureEvidence.from_json(evidence_bytes(evidence, opts.limit))
    hcl = HCLReport.from_bytes(parsed.hcl_report)
    if hcl.report_type != kind:
        what = "an SNP report" if kind == HCL_TYPE_SNP else "a TDREPORT"
        raise EvidenceFormatError(f"HCL report does not hold {what}")
    return parsed, hcl
