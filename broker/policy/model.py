"""Values of the policy engine: compiled policies, reference values, decisions.

A ``PolicySet`` is built only by ``broker.policy.load``; every condition in it
compiled and every name in it resolved. ``evaluate`` turns a set, verified
claims and a release request into a ``Decision``; nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# Canonical TEE names a rule may name (``tee:``) and the evaluator receives.
TEE_NAMES = frozenset({"sample", "sev-snp", "tdx", "sgx", "nitro", "az-snp-vtpm", "az-tdx-vtpm"})

# The variables a condition may read; anything else is a load error.
CONTEXT_VARIABLES = frozenset({"tee", "claims", "flags", "refs", "resource", "request"})

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
REF_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Mode(StrEnum):
    """``enforce`` policies decide; ``shadow`` ones are evaluated beside them and
    reported in ``Decision.shadow``, never changing ``Decision.allow``."""

    ENFORCE = "enforce"
    SHADOW = "shadow"


class Environment(StrEnum):
    """Where a policy is meant to run; ``dev`` quiets the sample-TEE lint warning
    and ``broker policy lint --production`` refuses it."""

    PRODUCTION = "production"
    DEV = "dev"


@dataclass(frozen=True, slots=True)
class Condition:
    """One CEL expression of a rule's ``when`` list, compiled at load."""

    index: int
    source: str
    program: Any = field(compare=False, repr=False)  # cel.Program: untyped extension
    refs: frozenset[str]
    line: int
    col: int
    # The context variables the expression names: only these are built for it.
    variables: frozenset[str] = CONTEXT_VARIABLES
    # The claims it reads as ``claims.<field>``; None: it needs the whole map.
    claim_fields: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    tees: frozenset[str]
    effect: Effect
    conditions: tuple[Condition, ...]
    description: str
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class Policy:
    """One policy file. ``resources`` are globs over ``repo/type/tag``."""

    name: str
    path: str
    resources: tuple[str, ...]
    rules: tuple[Rule, ...]
    description: str
    patterns: tuple[re.Pattern[str], ...] = field(compare=False, repr=False)
    line: int = 1
    col: int = 1
    mode: Mode = Mode.ENFORCE
    environment: Environment = Environment.PRODUCTION

    def governs(self, resource_id: str) -> bool:
        return any(p.fullmatch(resource_id) for p in self.patterns)


@dataclass(frozen=True, slots=True)
class RefSet:
    """A named list of reference values (``refs.<name>`` in conditions)."""

    name: str
    description: str
    source: str
    added_by: str
    expires: datetime | None
    values: tuple[str | int, ...]
    path: str
    line: int
    col: int
    version: int = 1

    @property
    def label(self) -> str:
        """``name@vN``: how traces and explanations cite a set."""
        return f"{self.name}@v{self.version}"

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


@dataclass(frozen=True, slots=True)
class PolicySet:
    """Every policy and reference set of one directory, compiled.

    ``digest`` is ``sha256:`` over every loaded file (name and bytes, sorted
    by name), so two brokers with the same digest enforce the same rules.
    """

    policies: tuple[Policy, ...]
    refs: tuple[RefSet, ...]
    digest: str
    files: tuple[tuple[str, str], ...]
    loaded_at: datetime

    def ref(self, name: str) -> RefSet | None:
        return next((r for r in self.refs if r.name == name), None)


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """What is asked for: ``resource`` is the KBS path ``repo/type/tag``."""

    resource: str
    version: int
    is_current: bool
    wrap_alg: str


@dataclass(frozen=True, slots=True)
class Reason:
    """A stable ``id`` (see docs/policy-language.md) and a human detail."""

    id: str
    detail: str


@dataclass(frozen=True, slots=True)
class ConditionResult:
    index: int
    source: str
    value: bool
    error: str | None = None


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """How one rule fared; ``matched`` means the rule took effect."""

    policy: str
    rule: str
    effect: Effect
    matched: bool
    conditions: tuple[ConditionResult, ...]


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """What one ``mode: shadow`` policy would have decided on its own."""

    policy: str
    allow: bool
    reasons: tuple[Reason, ...]
    matched_rule: str | None = None

    @property
    def reason_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.reasons)

    def to_dict(self) -> dict[str, object]:
        """The audit form (see docs/policy-language.md, "Shadow mode")."""
        return {
            "policy": self.policy,
            "decision": "allow" if self.allow else "deny",
            "reasons": list(self.reason_ids),
            "matched_rule": self.matched_rule,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    allow: bool
    reasons: tuple[Reason, ...]
    trace: tuple[RuleTrace, ...]
    policy_digest: str
    matched_rule: str | None = None
    shadow: tuple[ShadowResult, ...] = ()

    @property
    def reason_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.reasons)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """A lint finding; ``severity`` is ``error`` or ``warning``."""

    path: str
    line: int
    col: int
    severity: str
    message: str

    def format(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message}"
