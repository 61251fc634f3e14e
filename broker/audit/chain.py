"""Offline verification of an audit chain (the procedure in ``docs/audit-format.md``).

Steps (1)-(7) in the comments are the numbered steps of that document.

Usage::

    with open("audit.jsonl", "rb") as f:
        report = verify_jsonl(f)          # raises AuditChainBroken(index, reason)
    print(report.count, report.head_hash)

``verify_chain`` takes already-decoded record dicts (from a database, say);
``verify_jsonl`` adds the line-level checks of an export file. Indexes are
0-based positions in the input (record ``index`` is on line ``index + 1``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from broker import jcs
from broker.audit.record import GENESIS_HASH, AuditHashMismatch, AuditRecord, AuditRecordInvalid
from broker.errors import BrokerError

__all__ = ["AuditChainBroken", "ChainReport", "parse_jsonl", "verify_chain", "verify_jsonl"]


class AuditChainBroken(BrokerError):
    """The chain is broken at record ``index``: the first record that fails a check."""

    code = "AuditChainBroken"

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"record {index}: {reason}")
        self.index = index
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What a successful verification proves.

    ``count`` records, seq ``first_seq``..``last_seq``, each linked to the one
    before. ``first_prev_hash`` is the hash the first record links back to:
    ``GENESIS_HASH`` for a chain from its start, otherwise the hash of the
    record just before an exported window, which can be matched against an
    earlier export. ``head_hash`` is the hash of the last record. For an empty
    input ``count`` is 0, ``first_seq``/``last_seq`` are -1 and both hashes
    are ``GENESIS_HASH``.
    """

    count: int
    head_hash: str
    first_seq: int = -1
    last_seq: int = -1
    first_prev_hash: str = GENESIS_HASH

    @property
    def from_genesis(self) -> bool:
        return self.first_seq == 0


def verify_chain(
    records: Iterable[Mapping[str, Any]],
    *,
    require_genesis: bool = False,
    expected_head: str | None = None,
) -> ChainReport:
    """Check every record and every link, in order; stop at the first failure.

    ``require_genesis`` demands that the input start at seq 0 (a full export,
    not a time window). ``expected_head`` is a head hash obtained separately
    (e.g. from the broker): the last record must carry it, which detects
    records removed from the end.

    Raises:
        AuditChainBroken: at the first record that fails a step.
    """
    count = 0
    first: AuditRecord | None = None
    prev: AuditRecord | None = None
    for index, data in enumerate(records):
        record = _verify_one(index, data, prev, require_genesis=require_genesis)
        first = first or record
        prev = record
        count += 1
    if prev is None or first is None:
        if require_genesis or expected_head is not None:
            raise AuditChainBroken(0, "the chain holds no records")
        return ChainReport(count=0, head_hash=GENESIS_HASH)
    # (7) Head: compared only at the end, so truncation is reported after the
    #     records themselves were shown to be intact.
    if expected_head is not None and prev.hash != expected_head.lower():
        raise AuditChainBroken(
            count - 1, f"last record's hash {prev.hash} is not the expected head {expected_head}"
        )
    return ChainReport(
        count=count,
        head_hash=prev.hash,
        first_seq=first.seq,
        last_seq=prev.seq,
        first_prev_hash=first.prev_hash,
    )


def _verify_one(
    index: int, data: object, prev: AuditRecord | None, *, require_genesis: bool
) -> AuditRecord:
    # (2) Shape: every field of format v1, right types, nothing extra.
    if not isinstance(data, Mapping):
        raise AuditChainBroken(index, "malformed record: not a JSON object")
    stored = data.get("hash")
    if not isinstance(stored, str):
        raise AuditChainBroken(index, "malformed record: missing field 'hash'")
    # (3) Self-hash: recomputing SHA-256 over the canonical bytes must give the
    #     stored hash; any edit to any field breaks this (from_dict checks it).
    try:
        record = AuditRecord.from_dict(data)
    except AuditHashMismatch as exc:
        raise AuditChainBroken(index, f"modified record: {exc.message}") from None
    except AuditRecordInvalid as exc:
        raise AuditChainBroken(index, f"malformed record: {exc.message}") from None
    if prev is None:
        # (4) Start: seq 0 links to the genesis hash (from_dict enforced it);
        #     a window may start later, but not when a full chain is required.
        if require_genesis and record.seq != 0:
            raise AuditChainBroken(
                index, f"chain starts at seq {record.seq}, expected 0 (records missing before it)"
            )
        return record
    # (5) Sequence: consecutive numbers; a gap, repeat or step back means a
    #     record was deleted, inserted or moved.
    if record.seq != prev.seq + 1:
        raise AuditChainBroken(
            index,
            f"sequence break: expected seq {prev.seq + 1}, found {record.seq} "
            "(record deleted, inserted or reordered)",
        )
    # (6) Link: prev_hash names the hash of the record before it.
    if record.prev_hash != prev.hash:
        raise AuditChainBroken(
            index,
            f"prev_hash {record.prev_hash} does not match the previous record's hash "
            f"{prev.hash} (record replaced or chain forked)",
        )
    return record


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_jsonl(lines: Iterable[bytes]) -> Iterator[Mapping[str, Any]]:
    """Decode an export file line by line, lazily (so errors surface at their index).

    Each line must be UTF-8, end with ``\\n`` and be exactly the RFC 8785
    canonical JSON of the object it holds: the exporter writes that form, so
    any other spelling means the file was edited.

    Raises:
        AuditChainBroken: naming the first malformed line's record index.
    """
    for index, raw in enumerate(lines):
        # (1) Line: newline-terminated, UTF-8, one JSON object, in RFC 8785 form.
        if not raw.endswith(b"\n"):
            raise AuditChainBroken(
                index, "malformed line: not terminated by a newline (truncated?)"
            )
        body = raw[:-1]
        try:
            text = body.decode("utf-8")
            data = json.loads(text, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "not one JSON value"
            raise AuditChainBroken(index, f"malformed line: {reason}") from None
        if not isinstance(data, dict):
            raise AuditChainBroken(index, "malformed line: not a JSON object")
        try:
            canonical = jcs.dumps(data)
        except (jcs.CanonicalizationError, RecursionError):
            raise AuditChainBroken(index, "malformed line: value outside canonical JSON") from None
        if canonical != body:
            raise AuditChainBroken(index, "malformed line: not in canonical form (RFC 8785)")
        yield data


def verify_jsonl(
    lines: Iterable[bytes], *, require_genesis: bool = False, expected_head: str | None = None
) -> ChainReport:
    """``verify_chain`` over an export file's lines (``open(path, "rb")`` iterates them).

    Raises:
        AuditChainBroken: at the first malformed line or broken record.
    """
    return verify_chain(
        parse_jsonl(lines), require_genesis=require_genesis, expected_head=expected_head
    )
