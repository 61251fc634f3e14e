"""Admin API under /v1: bearer token with a role; every write audited."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

import msgspec
from aiohttp import web

from broker.api.keys import REQUEST_ID, SERVICES, SETTINGS
from broker.api.middleware import client_address, read_body
from broker.audit.export import csv_header, csv_row, jsonl_line, parse_bound
from broker.errors import MalformedRequest
from broker.ports import ResourceInfo
from broker.service.admin import AdminAuth
from broker.service.context import RequestContext
from broker.wire import admin as wire
from broker.wire.kbs import decode

routes = web.RouteTableDef()


def _principal_ctx(request: web.Request, permission: str) -> RequestContext:
    services = request.app[SERVICES]
    principal = services.admin_auth.authenticate(request.headers.get("Authorization"))
    AdminAuth.require(principal, permission)
    return RequestContext(
        request_id=request[REQUEST_ID], client=client_address(request), actor=principal.name
    )


def _info(info: ResourceInfo) -> wire.KeyInfo:
    return wire.KeyInfo(
        id=info.id,
        kind=info.kind,
        current_version=info.current_version,
        created_at=info.created_at.isoformat(),
        created_by=info.created_by,
        size=info.size,
    )


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(payload), status=status, content_type="application/json"
    )


@routes.post("/v1/keys")
async def create_key(request: web.Request) -> web.Response:
    ctx = _principal_ctx(request, "keys.write")
    body = await read_body(request, request.app[SETTINGS].server.max_request_bytes)
    req: wire.CreateKey = decode(body, wire.CreateKey)
    info = await request.app[SERVICES].admin.create_key(req.id, ctx)
    return _json(_info(info), 201)


@routes.post("/v1/secrets")
async def put_secret(request: web.Request) -> web.Response:
    ctx = _principal_ctx(request, "keys.write")
    body = await read_body(request, request.app[SETTINGS].server.max_request_bytes)
    req: wire.PutSecret = decode(body, wire.PutSecret)
    try:
        value = base64.b64decode(req.value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest("value must be standard base64") from None
    info = await request.app[SERVICES].admin.put_secret(req.id, value, ctx)
    return _json(_info(info), 201)


@routes.get("/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    _principal_ctx(request, "keys.read")
    infos = await request.app[SERVICES].admin.list_keys()
    return _json([_info(i) for i in infos])


@routes.get("/v1/keys/{id:.+}")
async def show_key(request: web.Request) -> web.Response:
    _principal_ctx(request, "keys.read")
    info = await request.app[SERVICES].admin.show_key(request.match_info["id"])
    return _json(_info(info))


@routes.delete("/v1/keys/{id:.+}")
async def delete_key(request: web.Request) -> web.Response:
    ctx = _principal_ctx(request, "keys.write")
    await request.app[SERVICES].admin.delete_key(request.match_info["id"], ctx)
    return web.Response(status=204)


@routes.get("/v1/policies")
async def policies(request: web.Request) -> web.Response:
    _principal_ctx(request, "policy.read")
    holder = request.app[SERVICES].policies
    current = holder.current
    return _json(
        wire.PolicyStatus(
            digest=current.digest,
            loaded_at=holder.loaded_at.isoformat(),
            files=[wire.PolicyFile(name=n, digest=d) for n, d in current.files],
            last_reload_error=holder.last_error,
        )
    )


@routes.post("/v1/policies/reload")
async def reload_policies(request: web.Request) -> web.Response:
    ctx = _principal_ctx(request, "policy.reload")
    result = await request.app[SERVICES].admin.reload_policies(ctx)
    return _json(
        wire.ReloadStatus(
            ok=result.ok,
            digest=result.digest,
            loaded_at=result.loaded_at.isoformat(),
            error=result.error,
        ),
        200 if result.ok else 422,
    )


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    return parse_bound(raw, name=name) if raw else None


@routes.get("/v1/audit/export")
async def export_audit(request: web.Request) -> web.StreamResponse:
    """Streams the audit log (a million records never sit in memory)."""
    _principal_ctx(request, "audit.read")
    fmt = request.query.get("format", "jsonl")
    if fmt not in {"jsonl", "csv"}:
        raise MalformedRequest("format must be jsonl or csv")
    since, until = _time_param(request, "since"), _time_param(request, "until")
    response = web.StreamResponse(
        headers={"Content-Type": "text/csv" if fmt == "csv" else "application/x-ndjson"}
    )
    await response.prepare(request)
    if fmt == "csv":
        await response.write(csv_header().encode())
    line = csv_row if fmt == "csv" else jsonl_line
    async for record in request.app[SERVICES].audit.iter_records(since, until):
        await response.write(line(record).encode())
    await response.write_eof()
    return response
