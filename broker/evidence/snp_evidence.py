"""Decoding ``sev-snp`` evidence JSON (KBS / Trustee forms) into report and VEK bytes.

    report, vek = decode_evidence(evidence, ctx)
    report, vek_or_none = decode_parts(evidence, limit=ctx.max_evidence_bytes)

Nothing here verifies anything: the decoded bytes go to
``broker.evidence.snp.verify_snp_report``, whose signature check decides
whether they are what the firmware signed.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from typing import Any

from broker.errors import CollateralError, EvidenceFormatError
from broker.evidence.model import VerifyContext

__all__ = ["decode_evidence", "decode_parts"]


def decode_evidence(evidence: object, ctx: VerifyContext) -> tuple[bytes, bytes]:
    """The raw ATTESTATION_REPORT and the VEK (DER or PEM) carried by ``evidence``.

    Accepts ``{"report": <base64 1184 bytes>, "vcek": <base64 DER | PEM>}`` and
    Trustee's form ``{"attestation_report": <base64 | byte list | field object>,
    "cert_chain": [{"cert_type": "VCEK" | "VLEK", "data": <base64 | byte list>},
    ...]}``. Without a VEK in the evidence, ``ctx.collateral["vcek"]`` (then
    ``["vlek"]``) is used.

    Raises:
        EvidenceFormatError: the evidence is not one of the accepted forms.
        CollateralError: no VEK in the evidence or the collateral.
    """
    report, vek = decode_parts(evidence, limit=ctx.max_evidence_bytes)
    if vek is not None:
        return report, vek
    for key in ("vcek", "vlek"):
        if key in ctx.collateral:
            return report, ctx.collateral[key]
    raise CollateralError("no VCEK/VLEK in the evidence or the collateral")


def decode_parts(evidence: object, *, limit: int) -> tuple[bytes, bytes | None]:
    """The raw ATTESTATION_REPORT and the VEK ``evidence`` itself carries (None without one).

    The same forms as ``decode_evidence``; ``limit`` bounds each encoded field.

    Raises:
        EvidenceFormatError: the evidence is not one of the accepted forms.
    """
    fields = _evidence_object(evidence)
    report = _report_bytes(fields, limit)
    return report, _supplied_vek(fields, limit)


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def _decode_bytes(value: object, what: str, limit: int) -> bytes:
    """Base64 (standard or URL-safe) text, or a JSON list of byte values."""
    if isinstance(value, str):
        if len(value) > limit * 2:
            raise EvidenceFormatError(f"{what} is too large")
        text = value.strip()
        if "-" in text or "_" in text:  # URL-safe alphabet, padding optional
            text = text.translate(_URLSAFE_TO_STANDARD) + "=" * (-len(text) % 4)
        try:
            # What base64.b64decode(text, validate=True) does, minus its copy of
            # the text to bytes: non-ASCII text raises ValueError here as there.
            return binascii.a2b_base64(text, strict_mode=True)
        except (binascii.Error, ValueError) as exc:
            raise EvidenceFormatError(f"{what} is not base64") from exc
    if isinstance(value, list):
        if len(value) > limit:
            raise EvidenceFormatError(f"{what} is too large")
        if not all(type(b) is int and 0 <= b <= 0xFF for b in value):
            raise EvidenceFormatError(f"{what} is not a list of byte values")
        return bytes(value)
    raise EvidenceFormatError(f"{what} must be base64 text or a list of bytes")


def _decode_cert(value: object, what: str, limit: int) -> bytes:
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii", "replace")
    return _decode_bytes(value, what, limit)


def _evidence_object(evidence: object) -> Mapping[str, Any]:
    if isinstance(evidence, str):
        try:
            evidence = json.loads(evidence)
        except (ValueError, RecursionError) as exc:
            raise EvidenceFormatError("SNP evidence is not JSON") from exc
    if not isinstance(evidence, Mapping):
        raise EvidenceFormatError("SNP evidence must be a JSON object")
    return evidence


# Trustee's attester sends the report as the serde form of virtee/sev's
# AttestationReport: the ABI fields in layout order, integers little-endian,
# byte arrays as lists. Each entry is (name, kind): an int kind is a
# little-endian integer of that many bytes (0: a nested TCB_VERSION object), a
# str kind the length of a byte list. Names starting with "_" are reserved and
# default to zero when absent (a wrong default just fails the signature).
_SERDE_LAYOUT: tuple[tuple[str, int | str], ...] = (
    ("version", 4), ("guest_svn", 4), ("policy", 8), ("family_id", "16"), ("image_id", "16"),
    ("vmpl", 4), ("sig_algo", 4), ("current_tcb", 0), ("plat_info", 8),
    ("_author_key_en", 4), ("_reserved_0", 4), ("report_data", "64"), ("measurement", "48"),
    ("host_data", "32"), ("id_key_digest", "48"), ("author_key_digest", "48"),
    ("report_id", "32"), ("report_id_ma", "32"), ("reported_tcb", 0), ("_reserved_1", "24"),
    ("chip_id", "64"), ("committed_tcb", 0), ("current_build", 1), ("current_minor", 1),
    ("current_major", 1), ("_reserved_2", 1), ("committed_build", 1), ("committed_minor", 1),
    ("committed_major", 1), ("_reserved_3", 1), ("launch_tcb", 0), ("_reserved_4", "168"),
)  # fmt: skip


def _serde_int(value: object, size: int, what: str) -> bytes:
    if type(value) is not int or not 0 <= value < 1 << (8 * size):
        raise EvidenceFormatError(f"SNP attestation_report.{what} is not a {size}-byte integer")
    return value.to_bytes(size, "little")


def _serde_array(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, list) or len(value) != size:
        raise EvidenceFormatError(f"SNP attestation_report.{what} is not {size} bytes")
    return b"".join(_serde_int(b, 1, what) for b in value)


def _serde_field(fields: Mapping[str, Any], name: str, size: int | str, what: str) -> bytes:
    if name not in fields:
        if name.startswith("_"):
            return bytes(size if isinstance(size, int) else int(size))
        raise EvidenceFormatError(f"SNP attestation_report lacks {what}")
    value = fields[name]
    if isinstance(size, str):
        return _serde_array(value, int(size), what)
    if size:
        return _serde_int(value, size, what)
    if not isinstance(value, Mapping):
        raise EvidenceFormatError(f"SNP attestation_report.{what} is not a TCB object")
    # Turin's TCB_VERSION leads with FMC and keeps 3 reserved bytes before microcode.
    parts: tuple[tuple[str, int | str], ...] = (
        (("fmc", 1), ("bootloader", 1), ("tee", 1), ("snp", 1), ("_reserved", "3"))
        if "fmc" in value
        else (("bootloader", 1), ("tee", 1), ("_reserved", "4"), ("snp", 1))
    )
    tcb = b"".join(_serde_field(value, n, z, f"{what}.{n}") for n, z in parts)
    return tcb + _serde_field(value, "microcode", 1, f"{what}.microcode")


def _report_from_fields(fields: Mapping[str, Any]) -> bytes:
    """The raw report rebuilt from Trustee's field object; the signature then
    decides whether it is the report the firmware signed."""
    body = b"".join(_serde_field(fields, n, z, n) for n, z in _SERDE_LAYOUT)
    signature = fields.get("signature")
    if not isinstance(signature, Mapping):
        raise EvidenceFormatError("SNP attestation_report lacks signature")
    parts = (("r", "72"), ("s", "72"), ("_reserved", "368"))
    return body + b"".join(_serde_field(signature, n, z, f"signature.{n}") for n, z in parts)


def _report_bytes(evidence: Mapping[str, Any], limit: int) -> bytes:
    for key in ("report", "attestation_report"):
        if key in evidence:
            value = evidence[key]
            if isinstance(value, Mapping):
                return _report_from_fields(value)
            return _decode_bytes(value, f"SNP evidence {key!r}", limit)
    raise EvidenceFormatError("SNP evidence has no 'report' or 'attestation_report'")


def _supplied_vek(evidence: Mapping[str, Any], limit: int) -> bytes | None:
    for key in ("vcek", "vlek"):
        if evidence.get(key) is not None:
            return _decode_cert(evidence[key], f"SNP evidence {key!r}", limit)
    chain = evidence.get("cert_chain")
    if chain is not None:
        if not isinstance(chain, list) or not all(isinstance(e, Mapping) for e in chain):
            raise EvidenceFormatError("SNP evidence 'cert_chain' must be a list of objects")
        veks = [e for e in chain if str(e.get("cert_type", "")).upper() in ("VCEK", "VLEK")]
        if len(veks) > 1:
            raise EvidenceFormatError("SNP evidence 'cert_chain' holds more than one VEK")
        if veks:
            return _decode_cert(veks[0].get("data"), "SNP cert_chain VEK", limit)
    return None
