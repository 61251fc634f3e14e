"""The aiohttp application: routes, middleware, services in cleanup_ctx."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from broker.api import admin, audit, kbs, openapi, ops, policies, tokens
from broker.api.access import admin_access
from broker.api.keys import METRICS, SERVICES, SETTINGS
from broker.api.limits import rate_limits
from broker.api.metrics import Metrics
from broker.api.middleware import request_context
from broker.config import Settings
from broker.ports import Clock
from broker.service.context import RequestContext
from broker.wiring import Services, open_services

log = structlog.get_logger(__name__)

_SESSION_PURGE_SECONDS = 60


def create_app(
    settings: Settings, *, services: Services | None = None, clock: Clock | None = None
) -> web.Application:
    """Builds the app; services are opened on start-up unless given (tests)."""
    app = web.Application(
        middlewares=[request_context, rate_limits(settings.limits), admin_access],
        # One byte over the limit must still be refused by our own check, with our error.
        client_max_size=settings.server.max_request_bytes + 1,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics.create()
    app.add_routes(kbs.routes)
    app.add_routes(admin.routes)
    app.add_routes(audit.routes)
    app.add_routes(ops.routes)
    app.add_routes(policies.routes)
    app.add_routes(tokens.routes)
    app.add_routes(openapi.routes)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        owned = services is None
        app[SERVICES] = services or await open_services(settings, clock=clock)
        background = [
            asyncio.create_task(_purge_sessions(app[SERVICES])),
            asyncio.create_task(app[SERVICES].rotation.run_forever()),
            asyncio.create_task(app[SERVICES].audit_log.run_forever()),
        ]
        try:
            yield
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if owned:
                await app[SERVICES].close()

    app.cleanup_ctx.append(lifecycle)
    return app


async def _purge_sessions(services: Services) -> None:
    keep = max(services.settings.kbs.nonce_ttl_seconds, services.settings.kbs.token_ttl_seconds)
    while True:
        await asyncio.sleep(_SESSION_PURGE_SECONDS)
        try:
            await services.sessions.purge_sessions(services.clock.now().timestamp() - keep)
        except Exception:  # noqa: BLE001 - housekeeping must not kill the server
            log.warning("session.purge_failed")


def install_reload_signal(app: web.Application) -> None:
    """SIGHUP reloads the policy set (keeping the last good one on error)."""
    loop = asyncio.get_running_loop()

    def _reload() -> None:
        ctx = RequestContext(request_id="sighup", client="local", actor="signal:SIGHUP")
        task = asyncio.ensure_future(app[SERVICES].admin.reload_policies(ctx))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    loop.add_signal_handler(signal.SIGHUP, _reload)
