"""Reading a stopped broker's audit log offline, and tallying what clients were given."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from broker.adapters.sqlite_audit import SQLiteAuditLog
from broker.audit.record import AuditRecord
from broker.client import BrokerClient, RemoteError, SampleProvider
from broker.errors import BackendError

RELEASED = "resource.released"


@dataclass
class Tally:
    """Outcomes of release attempts: receipts of the 200s, (status, code) of the rest."""

    receipts: list[int] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    unreachable: int = 0
    outcomes: list[str] = field(default_factory=list)

    def note_release(self, seq: int | None) -> None:
        assert seq is not None, "a release came without an audit receipt"
        self.receipts.append(seq)
        self.outcomes.append("200")

    def note_error(self, exc: RemoteError) -> None:
        self.failures.append((exc.status, exc.code))
        self.outcomes.append(f"{exc.status}:{exc.code}")

    def statuses(self) -> Counter[int]:
        return Counter(status for status, _ in self.failures)


async def release_once(client: BrokerClient, resource: str, tally: Tally) -> None:
    """auth + attest + fetch; the outcome goes into ``tally``."""
    try:
        released = await client.get_resource(resource, SampleProvider())
    except RemoteError as exc:
        tally.note_error(exc)
        return
    except BackendError:
        tally.unreachable += 1
        tally.outcomes.append("unreachable")
        return
    tally.note_release(None if released.receipt is None else released.receipt.seq)


async def release_many(url: str, resource: str, count: int, tally: Tally) -> None:
    async with BrokerClient(url, timeout=10) as client:
        for _ in range(count):
            await release_once(client, resource, tally)


def read_log(path: Path) -> tuple[list[AuditRecord], int]:
    """Every stored record and the verified chain length (the broker must be stopped)."""

    async def read() -> tuple[list[AuditRecord], int]:
        log = SQLiteAuditLog(path)
        await log.start()
        try:
            report = await log.verify()
            return [r async for r in log.iter_records(None, None)], report.count
        finally:
            await log.close()

    return asyncio.run(read())


def assert_every_release_recorded(
    records: list[AuditRecord], receipts: list[int], *, exact: bool = True
) -> None:
    """Each receipted release is a durable resource.released record, and the log has no gap.

    ``exact``: no release record without a client that got it (false after a kill,
    where a committed release may never have reached its client).
    """
    by_seq = {r.seq: r for r in records}
    assert [r.seq for r in records] == list(range(len(records))), "the log has a gap"
    for seq in receipts:
        assert seq in by_seq and by_seq[seq].event == RELEASED, f"release {seq} not recorded"
    if not exact:
        return
    released = sorted(r.seq for r in records if r.event == RELEASED)
    assert released == sorted(receipts), "a release record has no client behind it, or vice versa"
