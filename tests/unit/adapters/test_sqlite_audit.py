"""SQLiteAuditLog: durable appends, group commit, failure without gaps, restart, reads."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from broker.adapters import sqlite_audit
from broker.adapters.sqlite_audit import SQLiteAuditLog
from broker.audit.chain import AuditChainBroken, verify_chain, verify_jsonl
from broker.audit.export import to_jsonl
from broker.audit.record import GENESIS_HASH, AuditEvent, AuditRecord
from broker.errors import AuditWriteError

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def event(i: int = 0, *, time: datetime | None = None) -> AuditEvent:
    return AuditEvent(
        event="resource.released",
        time=time or T0 + timedelta(seconds=i),
        request_id=f"req-{i}",
        client="127.0.0.1",
        decision="allow",
        resource="tenant-a/db/key",
        version=1,
        claims={"i": i},
    )


class FailNext:
    """Fault injection: make the next ``n`` group writes fail."""

    def __init__(self) -> None:
        self.pending = 0
        self.calls = 0

    def __call__(self) -> bool:
        self.calls += 1
        if self.pending:
            self.pending -= 1
            return True
        return False


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[SQLiteAuditLog]:
    audit_log = SQLiteAuditLog(tmp_path / "audit.db")
    await audit_log.start()
    yield audit_log
    await audit_log.close()


async def _all(audit_log: SQLiteAuditLog, **kw: Any) -> list[AuditRecord]:
    return [r async for r in audit_log.iter_records(**kw)]


async def _stored(audit_log: SQLiteAuditLog) -> list[AuditRecord]:
    records = await _all(audit_log)
    verify_chain((r.to_dict() for r in records), require_genesis=True)
    return records


async def test_append_returns_chained_records(log: SQLiteAuditLog) -> None:
    """Appends return records numbered from 0 and linked to each other."""
    assert await log.head() is None
    a = await log.append(event(0))
    b = await log.append(event(1))
    assert (a.seq, a.prev_hash) == (0, GENESIS_HASH)
    assert (b.seq, b.prev_hash) == (1, a.hash)
    assert await log.head() == b
    assert await _stored(log) == [a, b]


async def test_concurrent_appends_form_a_gapless_verified_chain(log: SQLiteAuditLog) -> None:
    """200 concurrent appends give seq 0..199, each once, and the stored chain verifies."""
    records = await asyncio.gather(*(log.append(event(i)) for i in range(200)))
    assert sorted(r.seq for r in records) == list(range(200))
    assert {r.request_id for r in records} == {f"req-{i}" for i in range(200)}
    stored = await _stored(log)
    assert stored == sorted(records, key=lambda r: r.seq)
    report = await log.verify()
    assert (report.count, report.head_hash) == (200, stored[-1].hash)
    assert verify_jsonl(line.encode() for line in to_jsonl(stored)).count == 200


async def test_group_commit_groups_concurrent_appends(log: SQLiteAuditLog) -> None:
    """Appends queued together share one transaction; awaited one by one they do not."""
    await asyncio.gather(*(log.append(event(i)) for i in range(200)))
    assert 1 <= log.transactions < 20
    before = log.transactions
    for i in range(5):
        await log.append(event(200 + i))
    assert log.transactions == before + 5


async def test_max_batch_bounds_a_group(tmp_path: Path) -> None:
    """No transaction holds more than max_batch records."""
    audit_log = SQLiteAuditLog(tmp_path / "audit.db", max_batch=16)
    await audit_log.start()
    try:
        await asyncio.gather(*(audit_log.append(event(i)) for i in range(100)))
        assert audit_log.transactions >= 7
        assert len(await _stored(audit_log)) == 100
    finally:
        await audit_log.close()


async def test_failed_group_fails_every_waiter_and_leaves_no_gap(tmp_path: Path) -> None:
    """An injected failure gives every waiter AuditWriteError; the chain continues intact."""
    fail = FailNext()
    audit_log = SQLiteAuditLog(tmp_path / "audit.db", fail_writes=fail)
    await audit_log.start()
    try:
        first = [await audit_log.append(event(i)) for i in range(3)]
        fail.pending = 1
        with capture_logs() as logs:
            results = await asyncio.gather(
                *(audit_log.append(event(10 + i)) for i in range(10)), return_exceptions=True
            )
        assert [entry["event"] for entry in logs] == ["audit.write_failed"]
        assert logs[0]["group"] == 10
        assert all(isinstance(r, AuditWriteError) for r in results)
        assert all(r.code == "AuditUnavailable" and r.status == 503 for r in results)  # type: ignore[union-attr]
        assert len({id(r) for r in results}) == 10  # one exception object per waiter
        assert await audit_log.head() == first[-1]
        nxt = await audit_log.append(event(20))
        assert (nxt.seq, nxt.prev_hash) == (3, first[-1].hash)
        stored = await _stored(audit_log)
        assert [r.request_id for r in stored] == ["req-0", "req-1", "req-2", "req-20"]
    finally:
        await audit_log.close()


async def test_failure_on_first_write_then_genesis(tmp_path: Path) -> None:
    """If the very first write fails, the next append still starts at seq 0."""
    fail = FailNext()
    fail.pending = 1
    audit_log = SQLiteAuditLog(tmp_path / "audit.db", fail_writes=fail)
    await audit_log.start()
    try:
        with capture_logs(), pytest.raises(AuditWriteError):
            await audit_log.append(event(0))
        record = await audit_log.append(event(1))
        assert (record.seq, record.prev_hash) == (0, GENESIS_HASH)
    finally:
        await audit_log.close()


async def test_unexpected_exception_in_writer_reaches_waiters(tmp_path: Path) -> None:
    """Even a non-sqlite exception fails the group cleanly and the writer keeps running."""
    calls = {"n": 0}

    def explode() -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return False

    audit_log = SQLiteAuditLog(tmp_path / "audit.db", fail_writes=explode)
    await audit_log.start()
    try:
        with capture_logs(), pytest.raises(AuditWriteError):
            await audit_log.append(event(0))
        assert (await audit_log.append(event(1))).seq == 0
        await audit_log.check_writable()
    finally:
        await audit_log.close()


async def test_restart_continues_the_chain(tmp_path: Path) -> None:
    """Close and reopen: the next record follows the stored head."""
    path = tmp_path / "audit.db"
    first = SQLiteAuditLog(path)
    await first.start()
    written = await asyncio.gather(*(first.append(event(i)) for i in range(5)))
    await first.close()

    second = SQLiteAuditLog(path)
    await second.start()
    try:
        head = await second.head()
        assert head is not None
        assert head.hash == max(written, key=lambda r: r.seq).hash
        record = await second.append(event(5))
        assert (record.seq, record.prev_hash) == (5, head.hash)
        assert len(await _stored(second)) == 6
    finally:
        await second.close()


async def test_close_finishes_queued_appends(tmp_path: Path) -> None:
    """Appends queued before close() are committed, and later appends are refused."""
    audit_log = SQLiteAuditLog(tmp_path / "audit.db")
    await audit_log.start()
    tasks = [asyncio.create_task(audit_log.append(event(i))) for i in range(20)]
    await asyncio.sleep(0)
    await audit_log.close()
    assert sorted([(await t).seq for t in tasks]) == list(range(20))
    with pytest.raises(AuditWriteError):
        await audit_log.append(event(99))
    with pytest.raises(AuditWriteError):
        await audit_log.check_writable()
    with pytest.raises(AuditWriteError):
        await audit_log.head()


async def test_cancelled_waiter_does_not_break_the_chain(log: SQLiteAuditLog) -> None:
    """A caller that gives up does not stop its record, or others, from being written."""
    task = asyncio.create_task(log.append(event(0)))
    await asyncio.sleep(0)
    task.cancel()
    others = await asyncio.gather(*(log.append(event(i)) for i in range(1, 4)))
    assert [r.seq for r in others] == [1, 2, 3]
    assert len(await _stored(log)) == 4


async def test_durability_settings(log: SQLiteAuditLog, tmp_path: Path) -> None:
    """The file is in WAL mode and the writer commits with synchronous=FULL."""
    await log.append(event(0))
    with sqlite3.connect(tmp_path / "audit.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    sync = await log._on(
        log._writer_pool, lambda: log._writer_conn().execute("PRAGMA synchronous").fetchone()[0]
    )
    assert sync == 2  # FULL
    assert GENESIS_HASH in sqlite_audit._SCHEMA


async def test_check_writable(log: SQLiteAuditLog) -> None:
    """The readiness probe passes on an open log."""
    await log.check_writable()


async def test_table_is_append_only(log: SQLiteAuditLog, tmp_path: Path) -> None:
    """UPDATE, DELETE and an unlinked INSERT are refused by the schema itself."""
    record = await log.append(event(0))
    conn = sqlite3.connect(tmp_path / "audit.db")
    try:
        for sql in ("UPDATE audit_record SET body = 'x'", "DELETE FROM audit_record"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                conn.execute(sql)
        with pytest.raises(sqlite3.DatabaseError, match="link"):
            conn.execute(
                "INSERT INTO audit_record VALUES (1, 't', ?, ?, '{}')", ("ab" * 32, "cd" * 32)
            )
        with pytest.raises(sqlite3.DatabaseError, match="link"):
            conn.execute(
                "INSERT INTO audit_record VALUES (5, 't', ?, ?, '{}')", (record.hash, "cd" * 32)
            )
    finally:
        conn.close()


def _tamper(path: Path, seq: int, edit: Callable[[str], str]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER audit_record_no_update")
        body = conn.execute("SELECT body FROM audit_record WHERE seq = ?", (seq,)).fetchone()[0]
        conn.execute("UPDATE audit_record SET body = ? WHERE seq = ?", (edit(body), seq))
    finally:
        conn.close()


async def test_tampered_row_is_detected_on_read(tmp_path: Path) -> None:
    """A row edited behind the adapter's back fails verify() and iter_records at its seq."""
    path = tmp_path / "audit.db"
    audit_log = SQLiteAuditLog(path)
    await audit_log.start()
    try:
        await asyncio.gather(*(audit_log.append(event(i)) for i in range(5)))
        _tamper(path, 2, lambda b: b.replace('"decision":"allow"', '"decision":"deny"'))
        with pytest.raises(AuditChainBroken) as info:
            await audit_log.verify()
        assert info.value.index == 2
        with pytest.raises(AuditChainBroken) as info:
            await _all(audit_log)
        assert info.value.index == 2
    finally:
        await audit_log.close()


async def test_corrupt_head_refuses_to_start(tmp_path: Path) -> None:
    """If the last stored record is corrupt, start() fails rather than fork the chain."""
    path = tmp_path / "audit.db"
    audit_log = SQLiteAuditLog(path)
    await audit_log.start()
    await audit_log.append(event(0))
    await audit_log.close()
    _tamper(path, 0, lambda b: b.replace("req-0", "req-X"))
    again = SQLiteAuditLog(path)
    with pytest.raises(AuditWriteError, match="cannot open audit log"):
        await again.start()


async def test_unopenable_path_raises_audit_write_error(tmp_path: Path) -> None:
    """A path that cannot hold a database is an AuditWriteError at start."""
    with pytest.raises(AuditWriteError):
        await SQLiteAuditLog(tmp_path / "missing-dir" / "audit.db").start()


async def test_iter_records_pages(tmp_path: Path) -> None:
    """Records stream in pages, in seq order, across page boundaries."""
    audit_log = SQLiteAuditLog(tmp_path / "audit.db", page_size=7)
    await audit_log.start()
    try:
        for i in range(30):
            await audit_log.append(event(i))
        assert [r.seq for r in await _all(audit_log)] == list(range(30))
    finally:
        await audit_log.close()


async def test_iter_records_time_window(log: SQLiteAuditLog) -> None:
    """since/until select the contiguous run from the first at/after since to the last at/before until."""
    for i in range(10):
        await log.append(event(i))
    got = await _all(log, since=T0 + timedelta(seconds=3), until=T0 + timedelta(seconds=6))
    assert [r.seq for r in got] == [3, 4, 5, 6]
    verify_chain(r.to_dict() for r in got)
    assert [r.seq for r in await _all(log, since=T0 + timedelta(seconds=8))] == [8, 9]
    assert [r.seq for r in await _all(log, until=T0 + timedelta(seconds=1))] == [0, 1]
    assert await _all(log, since=T0 + timedelta(days=1)) == []
    assert await _all(log, until=T0 - timedelta(days=1)) == []


async def test_time_window_stays_contiguous_when_times_are_out_of_order(
    log: SQLiteAuditLog,
) -> None:
    """An out-of-order event time inside the window is included, so the export still verifies."""
    times = [0, 1, 2, 5, 3, 4, 6]  # seq 3 was stamped later than seq 4 and 5
    for seq, sec in enumerate(times):
        await log.append(event(seq, time=T0 + timedelta(seconds=sec)))
    got = await _all(log, since=T0 + timedelta(seconds=2), until=T0 + timedelta(seconds=4))
    assert [r.seq for r in got] == [2, 3, 4, 5]
    verify_chain(r.to_dict() for r in got)


async def test_iter_records_is_a_snapshot(log: SQLiteAuditLog) -> None:
    """Records appended while an export runs are not mixed into it."""
    for i in range(3):
        await log.append(event(i))
    seen: list[int] = []
    async for record in log.iter_records():
        seen.append(record.seq)
        if record.seq == 0:
            await log.append(event(99))
    assert seen == [0, 1, 2]


async def test_overloaded_queue_refuses(tmp_path: Path) -> None:
    """Beyond max_pending queued appends, append fails fast instead of growing memory."""
    audit_log = SQLiteAuditLog(tmp_path / "audit.db", max_pending=2)
    await audit_log.start()
    try:
        results = await asyncio.gather(
            *(audit_log.append(event(i)) for i in range(5)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, AuditWriteError)]
        assert errors
        assert "overloaded" in errors[0].message
        assert len(await _stored(audit_log)) == 5 - len(errors)
    finally:
        await audit_log.close()


async def test_start_and_close_are_idempotent(tmp_path: Path) -> None:
    """A second start() or close() is harmless."""
    audit_log = SQLiteAuditLog(tmp_path / "audit.db")
    await audit_log.start()
    await audit_log.start()
    await audit_log.append(event(0))
    await audit_log.close()
    await audit_log.close()
