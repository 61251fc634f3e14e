"""MemorySessionStore: nothing kept past the process (shared behaviour: test_session_stores)."""

from __future__ import annotations

import pytest

from broker.adapters.memory_sessions import MemorySessionStore
from broker.errors import SessionMissing
from broker.ports import Session


def _session(sid: str, *, created: float = 1000.0, expires: float = 1300.0) -> Session:
    return Session(sid, "sample", "nonce-" + sid, created, expires, used=False, token=None)


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
