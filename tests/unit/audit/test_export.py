"""Export formats: canonical JSONL lines and spreadsheet-safe CSV."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import rfc8785

from broker.audit.export import (
    CSV_COLUMNS,
    EXPORT_FORMATS,
    csv_header,
    csv_row,
    jsonl_line,
    parse_bound,
    to_csv,
    to_jsonl,
)
from broker.audit.record import AuditRecord
from broker.errors import MalformedRequest

from ._factory import make_chain


def test_jsonl_line_is_canonical_record_with_hash() -> None:
    """Each JSONL line is the RFC 8785 form of the full record, newline-terminated."""
    record = make_chain(1)[0]
    line = jsonl_line(record)
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert line[:-1].encode() == rfc8785.dumps(record.to_dict())
    assert json.loads(line)["hash"] == record.hash


def test_to_jsonl_round_trips() -> None:
    """Parsing the JSONL lines back gives the same records."""
    records = make_chain(3)
    back = [AuditRecord.from_dict(json.loads(line)) for line in to_jsonl(records)]
    assert back == records


def test_jsonl_keeps_non_ascii_as_utf8() -> None:
    """Non-ASCII text is written as UTF-8, not escaped (RFC 8785 section 3.2.2.2)."""
    record = make_chain(1, detail="caf\u00e9")[0]
    assert "caf\u00e9" in jsonl_line(record)


def _parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv_has_header_and_flat_rows() -> None:
    """CSV: one header row naming CSV_COLUMNS, then one row per record."""
    records = make_chain(3)
    text = "".join(to_csv(records))
    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    rows = _parse_csv(text)
    assert [r["seq"] for r in rows] == ["0", "1", "2"]
    assert rows[1]["hash"] == records[1].hash
    assert rows[1]["prev_hash"] == records[0].hash
    assert rows[0]["time"] == "2025-01-02T03:04:05.678901Z"
    assert rows[0]["version"] == "3"


def test_csv_claims_and_reasons_are_compact_json() -> None:
    """Claims and reasons are compact JSON columns; absent claims and version are empty."""
    rows = _parse_csv("".join(to_csv(make_chain(1))))
    assert json.loads(rows[0]["claims"])["tcb"] == {"microcode": 213, "snp": 23}
    assert " " not in rows[0]["claims"]
    assert rows[0]["reasons"] == '["policy.allowed"]'
    empty = _parse_csv(csv_header() + csv_row(make_chain(1, claims=None, version=None)[0]))
    assert empty[0]["claims"] == ""
    assert empty[0]["version"] == ""


def test_csv_quotes_separators_and_newlines() -> None:
    """Commas, quotes and newlines in text survive the CSV round trip."""
    record = make_chain(1, detail='a, "b"\nc')[0]
    rows = _parse_csv(csv_header() + csv_row(record))
    assert rows[0]["detail"] == 'a, "b"\nc'


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t"])
def test_csv_neutralises_formulas(start: str) -> None:
    """Client-controlled text that a spreadsheet would run as a formula is prefixed with '."""
    record = make_chain(1, resource=start + 'HYPERLINK("http://x")')[0]
    rows = _parse_csv(csv_header() + csv_row(record))
    assert rows[0]["resource"] == "'" + start + 'HYPERLINK("http://x")'


def test_export_formats_name_content_types() -> None:
    """Both formats have a Content-Type for the export endpoint."""
    assert set(EXPORT_FORMATS) == {"jsonl", "csv", "ocsf"}
    assert EXPORT_FORMATS["csv"].startswith("text/csv")


def test_parse_bound_accepts_rfc3339_with_offset() -> None:
    """since/until take RFC 3339 with Z or an explicit offset."""
    assert parse_bound("2025-01-02T03:04:05Z") == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    got = parse_bound("2025-01-02T04:04:05.5+01:00")
    assert got == datetime(2025, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
    assert got.utcoffset() == timedelta(hours=1)
    assert got.tzinfo == timezone(timedelta(hours=1))


@pytest.mark.parametrize("text", ["2025-01-02T03:04:05", "2025-01-02", "yesterday", ""])
def test_parse_bound_rejects_naive_or_garbage(text: str) -> None:
    """A bound without an offset, or not a timestamp, is a MalformedRequest (400)."""
    with pytest.raises(MalformedRequest) as info:
        parse_bound(text, name="since")
    assert "since" in info.value.message
    assert info.value.status == 400
