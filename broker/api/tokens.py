"""Admin token API: ``POST /v1/tokens`` (the token is in that answer only),
``GET /v1/tokens`` (metadata), ``DELETE /v1/tokens/{id}`` (revoke)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from broker.api.access import admin_ctx
from broker.api.keys import SERVICES, SETTINGS
from broker.api.middleware import read_body
from broker.ports import AdminTokenInfo
from broker.wire import tokens as wire
from broker.wire.kbs import decode

routes = web.RouteTableDef()


def _state(info: AdminTokenInfo, now: datetime) -> str:
    if info.revoked_at is not None:
        return "revoked"
    if info.expires_at is not None and info.expires_at <= now:
        return "expired"
    return "active"


def token_info(info: AdminTokenInfo, now: datetime) -> wire.TokenInfo:
    return wire.TokenInfo(
        id=info.id,
        name=info.name,
        role=info.role,
        state=_state(info, now),
        created_at=info.created_at.isoformat(),
        created_by=info.created_by,
        expires_at=None if info.expires_at is None else info.expires_at.isoformat(),
        revoked_at=None if info.revoked_at is None else info.revoked_at.isoformat(),
    )


def _json(payload: object, status: int = 200) -> web.Response:
    # The token answer must not linger in a shared cache or a browser's history.
    return web.Response(
        body=msgspec.json.encode(payload),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@routes.post("/v1/tokens")
async def create_token(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    body = await read_body(request, request.app[SETTINGS].server.max_request_bytes)
    req: wire.CreateToken = decode(body or b"{}", wire.CreateToken)
    services = request.app[SERVICES]
    issued = await services.admin_tokens.create(
        name=req.name, role=req.role, expires=req.expires, ctx=ctx
    )
    info = token_info(issued.info, services.clock.now())
    return _json(wire.CreatedToken(token=issued.token, info=info), 201)


@routes.get("/v1/tokens")
async def list_tokens(request: web.Request) -> web.Response:
    admin_ctx(request)
    services = request.app[SERVICES]
    now = services.clock.now()
    return _json([token_info(i, now) for i in await services.admin_tokens.list()])


@routes.delete("/v1/tokens/{id}")
async def revoke_token(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    services = request.app[SERVICES]
    info = await services.admin_tokens.revoke(request.match_info["id"], ctx)
    return _json(token_info(info, services.clock.now()))
