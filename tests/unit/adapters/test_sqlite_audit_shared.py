"""SQLiteAuditLog(shared=True): several writers (the workers of one host) on one file.

Each "worker" here is one more log instance with its own tree, on its own writer
thread and connection, as another process would have.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from broker.adapters.audit_tree import AuditTree
from broker.adapters.sqlite_audit import SQLiteAuditLog
from broker.audit.chain import verify_chain
from broker.audit.merkle import record_leaf_hash
from broker.audit.record import AuditEvent
from tests.unit.audit._factory import make_event


def event(worker: int, i: int) -> AuditEvent:
    return make_event(i, request_id=f"w{worker}-{i}", claims={"worker": worker, "i": i})


@asynccontextmanager
async def worker(path: Path) -> AsyncIterator[tuple[SQLiteAuditLog, AuditTree]]:
    tree = AuditTree()
    log = SQLiteAuditLog(path, on_commit=tree.append_records, shared=True, catch_up=tree.sync)
    await log.start()
    await tree.load(path)
    tree.follow(log)
    await tree.sync()
    try:
        yield log, tree
    finally:
        await log.close()


async def _records(log: SQLiteAuditLog) -> list[dict[str, object]]:
    return [r.to_dict() async for r in log.iter_records()]


async def test_two_writers_make_one_chain_and_one_tree(tmp_path: Path) -> None:
    """Concurrent groups of two writers interleave into one valid chain both trees hold."""
    path = tmp_path / "audit.db"
    async with worker(path) as (a, tree_a), worker(path) as (b, tree_b):
        got = await asyncio.gather(
            *(a.append(event(0, i)) for i in range(60)),
            *(b.append(event(1, i)) for i in range(60)),
        )
        assert sorted(r.seq for r in got) == list(range(120))
        stored = await _records(a)
        assert verify_chain(stored, require_genesis=True).count == 120
        # Each tree holds the other writer's records too, leaf for leaf.
        await tree_a.sync()
        await tree_b.sync()
        assert tree_a.size == tree_b.size == 120
        assert tree_a.root() == tree_b.root()
        for record in got:
            assert tree_a.leaf_hash(record.seq) == record_leaf_hash(record)
            assert tree_b.leaf_hash(record.seq) == record_leaf_hash(record)


async def test_a_committed_record_is_in_its_writers_tree_at_once(tmp_path: Path) -> None:
    """After append returns, the writer's tree holds the record (a receipt can name it)."""
    path = tmp_path / "audit.db"
    async with worker(path) as (a, tree_a), worker(path) as (b, _tree_b):
        await b.append(event(1, 0))
        await b.append(event(1, 1))
        record = await a.append(event(0, 0))
        assert record.seq == 2
        assert tree_a.size == 3
        assert tree_a.leaf_hash(2) == record_leaf_hash(record)


async def test_a_new_writer_catches_up_with_the_log(tmp_path: Path) -> None:
    """A writer started late rebuilds its tree and continues the chain where it stands."""
    path = tmp_path / "audit.db"
    async with worker(path) as (a, _):
        for i in range(5):
            await a.append(event(0, i))
        async with worker(path) as (b, tree_b):
            assert tree_b.size == 5
            record = await b.append(event(1, 0))
            assert record.seq == 5
            head = await a.head()
            assert head is not None and head.hash == record.hash


def _append_in_process(path: str, worker_id: int, count: int) -> None:
    async def run() -> None:
        async with worker(Path(path)) as (log, _):
            await asyncio.gather(*(log.append(event(worker_id, i)) for i in range(count)))

    asyncio.run(run())


async def test_two_processes_append_to_one_chain(tmp_path: Path) -> None:
    """Two real processes appending at once leave one gapless chain with all their records."""
    path = tmp_path / "audit.db"
    async with worker(path):
        pass  # creates the schema once, as the supervisor does
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_append_in_process, args=(str(path), w, 150)) for w in (0, 1)]
    for proc in procs:
        proc.start()
    for proc in procs:
        await asyncio.to_thread(proc.join, 120)
        assert proc.exitcode == 0
    async with worker(path) as (log, tree):
        stored = await _records(log)
        assert verify_chain(stored, require_genesis=True).count == 300
        assert sorted(str(r["request_id"]) for r in stored) == sorted(
            f"w{w}-{i}" for w in (0, 1) for i in range(150)
        )
        assert tree.size == 300
