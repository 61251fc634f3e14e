"""``broker policy lint``: every error load would raise, plus warnings.

Example::

    for diag in lint_dir(Path("policies"), now=datetime.now(UTC)):
        print(diag.format())   # policies/x.yaml:12:9: warning: ...

Warnings flag policies that load but are probably not what a security team
meant: allow rules that pin no measurement, TEEs whose debug mode is never
refused, the sample TEE allowed, a resource glob that covers everything, and
reference sets that are empty, expired or about to expire.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

from broker.errors import PolicyError
from broker.policy import _cel, _paths, typecheck
from broker.policy.load import Collected, collect, read_policy_dir
from broker.policy.model import (
    Condition,
    Diagnostic,
    Effect,
    Environment,
    Policy,
    RefSet,
    Rule,
)

EXPIRY_WARNING = timedelta(days=30)
ERROR = "error"
WARNING = "warning"

# Claims that pin what code runs, per TEE (dotted paths below ``claims``).
MEASUREMENT_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "sev-snp": ("measurement", "host_data", "id_key_digest", "image_id"),
    "tdx": ("mr_td", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mr_config_id"),
    "sgx": ("mr_enclave", "mr_signer"),
    "nitro": ("pcrs",),
    "az-snp-vtpm": ("snp.measurement", "pcrs_sha256"),
    "az-tdx-vtpm": ("tdx.mr_td", "tdx.rtmr0", "tdx.rtmr1", "tdx.rtmr2", "pcrs_sha256"),
}
# Claims and flags that set a floor on the platform's TCB, per TEE (path
# prefixes below ``claims``/``flags``). Nitro has no TCB to pin.
TCB_CLAIMS: Mapping[str, tuple[str, ...]] = {
    "sev-snp": ("claims.reported_tcb", "claims.committed_tcb", "claims.launch_tcb"),
    "tdx": ("claims.tcb_status", "flags.tcb_", "claims.tee_tcb_svn"),
    "sgx": ("claims.tcb_status", "flags.tcb_", "claims.cpu_svn"),
    "az-snp-vtpm": ("claims.snp.reported_tcb", "claims.snp.committed_tcb"),
    "az-tdx-vtpm": ("claims.tdx.tcb_status", "flags.tcb_", "claims.tdx.tee_tcb_svn"),
}
_DEBUG = re.compile(r"debug")
_HEX_UPPER = re.compile(r"(?=[0-9A-Fa-f]*[A-F])[0-9A-Fa-f]{16,}")


def _claim_pattern(paths: Iterable[str]) -> re.Pattern[str]:
    alternatives = "|".join(r"\s*\.\s*".join(map(re.escape, p.split("."))) for p in paths)
    return re.compile(rf"\bclaims\s*\.\s*(?:{alternatives})\b")


_MEASUREMENT_RE = {tee: _claim_pattern(paths) for tee, paths in MEASUREMENT_CLAIMS.items()}


def lint_dir(path: Path, *, now: datetime, production: bool = False) -> list[Diagnostic]:
    """Every problem in a policy directory, errors first within each file.

    ``production`` makes a policy marked ``environment: dev`` an error.
    """
    try:
        files = read_policy_dir(path)
    except PolicyError as exc:
        return [Diagnostic(exc.path, exc.line, exc.col, ERROR, exc.message)]
    return lint_texts(files, now=now, base=str(path), production=production)


def lint_texts(
    files: Mapping[str, bytes], *, now: datetime, base: str = "", production: bool = False
) -> list[Diagnostic]:
    found = collect(files, base=base)
    out = [Diagnostic(e.path, e.line, e.col, ERROR, e.message) for e in found.errors]
    for name in found.ignored:
        out.append(_warn(_join(base, name), 1, 1, "not a .yaml file: ignored"))
    if not found.policies and not found.errors:
        out.append(_warn(base or ".", 0, 0, "no policy files: every release is denied"))
    for policy in found.policies:
        text = files.get(_relative(policy.path, base), b"").decode("utf-8", "replace")
        out += _lint_policy(policy, text)
        out += _type_errors(policy, found.refs, text)
        if production and policy.environment is Environment.DEV:
            out.append(
                Diagnostic(
                    policy.path,
                    policy.line,
                    policy.col,
                    ERROR,
                    f"policy {policy.name!r} is marked environment: dev, "
                    "which a production policy set must not hold",
                )
            )
    out += _lint_refs(found, now)
    return sorted(out, key=lambda d: (d.path, d.line, d.col, d.severity))


def _lint_policy(policy: Policy, text: str) -> list[Diagnostic]:
    out = []
    for glob in policy.resources:
        if glob == "*/*/*":
            line, col = _find(text, "*/*/*", policy.line)
            out.append(_warn(policy.path, line, col, "resource glob */*/* governs every resource"))
    for rule in policy.rules:
        out += _lint_rule(policy, rule)
    for tee in sorted({t for r in policy.rules for t in r.tees} - {"sample"}):
        out += _lint_debug(policy, tee)
        out += _lint_tcb(policy, tee)
    return out


def _type_errors(policy: Policy, refs: Iterable[RefSet], text: str) -> list[Diagnostic]:
    lines = text.splitlines()
    out = []
    for finding in typecheck.check_policy(policy, refs):
        line, col = _offset_position(finding.condition, finding.offset, lines)
        out.append(Diagnostic(policy.path, line, col, ERROR, finding.message))
    return out


def _offset_position(cond: Condition, offset: int, lines: list[str]) -> tuple[int, int]:
    """File position of ``offset`` inside a condition written on one line."""
    if "\n" in cond.source[:offset] or not 0 < cond.line <= len(lines):
        return cond.line, cond.col
    start = lines[cond.line - 1][cond.col - 1 : cond.col]
    quote = 1 if start in ("'", '"') else 0
    return cond.line, cond.col + quote + offset


def _lint_tcb(policy: Policy, tee: str) -> list[Diagnostic]:
    prefixes = TCB_CLAIMS.get(tee)
    rules = [r for r in policy.rules if tee in r.tees]
    allow = [r for r in rules if r.effect is Effect.ALLOW]
    if prefixes is None or not allow:
        return []
    for rule in rules:
        for cond in rule.conditions:
            if any(read.dotted.startswith(prefixes) for read in _paths.reads(cond.source)):
                return []
    first = allow[0]
    return [
        _warn(
            policy.path,
            first.line,
            first.col,
            f"no TCB floor for {tee}: no rule reads {', '.join(prefixes)}",
        )
    ]


def _lint_rule(policy: Policy, rule: Rule) -> list[Diagnostic]:
    out = []
    for cond in rule.conditions:
        unknown = _cel.compile_condition(cond.source).unknown_functions
        for fn in sorted(unknown):
            out.append(
                _warn(
                    policy.path,
                    cond.line,
                    cond.col,
                    f"unknown CEL function {fn!r}: always an error",
                )
            )
    if rule.effect is not Effect.ALLOW:
        return out
    if "sample" in rule.tees and policy.environment is not Environment.DEV:
        out.append(
            _warn(
                policy.path,
                rule.line,
                rule.col,
                f"rule {rule.name!r} allows the sample TEE, which has no hardware root of "
                "trust, in a policy not marked environment: dev",
            )
        )
    for tee in sorted(rule.tees - {"sample"}):
        if not any(_MEASUREMENT_RE[tee].search(_code(c.source)) for c in rule.conditions):
            claims = ", ".join(MEASUREMENT_CLAIMS[tee])
            out.append(
                _warn(
                    policy.path,
                    rule.line,
                    rule.col,
                    f"rule {rule.name!r} allows {tee} without a condition on a measurement "
                    f"({claims})",
                )
            )
    return out


def _lint_debug(policy: Policy, tee: str) -> list[Diagnostic]:
    rules = [r for r in policy.rules if tee in r.tees]
    allow = [r for r in rules if r.effect is Effect.ALLOW]

    def mentions_debug(rule: Rule) -> bool:
        return any(_DEBUG.search(_code(c.source)) for c in rule.conditions)

    if not allow or any(r.effect is Effect.DENY and mentions_debug(r) for r in rules):
        return []
    if all(mentions_debug(r) for r in allow):
        return []
    first = allow[0]
    return [
        _warn(
            policy.path,
            first.line,
            first.col,
            f"debug {tee} guests are not refused: add a deny rule on flags.debug",
        )
    ]


def _lint_refs(found: Collected, now: datetime) -> list[Diagnostic]:
    used = {ref for p in found.policies for r in p.rules for c in r.conditions for ref in c.refs}
    out = []
    for ref in found.refs:
        out += _lint_ref(ref, now)
        if ref.name not in used:
            out.append(
                _warn(ref.path, ref.line, ref.col, f"reference set {ref.name!r} is not used")
            )
    return out


def _lint_ref(ref: RefSet, now: datetime) -> list[Diagnostic]:
    out = []
    if not ref.values:
        out.append(_warn(ref.path, ref.line, ref.col, f"reference set {ref.name!r} is empty"))
    if ref.expires is not None and ref.expired(now):
        out.append(
            _warn(
                ref.path,
                ref.line,
                ref.col,
                f"reference set {ref.name!r} expired at {ref.expires.isoformat()}: "
                "it matches nothing",
            )
        )
    elif ref.expires is not None and ref.expires - now <= EXPIRY_WARNING:
        out.append(
            _warn(
                ref.path,
                ref.line,
                ref.col,
                f"reference set {ref.name!r} expires at {ref.expires.isoformat()} "
                f"(within {EXPIRY_WARNING.days} days)",
            )
        )
    for value in ref.values:
        if isinstance(value, str) and _HEX_UPPER.fullmatch(value):
            out.append(
                _warn(
                    ref.path,
                    ref.line,
                    ref.col,
                    f"reference set {ref.name!r} holds upper-case hex {value[:16]}...: "
                    "claims are lower-case, so it can never match",
                )
            )
    return out


def _code(source: str) -> str:
    """A condition without its string literals, for name searches."""
    return _cel.strip_strings(source)


def _find(text: str, needle: str, default_line: int) -> tuple[int, int]:
    for number, line in enumerate(text.splitlines(), start=1):
        col = line.find(needle)
        if col >= 0 and not line.lstrip().startswith("#"):
            return number, col + 1
    return default_line, 1


def _warn(path: str, line: int, col: int, message: str) -> Diagnostic:
    return Diagnostic(path, line, col, WARNING, message)


def _join(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}" if base else name


def _relative(path: str, base: str) -> str:
    prefix = base.rstrip("/") + "/" if base else ""
    return path.removeprefix(prefix) if prefix else path
