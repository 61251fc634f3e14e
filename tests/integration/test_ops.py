"""Health, readiness and metrics."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.kbs_helpers import attest


async def test_healthz_and_readyz(client: TestClient[Any, Any]) -> None:
    """Liveness is trivial; readiness checks the store and the audit log."""
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {"store": "ok", "audit": "ok"}


async def test_metrics(client: TestClient[Any, Any]) -> None:
    """Prometheus metrics count requests, attestations and latency."""
    await attest(client)
    text = await (await client.get("/metrics")).text()
    assert 'broker_attestations_total{outcome="ok",tee="sample"} 1.0' in text
    assert "broker_http_requests_total" in text
    assert "broker_http_request_seconds_bucket" in text
