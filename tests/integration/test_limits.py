"""Rate limits, the verification queue, and a flood that must not starve health or audit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from broker.api.app import create_app
from broker.config import LimitsSettings, Settings
from broker.keys.unwrap import ClientKeyPair
from broker.wiring import Services
from tests.integration.kbs_helpers import create_key, error_of, sample_attestation

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
AUTH_BODY = {"version": "0.4.0", "tee": "sample", "extra-params": ""}


async def _limited(
    aiohttp_client: ClientFactory, settings: Settings, services: Services, **limits: Any
) -> TestClient[Any, Any]:
    app = create_app(replace(settings, limits=LimitsSettings(**limits)), services=services)
    return await aiohttp_client(app)


async def test_auth_over_the_limit_is_429_with_retry_after(
    aiohttp_client: ClientFactory, settings: Settings, services: Services
) -> None:
    """Past the burst, auth answers 429 RateLimited with Retry-After; health stays exempt."""
    client = await _limited(
        aiohttp_client, settings, services, auth_per_client_per_minute=6, burst=3
    )
    statuses = [(await client.post("/kbs/v0/auth", json=AUTH_BODY)).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    resp = await client.post("/kbs/v0/auth", json=AUTH_BODY)
    status, code, body = await error_of(resp)
    assert (status, code) == (429, "RateLimited")
    assert 1 <= int(resp.headers["Retry-After"]) <= 10
    assert resp.headers["X-Request-Id"] == body["request_id"]
    # Attest has its own per-client bucket; health, readiness and metrics have none.
    assert (await client.post("/kbs/v0/attest", json={})).status != 429
    for _ in range(20):
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
    assert (await client.get("/metrics")).status == 200


async def test_global_limit_spans_routes(
    aiohttp_client: ClientFactory, settings: Settings, services: Services
) -> None:
    """The global bucket is shared by auth and attest."""
    client = await _limited(aiohttp_client, settings, services, global_per_second=2, burst=2)
    assert (await client.post("/kbs/v0/auth", json=AUTH_BODY)).status == 200
    assert (await client.post("/kbs/v0/attest", json={})).status != 429
    resp = await client.post("/kbs/v0/attest", json={})
    assert resp.status == 429 and "Retry-After" in resp.headers


async def test_busy_verification_is_429_and_keeps_the_nonce(
    aiohttp_client: ClientFactory,
    settings: Settings,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every verification slot taken, attest is refused 429 before the nonce is used."""
    client = await _limited(
        aiohttp_client,
        settings,
        services,
        verify_concurrency=1,
        queue_seconds=0.05,
        burst=100,
    )
    real = services.attest.attest
    gate = asyncio.Event()
    in_flight = 0
    peak = 0

    async def slow(*args: Any, **kwargs: Any) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await gate.wait()
            return await real(*args, **kwargs)
        finally:
            in_flight -= 1

    monkeypatch.setattr(services.attest, "attest", slow)

    async def attempt() -> tuple[aiohttp.ClientResponse, str, dict[str, Any]]:
        resp = await client.post("/kbs/v0/auth", json=AUTH_BODY)
        nonce = (await resp.json())["nonce"]
        cookie = f"kbs-session-id={resp.cookies['kbs-session-id'].value}"
        body = sample_attestation(nonce, ClientKeyPair.generate("p256"))
        resp = await client.post("/kbs/v0/attest", json=body, headers={"Cookie": cookie})
        return resp, cookie, body

    first = asyncio.create_task(attempt())
    await asyncio.sleep(0.2)
    refused, cookie, body = await attempt()
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    assert "busy" in (await refused.json())["detail"]
    gate.set()
    assert (await first)[0].status == 200
    retry = await client.post("/kbs/v0/attest", json=body, headers={"Cookie": cookie})
    assert retry.status == 200, await retry.text()
    assert peak == 1


async def test_flood_does_not_starve_health_or_audit(
    aiohttp_client: ClientFactory,
    settings: Settings,
    services: Services,
    admin_headers: dict[str, str],
) -> None:
    """Under hundreds of concurrent attests, probes answer fast and every release is audited."""
    client = await _limited(
        aiohttp_client,
        settings,
        services,
        auth_per_client_per_minute=600,
        attest_per_client_per_minute=600,
        global_per_second=400,
        burst=200,
        verify_concurrency=4,
        auth_concurrency=4,
        queue_seconds=30.0,
    )
    await create_key(client, admin_headers, "default/key/flood")
    base = str(client.make_url("")).rstrip("/")
    outcomes: dict[int, int] = {}
    released: list[str] = []
    probe_latency: list[float] = []
    probe_status: set[int] = set()

    async def flow(http: aiohttp.ClientSession, *, honest: bool) -> None:
        async with http.post(base + "/kbs/v0/auth", json=AUTH_BODY) as resp:
            outcomes[resp.status] = outcomes.get(resp.status, 0) + 1
            if resp.status != 200:
                return
            nonce = (await resp.json())["nonce"]
            cookie = f"kbs-session-id={resp.cookies['kbs-session-id'].value}"
        keypair = ClientKeyPair.generate("p256")
        body = sample_attestation(nonce, keypair)
        if not honest:
            body["tee-evidence"]["primary_evidence"]["report_data"] = "AAAA"
        async with http.post(
            base + "/kbs/v0/attest", json=body, headers={"Cookie": cookie}
        ) as resp:
            outcomes[resp.status] = outcomes.get(resp.status, 0) + 1
            if resp.status != 200:
                return
            token = (await resp.json())["token"]
        async with http.get(
            base + "/kbs/v0/resource/default/key/flood",
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            released.append(resp.headers["X-Request-Id"])

    async def probe(stop: asyncio.Event) -> None:
        # Its own connection pool: the flood's queue must not be what is measured.
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                for path in ("/healthz", "/readyz"):
                    started = time.perf_counter()
                    async with http.get(base + path) as resp:
                        await resp.read()
                        probe_status.add(resp.status)
                    probe_latency.append(time.perf_counter() - started)
                await asyncio.sleep(0.01)

    stop = asyncio.Event()
    prober = asyncio.create_task(probe(stop))
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        await asyncio.gather(
            *(flow(http, honest=i % 5 == 0) for i in range(400)), return_exceptions=False
        )
    stop.set()
    await prober

    assert probe_status == {200}
    assert len(probe_latency) >= 10
    ordered = sorted(probe_latency)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    assert p99 < 2.5, f"p99 probe latency {p99:.3f}s"
    # The flood went past the global bucket, so some requests were refused ...
    assert outcomes.get(429, 0) > 0 and outcomes.get(200, 0) > 0
    # ... and every key that left the broker has its durable audit record.
    assert released
    audited = {
        r.request_id async for r in services.audit.iter_records() if r.event == "resource.released"
    }
    assert set(released) <= audited
