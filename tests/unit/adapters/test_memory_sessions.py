"""MemorySessionStore: atomic single use, a bounded size, nothing kept past the process."""

from __future__ import annotations

import asyncio

import pytest

from broker.adapters.memory_sessions import MemorySessionStore
from broker.errors import BackendError, NonceReplayed, SessionMissing
from broker.ports import Session


def _session(sid: str, *, created: float = 1000.0, expires: float = 1300.0) -> Session:
    return Session(sid, "sample", "nonce-" + sid, created, expires, used=False, token=None)


async def test_racing_consumes_of_one_nonce_let_exactly_one_through() -> None:
    """200 concurrent consumes of one session: one wins, every other is a replay."""
    store = MemorySessionStore()
    await store.create_session(_session("s"))
    results = await asyncio.gather(
        *(store.consume_session("s") for _ in range(200)), return_exceptions=True
    )
    wins = [r for r in results if isinstance(r, Session)]
    assert len(wins) == 1 and wins[0].used
    assert sum(isinstance(r, NonceReplayed) for r in results) == 199


async def test_a_full_store_makes_room_from_expired_sessions_only() -> None:
    """At the bound, expired sessions are dropped for a new one; live ones never are."""
    store = MemorySessionStore(max_sessions=2)
    await store.create_session(_session("old", created=0.0, expires=100.0))
    await store.create_session(_session("live", created=50.0, expires=400.0))
    await store.create_session(_session("new", created=200.0, expires=500.0))
    assert await store.get_session("old") is None
    assert len(store) == 2
    with pytest.raises(BackendError, match="too many open sessions"):
        await store.create_session(_session("more", created=300.0, expires=600.0))
    assert await store.get_session("live") is not None


async def test_token_on_an_unknown_session_is_ignored_and_consume_is_missing() -> None:
    """A session purged between attest steps: the token is dropped, consume says missing."""
    store = MemorySessionStore()
    await store.set_session_token("gone", "tok")
    assert await store.get_session("gone") is None
    with pytest.raises(SessionMissing):
        await store.consume_session("gone")


async def test_a_new_store_knows_no_session_of_an_earlier_one() -> None:
    """A restart ends every session: its nonces are unknown, never usable again."""
    before = MemorySessionStore()
    await before.create_session(_session("s"))
    after = MemorySessionStore()
    with pytest.raises(SessionMissing):
        await after.consume_session("s")


def test_the_bound_must_be_positive() -> None:
    """max_sessions below 1 is a programming error."""
    with pytest.raises(ValueError, match="at least 1"):
        MemorySessionStore(max_sessions=0)
