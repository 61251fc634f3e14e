"""Pieces shared by the hardware evidence providers.

The SEV-SNP certificate table is the one the host hands the guest with an
extended report (AMD "GHCB Specification", publication 56421, section
"SNP Extended Guest Request"): entries of GUID (16 bytes, RFC 4122 byte
order) + offset (u32 LE) + length (u32 LE) counted from the start of the
table, ended by an all-zero entry. The host is not trusted: the table is
bounds-checked here and the certificates are checked by the broker.
"""

from __future__ import annotations

import base64
import struct
import uuid
from collections.abc import Mapping
from typing import Any

from broker.errors import BrokerError, MalformedRequest

__all__ = [
    "REPORT_DATA_SIZE",
    "SNP_REPORT_SIZE",
    "VCEK_GUID",
    "VLEK_GUID",
    "EvidenceProviderError",
    "b64",
    "check_report_data",
    "parse_cert_table",
    "snp_evidence",
]

REPORT_DATA_SIZE = 64
SNP_REPORT_SIZE = 0x4A0
VCEK_GUID = uuid.UUID("63da758d-e664-4564-adc5-f4b93be8accd")
VLEK_GUID = uuid.UUID("a8074bc2-a25a-483e-aae6-39c045a0b8a1")

_ENTRY = struct.Struct("<16sII")
MAX_CERT_ENTRIES = 64
_KEY_INFO = 0x048  # ATTESTATION_REPORT KEY_INFO; SIGNING_KEY is bits 4:2
_SIGNING_VLEK = 1


class EvidenceProviderError(BrokerError):
    """The TEE could not produce evidence: no device, refused request, bad answer."""

    code = "EvidenceProviderUnavailable"
    status = 503


def check_report_data(report_data: bytes) -> bytes:
    """The 64-byte REPORT_DATA every provider takes; raises MalformedRequest."""
    if len(report_data) != REPORT_DATA_SIZE:
        raise MalformedRequest(f"report_data must be {REPORT_DATA_SIZE} bytes")
    return bytes(report_data)


def parse_cert_table(table: bytes) -> dict[uuid.UUID, bytes]:
    """The certificates of a GHCB certificate table, by GUID.

    Raises:
        EvidenceProviderError: the table is unterminated, too long, repeats a
            GUID, or points outside itself or into its own entries.
    """
    entries: list[tuple[uuid.UUID, int, int]] = []
    pos = 0
    while True:
        if pos + _ENTRY.size > len(table):
            raise EvidenceProviderError("SNP certificate table is not terminated")
        guid, offset, length = _ENTRY.unpack_from(table, pos)
        pos += _ENTRY.size
        if guid == bytes(16):
            break
        if len(entries) == MAX_CERT_ENTRIES:
            raise EvidenceProviderError("SNP certificate table has too many entries")
        entries.append((uuid.UUID(bytes=guid), offset, length))
    certs: dict[uuid.UUID, bytes] = {}
    for guid, offset, length in entries:
        if guid in certs:
            raise EvidenceProviderError(f"SNP certificate table repeats {guid}")
        if length == 0 or offset < pos or offset + length > len(table):
            raise EvidenceProviderError(f"SNP certificate table entry {guid} is out of bounds")
        certs[guid] = table[offset : offset + length]
    return certs


def b64(data: bytes) -> str:
    """Standard base64 text, as the broker's verifiers decode it."""
    return base64.b64encode(data).decode("ascii")


def snp_evidence(report: bytes, cert_table: bytes | None) -> dict[str, Any]:
    """The ``sev-snp`` primary_evidence: ``{"report": b64, "vcek"|"vlek": b64 DER}``.

    The VEK is taken from the certificate table when the host supplied one,
    matching the report's SIGNING_KEY; otherwise the broker uses collateral.
    """
    if len(report) != SNP_REPORT_SIZE:
        raise EvidenceProviderError(
            f"SNP report is {len(report)} bytes, expected {SNP_REPORT_SIZE}"
        )
    evidence: dict[str, Any] = {"report": b64(report)}
    certs: Mapping[uuid.UUID, bytes] = parse_cert_table(cert_table) if cert_table else {}
    signing_key = (int.from_bytes(report[_KEY_INFO : _KEY_INFO + 4], "little") >> 2) & 0x7
    name, guid = ("vlek", VLEK_GUID) if signing_key == _SIGNING_VLEK else ("vcek", VCEK_GUID)
    if guid in certs:
        evidence[name] = b64(certs[guid])
    return evidence
