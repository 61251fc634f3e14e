"""``broker policy`` and ``broker refs`` commands, including their failure paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from broker.cli.policy import policy
from broker.cli.refs import refs
from broker.policy.load import load_policy_texts
from tests.unit.policy.conftest import NOW
from tests.vectors import EVIDENCE_DIR, REPO_ROOT, requires_evidence, vector_path

POLICIES = REPO_ROOT / "policies"

# learn.microsoft.com/azure/confidential-computing/skr-policy-examples ("confidential VM
# key release policy"): release to SEV-SNP CVMs attested by a shared MAA instance.
AZURE_CVM = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": "https://sharedweu.weu.attest.azure.net",
            "allOf": [
                {"claim": "x-ms-isolation-tee.x-ms-attestation-type", "equals": "sevsnpvm"},
                {
                    "claim": "x-ms-isolation-tee.x-ms-compliance-status",
                    "equals": "azure-compliant-cvm",
                },
            ],
        }
    ],
}
# learn.microsoft.com/azure/key-vault/keys/policy-grammar: claim conditions with the
# documented operators, for an SGX enclave.
AZURE_SGX = {
    "version": "1.0.0",
    "anyOf": [
        {
            "authority": "https://sharedeus.eus.attest.azure.net/",
            "allOf": [
                {"claim": "x-ms-attestation-type", "equals": "sgx"},
                {
                    "claim": "x-ms-sgx-mrsigner",
                    "equals": "9D6C8D6F1D6C5F5F3A8B1C2D3E4F5061728394A5B6C7D8E9F0A1B2C3D4E5F607",
                },
                {"claim": "x-ms-sgx-svn", "greaterOrEquals": 2},
                {"claim": "x-ms-sgx-is-debuggable", "equals": False},
            ],
        }
    ],
}
# intel-secl.github.io/docs/5.1/product-guides/SGX Infrastructure and Orchestration,
# "Note on Key Transfer Policy" (the format Intel Trust Authority's KBS kept).
ITA_SGX = {
    "attestation_type": ["SGX"],
    "sgx": {
        "attributes": {
            "mrsigner": ["cd171c56941c6ce49690b455f691d9c8a04c2e43e0a4d30f752fa5285c7ee57f"],
            "isvprodid": [0],
            "mrenclave": ["da2923001b1ca93a8f95fad258cf883eeb3b4c798e788851515b04e656bae19a"],
            "isvsvn": 1,
            "client_permissions": ["nginx", "USA"],
            "enforce_tcb_upto_date": False,
        }
    },
    "cert_issuer": ["CMS TLS Client CA"],
}
ITA_TDX = {
    "attestation_type": "TDX",
    "tdx": {"attributes": {"mrtd": ["AB" * 48], "rtmr0": "00" * 48, "enforce_tcb_upto_date": True}},
}


def _import(tmp_path: Path, kind: str, doc: object) -> tuple[int, str, str]:
    source = tmp_path / "in.json"
    source.write_text(json.dumps(doc))
    result = CliRunner().invoke(
        policy,
        ["import", "--from", kind, str(source), "--name", "imported", "--resource", "team/*/*"],
    )
    return result.exit_code, result.stdout, result.stderr


def _loads(text: str) -> None:
    load_policy_texts({"imported.yaml": text.encode()}, now=NOW)


def test_import_azure_cvm_example(tmp_path: Path) -> None:
    """The documented CVM SKR policy becomes an az-snp-vtpm rule that fails closed on MAA-only claims."""
    code, out, err = _import(tmp_path, "azure-skr", AZURE_CVM)
    assert code == 0, err
    doc = yaml.safe_load(out)
    assert doc["rules"][0] == {
        "name": "refuse-debug-az-snp-vtpm",
        "tee": "az-snp-vtpm",
        "effect": "deny",
        "when": ["flags.debug"],
    }
    assert doc["rules"][1] == {"name": "authority-0", "tee": "az-snp-vtpm", "when": ["false"]}
    assert "x-ms-compliance-status has no counterpart" in err
    _loads(out)


def test_import_azure_sgx_grammar_example(tmp_path: Path) -> None:
    """Claim operators map to CEL comparisons; hex is lower-cased."""
    code, out, _ = _import(tmp_path, "azure-skr", AZURE_SGX)
    assert code == 0
    when = yaml.safe_load(out)["rules"][1]["when"]
    assert when == [
        'claims.mr_signer == "9d6c8d6f1d6c5f5f3a8b1c2d3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f607"',
        "claims.isv_svn >= 2",
        "claims.debug == false",
    ]
    _loads(out)


def test_import_ita_sgx_and_tdx_examples(tmp_path: Path) -> None:
    """ITA key-transfer attributes become membership tests, minimums and a TCB deny rule."""
    code, out, err = _import(tmp_path, "ita-kbs", ITA_SGX)
    assert code == 0
    rule = yaml.safe_load(out)["rules"][1]
    assert rule["when"][0].startswith('claims.mr_signer in ["cd171c56')
    assert "claims.isv_svn >= 1" in rule["when"]
    assert "client_permissions" in err and "cert_issuer" in err
    _loads(out)
    code, out, _ = _import(tmp_path, "ita-kbs", ITA_TDX)
    assert code == 0
    names = [r["name"] for r in yaml.safe_load(out)["rules"]]
    assert names == ["refuse-debug-tdx", "refuse-unsafe-tcb-tdx-0", "tdx-attributes-0"]
    _loads(out)


@pytest.mark.parametrize(
    "doc", [{"anyOf": []}, {"anyOf": [{"allOf": [{"claim": "x", "equals": 1}]}]}, [1]]
)
def test_import_refuses_what_it_cannot_read(tmp_path: Path, doc: object) -> None:
    """No authorities, no TEE, or not an object: exit 1 with a message."""
    code, _, err = _import(tmp_path, "azure-skr", doc)
    assert code == 1 and "error:" in err


def test_lint_strict_on_shipped_policies() -> None:
    """CI gate: the shipped policies pass lint --strict."""
    result = CliRunner().invoke(policy, ["lint", "--strict", str(POLICIES)])
    assert result.exit_code == 0, result.output


@requires_evidence
def test_policy_test_on_shipped_policies() -> None:
    """CI gate: every shipped case passes against the real vectors (none skipped)."""
    result = CliRunner().invoke(
        policy, ["test", str(POLICIES), "--evidence-dir", str(EVIDENCE_DIR), "--require-evidence"]
    )
    assert result.exit_code == 0, result.output
    assert " 0 failed, 0 skipped" in result.output


def test_policy_test_skips_without_evidence(tmp_path: Path) -> None:
    """Without the evidence directory, evidence cases are skipped with a clear message."""
    result = CliRunner().invoke(
        policy, ["test", str(POLICIES), "--evidence-dir", str(tmp_path / "none")]
    )
    assert result.exit_code == 0, result.output
    assert "SKIP trustee-milan-vcek" in result.output and "not found" in result.output
    strict = CliRunner().invoke(
        policy,
        ["test", str(POLICIES), "--evidence-dir", str(tmp_path / "none"), "--require-evidence"],
    )
    assert strict.exit_code == 1


def test_policy_test_failing_case_exits_1(tmp_path: Path) -> None:
    """A case whose expectation is wrong fails the run."""
    (tmp_path / "p.yaml").write_text(
        "version: 1\nenvironment: dev\nresources: [a/b/c]\nrules:\n"
        "  - {name: r, tee: sample, when: [claims.svn >= 1]}\n"
    )
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.yaml").write_text(
        "version: 1\ncases:\n  - name: c\n    claims: {tee: sample, claims: {svn: 0}}\n"
        "    resource: a/b/c\n    expect: {decision: allow}\n"
    )
    result = CliRunner().invoke(policy, ["test", str(tmp_path)])
    assert result.exit_code == 1
    assert "FAIL c" in result.output and "expected allow, got deny" in result.output


@requires_evidence
def test_explain_real_evidence_and_refused_evidence(tmp_path: Path) -> None:
    """Explain prints the decision and inputs; evidence that does not verify exits 1."""
    args = [
        "explain", "--policies", str(POLICIES), "--resource", "snp/key/1", "--tee", "sev-snp",
        "--vcek", str(vector_path("sev-snp", "trustee-milan-vcek.vcek.der")),
        "--at", "2025-09-01T00:00:00Z", "--evidence",
    ]  # fmt: skip
    ok = CliRunner().invoke(
        policy, [*args, str(vector_path("sev-snp", "trustee-milan-vcek.report.bin"))]
    )
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith("decision: ALLOW")
    assert 'claims.measurement = "a1f39304' in ok.output
    bad = CliRunner().invoke(
        policy,
        [*args, str(vector_path("sev-snp", "negative", "trustee-milan-vcek.sigflip.report.bin"))],
    )
    assert bad.exit_code == 1
    assert "error: " in bad.stderr


def test_explain_claims_json(tmp_path: Path) -> None:
    """--claims with --json gives the same reason ids as evaluation."""
    claims = tmp_path / "c.json"
    claims.write_text(
        json.dumps({"tee": "sample", "claims": {"svn": 0}, "flags": {"debug": False}})
    )
    result = CliRunner().invoke(
        policy,
        [
            "explain",
            "--policies",
            str(POLICIES),
            "--resource",
            "default/k/1",
            "--claims",
            str(claims),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    body = json.loads(result.output)
    assert body["decision"] == "deny"
    assert [r["id"] for r in body["reasons"]] == ["rule.failed:dev-sample/sample-guests#0"]
    assert body["rules"][0]["conditions"][0]["reads"] == {"claims.svn": 0}


def test_explain_needs_one_input() -> None:
    """Neither --evidence nor --claims is a usage error."""
    result = CliRunner().invoke(policy, ["explain", "--resource", "a/b/c"])
    assert result.exit_code == 2


@requires_evidence
def test_refs_add_from_evidence(tmp_path: Path) -> None:
    """refs add verifies the evidence and records its measurement with provenance."""
    target = tmp_path / "refs.yaml"
    args = [
        "add", "snp_measurements", "--file", str(target), "--tee", "sev-snp", "--added-by", "alice",
        "--from-evidence", str(vector_path("sev-snp", "oak-turin.report.bin")),
        "--vcek", str(vector_path("sev-snp", "oak-turin.vcek.der")), "--at", "2025-09-01T00:00:00Z",
    ]  # fmt: skip
    result = CliRunner().invoke(refs, args)
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert "f924dd18f168df60" in text and "sha256:" in text and "alice" in text
    again = CliRunner().invoke(refs, args)
    assert again.exit_code == 1 and "already in" in again.stderr
    wrong = CliRunner().invoke(refs, [*args[:2], "00", *args[2:]])
    assert wrong.exit_code == 1 and "does not match" in wrong.output


def test_refs_add_needs_a_source(tmp_path: Path) -> None:
    """A bare value without --source or evidence is refused."""
    result = CliRunner().invoke(refs, ["add", "x", "aa", "--file", str(tmp_path / "r.yaml")])
    assert result.exit_code == 2


def test_snp_measure_arguments(tmp_path: Path) -> None:
    """snp-measure checks its arguments and reports firmware it cannot parse."""
    ovmf = tmp_path / "ovmf.fd"
    ovmf.write_bytes(b"\0" * 4096)
    base = ["snp-measure", "--ovmf", str(ovmf), "--vcpus", "1"]
    assert CliRunner().invoke(refs, [*base, "--vcpu-type", "EPYC-Nope"]).exit_code == 2
    assert (
        CliRunner().invoke(refs, [*base, "--vcpu-type", "EPYC-Milan", "--append", "x"]).exit_code
        == 2
    )
    result = CliRunner().invoke(refs, [*base, "--vcpu-type", "EPYC-Milan"])
    assert result.exit_code == 1
    assert (
        "cannot compute the measurement" in result.output
        or "needs the sev-snp-measure" in result.output
    )


def test_snp_measure_prints_hex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest the package computes is printed as lower-case hex."""
    guest = pytest.importorskip("sevsnpmeasure.guest")
    monkeypatch.setattr(guest, "calc_launch_digest", lambda *a, **k: bytes(range(48)))
    ovmf = tmp_path / "ovmf.fd"
    ovmf.write_bytes(b"\0")
    result = CliRunner().invoke(
        refs, ["snp-measure", "--ovmf", str(ovmf), "--vcpus", "2", "--vcpu-type", "EPYC-Genoa"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == bytes(range(48)).hex()


def test_simulate_without_audit_log(tmp_path: Path) -> None:
    """simulate --data-dir on a folder with no audit log exits with a message."""
    result = CliRunner().invoke(
        policy, ["simulate", str(POLICIES), "--live", str(POLICIES), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1 and "no audit log" in result.output
