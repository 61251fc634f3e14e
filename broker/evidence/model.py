"""Values that flow through evidence verification.

``VerifiedClaims`` is produced only by a verifier in this package: holding one
means the evidence passed every check, including the binding to the challenge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from broker.errors import EvidenceFormatError

# JSON-compatible claim values: str, int, bool, None, lists and dicts of them.
Claims = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class TrustAnchors:
    """Pinned vendor roots, by name (file stem in ``broker/evidence/roots``).

    Names in use: ``amd-milan-ark``, ``amd-milan-ask``, ``amd-milan-asvk``,
    ``amd-genoa-ark``, ``amd-genoa-ask``, ``amd-turin-ark``, ``amd-turin-ask``,
    ``intel-sgx-root-ca``, ``aws-nitro-enclaves-root-g1``. Values are PEM bytes.
    """

    pem: Mapping[str, bytes]

    def get(self, name: str) -> bytes:
        try:
            return self.pem[name]
        except KeyError:
            raise EvidenceFormatError(f"no pinned root named {name!r}") from None


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the evidence must be bound to (the KBS challenge).

    ``report_data`` is the 64-byte REPORT_DATA value the protocol requires
    (SHA-384 of the canonical runtime data, zero padded); ``nonce`` is the raw
    challenge nonce, for TEEs that carry the nonce itself (Nitro, vTPM);
    ``runtime_digest`` is the 48-byte SHA-384 before padding.
    """

    report_data: bytes
    nonce: bytes
    runtime_digest: bytes


@dataclass(frozen=True, slots=True)
class VerifyContext:
    """Everything a verifier may use besides the evidence: no I/O behind it.

    ``expect`` None means the caller verifies evidence offline (CLI) and no
    challenge binding is checked; the KBS path always sets it.
    ``collateral`` holds collateral documents supplied by a CollateralSource
    (e.g. ``{"dcap": <QuoteCollateralV3 JSON bytes>}``, ``{"vcek": <DER>}``).
    """

    now: datetime
    anchors: TrustAnchors
    expect: Expectation | None = None
    collateral: Mapping[str, bytes] = field(default_factory=dict)
    max_evidence_bytes: int = 1 << 20
    max_age_seconds: int = 300


@dataclass(frozen=True, slots=True)
class VerifiedClaims:
    """Normalized claims of evidence that verified. Not public constructor API.

    ``claims`` uses the vendor vocabulary (``measurement``, ``mr_td``,
    ``pcrs`` ...); ``flags`` are policy-relevant facts (``debug``,
    ``tcb_out_of_date`` ...).
    """

    tee: str
    claims: Claims
    flags: Mapping[str, bool]
    evidence_digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"tee": self.tee, "claims": dict(self.claims), "flags": dict(self.flags)}


class Verifier(Protocol):
    """One TEE's verifier. ``evidence`` is the decoded ``primary_evidence``
    JSON value the guest sent (for KBS), already size-checked."""

    tee: str

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims: ...


def evidence_digest(raw: bytes) -> str:
    """SHA-256 of the evidence bytes as stored in audit records."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class HardwareResult:
    """What a hardware-report verifier hands back before any challenge binding.

    Shared by verifiers that compose others (the Azure vTPM verifiers check an
    SNP report or a TDX quote inside their evidence). ``report_data`` is the
    raw REPORT_DATA field (64 bytes for SNP, TDX and SGX).
    """

    claims: dict[str, Any]
    flags: dict[str, bool]
    report_data: bytes
