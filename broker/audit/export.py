"""Export formats for audit records: JSONL (verifiable) and CSV (for spreadsheets).

Usage (sync)::

    for line in to_jsonl(records):
        out.write(line)

Usage (streaming from the async reader, one record at a time)::

    yield csv_header()
    async for record in log.iter_records(since, until):
        yield csv_row(record)

JSONL is the authoritative form: each line is the RFC 8785 canonical JSON of
the full record including ``hash``, which ``broker audit verify`` checks. CSV
is for reading only: it flattens the record, and cells that a spreadsheet
would run as a formula are prefixed with ``'`` (so it cannot be verified).
Time windows are applied by the reader that produces ``records``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Final

from broker.audit.record import AuditRecord
from broker.errors import MalformedRequest

__all__ = [
    "CSV_COLUMNS",
    "EXPORT_FORMATS",
    "csv_header",
    "csv_row",
    "csv_row_from_dict",
    "jsonl_line",
    "parse_bound",
    "to_csv",
    "to_jsonl",
]

# format name -> Content-Type of the export response.
EXPORT_FORMATS: Final = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "ocsf": "application/x-ndjson; charset=utf-8",
}

CSV_COLUMNS: Final = (
    "seq",
    "time",
    "event",
    "decision",
    "reasons",
    "request_id",
    "client",
    "actor",
    "tee",
    "resource",
    "version",
    "evidence_digest",
    "policy_digest",
    "wrap_alg",
    "pubkey_thumbprint",
    "error_code",
    "detail",
    "claims",
    "format",
    "prev_hash",
    "hash",
)

# OWASP "CSV injection": a cell starting with one of these may run as a formula.
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r", "\n")


def jsonl_line(record: AuditRecord) -> str:
    """One export line: canonical JSON of the full record (with ``hash``) and ``\\n``."""
    return record.body_bytes().decode("utf-8") + "\n"


def to_jsonl(records: Iterable[AuditRecord]) -> Iterator[str]:
    """JSONL export, one line per record, in the order given."""
    for record in records:
        yield jsonl_line(record)


def _csv_line(cells: Iterable[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(cells)
    return buf.getvalue()


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_header() -> str:
    """The header row (RFC 4180, CRLF line end)."""
    return _csv_line(CSV_COLUMNS)


def csv_row(record: AuditRecord) -> str:
    """One CSV row; ``reasons`` and ``claims`` are compact JSON, absent values empty."""
    return csv_row_from_dict(record.to_dict(with_hash=True))


def csv_row_from_dict(data: Mapping[str, Any]) -> str:
    """``csv_row`` for a record dict (e.g. one whose requester fields were redacted)."""
    d = dict(data)
    d["reasons"] = _compact_json(d["reasons"])
    d["claims"] = "" if d["claims"] is None else _compact_json(d["claims"])
    d["version"] = "" if d["version"] is None else str(d["version"])
    d["seq"] = str(d["seq"])
    d["format"] = str(d["format"])
    return _csv_line(_cell(d[name]) for name in CSV_COLUMNS)


def to_csv(records: Iterable[AuditRecord]) -> Iterator[str]:
    """CSV export: the header row, then one row per record."""
    yield csv_header()
    for record in records:
        yield csv_row(record)


def parse_bound(text: str, *, name: str = "time") -> datetime:
    """Parse a ``since``/``until`` bound: RFC 3339 with an explicit offset or ``Z``.

    Raises:
        MalformedRequest: the text is not such a timestamp.
    """
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MalformedRequest(f"{name} is not an RFC 3339 timestamp") from None
    if value.tzinfo is None or value.utcoffset() is None:
        raise MalformedRequest(f"{name} must carry a UTC offset (e.g. 'Z' or '+00:00')")
    return value
