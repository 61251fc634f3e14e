"""Evaluation semantics: fail closed, deny wins, reasons and traces."""

from __future__ import annotations

from datetime import timedelta

from broker.policy.evaluate import evaluate
from broker.policy.load import load_policy_texts
from broker.policy.model import Decision, PolicySet, ReleaseRequest
from tests.unit.policy.conftest import NOW, REFS, REQUEST, doc

POLICY = doc(
    """
    version: 1
    name: p
    resources: ["default/*/*"]
    rules:
      - name: good
        tee: [sample, sev-snp]
        when:
          - claims.svn >= 1
          - claims.m in refs.good_measurements
      - name: no-debug
        tee: [sample, sev-snp]
        effect: deny
        when:
          - flags.debug
    """
)
GOOD = {"svn": 2, "m": "aa"}
CLEAN = {"debug": False}


def _set(policy: bytes = POLICY, refs: bytes = REFS) -> PolicySet:
    return load_policy_texts({"p.yaml": policy, "refs/r.yaml": refs}, now=NOW)


def _eval(
    policies: PolicySet | None = None,
    *,
    tee: str = "sample",
    claims: dict[str, object] | None = None,
    flags: dict[str, bool] | None = None,
    request: ReleaseRequest = REQUEST,
) -> Decision:
    return evaluate(
        policies or _set(),
        tee=tee,
        claims=GOOD if claims is None else claims,
        flags=CLEAN if flags is None else flags,
        request=request,
        now=NOW,
    )


def test_allow_when_every_condition_holds() -> None:
    """An allow rule whose conditions all hold allows, naming the rule."""
    decision = _eval()
    assert decision.allow
    assert decision.matched_rule == "p/good"
    assert decision.reasons == ()
    assert decision.policy_digest == _set().digest
    assert [(t.rule, t.matched) for t in decision.trace] == [("good", True), ("no-debug", False)]


def test_failed_condition_reason_names_first_failure() -> None:
    """A deny lists the first failing condition of each allow rule."""
    decision = _eval(claims={"svn": 2, "m": "zz"})
    assert not decision.allow
    assert decision.reason_ids == ("rule.failed:p/good#1",)
    assert decision.trace[0].conditions[-1].value is False


def test_deny_wins_over_allow() -> None:
    """A deny rule that holds refuses even when an allow rule holds too."""
    decision = _eval(flags={"debug": True})
    assert not decision.allow
    assert decision.reason_ids == ("rule.denied:p/no-debug",)
    assert decision.matched_rule is None


def test_error_in_deny_rule_denies() -> None:
    """A deny condition that cannot be evaluated counts as holding (fail closed)."""
    decision = _eval(flags={})
    assert not decision.allow
    assert decision.reason_ids == ("rule.denied:p/no-debug",)
    assert "could not be evaluated" in decision.reasons[0].detail
    assert decision.trace[1].conditions[0].error is not None


def test_deny_rule_with_one_false_condition_does_not_fire() -> None:
    """Only a definitely false condition keeps a deny rule from firing."""
    policy = POLICY.replace(b"      - flags.debug\n", b"      - flags.nope\n      - flags.debug\n")
    assert _eval(_set(policy)).allow
    assert not _eval(_set(policy), flags={"debug": True}).allow


def test_cel_typo_counts_as_false() -> None:
    """A condition reading a missing claim is false, with the error traced."""
    decision = _eval(claims={"svm": 2, "m": "aa"})
    assert not decision.allow
    assert decision.reason_ids == ("rule.failed:p/good#0",)
    result = decision.trace[0].conditions[0]
    assert result.value is False
    assert result.error is not None
    assert "svn" in result.error


def test_wrong_type_counts_as_false() -> None:
    """Comparing a string claim with an int is an error, hence false."""
    decision = _eval(claims={"svn": "2", "m": "aa"})
    assert not decision.allow
    assert decision.trace[0].conditions[0].error is not None


def test_non_bool_result_counts_as_false() -> None:
    """A condition that returns a non-bool never allows."""
    policy = POLICY.replace(b"claims.svn >= 1", b"claims.svn")
    decision = _eval(_set(policy))
    assert not decision.allow
    assert decision.trace[0].conditions[0].error == "returned int, not bool"


def test_unknown_function_counts_as_false() -> None:
    """A function the runtime lacks fails at evaluation and denies."""
    policy = POLICY.replace(b"claims.svn >= 1", b"max(claims.svn, 0) >= 1")
    assert not _eval(_set(policy)).allow


def test_no_policy_for_resource_denies() -> None:
    """A resource no policy governs is refused with policy.none."""
    request = ReleaseRequest("other/key/1", 1, True, "RSA-OAEP-256")
    assert _eval(request=request).reason_ids == ("policy.none",)
    empty = load_policy_texts({}, now=NOW)
    assert _eval(empty).reason_ids == ("policy.none",)


def test_invalid_resource_denies() -> None:
    """A resource that is not repo/type/tag is refused."""
    for resource in ("default/key", "default//1", "a/b/c/d", ""):
        decision = _eval(request=ReleaseRequest(resource, 1, True, "x"))
        assert decision.reason_ids == ("resource.invalid",)


def test_no_rule_for_tee_denies() -> None:
    """A TEE that no applicable rule names is refused."""
    assert _eval(tee="tdx").reason_ids == ("policy.no_rule_for_tee",)
    assert _eval(tee="not-a-tee").reason_ids == ("policy.no_rule_for_tee",)


def test_only_deny_rules_denies() -> None:
    """Deny rules alone never allow anything."""
    policy = doc(
        """
        version: 1
        resources: ["default/*/*"]
        rules:
          - name: no-debug
            tee: sample
            effect: deny
            when: [flags.debug]
        """
    )
    assert _eval(_set(policy)).reason_ids == ("policy.no_allow_rule",)


def test_expired_refs_match_nothing() -> None:
    """An expired reference set reads as empty and adds a reason."""
    refs = REFS.replace(b"    values:", b"    expires: 2025-12-31T00:00:00Z\n    values:")
    decision = _eval(_set(refs=refs))
    assert not decision.allow
    assert decision.reason_ids == ("rule.failed:p/good#1", "refs.expired:good_measurements")
    not_yet = REFS.replace(b"    values:", b"    expires: 2026-01-01T00:00:01Z\n    values:")
    assert _eval(_set(refs=not_yet)).allow
    later = evaluate(
        _set(refs=not_yet),
        tee="sample",
        claims=GOOD,
        flags=CLEAN,
        request=REQUEST,
        now=NOW + timedelta(seconds=1),
    )
    assert not later.allow


def test_resource_and_request_in_context() -> None:
    """Conditions can read the resource and request maps."""
    policy = POLICY.replace(
        b"      - claims.svn >= 1\n",
        b"      - claims.svn >= 1\n      - resource.is_current && resource.version == 1\n"
        b"      - resource.repo == 'default' && resource.tag == '1' && resource.type == 'key'\n"
        b"      - request.wrap_alg == 'RSA-OAEP-256' && tee == 'sample'\n"
        b"      - resource.id == 'default/key/1'\n",
    )
    assert _eval(_set(policy)).allow
    old = ReleaseRequest("default/key/1", 1, False, "RSA-OAEP-256")
    assert not _eval(_set(policy), request=old).allow


def test_several_policies_any_allow_rule_allows() -> None:
    """Rules from every applicable policy count; a deny in any of them wins."""
    other = doc(
        """
        version: 1
        name: q
        resources: ["*/key/*"]
        rules:
          - name: fallback
            tee: sample
            when: ["claims.svn >= 100"]
        """
    )
    files = {"p.yaml": POLICY, "q.yaml": other, "refs/r.yaml": REFS}
    policies = load_policy_texts(files, now=NOW)
    decision = _eval(policies, claims={"svn": 200, "m": "zz"})
    assert decision.allow
    assert decision.matched_rule == "q/fallback"


def test_unconvertible_claims_deny() -> None:
    """Claims that cannot become CEL values are refused, not raised."""
    decision = _eval(claims={"svn": {1, 2}})
    assert decision.reason_ids == ("context.invalid",)
