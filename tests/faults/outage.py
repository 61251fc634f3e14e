"""A bounded KBS load through the aiohttp test client, phase-tagged around a backend outage."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp.test_utils import TestClient

from broker.keys.unwrap import ClientKeyPair
from tests.integration.kbs_helpers import sample_attestation

Client = TestClient[Any, Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    phase: str
    step: str  # auth | attest | resource
    status: int
    request_id: str


@dataclass
class PhasedLoad:
    """Workers run auth, attest, resource in a loop; each outcome is tagged with the phase
    its flow started in. ``hold()`` drains in-flight flows, so no flow spans two phases."""

    client: Client
    resource: str
    phase: str = "up"
    outcomes: list[Outcome] = field(default_factory=list)
    _gate: asyncio.Event = field(default_factory=asyncio.Event)
    # Notified when a flow ends or an outcome is added.
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _inflight: int = 0
    _stop: bool = False

    def count(self, phase: str, step: str, status: int) -> int:
        return sum(1 for o in self.outcomes if (o.phase, o.step, o.status) == (phase, step, status))

    async def wait_for(self, phase: str, step: str, status: int, n: int) -> None:
        """Until ``n`` outcomes match (the test's own timeout bounds the wait)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.count(phase, step, status) >= n)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """No new flow starts inside the block, and none is running when it is entered."""
        self._gate.clear()
        async with self._changed:
            await self._changed.wait_for(lambda: self._inflight == 0)
        try:
            yield
        finally:
            self._gate.set()

    async def _step(self, phase: str, step: str, method: str, path: str, **kw: Any) -> Any:
        resp = await self.client.request(method, path, **kw)
        self.outcomes.append(Outcome(phase, step, resp.status, resp.headers["X-Request-Id"]))
        async with self._changed:
            self._changed.notify_all()
        return resp

    async def _flow(self, phase: str) -> None:
        resp = await self._step(
            phase, "auth", "POST", "/kbs/v0/auth",
            json={"version": "0.4.0", "tee": "sample", "extra-params": ""},
        )  # fmt: skip
        if resp.status != 200:
            return
        nonce = (await resp.json())["nonce"]
        attestation = sample_attestation(nonce, ClientKeyPair.generate("p256"))
        resp = await self._step(phase, "attest", "POST", "/kbs/v0/attest", json=attestation)
        if resp.status != 200:
            return
        token = (await resp.json())["token"]
        await self._step(
            phase, "resource", "GET", f"/kbs/v0/resource/{self.resource}",
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip

    async def _worker(self) -> None:
        while True:
            await self._gate.wait()
            if self._stopping():
                return
            self._inflight += 1
            try:
                await self._flow(self.phase)
            finally:
                async with self._changed:
                    self._inflight -= 1
                    self._changed.notify_all()
            await asyncio.sleep(0.01)

    def _stopping(self) -> bool:
        return self._stop

    @contextlib.asynccontextmanager
    async def running(self, workers: int = 3) -> AsyncIterator[PhasedLoad]:
        self._gate.set()
        tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]
        try:
            yield self
        finally:
            self._stop = True
            self._gate.set()
            await asyncio.gather(*tasks)
