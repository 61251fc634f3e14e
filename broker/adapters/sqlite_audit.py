"""Durable, hash-chained audit log in SQLite, with group commit.

Usage::

    log = SQLiteAuditLog(Path("/var/lib/broker/audit.db"))
    await log.start()
    record = await log.append(event)     # returns after COMMIT (WAL, synchronous=FULL)
    async for r in log.iter_records(since, until):
        ...
    await log.close()

Threads, not aiosqlite: a group commit must run BEGIN, every INSERT and
COMMIT as one uninterrupted unit on one connection. Doing that as a single
function call on a dedicated writer thread (a one-worker executor) gives one
thread hop per group and no way for another coroutine to slip a statement into
the open transaction; aiosqlite would add a hop per statement and a shared
connection. Reads use a second connection on a second thread, so exports
never wait behind the writer (WAL lets them run side by side).

Group commit: ``append`` queues the event and awaits a future. One writer task
takes everything queued (up to ``max_batch``), chains the records from the
in-memory head, writes them in one transaction and only then resolves the
futures. If anything fails, every waiter in the group gets ``AuditWriteError``
and the head is marked stale: the next group re-reads it from disk, so a
failure leaves neither a gap nor a fork. The table also refuses, by trigger,
any row that does not link to its predecessor and any UPDATE or DELETE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

import structlog

from broker.adapters.audit_tree import canonical_from_body
from broker.adapters.group_commit import GroupCommit, after_commit
from broker.adapters.sqlite_tx import immediate
from broker.audit.chain import AuditChainBroken, ChainReport, verify_chain
from broker.audit.merkle import leaf_hash
from broker.audit.record import (
    AuditEvent,
    AuditRecord,
    AuditRecordInvalid,
    chain_next,
    format_time,
)
from broker.errors import AuditWriteError

__all__ = ["SQLiteAuditLog"]

_log = structlog.get_logger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Records per read when a tree catches up with what other processes appended.
_LEAF_PAGE: Final = 10_000

SCHEMA_VERSION: Final = 1  # also written by _SCHEMA (PRAGMA user_version)

# The literal zeros are GENESIS_HASH (checked by the adapter tests).
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS audit_record (
    seq       INTEGER PRIMARY KEY,
    time      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL UNIQUE,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_record_time ON audit_record(time);
CREATE TRIGGER IF NOT EXISTS audit_record_link BEFORE INSERT ON audit_record
WHEN (NEW.seq = 0 AND
      NEW.prev_hash <> '0000000000000000000000000000000000000000000000000000000000000000')
  OR (NEW.seq > 0 AND NEW.prev_hash IS NOT
      (SELECT hash FROM audit_record WHERE seq = NEW.seq - 1))
  OR NEW.seq < 0
BEGIN SELECT RAISE(ABORT, 'audit record does not link to its predecessor'); END;
CREATE TRIGGER IF NOT EXISTS audit_record_no_update BEFORE UPDATE ON audit_record
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_record_no_delete BEFORE DELETE ON audit_record
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
PRAGMA user_version = 1;
"""


def _row_body(record: AuditRecord) -> str:
    return record.body_bytes().decode("utf-8")


@contextlib.contextmanager
def _writer_turn(path: Path) -> Iterator[None]:
    """An exclusive lock on ``<path>.writer`` for one group, shared by every process."""
    import fcntl  # noqa: PLC0415 - POSIX only; only the shared mode needs it

    fd = os.open(f"{path}.writer", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _live(conn: sqlite3.Connection | None) -> sqlite3.Connection:
    if conn is None:
        raise sqlite3.OperationalError("audit database connection is closed")
    return conn


def _record_from_body(body: str) -> AuditRecord:
    """Parse a stored row; ``from_dict`` re-checks the record's own hash."""
    return AuditRecord.from_dict(json.loads(body))


class SQLiteAuditLog:
    """Audit sink on one SQLite file.

    One process writes it, or with ``shared=True`` several (the worker
    processes of one host): each group then reads the head inside its
    ``BEGIN IMMEDIATE`` transaction, whose write lock orders the groups of
    every process into one chain, and chains its records onto that head.
    ``catch_up(seq)`` (the tree's ``sync``) runs after each COMMIT, before
    ``on_commit``, so the tree holds what other processes appended first, and
    ``leaf_pages`` is what it reads them from. Without ``shared`` a second
    writer is not supported; it cannot fork the chain (the schema refuses
    unlinked rows, and a failed group re-reads the head) but its appends would
    fail at random.

    ``fail_writes`` is a fault-injection seam for tests: called on the writer
    thread once per group after the INSERTs and before COMMIT; returning True
    makes that group's transaction fail and roll back.

    ``transactions`` counts committed groups (so tests can see grouping).

    ``on_commit`` is called on the event loop with each group's records
    after its COMMIT and before any waiter is woken (the transparency tree
    appends its leaves there, so a receipt never names a record the tree lacks).
    """

    def __init__(
        self,
        path: Path,
        *,
        fail_writes: Callable[[], bool] | None = None,
        on_commit: Callable[[list[AuditRecord]], None] | None = None,
        max_batch: int = 512,
        max_pending: int = 10_000,
        page_size: int = 500,
        busy_timeout_ms: int = 5_000,
        shared: bool = False,
        catch_up: Callable[[int], Awaitable[object]] | None = None,
    ) -> None:
        self.path = path
        self.shared = shared
        self.catch_up = catch_up
        self.transactions = 0
        self._fail_writes = fail_writes
        self.on_commit = on_commit
        self._page_size = page_size
        self._busy_timeout_ms = busy_timeout_ms
        self._groups = GroupCommit(
            self._write_group,
            max_batch=max_batch,
            max_pending=max_pending,
            committed=self._committed,
            failed=self._failed,
        )
        self._writer_pool: ThreadPoolExecutor | None = None
        self._reader_pool: ThreadPoolExecutor | None = None
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._head: AuditRecord | None = None
        self._head_stale = True
        self._open = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (creating if needed) the database and start the writer task.

        Raises:
            AuditWriteError: the file cannot be opened, has an unknown schema
                version, or its last record is corrupt.
        """
        if self._open:
            return
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
        self._reader_pool = ThreadPoolExecutor(1, thread_name_prefix="audit-reader")
        try:
            await self._on(self._writer_pool, self._open_writer)
            await self._on(self._reader_pool, self._open_reader)
            self._head = await self._on(self._writer_pool, self._read_head)
        except (sqlite3.Error, OSError, ValueError, AuditRecordInvalid) as exc:
            await self._shutdown_threads()
            raise AuditWriteError(
                f"cannot open audit log {self.path}: {exc}", retryable=False
            ) from exc
        self._head_stale = False
        self._open = True
        self._groups.start()

    async def close(self) -> None:
        """Finish every append queued so far, then close the database."""
        if not self._open:
            return
        self._open = False
        await self._groups.stop()
        await self._shutdown_threads()

    async def _shutdown_threads(self) -> None:
        for pool, attr in ((self._writer_pool, "_wconn"), (self._reader_pool, "_rconn")):
            if pool is None:
                continue
            conn: sqlite3.Connection | None = getattr(self, attr)
            if conn is not None:
                await asyncio.get_running_loop().run_in_executor(pool, conn.close)
                setattr(self, attr, None)
            pool.shutdown(wait=True)
        self._writer_pool = self._reader_pool = None

    # -- public API -----------------------------------------------------------------------------

    async def append(self, event: AuditEvent) -> AuditRecord:
        """Append ``event``; return its record once the transaction has committed.

        Raises:
            AuditWriteError: the log is closed or overloaded, or the group this
                event was written in failed (nothing of that group is stored).
        """
        if not self._open:
            raise AuditWriteError("audit log is not open", retryable=False)
        return await self._groups.append(event)

    async def head(self) -> AuditRecord | None:
        """The last committed record, or None for an empty log.

        Raises:
            AuditWriteError: the log is closed or the head cannot be read.
        """
        if not self._open:
            raise AuditWriteError("audit log is not open", retryable=False)
        if self._head_stale or self.shared:
            # Read without caching: only the writer task moves the head, so a
            # read racing with its next commit can never roll the head back.
            try:
                return await self._on(self._writer_pool, self._read_head)
            except (sqlite3.Error, ValueError, AuditRecordInvalid) as exc:
                raise AuditWriteError(f"audit head cannot be read: {exc}") from exc
        return self._head

    async def check_writable(self) -> None:
        """Readiness probe: the writer task runs and can commit (take the lock, write).

        Raises:
            AuditWriteError: it cannot.
        """
        if not self._open or not self._groups.running:
            raise AuditWriteError("audit log is not open")
        try:
            await self._on(self._writer_pool, self._probe_write_lock)
        except sqlite3.Error as exc:
            raise AuditWriteError(f"audit log is not writable: {exc}") from exc

    async def iter_records(
        self, since: datetime | None = None, until: datetime | None = None
    ) -> AsyncIterator[AuditRecord]:
        """Committed records in seq order, fetched ``page_size`` at a time.

        The window is contiguous, so the output always verifies as a chain:
        from the first record with time >= ``since`` to the last with time <=
        ``until``. Event times are not strictly ordered by seq (they are taken
        when a request starts), so a few records inside the window may lie
        just outside the bounds. Records appended after the call are not
        included.

        Raises:
            AuditWriteError: the log is closed or cannot be read.
            AuditChainBroken: a stored record is corrupt (``index`` is its seq).
        """
        if not self._open:
            raise AuditWriteError("audit log is not open", retryable=False)
        lo = format_time(since) if since is not None else None
        hi = format_time(until) if until is not None else None
        first, last = await self._reading(self._window, lo, hi)
        after = first - 1
        while after < last:
            page = await self._reading(self._page, after, last)
            if not page:
                return
            for record in page:
                yield record
            after = page[-1].seq

    async def verify(self) -> ChainReport:
        """Verify the whole stored chain from seq 0 (slow on big logs: O(records)).

        Raises:
            AuditChainBroken: at the first bad record (``index`` is its position).
            AuditWriteError: the log is closed or cannot be read.
        """
        if not self._open:
            raise AuditWriteError("audit log is not open", retryable=False)
        return await self._reading(self._verify_all)

    # -- writer task ----------------------------------------------------------------------------

    async def leaf_pages(self, start: int) -> AsyncIterator[tuple[int, list[bytes]]]:
        """``(seq of the first, leaf hashes)`` pages of the records from ``start`` on.

        Raises:
            AuditWriteError: the log cannot be read or a stored record is corrupt.
        """
        after = start - 1
        while True:
            try:
                page = await self._reading(self._leaf_page, after)
            except (ValueError, UnicodeError) as exc:
                raise AuditWriteError(f"audit log cannot be read: {exc}") from exc
            if not page:
                return
            yield page[0][0], [leaf for _, leaf in page]
            after = page[-1][0]

    async def _write_group(self, events: list[AuditEvent]) -> list[AuditRecord]:
        if self.shared:
            return await self._on(self._writer_pool, self._write_shared, events)
        prev = await self._refresh_head() if self._head_stale else self._head
        records: list[AuditRecord] = []
        for event in events:
            prev = chain_next(prev, event)
            records.append(prev)
        await self._on(self._writer_pool, self._write_rows, records)
        return records

    async def _committed(self, records: list[AuditRecord]) -> None:
        self._head = records[-1]
        self.transactions += 1
        await after_commit(records, catch_up=self.catch_up, on_commit=self.on_commit)

    def _failed(self, exc: BaseException, size: int) -> None:
        # The next group re-reads the head from disk: a failure leaves no gap, no fork.
        self._head_stale = True
        if not isinstance(exc, asyncio.CancelledError):
            _log.error("audit.write_failed", path=str(self.path), group=size, exc_info=exc)

    async def _refresh_head(self) -> AuditRecord | None:
        head = await self._on(self._writer_pool, self._read_head)
        self._head, self._head_stale = head, False
        return head

    # -- thread plumbing ------------------------------------------------------------------------

    async def _on(
        self, pool: ThreadPoolExecutor | None, fn: Callable[_P, _T], *a: _P.args, **k: _P.kwargs
    ) -> _T:
        if pool is None:
            raise AuditWriteError("audit log is not open", retryable=False)
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*a, **k))

    async def _reading(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await self._on(self._reader_pool, fn, *args, **kwargs)
        except sqlite3.Error as exc:
            raise AuditWriteError(f"audit log cannot be read: {exc}") from exc

    # -- runs on the writer thread --------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves.
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        return conn

    def _open_writer(self) -> None:
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
            # FULL: the WAL is fsynced at every COMMIT, so a returned append survives power loss.
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"unknown audit schema version {version}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        self._wconn = conn

    def _writer_conn(self) -> sqlite3.Connection:
        return _live(self._wconn)

    def _read_head(self) -> AuditRecord | None:
        row = (
            self._writer_conn()
            .execute("SELECT body FROM audit_record ORDER BY seq DESC LIMIT 1")
            .fetchone()
        )
        return None if row is None else _record_from_body(row[0])

    def _write_rows(self, records: list[AuditRecord]) -> None:
        conn = self._writer_conn()
        with immediate(conn):
            self._insert(conn, records)

    def _write_shared(self, events: list[AuditEvent]) -> list[AuditRecord]:
        # The writers queue on a file lock first: the kernel wakes a waiter as soon
        # as the holder commits, where SQLite's busy handler would sleep in growing
        # steps (1, 2, 5, 10 ... ms) and let the other writer take the lock again.
        with _writer_turn(self.path):
            return self._write_shared_locked(events)

    def _write_shared_locked(self, events: list[AuditEvent]) -> list[AuditRecord]:
        conn = self._writer_conn()
        with immediate(conn):
            # Under the write lock: no other process can append until COMMIT.
            prev = self._locked_head(conn)
            records: list[AuditRecord] = []
            for event in events:
                prev = chain_next(prev, event)
                records.append(prev)
            self._insert(conn, records)
        return records

    def _locked_head(self, conn: sqlite3.Connection) -> AuditRecord | None:
        row = conn.execute(
            "SELECT seq, hash, body FROM audit_record ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        known = self._head
        if known is not None and known.seq == row[0] and known.hash == row[1]:
            return known  # no other process appended since this one's last group
        return _record_from_body(row[2])

    def _insert(self, conn: sqlite3.Connection, records: list[AuditRecord]) -> None:
        rows = [(r.seq, format_time(r.time), r.prev_hash, r.hash, _row_body(r)) for r in records]
        conn.executemany(
            "INSERT INTO audit_record (seq, time, prev_hash, hash, body) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        if self._fail_writes is not None and self._fail_writes():
            raise sqlite3.OperationalError("injected audit write failure")

    def _probe_write_lock(self) -> None:
        conn = self._writer_conn()
        with immediate(conn):
            # Rewriting the header page and committing appends a WAL frame: an empty
            # transaction writes nothing, so it reported "ok" on a full disk.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- runs on the reader thread --------------------------------------------------------------

    def _open_reader(self) -> None:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        self._rconn = conn

    def _reader_conn(self) -> sqlite3.Connection:
        return _live(self._rconn)

    def _window(self, lo: str | None, hi: str | None) -> tuple[int, int]:
        conn = self._reader_conn()
        first = 0
        if lo is not None:
            row = conn.execute(
                "SELECT MIN(seq) FROM audit_record WHERE time >= ?", (lo,)
            ).fetchone()
            first = -1 if row[0] is None else int(row[0])
        if hi is None:
            row = conn.execute("SELECT MAX(seq) FROM audit_record").fetchone()
        else:
            row = conn.execute(
                "SELECT MAX(seq) FROM audit_record WHERE time <= ?", (hi,)
            ).fetchone()
        last = -1 if row[0] is None else int(row[0])
        if first < 0:
            return 0, -1  # nothing at or after `since`
        return first, last

    def _page(self, after: int, last: int) -> list[AuditRecord]:
        rows = (
            self._reader_conn()
            .execute(
                "SELECT seq, body FROM audit_record"
                " WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, last, self._page_size),
            )
            .fetchall()
        )
        out: list[AuditRecord] = []
        for seq, body in rows:
            try:
                out.append(_record_from_body(body))
            except (ValueError, AuditRecordInvalid) as exc:
                raise AuditChainBroken(int(seq), f"stored record is corrupt: {exc}") from None
        return out

    def _leaf_page(self, after: int) -> list[tuple[int, bytes]]:
        rows = (
            self._reader_conn()
            .execute(
                "SELECT seq, hash, body FROM audit_record WHERE seq > ? ORDER BY seq LIMIT ?",
                (after, _LEAF_PAGE),
            )
            .fetchall()
        )
        page: list[tuple[int, bytes]] = []
        for seq, stored_hash, body in rows:
            if seq != after + 1 + len(page):
                raise ValueError(f"stored records skip to seq {seq}")
            page.append((int(seq), leaf_hash(canonical_from_body(body.encode(), stored_hash))))
        return page

    def _verify_all(self) -> ChainReport:
        cursor = self._reader_conn().execute("SELECT body FROM audit_record ORDER BY seq")

        def bodies() -> Iterator[Any]:
            for (body,) in cursor:
                try:
                    yield json.loads(body)
                except ValueError:
                    yield None  # verify_chain reports it as malformed at this index

        return verify_chain(bodies(), require_genesis=True)
