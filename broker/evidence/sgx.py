"""Intel SGX: Trustee ``sgx`` evidence, a DCAP quote v3/v4 with an enclave report.

    claims = SGXVerifier().verify({"quote": b64}, ctx)

The quote and collateral checks live in ``broker.evidence.dcap``.
"""

from __future__ import annotations

from broker.evidence.dcap import verify_evidence
from broker.evidence.model import VerifiedClaims, VerifyContext


class SGXVerifier:
    """Verifies SGX DCAP quotes; claims ``mr_enclave``, ``mr_signer``, ``tcb_status`` ..."""

    tee = "sgx"

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims:
        """Raises an EvidenceError subclass unless the quote verifies and binds ctx.expect."""
        return verify_evidence(evidence, ctx, tee="sgx")
