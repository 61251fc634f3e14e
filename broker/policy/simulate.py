"""Replaying recent attestations against a draft policy set, before it goes live.

Example::

    report = simulate(records, live=live_set, draft=draft_set, now=now)
    print(format_text(report))      # who would lose or gain access

``records`` are audit records in their dict form (``AuditRecord.to_dict()``,
or lines of ``broker audit export``). The subjects are the verified claims of
``kbs.attest`` records that issued a token, and the resources each asked for
(``resource.*`` records with the same evidence digest, which also carry the
claims, so a request whose attestation lies before the window still counts).
Each (subject, resource) pair is evaluated against both sets at ``now``; pairs
whose outcome differs are reported, grouped by resource, TEE and measurement.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from broker.errors import MalformedRequest
from broker.policy.evaluate import evaluate
from broker.policy.model import PolicySet, ReleaseRequest
from broker.policy.schema import measurement_of

__all__ = ["Change", "SimulationReport", "format_text", "parse_since", "simulate"]

MAX_SUBJECTS = 100_000
_SINCE = re.compile(r"(\d{1,6})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w`` -> a duration.

    Raises:
        MalformedRequest: any other text.
    """
    match = _SINCE.fullmatch(text.strip())
    if match is None:
        raise MalformedRequest(f"since {text[:20]!r} must look like 30d, 12h, 90m or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass(slots=True)
class _Subject:
    tee: str
    claims: Mapping[str, Any]
    flags: Mapping[str, bool]
    requests: set[tuple[str, int | None, str]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Change:
    """Requests of one (resource, tee, measurement) whose outcome changes."""

    resource: str
    tee: str
    measurement: str
    change: str  # "lose" (allowed now, denied by the draft) or "gain"
    count: int
    live_reasons: tuple[str, ...]
    draft_reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "tee": self.tee,
            "measurement": self.measurement,
            "change": self.change,
            "count": self.count,
            "live_reasons": list(self.live_reasons),
            "draft_reasons": list(self.draft_reasons),
        }


@dataclass(frozen=True, slots=True)
class SimulationReport:
    live_digest: str
    draft_digest: str
    subjects: int
    requests: int
    unchanged: int
    changes: tuple[Change, ...]

    @property
    def lose(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.change == "lose")

    @property
    def gain(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.change == "gain")

    def to_dict(self) -> dict[str, Any]:
        return {
            "live_digest": self.live_digest,
            "draft_digest": self.draft_digest,
            "subjects": self.subjects,
            "requests": self.requests,
            "unchanged": self.unchanged,
            "lose": [c.to_dict() for c in self.lose],
            "gain": [c.to_dict() for c in self.gain],
        }


def simulate(
    records: Iterable[Mapping[str, Any]], *, live: PolicySet, draft: PolicySet, now: datetime
) -> SimulationReport:
    """Who would lose or gain access if ``draft`` replaced ``live`` at ``now``."""
    subjects = _subjects(records)
    counts: dict[tuple[str, str, str, str, tuple[str, ...], tuple[str, ...]], int] = {}
    requests = unchanged = 0
    for subject in subjects.values():
        for resource, version, wrap_alg in sorted(subject.requests, key=str):
            requests += 1
            request = ReleaseRequest(resource, version or 1, True, wrap_alg)
            before = _decide(live, subject, request, now)
            after = _decide(draft, subject, request, now)
            if before.allow == after.allow:
                unchanged += 1
                continue
            key = (
                resource,
                subject.tee,
                measurement_of(subject.tee, subject.claims) or "",
                "lose" if before.allow else "gain",
                before.reason_ids,
                after.reason_ids,
            )
            counts[key] = counts.get(key, 0) + 1
    changes = tuple(
        Change(res, tee, measurement, change, count, live_ids, draft_ids)
        for (res, tee, measurement, change, live_ids, draft_ids), count in sorted(counts.items())
    )
    return SimulationReport(live.digest, draft.digest, len(subjects), requests, unchanged, changes)


def _decide(policies: PolicySet, subject: _Subject, request: ReleaseRequest, now: datetime) -> Any:
    return evaluate(
        policies,
        tee=subject.tee,
        claims=subject.claims,
        flags=subject.flags,
        request=request,
        now=now,
    )


def _subjects(records: Iterable[Mapping[str, Any]]) -> dict[str, _Subject]:
    subjects: dict[str, _Subject] = {}
    for record in records:
        event, digest = record.get("event"), record.get("evidence_digest") or ""
        body = record.get("claims")
        if not digest or not isinstance(body, Mapping) or len(subjects) >= MAX_SUBJECTS:
            continue
        claims, flags = body.get("claims"), body.get("flags")
        if not isinstance(claims, Mapping) or not isinstance(flags, Mapping):
            continue
        tee = str(body.get("tee") or record.get("tee") or "")
        if event == "kbs.attest" and record.get("decision") == "allow":
            subjects.setdefault(digest, _Subject(tee, claims, flags))
        elif isinstance(event, str) and event.startswith("resource.") and record.get("resource"):
            subject = subjects.setdefault(digest, _Subject(tee, claims, flags))
            version = record.get("version")
            subject.requests.add(
                (
                    str(record["resource"]),
                    version if isinstance(version, int) else None,
                    str(record.get("wrap_alg") or "RSA-OAEP-256"),
                )
            )
    return subjects


def format_text(report: SimulationReport) -> str:
    lines = [
        f"live  {report.live_digest}",
        f"draft {report.draft_digest}",
        f"{report.subjects} attested TEE(s), {report.requests} resource request(s) replayed: "
        f"{len(report.lose)} group(s) would lose access, {len(report.gain)} would gain, "
        f"{report.unchanged} unchanged",
    ]
    for title, group in (("LOSE", report.lose), ("GAIN", report.gain)):
        for c in group:
            lines.append(
                f"{title} {c.resource}  tee={c.tee}  measurement={c.measurement or '-'}  "
                f"requests={c.count}"
            )
            lines.append(f"     live:  {', '.join(c.live_reasons) or 'allowed'}")
            lines.append(f"     draft: {', '.join(c.draft_reasons) or 'allowed'}")
    return "\n".join(lines)
