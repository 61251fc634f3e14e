"""Policy test cases (``policies/tests/*.yaml``) and running them.

Example case file::

    version: 1
    cases:
      - name: milan-guest-allowed
        evidence:                     # a real piece of evidence, verified first
          tee: sev-snp
          file: sev-snp/trustee-milan-vcek.report.bin   # relative to --evidence-dir
          vcek: sev-snp/trustee-milan-vcek.vcek.der
          at: "2025-09-01T00:00:00Z"  # verification (and evaluation) time
        resource: snp/key/1
        expect: {decision: allow}
      - name: low-svn-refused
        claims:                       # or an inline claims document
          tee: sample
          claims: {svn: 0}
          flags: {debug: false}
        resource: default/key/1
        expect:
          decision: deny
          reasons: ["rule.failed:dev-sample/sample-guests#0"]

``reasons``, when given, must equal the decision's reason ids in order.
``at`` may also sit on the case (evaluation time; default: the evidence's
``at``, else now). ``request`` may set ``version``, ``is_current`` and
``wrap_alg`` (default ``1``, ``true``, ``RSA-OAEP-256``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from broker.errors import BrokerError, PolicyError
from broker.policy import _yaml
from broker.policy.evaluate import evaluate
from broker.policy.evidence_files import EvidenceFiles, verify_files
from broker.policy.model import TEE_NAMES, Decision, PolicySet, ReleaseRequest

__all__ = [
    "CaseResult",
    "EvidenceRef",
    "EvidenceUnavailable",
    "TestCase",
    "evidence_source",
    "parse_cases",
    "read_cases",
    "run_case",
]

_FILE_KEYS = ("version", "cases")
_CASE_KEYS = ("name", "description", "evidence", "claims", "resource", "at", "request", "expect")
_EVIDENCE_KEYS = ("tee", "file", "at", "collateral", "vcek")
_CLAIMS_KEYS = ("tee", "claims", "flags")
_REQUEST_KEYS = ("version", "is_current", "wrap_alg")
_EXPECT_KEYS = ("decision", "reasons")
PASS, FAIL, SKIP = "pass", "fail", "skip"


class EvidenceUnavailable(BrokerError):
    """The evidence a case names is not there (the case is skipped, not failed)."""

    code = "EvidenceUnavailable"


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    tee: str
    file: str
    at: datetime
    collateral: str | None = None
    vcek: str | None = None


@dataclass(frozen=True, slots=True)
class TestCase:
    name: str
    path: str
    line: int
    resource: str
    expect_allow: bool
    expect_reasons: tuple[str, ...] | None
    evidence: EvidenceRef | None = None
    tee: str = ""
    claims: Mapping[str, Any] = field(default_factory=dict)
    flags: Mapping[str, bool] = field(default_factory=dict)
    at: datetime | None = None
    version: int = 1
    is_current: bool = True
    wrap_alg: str = "RSA-OAEP-256"

    __test__ = False  # not a pytest class


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: TestCase
    status: str
    message: str = ""
    decision: Decision | None = None

    def format(self) -> str:
        where = f"{self.case.path}:{self.case.line}"
        text = f"{self.status.upper()} {self.case.name} ({where})"
        return f"{text}: {self.message}" if self.message else text


# (tee, claims, flags) of a case's evidence; raises EvidenceUnavailable or BrokerError.
ClaimsSource = Callable[[EvidenceRef], tuple[str, Mapping[str, Any], Mapping[str, bool]]]


def run_case(
    case: TestCase, policies: PolicySet, source: ClaimsSource, now: datetime
) -> CaseResult:
    """One case against ``policies``; ``now`` when neither case nor evidence sets a time."""
    if case.evidence is not None:
        try:
            tee, claims, flags = source(case.evidence)
        except EvidenceUnavailable as exc:
            return CaseResult(case, SKIP, exc.message)
        except BrokerError as exc:
            return CaseResult(case, FAIL, f"evidence did not verify: {exc.diagnostics()}")
        at = case.at or case.evidence.at
    else:
        tee, claims, flags, at = case.tee, case.claims, case.flags, case.at or now
    request = ReleaseRequest(case.resource, case.version, case.is_current, case.wrap_alg)
    decision = evaluate(policies, tee=tee, claims=claims, flags=flags, request=request, now=at)
    got = "allow" if decision.allow else "deny"
    wanted = "allow" if case.expect_allow else "deny"
    if got != wanted:
        return CaseResult(
            case, FAIL, f"expected {wanted}, got {got} ({', '.join(decision.reason_ids)})", decision
        )
    if case.expect_reasons is not None and decision.reason_ids != case.expect_reasons:
        return CaseResult(
            case,
            FAIL,
            f"expected reasons {list(case.expect_reasons)}, got {list(decision.reason_ids)}",
            decision,
        )
    return CaseResult(case, PASS, "", decision)


def parse_cases(files: Mapping[str, bytes], *, base: str = "") -> list[TestCase]:
    """Every case in ``{"name.yaml": bytes}``.

    Raises:
        PolicyError: the first problem, with file, line and column.
    """
    cases: list[TestCase] = []
    errors: list[PolicyError] = []
    for name in sorted(files):
        if not name.endswith((".yaml", ".yml")):
            continue
        sink = _yaml.Sink(f"{base.rstrip('/')}/{name}" if base else name)
        cases += _parse_file(files[name], sink)
        errors += sink.errors
    if errors:
        raise errors[0]
    seen: dict[str, TestCase] = {}
    for case in cases:
        if case.name in seen:
            raise PolicyError(f"duplicate case name {case.name!r}", path=case.path, line=case.line)
        seen[case.name] = case
    return cases


def read_cases(directory: Path) -> dict[str, bytes]:
    """The case files in ``directory`` (empty if it does not exist).

    Raises:
        PolicyError: a file cannot be read.
    """
    if not directory.is_dir():
        return {}
    try:
        return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
    except OSError as exc:
        raise PolicyError(f"cannot read test cases: {exc.strerror}", path=str(directory)) from None


def _parse_file(data: bytes, sink: _yaml.Sink) -> list[TestCase]:
    root = _yaml.compose(data, sink)
    if root is None:
        return []
    top = _yaml.mapping(root, sink, "test file", allowed=_FILE_KEYS, required=_FILE_KEYS)
    if top is None:
        return []
    _yaml.check_version(top, sink)
    items = _yaml.sequence(top["cases"][1], sink, "cases") if "cases" in top else None
    out = []
    for i, item in enumerate(items or []):
        case = _parse_case(i, item, sink)
        if case is not None:
            out.append(case)
    return out


def _parse_case(i: int, node: yaml.Node, sink: _yaml.Sink) -> TestCase | None:
    what = f"cases[{i}]"
    keys = _yaml.mapping(
        node, sink, what, allowed=_CASE_KEYS, required=("name", "resource", "expect")
    )
    if keys is None:
        return None
    before = len(sink.errors)
    name = _text(keys, "name", sink, what)
    resource = _text(keys, "resource", sink, what)
    at = _time(keys["at"][1], sink, f"{what}.at") if "at" in keys else None
    has_evidence, has_claims = "evidence" in keys, "claims" in keys
    if has_evidence == has_claims:
        sink.add(f"{what}: give exactly one of 'evidence' and 'claims'", node)
        return None
    evidence = _evidence(keys["evidence"][1], sink, what) if has_evidence else None
    inline = _inline_claims(keys["claims"][1], sink, what) if has_claims else None
    request = _request(keys["request"][1], sink, what) if "request" in keys else {}
    expect = _expect(keys["expect"][1], sink, what)
    if len(sink.errors) != before or name is None or resource is None or expect is None:
        return None
    tee, claims, flags = inline if inline is not None else ("", {}, {})
    return TestCase(
        name=name,
        path=sink.path,
        line=node.start_mark.line + 1,
        resource=resource,
        expect_allow=expect[0],
        expect_reasons=expect[1],
        evidence=evidence,
        tee=tee,
        claims=claims,
        flags=flags,
        at=at,
        **request,
    )


def _text(
    keys: dict[str, tuple[yaml.Node, yaml.Node]], key: str, sink: _yaml.Sink, what: str
) -> str | None:
    return _yaml.string(keys[key][1], sink, f"{what}.{key}") if key in keys else None


def _time(node: yaml.Node, sink: _yaml.Sink, what: str) -> datetime | None:
    text = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        sink.add(f"{what} must be an RFC 3339 time with an offset", node)
        return None
    return when


def _tee(node: yaml.Node, sink: _yaml.Sink, what: str) -> str | None:
    tee = _yaml.string(node, sink, what)
    if tee is not None and tee not in TEE_NAMES:
        sink.add(f"{what}: unknown TEE {tee!r}", node)
        return None
    return tee


def _evidence(node: yaml.Node, sink: _yaml.Sink, what: str) -> EvidenceRef | None:
    w = f"{what}.evidence"
    keys = _yaml.mapping(node, sink, w, allowed=_EVIDENCE_KEYS, required=("tee", "file", "at"))
    if keys is None or not {"tee", "file", "at"} <= set(keys):
        return None
    tee = _tee(keys["tee"][1], sink, f"{w}.tee")
    at = _time(keys["at"][1], sink, f"{w}.at")
    paths = {k: _text(keys, k, sink, w) for k in ("file", "collateral", "vcek") if k in keys}
    for key, value in paths.items():
        if value is not None and (value.startswith("/") or ".." in PurePosixPath(value).parts):
            sink.add(f"{w}.{key} must be relative to the evidence directory", keys[key][1])
            return None
    if tee is None or at is None or paths.get("file") is None:
        return None
    return EvidenceRef(tee, paths["file"] or "", at, paths.get("collateral"), paths.get("vcek"))


def _inline_claims(
    node: yaml.Node, sink: _yaml.Sink, what: str
) -> tuple[str, dict[str, Any], dict[str, bool]] | None:
    w = f"{what}.claims"
    keys = _yaml.mapping(node, sink, w, allowed=_CLAIMS_KEYS, required=("tee", "claims"))
    if keys is None or not {"tee", "claims"} <= set(keys):
        return None
    tee = _tee(keys["tee"][1], sink, f"{w}.tee")
    claims = _json_value(keys["claims"][1], sink, f"{w}.claims")
    flags = _json_value(keys["flags"][1], sink, f"{w}.flags") if "flags" in keys else {}
    if not isinstance(claims, dict):
        sink.add(f"{w}.claims must be a mapping", keys["claims"][1])
        return None
    if not isinstance(flags, dict) or not all(isinstance(v, bool) for v in flags.values()):
        sink.add(f"{w}.flags must map names to true/false", keys["flags"][1])
        return None
    return (tee, claims, flags) if tee is not None else None


def _json_value(node: yaml.Node, sink: _yaml.Sink, what: str) -> Any:
    value = yaml.SafeLoader("").construct_object(node, deep=True)
    if not _is_json(value):
        sink.add(f"{what} must hold only strings, numbers, booleans, null, lists and maps", node)
        return None
    return value


def _is_json(value: object) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _request(node: yaml.Node, sink: _yaml.Sink, what: str) -> dict[str, Any]:
    keys = _yaml.mapping(node, sink, f"{what}.request", allowed=_REQUEST_KEYS)
    out: dict[str, Any] = {}
    if keys is None:
        return out
    if "version" in keys:
        out["version"] = _yaml.integer(keys["version"][1], sink, f"{what}.request.version")
    if "is_current" in keys:
        value = _json_value(keys["is_current"][1], sink, f"{what}.request.is_current")
        if not isinstance(value, bool):
            sink.add(f"{what}.request.is_current must be true or false", keys["is_current"][1])
        out["is_current"] = value
    if "wrap_alg" in keys:
        out["wrap_alg"] = _yaml.string(keys["wrap_alg"][1], sink, f"{what}.request.wrap_alg")
    return out


def _expect(
    node: yaml.Node, sink: _yaml.Sink, what: str
) -> tuple[bool, tuple[str, ...] | None] | None:
    w = f"{what}.expect"
    keys = _yaml.mapping(node, sink, w, allowed=_EXPECT_KEYS, required=("decision",))
    if keys is None or "decision" not in keys:
        return None
    decision = _yaml.string(keys["decision"][1], sink, f"{w}.decision")
    if decision not in ("allow", "deny"):
        sink.add(f"{w}.decision must be allow or deny", keys["decision"][1])
        return None
    reasons: tuple[str, ...] | None = None
    if "reasons" in keys:
        items = _yaml.sequence(keys["reasons"][1], sink, f"{w}.reasons") or []
        texts = [_yaml.string(item, sink, f"{w}.reasons[]") for item in items]
        reasons = tuple(t for t in texts if t is not None)
    return decision == "allow", reasons


def evidence_source(directory: Path) -> ClaimsSource:
    """Resolves case evidence against ``directory`` and verifies it.

    A missing directory or file raises ``EvidenceUnavailable`` (skip); evidence
    that is there but does not verify raises its ``EvidenceError`` (fail).
    """

    def source(ref: EvidenceRef) -> tuple[str, Mapping[str, Any], Mapping[str, bool]]:
        if not directory.is_dir():
            raise EvidenceUnavailable(
                f"evidence directory {directory} not found "
                "(pass --evidence-dir or set BROKER_EVIDENCE_DIR)"
            )
        path = directory / ref.file
        if not path.is_file():
            raise EvidenceUnavailable(f"evidence file {path} not found")
        verified = verify_files(
            EvidenceFiles(
                ref.tee,
                path,
                ref.at,
                collateral=directory / ref.collateral if ref.collateral else None,
                vcek=directory / ref.vcek if ref.vcek else None,
            )
        )
        return verified.tee, verified.claims, verified.flags

    return source
