"""SQLiteSessionStore: one store for the workers of one host (the behaviour it shares
with MemorySessionStore: test_session_stores)."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from threading import Barrier

import pytest

from broker.adapters.sqlite_sessions import SQLiteSessionStore, reset
from broker.errors import BackendError, NonceReplayed, SessionMissing
from broker.ports import Session

NONCE = "nonce-"
TOKEN = "token-secret-value"


def _session(sid: str, *, created: float = 1000.0, expires: float = 1300.0) -> Session:
    return Session(sid, "sample", NONCE + sid, created, expires, used=False, token=None)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    p = tmp_path / "sessions.db"
    reset(p)
    return p


def _opened(path: Path) -> Iterator[SQLiteSessionStore]:
    s = SQLiteSessionStore(path)
    s.open()
    yield s
    s.close()


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteSessionStore]:
    yield from _opened(path)


@pytest.fixture
def other(path: Path) -> Iterator[SQLiteSessionStore]:
    """A second instance on the same file, as another worker process holds."""
    yield from _opened(path)


async def test_racing_consumes_over_two_instances_let_exactly_one_through(
    store: SQLiteSessionStore, other: SQLiteSessionStore
) -> None:
    """200 concurrent consumes over two instances: one wins, every other is a replay."""
    await store.create_session(_session("s"))
    results = await asyncio.gather(
        *((store, other)[i % 2].consume_session("s") for i in range(200)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, Session)]
    assert len(wins) == 1 and wins[0].used
    assert sum(isinstance(r, NonceReplayed) for r in results) == 199


async def test_auth_on_one_worker_and_attest_on_another(
    store: SQLiteSessionStore, other: SQLiteSessionStore
) -> None:
    """A session created through one instance is consumed and tokened through the other."""
    await store.create_session(_session("s"))
    assert await other.get_session("s") == _session("s")
    assert (await other.consume_session("s")).used
    with pytest.raises(NonceReplayed):
        await store.consume_session("s")
    await other.set_session_token("s", TOKEN)
    got = await store.get_session("s")
    assert got is not None and got.token == TOKEN
    assert len(store) == len(other) == 1


async def test_reset_ends_every_session_of_an_earlier_run(path: Path) -> None:
    """A restart resets the file: earlier nonces are unknown, never usable again."""
    before = SQLiteSessionStore(path)
    before.open()
    await before.create_session(_session("s"))
    before.close()
    reset(path)
    after = SQLiteSessionStore(path)
    after.open()
    try:
        with pytest.raises(SessionMissing):
            await after.consume_session("s")
        assert len(after) == 0
    finally:
        after.close()


def test_open_refuses_a_file_that_was_never_reset(tmp_path: Path) -> None:
    """A worker started without the supervisor's reset fails, and creates no file."""
    missing = tmp_path / "sessions.db"
    with pytest.raises(BackendError, match="cannot open the session store"):
        SQLiteSessionStore(missing).open()
    assert not missing.exists()
    sqlite3.connect(missing).close()  # an empty, foreign database
    with pytest.raises(BackendError, match="must reset it"):
        SQLiteSessionStore(missing).open()


async def test_errors_name_the_operation_never_the_nonce_or_token(
    store: SQLiteSessionStore, path: Path
) -> None:
    """A failing SQLite, a closed store: the messages hold no nonce or token text."""
    await store.create_session(_session("s"))
    side = sqlite3.connect(path)
    side.execute("DROP TABLE sessions")
    side.commit()
    side.close()
    calls = [
        store.create_session(_session("t")),
        store.get_session("s"),
        store.consume_session("s"),
        store.set_session_token("s", TOKEN),
        store.purge_sessions(2000.0),
    ]
    for call in calls:
        with pytest.raises(BackendError, match=r"session store (read|write) failed") as err:
            await call
        assert NONCE not in str(err.value) and TOKEN not in str(err.value)
    store.close()
    with pytest.raises(BackendError, match="not open") as err:
        await store.set_session_token("s", TOKEN)
    assert TOKEN not in str(err.value)


def test_the_bounds_must_be_sane(path: Path) -> None:
    """max_sessions below 1 or a negative busy timeout is a programming error."""
    with pytest.raises(ValueError, match="at least 1"):
        SQLiteSessionStore(path, max_sessions=0)
    with pytest.raises(ValueError, match="negative"):
        SQLiteSessionStore(path, busy_timeout_ms=-1)


def _consume_all(path: Path, ids: list[str], together: Barrier) -> tuple[list[str], int]:
    """One worker process: tries every nonce, returns what it won and how many replays."""

    async def run() -> tuple[list[str], int]:
        store = SQLiteSessionStore(path)
        store.open()
        won: list[str] = []
        replays = 0
        try:
            for sid in ids:
                # Both processes go for each nonce at the same moment: without
                # the rendezvous the first one off the mark would win them all.
                together.wait()
                try:
                    won.append((await store.consume_session(sid)).id)
                except NonceReplayed:
                    replays += 1
        finally:
            store.close()
        return won, replays

    return asyncio.run(run())


async def test_two_processes_consume_each_of_200_nonces_exactly_once(
    store: SQLiteSessionStore, path: Path
) -> None:
    """Two real processes race on the same 200 nonces: each is won by exactly one."""
    ids = [f"s{i:03}" for i in range(200)]
    for sid in ids:
        await store.create_session(_session(sid))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        together = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            runs = [pool.apply_async(_consume_all, (path, ids, together)) for _ in range(2)]
            results = await asyncio.to_thread(lambda: [r.get(timeout=60) for r in runs])
    won = [sid for w, _ in results for sid in w]
    assert sorted(won) == ids
    assert sum(replays for _, replays in results) == 200
    # Each won some: the two really raced (and neither just ran after the other).
    assert all(w for w, _ in results)
    assert all(s is not None and s.used for s in [await store.get_session(i) for i in ids])
