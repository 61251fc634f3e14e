"""GroupCommit: queued appends commit as groups; a failed group fails all its waiters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from broker.adapters.group_commit import GroupCommit
from broker.audit.record import AuditEvent, AuditRecord, chain_next
from broker.errors import AuditWriteError

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _event(n: int) -> AuditEvent:
    return AuditEvent(event="test.event", time=T0, request_id=f"r{n}")


class _Log:
    def __init__(self, *, fail: bool = False) -> None:
        self.groups: list[int] = []
        self.committed: list[AuditRecord] = []
        self.failures: list[str] = []
        self.head: AuditRecord | None = None
        self.fail = fail

    async def write(self, events: list[AuditEvent]) -> list[AuditRecord]:
        if self.fail:
            raise OSError("disk full")
        self.groups.append(len(events))
        records = []
        for event in events:
            self.head = chain_next(self.head, event)
            records.append(self.head)
        return records

    async def after(self, records: list[AuditRecord]) -> None:
        self.committed.extend(records)

    def failed(self, exc: BaseException, size: int) -> None:
        self.failures.append(f"{type(exc).__name__}:{size}")


def _groups(log: _Log, *, max_batch: int = 512, max_pending: int = 100) -> GroupCommit:
    return GroupCommit(
        log.write,
        max_batch=max_batch,
        max_pending=max_pending,
        committed=log.after,
        failed=log.failed,
    )


async def test_appends_queued_together_commit_as_bounded_groups() -> None:
    """Ten appends queued at once commit in groups of at most max_batch, in order."""
    log = _Log()
    groups = _groups(log, max_batch=4)
    groups.start()
    records = await asyncio.gather(*(groups.append(_event(n)) for n in range(10)))
    await groups.stop()
    assert [r.seq for r in records] == list(range(10))
    assert log.groups == [4, 4, 2] and log.committed == list(records)
    assert not groups.running


async def test_a_failed_group_fails_every_waiter_and_reports_once() -> None:
    """Nothing of a failed group is reported stored; the adapter hears of it once."""
    log = _Log(fail=True)
    groups = _groups(log)
    groups.start()
    results = await asyncio.gather(
        *(groups.append(_event(n)) for n in range(3)), return_exceptions=True
    )
    await groups.stop()
    assert all(isinstance(r, AuditWriteError) for r in results)
    assert log.failures == ["OSError:3"] and log.committed == []


async def test_too_many_waiting_appends_are_refused() -> None:
    """Past max_pending the append is refused at once, not queued."""
    log = _Log()
    groups = _groups(log, max_pending=1)  # the writer is not started: nothing drains
    first = asyncio.ensure_future(groups.append(_event(0)))
    await asyncio.sleep(0)
    with pytest.raises(AuditWriteError, match="overloaded"):
        await groups.append(_event(1))
    groups.start()
    assert (await first).seq == 0
    await groups.stop()
