"""Audit API under /v1/audit: export, checkpoints, proofs, keys, audit key rotation.

Public (no token): ``GET /v1/audit/keys`` and ``GET /v1/audit/checkpoint``.
They reveal sizes, hashes and public keys only. Everything else needs the
permission ``broker.service.admin.ENDPOINT_PERMISSIONS`` names for it.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime
from typing import Final

import msgspec
from aiohttp import web

from broker.api.access import admin_ctx
from broker.api.keys import SERVICES, SETTINGS
from broker.api.middleware import read_body
from broker.audit.checkpoint import Checkpoint
from broker.audit.export import (
    EXPORT_FORMATS,
    csv_header,
    csv_row_from_dict,
    jsonl_line,
    parse_bound,
)
from broker.audit.filters import ExportFilter
from broker.audit.ocsf import to_ocsf_lines
from broker.audit.privacy import RequesterKey, redact_record
from broker.audit.record import AuditRecord
from broker.errors import Conflict, MalformedRequest
from broker.wire.kbs import decode

routes = web.RouteTableDef()

CHECKPOINT_HEADER: Final = "X-Audit-Checkpoint"
TREE_SIZE_HEADER: Final = "X-Audit-Tree-Size"
_CHUNK: Final = 64 * 1024
# "proofs": one inclusion proof per exported record, for verifying a selection.
FORMATS: Final = {**EXPORT_FORMATS, "proofs": "application/x-ndjson; charset=utf-8"}


class HashRequest(msgspec.Struct, forbid_unknown_fields=True):
    value: str


def _json(payload: object) -> web.Response:
    return web.Response(body=msgspec.json.encode(payload), content_type="application/json")


def _int(request: web.Request, name: str, *, required: bool = True) -> int | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        # A proxy and the broker could each read a different one of them.
        raise MalformedRequest(f"query parameter {name} given more than once")
    raw = values[0] if values else None
    if raw is None or raw == "":
        if required:
            raise MalformedRequest(f"query parameter {name} is required")
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        raise MalformedRequest(f"{name} must be a non-negative integer")
    return int(raw)


def _req_int(request: web.Request, name: str) -> int:
    value = _int(request, name)
    if value is None:
        raise MalformedRequest(f"query parameter {name} is required")
    return value


def _note(cp: Checkpoint) -> web.Response:
    return web.Response(text=cp.note, content_type="text/plain", charset="utf-8")


@routes.get("/v1/audit/keys")
async def audit_keys(request: web.Request) -> web.Response:
    """Every audit verifier key the broker has signed with, oldest first."""
    svc = request.app[SERVICES].audit_log
    keys = await svc.verifier_keys()
    return _json(
        {
            "origin": svc.origin,
            "keys": [
                {
                    "key_id": k.key_id,
                    "verifier_key": k.verifier_key,
                    "created_at": k.created_at.isoformat(),
                    "current": k.current,
                }
                for k in keys
            ],
        }
    )


@routes.get("/v1/audit/checkpoint")
async def get_checkpoint(request: web.Request) -> web.Response:
    """The latest signed checkpoint, or the stored one of ``?size=N``."""
    svc = request.app[SERVICES].audit_log
    size = _int(request, "size", required=False)
    if size is None:
        # Served from memory; the first request on a fresh log signs one.
        return _note(await svc.sign_checkpoint() if svc.tree_size == 0 else await svc.checkpoint())
    return _note(await svc.checkpoint(size))


@routes.post("/v1/audit/checkpoint")
async def sign_checkpoint(request: web.Request) -> web.Response:
    """Sign a checkpoint of the current tree now (if it grew since the last one)."""
    admin_ctx(request)
    return _note(await request.app[SERVICES].audit_log.sign_checkpoint())


@routes.get("/v1/audit/proof/inclusion")
async def inclusion_proof(request: web.Request) -> web.Response:
    admin_ctx(request)
    index, size = _req_int(request, "index"), _req_int(request, "size")
    svc = request.app[SERVICES].audit_log
    await svc.sync()  # replicas: catch up with records the others appended
    return _json(svc.inclusion_proof(index, size).to_dict())


@routes.get("/v1/audit/proof/consistency")
async def consistency_proof(request: web.Request) -> web.Response:
    admin_ctx(request)
    old, new = _req_int(request, "from"), _req_int(request, "to")
    svc = request.app[SERVICES].audit_log
    await svc.sync()
    return _json(svc.consistency_proof(old, new).to_dict())


@routes.post("/v1/audit/rotate-key")
async def rotate_key(request: web.Request) -> web.Response:
    """New checkpoints and receipts are signed with a new audit key; the old one stays published."""
    ctx = admin_ctx(request)
    key = await request.app[SERVICES].audit_log.rotate_key(ctx)
    return _json({"key_id": key.key_id, "verifier_key": key.verifier_key})


@routes.post("/v1/audit/hash-requester")
async def hash_requester(request: web.Request) -> web.Response:
    """The keyed hash a redacted export shows for a requester value (like Vault's audit-hash)."""
    admin_ctx(request)
    key = request.app[SERVICES].audit_log.requester_key
    if key is None:
        raise Conflict("requester hashing is off (audit.hash_requesters = false)")
    body = await read_body(request, request.app[SETTINGS].server.max_request_bytes)
    req: HashRequest = decode(body, HashRequest)
    return _json({"hash": key.hash(req.value)})


def _time_param(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    return parse_bound(raw, name=name) if raw else None


def _filter(request: web.Request) -> ExportFilter:
    q = request.query
    return ExportFilter(
        since=_time_param(request, "since"),
        until=_time_param(request, "until"),
        resource=q.get("resource"),
        decision=q.get("decision") or q.get("outcome"),
        tee=q.get("tee"),
        measurement=q.get("measurement"),
        requester=q.get("requester"),
    )


def _line_maker(
    fmt: str, request: web.Request, size: int, key: RequesterKey | None
) -> Callable[[AuditRecord], str]:
    if fmt == "jsonl":
        return jsonl_line
    if fmt == "csv":
        if key is None:
            return lambda r: csv_row_from_dict(r.to_dict())
        return lambda r: csv_row_from_dict(redact_record(r.to_dict(), key))
    if fmt == "ocsf":
        return lambda r: next(to_ocsf_lines([r], key))
    log = request.app[SERVICES].audit_log
    return lambda r: log.inclusion_proof(r.seq, size).to_json() + "\n"


async def _selected(
    request: web.Request, selection: ExportFilter, size: int, key: RequesterKey | None
) -> AsyncIterator[AuditRecord]:
    # The time window narrows the seq range in the database (contiguous, as
    # before); the other criteria are applied record by record.
    per_record = replace(selection, since=None, until=None)
    async for record in request.app[SERVICES].audit.iter_records(selection.since, selection.until):
        if record.seq >= size:
            return
        if per_record.is_full() or per_record.matches(record, key):
            yield record


# No HEAD: the body is streamed as it is read, and a HEAD answer must not carry one.
@routes.get("/v1/audit/export", allow_head=False)
async def export_audit(request: web.Request) -> web.StreamResponse:
    """Streams records (a million never sit in memory) with the checkpoint they match.

    ``size`` pins the export to a stored checkpoint; without it a checkpoint
    of the current tree is signed on demand. Only records below the
    checkpoint's size are exported, so the export is consistent with it.
    """
    admin_ctx(request)
    services = request.app[SERVICES]
    fmt = request.query.get("format", "jsonl")
    if fmt not in FORMATS:
        raise MalformedRequest(f"format must be one of {sorted(FORMATS)}")
    selection = _filter(request)
    size = _int(request, "size", required=False)
    svc = services.audit_log
    cp = await svc.sign_checkpoint() if size is None else await svc.checkpoint(size)
    await svc.sync()  # replicas: the tree must cover the checkpoint before proofs
    hashed = request.app[SETTINGS].audit.hash_requesters and fmt in {"csv", "ocsf"}
    key = svc.requester_key
    line = _line_maker(fmt, request, cp.size, key if hashed else None)
    response = web.StreamResponse(
        headers={
            "Content-Type": FORMATS[fmt],
            CHECKPOINT_HEADER: base64.urlsafe_b64encode(cp.note.encode()).decode("ascii"),
            TREE_SIZE_HEADER: str(cp.size),
        }
    )
    await response.prepare(request)
    buffer: list[str] = [csv_header()] if fmt == "csv" else []
    pending = sum(map(len, buffer))
    async for record in _selected(request, selection, cp.size, key):
        text = line(record)
        buffer.append(text)
        pending += len(text)
        if pending >= _CHUNK:
            await response.write("".join(buffer).encode())
            buffer, pending = [], 0
    if buffer:
        await response.write("".join(buffer).encode())
    await response.write_eof()
    return response
