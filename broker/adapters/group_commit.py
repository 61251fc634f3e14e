"""Group commit for the audit logs: many appends, one transaction, then every waiter.

Usage (inside an audit log adapter)::

    groups = GroupCommit(write_group, max_batch=512, max_pending=10_000,
                         committed=after_commit, failed=after_failure)
    groups.start()
    record = await groups.append(event)   # after the group holding it committed
    await groups.stop()                   # finishes everything queued before it

``append`` queues the event and awaits a future. One writer task takes
everything queued (up to ``max_batch``), hands the events to ``write`` (one
transaction, returning the committed records in order), awaits ``committed``
with them and only then resolves the futures. If ``write`` fails, ``failed``
sees the exception first and every waiter of the group gets AuditWriteError:
nothing of a failed group is reported stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from broker.audit.record import AuditEvent, AuditRecord
from broker.errors import AuditWriteError

__all__ = ["GroupCommit", "after_commit"]


_log = structlog.get_logger(__name__)


async def after_commit(
    records: list[AuditRecord],
    *,
    catch_up: Callable[[int], Awaitable[object]] | None,
    on_commit: Callable[[list[AuditRecord]], None] | None,
) -> None:
    """Hand a committed group to the transparency tree, before any waiter wakes.

    On a log with other writers, ``catch_up(first seq)`` first reads what they
    appended before this group, so ``on_commit`` finds the group continuing the
    tree. A failed catch-up is only logged: the records are durable, and a
    receipt reads the log again before it names a record the tree lacks.
    """
    if catch_up is not None:
        try:
            await catch_up(records[0].seq)
        except Exception as exc:  # noqa: BLE001 - durable records; receipts retry the read
            _log.warning("audit.catch_up_failed", seq=records[0].seq, error=str(exc))
    if on_commit is not None:
        on_commit(records)


@dataclass(slots=True)
class _Pending:
    event: AuditEvent
    future: asyncio.Future[AuditRecord]


class _Closing:
    """Queue sentinel: the writer stops after the groups queued before it."""


class GroupCommit:
    def __init__(
        self,
        write: Callable[[list[AuditEvent]], Awaitable[list[AuditRecord]]],
        *,
        max_batch: int,
        max_pending: int,
        committed: Callable[[list[AuditRecord]], Awaitable[None]],
        failed: Callable[[BaseException, int], None],
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._committed = committed
        self._failed = failed
        self._queue: asyncio.Queue[_Pending | _Closing] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        """Commit every append queued so far, then end the writer task."""
        await self._queue.put(_Closing())
        if self._task is not None:
            await self._task
            self._task = None

    async def append(self, event: AuditEvent) -> AuditRecord:
        """``event``'s record, once its group has committed.

        Raises:
            AuditWriteError: too many appends are waiting, or the group failed.
        """
        future: asyncio.Future[AuditRecord] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(event, future))
        except asyncio.QueueFull:
            raise AuditWriteError("audit log is overloaded") from None
        return await future

    async def _run(self) -> None:
        closing = False
        while not closing:
            item = await self._queue.get()
            batch: list[_Pending] = []
            while True:
                if isinstance(item, _Closing):
                    closing = True
                    break
                batch.append(item)
                if len(batch) >= self._max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._group(batch)

    async def _group(self, batch: list[_Pending]) -> None:
        try:
            records = await self._write([p.event for p in batch])
        except asyncio.CancelledError as exc:
            self._failed(exc, len(batch))
            _fail(batch, "audit writer was cancelled")
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the adapter and to every waiter
            # Any failure, expected or not, must reach the waiters: a writer
            # that died silently would hang every request.
            self._failed(exc, len(batch))
            _fail(batch, f"audit record could not be made durable ({type(exc).__name__})")
            return
        await self._committed(records)
        for pending, record in zip(batch, records, strict=True):
            if not pending.future.done():
                pending.future.set_result(record)


def _fail(batch: list[_Pending], message: str) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(AuditWriteError(message))
