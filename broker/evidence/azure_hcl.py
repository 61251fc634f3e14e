"""Azure vTPM evidence layouts: the HCL report and the evidence JSON (no verification).

Parsing only; ``broker.evidence.azure`` verifies what these structures hold.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.errors import EvidenceFormatError

# HCL report layout (Azure IGVM attestation report, az-cvm-vtpm `hcl` module).
HCL_SIGNATURE = b"HCLA"
HCL_HEADER_SIZE = 32
HW_REPORT_SLOT = 1184
IGVM_OFFSET = HCL_HEADER_SIZE + HW_REPORT_SLOT
IGVM_HEADER_SIZE = 20  # data_size, version, report_type, hash_type, variable_data_size
HCL_TYPE_SNP = 2
HCL_TYPE_TDX = 4
HCL_HASH_SHA256 = 1
TDREPORT_SIZE = 1024
SNP_VMPL_OFFSET = 0x30
HCL_VMPL = 0  # the paravisor requests the report from VMPL0

MAX_HCL_REPORT = 16 * 1024
MAX_TD_QUOTE = 64 * 1024
MAX_VCEK = 8 * 1024
MAX_PCRS = 32
AK_KID = "HCLAkPub"

# The TD quote claims reported under "tdx" (the rest stay with the DCAP verifier).
# fmt: off
TDX_CLAIMS = (
    "tee_tcb_svn", "mr_seam", "mr_signer_seam", "seam_attributes", "td_attributes", "xfam",
    "mr_td", "mr_config_id", "mr_owner", "mr_owner_config", "rtmr0", "rtmr1", "rtmr2", "rtmr3",
    "report_data", "debug", "sept_ve_disable", "tcb_status", "advisory_ids",
    "tdx_module_status", "fmspc",
)
# fmt: on
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
_B64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")


@dataclass(frozen=True, slots=True)
class HCLReport:
    """A parsed HCL report: hardware part plus runtime data, not verified."""

    report_type: int
    hw_report: bytes
    runtime_data: bytes
    runtime_claims: dict[str, Any]
    ak_jwk: dict[str, Any]

    @classmethod
    def from_bytes(cls, data: bytes) -> HCLReport:
        """Raises EvidenceFormatError unless ``data`` is a well-formed HCL report."""
        if not IGVM_OFFSET + IGVM_HEADER_SIZE <= len(data) <= MAX_HCL_REPORT:
            raise EvidenceFormatError("HCL report size out of range")
        if data[:4] != HCL_SIGNATURE:
            raise EvidenceFormatError("HCL report does not start with 'HCLA'")
        (report_size,) = _u32s(data, 8, 1)
        data_size, _version, report_type, hash_type, var_size = _u32s(data, IGVM_OFFSET, 5)
        if (
            data_size != IGVM_HEADER_SIZE + var_size
            or report_size != IGVM_OFFSET + data_size
            or report_size > len(data)
        ):
            raise EvidenceFormatError("HCL runtime data size is inconsistent")
        if hash_type != HCL_HASH_SHA256:
            raise EvidenceFormatError("HCL report data hash is not SHA-256")
        if report_type == HCL_TYPE_SNP:
            hw_report = data[HCL_HEADER_SIZE:IGVM_OFFSET]
        elif report_type == HCL_TYPE_TDX:
            hw_report = data[HCL_HEADER_SIZE : HCL_HEADER_SIZE + TDREPORT_SIZE]
        else:
            raise EvidenceFormatError("HCL report type is neither SNP nor TDX")
        start = IGVM_OFFSET + IGVM_HEADER_SIZE
        runtime_data = data[start : start + var_size]
        claims = _runtime_claims(runtime_data)
        return cls(
            report_type=report_type,
            hw_report=hw_report,
            runtime_data=runtime_data,
            runtime_claims=claims,
            ak_jwk=_ak_jwk(claims),
        )

    @property
    def runtime_digest(self) -> bytes:
        return hashlib.sha256(self.runtime_data).digest()


@dataclass(frozen=True, slots=True)
class AzureEvidence:
    """The decoded evidence JSON (any supported version)."""

    version: int
    hcl_report: bytes
    tpm_message: bytes
    tpm_signature: bytes
    tpm_pcrs: tuple[bytes, ...]
    vcek: bytes | None
    td_quote: bytes | None

    @classmethod
    def from_json(cls, evidence: bytes | str | Mapping[str, Any]) -> AzureEvidence:
        """Raises EvidenceFormatError for JSON of no supported layout."""
        doc = _json_object(evidence)
        version = doc.get("version", 0)
        if type(version) is not int or version not in (0, 1, 2):
            raise EvidenceFormatError("unsupported Azure vTPM evidence version")
        legacy = version == 0
        quote = doc.get("quote" if legacy and "quote" in doc else "tpm_quote")
        if not isinstance(quote, dict):
            raise EvidenceFormatError("evidence has no TPM quote")
        pcrs = quote.get("pcrs")
        if not isinstance(pcrs, list) or len(pcrs) > MAX_PCRS:
            raise EvidenceFormatError("TPM quote PCRs must be a list of at most 32")
        hcl = doc.get("report" if legacy and "report" in doc else "hcl_report")
        vcek = doc.get("vcek")
        td_quote = doc.get("td_quote")
        return cls(
            version=version,
            hcl_report=_blob(hcl, legacy, "hcl_report", MAX_HCL_REPORT, hex_text=False),
            tpm_message=_blob(quote.get("message"), legacy, "message", 4096, hex_text=True),
            tpm_signature=_blob(quote.get("signature"), legacy, "signature", 1024, hex_text=True),
            tpm_pcrs=tuple(_blob(p, legacy, "pcr", 64, hex_text=True) for p in pcrs),
            vcek=None if vcek is None else _vcek(vcek, legacy),
            td_quote=(
                None
                if td_quote is None
                else _blob(td_quote, legacy, "td_quote", MAX_TD_QUOTE, hex_text=False)
            ),
        )


def evidence_bytes(evidence: object, limit: int) -> bytes:
    """The evidence as the JSON bytes the verifiers parse and digest.

    Raises:
        EvidenceFormatError: not a JSON object (or the text of one), or over ``limit``.
    """
    if isinstance(evidence, dict):
        try:
            raw = json.dumps(evidence, separators=(",", ":"), sort_keys=True).encode()
        except (TypeError, ValueError):
            raise EvidenceFormatError("evidence is not JSON data") from None
    elif isinstance(evidence, str):
        try:
            raw = evidence.encode()
        except UnicodeEncodeError:  # lone surrogates, which JSON \u escapes can produce
            raise EvidenceFormatError("evidence is not UTF-8 text") from None
    else:
        raise EvidenceFormatError("evidence must be a JSON object")
    if len(raw) > limit:
        raise EvidenceFormatError("evidence too large")
    return raw


def _json_object(evidence: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(evidence, Mapping):
        return dict(evidence)
    try:
        doc = json.loads(evidence, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        raise EvidenceFormatError("evidence is not valid JSON") from None
    if not isinstance(doc, dict):
        raise EvidenceFormatError("evidence must be a JSON object")
    return doc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise EvidenceFormatError("duplicate JSON member")
    return result


def _runtime_claims(runtime_data: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(runtime_data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EvidenceFormatError("HCL runtime data is not JSON") from None
    if not isinstance(claims, dict):
        raise EvidenceFormatError("HCL runtime data is not a JSON object")
    return claims


def _ak_jwk(claims: Mapping[str, Any]) -> dict[str, Any]:
    keys = claims.get("keys")
    if not isinstance(keys, list):
        raise EvidenceFormatError("HCL runtime data has no keys")
    found = [k for k in keys if isinstance(k, dict) and k.get("kid") == AK_KID]
    if len(found) != 1 or not isinstance(found[0].get("n"), str):
        raise EvidenceFormatError("HCL runtime data must hold exactly one HCLAkPub")
    jwk: dict[str, Any] = found[0]
    return jwk


def user_data_of(claims: Mapping[str, Any]) -> str | None:
    value = claims.get("user-data")
    return value if isinstance(value, str) else None


def hex_bytes(text: str | None) -> bytes | None:
    if text is None or not _HEX.fullmatch(text):
        return None
    return bytes.fromhex(text)


def _blob(value: object, legacy: bool, what: str, limit: int, *, hex_text: bool) -> bytes:
    """Version 0 byte arrays; later versions hex (TPM) or base64url text."""
    if legacy:
        if not isinstance(value, list) or not all(type(b) is int and 0 <= b <= 255 for b in value):
            raise EvidenceFormatError(f"{what} must be a byte array")
        raw = bytes(value)
    elif isinstance(value, str) and hex_text:
        if not _HEX.fullmatch(value):
            raise EvidenceFormatError(f"{what} must be hex")
        raw = bytes.fromhex(value)
    elif isinstance(value, str):
        raw = _b64(value, what)
    else:
        raise EvidenceFormatError(f"{what} is missing or has the wrong type")
    if not raw or len(raw) > limit:
        raise EvidenceFormatError(f"{what} size out of range")
    return raw


def _b64(text: str, what: str) -> bytes:
    """Standard or URL-safe base64, padding optional (attesters differ)."""
    if not _B64.fullmatch(text):
        raise EvidenceFormatError(f"{what} must be base64")
    normal = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normal + "=" * (-len(normal) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceFormatError(f"{what} must be base64") from None


def _vcek(value: object, legacy: bool) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * MAX_VCEK:
        raise EvidenceFormatError("vcek must be a string")
    if not legacy:
        return _b64(value, "vcek")
    # Version 0 carries PEM: strip the armour, keep the DER.
    match = re.fullmatch(
        r"\s*-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----\s*", value
    )
    if match is None:
        raise EvidenceFormatError("vcek is not a PEM certificate")
    return _b64("".join(match.group(1).split()), "vcek")


def _u32s(data: bytes, offset: int, count: int) -> list[int]:
    return [
        int.from_bytes(data[offset + 4 * i : offset + 4 * i + 4], "little") for i in range(count)
    ]
