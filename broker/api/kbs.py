"""KBS protocol 0.4.0 handlers: thin wire -> service -> wire."""

from __future__ import annotations

import msgspec
from aiohttp import web

from broker.api.keys import METRICS, REQUEST_ID, SERVICES, SETTINGS
from broker.api.middleware import client_address, log_outcome, read_body
from broker.audit.receipt import encode_receipt_header
from broker.errors import BrokerError, MalformedRequest, SessionMissing, TokenInvalid
from broker.service.attest import AttestInput
from broker.service.context import RequestContext
from broker.tokens import TokenClaims
from broker.wire import kbs as wire

SESSION_COOKIE = "kbs-session-id"
routes = web.RouteTableDef()


def _ctx(request: web.Request) -> RequestContext:
    return RequestContext(request_id=request[REQUEST_ID], client=client_address(request))


def _json(payload: msgspec.Struct) -> web.Response:
    return web.Response(body=msgspec.json.encode(payload), content_type="application/json")


def _set_session(
    response: web.Response, request: web.Request, session_id: str, max_age: int
) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=max_age,
        path="/kbs",
    )


@routes.post("/kbs/v0/auth")
async def auth(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await read_body(request, settings.server.max_request_bytes)
    req: wire.AuthRequest = wire.decode(body, wire.AuthRequest)
    wire.check_version(req.version)
    challenge = await request.app[SERVICES].challenge.auth(req.tee, _ctx(request))
    response = _json(wire.Challenge(nonce=challenge.nonce))
    _set_session(response, request, challenge.session_id, settings.kbs.token_ttl_seconds)
    return response


@routes.post("/kbs/v0/attest")
async def attest(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    services = request.app[SERVICES]
    metrics = request.app[METRICS]
    body = await read_body(request, settings.server.max_request_bytes)
    req: wire.AttestRequest = wire.decode(body, wire.AttestRequest)
    session_id = request.cookies.get(SESSION_COOKIE)
    try:
        attested = await services.attest.attest(
            session_id,
            AttestInput(
                nonce=req.runtime_data.nonce,
                tee_pubkey=req.runtime_data.tee_pubkey,
                primary_evidence=req.tee_evidence.primary_evidence,
                additional_evidence=req.tee_evidence.additional_evidence,
            ),
            _ctx(request),
        )
    except BrokerError as exc:
        # Only a refusal needs the session read again, to name its TEE.
        session = await services.sessions.get_session(session_id) if session_id else None
        tee = session.tee if session else "unknown"
        metrics.attestations.labels(tee=tee, outcome=exc.code).inc()
        raise
    metrics.attestations.labels(tee=attested.tee, outcome="ok").inc()
    log_outcome("evidence.verified", tee=attested.tee, jti=attested.jti)
    return _json(wire.AttestResponse(token=attested.token))


async def _token_for(request: web.Request) -> TokenClaims:
    services = request.app[SERVICES]
    header = request.headers.get("Authorization", "")
    if header:
        if not header.startswith("Bearer "):
            raise TokenInvalid("Authorization must be 'Bearer <token>'")
        token = header[7:].strip()
    else:
        session_id = request.cookies.get(SESSION_COOKIE)
        if not session_id:
            raise SessionMissing("no kbs-session-id cookie or bearer token: attest first")
        session = await services.sessions.get_session(session_id)
        if session is None or session.token is None:
            raise SessionMissing("session has no attestation result: attest first")
        token = session.token
    return services.tokens.verify(token, now=services.clock.now())


def _version_param(request: web.Request) -> int | None:
    raw = request.query.get("version")
    if raw is None:
        return None
    # isdigit() alone admits non-ASCII digits ("\u00b2") that int() refuses.
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or not 0 < int(raw) < 1 << 31:
        raise MalformedRequest("version must be a positive integer")
    return int(raw)


@routes.get("/kbs/v0/resource/{path:.*}")
async def resource(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    metrics = request.app[METRICS]
    token = await _token_for(request)
    version = _version_param(request)
    try:
        release = await services.release.release(
            token, request.match_info["path"], _ctx(request), version=version
        )
    except BrokerError as exc:
        metrics.releases.labels(tee=token.tee, outcome=exc.code).inc()
        raise
    metrics.releases.labels(tee=token.tee, outcome="released").inc()
    log_outcome("key.released", resource=release.resource, version=release.version, alg=release.alg)
    response = web.Response(
        body=msgspec.json.encode(release.envelope), content_type="application/json"
    )
    response.headers["X-Key-Version"] = str(release.version)
    response.headers["X-Wrap-Alg"] = release.alg
    if release.receipt is not None:
        response.headers["X-Audit-Receipt"] = encode_receipt_header(release.receipt)
    return response
