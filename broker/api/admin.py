"""Admin API under /v1: bearer token with a role; every write audited."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import msgspec
from aiohttp import web

from broker.api.access import admin_ctx
from broker.api.keys import SERVICES, SETTINGS
from broker.api.middleware import read_body
from broker.errors import MalformedRequest
from broker.ports import ResourceInfo, VersionInfo
from broker.wire import admin as wire
from broker.wire.kbs import decode

routes = web.RouteTableDef()


def _info(info: ResourceInfo, versions: Sequence[VersionInfo] | None = None) -> wire.KeyInfo:
    return wire.KeyInfo(
        id=info.id,
        kind=info.kind,
        current_version=info.current_version,
        min_release_version=info.min_release_version,
        rotate_every=info.rotate_every,
        last_rotated_at=info.last_rotated_at.isoformat(),
        created_at=info.created_at.isoformat(),
        created_by=info.created_by,
        size=info.size,
        versions=None
        if versions is None
        else [
            wire.VersionInfo(
                version=v.version,
                state=v.state,
                created_at=v.created_at.isoformat(),
                created_by=v.created_by,
            )
            for v in versions
        ],
    )


def _json(payload: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(payload), status=status, content_type="application/json"
    )


def _b64(value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedRequest("value must be standard base64") from None


async def _body(request: web.Request, kind: type[msgspec.Struct]) -> Any:
    body = await read_body(request, request.app[SETTINGS].server.max_request_bytes)
    return decode(body or b"{}", kind)


def _resource(request: web.Request) -> str:
    m = request.match_info
    return f"{m['repo']}/{m['type']}/{m['tag']}"


def _version(request: web.Request) -> int:
    raw = request.match_info["version"]
    # int() alone takes "+7", "-1", non-ASCII digits and values no store column holds.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or not 0 < int(raw) < 1 << 31:
        raise MalformedRequest("version must be a positive integer")
    return int(raw)


_KEY = "/v1/keys/{repo}/{type}/{tag}"


@routes.post("/v1/keys")
async def create_key(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    req: wire.CreateKey = await _body(request, wire.CreateKey)
    info = await request.app[SERVICES].keys.create_key(req.id, ctx, rotate_every=req.rotate_every)
    return _json(_info(info), 201)


@routes.post("/v1/secrets")
async def put_secret(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    req: wire.PutSecret = await _body(request, wire.PutSecret)
    keys = request.app[SERVICES].keys
    if (req.value is None) == (req.vault_kv is None):
        raise MalformedRequest("give exactly one of value and vault_kv")
    if req.vault_kv is not None:
        info = await keys.link_vault_secret(req.id, req.vault_kv, ctx)
    else:
        info = await keys.put_secret(req.id, _b64(req.value or ""), ctx)
    return _json(_info(info), 201)


@routes.get("/v1/keys")
async def list_keys(request: web.Request) -> web.Response:
    admin_ctx(request)
    keys = request.app[SERVICES].keys
    due = request.query.get("due", "") in {"1", "true", "yes"}
    infos = await (keys.due() if due else keys.list())
    return _json([_info(i) for i in infos])


@routes.get(_KEY)
async def show_key(request: web.Request) -> web.Response:
    admin_ctx(request)
    details = await request.app[SERVICES].keys.details(_resource(request))
    return _json(_info(details.info, details.versions))


@routes.patch(_KEY)
async def configure_key(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    req: wire.KeySettings = await _body(request, wire.KeySettings)
    info = await request.app[SERVICES].keys.configure(
        _resource(request),
        ctx,
        min_release_version=req.min_release_version,
        rotate_every=req.rotate_every,
    )
    return _json(_info(info))


@routes.post(_KEY + "/rotate")
async def rotate_key(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    req: wire.RotateKey = await _body(request, wire.RotateKey)
    value = None if req.value is None else _b64(req.value)
    info = await request.app[SERVICES].keys.rotate(_resource(request), ctx, value=value)
    return _json(_info(info))


@routes.post(_KEY + "/versions/{version}/retire")
async def retire_version(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    await request.app[SERVICES].keys.retire(_resource(request), _version(request), ctx)
    return web.Response(status=204)


@routes.post(_KEY + "/versions/{version}/restore")
async def restore_version(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    await request.app[SERVICES].keys.restore(_resource(request), _version(request), ctx)
    return web.Response(status=204)


@routes.post(_KEY + "/versions/{version}/destroy")
async def destroy_version(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    await request.app[SERVICES].keys.destroy(_resource(request), _version(request), ctx)
    return web.Response(status=204)


@routes.delete(_KEY)
async def delete_key(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    await request.app[SERVICES].keys.delete(_resource(request), ctx)
    return web.Response(status=204)


@routes.post("/v1/root-key/rotate")
async def rotate_root_key(request: web.Request) -> web.Response:
    ctx = admin_ctx(request)
    result = await request.app[SERVICES].root_key.rotate(ctx)
    return _json({"resealed": result.resealed, "key_id": result.key_id})


@routes.get("/v1/policies")
async def policies(request: web.Request) -> web.Response:
    admin_ctx(request)
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
    ctx = admin_ctx(request)
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
