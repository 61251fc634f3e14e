"""KBS sessions shared by the worker processes of one host, in their own SQLite file.

``broker serve --workers N`` runs N processes on one port, so ``auth`` may land
on one worker and ``attest`` on another: the session, and the single use of its
nonce, must be shared between them. Single-process brokers use
``MemorySessionStore``; replicas on several hosts use ``PostgresSessionStore``.

Lifecycle: the supervisor calls ``reset(path)`` once, before it forks any
worker; each worker then builds a ``SQLiteSessionStore(path)`` and calls its
``open()``. ``open()`` and ``close()`` are plain (sync) methods: they do no
I/O worth awaiting. A connection must never be carried across a fork, so
``reset`` closes its own before it returns.

Why ``synchronous=OFF`` is safe here: sessions are ephemeral and never outlive
the broker. A process crash loses nothing (the pages are in the OS cache); only
an OS crash or power loss can lose or tear the last writes, and the broker
that starts after one calls ``reset``, which deletes the file with its -wal and
-shm siblings and creates an empty schema. So a crash can neither corrupt the
store a restarted broker uses nor resurrect a session (or an unused nonce) it
would accept. It spares every create, consume and token write an fsync, which
on most disks costs far more than the statement itself.

Every method runs the stdlib ``sqlite3`` synchronously on the calling (event
loop) thread and awaits nothing: each is one short statement or one short
``BEGIN IMMEDIATE ... COMMIT`` (tens of microseconds), far less than a hop to a
thread and back. Within a process that makes each method atomic; across
processes SQLite's write lock serialises the transactions, so two workers
racing on one nonce cannot both consume it. A writer that finds the lock taken
waits in SQLite's busy handler (up to ``busy_timeout_ms``, in sleeps of 1 ms and
more), blocking its event loop meanwhile; readers never wait for the writer in
WAL mode.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from broker.adapters.sqlite_tx import immediate
from broker.errors import BackendError, NonceReplayed, SessionMissing
from broker.ports import Session

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "DEFAULT_MAX_SESSIONS",
    "SCHEMA_VERSION",
    "SQLiteSessionStore",
    "SharedFileHandle",
    "connect",
    "reset",
]

SCHEMA_VERSION: Final = 1
# UPDATE ... RETURNING makes a consume one statement instead of a transaction of four.
_MIN_SQLITE: Final = (3, 35, 0)
DEFAULT_BUSY_TIMEOUT_MS: Final = 5000
# A session with its token is about 2 KiB: the bound keeps a flood of auth
# requests from growing the file without limit (as in MemorySessionStore).
DEFAULT_MAX_SESSIONS: Final = 100_000

# COUNT(*) scans the table, too slow at the bound for every create: triggers
# keep the number of rows in one counter row, updated in the same transaction.
_SCHEMA: Final = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    tee TEXT NOT NULL,
    nonce TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    token TEXT
);
CREATE INDEX sessions_expiry ON sessions(expires_at);
CREATE TABLE session_count (n INTEGER NOT NULL);
INSERT INTO session_count (n) VALUES (0);
CREATE TRIGGER sessions_counted_in AFTER INSERT ON sessions
    BEGIN UPDATE session_count SET n = n + 1; END;
CREATE TRIGGER sessions_counted_out AFTER DELETE ON sessions
    BEGIN UPDATE session_count SET n = n - 1; END;
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""

_CONSUME: Final = (
    "UPDATE sessions SET used = 1 WHERE id = ? AND used = 0"
    " RETURNING id, tee, nonce, created_at, expires_at, used, token"
)
_SELECT: Final = (
    "SELECT id, tee, nonce, created_at, expires_at, used, token FROM sessions WHERE id = ?"
)


def _siblings(path: Path) -> list[Path]:
    return [path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))]


def reset(path: Path) -> None:
    """Deletes the sessions file (and its -wal/-shm) and creates an empty schema.

    Call once at broker start, before any worker opens the file: every session
    and lease of an earlier run is gone.

    Raises:
        BackendError: the file could not be deleted or created.
    """
    try:
        for p in _siblings(path):
            p.unlink(missing_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise BackendError(f"cannot reset the session store at {path}: {exc}") from None
    try:
        # WAL is recorded in the file, so every worker's connection inherits it.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(f"BEGIN; {_SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    except sqlite3.Error as exc:
        raise BackendError(f"cannot reset the session store at {path}: {exc}") from None
    finally:
        conn.close()


def connect(path: Path, *, busy_timeout_ms: int) -> sqlite3.Connection:
    """A connection to a file made by ``reset``, set up for the session store and lease.

    Raises:
        BackendError: no such file (``reset`` was not called), a foreign schema, or
            SQLite failed.
    """
    if busy_timeout_ms < 0:
        raise ValueError("busy_timeout_ms must not be negative")
    if sqlite3.sqlite_version_info < _MIN_SQLITE:
        raise BackendError(
            f"the session store needs SQLite 3.35 or later (RETURNING), not"
            f" {sqlite3.sqlite_version}",
            retryable=False,
        )
    try:
        # mode=rw: a missing file is an error, never silently a new schema-less one.
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackendError(f"cannot open the session store at {path}: {exc}") from None
    try:
        for pragma in (
            f"busy_timeout={int(busy_timeout_ms)}",
            "journal_mode=WAL",
            "synchronous=OFF",
        ):
            conn.execute(f"PRAGMA {pragma}")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise BackendError(f"cannot open the session store at {path}: {exc}") from None
    if version != SCHEMA_VERSION:
        conn.close()
        raise BackendError(
            f"the session store at {path} has schema version {version}, not"
            f" {SCHEMA_VERSION}: the broker must reset it at start",
            retryable=False,
        )
    return conn


def _session(row: tuple[str, str, str, float, float, int, str | None]) -> Session:
    sid, tee, nonce, created_at, expires_at, used, token = row
    return Session(sid, tee, nonce, created_at, expires_at, used=bool(used), token=token)


def _failed(what: str, exc: sqlite3.Error) -> BackendError:
    # sqlite3 messages name the failure, never a bound value: no nonce or token
    # can leak through them.
    return BackendError(f"session store {what} failed: {exc}")


class SharedFileHandle:
    """One connection to the shared sessions file, opened and closed explicitly;
    use it from one thread (the event loop's)."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> None:
        if busy_timeout_ms < 0:
            raise ValueError("busy_timeout_ms must not be negative")
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None

    def open(self) -> None:
        """Connects to the file made by ``reset``; raises BackendError if there is none."""
        if self._conn is None:
            self._conn = connect(self.path, busy_timeout_ms=self._busy_timeout_ms)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SQLiteSessionStore(SharedFileHandle):
    """Open sessions of this host's workers, at most ``max_sessions`` of them.

    When the store is full, a new session first makes room by dropping the
    sessions that expired before it was created.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        super().__init__(path, busy_timeout_ms=busy_timeout_ms)
        self._max = max_sessions

    def __len__(self) -> int:
        db = self._db("count")
        try:
            (n,) = db.execute("SELECT n FROM session_count").fetchone()
        except sqlite3.Error as exc:
            raise _failed("count", exc) from None
        return int(n)

    # The hot paths use plain try/except, not a context manager: a generator
    # based one costs a few microseconds per call, a tenth of a statement.

    async def create_session(self, session: Session) -> None:
        """Raises BackendError on a reused id (ids are random) or when the store is full."""
        args = (
            session.id,
            session.tee,
            session.nonce,
            session.created_at,
            session.expires_at,
            self._max,
        )
        # One statement, so one write transaction: another worker's insert cannot
        # come between the count and this insert.
        if self._insert(self._db("write"), args):
            return
        with self._transaction("write") as db:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (session.created_at,))
            if not self._insert(db, args):
                raise BackendError("too many open sessions: retry later")

    @staticmethod
    def _insert(db: sqlite3.Connection, args: tuple[object, ...]) -> bool:
        """Inserts the session unless the store is full; False if it was."""
        try:
            cursor = db.execute(
                "INSERT INTO sessions (id, tee, nonce, created_at, expires_at)"
                " SELECT ?, ?, ?, ?, ? WHERE (SELECT n FROM session_count) < ?",
                args,
            )
        except sqlite3.IntegrityError:
            raise BackendError("session store write failed: the session id exists") from None
        except sqlite3.Error as exc:
            raise _failed("write", exc) from None
        return cursor.rowcount == 1

    async def get_session(self, session_id: str) -> Session | None:
        db = self._db("read")
        try:
            row = db.execute(_SELECT, (session_id,)).fetchone()
        except sqlite3.Error as exc:
            raise _failed("read", exc) from None
        return None if row is None else _session(row)

    async def consume_session(self, session_id: str) -> Session:
        """Marks the session's nonce used, once across every worker on this file.

        Raises:
            SessionMissing: no such session.
            NonceReplayed: the nonce was already used (here or in another worker).
            BackendError: SQLite failed.
        """
        db = self._db("write")
        found = True
        try:
            # One statement: SQLite's write lock lets one worker at a time run
            # it, so only the first of several racing ones still sees used = 0.
            # fetchall() runs it to the end, which commits it at once.
            rows = db.execute(_CONSUME, (session_id,)).fetchall()
            if not rows:
                exists = db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,))
                found = exists.fetchone() is not None
        except sqlite3.Error as exc:
            raise _failed("write", exc) from None
        if rows:
            return _session(rows[0])
        if not found:
            raise SessionMissing("unknown session")
        raise NonceReplayed("the challenge nonce was already used")

    async def set_session_token(self, session_id: str, token: str) -> None:
        """Attaches the token; a session purged meanwhile is silently skipped."""
        db = self._db("write")
        try:
            db.execute("UPDATE sessions SET token = ? WHERE id = ?", (token, session_id))
        except sqlite3.Error as exc:
            raise _failed("write", exc) from None

    async def purge_sessions(self, before: float) -> int:
        """Drops the sessions that expired before ``before``; returns how many."""
        db = self._db("write")
        try:
            return db.execute("DELETE FROM sessions WHERE expires_at < ?", (before,)).rowcount
        except sqlite3.Error as exc:
            raise _failed("write", exc) from None

    def _db(self, what: str) -> sqlite3.Connection:
        if self._conn is None:
            raise BackendError(f"session store {what} failed: the store is not open")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        try:
            with immediate(self._db(what)) as db:
                yield db
        except sqlite3.Error as exc:
            raise _failed(what, exc) from None
