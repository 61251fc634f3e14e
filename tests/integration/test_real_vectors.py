"""Real hardware evidence through the registered verifiers and the shipped policies.

The unit tests pin each verifier against its expected.json; this pins the
whole chain a release goes through: registry -> verifier -> claims and flags
-> shipped policy decision, with nothing merged in by hand.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.evidence import get_verifier, pinned_anchors
from broker.evidence.model import VerifiedClaims, VerifyContext
from broker.keys.unwrap import ClientKeyPair
from broker.policy.evaluate import evaluate
from broker.policy.load import load_policy_dir
from broker.policy.model import ReleaseRequest
from tests.integration.kbs_helpers import error_of
from tests.unit.policy.test_shipped import NAMESPACE, OUTCOMES
from tests.vectors import (
    REPO_ROOT,
    expected,
    parse_time,
    read_bytes,
    requires_evidence,
    vector_path,
)

pytestmark = requires_evidence


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kbs_evidence(tee_dir: str, vid: str) -> tuple[str, Any, dict[str, bytes]]:
    """(tee, primary_evidence JSON, collateral) as a guest and the broker would hand them over."""
    files = expected(tee_dir, vid)["files"]
    if tee_dir == "sev-snp":
        vek = files.get("vcek") or files["vlek"]
        return (
            "sev-snp",
            {
                "report": _b64(read_bytes(tee_dir, files["report"])),
                "vcek": _b64(read_bytes(tee_dir, vek)),
            },
            {},
        )
    if tee_dir in ("tdx", "sgx"):
        return (
            tee_dir,
            {"quote": _b64(read_bytes(tee_dir, files["quote"]))},
            {"dcap": read_bytes(tee_dir, files["collateral"])},
        )
    if tee_dir == "nitro":
        return "nitro", {"attestation_document": _b64(read_bytes(tee_dir, files["document"]))}, {}
    evidence = json.loads(read_bytes(tee_dir, files["evidence"]))
    if "collateral" in files:
        return "az-tdx-vtpm", evidence, {"dcap": read_bytes(tee_dir, files["collateral"])}
    return "az-snp-vtpm", evidence, {}


def verify_at(tee_dir: str, vid: str, now: datetime) -> VerifiedClaims:
    tee, evidence, collateral = kbs_evidence(tee_dir, vid)
    ctx = VerifyContext(
        now=now, anchors=pinned_anchors(), collateral=collateral, max_age_seconds=10**10
    )
    return get_verifier(tee).verify(evidence, ctx)


VECTORS = [
    (d, v)
    for d in ("sev-snp", "tdx", "sgx", "nitro", "azure-vtpm")
    for v in sorted(OUTCOMES)
    if (vector_path(d, f"{v}.expected.json")).is_file()
]


@pytest.mark.parametrize(("tee_dir", "vid"), VECTORS)
def test_verifier_then_shipped_policy(tee_dir: str, vid: str) -> None:
    """Each real vector verifies through the registry and the shipped policies decide as documented."""
    data = expected(tee_dir, vid)
    now = parse_time(data["verification_time"])
    verified = verify_at(tee_dir, vid, now)
    policies = load_policy_dir(REPO_ROOT / "policies", now=now)
    decision = evaluate(
        policies,
        tee=verified.tee,
        claims=verified.claims,
        flags=verified.flags,
        request=ReleaseRequest(
            resource=f"{NAMESPACE[verified.tee]}/key/app",
            version=1,
            is_current=True,
            wrap_alg="ECDH-ES+A256KW",
        ),
        now=now,
    )
    outcome = OUTCOMES[vid]
    if outcome is None:
        assert decision.allow, decision.reason_ids
    else:
        assert not decision.allow
        assert outcome in decision.reason_ids


@pytest.mark.parametrize(("tee_dir", "vid"), [(d, v) for d, v in VECTORS if d in ("tdx", "sgx")])
def test_dcap_claims_carry_tcb_status(tee_dir: str, vid: str) -> None:
    """DCAP verifiers export the TCB status and advisories as claims for policies."""
    data = expected(tee_dir, vid)
    verified = verify_at(tee_dir, vid, parse_time(data["verification_time"]))
    assert verified.claims["tcb_status"] == data["expected"]["tcb_status"]
    assert verified.claims["advisory_ids"] == data["expected"]["advisory_ids"]
    assert verified.flags["debug"] == data["expected"]["debug"]


async def test_real_snp_evidence_on_kbs_is_refused_for_binding(
    client: TestClient[Any, Any],
) -> None:
    """A genuine SNP report replayed to the KBS fails the challenge binding (403)."""
    _, evidence, _ = kbs_evidence("sev-snp", "trustee-milan-vcek")
    resp = await client.post(
        "/kbs/v0/auth", json={"version": "0.4.0", "tee": "snp", "extra-params": ""}
    )
    nonce = (await resp.json())["nonce"]
    body = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": ClientKeyPair.generate("p256").public_jwk()},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    }
    resp = await client.post("/kbs/v0/attest", json=body)
    status, code, _ = await error_of(resp)
    assert status == 403
    assert code == "EvidenceNotFresh"
