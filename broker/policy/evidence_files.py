"""Evidence files as policy tools read them: verified, then handed to a policy.

``broker policy explain``, ``broker policy test`` and ``broker refs add``
take a known piece of evidence from disk. Each is turned into the
``primary_evidence`` a guest would send over KBS and verified by the
registered verifier, offline: no challenge binding, at a given time, with the
collateral given on the command line or named by the test case.

Files per TEE (the layout of ``broker evidence verify``):

    sev-snp      EVIDENCE = raw 1184-byte report   + vcek (DER/PEM)
    tdx, sgx     EVIDENCE = raw DCAP quote         + collateral (QuoteCollateralV3 JSON)
    nitro        EVIDENCE = raw CBOR document
    az-snp-vtpm  EVIDENCE = evidence JSON          [+ vcek]
    az-tdx-vtpm  EVIDENCE = evidence JSON          + collateral (for its td_quote)
    sample       EVIDENCE = sample evidence JSON
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.errors import EvidenceFormatError, RequestError
from broker.evidence import TrustAnchors, get_verifier, pinned_anchors
from broker.evidence.model import VerifiedClaims, VerifyContext

__all__ = ["EvidenceFiles", "EvidenceInputError", "verify_files"]

MAX_FILE_BYTES = 1 << 20
# Offline checks have no challenge; the verifiers' freshness window (Nitro's
# document timestamp) is measured from ``at`` instead, so any age is fine.
_ANY_AGE = 10**10


class EvidenceInputError(RequestError):
    """An evidence file is missing, unreadable or lacks its companion file."""

    code = "EvidenceInputInvalid"


@dataclass(frozen=True, slots=True)
class EvidenceFiles:
    tee: str
    evidence: Path
    at: datetime
    collateral: Path | None = None
    vcek: Path | None = None


def verify_files(files: EvidenceFiles, anchors: TrustAnchors | None = None) -> VerifiedClaims:
    """The verified claims of ``files`` at ``files.at``.

    Raises:
        EvidenceInputError: a file is missing or a needed one was not given.
        EvidenceError: the evidence does not verify.
        UnsupportedTEE: ``files.tee`` is no TEE the broker knows.
    """
    if files.at.tzinfo is None:
        raise EvidenceInputError("the verification time needs a UTC offset")
    verifier = get_verifier(files.tee)
    evidence, collateral = _primary(files)
    ctx = VerifyContext(
        now=files.at,
        anchors=anchors or pinned_anchors(),
        collateral=collateral,
        max_evidence_bytes=MAX_FILE_BYTES,
        max_age_seconds=_ANY_AGE,
    )
    return verifier.verify(evidence, ctx)


def _primary(files: EvidenceFiles) -> tuple[Any, dict[str, bytes]]:
    tee = files.tee
    raw = _read(files.evidence, "evidence")
    if tee == "sev-snp":
        vcek = _read(_need(files.vcek, "--vcek", tee), "vcek")
        return {"report": _b64(raw), "vcek": _b64(vcek)}, {}
    if tee in ("tdx", "sgx"):
        collateral = _read(_need(files.collateral, "--collateral", tee), "collateral")
        return {"quote": _b64(raw)}, {"dcap": collateral}
    if tee == "nitro":
        return {"attestation_document": _b64(raw)}, {}
    document = _json(raw, files.evidence)
    if tee == "az-tdx-vtpm":
        collateral = _read(_need(files.collateral, "--collateral", tee), "collateral")
        return document, {"dcap": collateral}
    if tee == "az-snp-vtpm" and files.vcek is not None:
        return document, {"vcek": _read(files.vcek, "vcek")}
    return document, {}


def _need(path: Path | None, option: str, tee: str) -> Path:
    if path is None:
        raise EvidenceInputError(f"{tee} evidence needs {option}")
    return path


def _read(path: Path, what: str) -> bytes:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise EvidenceInputError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise EvidenceFormatError(f"{what} {str(path)!r} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _json(raw: bytes, path: Path) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EvidenceFormatError(f"evidence {str(path)!r} is not JSON") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
