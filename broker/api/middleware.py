"""Request id + structlog context, BrokerError -> JSON, no stack trace ever."""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from broker.api.errors import error_response
from broker.api.keys import METRICS, REQUEST_ID
from broker.errors import BodyTooLarge, BrokerError, MalformedRequest

log = structlog.get_logger("broker.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = secrets.token_hex(8)
    request[REQUEST_ID] = request_id
    route = _route(request)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=request_id, method=request.method, route=route
    )
    started = time.perf_counter()
    metrics = request.app[METRICS]
    status = 500
    try:
        response = await handler(request)
        status = response.status
    except BrokerError as exc:
        status = exc.status
        structlog.contextvars.bind_contextvars(code=exc.code, detail=exc.message)
        response = error_response(exc, request_id)
    except web.HTTPRequestEntityTooLarge:
        status = 413
        response = error_response(
            BodyTooLarge("request body exceeds the configured limit"), request_id
        )
    except web.HTTPException as exc:
        status = exc.status
        if status >= 400:
            code = MalformedRequest(exc.reason)
            code.status = status
            code.code = {404: "NotFound", 405: "MethodNotAllowed"}.get(status, "HTTPError")
            response = error_response(code, request_id)
        else:
            raise
    except Exception:
        log.exception("request.crashed")
        status = 500
        response = error_response(BrokerError("internal error"), request_id)
    finally:
        metrics.requests.labels(route=route, status=str(status)).inc()
        metrics.latency.labels(route=route).observe(time.perf_counter() - started)
    response.headers.setdefault("X-Request-Id", request_id)
    log.info("request.done", status=status, ms=round((time.perf_counter() - started) * 1000, 2))
    return response


def log_outcome(outcome: str, **fields: object) -> None:
    """Adds what a handler did to its request's one log line ("request.done").

    One line per request, not one more per event: each line costs as much as a
    policy decision, and a boot storm makes five requests per enclave.
    """
    structlog.contextvars.bind_contextvars(outcome=outcome, **fields)


def client_address(request: web.Request) -> str:
    return request.remote or ""


async def read_body(request: web.Request, limit: int) -> bytes:
    """Reads the body, refusing it before reading when Content-Length is too large."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(f"request body exceeds {limit} bytes") from None
    if len(body) > limit:
        raise BodyTooLarge(f"request body exceeds {limit} bytes")
    return body
