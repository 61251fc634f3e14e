"""Deciding a release: pure, fail closed, one CEL context per call.

Example::

    decision = evaluate(policies, tee="sev-snp", claims=verified.claims,
                        flags=verified.flags, request=request, now=now)
    if not decision.allow:
        raise ReleaseDenied("policy refused the release", decision.reason_ids)

Order of evaluation (docs/policy-language.md, "Semantics"):

(1) The resource must be ``repo/type/tag``; the policies whose globs match it
    apply. None -> deny ``policy.none``.
(2) Of their rules, those naming this TEE count. None -> deny
    ``policy.no_rule_for_tee``.
(3) A deny rule takes effect unless one of its conditions is definitely
    false: a condition that errors counts as holding here, so a typo or a
    missing claim can never switch a refusal off. Any -> deny ``rule.denied``.
(4) An allow rule takes effect when every condition returns ``true``; an
    error or a non-bool counts as false. Any -> allow.
(5) Otherwise deny with ``rule.failed:<policy>/<rule>#<index>`` per allow rule.

Policies with ``mode: shadow`` take no part in these steps; each one that
governs the resource runs them alone, into ``Decision.shadow``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import cel

from broker.keys.algorithms import ALGORITHM_STRENGTH
from broker.policy.model import (
    Condition,
    ConditionResult,
    Decision,
    Effect,
    Mode,
    Policy,
    PolicySet,
    Reason,
    ReleaseRequest,
    Rule,
    RuleTrace,
    ShadowResult,
)
from broker.policy.refs import refs_context

_ERROR_CHARS = 300


def evaluate(
    policies: PolicySet,
    *,
    tee: str,
    claims: Mapping[str, Any],
    flags: Mapping[str, bool],
    request: ReleaseRequest,
    now: datetime,
) -> Decision:
    """The decision for releasing ``request.resource`` to this TEE. Never raises
    for any claims: what cannot be evaluated denies.

    Only ``mode: enforce`` policies decide. Each ``mode: shadow`` policy that
    governs the resource is evaluated on its own as well, and its would-be
    outcome is reported in ``Decision.shadow``; it never changes ``allow``.
    """
    enforced = [p for p in policies.policies if p.mode is Mode.ENFORCE]
    decision = _evaluate(enforced, policies, tee, claims, flags, request, now)
    shadows = []
    for policy in policies.policies:
        if policy.mode is Mode.SHADOW and policy.governs(request.resource):
            alone = _evaluate([policy], policies, tee, claims, flags, request, now)
            shadows.append(
                ShadowResult(policy.name, alone.allow, alone.reasons, alone.matched_rule)
            )
    if not shadows:
        return decision
    return replace(decision, shadow=tuple(shadows))


def _evaluate(
    candidates: list[Policy],
    policies: PolicySet,
    tee: str,
    claims: Mapping[str, Any],
    flags: Mapping[str, bool],
    request: ReleaseRequest,
    now: datetime,
) -> Decision:
    digest = policies.digest
    # (1) Which policies govern the resource.
    segments = request.resource.split("/")
    if len(segments) != 3 or not all(segments):
        return _deny(digest, Reason("resource.invalid", "resource must be repo/type/tag"))
    applicable = [p for p in candidates if p.governs(request.resource)]
    if not applicable:
        return _deny(digest, Reason("policy.none", f"no policy governs {request.resource}"))
    # (2) Which rules speak about this TEE.
    rules = [(p, r) for p in applicable for r in p.rules if tee in r.tees]
    if not rules:
        names = ", ".join(p.name for p in applicable)
        return _deny(
            digest, Reason("policy.no_rule_for_tee", f"no rule of {names} names tee {tee}")
        )
    try:
        context = cel_context(policies, rules, tee, claims, flags, request, now)
    except (ValueError, TypeError, OverflowError) as exc:
        return _deny(digest, Reason("context.invalid", _short(exc)))
    expired = {r.name for r in policies.refs if r.expired(now)}
    return _decide(rules, context, expired, digest)


def cel_context(
    policies: PolicySet,
    rules: Iterable[tuple[Policy, Rule]],
    tee: str,
    claims: Mapping[str, Any],
    flags: Mapping[str, bool],
    request: ReleaseRequest,
    now: datetime,
) -> Any:
    """The CEL context these rules run in (shared with ``explain``).

    Raises:
        ValueError, TypeError, OverflowError: a value CEL cannot hold.
    """
    # Only the variables and reference sets these rules name: converting values
    # into CEL dominates the cost of a decision (a full SEV-SNP context costs
    # more than running the conditions), and what no condition names cannot
    # change the outcome.
    conditions = [cond for _, rule in rules for cond in rule.conditions]
    named = frozenset().union(*(cond.variables for cond in conditions))
    variables: dict[str, Any] = {}
    if "tee" in named:
        variables["tee"] = tee
    if "claims" in named:
        variables["claims"] = _claims_read(conditions, claims)
    if "flags" in named:
        variables["flags"] = dict(flags)
    if "refs" in named:
        wanted = {ref for cond in conditions for ref in cond.refs}
        variables["refs"], _ = refs_context((r for r in policies.refs if r.name in wanted), now)
    if "resource" in named:
        repo, kind, tag = request.resource.split("/")
        variables["resource"] = {
            "id": request.resource,
            "repo": repo,
            "type": kind,
            "tag": tag,
            "version": request.version,
            "is_current": request.is_current,
        }
    if "request" in named:
        variables["request"] = {
            "wrap_alg": request.wrap_alg,
            "wrap_strength": ALGORITHM_STRENGTH.get(request.wrap_alg, 0),
        }
    return cel.Context(variables=variables)


def _claims_read(conditions: list[Condition], claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims the conditions can read: all of them, or only the fields they name.

    A field no condition names cannot change a result, and a named field the
    claims lack is absent from both maps alike (``has()`` is false either way).
    """
    fields: set[str] = set()
    for cond in conditions:
        if "claims" not in cond.variables:
            continue
        if cond.claim_fields is None:
            return dict(claims)
        fields |= cond.claim_fields
    return {name: claims[name] for name in fields if name in claims}


def _decide(
    rules: list[tuple[Policy, Rule]], context: Any, expired: set[str], digest: str
) -> Decision:
    trace: list[RuleTrace] = []
    denied: list[Reason] = []
    failed: list[Reason] = []
    matched: str | None = None
    used_expired: set[str] = set()
    for policy, rule in rules:
        results = _run(rule, context, stop_on_error=rule.effect is Effect.ALLOW)
        used_expired |= {ref for c in rule.conditions for ref in c.refs if ref in expired}
        label = f"{policy.name}/{rule.name}"
        if rule.effect is Effect.DENY:
            # (3) Only a definite false keeps a deny rule from firing.
            took = not any(r.error is None and not r.value for r in results)
            if took:
                errors = [r for r in results if r.error is not None]
                detail = f"conditions of {label} hold"
                if errors:
                    bad = errors[0]
                    detail = f"{label}: condition #{bad.index} could not be evaluated: {bad.error}"
                denied.append(Reason(f"rule.denied:{label}", detail))
        else:
            # (4) Every condition must return true.
            took = len(results) == len(rule.conditions) and all(r.value for r in results)
            if took and matched is None:
                matched = label
            elif not took:
                first = results[-1]
                detail = first.error or f"{first.source!r} is false"
                failed.append(Reason(f"rule.failed:{label}#{first.index}", detail))
        trace.append(RuleTrace(policy.name, rule.name, rule.effect, took, tuple(results)))
    notes = tuple(
        Reason(f"refs.expired:{name}", f"reference set {name} has expired and matches nothing")
        for name in sorted(used_expired)
    )
    if denied:
        return Decision(False, (*denied, *notes), tuple(trace), digest)
    if matched is not None:
        return Decision(True, notes, tuple(trace), digest, matched)
    # (5) No allow rule held.
    if not failed:
        failed.append(Reason("policy.no_allow_rule", "only deny rules name this tee"))
    return Decision(False, (*failed, *notes), tuple(trace), digest)


def _run(rule: Rule, context: Any, *, stop_on_error: bool) -> list[ConditionResult]:
    """Conditions in order, up to the first that settles the rule."""
    results = []
    for cond in rule.conditions:
        error = None
        value = False
        try:
            out = cond.program.execute(context)
        # The CEL runtime raises KeyError, TypeError, RuntimeError, ValueError,
        # ZeroDivisionError ... for missing claims and type mismatches: each
        # one means "could not establish", never a crash of the decision.
        except Exception as exc:  # noqa: BLE001
            error = _short(exc)
        else:
            if isinstance(out, bool):
                value = out
            else:
                error = f"returned {type(out).__name__}, not bool"
        results.append(ConditionResult(cond.index, cond.source, value, error))
        if not value and (error is None or stop_on_error):
            break
    return results


def _deny(digest: str, reason: Reason) -> Decision:
    return Decision(False, (reason,), (), digest)


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."
