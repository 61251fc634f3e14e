"""BrokerError -> JSON error body with a stable type and an honest status."""

from __future__ import annotations

import msgspec
from aiohttp import web

from broker.errors import BrokerError, ReleaseDenied
from broker.wire.kbs import ErrorBody

ERROR_TYPE_BASE = "/errors/"


def error_response(exc: BrokerError, request_id: str) -> web.Response:
    body = ErrorBody(
        type=ERROR_TYPE_BASE + exc.code,
        detail=exc.message,
        request_id=request_id,
        reasons=list(exc.reasons) if isinstance(exc, ReleaseDenied) else None,
    )
    return web.Response(
        status=exc.status,
        body=msgspec.json.encode(body),
        content_type="application/json",
        headers={"X-Request-Id": request_id},
    )
