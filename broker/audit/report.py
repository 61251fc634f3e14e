"""Compliance report: who received which key, and what was refused, over a time window.

Usage::

    report = build_report(records, since=start, until=end)   # AuditRecord or record dicts
    print(render_text(report))
    Path("report.html").write_text(render_html(report))      # by the caller: no I/O here

A *release* is a ``resource.released`` record with decision ``allow``. A
*denial* is any record with decision ``deny`` (refused attestations as well
as refused key requests). Denials count once per reason id; a denial with
no reason counts under its error code. Days are UTC dates. A report reads
the records as given and does not verify the chain: verify the export first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape
from typing import Any, Final

from broker.audit.record import AuditRecord, format_time
from broker.audit.report_svg import Series, bar_chart, time_chart
from broker.errors import MalformedRequest

__all__ = [
    "MAX_FILLED_DAYS",
    "Count",
    "Recipient",
    "Report",
    "build_report",
    "render_html",
    "render_text",
]

RELEASE_EVENT: Final = "resource.released"
NONE_LABEL: Final = "(none)"
# Longer windows list only the days that had events, so a report stays small.
MAX_FILLED_DAYS: Final = 3660
CHART_ROWS: Final = 25
_SERIES: Final = (Series("releases", "#2b7a3d"), Series("denials", "#b3261e"))
_DENIALS: Final = (Series("denials", "#b3261e"),)


@dataclass(frozen=True, slots=True)
class Count:
    """Releases and denials under one label (a resource, a TEE type or a UTC day)."""

    label: str
    releases: int
    denials: int


@dataclass(frozen=True, slots=True)
class Recipient:
    """Releases of one key version to one TEE type from one client and enclave key."""

    resource: str
    version: int | None
    tee: str
    client: str
    pubkey_thumbprint: str
    releases: int
    first: datetime
    last: datetime


@dataclass(frozen=True, slots=True)
class Report:
    """Counts over the records whose time lies in ``[since, until]`` (open ends when None)."""

    since: datetime | None
    until: datetime | None
    records: int
    releases: int
    denials: int
    first_seq: int | None
    last_seq: int | None
    by_resource: tuple[Count, ...]
    by_tee: tuple[Count, ...]
    by_day: tuple[Count, ...]
    denials_by_reason: tuple[tuple[str, int], ...]
    recipients: tuple[Recipient, ...]


def _bound(name: str, value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise MalformedRequest(f"{name} must carry a UTC offset")
    return value.astimezone(UTC)


def _counts(releases: Counter[str], denials: Counter[str]) -> tuple[Count, ...]:
    labels = set(releases) | set(denials)
    rows = [Count(label, releases[label], denials[label]) for label in labels]
    rows.sort(key=lambda c: (-(c.releases + c.denials), c.label))
    return tuple(rows)


def _days(
    releases: Counter[date], denials: Counter[date], since: datetime | None, until: datetime | None
) -> tuple[Count, ...]:
    seen = set(releases) | set(denials)
    if not seen and (since is None or until is None):
        return ()
    start = since.date() if since is not None else min(seen)
    end = until.date() if until is not None else max(seen)
    if (end - start).days > MAX_FILLED_DAYS:
        days = sorted(seen)
    else:
        days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    return tuple(Count(d.isoformat(), releases[d], denials[d]) for d in days)


def _denial_reasons(record: AuditRecord) -> tuple[str, ...]:
    return record.reasons or (record.error_code or "unspecified",)


def build_report(
    records: Iterable[AuditRecord | Mapping[str, Any]],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Report:
    """Count releases and denials by resource, TEE, reason and day, and list recipients.

    Raises:
        MalformedRequest: a naive bound, or ``since`` after ``until``.
        AuditRecordInvalid: a record dict is not a valid format-1 record.
    """
    lo, hi = _bound("since", since), _bound("until", until)
    if lo is not None and hi is not None and lo > hi:
        raise MalformedRequest("since is after until")
    total, seqs = 0, []
    rel_res: Counter[str] = Counter()
    den_res: Counter[str] = Counter()
    rel_tee: Counter[str] = Counter()
    den_tee: Counter[str] = Counter()
    rel_day: Counter[date] = Counter()
    den_day: Counter[date] = Counter()
    reasons: Counter[str] = Counter()
    recipients: dict[tuple[str, int | None, str, str, str], list[Any]] = {}
    for item in records:
        rec = item if isinstance(item, AuditRecord) else AuditRecord.from_dict(item)
        if (lo is not None and rec.time < lo) or (hi is not None and rec.time > hi):
            continue
        total += 1
        seqs.append(rec.seq)
        resource, tee = rec.resource or NONE_LABEL, rec.tee or NONE_LABEL
        if rec.event == RELEASE_EVENT and rec.decision == "allow":
            rel_res[resource] += 1
            rel_tee[tee] += 1
            rel_day[rec.time.date()] += 1
            key = (resource, rec.version, tee, rec.client, rec.pubkey_thumbprint)
            entry = recipients.setdefault(key, [0, rec.time, rec.time])
            entry[0] += 1
            entry[1], entry[2] = min(entry[1], rec.time), max(entry[2], rec.time)
        elif rec.decision == "deny":
            den_res[resource] += 1
            den_tee[tee] += 1
            den_day[rec.time.date()] += 1
            reasons.update(_denial_reasons(rec))
    return Report(
        since=lo,
        until=hi,
        records=total,
        releases=sum(rel_res.values()),
        denials=sum(den_res.values()),
        first_seq=min(seqs, default=None),
        last_seq=max(seqs, default=None),
        by_resource=_counts(rel_res, den_res),
        by_tee=_counts(rel_tee, den_tee),
        by_day=_days(rel_day, den_day, lo, hi),
        denials_by_reason=tuple(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        recipients=tuple(
            Recipient(*key, releases=n, first=first, last=last)
            for key, (n, first, last) in sorted(
                recipients.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2:])
            )
        ),
    )


# -- rendering ------------------------------------------------------------------------------------


def _window(report: Report) -> str:
    lo = format_time(report.since) if report.since else "the first record"
    hi = format_time(report.until) if report.until else "the last record"
    return f"{lo} to {hi}"


def _seqs(report: Report) -> str:
    if report.first_seq is None:
        return "no records"
    return f"{report.records} records, seq {report.first_seq}..{report.last_seq}"


def _printable(value: object) -> str:
    # Terminal safety: a control character (an ANSI escape, a newline) in a
    # label must not reach the terminal or break the columns.
    text = str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _table(header: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> list[str]:
    cells = [header, *(tuple(_printable(c) for c in row) for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def _recipient_row(r: Recipient) -> tuple[object, ...]:
    version = "" if r.version is None else r.version
    first, last = format_time(r.first), format_time(r.last)
    return (r.resource, version, r.tee, r.client, r.pubkey_thumbprint[:16], r.releases, first, last)


def _count_rows(rows: tuple[Count, ...]) -> list[tuple[object, ...]]:
    return [(c.label, c.releases, c.denials) for c in rows]


_RECIPIENT_HEADER: Final = ("resource", "version", "tee", "client", "enclave key", "releases")
_RECIPIENT_HEADER_FULL: Final = (*_RECIPIENT_HEADER, "first", "last")
_COUNTS: Final = ("releases", "denials")


def render_text(report: Report) -> str:
    """A plain-text report for terminals and e-mail."""
    out = [
        "Key release report",
        f"Window: {_window(report)} ({_seqs(report)})",
        f"Releases: {report.releases}    Denials: {report.denials}",
        "",
        "By resource",
        *_table(("resource", *_COUNTS), _count_rows(report.by_resource)),
        "",
        "By TEE type",
        *_table(("tee", *_COUNTS), _count_rows(report.by_tee)),
        "",
        "Denials by reason",
        *_table(("reason", "denials"), report.denials_by_reason),
        "",
        "By day (UTC)",
        *_table(("day", *_COUNTS), _count_rows(report.by_day)),
        "",
        "Who received what",
        *_table(_RECIPIENT_HEADER_FULL, (_recipient_row(r) for r in report.recipients)),
    ]
    return "\n".join(out) + "\n"


def _html_table(header: tuple[str, ...], rows: Iterable[tuple[object, ...]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _top(rows: tuple[Count, ...]) -> list[tuple[str, tuple[int, int]]]:
    shown = [(c.label, (c.releases, c.denials)) for c in rows[:CHART_ROWS]]
    rest = rows[CHART_ROWS:]
    if rest:
        label = f"{len(rest)} others"
        shown.append((label, (sum(c.releases for c in rest), sum(c.denials for c in rest))))
    return shown


_STYLE: Final = (
    "body{font-family:sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    "th{background:#f3f3f3}td:nth-child(n+2){font-variant-numeric:tabular-nums}"
    "svg{display:block;margin:0.5em 0 1.5em}"
)


def render_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS and SVG, no scripts, no external assets."""
    reasons = [(label, (n,)) for label, n in report.denials_by_reason[:CHART_ROWS]]
    days = [(c.label, (c.releases, c.denials)) for c in report.by_day]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        # Nothing may load: the page must look the same offline, in an archive.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        "<title>Key release report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Key release report</h1>",
        f"<p>Window: {escape(_window(report))} ({escape(_seqs(report))}).</p>",
        f"<p><strong>{report.releases}</strong> releases, "
        f"<strong>{report.denials}</strong> denials.</p>",
        "<h2>Over time (UTC days)</h2>",
        time_chart("Releases and denials per day", days, _SERIES),
        "<h2>By resource</h2>",
        bar_chart("Releases and denials by resource", _top(report.by_resource), _SERIES),
        _html_table(("resource", *_COUNTS), _count_rows(report.by_resource)),
        "<h2>Denials by reason</h2>",
        bar_chart("Denials by reason", reasons, _DENIALS),
        _html_table(("reason", "denials"), report.denials_by_reason),
        "<h2>By TEE type</h2>",
        _html_table(("tee", *_COUNTS), _count_rows(report.by_tee)),
        "<h2>Who received what</h2>",
        _html_table(_RECIPIENT_HEADER_FULL, (_recipient_row(r) for r in report.recipients)),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
