"""One PostgreSQL database shared by every replica: the pool, the schema, the error boundary.

Every replica opens its own ``PostgresDB`` (an asyncpg pool) on the same database. The
schema is created at ``open()`` under a transaction-scoped advisory lock, so replicas
starting together do not race on ``CREATE TABLE``; its version is kept per component in
``schema_versions`` and a database written by a newer broker is refused.

Every asyncpg, socket and timeout failure leaves this module as a BackendError (503,
retryable) naming what failed and the error class, never the DSN, a parameter value or a
traceback. A lost server costs the requests in flight; the pool replaces closed
connections on the next acquire, so the same object works again once the server is back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from broker.errors import BackendError

SCHEMA_COMPONENT = "store"
SCHEMA_VERSION = 1

_SCHEMA_LOCK = "attested-broker schema"

# ``COLLATE "C"`` on identifiers: listings sort byte-wise, as in the SQLite store,
# whatever locale the database was created with.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS resources (
    id TEXT COLLATE "C" PRIMARY KEY,
    kind TEXT NOT NULL,
    current_version INTEGER NOT NULL,
    min_release_version INTEGER NOT NULL DEFAULT 1,
    rotate_every BIGINT,
    last_rotated_at TIMESTAMPTZ NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    size INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS resource_versions (
    resource TEXT COLLATE "C" NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'active',
    sealed BYTEA,
    size INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (resource, version)
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    tee TEXT NOT NULL,
    nonce TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used BOOLEAN NOT NULL DEFAULT false,
    token TEXT
);
CREATE INDEX IF NOT EXISTS sessions_expiry ON sessions(expires_at);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"""

Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
Isolation = Literal["read_committed", "repeatable_read", "serializable"]

# What a lost, refused, timed-out or failing database looks like from asyncpg.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def describe(exc: BaseException) -> str:
    """The error class and SQLSTATE (plus the server's primary message, which names
    constraints but not values); never the DETAIL line, which can quote row values."""
    if isinstance(exc, asyncpg.PostgresError):
        return f"{type(exc).__name__} [{exc.sqlstate}] {exc.message or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    return type(exc).__name__


@asynccontextmanager
async def backend_errors(what: str) -> AsyncIterator[None]:
    """Turns every database failure inside the block into a BackendError about ``what``."""
    try:
        yield
    except DB_ERRORS as exc:
        raise BackendError(f"{what} failed: {describe(exc)}") from None


class PostgresDB:
    """An asyncpg pool on one database, with the broker's schema.

    ``dsn`` is a libpq-style URI (``postgresql://user@host:port/db``); a password belongs
    in ``PGPASSWORD``/``.pgpass`` or the URI, which is never logged or put in errors.
    ``command_timeout`` bounds every statement and ``acquire_timeout`` the wait for a
    pooled connection, so a wedged server surfaces as a BackendError, not a hang.
    ``min_size`` is 0: connections open on demand and stay pooled while in use (idle ones
    close after five minutes); with a floor, asyncpg reconnects in the background during
    an outage and logs every failed attempt with a traceback.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 0,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        acquire_timeout: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._acquire_timeout = acquire_timeout
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    def __repr__(self) -> str:
        return f"PostgresDB(max_size={self._max_size})"

    async def open(self) -> None:
        """Connect the pool and create or check the schema.

        Raises:
            BackendError: the server is unreachable, or the schema is newer than this code
                (not retryable).
        """
        try:
            async with backend_errors("connecting to PostgreSQL"):
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    timeout=self._connect_timeout,
                    command_timeout=self._command_timeout,
                    server_settings={"application_name": "attested-broker"},
                )
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        async with self.transaction("creating the schema") as conn:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _SCHEMA_LOCK)
            await conn.execute(_SCHEMA)
            found = await conn.fetchval(
                "SELECT version FROM schema_versions WHERE component = $1", SCHEMA_COMPONENT
            )
            if found is None:
                await conn.execute(
                    "INSERT INTO schema_versions (component, version) VALUES ($1, $2)",
                    SCHEMA_COMPONENT,
                    SCHEMA_VERSION,
                )
            elif found > SCHEMA_VERSION:
                raise BackendError(
                    f"the database schema is version {found}; this broker supports up to"
                    f" {SCHEMA_VERSION}",
                    retryable=False,
                )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                async with backend_errors("closing the pool"):
                    await asyncio.wait_for(pool.close(), self._acquire_timeout)
            except BackendError:
                # A wedged server must not hold up shutdown: drop the sockets.
                pool.terminate()

    @property
    def pool(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise BackendError("store is not open")
        return self._pool

    @asynccontextmanager
    async def connection(self, what: str) -> AsyncIterator[Connection]:
        """A pooled connection in autocommit; failures become BackendError(``what``)."""
        async with backend_errors(what), self.pool.acquire(timeout=self._acquire_timeout) as conn:
            yield conn

    @asynccontextmanager
    async def transaction(
        self, what: str, *, isolation: Isolation = "read_committed"
    ) -> AsyncIterator[Connection]:
        """A pooled connection inside a transaction: committed at the end of the block,
        rolled back on any exception (broker errors included)."""
        async with (
            backend_errors(what),
            self.pool.acquire(timeout=self._acquire_timeout) as conn,
            conn.transaction(isolation=isolation),
        ):
            yield conn

    async def check_writable(self) -> None:
        """Raises BackendError unless the server accepts writes (not a standby, not
        read-only), the way a readiness probe wants to know."""
        async with self.connection("checking the store") as conn:
            writable = await conn.fetchval(
                "SELECT NOT pg_is_in_recovery()"
                " AND current_setting('transaction_read_only') = 'off'"
            )
        if not writable:
            raise BackendError("store not writable: the database is read-only")
