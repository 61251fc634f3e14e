"""The session stores of one host behave alike: in memory (one process) and in the
sessions file its worker processes share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker.adapters.memory_sessions import MemorySessionStore
from broker.adapters.sqlite_sessions import SQLiteSessionStore, reset
from broker.errors import BackendError, NonceReplayed, SessionMissing
from broker.ports import Session

Store = MemorySessionStore | SQLiteSessionStore
MakeStore = Callable[[int], Store]
NONCE = "nonce-"


def _session(sid: str, *, created: float = 1000.0, expires: float = 1300.0) -> Session:
    return Session(sid, "sample", NONCE + sid, created, expires, used=False, token=None)


@pytest.fixture(params=["memory", "sqlite"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """A factory of stores holding at most ``max_sessions``."""
    opened: list[SQLiteSessionStore] = []
    path = tmp_path / "sessions.db"
    reset(path)

    def build(max_sessions: int = 100_000) -> Store:
        if request.param == "memory":
            return MemorySessionStore(max_sessions=max_sessions)
        store = SQLiteSessionStore(path, max_sessions=max_sessions)
        store.open()
        opened.append(store)
        return store

    yield build
    for store in opened:
        store.close()


async def test_a_session_reads_back_equal_and_its_token_is_set_once_attested(
    make: MakeStore,
) -> None:
    """get returns what was stored, token None until set_session_token."""
    store = make(100_000)
    session = Session("s", "snp", "n0nce", 1000.25, 1300.5, used=False, token=None)
    await store.create_session(session)
    assert await store.get_session("s") == session
    consumed = await store.consume_session("s")
    assert consumed == Session("s", "snp", "n0nce", 1000.25, 1300.5, used=True, token=None)
    await store.set_session_token("s", "token-value")
    assert await store.get_session("s") == Session(
        "s", "snp", "n0nce", 1000.25, 1300.5, used=True, token="token-value"
    )
    assert await store.get_session("nope") is None


async def test_racing_consumes_of_one_nonce_let_exactly_one_through(make: MakeStore) -> None:
    """200 concurrent consumes of one session: one wins, every other is a replay."""
    store = make(100_000)
    await store.create_session(_session("s"))
    results = await asyncio.gather(
        *(store.consume_session("s") for _ in range(200)), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, Session)]
    assert len(wins) == 1 and wins[0].used
    assert sum(isinstance(r, NonceReplayed) for r in results) == 199


async def test_a_full_store_makes_room_from_expired_sessions_only(make: MakeStore) -> None:
    """At the bound, expired sessions are dropped for a new one; live ones never are."""
    store = make(2)
    await store.create_session(_session("old", created=0.0, expires=100.0))
    await store.create_session(_session("live", created=50.0, expires=400.0))
    await store.create_session(_session("new", created=200.0, expires=500.0))
    assert await store.get_session("old") is None
    assert len(store) == 2
    with pytest.raises(BackendError, match="too many open sessions"):
        await store.create_session(_session("more", created=300.0, expires=600.0))
    assert await store.get_session("live") is not None
    assert await store.get_session("more") is None


async def test_a_reused_id_is_a_backend_error_that_keeps_the_first(make: MakeStore) -> None:
    """Ids are random: a clash is refused and the stored session is untouched."""
    store = make(100_000)
    await store.create_session(_session("s"))
    with pytest.raises(BackendError, match="the session id exists") as err:
        await store.create_session(_session("s", created=5.0))
    assert NONCE not in str(err.value)
    assert await store.get_session("s") == _session("s")
    assert len(store) == 1


async def test_token_on_an_unknown_session_is_ignored_and_consume_is_missing(
    make: MakeStore,
) -> None:
    """A session purged between attest steps: the token is dropped, consume says missing."""
    store = make(100_000)
    await store.set_session_token("gone", "tok")
    assert await store.get_session("gone") is None
    with pytest.raises(SessionMissing):
        await store.consume_session("gone")


async def test_purge_drops_only_sessions_expired_before(make: MakeStore) -> None:
    """purge_sessions counts what it dropped and keeps the rest."""
    store = make(100_000)
    await store.create_session(_session("a", expires=100.0))
    await store.create_session(_session("b", expires=200.0))
    await store.create_session(_session("c", expires=300.0))
    assert await store.purge_sessions(200.0) == 1
    assert await store.purge_sessions(200.0) == 0
    assert len(store) == 2
    assert await store.get_session("b") is not None
