"""The OpenAPI document describes exactly the routes the app serves."""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from aiohttp import web

from broker.api import openapi
from broker.api.app import create_app
from broker.api.openapi import build_document
from broker.config import load_settings, with_dev_defaults

# aiohttp registers HEAD beside every GET by itself; OpenAPI leaves HEAD implicit too.
IMPLICIT = {"HEAD"}


def _app_operations() -> set[tuple[str, str]]:
    app = create_app(with_dev_defaults(load_settings(None, {})))
    ops = set()
    for route in app.router.routes():
        if route.method in IMPLICIT or route.resource is None:
            continue
        # "{path:.*}" and "{name}" both become the OpenAPI "{name}".
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", route.resource.canonical)
        ops.add((route.method, path))
    return ops


def _document_operations(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method != "parameters"
    }


def test_every_route_is_documented_and_vice_versa() -> None:
    """Walking app.router.routes() gives exactly the operations of the document."""
    app_ops, doc_ops = _app_operations(), _document_operations(build_document())
    assert app_ops - doc_ops == set(), "routes missing from the OpenAPI document"
    assert doc_ops - app_ops == set(), "documented operations the app does not serve"


def test_document_is_openapi_31_with_security_schemes() -> None:
    """The document declares 3.1 and the cookie, resource and admin schemes."""
    doc = build_document()
    assert doc["openapi"] == "3.1.0"
    schemes = doc["components"]["securitySchemes"]
    assert schemes["kbsSession"] == {"type": "apiKey", "in": "cookie", "name": "kbs-session-id"}
    assert schemes["resourceToken"]["scheme"] == "bearer"
    assert schemes["adminToken"]["scheme"] == "bearer"


@pytest.mark.parametrize("name", sorted(build_document()["components"]["schemas"]))
def test_component_schemas_are_valid_json_schema(name: str) -> None:
    """Each component schema is a valid JSON Schema 2020-12 (the OpenAPI 3.1 dialect)."""
    schema = build_document()["components"]["schemas"][name]
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_error_status_uses_the_error_body() -> None:
    """Each 4xx/5xx answer (bar readiness and reload reports) is the Error schema."""
    doc = build_document()
    own_bodies = {("/readyz", "get", "503"), ("/v1/policies/reload", "post", "422")}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            for status, answer in op["responses"].items():
                if int(status) < 400 or (path, method, status) in own_bodies:
                    continue
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (path, method, status)


def test_admin_operations_require_the_admin_token() -> None:
    """Every /v1 operation but the public audit reads names the adminToken scheme."""
    public = {("/v1/audit/keys", "get"), ("/v1/audit/checkpoint", "get")}
    for path, item in build_document()["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in item.items():
            if method == "parameters":
                continue
            expected = [] if (path, method) in public else [{"adminToken": []}]
            assert op["security"] == expected, (path, method)


async def test_served_document_matches(aiohttp_client: Any) -> None:
    """GET /openapi.json returns the built document as JSON."""
    app = web.Application()
    app.add_routes(openapi.routes)
    client = await aiohttp_client(app)
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == build_document()
