"""The key and session stores behave the same on SQLite and on a real PostgreSQL.

Every ``stores`` test runs on both backends, built directly (no wiring). A "replica" is
one more database handle on the same store (an asyncpg pool on the same database, or a
second SQLite connection on the same file), the way another broker process would see it.
On SQLite the sessions are the one process's memory (``MemorySessionStore``), shared by
every handle as the coroutines of that process share it.
PostgreSQL-only behaviour (the lease, outages, the schema version, VACUUM after erasure)
follows at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from broker.adapters.memory_sessions import MemorySessionStore
from broker.adapters.pg_db import PostgresDB
from broker.adapters.pg_keys import PostgresKeyStore
from broker.adapters.pg_lease import PostgresLease
from broker.adapters.pg_sessions import PostgresSessionStore
from broker.adapters.sqlite_db import SQLiteDB
from broker.adapters.sqlite_keys import SQLiteKeyStore
from broker.errors import (
    BackendError,
    ConfigError,
    Conflict,
    KeyVersionDestroyed,
    KeyVersionNotReleasable,
    MalformedRequest,
    NonceReplayed,
    ResourceNotFound,
    SessionMissing,
)
from broker.ports import ACTIVE, DESTROYED, RETIRED, KeyStore, Session, SessionStore
from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401
from tests.postgres import PostgresServer

T0 = datetime(2030, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
KEY = "default/key/disk"


@dataclass
class Replica:
    keys: KeyStore
    sessions: SessionStore
    close: Callable[[], Awaitable[None]]
    db: PostgresDB | None = None


@dataclass
class Stores:
    """The store under test (``keys``, ``sessions``) and a way to open more replicas."""

    backend: str
    target: str
    opened: list[Replica] = field(default_factory=list)
    # The embedded deployment is one process: its "replicas" share its memory.
    memory: MemorySessionStore = field(default_factory=MemorySessionStore)

    async def replica(self) -> Replica:
        if self.backend == "sqlite":
            sdb = SQLiteDB(Path(self.target))
            await sdb.open()
            rep = Replica(SQLiteKeyStore(sdb), self.memory, sdb.close)
        else:
            pdb = PostgresDB(self.target, connect_timeout=2.0, command_timeout=5.0)
            await pdb.open()
            rep = Replica(PostgresKeyStore(pdb), PostgresSessionStore(pdb), pdb.close, pdb)
        self.opened.append(rep)
        return rep

    @property
    def keys(self) -> KeyStore:
        return self.opened[0].keys

    @property
    def sessions(self) -> SessionStore:
        return self.opened[0].sessions


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Which backend, and its file path or DSN (PostgreSQL is started only when needed)."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "broker.db")
    return "postgres", str(request.getfixturevalue("pg_dsn"))


@pytest.fixture
async def stores(target: tuple[str, str]) -> AsyncIterator[Stores]:
    found = Stores(*target)
    await found.replica()
    yield found
    for rep in found.opened:
        await rep.close()


async def _create(keys: KeyStore, resource: str = KEY, **kw: object) -> None:
    args: dict[str, object] = {
        "kind": "data-key",
        "sealed": b"sealed-1",
        "size": 32,
        "actor": "alice",
        "now": T0,
    }
    args |= kw
    await keys.create(resource, **args)  # type: ignore[arg-type]


async def _rotate(keys: KeyStore, version: int, *, at: datetime = T0, **kw: object) -> None:
    await keys.add_version(
        KEY,
        version=version,
        sealed=f"sealed-{version}".encode(),
        size=32,
        actor="bob",
        now=at + timedelta(seconds=version),
        **kw,  # type: ignore[arg-type]
    )


def _session(sid: str = "s1", *, expires_at: float = 2000.0) -> Session:
    return Session(sid, "sample", "nonce-" + sid, 1000.0, expires_at, used=False, token=None)


# --- KeyStore -------------------------------------------------------------------------------


async def test_create_and_info(stores: Stores) -> None:
    """create returns the stored metadata, identical to what info reads back."""
    info = await stores.keys.create(
        KEY, kind="data-key", sealed=b"x", size=32, actor="alice", now=T0, rotate_every=3600
    )
    assert info == await stores.keys.info(KEY)
    assert (info.current_version, info.min_release_version, info.rotate_every) == (1, 1, 3600)
    assert info.created_at == T0 == info.last_rotated_at
    assert info.created_at.utcoffset() == timedelta(0)
    assert (info.kind, info.created_by, info.size, info.source) == ("data-key", "alice", 32, "")


async def test_create_twice_conflicts(stores: Stores) -> None:
    """A second create of the same resource is a Conflict and changes nothing."""
    await _create(stores.keys)
    with pytest.raises(Conflict):
        await _create(stores.keys, sealed=b"other")
    assert (await stores.keys.get_version(KEY, None)).sealed == b"sealed-1"


async def test_offset_times_are_stored_as_utc(stores: Stores) -> None:
    """A time given with another UTC offset is stored as the same instant, in UTC."""
    other = T0.astimezone(timezone(timedelta(hours=2)))
    info = await stores.keys.create(KEY, kind="secret", sealed=b"x", size=1, actor="a", now=other)
    assert info.created_at == T0
    assert info.created_at.utcoffset() == timedelta(0)


async def test_unknown_resource_is_not_found_everywhere(stores: Stores) -> None:
    """Every read or write of a missing resource raises ResourceNotFound."""
    keys = stores.keys
    for call in (
        keys.info("nope"),
        keys.get_version("nope", None),
        keys.get_version("nope", 1),
        keys.versions("nope"),
        keys.update_settings("nope", min_release_version=1),
        keys.set_version_state("nope", 1, RETIRED),
        keys.destroy_version("nope", 1),
        keys.delete("nope"),
    ):
        with pytest.raises(ResourceNotFound):
            await call


async def test_get_version_current_and_explicit(stores: Stores) -> None:
    """None reads the current version; an explicit number reads that one; a missing one 404s."""
    await _create(stores.keys)
    await _rotate(stores.keys, 2)
    current = await stores.keys.get_version(KEY, None)
    assert (current.version, current.sealed, current.info.current_version) == (2, b"sealed-2", 2)
    old = await stores.keys.get_version(KEY, 1)
    assert (old.version, old.sealed) == (1, b"sealed-1")
    with pytest.raises(ResourceNotFound):
        await stores.keys.get_version(KEY, 3)


async def test_add_version_compare_and_set(stores: Stores) -> None:
    """add_version needs current+1 and, if given, the last rotation time the caller read."""
    await _create(stores.keys)
    with pytest.raises(Conflict):
        await _rotate(stores.keys, 3)
    with pytest.raises(Conflict):
        await _rotate(stores.keys, 2, expected_rotated_at=T0 + timedelta(microseconds=1))
    await _rotate(stores.keys, 2, expected_rotated_at=T0)
    info = await stores.keys.info(KEY)
    assert info.current_version == 2
    assert info.last_rotated_at == T0 + timedelta(seconds=2)
    with pytest.raises(Conflict):
        await _rotate(stores.keys, 3, expected_rotated_at=T0)
    with pytest.raises(Conflict):
        await stores.keys.add_version("nope", version=2, sealed=b"x", size=1, actor="a", now=T0)


async def test_versions_lists_states_in_order(stores: Stores) -> None:
    """versions lists every version with its state, creator and time, oldest first."""
    await _create(stores.keys)
    await _rotate(stores.keys, 2)
    await _rotate(stores.keys, 3)
    await stores.keys.set_version_state(KEY, 2, RETIRED)
    await stores.keys.destroy_version(KEY, 1)
    got = await stores.keys.versions(KEY)
    assert [(v.version, v.state, v.created_by) for v in got] == [
        (1, DESTROYED, "alice"),
        (2, RETIRED, "bob"),
        (3, ACTIVE, "bob"),
    ]
    assert got[2].created_at == T0 + timedelta(seconds=3)


async def test_list_sorts_byte_wise(stores: Stores) -> None:
    """list returns every resource sorted by id, byte-wise (upper case before lower)."""
    for name in ("b/x/y", "B/x/y", "a/x/y"):
        await _create(stores.keys, name)
    assert [i.id for i in await stores.keys.list()] == ["B/x/y", "a/x/y", "b/x/y"]


async def test_update_settings(stores: Stores) -> None:
    """The release floor stays within 1..current; rotate_every can be set, kept and cleared."""
    await _create(stores.keys, rotate_every=60)
    await _rotate(stores.keys, 2)
    for bad in (0, 3):
        with pytest.raises(MalformedRequest):
            await stores.keys.update_settings(KEY, min_release_version=bad)
    info = await stores.keys.update_settings(KEY, min_release_version=2)
    assert (info.min_release_version, info.rotate_every) == (2, 60)
    with pytest.raises(KeyVersionNotReleasable):
        await stores.keys.get_version(KEY, 1)
    info = await stores.keys.update_settings(KEY, rotate_every=120)
    assert (info.min_release_version, info.rotate_every) == (2, 120)
    info = await stores.keys.update_settings(KEY, clear_rotate_every=True)
    assert info.rotate_every is None
    assert info == await stores.keys.info(KEY)


async def test_set_version_state(stores: Stores) -> None:
    """A retired version is refused until made active again; only those two states exist."""
    await _create(stores.keys)
    await _rotate(stores.keys, 2)
    await stores.keys.set_version_state(KEY, 1, RETIRED)
    with pytest.raises(KeyVersionNotReleasable):
        await stores.keys.get_version(KEY, 1)
    await stores.keys.set_version_state(KEY, 1, ACTIVE)
    assert (await stores.keys.get_version(KEY, 1)).sealed == b"sealed-1"
    with pytest.raises(MalformedRequest):
        await stores.keys.set_version_state(KEY, 1, DESTROYED)
    with pytest.raises(ResourceNotFound):
        await stores.keys.set_version_state(KEY, 9, RETIRED)
    await stores.keys.destroy_version(KEY, 1)
    with pytest.raises(KeyVersionDestroyed):
        await stores.keys.set_version_state(KEY, 1, ACTIVE)


async def test_destroy_version_erases_material(stores: Stores) -> None:
    """A destroyed version is gone for good (410); the current one cannot be destroyed."""
    await _create(stores.keys)
    with pytest.raises(Conflict):
        await stores.keys.destroy_version(KEY, 1)
    await _rotate(stores.keys, 2)
    await stores.keys.destroy_version(KEY, 1)
    with pytest.raises(KeyVersionDestroyed):
        await stores.keys.get_version(KEY, 1)
    assert await stores.keys.all_sealed() == [(KEY, 2, b"sealed-2")]
    with pytest.raises(ResourceNotFound):
        await stores.keys.destroy_version(KEY, 7)


async def test_due_picks_data_keys_past_their_period(stores: Stores) -> None:
    """due returns scheduled data keys whose period has elapsed, at the exact boundary too."""
    await _create(stores.keys, "k/a/due", rotate_every=60)
    await _create(stores.keys, "k/a/later", rotate_every=3600)
    await _create(stores.keys, "k/a/never")
    await _create(stores.keys, "k/a/secret", kind="secret", rotate_every=60)
    assert await stores.keys.due(T0 + timedelta(seconds=59)) == []
    assert [i.id for i in await stores.keys.due(T0 + timedelta(seconds=60))] == ["k/a/due"]
    due = await stores.keys.due(T0 + timedelta(hours=2))
    assert sorted(i.id for i in due) == ["k/a/due", "k/a/later"]


async def test_delete_removes_everything(stores: Stores) -> None:
    """delete drops the resource and every version; its id can then be reused."""
    await _create(stores.keys)
    await _rotate(stores.keys, 2)
    await _create(stores.keys, "other/a/b")
    await stores.keys.delete(KEY)
    with pytest.raises(ResourceNotFound):
        await stores.keys.info(KEY)
    assert [r for r, _, _ in await stores.keys.all_sealed()] == ["other/a/b"]
    await _create(stores.keys)
    assert [v.version for v in await stores.keys.versions(KEY)] == [1]


async def test_all_sealed_skips_empty_and_erased(stores: Stores) -> None:
    """all_sealed lists stored material in order, without vault-kv (empty) or erased values."""
    await _create(stores.keys, "z/a/b")
    await _create(stores.keys, "a/kv/b", kind="vault-kv", sealed=b"", source="p#f")
    await _create(stores.keys)
    await _rotate(stores.keys, 2)
    assert await stores.keys.all_sealed() == [
        (KEY, 1, b"sealed-1"),
        (KEY, 2, b"sealed-2"),
        ("z/a/b", 1, b"sealed-1"),
    ]
    assert (await stores.keys.info("a/kv/b")).source == "p#f"


async def test_reseal_all_rewrites_every_value(stores: Stores) -> None:
    """reseal_all passes every stored value through the callback and stores the result."""
    await _create(stores.keys)
    await _rotate(stores.keys, 2)
    await _rotate(stores.keys, 3)
    await stores.keys.destroy_version(KEY, 1)
    seen: list[tuple[str, int]] = []

    async def reseal(resource: str, version: int, sealed: bytes) -> bytes:
        seen.append((resource, version))
        return b"new:" + sealed

    assert await stores.keys.reseal_all(reseal) == 2
    assert seen == [(KEY, 2), (KEY, 3)]
    assert await stores.keys.all_sealed() == [(KEY, 2, b"new:sealed-2"), (KEY, 3, b"new:sealed-3")]


async def test_reseal_all_is_all_or_nothing(stores: Stores) -> None:
    """A failing callback rolls the whole re-seal back."""
    await _create(stores.keys)
    await _rotate(stores.keys, 2)

    async def reseal(resource: str, version: int, sealed: bytes) -> bytes:
        if version == 2:
            raise BackendError("KEK unreachable")
        return b"new:" + sealed

    with pytest.raises(BackendError, match="KEK unreachable"):
        await stores.keys.reseal_all(reseal)
    assert [s for _, _, s in await stores.keys.all_sealed()] == [b"sealed-1", b"sealed-2"]


async def test_reseal_all_holds_off_writers_of_other_replicas(stores: Stores) -> None:
    """A rotation on another replica waits for the re-seal and is not lost or re-sealed."""
    other = await stores.replica()
    await _create(stores.keys)
    started, proceed = asyncio.Event(), asyncio.Event()

    async def reseal(resource: str, version: int, sealed: bytes) -> bytes:
        started.set()
        await proceed.wait()
        return b"new:" + sealed

    resealing = asyncio.create_task(stores.keys.reseal_all(reseal))
    await started.wait()
    rotating = asyncio.create_task(_rotate(other.keys, 2))
    await asyncio.sleep(0.3)
    assert not rotating.done()
    proceed.set()
    assert await resealing == 1
    await rotating
    assert await stores.keys.all_sealed() == [(KEY, 1, b"new:sealed-1"), (KEY, 2, b"sealed-2")]


async def test_check_writable(stores: Stores) -> None:
    """An open, healthy store is writable."""
    await stores.keys.check_writable()


# --- SessionStore ---------------------------------------------------------------------------


async def test_session_round_trip(stores: Stores) -> None:
    """A created session reads back as written; an unknown one is None."""
    await stores.sessions.create_session(_session())
    assert await stores.sessions.get_session("s1") == _session()
    assert await stores.sessions.get_session("nope") is None


async def test_duplicate_session_is_a_backend_error(stores: Stores) -> None:
    """A session id is never reused: a second insert fails (ids are random, so it's a fault)."""
    await stores.sessions.create_session(_session())
    with pytest.raises(BackendError):
        await stores.sessions.create_session(_session())


async def test_consume_once(stores: Stores) -> None:
    """The nonce is consumed once; the next consume is a replay; an unknown id is missing."""
    await stores.sessions.create_session(_session())
    got = await stores.sessions.consume_session("s1")
    assert got.used and got.nonce == "nonce-s1"
    with pytest.raises(NonceReplayed):
        await stores.sessions.consume_session("s1")
    with pytest.raises(SessionMissing):
        await stores.sessions.consume_session("nope")
    assert await stores.sessions.get_session("s1") == replace(_session(), used=True)


async def test_session_token(stores: Stores) -> None:
    """The token set on one replica is read on another."""
    other = await stores.replica()
    await stores.sessions.create_session(_session())
    await stores.sessions.set_session_token("s1", "tok")
    got = await other.sessions.get_session("s1")
    assert got is not None and got.token == "tok"


async def test_purge_sessions(stores: Stores) -> None:
    """purge removes sessions that expired before the cut-off and counts them."""
    for sid, exp in (("a", 10.0), ("b", 20.0), ("c", 30.0)):
        await stores.sessions.create_session(_session(sid, expires_at=exp))
    assert await stores.sessions.purge_sessions(20.0) == 1
    assert await stores.sessions.purge_sessions(31.0) == 2
    assert await stores.sessions.get_session("c") is None


# --- across replicas ------------------------------------------------------------------------


async def test_nonce_consumed_once_across_three_replicas(stores: Stores) -> None:
    """50 concurrent consumes of one nonce through 3 replicas: exactly one succeeds."""
    replicas = [stores.opened[0], await stores.replica(), await stores.replica()]
    await stores.sessions.create_session(_session())
    results = await asyncio.gather(
        *(replicas[i % 3].sessions.consume_session("s1") for i in range(50)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, Session)]
    assert len(wins) == 1 and wins[0].used
    assert all(isinstance(r, NonceReplayed) for r in results if r is not wins[0])


async def test_racing_rotations_land_once(stores: Stores) -> None:
    """Two replicas rotating with the same expected_rotated_at: exactly one lands."""
    other = await stores.replica()
    await _create(stores.keys)
    results = await asyncio.gather(
        _rotate(stores.keys, 2, expected_rotated_at=T0),
        _rotate(other.keys, 2, at=T0 + timedelta(minutes=1), expected_rotated_at=T0),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "NoneType"]
    assert [v.version for v in await other.keys.versions(KEY)] == [1, 2]


# --- PostgreSQL only ------------------------------------------------------------------------


@dataclass
class PG:
    """The module's server, a fresh database on it, and a way to open replicas of it."""

    server: PostgresServer
    dsn: str
    opened: list[PostgresDB] = field(default_factory=list)

    @property
    def database(self) -> str:
        return self.dsn.rsplit("/", 1)[1]

    def psql(self, sql: str) -> str:
        return self.server.psql(sql, self.database).strip()

    async def open(
        self, *, connect: float = 2.0, command: float = 5.0, acquire: float = 3.0
    ) -> PostgresDB:
        db = PostgresDB(
            self.dsn, connect_timeout=connect, command_timeout=command, acquire_timeout=acquire
        )
        await db.open()
        self.opened.append(db)
        return db


@pytest.fixture
async def pg(postgres: PostgresServer, pg_dsn: str) -> AsyncIterator[PG]:  # noqa: F811
    found = PG(postgres, pg_dsn)
    yield found
    for db in found.opened:
        await db.close()


async def test_lease_one_holder_and_hand_over(pg: PG) -> None:
    """Of 3 contenders one holds the lease; after it expires another one takes it."""
    leases = [PostgresLease(await pg.open()) for _ in range(3)]
    names = ["r0", "r1", "r2"]
    got = await asyncio.gather(*(lease.acquire(n, 1.0) for lease, n in zip(leases, names)))
    assert got.count(True) == 1
    first = names[got.index(True)]
    assert await leases[0].holder() == first
    assert [await lease.renew(n, 1.0) for lease, n in zip(leases, names)].count(True) == 1
    await asyncio.sleep(1.2)
    assert await leases[0].holder() is None
    others = [n for n in names if n != first]
    got = await asyncio.gather(*(leases[1].acquire(n, 30) for n in others))
    assert got.count(True) == 1
    second = others[got.index(True)]
    assert not await leases[2].renew(first, 30)
    assert not await leases[2].acquire(first, 30)
    await leases[2].release(first)  # not the holder: a no-op
    assert await leases[0].holder() == second
    await leases[1].release(second)
    assert await leases[2].acquire(first, 30)


async def test_lease_rejects_bad_arguments(pg: PG) -> None:
    """An empty holder or a non-positive ttl is a configuration error."""
    lease = PostgresLease(await pg.open())
    for holder, ttl in (("", 1.0), ("a", 0.0), ("a", -1.0), ("a", float("nan"))):
        with pytest.raises(ConfigError):
            await lease.acquire(holder, ttl)


async def test_outage_then_recovery(pg: PG) -> None:
    """PostgreSQL stopped: BackendError (no DSN, no trace); restarted: the same store works."""
    db, server = await pg.open(), pg.server
    keys, sessions = PostgresKeyStore(db), PostgresSessionStore(db)
    lease = PostgresLease(db)
    try:
        await _create(keys)
        await sessions.create_session(_session())
        server.stop()
        for call in (
            keys.info(KEY),
            keys.get_version(KEY, None),
            _rotate(keys, 2),
            sessions.consume_session("s1"),
            keys.check_writable(),
            lease.acquire("r0", 5),
        ):
            with pytest.raises(BackendError) as caught:
                await call
            assert caught.value.status == 503 and caught.value.retryable
            assert caught.value.__cause__ is None and caught.value.__suppress_context__
            assert pg.dsn not in caught.value.message and "postgres@" not in caught.value.message
        server.start()
        assert (await keys.get_version(KEY, None)).sealed == b"sealed-1"
        await _rotate(keys, 2)
        assert (await sessions.consume_session("s1")).used
        assert await lease.acquire("r0", 5)
    finally:
        server.start()


async def test_wedged_server_times_out_then_recovers(pg: PG) -> None:
    """A frozen server: BackendError after the command timeout, not a hang; thawed: works."""
    db = await pg.open(connect=1.0, command=1.0, acquire=1.0)
    keys = PostgresKeyStore(db)
    await _create(keys)
    pg.server.pause()
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(BackendError, match="TimeoutError"):
            await keys.info(KEY)
        assert asyncio.get_running_loop().time() - started < 3.0
    finally:
        pg.server.resume()
    assert (await keys.info(KEY)).current_version == 1


async def test_open_with_server_down_is_backend_error(pg: PG) -> None:
    """Opening a store on an unreachable server fails fast with BackendError."""
    server = pg.server
    server.stop()
    try:
        db = PostgresDB(pg.dsn, connect_timeout=2.0)
        with pytest.raises(BackendError, match="ConnectionRefusedError"):
            await db.open()
        with pytest.raises(BackendError, match="not open"):
            await PostgresKeyStore(db).info(KEY)
    finally:
        server.start()


async def test_schema_is_shared_and_versioned(pg: PG) -> None:
    """Replicas opening at once share one schema; a newer schema version is refused."""
    await asyncio.gather(*(pg.open() for _ in range(3)))
    assert pg.psql("SELECT component, version FROM schema_versions") == "store|1"
    pg.psql("UPDATE schema_versions SET version = 99")
    with pytest.raises(BackendError, match="version 99") as caught:
        await pg.open()
    assert not caught.value.retryable


async def test_destroy_vacuums_the_old_row(pg: PG) -> None:
    """After destroy, no tuple on the table's pages still holds the erased material."""
    keys = PostgresKeyStore(await pg.open())
    pg.psql("CREATE EXTENSION pageinspect")
    marker = "c0ffee" * 8
    await _create(keys, sealed=bytes.fromhex(marker))
    await _rotate(keys, 2)
    tuples = (
        "SELECT count(*) FROM heap_page_items(get_raw_page('resource_versions', 0))"
        f" WHERE encode(t_data, 'hex') LIKE '%{marker}%'"
    )
    assert pg.psql(tuples) == "1"
    await keys.destroy_version(KEY, 1)
    assert pg.psql(tuples) == "0"
