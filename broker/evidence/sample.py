"""The simulated TEE (``sample``): Trustee's sample evidence, for development.

It proves nothing about the hardware: anyone can produce it. The service
refuses it unless the configuration enables it (only ``--dev`` does).
Evidence: ``{"svn": "1", "report_data": "<standard base64>"}`` plus optional
``measurement`` (hex) and ``debug`` (bool) fields for exercising policies.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from broker import jcs
from broker.errors import EvidenceFormatError
from broker.evidence.binding import REPORT_DATA_SIZE, verify_report_data
from broker.evidence.model import VerifiedClaims, VerifyContext, evidence_digest

_HEX = set("0123456789abcdef")


def _svn(value: Any) -> int:
    if isinstance(value, bool):
        raise EvidenceFormatError("sample evidence: svn must be an integer")
    try:
        svn = int(value)
    except (TypeError, ValueError):
        raise EvidenceFormatError("sample evidence: svn must be an integer") from None
    if not 0 <= svn < 1 << 32:
        raise EvidenceFormatError("sample evidence: svn out of range")
    return svn


class SampleVerifier:
    tee = "sample"

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims:
        # (1) Shape: an object with svn and report_data.
        if not isinstance(evidence, Mapping):
            raise EvidenceFormatError("sample evidence must be a JSON object")
        svn = _svn(evidence.get("svn"))
        raw = evidence.get("report_data")
        if not isinstance(raw, str):
            raise EvidenceFormatError("sample evidence: report_data must be base64 text")
        try:
            report_data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise EvidenceFormatError("sample evidence: report_data is not base64") from None
        if len(report_data) > REPORT_DATA_SIZE:
            raise EvidenceFormatError("sample evidence: report_data longer than 64 bytes")
        # Trustee's sample attester sends the unpadded digest; pad as hardware would.
        report_data = report_data.ljust(REPORT_DATA_SIZE, b"\0")
        claims: dict[str, Any] = {"svn": svn, "report_data": report_data.hex()}
        measurement = evidence.get("measurement")
        if measurement is not None:
            if not isinstance(measurement, str) or not set(measurement.lower()) <= _HEX:
                raise EvidenceFormatError("sample evidence: measurement must be hex")
            claims["measurement"] = measurement.lower()
        debug = evidence.get("debug", False)
        if not isinstance(debug, bool):
            raise EvidenceFormatError("sample evidence: debug must be a boolean")
        claims["debug"] = debug
        # (2) Binding to the challenge.
        if ctx.expect is not None:
            verify_report_data(report_data, ctx.expect)
        try:
            digest = evidence_digest(jcs.dumps(dict(evidence)))
        except (jcs.CanonicalizationError, TypeError, ValueError):
            raise EvidenceFormatError("sample evidence is not canonical JSON") from None
        return VerifiedClaims(
            tee=self.tee, claims=claims, flags={"debug": debug}, evidence_digest=digest
        )
