"""The shipped policies against the claims of the real evidence vectors."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from broker.policy.evaluate import evaluate
from broker.policy.load import load_policy_dir, load_policy_texts, read_policy_dir
from broker.policy.model import Decision, PolicySet, ReleaseRequest
from tests.vectors import REPO_ROOT, expected, parse_time, requires_evidence, vector_ids

POLICY_DIR = REPO_ROOT / "policies"
DIRS = ("sev-snp", "tdx", "sgx", "nitro", "azure-vtpm")
NAMESPACE = {
    "sev-snp": "snp",
    "tdx": "tdx",
    "sgx": "sgx",
    "nitro": "nitro",
    "az-snp-vtpm": "az-snp-vtpm",
    "az-tdx-vtpm": "az-tdx-vtpm",
}
# Vector id -> the reason the shipped policies give, or None for "allowed".
OUTCOMES: dict[str, str | None] = {
    "trustee-milan-vcek": None,
    # Genuine, but requested from VMPL1: the VMPL 0 condition refuses it.
    "trustee-milan-vlek": "rule.failed:example-sev-snp/listed-measurement#1",
    "oak-milan-oc-release": None,
    "oak-turin": None,
    "gosev-milan-debug": "rule.denied:example-sev-snp/refuse-debug",
    "dcapqvl-tdx-uptodate": None,
    "gcp-cos-tdx-uptodate": None,
    "oak-gcp-tdx-uptodate": None,
    "trustee-tdx-outofdate": "rule.denied:example-tdx/refuse-unsafe-tcb",
    "dcapqvl-tdx-nomatch": "rule.denied:example-tdx/refuse-unsafe-tcb",
    "trustee-tdx-debug": "rule.denied:example-tdx/refuse-debug",
    "dcapqvl-sgx-config-swhardening": "rule.denied:example-sgx/refuse-unsafe-tcb",
    "occlum-sgx-debug": "rule.denied:example-sgx/refuse-debug",
    "nitrite-prod": None,
    "nitro-attest-eu-central-1": None,
    "polygon-claim": None,
    "nitrite-debug": "rule.denied:example-nitro/refuse-debug",
    "polygon-expired-debug": "rule.denied:example-nitro/refuse-debug",
    "az-snp-vtpm-genoa": None,
    "az-snp-vtpm-v2": None,
    "az-tdx-vtpm": "rule.denied:example-az-tdx-vtpm/refuse-unsafe-tcb",
}


def vector_claims(tee_dir: str, vector_id: str) -> tuple[str, dict[str, Any], dict[str, bool]]:
    """(tee, claims, flags) as a verifier reports them for one vector.

    DCAP verifiers add the matched TCB level's status and advisories to the
    claims; the expected files keep those beside the claims.
    """
    data = expected(tee_dir, vector_id)
    claims = dict(data["claims"])
    verdict = data["expected"]
    tee = data["tee"]
    if tee == "azure-vtpm":
        tee = "az-snp-vtpm" if claims["hcl_report_type"] == "SNP" else "az-tdx-vtpm"
    if tee in ("tdx", "sgx"):
        claims.setdefault("tcb_status", verdict["tcb_status"])
        claims.setdefault("advisory_ids", verdict.get("advisory_ids", []))
    status = claims.get("tcb_status", claims.get("tdx", {}).get("tcb_status"))
    flags = {
        "debug": bool(verdict["debug"]),
        "tcb_out_of_date": status == "OutOfDate",
        "tcb_no_match": status == "NoMatchingTcbLevel",
    }
    return tee, claims, flags


def _all_vectors() -> list[tuple[str, str]]:
    return [(d, v) for d in DIRS for v in vector_ids(d)]


@pytest.fixture(scope="module")
def shipped() -> PolicySet:
    return load_policy_dir(POLICY_DIR, now=parse_time("2025-09-01T00:00:00Z"))


def _decide(
    policies: PolicySet, tee_dir: str, vector_id: str, resource: str | None = None
) -> Decision:
    tee, claims, flags = vector_claims(tee_dir, vector_id)
    now = parse_time(expected(tee_dir, vector_id)["verification_time"])
    request = ReleaseRequest(resource or f"{NAMESPACE[tee]}/key/1", 1, True, "RSA-OAEP-256")
    return evaluate(policies, tee=tee, claims=claims, flags=flags, request=request, now=now)


@requires_evidence
def test_every_vector_has_an_expected_outcome() -> None:
    """Each real vector is listed here, so a new vector gets a policy decision."""
    assert sorted(v for _, v in _all_vectors()) == sorted(OUTCOMES)


@requires_evidence
@pytest.mark.parametrize(("tee_dir", "vector_id"), _all_vectors())
def test_shipped_policy_decides_vector(shipped: PolicySet, tee_dir: str, vector_id: str) -> None:
    """Clean vectors are allowed; debug, unsafe-TCB and no-match vectors are refused."""
    decision = _decide(shipped, tee_dir, vector_id)
    outcome = OUTCOMES[vector_id]
    if outcome is None:
        assert decision.allow, decision.reasons
        assert decision.reasons == ()
    else:
        assert not decision.allow
        assert outcome in decision.reason_ids


@requires_evidence
def test_vector_outside_its_namespace_is_refused(shipped: PolicySet) -> None:
    """An SNP guest asking for a TDX resource finds no rule for its TEE."""
    decision = _decide(shipped, "sev-snp", "trustee-milan-vcek", "tdx/key/1")
    assert decision.reason_ids == ("policy.no_rule_for_tee",)
    decision = _decide(shipped, "sev-snp", "trustee-milan-vcek", "nowhere/key/1")
    assert decision.reason_ids == ("policy.none",)


@requires_evidence
def test_unlisted_measurement_is_refused(shipped: PolicySet) -> None:
    """A clean SNP report with a measurement not in refs is refused on that condition."""
    tee, claims, flags = vector_claims("sev-snp", "trustee-milan-vcek")
    claims["measurement"] = "00" * 48
    request = ReleaseRequest("snp/key/1", 1, True, "RSA-OAEP-256")
    decision = evaluate(
        shipped, tee=tee, claims=claims, flags=flags, request=request, now=shipped.loaded_at
    )
    assert decision.reason_ids == ("rule.failed:example-sev-snp/listed-measurement#2",)


@requires_evidence
def test_missing_debug_flag_is_refused(shipped: PolicySet) -> None:
    """A verifier that omits flags.debug gets its guests refused, not allowed."""
    tee, claims, _ = vector_claims("nitro", "nitrite-prod")
    request = ReleaseRequest("nitro/key/1", 1, True, "RSA-OAEP-256")
    decision = evaluate(
        shipped, tee=tee, claims=claims, flags={}, request=request, now=shipped.loaded_at
    )
    assert decision.reason_ids == ("rule.denied:example-nitro/refuse-debug",)


@requires_evidence
def test_sgx_needed_status_is_configurable() -> None:
    """Widening the SGX status list, as its comment says, allows the SWHardening vector."""
    files = read_policy_dir(POLICY_DIR)
    text = files["example-sgx.yaml"]
    old = b"""      - 'claims.tcb_status != "UpToDate"'"""
    new = b"""      - '!(claims.tcb_status in ["UpToDate", "ConfigurationAndSWHardeningNeeded"])'"""
    assert old in text
    files["example-sgx.yaml"] = text.replace(old, new)
    policies = load_policy_texts(files, now=parse_time("2025-09-01T00:00:00Z"))
    assert _decide(policies, "sgx", "dcapqvl-sgx-config-swhardening").allow
    assert not _decide(policies, "sgx", "occlum-sgx-debug").allow


@requires_evidence
def test_snp_policy_throughput(shipped: PolicySet) -> None:
    """Measures evaluations per second of the shipped SNP policy (reported, loosely bounded)."""
    tee, claims, flags = vector_claims("sev-snp", "trustee-milan-vcek")
    request = ReleaseRequest("snp/key/1", 1, True, "RSA-OAEP-256")
    now = shipped.loaded_at
    count = 2000
    start = time.perf_counter()
    for _ in range(count):
        decision = evaluate(shipped, tee=tee, claims=claims, flags=flags, request=request, now=now)
    rate = count / (time.perf_counter() - start)
    assert decision.allow
    print(f"\nshipped SNP policy: {rate:,.0f} evaluations/s")
    assert rate > 100


def test_policy_dir_is_where_tests_expect() -> None:
    """The shipped policy directory sits at the repository root."""
    assert (POLICY_DIR / "dev-sample.yaml").is_file()
    assert isinstance(POLICY_DIR, Path)
