"""Scheduled rotation: rotate every data key past its crypto-period.

Safe across restarts and replicas: each rotation is a compare-and-set on the
resource's last rotation time, so for one period exactly one rotation lands
however many schedulers race (the losers get Conflict and move on).
"""

from __future__ import annotations

import asyncio
import os
import socket

import structlog

from broker.errors import BrokerError, Conflict
from broker.ports import Clock, Lease
from broker.service.context import RequestContext
from broker.service.keys import KeyLifecycle

log = structlog.get_logger(__name__)

SCHEDULER = RequestContext(request_id="scheduler", client="local", actor="scheduler")


class RotationScheduler:
    def __init__(
        self, keys: KeyLifecycle, clock: Clock, *, interval: float, lease: Lease | None = None
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._interval = interval
        # With replicas, only the lease holder scans (the compare-and-set still guards).
        self._lease = lease
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"

    @property
    def lease(self) -> Lease | None:
        return self._lease

    async def run_once(self) -> list[str]:
        """Rotates what is due now; returns the resources this call rotated."""
        rotated: list[str] = []
        for info in await self._keys.due():
            try:
                await self._keys.rotate(
                    info.id, SCHEDULER, expected_rotated_at=info.last_rotated_at
                )
            except Conflict:
                continue  # another scheduler (or an operator) rotated it first
            except BrokerError as exc:
                log.warning("key.rotation_failed", resource=info.id, code=exc.code)
                continue
            rotated.append(info.id)
        return rotated

    async def run_forever(self) -> None:
        while True:
            try:
                if self._lease is None or await self._lease.acquire(
                    self._holder, ttl=self._interval * 3
                ):
                    await self.run_once()
            except BrokerError as exc:
                log.warning("key.rotation_pass_failed", code=exc.code)
            await asyncio.sleep(self._interval)
