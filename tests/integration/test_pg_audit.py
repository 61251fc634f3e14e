"""The audit log on a real PostgreSQL shared by several replicas: one chain, one tree.

A "replica" is a ``PostgresDB`` pool of its own on the same database, with its own
``PostgresAuditLog`` and its own ``AuditTree`` following the log, the way another broker
process would run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
import rfc8785

from broker.adapters.audit_tree import AuditTree
from broker.adapters.pg_audit import PostgresAuditLog
from broker.adapters.pg_audit_schema import RECORDS_COMPONENT
from broker.adapters.pg_audit_store import PostgresTransparencyStore
from broker.adapters.pg_db import PostgresDB
from broker.audit.audit_key import AuditKey, trusted_keys
from broker.audit.chain import AuditChainBroken, verify_chain
from broker.audit.checkpoint import sign_checkpoint, verify_checkpoint
from broker.audit.merkle import record_leaf_hash, root_from_leaves, verify_consistency
from broker.audit.receipt import verify_receipt, verify_receipt_inclusion
from broker.audit.record import GENESIS_HASH, AuditEvent, AuditRecord
from broker.errors import AuditWriteError, BackendError
from broker.service.audit_log import AuditLogService
from tests.fakes import FakeClock
from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401
from tests.postgres import PostgresServer
from tests.unit.audit._factory import make_event

T0 = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
ORIGIN = "broker.test/audit"


def event(i: int, *, replica: str = "r0") -> AuditEvent:
    return make_event(
        i, time=T0 + timedelta(seconds=i), request_id=f"{replica}-{i}", claims={"i": i}
    )


class FailNext:
    """Fault injection: make the next ``n`` group writes fail."""

    def __init__(self) -> None:
        self.pending = 0

    def __call__(self) -> bool:
        if self.pending:
            self.pending -= 1
            return True
        return False


@dataclass
class Replica:
    db: PostgresDB
    log: PostgresAuditLog
    tree: AuditTree
    fail: FailNext


@dataclass
class Cluster:
    dsn: str
    opened: list[Replica] = field(default_factory=list)

    async def replica(self, **kwargs: int) -> Replica:
        db = PostgresDB(self.dsn, connect_timeout=2.0, command_timeout=5.0, acquire_timeout=5.0)
        await db.open()
        tree, fail = AuditTree(), FailNext()
        log = PostgresAuditLog(
            db, on_commit=tree.append_records, catch_up=tree.sync, fail_writes=fail, **kwargs
        )
        tree.follow(log)
        await log.start()
        await tree.sync()
        rep = Replica(db, log, tree, fail)
        self.opened.append(rep)
        return rep

    async def close(self, rep: Replica) -> None:
        await rep.log.close()
        await rep.db.close()
        self.opened.remove(rep)


@pytest.fixture
async def cluster(pg_dsn: str) -> AsyncIterator[Cluster]:  # noqa: F811
    c = Cluster(pg_dsn)
    yield c
    for rep in list(c.opened):
        await c.close(rep)


async def all_records(log: PostgresAuditLog) -> list[AuditRecord]:
    return [r async for r in log.iter_records()]


def check_tree(tree: AuditTree, records: list[AuditRecord]) -> None:
    leaves = [record_leaf_hash(r) for r in records]
    assert tree.size == len(records)
    assert tree.root() == root_from_leaves(leaves)


async def gather_appends(log: PostgresAuditLog, events: list[AuditEvent]) -> list[AuditRecord]:
    return list(await asyncio.gather(*(log.append(e) for e in events)))


# -- one chain across replicas --------------------------------------------------------------------


async def test_three_replicas_append_one_gapless_chain(cluster: Cluster) -> None:
    """Concurrent appends from 3 replicas form one chain that verifies; every synced tree agrees."""
    reps = [await cluster.replica() for _ in range(3)]
    rounds, per_round = 10, 15
    per_replica = rounds * per_round

    async def drive(n: int, rep: Replica) -> list[AuditRecord]:
        out: list[AuditRecord] = []
        for k in range(rounds):
            batch = [event(k * per_round + i, replica=f"r{n}") for i in range(per_round)]
            out += await gather_appends(rep.log, batch)
        return out

    results = await asyncio.gather(*(drive(n, rep) for n, rep in enumerate(reps)))
    records = await all_records(reps[0].log)
    assert [r.seq for r in records] == list(range(3 * per_replica))
    report = verify_chain([r.to_dict() for r in records], require_genesis=True)
    assert report.count == 3 * per_replica and report.head_hash == records[-1].hash
    assert (await reps[1].log.verify()).head_hash == records[-1].hash
    by_seq = {r.seq: r for r in records}
    for rep, mine in zip(reps, results, strict=True):
        # Without a sync, each tree already holds every record up to its own last one,
        # so a receipt can be issued for each of them.
        for record in mine:
            assert by_seq[record.seq] == record
            assert rep.tree.leaf_hash(record.seq) == record_leaf_hash(record)
        await rep.tree.sync()
        check_tree(rep.tree, records)
    # The replicas really interleaved: the writer changes many times along the chain.
    writers = [r.request_id.split("-")[0] for r in records]
    assert sum(1 for x, y in itertools.pairwise(writers) if x != y) >= 10
    assert all(rep.log.transactions >= rounds for rep in reps)
    head = await reps[2].log.head()
    assert head is not None and head.seq == 3 * per_replica - 1


async def test_group_commit_groups_appends(cluster: Cluster) -> None:
    """Appends queued together share a transaction: far fewer COMMITs than records."""
    rep = await cluster.replica()
    records = await gather_appends(rep.log, [event(i) for i in range(400)])
    assert [r.seq for r in records] == list(range(400))
    assert 1 <= rep.log.transactions < 50
    assert (await rep.log.verify()).count == 400


async def test_max_batch_bounds_a_group(cluster: Cluster) -> None:
    """A group never holds more than ``max_batch`` records."""
    rep = await cluster.replica(max_batch=10)
    await gather_appends(rep.log, [event(i) for i in range(100)])
    assert rep.log.transactions >= 10


async def test_failed_group_fails_every_waiter_and_leaves_no_gap(cluster: Cluster) -> None:
    """A group that fails before COMMIT fails all its waiters; the chain then continues at the same seq."""
    a, b = await cluster.replica(), await cluster.replica()
    await gather_appends(a.log, [event(i) for i in range(5)])
    a.fail.pending = 1
    outcome = await asyncio.gather(
        *(a.log.append(event(100 + i)) for i in range(20)), return_exceptions=True
    )
    assert all(isinstance(o, AuditWriteError) for o in outcome)
    assert a.log.transactions == 1
    other = await b.log.append(event(200, replica="b"))
    assert other.seq == 5
    after = await gather_appends(a.log, [event(300 + i) for i in range(3)])
    assert [r.seq for r in after] == [6, 7, 8]
    records = await all_records(a.log)
    assert [r.seq for r in records] == list(range(9))
    verify_chain([r.to_dict() for r in records], require_genesis=True)
    for rep in (a, b):
        await rep.tree.sync()
        check_tree(rep.tree, records)


async def test_stopped_postgres_fails_appends_then_resumes(
    cluster: Cluster,
    postgres: PostgresServer,  # noqa: F811
) -> None:
    """With PostgreSQL down appends and probes fail; after a restart the same objects go on, gapless."""
    rep = await cluster.replica()
    await gather_appends(rep.log, [event(i) for i in range(4)])
    postgres.stop()
    with pytest.raises(AuditWriteError):
        await rep.log.append(event(10))
    with pytest.raises(BackendError):
        await rep.log.check_writable()
    with pytest.raises(AuditWriteError):
        await rep.tree.sync()
    postgres.start()
    resumed = await gather_appends(rep.log, [event(20 + i) for i in range(3)])
    assert [r.seq for r in resumed] == [4, 5, 6]
    await rep.log.check_writable()
    records = await all_records(rep.log)
    verify_chain([r.to_dict() for r in records], require_genesis=True)
    check_tree(rep.tree, records)


async def test_replica_restart_continues_the_chain(cluster: Cluster) -> None:
    """A replica closed and started again (new pool, new tree) continues where the log is."""
    a, b = await cluster.replica(), await cluster.replica()
    await gather_appends(a.log, [event(i) for i in range(7)])
    await cluster.close(a)
    await b.log.append(event(50, replica="b"))
    again = await cluster.replica()
    assert again.tree.size == 8
    record = await again.log.append(event(60))
    assert record.seq == 8
    records = await all_records(again.log)
    assert record.prev_hash == records[7].hash
    check_tree(again.tree, records)


# -- storage rules ------------------------------------------------------------------------------


async def test_records_are_append_only_and_must_link(cluster: Cluster) -> None:
    """UPDATE, DELETE, TRUNCATE and an unlinked INSERT are refused by the database itself."""
    rep = await cluster.replica()
    await gather_appends(rep.log, [event(i) for i in range(3)])
    conn = await asyncpg.connect(cluster.dsn)
    try:
        for sql in (
            "UPDATE audit_record SET body = '{}' WHERE seq = 1",
            "DELETE FROM audit_record WHERE seq = 2",
            "TRUNCATE audit_record",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await conn.execute(sql)
        with pytest.raises(asyncpg.PostgresError, match="does not link"):
            await conn.execute(
                "INSERT INTO audit_record (seq, time, prev_hash, hash, body)"
                " VALUES (3, now(), $1, $2, '{}')",
                GENESIS_HASH,
                "f" * 64,
            )
        assert await conn.fetchval("SELECT repeat('0', 64)") == GENESIS_HASH
    finally:
        await conn.close()
    assert (await rep.log.verify()).count == 3


async def test_corrupt_row_is_reported_by_verify_and_sync(cluster: Cluster) -> None:
    """A row edited behind the triggers' back is named by verify and stops a tree rebuild."""
    rep = await cluster.replica(page_size=2)
    records = await gather_appends(rep.log, [event(i) for i in range(5)])
    forged = records[3].to_dict() | {"detail": "rewritten"}
    conn = await asyncpg.connect(cluster.dsn)
    try:
        await conn.execute("ALTER TABLE audit_record DISABLE TRIGGER audit_record_no_change")
        await conn.execute(
            "UPDATE audit_record SET body = $1 WHERE seq = 3", rfc8785.dumps(forged).decode()
        )
    finally:
        await conn.close()
    with pytest.raises(AuditChainBroken) as broken:
        await rep.log.verify()
    assert broken.value.index == 3
    fresh = AuditTree()
    fresh.follow(rep.log)
    with pytest.raises(AuditWriteError, match="record 3"):
        await fresh.sync()


async def test_newer_schema_is_refused(cluster: Cluster) -> None:
    """A database whose audit schema is newer than this code does not open."""
    rep = await cluster.replica()
    conn = await asyncpg.connect(cluster.dsn)
    try:
        await conn.execute(
            "UPDATE schema_versions SET version = 99 WHERE component = $1", RECORDS_COMPONENT
        )
    finally:
        await conn.close()
    log = PostgresAuditLog(rep.db)
    with pytest.raises(AuditWriteError, match="version 99") as info:
        await log.start()
    assert info.value.retryable is False


async def test_iter_records_windows_and_pages(cluster: Cluster) -> None:
    """Time windows are contiguous and paging returns every record exactly once."""
    rep = await cluster.replica(page_size=3)
    await gather_appends(rep.log, [event(i) for i in range(10)])
    window = [
        r.seq
        async for r in rep.log.iter_records(T0 + timedelta(seconds=2), T0 + timedelta(seconds=6))
    ]
    assert window == [2, 3, 4, 5, 6]
    assert [r.seq async for r in rep.log.iter_records(T0 + timedelta(days=1), None)] == []
    assert len(await all_records(rep.log)) == 10


async def test_closed_log_refuses(cluster: Cluster) -> None:
    """A closed log refuses appends and reads with a non-retryable AuditWriteError."""
    rep = await cluster.replica()
    await cluster.close(rep)
    with pytest.raises(AuditWriteError) as info:
        await rep.log.append(event(0))
    assert info.value.retryable is False


# -- transparency store and service across replicas -------------------------------------------------


async def test_transparency_store_is_shared(cluster: Cluster) -> None:
    """Keys and checkpoints written by one replica are read by another; the largest tree is newest."""
    a, b = await cluster.replica(), await cluster.replica()
    sa, sb = PostgresTransparencyStore(a.db), PostgresTransparencyStore(b.db)
    await sa.create()
    await sb.create()
    ka, kb = AuditKey.generate(ORIGIN), AuditKey.generate(ORIGIN)
    await sa.add_verifier_key(ka.key_id, ka.verifier_key(), T0)
    await sb.add_verifier_key(kb.key_id, kb.verifier_key(), T0 + timedelta(seconds=1))
    await sb.add_verifier_key(ka.key_id, "ignored", T0 + timedelta(seconds=2))
    keys = await sb.verifier_keys()
    assert [(k, v) for k, v, _ in keys] == [
        (ka.key_id, ka.verifier_key()),
        (kb.key_id, kb.verifier_key()),
    ]
    assert keys[0][2] == T0
    root = b"\x11" * 32
    big = sign_checkpoint(kb, 20, root, T0, ORIGIN)
    small = sign_checkpoint(ka, 10, root, T0 + timedelta(seconds=5), ORIGIN)
    await sb.add_checkpoint(big)
    await sa.add_checkpoint(small)
    assert await sa.checkpoint() == (20, big.note)
    assert await sb.checkpoint(10) == (10, small.note)
    assert await sa.checkpoint(11) is None
    conn = await asyncpg.connect(cluster.dsn)
    try:
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("DELETE FROM audit_checkpoint")
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("UPDATE audit_verifier_key SET verifier_key = 'x'")
    finally:
        await conn.close()


async def _service(rep: Replica, data: Path) -> AuditLogService:
    await asyncio.to_thread(data.mkdir)
    svc = AuditLogService(
        rep.tree,
        PostgresTransparencyStore(rep.db),
        AuditKey.generate(ORIGIN),
        FakeClock(T0),
        audit=rep.log,
        data_dir=data,
        origin=ORIGIN,
        interval=60.0,
    )
    await svc.start()
    return svc


async def test_service_checkpoints_cover_every_replica(cluster: Cluster, tmp_path: Path) -> None:
    """A checkpoint signed on one replica covers the others' records; receipts from another verify against it."""
    a, b = await cluster.replica(), await cluster.replica()
    svc_a, svc_b = await _service(a, tmp_path / "a"), await _service(b, tmp_path / "b")
    mine = await gather_appends(a.log, [event(i) for i in range(12)])
    receipt = await svc_a.receipt(mine[5])
    assert b.tree.size == 0
    old = await svc_b.sign_checkpoint()
    assert old.size == 12
    await gather_appends(b.log, [event(100 + i, replica="b") for i in range(4)])
    new = await svc_a.sign_checkpoint()
    assert new.size == 16
    trusted = trusted_keys(k.verifier_key for k in await svc_a.verifier_keys())
    assert len(trusted) == 2
    verify_receipt(receipt, trusted)
    verify_checkpoint(old.note, trusted, origin=ORIGIN)
    proof = svc_b.inclusion_proof(receipt.seq, new.size)
    verify_receipt_inclusion(receipt, proof.hashes, new)
    consistency = svc_a.consistency_proof(old.size, new.size)
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, consistency.hashes)
    # Each replica serves its own newest checkpoint; the others' are found by size.
    assert (await svc_b.checkpoint(16)).note == new.note
    assert await svc_b.sync() == 16


async def test_receipt_catches_up_when_the_writer_could_not(
    cluster: Cluster, tmp_path: Path
) -> None:
    """If catching up fails after COMMIT, the receipt catches up itself."""
    a, b = await cluster.replica(), await cluster.replica()
    svc = await _service(b, tmp_path / "b")
    await a.log.append(event(0))

    async def broken(_: int) -> None:
        raise AuditWriteError("injected catch-up failure")

    b.log.catch_up = broken
    record = await b.log.append(event(1, replica="b"))
    assert record.seq == 1 and b.tree.size == 0
    # The receipt reads what the writer could not, before the release goes unanswered.
    assert (await svc.receipt(record)).seq == 1
    assert b.tree.size == 2


async def test_receipt_refused_while_the_tree_cannot_read_the_log(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is durable, but no receipt is signed for a leaf the tree cannot read."""
    a, b = await cluster.replica(), await cluster.replica()
    svc = await _service(b, tmp_path / "b")
    await a.log.append(event(0))

    async def broken(*_: object, **__: object) -> int:
        raise AuditWriteError("injected read failure")

    b.log.catch_up = broken
    monkeypatch.setattr(b.tree, "sync", broken)
    record = await b.log.append(event(1, replica="b"))
    with pytest.raises(AuditWriteError, match="injected read failure"):
        await svc.receipt(record)
    monkeypatch.undo()
    assert await svc.sync() == 2
    assert (await svc.receipt(record)).seq == 1


async def test_sync_racing_appends_keeps_one_tree(cluster: Cluster) -> None:
    """Syncs running while the replica's own and others' groups commit leave a tree equal to the log."""
    a, b = await cluster.replica(max_batch=5), await cluster.replica(max_batch=5)
    jobs = [a.log.append(event(i)) for i in range(40)]
    jobs += [b.log.append(event(100 + i, replica="b")) for i in range(40)]
    syncs = [a.tree.sync() for _ in range(10)]
    await asyncio.gather(*jobs, *syncs)
    await a.tree.sync()
    check_tree(a.tree, await all_records(a.log))
    a.tree.check()


async def test_followed_tree_breaks_on_a_different_leaf(cluster: Cluster) -> None:
    """A committed record that differs from the leaf the tree holds at its seq (a fork) breaks the tree."""
    rep = await cluster.replica()
    records = await gather_appends(rep.log, [event(i) for i in range(3)])
    other = PostgresAuditLog(rep.db)
    tree = AuditTree()
    tree.follow(other)
    tree.append_records(records)
    forged = AuditRecord.from_dict(records[1].to_dict(with_hash=False) | {"detail": "fork"})
    tree.append_records([forged])
    with pytest.raises(AuditWriteError, match="record 1 differs"):
        tree.check()
