"""Intel TDX: Trustee ``tdx`` evidence, a DCAP quote v4/v5 with a TD report.

    claims = TDXVerifier().verify({"quote": b64, "cc_eventlog": None}, ctx)

The quote and collateral checks live in ``broker.evidence.dcap``.
"""

from __future__ import annotations

from broker.evidence.dcap import verify_evidence
from broker.evidence.model import VerifiedClaims, VerifyContext


class TDXVerifier:
    """Verifies TDX DCAP quotes; claims ``mr_td``, ``rtmr0..3``, ``tcb_status`` ..."""

    tee = "tdx"

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims:
        """Raises an EvidenceError subclass unless the quote verifies and binds ctx.expect."""
        return verify_evidence(evidence, ctx, tee="tdx")
