"""The role matrix: every /v1 route x every role, no token, a revoked and an expired token."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.api.app import create_app
from broker.config import Settings, load_settings, with_dev_defaults
from broker.service.admin import ENDPOINT_PERMISSIONS, ROLES
from broker.wiring import Services
from tests.fakes import FakeClock
from tests.integration.conftest import ClientFactory

Client = TestClient[Any, Any]

KEY_ADMINS: Final = frozenset({"admin", "key-admin"})
KEY_READERS: Final = frozenset({"admin", "key-admin", "auditor"})
POLICY_READERS: Final = frozenset({"admin", "policy-admin", "auditor"})
POLICY_RELOADERS: Final = frozenset({"admin", "policy-admin", "operator"})
AUDITORS: Final = frozenset({"admin", "auditor"})
CHECKPOINTERS: Final = frozenset({"admin", "auditor", "operator"})
ADMIN_ONLY: Final = frozenset({"admin"})
PUBLIC: Final = None

_KEY: Final = "/v1/keys/{repo}/{type}/{tag}"
_VERSION: Final = _KEY + "/versions/{version}"

# Written out by hand, independently of the service's table: a change to who may
# call what has to be made in both places, on purpose.
EXPECTED: Final[dict[tuple[str, str], frozenset[str] | None]] = {
    ("GET", "/v1/keys"): KEY_READERS,
    ("POST", "/v1/keys"): KEY_ADMINS,
    ("POST", "/v1/secrets"): KEY_ADMINS,
    ("GET", _KEY): KEY_READERS,
    ("PATCH", _KEY): KEY_ADMINS,
    ("DELETE", _KEY): KEY_ADMINS,
    ("POST", _KEY + "/rotate"): KEY_ADMINS,
    ("POST", _VERSION + "/retire"): KEY_ADMINS,
    ("POST", _VERSION + "/restore"): KEY_ADMINS,
    ("POST", _VERSION + "/destroy"): KEY_ADMINS,
    ("POST", "/v1/root-key/rotate"): KEY_ADMINS,
    ("POST", "/v1/audit/rotate-key"): KEY_ADMINS,
    ("GET", "/v1/policies"): POLICY_READERS,
    ("POST", "/v1/policies/reload"): POLICY_RELOADERS,
    ("POST", "/v1/policies/simulate"): frozenset({"admin", "policy-admin"}),
    ("GET", "/v1/audit/keys"): PUBLIC,
    ("GET", "/v1/audit/checkpoint"): PUBLIC,
    ("POST", "/v1/audit/checkpoint"): CHECKPOINTERS,
    ("GET", "/v1/audit/proof/inclusion"): AUDITORS,
    ("GET", "/v1/audit/proof/consistency"): AUDITORS,
    ("GET", "/v1/audit/export"): AUDITORS,
    ("POST", "/v1/audit/hash-requester"): AUDITORS,
    ("GET", "/v1/tokens"): ADMIN_ONLY,
    ("POST", "/v1/tokens"): ADMIN_ONLY,
    ("DELETE", "/v1/tokens/{id}"): ADMIN_ONLY,
}

_FILL: Final = {
    "{repo}": "default",
    "{type}": "key",
    "{tag}": "matrix",
    "{version}": "1",
    "{id}": "0" * 16,
}


def _v1_routes() -> list[tuple[str, str]]:
    # Building the app opens nothing: services start with the app.
    app = create_app(with_dev_defaults(load_settings(None, {})))
    found = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if canonical == "/v1" or canonical.startswith("/v1/"):
            found.add((route.method, canonical))
    return sorted(found)


ROUTES: Final = _v1_routes()


def _expected(method: str, route: str) -> frozenset[str] | None:
    return EXPECTED[("GET" if method == "HEAD" else method, route)]


def _url(route: str) -> str:
    for placeholder, value in _FILL.items():
        route = route.replace(placeholder, value)
    return route


@dataclass(frozen=True, slots=True)
class Want:
    text: str
    status: int | None = None  # None: allowed through (any status below 500 but 401)
    code: str = ""

    def accepts(self, status: int, code: str | None) -> bool:
        if self.status is None:
            return (
                status < 500
                and status != 401
                and code != "Forbidden"
                and (code is not None or status != 403)
            )
        return status == self.status and (code is None or code == self.code)


_REFUSED: Final = {
    "<none>": Want("401 AdminUnauthorized", 401, "AdminUnauthorized"),
    "<revoked>": Want("401 AdminTokenRevoked", 401, "AdminTokenRevoked"),
    "<expired>": Want("401 AdminTokenExpired", 401, "AdminTokenExpired"),
}


def _want(allowed: frozenset[str] | None, who: str) -> Want:
    if allowed is None:
        return Want("public: no 401/403 from access control")
    if who in _REFUSED:
        return _REFUSED[who]
    if who in allowed:
        return Want("allowed: 2xx or a 4xx not about access")
    return Want("403 Forbidden", 403, "Forbidden")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _code(resp: Any) -> str:
    if resp.content_type != "application/json" or resp.status < 400:
        return ""
    body = await resp.json()
    return str(body.get("type", "")).rsplit("/", 1)[-1] if isinstance(body, dict) else ""


async def _issue(client: Client, admin: dict[str, str], role: str, **extra: str) -> str:
    resp = await client.post(
        "/v1/tokens", json={"name": f"matrix-{role}", "role": role, **extra}, headers=admin
    )
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["token"])


@pytest.fixture
async def principals(
    client: Client, admin_headers: dict[str, str], clock: FakeClock
) -> dict[str, dict[str, str]]:
    """Headers per principal: every role (stored tokens), none, revoked, expired."""
    expired = await _issue(client, admin_headers, "admin", expires="1m")
    clock.advance(120)
    revoked_resp = await client.post(
        "/v1/tokens", json={"name": "matrix-revoked", "role": "admin"}, headers=admin_headers
    )
    revoked = await revoked_resp.json()
    resp = await client.delete(f"/v1/tokens/{revoked['info']['id']}", headers=admin_headers)
    assert resp.status == 200
    heads = {role: _bearer(await _issue(client, admin_headers, role)) for role in ROLES}
    heads["<none>"] = {}
    heads["<revoked>"] = _bearer(revoked["token"])
    heads["<expired>"] = _bearer(expired)
    return heads


def test_every_v1_route_has_one_rule() -> None:
    """The router, the service's table and this test's table list the same endpoints."""
    served = {("GET" if m == "HEAD" else m, r) for m, r in ROUTES}
    assert served == set(EXPECTED)
    assert served == set(ENDPOINT_PERMISSIONS)


@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
async def test_route_matrix(
    client: Client, principals: dict[str, dict[str, str]], method: str, route: str
) -> None:
    """Each principal gets exactly the status its role allows on this route."""
    allowed = _expected(method, route)
    failures = []
    for who, headers in principals.items():
        body = {} if method in {"POST", "PATCH"} else None
        resp = await client.request(method, _url(route), json=body, headers=headers)
        status, code = resp.status, await _code(resp)
        want = _want(allowed, who)
        # A HEAD answer has no body: only its status can be checked.
        if not want.accepts(status, None if method == "HEAD" else code):
            failures.append(f"{who}: got {status} {code}, want {want.text}")
    assert failures == []


async def test_route_without_rule_refuses_everyone(
    aiohttp_client: ClientFactory, settings: Settings, services: Services
) -> None:
    """A /v1 route missing from the table is refused, even to the admin (fail closed)."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"reached": True})

    app = create_app(settings, services=services)
    app.router.add_get("/v1/unlisted", handler)
    client = await aiohttp_client(app)
    token = (Path(settings.server.data_dir) / "admin.token").read_text().strip()
    for headers in ({}, _bearer(token)):
        resp = await client.get("/v1/unlisted", headers=headers)
        assert resp.status == 403
        assert (await resp.json())["type"].endswith("/Forbidden")


def test_every_role_is_in_the_matrix() -> None:
    """The matrix covers exactly the roles the broker defines."""
    used = set().union(*(roles for roles in EXPECTED.values() if roles is not None))
    assert used == set(ROLES)
