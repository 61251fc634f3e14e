"""A named lease with expiry for the worker processes of one host: "one worker rotates".

The lease row lives in the ``leases`` table of the session store's file (see
``sqlite_sessions``): ``reset`` creates it empty at broker start, which is fine
since no worker holds anything then. Give every worker an ``SQLiteLease`` on the
same path and call ``open()`` (sync, like the session store's) before use.

Semantics and argument checks are those of ``PostgresLease``: a holder that
stops renewing loses the lease after ``ttl`` seconds and another worker takes
over; renew well within ``ttl`` and stop the work when ``renew`` returns False.
Expiry is read from ``clock`` (``time.time`` by default). Every worker runs on
the same host, so they share that clock; a step of the wall clock shortens or
lengthens the current lease by the step, which the rotations tolerate since a
lease only bounds overlap in time and ``add_version`` is a compare-and-set.

Each method is one autocommit statement on the caller's thread, serialised
across processes by SQLite's write lock, so of several contenders for an
expired lease exactly one wins.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from broker.adapters.lease_rules import ROTATION_LEASE, check_lease_args
from broker.adapters.sqlite_sessions import DEFAULT_BUSY_TIMEOUT_MS, SharedFileHandle
from broker.errors import BackendError

__all__ = ["ROTATION_LEASE", "SQLiteLease"]


class SQLiteLease(SharedFileHandle):
    """The lease ``name``; every worker builds one with the same name on the same file."""

    def __init__(
        self,
        path: Path,
        name: str = ROTATION_LEASE,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        super().__init__(path, busy_timeout_ms=busy_timeout_ms)
        self.name = name
        self._clock = clock

    async def acquire(self, holder: str, ttl: float) -> bool:
        """``Lease.acquire``: one upsert, so of several contenders exactly one wins."""
        check_lease_args(holder, ttl)
        now = self._clock()
        with self._errors() as db:
            # An upsert whose DO UPDATE is refused changes no row: rowcount 0.
            changed = db.execute(
                "INSERT INTO leases AS l (name, holder, expires_at) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE"
                " SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE l.expires_at <= ? OR l.holder = excluded.holder",
                (self.name, holder, now + float(ttl), now),
            ).rowcount
        return changed == 1

    async def renew(self, holder: str, ttl: float) -> bool:
        check_lease_args(holder, ttl)
        now = self._clock()
        with self._errors() as db:
            changed = db.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ? AND expires_at > ?",
                (now + float(ttl), self.name, holder, now),
            ).rowcount
        return changed == 1

    async def release(self, holder: str) -> None:
        with self._errors() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (self.name, holder))

    async def holder(self) -> str | None:
        with self._errors() as db:
            row = db.execute(
                "SELECT holder FROM leases WHERE name = ? AND expires_at > ?",
                (self.name, self._clock()),
            ).fetchone()
        return None if row is None else str(row[0])

    @contextlib.contextmanager
    def _errors(self) -> Iterator[sqlite3.Connection]:
        if self._conn is None:
            raise BackendError("lease failed: the lease is not open")
        try:
            yield self._conn
        except sqlite3.Error as exc:
            raise BackendError(f"lease failed: {exc}") from None
