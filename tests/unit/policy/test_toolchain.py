"""Type-checking lint, shadow mode, explain, test cases, simulation and refs edits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from broker.errors import PolicyError
from broker.policy import _yaml
from broker.policy.evaluate import evaluate
from broker.policy.explain import explain, format_text
from broker.policy.lint import lint_texts
from broker.policy.load import load_policy_texts
from broker.policy.refs import parse_refs_file
from broker.policy.refs_edit import Provenance, add_value
from broker.policy.simulate import parse_since, simulate
from broker.policy.testing import FAIL, PASS, SKIP, evidence_source, parse_cases, run_case
from tests.unit.policy.conftest import NOW, REFS, doc

SNP = doc(
    """
    version: 1
    name: snp
    resources: ["snp/*/*"]
    rules:
      - name: no-debug
        tee: sev-snp
        effect: deny
        when: [flags.debug]
      - name: listed
        tee: sev-snp
        when:
          - claims.measurement in refs.good_measurements
          - claims.reported_tcb.snp >= 8
    """
)
CLAIMS: dict[str, Any] = {"measurement": "aa", "reported_tcb": {"snp": 8}, "vmpl": 0}
FLAGS = {"debug": False}


def _errors(policy: bytes) -> list[str]:
    found = lint_texts({"p.yaml": policy, "refs/r.yaml": REFS}, now=NOW)
    return [d.format() for d in found if d.severity == "error"]


def test_unknown_claim_is_an_error_with_suggestion() -> None:
    """A misspelt claim name is an error at its column, with a did-you-mean."""
    errors = _errors(SNP.replace(b"claims.measurement in", b"claims.measurment in"))
    assert errors == [
        "p.yaml:12:9: error: listed: unknown claim claims.measurment for tee sev-snp "
        "(did you mean claims.measurement?)"
    ]


def test_type_mismatch_and_unknown_flag_are_errors() -> None:
    """Comparing an int claim with a string, and an unknown flag, are errors."""
    text = SNP.replace(b"claims.reported_tcb.snp >= 8", b"'claims.vmpl == \"0\"'").replace(
        b"when: [flags.debug]", b"when: [flags.debugg]"
    )
    errors = _errors(text)
    assert any("claims.vmpl is int for sev-snp: compared with string" in e for e in errors)
    assert any("unknown flag flags.debugg" in e and "did you mean flags.debug" in e for e in errors)


def test_operator_type_error_found_by_running_on_schema() -> None:
    """An ordering between an int claim and a string is reported as a type error."""
    text = SNP.replace(b"claims.reported_tcb.snp >= 8", b"'claims.vmpl >= claims.policy'")
    assert any("type error" in e for e in _errors(text))


def test_cross_tee_condition_is_not_an_error() -> None:
    """A rule for two TEEs may read a claim that only one of them has."""
    text = SNP.replace(b"tee: sev-snp\n    when", b"tee: [sev-snp, tdx]\n    when").replace(
        b"claims.measurement in refs.good_measurements",
        b"claims.measurement in refs.good_measurements || claims.mr_td in refs.good_measurements",
    )
    assert _errors(text) == []


def test_missing_tcb_floor_warns() -> None:
    """An SNP policy with no condition on reported_tcb gets a TCB-floor warning."""
    text = SNP.replace(b"      - claims.reported_tcb.snp >= 8\n", b"")
    found = lint_texts({"p.yaml": text, "refs/r.yaml": REFS}, now=NOW)
    assert any("no TCB floor for sev-snp" in d.message for d in found)


def _set(extra: bytes = b"") -> Any:
    return load_policy_texts(
        {"snp.yaml": SNP, "refs/r.yaml": REFS, **({"draft.yaml": extra} if extra else {})}, now=NOW
    )


SHADOW = doc(
    """
    version: 1
    name: draft
    mode: shadow
    resources: ["snp/*/*"]
    rules:
      - name: stricter
        tee: sev-snp
        when:
          - claims.reported_tcb.snp >= 20
    """
)


def _request(resource: str = "snp/key/1") -> Any:
    from broker.policy.model import ReleaseRequest

    return ReleaseRequest(resource, 1, True, "RSA-OAEP-256")


def test_shadow_policy_never_changes_the_decision() -> None:
    """A shadow policy is evaluated alone and reported, while the live decision stands."""
    decision = evaluate(
        _set(SHADOW), tee="sev-snp", claims=CLAIMS, flags=FLAGS, request=_request(), now=NOW
    )
    assert decision.allow
    assert decision.matched_rule == "snp/listed"
    assert [s.to_dict() for s in decision.shadow] == [
        {
            "policy": "draft",
            "decision": "deny",
            "reasons": ["rule.failed:draft/stricter#0"],
            "matched_rule": None,
        }
    ]


def test_shadow_only_resource_is_still_denied() -> None:
    """A resource governed only by a shadow policy is denied (policy.none)."""
    text = SHADOW.replace(b"snp/*/*", b"other/*/*").replace(b">= 20", b">= 1")
    decision = evaluate(
        _set(text),
        tee="sev-snp",
        claims=CLAIMS,
        flags=FLAGS,
        request=_request("other/k/1"),
        now=NOW,
    )
    assert decision.reason_ids == ("policy.none",)
    assert decision.shadow[0].allow


def test_bad_mode_is_a_load_error() -> None:
    """mode must be enforce or shadow."""
    with pytest.raises(PolicyError, match="mode must be one of enforce, shadow"):
        _set(SHADOW.replace(b"mode: shadow", b"mode: dryrun"))


def test_explain_shows_values_and_same_reasons() -> None:
    """Explain carries evaluate's reason ids and each condition's claim and ref values."""
    claims = dict(CLAIMS, measurement="cc")
    report = explain(_set(), tee="sev-snp", claims=claims, flags=FLAGS, request=_request(), now=NOW)
    plain = evaluate(_set(), tee="sev-snp", claims=claims, flags=FLAGS, request=_request(), now=NOW)
    assert report.decision.reason_ids == plain.reason_ids == ("rule.failed:snp/listed#0",)
    listed = report.rules[1].conditions
    assert listed[0].reads == (("claims.measurement", "cc"),)
    assert listed[0].refs == (("good_measurements@v1", ("aa", "bb"), False),)
    assert not listed[1].reached and listed[1].value
    text = format_text(report)
    assert 'refs.good_measurements@v1 = ["aa", "bb"]' in text
    assert "(not reached)" in text


CASES = doc(
    """
    version: 1
    cases:
      - name: allowed
        claims: {tee: sev-snp, claims: {measurement: aa, reported_tcb: {snp: 9}}, flags: {debug: false}}
        resource: snp/key/1
        expect: {decision: allow}
      - name: wrong-expectation
        claims: {tee: sev-snp, claims: {measurement: zz, reported_tcb: {snp: 9}}, flags: {debug: false}}
        resource: snp/key/1
        expect: {decision: deny, reasons: ["rule.failed:snp/listed#1"]}
      - name: needs-evidence
        evidence: {tee: sev-snp, file: x/report.bin, vcek: x/vcek.der, at: "2025-09-01T00:00:00Z"}
        resource: snp/key/1
        expect: {decision: allow}
    """
)


def test_cases_pass_fail_and_skip(tmp_path: Any) -> None:
    """A passing case, a case whose reasons differ, and evidence that is absent (skip)."""
    cases = parse_cases({"c.yaml": CASES})
    source = evidence_source(tmp_path / "missing")
    results = [run_case(c, _set(), source, NOW) for c in cases]
    assert [r.status for r in results] == [PASS, FAIL, SKIP]
    assert "expected reasons" in results[1].message
    assert "not found" in results[2].message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            b"version: 1\ncases: [{name: a, resource: a/b/c, expect: {decision: allow}}]\n",
            "exactly one of",
        ),
        (
            b"version: 1\ncases: [{name: a, resource: a/b/c, claims: {tee: x, claims: {}}, expect: {decision: allow}}]\n",
            "unknown TEE",
        ),
        (
            b"version: 1\ncases: [{name: a, resource: a/b/c, claims: {tee: tdx, claims: {}}, expect: {decision: maybe}}]\n",
            "allow or deny",
        ),
        (
            b"version: 1\ncases: [{name: a, resource: a/b/c, evidence: {tee: tdx, file: ../x, at: '2025-01-01T00:00:00Z'}, expect: {decision: allow}}]\n",
            "relative",
        ),
    ],
)
def test_broken_case_files_name_their_line(text: bytes, message: str) -> None:
    """Case files are schema-checked with file:line positions."""
    with pytest.raises(PolicyError, match=message) as info:
        parse_cases({"c.yaml": text})
    assert info.value.path == "c.yaml" and info.value.line == 2


def _record(event: str, digest: str, claims: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body = {"claims": claims, "flags": FLAGS}
    if event == "kbs.attest":
        body["tee"] = "sev-snp"
    return {
        "event": event,
        "decision": "allow",
        "evidence_digest": digest,
        "tee": "sev-snp",
        "claims": body,
        **extra,
    }


def test_simulation_reports_who_loses_and_gains() -> None:
    """Replaying audit records: a stricter draft drops one guest, keeps none new."""
    old = dict(CLAIMS, reported_tcb={"snp": 8})
    new = dict(CLAIMS, reported_tcb={"snp": 30})
    records = [
        _record("kbs.attest", "sha256:1", old),
        _record(
            "resource.released", "sha256:1", old, resource="snp/key/1", wrap_alg="RSA-OAEP-256"
        ),
        _record("kbs.attest", "sha256:2", new),
        _record("resource.denied", "sha256:2", new, resource="snp/key/2", decision="deny"),
    ]
    draft = load_policy_texts(
        {"snp.yaml": SNP.replace(b">= 8", b">= 20"), "refs/r.yaml": REFS}, now=NOW
    )
    report = simulate(records, live=_set(), draft=draft, now=NOW)
    assert report.subjects == 2 and report.requests == 2 and report.unchanged == 1
    assert [c.to_dict() for c in report.lose] == [
        {
            "resource": "snp/key/1",
            "tee": "sev-snp",
            "measurement": "aa",
            "change": "lose",
            "count": 1,
            "live_reasons": [],
            "draft_reasons": ["rule.failed:snp/listed#1"],
        }
    ]
    assert report.gain == ()


def test_since_parsing() -> None:
    """--since accepts 30d, 12h ...; anything else is refused."""
    assert parse_since("30d").days == 30
    with pytest.raises(Exception, match="must look like"):
        parse_since("a month")


def test_refs_add_bumps_version_and_keeps_comments() -> None:
    """Adding a value appends it with provenance, bumps the version, keeps comments."""
    text = "# header\n" + REFS.decode()
    out = add_value(
        text,
        "good_measurements",
        "cc",
        provenance=Provenance("evidence sha256:1", "alice"),
        now=NOW,
    )
    assert out.startswith("# header\n")
    sink = _yaml.Sink("r.yaml")
    (ref,) = parse_refs_file(out.encode(), sink)
    assert ref.values == ("aa", "bb", "cc") and ref.version == 2
    assert "# evidence sha256:1; added by alice at 2026-01-01T00:00:00+00:00" in out
    again = add_value(out, "good_measurements", "dd", provenance=Provenance("s", "bob"), now=NOW)
    (ref,) = parse_refs_file(again.encode(), _yaml.Sink("r.yaml"))
    assert ref.version == 3 and ref.values[-1] == "dd"
    with pytest.raises(PolicyError, match="already in"):
        add_value(again, "good_measurements", "dd", provenance=Provenance("s", "bob"), now=NOW)


def test_refs_add_creates_a_new_set() -> None:
    """A set that does not exist is created, with its provenance."""
    out = add_value("", "new_set", "ab", provenance=Provenance("build 7", "ci", "Images"), now=NOW)
    (ref,) = parse_refs_file(out.encode(), _yaml.Sink("r.yaml"))
    assert (ref.name, ref.values, ref.source, ref.added_by, ref.version) == (
        "new_set",
        ("ab",),
        "build 7",
        "ci",
        1,
    )


def test_now_is_timezone_aware() -> None:
    """The fixtures use an aware time, as every pure function requires."""
    assert NOW.tzinfo is UTC and datetime(2026, 1, 1, tzinfo=UTC) == NOW
