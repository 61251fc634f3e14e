"""Compliance report: counting, windows, and safe text and HTML rendering."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.record import AuditRecord, AuditRecordInvalid, chain_next
from broker.audit.report import Count, build_report, render_html, render_text
from broker.audit.report_svg import Series, bar_chart, time_chart
from broker.errors import MalformedRequest
from tests.unit.audit._factory import T0, make_event

DAY = timedelta(days=1)


def _chain(*events: dict[str, Any]) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = None
    for i, overrides in enumerate(events):
        prev = chain_next(prev, make_event(i, **overrides))
        records.append(prev)
    return records


def _release(**kw: Any) -> dict[str, Any]:
    return {"event": "resource.released", "decision": "allow", **kw}


def _deny(**kw: Any) -> dict[str, Any]:
    base = {"event": "resource.denied", "decision": "deny", "wrap_alg": "", "version": None}
    return {**base, **kw}


def _sample() -> list[AuditRecord]:
    return _chain(
        _release(),
        _release(resource="tenant-b/tls/key", tee="tdx", version=1),
        _release(time=T0 + DAY),
        _deny(reasons=("policy.measurement_mismatch", "policy.debug_enabled")),
        _deny(time=T0 + 2 * DAY, resource="", event="kbs.attest", reasons=(), error_code="X"),
        {"event": "kbs.auth", "decision": "ok"},
        _release(time=T0 + 3 * DAY, client="10.0.0.9"),
    )


def test_counts_by_resource_tee_reason_and_day() -> None:
    """Releases and denials are counted per resource, TEE, reason and UTC day."""
    report = build_report(_sample())
    assert (report.records, report.releases, report.denials) == (7, 4, 2)
    assert (report.first_seq, report.last_seq) == (0, 6)
    assert report.by_resource == (
        Count("tenant-a/db/key", 3, 1),
        Count("(none)", 0, 1),
        Count("tenant-b/tls/key", 1, 0),
    )
    assert report.by_tee == (Count("snp", 3, 2), Count("tdx", 1, 0))
    assert report.denials_by_reason == (
        ("X", 1),
        ("policy.debug_enabled", 1),
        ("policy.measurement_mismatch", 1),
    )
    assert [(c.label, c.releases, c.denials) for c in report.by_day] == [
        ("2025-01-02", 2, 1),
        ("2025-01-03", 1, 0),
        ("2025-01-04", 0, 1),
        ("2025-01-05", 1, 0),
    ]


def test_recipients_say_who_received_what() -> None:
    """Each (resource, version, tee, client, enclave key) has its release count and times."""
    report = build_report(_sample())
    rows = [(r.resource, r.version, r.tee, r.client, r.releases) for r in report.recipients]
    assert rows == [
        ("tenant-a/db/key", 3, "snp", "10.0.0.9", 1),
        ("tenant-a/db/key", 3, "snp", "127.0.0.1", 2),
        ("tenant-b/tls/key", 1, "tdx", "127.0.0.1", 1),
    ]
    pair = report.recipients[1]
    assert pair.first == T0
    assert pair.last == T0 + DAY


def test_window_filters_by_time_and_fills_days() -> None:
    """Only records inside [since, until] count; every day of the window is listed."""
    since, until = T0 + DAY - timedelta(hours=1), T0 + 4 * DAY
    report = build_report((r.to_dict() for r in _sample()), since=since, until=until)
    assert (report.records, report.releases, report.denials) == (3, 2, 1)
    assert report.by_day[0].label == "2025-01-03"
    assert report.by_day[-1].label == "2025-01-06"
    assert len(report.by_day) == 4


def test_bad_bounds_and_records() -> None:
    """Naive or inverted bounds, and invalid record dicts, are refused."""
    with pytest.raises(MalformedRequest):
        build_report([], since=datetime(2025, 1, 1))
    with pytest.raises(MalformedRequest, match="after"):
        build_report([], since=T0, until=T0 - DAY)
    data = _sample()[0].to_dict()
    data["resource"] = "edited"
    with pytest.raises(AuditRecordInvalid):
        build_report([data])


def test_empty_report_renders() -> None:
    """No records still gives a complete text and HTML report."""
    report = build_report([])
    assert report.by_day == ()
    assert "no records" in render_text(report)
    assert "no data" in render_html(report)
    long = build_report([], since=T0, until=T0 + 20000 * DAY)
    assert long.by_day == ()


def test_text_report_has_the_sections() -> None:
    """The text report names totals, each breakdown and the recipients."""
    text = render_text(build_report(_sample()))
    for heading in ("By resource", "By TEE type", "Denials by reason", "By day (UTC)"):
        assert heading in text
    assert "Releases: 4    Denials: 2" in text
    assert "tenant-b/tls/key" in text


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


HOSTILE = "<script>alert(1)</script>\"&'<img src=x onerror=alert(1)>"


def test_html_escapes_everything_and_loads_nothing() -> None:
    """Hostile labels are escaped; the page has no script, no external reference."""
    records = _chain(
        _release(resource=HOSTILE, tee=HOSTILE, client=HOSTILE),
        _deny(reasons=(HOSTILE,), resource=HOSTILE),
    )
    page = render_html(build_report(records))
    assert "<script" not in page
    assert "<img" not in page
    parser = _Collector()
    parser.feed(page)
    assert "script" not in parser.tags
    assert "img" not in parser.tags
    assert not [a for a in parser.attrs if a[0] in {"src", "href"} or a[0].startswith("on")]
    assert "Content-Security-Policy" in page
    assert page.count("<svg") == 3
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ET.fromstring(svg)  # well-formed XML, so every label was escaped


def test_text_report_neutralises_control_characters() -> None:
    """A control character in a label is shown escaped, never sent to the terminal."""
    records = _chain(_deny(reasons=("evil\x1b[2J\nline",)))
    text = render_text(build_report(records))
    assert "\x1b" not in text
    assert "evil\\x1b[2J\\x0aline" in text


def test_charts_scale_and_cap_rows() -> None:
    """Charts scale to the largest value and fold rows beyond the cap into 'others'."""
    many = _chain(*(_release(resource=f"r/{i:02d}/k") for i in range(30)))
    page = render_html(build_report(many))
    assert "5 others" in page
    series = (Series("a", "#000000"),)
    svg = bar_chart("t", [("x", (10,)), ("y", (5,))], series)
    widths = [int(w) for w in re.findall(r'<rect x="220" y="\d+" width="(\d+)"', svg)]
    assert widths == [420, 210]
    ET.fromstring(time_chart("t", [("d1", (1,)), ("d2", (3,))], series))


@settings(max_examples=50, deadline=None)
@given(
    labels=st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=5),
    values=st.lists(st.integers(0, 10_000), min_size=5, max_size=5),
)
def test_any_label_gives_well_formed_svg(labels: list[str], values: list[int]) -> None:
    """Arbitrary label text always yields well-formed SVG."""
    printable = [
        "".join(c for c in label if c.isprintable() and c != "\x7f") or "x" for label in labels
    ]
    rows = [(label, (v,)) for label, v in zip(printable, values, strict=False)]
    series = (Series("n", "#123456"),)
    ET.fromstring(bar_chart("t", rows, series))
    ET.fromstring(time_chart("t", rows, series))


def test_report_time_is_utc() -> None:
    """Bounds with an offset are reported in UTC."""
    report = build_report([], since=T0.astimezone(UTC), until=T0 + DAY)
    assert report.since is not None
    assert report.since.tzinfo is UTC
