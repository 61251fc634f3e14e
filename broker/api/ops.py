"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

import os

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from broker.api.keys import METRICS, SERVICES
from broker.errors import BrokerError

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    checks: dict[str, str] = {}
    probes = [("store", services.store.check_writable), ("audit", services.audit.check_writable)]
    if services.vault is not None:
        probes.append(("vault", services.vault.health))
    for name, probe in probes:
        try:
            await probe()
            checks[name] = "ok"
        except BrokerError as exc:
            checks[name] = exc.code
    ready = all(v == "ok" for v in checks.values())
    return web.Response(
        body=msgspec.json.encode({"ready": ready, "checks": checks}),
        status=200 if ready else 503,
        content_type="application/json",
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several workers: add up what every worker process wrote.
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
