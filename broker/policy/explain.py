"""Why a release was allowed or denied, condition by condition.

Example::

    report = explain(policies, tee="tdx", claims=..., flags=..., request=..., now=now)
    print(format_text(report))

``report.decision`` is exactly what ``evaluate`` returns, so its reason ids are
the ones the 403 body and the audit record carry. Beside it, every rule of
every policy (enforced and shadow) that governs the resource and names the
TEE is listed with each condition: its value (run on its own, so conditions
after the one that settled a rule are shown too, marked ``not reached``), the
claim and flag values it read, and the reference values it compared with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from broker.policy import _paths
from broker.policy.evaluate import _run, cel_context, evaluate
from broker.policy.model import Decision, PolicySet, ReleaseRequest, Rule

__all__ = ["ConditionReport", "Explanation", "RuleReport", "explain", "format_text"]

MISSING = "<missing>"
_MAX_SHOWN_REFS = 8


@dataclass(frozen=True, slots=True)
class ConditionReport:
    index: int
    source: str
    value: bool
    error: str | None
    reached: bool
    reads: tuple[tuple[str, Any], ...]
    refs: tuple[tuple[str, tuple[str | int, ...], bool], ...]  # (name@vN, values, expired)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source": self.source,
            "value": self.value,
            "error": self.error,
            "reached": self.reached,
            "reads": dict(self.reads),
            "refs": [{"set": n, "values": list(v), "expired": e} for n, v, e in self.refs],
        }


@dataclass(frozen=True, slots=True)
class RuleReport:
    policy: str
    rule: str
    effect: str
    mode: str
    took_effect: bool
    conditions: tuple[ConditionReport, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "rule": self.rule,
            "effect": self.effect,
            "mode": self.mode,
            "took_effect": self.took_effect,
            "conditions": [c.to_dict() for c in self.conditions],
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    tee: str
    resource: str
    decision: Decision
    rules: tuple[RuleReport, ...]

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "decision": "allow" if d.allow else "deny",
            "reasons": [{"id": r.id, "detail": r.detail} for r in d.reasons],
            "matched_rule": d.matched_rule,
            "policy_digest": d.policy_digest,
            "tee": self.tee,
            "resource": self.resource,
            "shadow": [s.to_dict() for s in d.shadow],
            "rules": [r.to_dict() for r in self.rules],
        }


def explain(
    policies: PolicySet,
    *,
    tee: str,
    claims: Mapping[str, Any],
    flags: Mapping[str, bool],
    request: ReleaseRequest,
    now: datetime,
) -> Explanation:
    """The decision and a per-condition account of it. Never raises for any claims."""
    decision = evaluate(policies, tee=tee, claims=claims, flags=flags, request=request, now=now)
    rules = [
        (p, r)
        for p in policies.policies
        if _governs(p.patterns, request.resource)
        for r in p.rules
        if tee in r.tees
    ]
    if not rules:
        return Explanation(tee, request.resource, decision, ())
    try:
        context = cel_context(policies, rules, tee, claims, flags, request, now)
    except (ValueError, TypeError, OverflowError):
        return Explanation(tee, request.resource, decision, ())
    reached = {(t.policy, t.rule): {c.index for c in t.conditions} for t in decision.trace}
    took = {(t.policy, t.rule) for t in decision.trace if t.matched}
    shadow = {s.policy: s for s in decision.shadow}
    reports = []
    for policy, rule in rules:
        key = (policy.name, rule.name)
        ran = reached.get(key)
        results = {r.index: r for r in _run_each(rule, context)}
        conditions = tuple(
            ConditionReport(
                index=cond.index,
                source=cond.source,
                value=results[cond.index].value,
                error=results[cond.index].error,
                reached=ran is None or cond.index in ran,
                reads=_reads(cond.source, claims, flags),
                refs=tuple(
                    (ref.label, ref.values, ref.expired(now))
                    for name in sorted(cond.refs)
                    if (ref := policies.ref(name)) is not None
                ),
            )
            for cond in rule.conditions
        )
        if policy.name in shadow:
            effect_taken = shadow[policy.name].matched_rule == f"{policy.name}/{rule.name}" or any(
                r.id == f"rule.denied:{policy.name}/{rule.name}"
                for r in shadow[policy.name].reasons
            )
        else:
            effect_taken = key in took
        reports.append(
            RuleReport(
                policy.name,
                rule.name,
                rule.effect.value,
                policy.mode.value,
                effect_taken,
                conditions,
            )
        )
    return Explanation(tee, request.resource, decision, tuple(reports))


def _governs(patterns: tuple[Any, ...], resource: str) -> bool:
    return any(p.fullmatch(resource) for p in patterns)


def _run_each(rule: Rule, context: Any) -> list[Any]:
    out = []
    for cond in rule.conditions:
        single = Rule(rule.name, rule.tees, rule.effect, (cond,), "", rule.line, rule.col)
        out += _run(single, context, stop_on_error=False)
    return out


def _reads(
    source: str, claims: Mapping[str, Any], flags: Mapping[str, bool]
) -> tuple[tuple[str, Any], ...]:
    out: dict[str, Any] = {}
    for read in _paths.reads(source):
        value: Any = claims if read.root == "claims" else flags
        for name in read.path:
            if isinstance(value, Mapping) and name in value:
                value = value[name]
            else:
                value = MISSING
                break
        out[read.dotted] = value
    return tuple(out.items())


def format_text(report: Explanation) -> str:
    """The explanation as the CLI prints it."""
    d = report.decision
    lines = [
        f"decision: {'ALLOW' if d.allow else 'DENY'}",
        f"tee: {report.tee}  resource: {report.resource}",
        f"policy digest: {d.policy_digest}",
    ]
    if d.matched_rule:
        lines.append(f"matched rule: {d.matched_rule}")
    if d.reasons:
        lines.append("reasons:")
        lines += [f"  {r.id}: {r.detail}" for r in d.reasons]
    for s in d.shadow:
        verdict = "allow" if s.allow else "deny"
        lines.append(f"shadow {s.policy}: would {verdict} ({', '.join(s.reason_ids) or '-'})")
    for rule in report.rules:
        state = "TOOK EFFECT" if rule.took_effect else "did not take effect"
        mode = " [shadow]" if rule.mode == "shadow" else ""
        lines.append(f"{rule.policy}/{rule.rule} ({rule.effect}){mode}: {state}")
        for cond in rule.conditions:
            value = f"error: {cond.error}" if cond.error else str(cond.value).lower()
            reached = "" if cond.reached else "  (not reached)"
            lines.append(f"  #{cond.index} {cond.source}")
            lines.append(f"      = {value}{reached}")
            for path, seen in cond.reads:
                lines.append(f"      {path} = {_show(seen)}")
            for label, values, expired in cond.refs:
                shown = ", ".join(_show(v) for v in values[:_MAX_SHOWN_REFS])
                more = f", ... ({len(values)} values)" if len(values) > _MAX_SHOWN_REFS else ""
                note = " EXPIRED: matches nothing" if expired else ""
                lines.append(f"      refs.{label} = [{shown}{more}]{note}")
    return "\n".join(lines)


def _show(value: Any) -> str:
    if value is MISSING:
        return "<missing>"
    text: str = json.dumps(value, separators=(", ", ": "), default=str)
    return text
