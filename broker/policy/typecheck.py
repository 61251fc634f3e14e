"""Type-checking conditions against the claim schema of their rule's TEEs.

Two passes per condition:

(1) Names: every ``claims.…`` / ``flags.…`` path must exist for at least one
    TEE the rule names (a rule for ``[sev-snp, tdx]`` may read
    ``claims.measurement || claims.mr_td``). Unknown -> error, with the
    closest known name.
(2) Types: a path compared with a literal, or tested against a reference
    set, must have a matching type (CEL says ``1 == "1"`` is simply false, so
    such a typo would silently deny or, in a deny rule, silently never fire).
    Then the condition is run against a claims document of the schema's
    shapes: a "no such overload" error for every TEE of the rule is a type
    error in the condition itself (``claims.vmpl >= "1"``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cel

from broker.policy import _cel, _paths, schema
from broker.policy.model import Condition, Policy, RefSet, Rule

_NUMERIC = frozenset({"int", "uint", "double"})
_SAMPLE_RESOURCE = {
    "id": "repo/type/tag",
    "repo": "repo",
    "type": "type",
    "tag": "tag",
    "version": 1,
    "is_current": True,
}
_SAMPLE_REQUEST = {"wrap_alg": "RSA-OAEP-256", "wrap_strength": 1}


@dataclass(frozen=True, slots=True)
class TypeFinding:
    """An error in one condition; ``offset`` is 0-based in its source."""

    condition: Condition
    offset: int
    message: str


def check_policy(policy: Policy, refs: Iterable[RefSet]) -> list[TypeFinding]:
    ref_values = {r.name: list(r.values) for r in refs}
    out: list[TypeFinding] = []
    for rule in policy.rules:
        tees = sorted(rule.tees)
        for cond in rule.conditions:
            out += _check_condition(rule, tees, cond, ref_values)
    return out


def _check_condition(
    rule: Rule, tees: list[str], cond: Condition, ref_values: Mapping[str, list[str | int]]
) -> list[TypeFinding]:
    out: list[TypeFinding] = []
    names_ok = True
    for read in _paths.reads(cond.source):
        message = _check_read(read, tees, ref_values)
        if message is not None:
            names_ok = names_ok and not message.startswith("unknown")
            out.append(TypeFinding(cond, read.offset, f"{rule.name}: {message}"))
    if names_ok and not out:
        message = _run_on_schema(tees, cond, ref_values)
        if message is not None:
            out.append(TypeFinding(cond, 0, f"{rule.name}: {message}"))
    return out


def _check_read(
    read: _paths.PathRead, tees: list[str], ref_values: Mapping[str, list[str | int]]
) -> str | None:
    if read.root == "flags":
        return _check_flag(read, tees)
    types = {tee: schema.claim_type(tee, read.path) for tee in tees}
    known = {tee: kind for tee, kind in types.items() if kind is not None}
    if not known:
        return _unknown_claim(read, tees)
    problems = []
    for tee, kind in known.items():
        problem = _compare(kind, read, ref_values)
        if problem is None:
            return None
        problems.append(f"{read.dotted} is {kind.describe()} for {tee}: {problem}")
    return problems[0]


def _check_flag(read: _paths.PathRead, tees: list[str]) -> str | None:
    name = read.path[0]
    names = {f for tee in tees for f in schema.flag_names(tee)}
    if len(read.path) > 1:
        return f"unknown flag {read.dotted}: flags are booleans with no fields"
    if name not in names:
        hint = _closest(name, sorted(names))
        known = ", ".join(sorted(names)) or "none"
        did = f" (did you mean flags.{hint}?)" if hint else ""
        return f"unknown flag flags.{name} for tee {'/'.join(tees)}{did}; known: {known}"
    if read.literal is not None and _paths.literal_kind(read.literal) != "bool":
        return f"flags.{name} is bool, compared with {read.literal}"
    return None


def _unknown_claim(read: _paths.PathRead, tees: list[str]) -> str:
    for size in range(len(read.path) - 1, 0, -1):
        parent = schema.claim_type(tees[0], read.path[:size])
        if parent is not None:
            dotted = ".".join(("claims", *read.path[:size]))
            if parent.kind != "map":
                return (
                    f"unknown claim {read.dotted}: {dotted} is {parent.describe()}, "
                    "which has no fields"
                )
            choices = list(parent.fields) or list(parent.keys)
            hint = _closest(read.path[size], choices)
            did = f" (did you mean {dotted}.{hint}?)" if hint else ""
            return f"unknown claim {read.dotted} for tee {'/'.join(tees)}{did}"
    hints = [h for h in (schema.suggest(tee, read.path) for tee in tees) if h]
    did = f" (did you mean {hints[0]}?)" if hints else ""
    return f"unknown claim {read.dotted} for tee {'/'.join(tees)}{did}"


def _compare(
    kind: schema.ClaimType, read: _paths.PathRead, ref_values: Mapping[str, list[str | int]]
) -> str | None:
    if read.literal is not None:
        lit = _paths.literal_kind(read.literal)
        if lit == "null" and kind.nullable:
            return None
        if kind.kind == "any" or _same(kind.kind, lit):
            return None
        return f"compared with {lit} {read.literal}"
    if read.ref is not None and read.ref in ref_values and kind.kind != "any":
        values = ref_values[read.ref]
        if values and not any(_same(kind.kind, _value_kind(v)) for v in values):
            kinds = sorted({_value_kind(v) for v in values})
            return f"refs.{read.ref} holds {'/'.join(kinds)} values, so it can never match"
    return None


def _same(claim_kind: str, literal_kind: str) -> bool:
    if claim_kind == "int":
        return literal_kind in _NUMERIC
    return claim_kind == literal_kind


def _value_kind(value: str | int) -> str:
    return "int" if isinstance(value, int) else "string"


def _run_on_schema(
    tees: list[str], cond: Condition, ref_values: Mapping[str, list[str | int]]
) -> str | None:
    errors = []
    unknown_functions = _cel.compile_condition(cond.source).unknown_functions
    for tee in tees:
        context = cel.Context(
            variables={
                "tee": tee,
                "claims": schema.synthetic_claims(tee),
                "flags": dict.fromkeys(schema.flag_names(tee), False),
                "refs": {k: list(v) for k, v in ref_values.items()},
                "resource": dict(_SAMPLE_RESOURCE),
                "request": dict(_SAMPLE_REQUEST),
            }
        )
        error = _type_error(cond.program, context, unknown_functions)
        if error is None:
            return None
        errors.append(f"{tee}: {error}")
    return "type error: " + "; ".join(errors) if errors else None


def _type_error(program: Any, context: Any, unknown_functions: frozenset[str]) -> str | None:
    try:
        program.execute(context)
    # See evaluate._run: the runtime raises many types; only two mean "types".
    except TypeError as exc:
        if "No such overload" in str(exc):
            return "an operator or function is applied to values of the wrong type"
    except RuntimeError as exc:
        text = str(exc)
        if "Undefined variable or function" in text and not any(
            f"'{fn}'" in text for fn in unknown_functions
        ):
            name = text.split("'")[1] if text.count("'") >= 2 else "a function"
            return f"{name}() does not apply to the type of value it is called on"
    except Exception:  # noqa: BLE001 - missing keys etc. are not type errors
        return None
    return None


def _closest(name: str, choices: list[str]) -> str | None:
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return match[0] if match else None
