"""Admin access control for every ``/v1`` route, driven by one table.

The ``admin_access`` middleware looks up the matched route in
``broker.service.admin.ENDPOINT_PERMISSIONS`` before any handler runs: a
route without an entry is refused to everyone, a ``PUBLIC`` one needs no
credential, any other needs a principal whose role holds the permission.
Handlers only read the principal (``admin_ctx``) for their audit records.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web

from broker.api.keys import REQUEST_ID, SERVICES
from broker.api.middleware import client_address
from broker.errors import Forbidden
from broker.service.admin import PUBLIC, AdminAuth, Principal, endpoint_permission
from broker.service.context import RequestContext

__all__ = ["PRINCIPAL", "admin_access", "admin_ctx", "peer_certificate", "protected_route"]

PRINCIPAL: Final = web.RequestKey("admin_principal", Principal)
_PREFIX: Final = "/v1/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def protected_route(route: str) -> bool:
    return route == _PREFIX[:-1] or route.startswith(_PREFIX)


def peer_certificate(request: web.Request) -> Mapping[str, Any] | None:
    """The verified client certificate (``ssl`` gives an empty dict for an unverified one)."""
    transport = request.transport
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    return cert if isinstance(cert, dict) and cert else None


@web.middleware
async def admin_access(request: web.Request, handler: Handler) -> web.StreamResponse:
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else None
    if route is not None and protected_route(route):
        permission = endpoint_permission(request.method, route)
        if permission != PUBLIC:
            principal = await request.app[SERVICES].admin_auth.authenticate(
                request.headers.get("Authorization"), peercert=peer_certificate(request)
            )
            AdminAuth.require(principal, permission)
            request[PRINCIPAL] = principal
    return await handler(request)


def admin_ctx(request: web.Request) -> RequestContext:
    """The request context of an authorized admin call.

    Raises:
        Forbidden: the middleware did not authorize this request (fail closed).
    """
    principal = request.get(PRINCIPAL)
    if principal is None:
        raise Forbidden("this endpoint has no admin principal")
    return RequestContext(
        request_id=request[REQUEST_ID], client=client_address(request), actor=principal.name
    )
