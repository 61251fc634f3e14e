"""Scheduled rotation survives restarts and never rotates twice for one period."""

from __future__ import annotations

import asyncio

from broker.config import Settings
from broker.service.context import RequestContext
from broker.service.rotation import RotationScheduler
from broker.wiring import open_services
from tests.fakes import FakeClock

ADMIN = RequestContext(request_id="t", client="test", actor="token:admin")
KEY = "default/key/rot"


async def test_restart_mid_period(settings: Settings, clock: FakeClock) -> None:
    """A restart in the middle of a period neither rotates early nor twice."""
    first = await open_services(settings, clock=clock)
    await first.keys.create_key(KEY, ADMIN, rotate_every="1d")
    clock.advance(12 * 3600)
    assert await first.rotation.run_once() == []
    await first.close()

    clock.advance(6 * 3600)
    second = await open_services(settings, clock=clock)
    assert await second.rotation.run_once() == []
    clock.advance(6 * 3600)  # one full day since creation
    assert await second.rotation.run_once() == [KEY]
    await second.close()

    third = await open_services(settings, clock=clock)
    assert await third.rotation.run_once() == []
    assert (await third.store.info(KEY)).current_version == 2
    await third.close()


async def test_racing_schedulers_rotate_once(settings: Settings, clock: FakeClock) -> None:
    """Two schedulers racing on one store rotate a due key exactly once.

    (Replicas on separate connections race the same compare-and-set; that case is
    pinned on both SQLite and PostgreSQL in test_pg_stores.)
    """
    a = await open_services(settings, clock=clock)
    second = RotationScheduler(a.keys, clock, interval=60)
    try:
        await a.keys.create_key(KEY, ADMIN, rotate_every="1h")
        clock.advance(3600)
        results = await asyncio.gather(a.rotation.run_once(), second.run_once())
        assert sorted(r for result in results for r in result) == [KEY]
        assert (await a.store.info(KEY)).current_version == 2
    finally:
        await a.close()
