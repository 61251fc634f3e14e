"""SQLiteLease: PostgresLease's semantics for the workers of one host, on a moved clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.adapters.sqlite_lease import SQLiteLease
from broker.adapters.sqlite_sessions import reset
from broker.errors import BackendError, ConfigError


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def leases(tmp_path: Path, clock: Clock) -> Iterator[list[SQLiteLease]]:
    path = tmp_path / "sessions.db"
    reset(path)
    opened = [SQLiteLease(path, clock=clock) for _ in range(3)]
    for lease in opened:
        lease.open()
    yield opened
    for lease in opened:
        lease.close()


async def test_one_holder_at_a_time_across_instances(leases: list[SQLiteLease]) -> None:
    """Of 3 contenders on 3 instances exactly one gets the lease; renewing is its alone."""
    names = ["w0", "w1", "w2"]
    got = await asyncio.gather(*(lease.acquire(n, 10) for lease, n in zip(leases, names)))
    assert got.count(True) == 1
    first = names[got.index(True)]
    assert [await lease.holder() for lease in leases] == [first] * 3
    assert [await lease.renew(n, 10) for lease, n in zip(leases, names)].count(True) == 1
    assert await leases[0].acquire(first, 10)  # the holder extends its own lease


async def test_expiry_hands_the_lease_over(leases: list[SQLiteLease], clock: Clock) -> None:
    """A holder that stops renewing loses the lease after ttl; another takes it."""
    assert await leases[0].acquire("w0", 30)
    clock.t += 29.9
    assert not await leases[1].acquire("w1", 30)
    assert await leases[0].renew("w0", 30)
    clock.t += 30
    assert await leases[2].holder() is None
    assert not await leases[0].renew("w0", 30)  # lost: stop the work
    assert await leases[1].acquire("w1", 30)
    assert await leases[0].holder() == "w1"
    assert not await leases[2].acquire("w0", 30)


async def test_renew_by_a_non_holder_fails(leases: list[SQLiteLease]) -> None:
    """Only the holder renews; a free lease is not renewed into existence."""
    assert not await leases[0].renew("w0", 30)
    assert await leases[0].holder() is None
    assert await leases[1].acquire("w1", 30)
    assert not await leases[0].renew("w0", 30)
    assert await leases[2].holder() == "w1"


async def test_release_by_the_holder_frees_it_and_by_others_is_a_no_op(
    leases: list[SQLiteLease],
) -> None:
    """release gives the lease up at once, but only for its holder."""
    assert await leases[0].acquire("w0", 30)
    await leases[1].release("w1")
    assert await leases[2].holder() == "w0"
    await leases[0].release("w0")
    assert await leases[2].holder() is None
    assert await leases[1].acquire("w1", 30)


async def test_names_are_separate_leases(tmp_path: Path, clock: Clock) -> None:
    """Two lease names on one file have a holder each."""
    path = tmp_path / "sessions.db"
    reset(path)
    a, b = SQLiteLease(path, "a", clock=clock), SQLiteLease(path, "b", clock=clock)
    a.open()
    b.open()
    try:
        assert await a.acquire("w0", 5) and await b.acquire("w1", 5)
        assert (await a.holder(), await b.holder()) == ("w0", "w1")
    finally:
        a.close()
        b.close()


async def test_rejects_bad_arguments(leases: list[SQLiteLease]) -> None:
    """An empty holder or a non-positive ttl is a ConfigError, as with PostgresLease."""
    for holder, ttl in (("", 5.0), ("w0", 0.0), ("w0", -1.0), ("w0", float("nan"))):
        for call in (leases[0].acquire, leases[0].renew):
            with pytest.raises(ConfigError):
                await call(holder, ttl)


async def test_a_closed_or_unreset_lease_is_a_backend_error(tmp_path: Path) -> None:
    """No file from reset, or use before open: BackendError, never a silent False."""
    with pytest.raises(BackendError, match="cannot open"):
        SQLiteLease(tmp_path / "none.db").open()
    with pytest.raises(BackendError, match="not open"):
        await SQLiteLease(tmp_path / "none.db").acquire("w0", 5)
