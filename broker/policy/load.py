"""Loading a policy directory into a compiled ``PolicySet``.

Example::

    policies = load_policy_dir(Path("policies"), now=datetime.now(UTC))
    decision = evaluate(policies, tee="sev-snp", claims=..., flags=..., request=..., now=...)

Layout: ``<dir>/*.yaml`` are policies, ``<dir>/refs/*.yaml`` reference-value
sets. Everything is checked at load (schema, unknown keys, CEL syntax, names
of variables and reference sets, duplicates); the first problem raises
``PolicyError`` with the file, line and column. ``collect`` gathers every
problem instead, for ``broker policy lint``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

import yaml

from broker.errors import PolicyError
from broker.policy import _cel, _yaml
from broker.policy.model import (
    NAME_RE,
    TEE_NAMES,
    Condition,
    Effect,
    Environment,
    Mode,
    Policy,
    PolicySet,
    RefSet,
    Rule,
)
from broker.policy.refs import parse_refs_file

_POLICY_KEYS = ("version", "name", "description", "mode", "environment", "resources", "rules")
_RULE_KEYS = ("name", "description", "tee", "effect", "when")
_GLOB_SEGMENT = re.compile(r"[A-Za-z0-9._*-]+")
MAX_FILES = 1000
MAX_RULES = 256
MAX_CONDITIONS = 64
SUFFIXES = (".yaml", ".yml")


@dataclass(slots=True)
class Collected:
    """What ``collect`` found: the loadable parts, and every error."""

    policies: list[Policy] = field(default_factory=list)
    refs: list[RefSet] = field(default_factory=list)
    errors: list[PolicyError] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def load_policy_dir(path: Path, *, now: datetime) -> PolicySet:
    """Loads ``path`` (policies) and ``path/refs`` (reference values).

    Raises:
        PolicyError: the directory is missing or any file is invalid.
    """
    return load_policy_texts(read_policy_dir(path), now=now, base=str(path))


def load_policy_texts(files: Mapping[str, bytes], *, now: datetime, base: str = "") -> PolicySet:
    """Like ``load_policy_dir`` over ``{"name.yaml": bytes, "refs/x.yaml": bytes}``.

    Raises:
        PolicyError: the first problem, in file then line order.
    """
    found = collect(files, base=base)
    if found.errors:
        raise found.errors[0]
    return build_set(files, found, now=now)


def read_policy_dir(path: Path) -> dict[str, bytes]:
    """The files a policy directory holds, by name relative to it.

    Raises:
        PolicyError: the directory is missing or holds too many files.
    """
    if not path.is_dir():
        raise PolicyError("policy directory does not exist", path=str(path))
    names = [p for p in sorted(path.iterdir()) if p.is_file()]
    refs_dir = path / "refs"
    if refs_dir.is_dir():
        names += [p for p in sorted(refs_dir.iterdir()) if p.is_file()]
    if len(names) > MAX_FILES:
        raise PolicyError(f"more than {MAX_FILES} files", path=str(path))
    try:
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in names}
    except OSError as exc:
        raise PolicyError(f"cannot read policy files: {exc.strerror}", path=str(path)) from None


def build_set(files: Mapping[str, bytes], found: Collected, *, now: datetime) -> PolicySet:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    loaded = sorted(n for n in files if n not in found.ignored)
    digest = hashlib.sha256()
    for name in loaded:
        # Length prefixes keep (name, bytes) pairs unambiguous.
        encoded = name.encode()
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        digest.update(len(files[name]).to_bytes(8, "big") + files[name])
    return PolicySet(
        policies=tuple(sorted(found.policies, key=lambda p: p.name)),
        refs=tuple(sorted(found.refs, key=lambda r: r.name)),
        digest="sha256:" + digest.hexdigest(),
        files=tuple((n, "sha256:" + hashlib.sha256(files[n]).hexdigest()) for n in loaded),
        loaded_at=now,
    )


def collect(files: Mapping[str, bytes], *, base: str = "") -> Collected:
    """Parses every file and records every problem it can find."""
    found = Collected()
    policy_files: list[tuple[str, bytes, _yaml.Sink]] = []
    for name in sorted(files):
        display = f"{base.rstrip('/')}/{name}" if base else name
        parts = PurePosixPath(name).parts
        if not name.endswith(SUFFIXES):
            found.ignored.append(name)
            continue
        sink = _yaml.Sink(display)
        if len(parts) == 2 and parts[0] == "refs":
            found.refs += parse_refs_file(files[name], sink)
        elif len(parts) == 1:
            policy_files.append((name, files[name], sink))
            continue
        else:
            sink.add("policy files live in the directory itself or in refs/", line=1, col=1)
        found.errors += sink.errors
    _check_unique_refs(found)
    ref_names = {r.name for r in found.refs}
    for name, data, sink in policy_files:
        policy = _parse_policy(PurePosixPath(name).stem, data, sink, ref_names)
        found.errors += sink.errors
        if policy is not None:
            found.policies.append(policy)
    _check_unique_policies(found)
    found.errors.sort(key=lambda e: (e.path, e.line, e.col))
    return found


def _check_unique_refs(found: Collected) -> None:
    first: dict[str, RefSet] = {}
    for ref in found.refs:
        if ref.name in first:
            other = first[ref.name]
            found.errors.append(
                PolicyError(
                    f"reference set {ref.name!r} is already defined at {other.path}:{other.line}",
                    path=ref.path,
                    line=ref.line,
                    col=ref.col,
                )
            )
        else:
            first[ref.name] = ref


def _check_unique_policies(found: Collected) -> None:
    first: dict[str, Policy] = {}
    for policy in found.policies:
        if policy.name in first:
            other = first[policy.name]
            found.errors.append(
                PolicyError(
                    f"policy name {policy.name!r} is already used by {other.path}",
                    path=policy.path,
                    line=policy.line,
                    col=policy.col,
                )
            )
        else:
            first[policy.name] = policy


def _parse_policy(stem: str, data: bytes, sink: _yaml.Sink, ref_names: set[str]) -> Policy | None:
    root = _yaml.compose(data, sink)
    if root is None:
        return None
    keys = _yaml.mapping(
        root, sink, "policy", allowed=_POLICY_KEYS, required=("version", "resources", "rules")
    )
    if keys is None:
        return None
    errors_before = len(sink.errors)
    _yaml.check_version(keys, sink)
    name, line, col = stem, 1, 1
    if "name" in keys:
        name = _yaml.string(keys["name"][1], sink, "name") or stem
        line, col = _yaml.position(keys["name"][1])
    if not NAME_RE.fullmatch(name):
        where = keys["name"][1] if "name" in keys else root
        sink.add(f"policy name {name!r} must match [a-z0-9][a-z0-9._-]*", where)
    description = (
        _yaml.string(keys["description"][1], sink, "description") if "description" in keys else ""
    )
    mode = _choice(keys, "mode", Mode, sink) or Mode.ENFORCE
    environment = _choice(keys, "environment", Environment, sink) or Environment.PRODUCTION
    resources = _resources(keys["resources"][1], sink) if "resources" in keys else ()
    lines = data.decode("utf-8").splitlines()
    rules: list[Rule] = []
    if "rules" in keys:
        rules = _rules(keys["rules"][1], sink, lines, ref_names)
    if len(sink.errors) != errors_before:
        return None
    return Policy(
        name=name,
        path=sink.path,
        resources=tuple(resources),
        rules=tuple(rules),
        description=description or "",
        patterns=tuple(_glob_regex(g) for g in resources),
        line=line,
        col=col,
        mode=Mode(mode),
        environment=Environment(environment),
    )


def _choice(
    keys: dict[str, tuple[yaml.Node, yaml.Node]],
    key: str,
    kind: type[Mode] | type[Environment],
    sink: _yaml.Sink,
) -> str | None:
    if key not in keys:
        return None
    text = _yaml.string(keys[key][1], sink, key)
    allowed = [m.value for m in kind]
    if text is not None and text not in allowed:
        sink.add(f"{key} must be one of {', '.join(allowed)} (got {text[:40]!r})", keys[key][1])
        return None
    return text


def _resources(node: yaml.Node, sink: _yaml.Sink) -> list[str]:
    items = _yaml.sequence(node, sink, "resources")
    if items is None:
        return []
    if not items:
        sink.add("resources must list at least one glob", node)
    out = []
    for i, item in enumerate(items):
        glob = _yaml.string(item, sink, f"resources[{i}]")
        if glob is None:
            continue
        segments = glob.split("/")
        if len(segments) != 3 or not all(_GLOB_SEGMENT.fullmatch(s) for s in segments):
            sink.add(
                f"resources[{i}]: {glob!r} must be repo/type/tag, each segment letters, "
                "digits, '.', '_', '-' or '*'",
                item,
            )
            continue
        out.append(glob)
    return out


def _glob_regex(glob: str) -> re.Pattern[str]:
    # '*' stays inside one path segment: it never matches '/'.
    segments = ("[^/]*".join(re.escape(part) for part in s.split("*")) for s in glob.split("/"))
    return re.compile("/".join(segments))


def _rules(node: yaml.Node, sink: _yaml.Sink, lines: list[str], ref_names: set[str]) -> list[Rule]:
    items = _yaml.sequence(node, sink, "rules")
    if items is None:
        return []
    if not items:
        sink.add("rules must hold at least one rule (an empty policy would allow nothing)", node)
    if len(items) > MAX_RULES:
        sink.add(f"more than {MAX_RULES} rules", node)
        return []
    rules: list[Rule] = []
    for i, item in enumerate(items):
        rule = _rule(i, item, sink, lines, ref_names)
        if rule is None:
            continue
        if any(r.name == rule.name for r in rules):
            sink.add(f"rules[{i}]: duplicate rule name {rule.name!r}", item)
        rules.append(rule)
    return rules


def _rule(
    i: int, node: yaml.Node, sink: _yaml.Sink, lines: list[str], ref_names: set[str]
) -> Rule | None:
    what = f"rules[{i}]"
    keys = _yaml.mapping(node, sink, what, allowed=_RULE_KEYS, required=("name", "tee", "when"))
    if keys is None:
        return None
    errors_before = len(sink.errors)
    name = _yaml.string(keys["name"][1], sink, f"{what}.name") if "name" in keys else None
    if name is not None and not NAME_RE.fullmatch(name):
        sink.add(f"{what}.name {name!r} must match [a-z0-9][a-z0-9._-]*", keys["name"][1])
    tees = _tees(keys["tee"][1], sink, what) if "tee" in keys else frozenset()
    effect = Effect.ALLOW
    if "effect" in keys:
        text = _yaml.string(keys["effect"][1], sink, f"{what}.effect")
        if text is not None and text not in {"allow", "deny"}:
            sink.add(f"{what}.effect must be 'allow' or 'deny'", keys["effect"][1])
        elif text is not None:
            effect = Effect(text)
    description = ""
    if "description" in keys:
        description = _yaml.string(keys["description"][1], sink, f"{what}.description") or ""
    conditions = (
        _conditions(keys["when"][1], sink, what, lines, ref_names) if "when" in keys else ()
    )
    if len(sink.errors) != errors_before or name is None:
        return None
    line, col = _yaml.position(node)
    return Rule(name, tees, effect, conditions, description, line, col)


def _tees(node: yaml.Node, sink: _yaml.Sink, what: str) -> frozenset[str]:
    items = (
        [node] if isinstance(node, yaml.ScalarNode) else _yaml.sequence(node, sink, f"{what}.tee")
    )
    if items is None:
        return frozenset()
    if not items:
        sink.add(f"{what}.tee must name at least one TEE", node)
    out = set()
    for item in items:
        tee = _yaml.string(item, sink, f"{what}.tee")
        if tee is not None and tee not in TEE_NAMES:
            sink.add(
                f"{what}.tee: unknown TEE {tee!r} (expected one of {', '.join(sorted(TEE_NAMES))})",
                item,
            )
        elif tee is not None:
            out.add(tee)
    return frozenset(out)


def _conditions(
    node: yaml.Node, sink: _yaml.Sink, what: str, lines: list[str], ref_names: set[str]
) -> tuple[Condition, ...]:
    items = _yaml.sequence(node, sink, f"{what}.when")
    if items is None:
        return ()
    if not items:
        sink.add(f"{what}.when must hold at least one condition", node)
    if len(items) > MAX_CONDITIONS:
        sink.add(f"{what}.when holds more than {MAX_CONDITIONS} conditions", node)
        return ()
    out = []
    for index, item in enumerate(items):
        source = _yaml.string(item, sink, f"{what}.when[{index}]")
        if source is None:
            continue
        assert isinstance(item, yaml.ScalarNode)
        try:
            compiled = _cel.compile_condition(source)
        except _cel.CompileError as exc:
            line, col = _cel.source_position(item, lines, exc.line, exc.col)
            sink.add(f"{what}.when[{index}]: {exc.message}", line=line, col=col)
            continue
        for variable in sorted(compiled.unknown_variables):
            sink.add(
                f"{what}.when[{index}]: unknown variable {variable!r} "
                "(use tee, claims, flags, refs, resource or request)",
                item,
            )
        for ref in sorted(compiled.refs - ref_names):
            sink.add(f"{what}.when[{index}]: no reference set named {ref!r} in refs/", item)
        line, col = _yaml.position(item)
        out.append(
            Condition(
                index,
                source,
                compiled.program,
                compiled.refs,
                line,
                col,
                compiled.variables,
                compiled.claim_fields,
            )
        )
    return tuple(out)
