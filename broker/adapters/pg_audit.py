"""One hash-chained audit log in PostgreSQL, shared by every replica, with group commit.

Usage::

    tree = AuditTree()
    log = PostgresAuditLog(db, on_commit=tree.append_records, catch_up=tree.sync)
    tree.follow(log)
    await log.start()
    await tree.sync()                         # every record stored so far
    record = await log.append(event)          # returns after COMMIT
    async for r in log.iter_records(since, until):
        ...
    await log.close()                         # the PostgresDB stays open (its owner closes it)

Total order across replicas: each replica runs one writer task that takes everything
queued (up to ``max_batch``) and writes it as one transaction. The transaction first
locks the single row of ``audit_head`` (``SELECT ... FOR UPDATE``), so the groups of all
replicas are serialized, each one chained onto whatever head is committed when it gets
the lock: another replica's records in between are simply part of the chain. The lock is
held for one INSERT and one UPDATE, never across a wait for more events.

Failure semantics: ``append`` returns a record only after its group's COMMIT. A failed
group (server gone, statement timeout, ``fail_writes``) rolls back and fails every waiter
in it with ``AuditWriteError``; nothing of it is stored, and the next group re-reads the
head inside its own transaction, so there is no gap and no fork. The table refuses, by
trigger, any row that does not link to its predecessor, and any UPDATE, DELETE or
TRUNCATE. A COMMIT whose answer is lost is the one ambiguous case: its waiters fail,
yet the records may be stored; they are then in the chain like any other replica's.

The in-memory tree must see every replica's records in order. After each COMMIT the
writer awaits ``catch_up(first seq of the group)`` (the tree reads what other replicas
appended before it) and then calls ``on_commit`` with this replica's records, before any
waiter wakes, so a receipt never names a record the tree lacks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from broker.adapters.audit_tree import canonical_from_body
from broker.adapters.group_commit import GroupCommit, after_commit
from broker.adapters.pg_audit_schema import (
    RECORDS_COMPONENT,
    RECORDS_SCHEMA,
    RECORDS_VERSION,
    migrate_component,
)
from broker.adapters.pg_db import DB_ERRORS, Connection, PostgresDB, describe
from broker.audit.chain import AuditChainBroken, ChainReport, verify_chain
from broker.audit.merkle import leaf_hash
from broker.audit.record import (
    GENESIS_HASH,
    AuditEvent,
    AuditRecord,
    AuditRecordInvalid,
    chain_next,
)
from broker.errors import AuditWriteError, BackendError

__all__ = ["PostgresAuditLog"]

_log = structlog.get_logger(__name__)

_INSERT: Final = (
    "WITH rows AS ("
    " INSERT INTO audit_record (seq, time, prev_hash, hash, body)"
    " SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[])"
    " ORDER BY 1 RETURNING seq)"
    " UPDATE audit_head SET seq = $6, hash = $7 WHERE one"
)


def _body(record: AuditRecord) -> str:
    return record.body_bytes().decode("utf-8")


def _parse(seq: int, body: str) -> AuditRecord:
    try:
        return AuditRecord.from_dict(json.loads(body))
    except (ValueError, AuditRecordInvalid) as exc:
        raise AuditChainBroken(seq, f"stored record is corrupt: {exc}") from None


@asynccontextmanager
async def _audit_errors(what: str) -> AsyncIterator[None]:
    try:
        yield
    except AuditWriteError:
        raise
    except BackendError as exc:
        raise AuditWriteError(exc.message, retryable=exc.retryable) from None
    except DB_ERRORS as exc:
        raise AuditWriteError(f"{what} failed: {describe(exc)}") from None


class PostgresAuditLog:
    """Audit sink on a PostgreSQL database; one instance per replica, any number of replicas.

    ``fail_writes`` is a fault-injection seam for tests: called once per group after the
    INSERT and before COMMIT; returning True makes that group's transaction roll back.
    ``transactions`` counts this replica's committed groups. ``on_commit`` and
    ``catch_up`` are described in the module docstring; a failing ``catch_up`` is
    logged and leaves the tree behind (its receipts then fail until a ``sync``).
    """

    def __init__(
        self,
        db: PostgresDB,
        *,
        on_commit: Callable[[list[AuditRecord]], None] | None = None,
        catch_up: Callable[[int], Awaitable[object]] | None = None,
        fail_writes: Callable[[], bool] | None = None,
        max_batch: int = 512,
        max_pending: int = 10_000,
        page_size: int = 500,
        leaf_page_size: int = 5_000,
    ) -> None:
        self.db = db
        self.transactions = 0
        self.on_commit = on_commit
        self.catch_up = catch_up
        self._fail_writes = fail_writes
        self._page_size = page_size
        self._leaf_page_size = leaf_page_size
        self._groups = GroupCommit(
            self._write_group,
            max_batch=max_batch,
            max_pending=max_pending,
            committed=self._committed,
            failed=self._failed,
        )
        # The newest record this replica knows; a hint only, checked against the head row.
        self._head: AuditRecord | None = None
        self._open = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Create (or check) the schema and start the writer task; ``db`` must be open.

        Raises:
            AuditWriteError: the database is unreachable, its audit schema is newer than
                this broker, or the head record is corrupt.
        """
        if self._open:
            return
        try:
            async with _audit_errors("opening the audit log"):
                await migrate_component(self.db, RECORDS_COMPONENT, RECORDS_VERSION, RECORDS_SCHEMA)
            self._head = await self._read_head()
        except AuditChainBroken as exc:
            raise AuditWriteError(f"cannot open the audit log: {exc}", retryable=False) from exc
        self._open = True
        self._groups.start()

    async def close(self) -> None:
        """Finish every append queued so far, then stop the writer (the pool stays open)."""
        if not self._open:
            return
        self._open = False
        await self._groups.stop()

    # -- public API -----------------------------------------------------------------------------

    async def append(self, event: AuditEvent) -> AuditRecord:
        """Append ``event``; return its record once the transaction has committed.

        Raises:
            AuditWriteError: the log is closed or overloaded, or the group this event was
                written in failed (nothing of that group is stored).
        """
        if not self._open:
            raise AuditWriteError("audit log is not open", retryable=False)
        return await self._groups.append(event)

    async def head(self) -> AuditRecord | None:
        """The last record committed by any replica, or None for an empty log.

        Raises:
            AuditWriteError: the log is closed or the head cannot be read.
            AuditChainBroken: the head record is corrupt.
        """
        if not self._open:
            raise AuditWriteError("audit log is not open", retryable=False)
        return await self._read_head()

    async def _read_head(self) -> AuditRecord | None:
        async with _audit_errors("reading the audit head"), self.db.connection("audit") as conn:
            row = await conn.fetchrow(
                "SELECT r.seq, r.body FROM audit_head h JOIN audit_record r ON r.seq = h.seq"
            )
        return None if row is None else _parse(row["seq"], row["body"])

    async def check_writable(self) -> None:
        """Readiness probe: the writer task runs and the database accepts writes.

        Raises:
            AuditWriteError: it does not.
        """
        if not self._open or not self._groups.running:
            raise AuditWriteError("audit log is not open")
        async with _audit_errors("checking the audit log"):
            await self.db.check_writable()

    async def iter_records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[AuditRecord]:
        """Committed records in seq order, fetched ``page_size`` at a time.

        The same contiguous window as ``SQLiteAuditLog.iter_records``: from the first
        record with time >= ``since`` to the last with time <= ``until``; records
        committed after the call are not included.

        Raises:
            AuditWriteError: the log is closed or cannot be read.
            AuditChainBroken: a stored record is corrupt (``index`` is its seq).
        """
        if not self._open:
            raise AuditWriteError("audit log is not open", retryable=False)
        first, last = await self._window(since, until)
        after = first - 1
        while after < last:
            rows = await self._rows("seq, body", after, last, self._page_size)
            if not rows:
                return
            for seq, body in rows:
                yield _parse(seq, body)
            after = rows[-1][0]

    async def leaf_pages(self, start: int) -> AsyncIterator[tuple[int, list[bytes]]]:
        """Leaf hashes of the records from seq ``start`` to the current head, in pages
        (the ``LeafSource`` that ``AuditTree.sync`` reads).

        Raises:
            AuditWriteError: the log cannot be read, or a stored record does not hash to
                its stored hash (not retryable).
        """
        after = start - 1
        while True:
            rows = await self._rows("seq, hash, body", after, None, self._leaf_page_size)
            leaves: list[bytes] = []
            for seq, stored_hash, body in rows:
                if seq != after + 1 + len(leaves):
                    raise AuditWriteError(f"audit records skip to seq {seq}", retryable=False)
                try:
                    leaves.append(leaf_hash(canonical_from_body(body.encode(), stored_hash)))
                except (ValueError, UnicodeError) as exc:
                    raise AuditWriteError(f"record {seq}: {exc}", retryable=False) from None
            if leaves:
                yield after + 1, leaves
            if len(rows) < self._leaf_page_size:
                return
            after += len(leaves)

    async def verify(self) -> ChainReport:
        """Verify the whole stored chain from seq 0, page by page (O(records) time,
        O(page) memory).

        Raises:
            AuditChainBroken: at the first bad record (``index`` is its position).
            AuditWriteError: the log is closed or cannot be read.
        """
        if not self._open:
            raise AuditWriteError("audit log is not open", retryable=False)
        # Each page is verified with the previous page's last record in front of it, so
        # the seq and link checks run across page borders too.
        carried: list[Any] = []
        count, after, head_hash = 0, -1, GENESIS_HASH
        while rows := await self._rows("seq, body", after, None, self._page_size):
            base = count - len(carried)
            try:
                page = verify_chain([*carried, *_decoded(rows)], require_genesis=count == 0)
            except AuditChainBroken as exc:
                raise AuditChainBroken(base + exc.index, exc.reason) from None
            count, after, head_hash = base + page.count, rows[-1][0], page.head_hash
            carried = _decoded(rows[-1:])
        if count == 0:
            raise AuditChainBroken(0, "the chain holds no records")
        return ChainReport(count, head_hash, 0, count - 1, GENESIS_HASH)

    # -- reads ----------------------------------------------------------------------------------

    async def _window(self, since: datetime | None, until: datetime | None) -> tuple[int, int]:
        async with _audit_errors("reading the audit log"), self.db.connection("audit") as conn:
            first = 0
            if since is not None:
                low = await conn.fetchval(
                    "SELECT min(seq) FROM audit_record WHERE time >= $1", since.astimezone(UTC)
                )
                if low is None:
                    return 0, -1  # nothing at or after `since`
                first = int(low)
            if until is None:
                high = await conn.fetchval("SELECT seq FROM audit_head")
            else:
                high = await conn.fetchval(
                    "SELECT max(seq) FROM audit_record WHERE time <= $1", until.astimezone(UTC)
                )
        return first, -1 if high is None else int(high)

    async def _rows(
        self, columns: str, after: int, last: int | None, limit: int
    ) -> list[tuple[Any, ...]]:
        async with _audit_errors("reading the audit log"), self.db.connection("audit") as conn:
            rows = await conn.fetch(
                f"SELECT {columns} FROM audit_record"  # noqa: S608 - fixed column lists
                " WHERE seq > $1 AND ($2::bigint IS NULL OR seq <= $2) ORDER BY seq LIMIT $3",
                after,
                last,
                limit,
            )
        return [tuple(r) for r in rows]

    # -- writer task ----------------------------------------------------------------------------

    async def _committed(self, records: list[AuditRecord]) -> None:
        self._head = records[-1]
        self.transactions += 1
        await after_commit(records, catch_up=self.catch_up, on_commit=self.on_commit)

    @staticmethod
    def _failed(exc: BaseException, size: int) -> None:
        # The next group re-reads the head under the lock: nothing to reset here.
        if not isinstance(exc, asyncio.CancelledError):
            _log.warning("audit.write_failed", group=size, error=str(exc))

    async def _write_group(self, events: list[AuditEvent]) -> list[AuditRecord]:
        async with (
            _audit_errors("appending audit records"),
            self.db.transaction("audit append") as conn,
        ):
            prev = await self._locked_head(conn)
            records: list[AuditRecord] = []
            for event in events:
                prev = chain_next(prev, event)
                records.append(prev)
            await conn.execute(
                _INSERT,
                [r.seq for r in records],
                [r.time for r in records],
                [r.prev_hash for r in records],
                [r.hash for r in records],
                [_body(r) for r in records],
                records[-1].seq,
                records[-1].hash,
            )
            if self._fail_writes is not None and self._fail_writes():
                raise AuditWriteError("injected audit write failure")
        return records

    async def _locked_head(self, conn: Connection) -> AuditRecord | None:
        """The committed head, with the row lock that orders every replica's groups."""
        row = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE one FOR UPDATE")
        if row is None:
            raise AuditWriteError("the audit head row is missing", retryable=False)
        seq, head_hash = int(row["seq"]), str(row["hash"])
        if seq < 0:
            return None
        known = self._head
        if known is not None and known.seq == seq and known.hash == head_hash:
            return known  # no other replica appended since our last group
        body = await conn.fetchval("SELECT body FROM audit_record WHERE seq = $1", seq)
        if body is None:
            raise AuditWriteError(f"the audit head names a missing record {seq}", retryable=False)
        head = _parse(seq, body)
        if head.hash != head_hash:
            raise AuditWriteError("the audit head does not match its record", retryable=False)
        return head


def _decoded(rows: list[tuple[Any, ...]]) -> list[Any]:
    out: list[Any] = []
    for _seq, body in rows:
        try:
            out.append(json.loads(body))
        except ValueError:
            out.append(None)  # verify_chain reports it as malformed at this index
    return out
