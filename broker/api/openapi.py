"""The OpenAPI 3.1 document of the KBS and admin APIs, served at ``GET /openapi.json``.

Built from explicit schemas (``openapi_schemas``), not inferred from handlers,
so it is a contract the tests hold the server to: every registered route is
described (``tests/unit/api/test_openapi.py``) and schemathesis checks that
answers, including every error status, match it.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import msgspec
from aiohttp import web

from broker import __version__
from broker.api.openapi_schemas import SCHEMAS, Schema, ref, version_schema

routes = web.RouteTableDef()

_REASONS: Final[dict[int, str]] = {
    400: "Malformed request (bad JSON, unknown field, bad parameter or version)",
    401: "Missing or invalid credentials (session, token or admin token)",
    403: "Forbidden: evidence did not verify, policy denied, or role lacks the permission",
    404: "No such resource, key or checkpoint",
    409: "Conflict with the current state (already exists, nonce replayed)",
    410: "The key version's material was destroyed",
    413: "Request body exceeds the configured limit",
    500: "Internal error (details in the log under the request id)",
    503: "A store, Vault, audit or collateral backend is unavailable",
}
_REQUEST_ID_HEADER: Final[Schema] = {
    "description": "Correlates the answer with the broker's log and audit records",
    "schema": {"type": "string"},
}

# Who may call what; the admin role matrix lives in broker.service.admin.
Security = list[dict[str, list[str]]]
PUBLIC: Final[Security] = []
ADMIN: Final[Security] = [{"adminToken": []}]
RESOURCE: Final[Security] = [{"resourceToken": []}, {"kbsSession": []}]
SESSION: Final[Security] = [{"kbsSession": []}]

_BASE_ERRORS: Final = (500,)
_STORE_ERRORS: Final = (500, 503)
_ADMIN_ERRORS: Final = (400, 401, 403, 500, 503)
_BODY_ERRORS: Final = (*_ADMIN_ERRORS, 413)
_KEY_ERRORS: Final = (*_ADMIN_ERRORS, 404, 409, 410)


def _error(status: int) -> Schema:
    return {
        "description": _REASONS[status],
        "headers": {"X-Request-Id": _REQUEST_ID_HEADER},
        "content": {"application/json": {"schema": ref("Error")}},
    }


def _json(description: str, schema: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref(schema)}}}


def _text(description: str, media: str = "text/plain") -> Schema:
    return {"description": description, "content": {media: {"schema": {"type": "string"}}}}


def _op(
    summary: str,
    tag: str,
    ok: dict[str, Schema],
    errors: tuple[int, ...],
    *,
    security: Security = ADMIN,
    body: str | None = None,
    body_required: bool = True,
    params: tuple[Schema, ...] = (),
) -> Schema:
    op: Schema = {
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": {**ok, **{str(s): _error(s) for s in sorted(set(errors))}},
    }
    if body is not None:
        op["requestBody"] = {
            "required": body_required,
            "content": {"application/json": {"schema": ref(body)}},
        }
    if params:
        op["parameters"] = list(params)
    return op


def _query(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _path(name: str, schema: Schema | None = None) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


_SEGMENT: Final[Schema] = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
_COUNT: Final[Schema] = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
_BOUND: Final[Schema] = {"anyOf": [{"type": "string", "format": "date-time"}, {"const": ""}]}
_KEY_PARAMS: Final = (_path("repo", _SEGMENT), _path("type", _SEGMENT), _path("tag", _SEGMENT))
_VERSION_PARAMS: Final = (*_KEY_PARAMS, _path("version", version_schema()))
_KEY: Final = "/v1/keys/{repo}/{type}/{tag}"
_NO_CONTENT: Final = {"204": {"description": "Done"}}
_KEY_INFO: Final = {"200": _json("The key after the change", "KeyInfo")}
_CHECKPOINT: Final = {"200": _text("A signed checkpoint (C2SP signed-note text)")}
_EXPORT_FILTERS: Final = tuple(
    _query(name, {"type": "string"}, f"Only records whose {name} matches")
    for name in ("resource", "decision", "outcome", "tee", "measurement", "requester")
)


def _version_op(verb: str) -> Schema:
    return _op(
        f"{verb.capitalize()} one version of a key",
        "keys",
        _NO_CONTENT,
        _KEY_ERRORS,
        params=_VERSION_PARAMS,
    )


def _kbs_paths() -> dict[str, Schema]:
    return {
        "/kbs/v0/auth": {
            "post": _op(
                "Start an attestation: returns a challenge and sets the session cookie",
                "kbs",
                {"200": _json("The challenge", "Challenge")},
                (400, 413, 500, 503),
                security=PUBLIC,
                body="AuthRequest",
            )
        },
        "/kbs/v0/attest": {
            "post": _op(
                "Send evidence bound to the challenge; returns the attestation token",
                "kbs",
                {"200": _json("The attestation result token", "AttestResponse")},
                (400, 401, 403, 409, 413, 500, 503),
                security=SESSION,
                body="AttestRequest",
            )
        },
        "/kbs/v0/resource/{path}": {
            "get": _op(
                "Release a resource wrapped to the attested tee-pubkey",
                "kbs",
                {"200": _json("The wrapped key (X-Key-Version, X-Wrap-Alg headers)", "WrappedKey")},
                (400, 401, 403, 404, 410, 500, 503),
                security=RESOURCE,
                params=(
                    _path("path", {"type": "string", "pattern": "^[^?#]+$"}),
                    _query("version", version_schema(), "A specific version"),
                ),
            )
        },
    }


def _key_paths() -> dict[str, Schema]:
    return {
        "/v1/keys": {
            "get": _op(
                "List keys (due=true: only those due for rotation)",
                "keys",
                {"200": _json("Every key", "KeyList")},
                _ADMIN_ERRORS,
                params=(_query("due", {"type": "string"}, "1, true or yes: due keys only"),),
            ),
            "post": _op(
                "Create a generated key",
                "keys",
                {"201": _json("The new key", "KeyInfo")},
                (*_BODY_ERRORS, 409),
                body="CreateKey",
            ),
        },
        "/v1/secrets": {
            "post": _op(
                "Store a secret value or link a Vault KV secret",
                "keys",
                {"201": _json("The new secret", "KeyInfo")},
                (*_BODY_ERRORS, 409),
                body="PutSecret",
            )
        },
        _KEY: {
            "parameters": list(_KEY_PARAMS),
            "get": _op(
                "A key with its versions",
                "keys",
                {"200": _json("The key", "KeyInfo")},
                (*_ADMIN_ERRORS, 404),
            ),
            "patch": _op(
                "Change min_release_version or the rotation period",
                "keys",
                _KEY_INFO,
                (*_KEY_ERRORS, 413),
                body="KeySettings",
                body_required=False,
            ),
            "delete": _op("Delete a key", "keys", _NO_CONTENT, _KEY_ERRORS),
        },
        _KEY + "/rotate": {
            "post": _op(
                "Rotate a key (secrets: with the new value)",
                "keys",
                _KEY_INFO,
                (*_KEY_ERRORS, 413),
                body="RotateKey",
                body_required=False,
                params=_KEY_PARAMS,
            )
        },
        _KEY + "/versions/{version}/retire": {"post": _version_op("retire")},
        _KEY + "/versions/{version}/restore": {"post": _version_op("restore")},
        _KEY + "/versions/{version}/destroy": {"post": _version_op("destroy")},
        "/v1/root-key/rotate": {
            "post": _op(
                "Rotate the root key and reseal every stored key",
                "keys",
                {"200": _json("Resealed count and new key id", "RootKeyRotated")},
                _ADMIN_ERRORS,
            )
        },
    }


def _policy_paths() -> dict[str, Schema]:
    return {
        "/v1/policies": {
            "get": _op(
                "The loaded policy set",
                "policies",
                {"200": _json("Digest and files", "PolicyStatus")},
                _ADMIN_ERRORS,
            )
        },
        "/v1/policies/reload": {
            "post": _op(
                "Reload policies from disk (the last good set stays on error)",
                "policies",
                {
                    "200": _json("Reloaded", "ReloadStatus"),
                    "422": _json("The new set did not load; the old one stays", "ReloadStatus"),
                },
                _ADMIN_ERRORS,
            )
        },
        "/v1/policies/simulate": {
            "post": _op(
                "Who would lose or gain access under a draft policy set",
                "policies",
                {"200": _json("The simulation report", "SimulationReport")},
                _BODY_ERRORS,
                body="DraftPolicySet",
                params=(_query("since", {"type": "string"}, "Window, e.g. 30d, 12h"),),
            )
        },
    }


def _audit_paths() -> dict[str, Schema]:
    size = _query("size", {"anyOf": [_COUNT, {"const": ""}]}, "Tree size of a stored checkpoint")
    return {
        "/v1/audit/keys": {
            "get": _op(
                "Every audit verifier key",
                "audit",
                {"200": _json("Keys, oldest first", "AuditKeys")},
                _STORE_ERRORS,
                security=PUBLIC,
            )
        },
        "/v1/audit/checkpoint": {
            "get": _op(
                "The latest signed checkpoint, or the one of ?size=N",
                "audit",
                _CHECKPOINT,
                (400, 404, 500, 503),
                security=PUBLIC,
                params=(size,),
            ),
            "post": _op("Sign a checkpoint now", "audit", _CHECKPOINT, _ADMIN_ERRORS),
        },
        "/v1/audit/proof/inclusion": {
            "get": _op(
                "Inclusion proof of record index in the tree of size",
                "audit",
                {"200": _json("The proof", "InclusionProof")},
                _ADMIN_ERRORS,
                params=(
                    _query("index", _COUNT, "Record index", required=True),
                    _query("size", _COUNT, "Tree size", required=True),
                ),
            )
        },
        "/v1/audit/proof/consistency": {
            "get": _op(
                "Consistency proof between two tree sizes",
                "audit",
                {"200": _json("The proof", "ConsistencyProof")},
                _ADMIN_ERRORS,
                params=(
                    _query("from", _COUNT, "Old tree size", required=True),
                    _query("to", _COUNT, "New tree size", required=True),
                ),
            )
        },
        "/v1/audit/rotate-key": {
            "post": _op(
                "Rotate the audit signing key",
                "audit",
                {"200": _json("The new key", "AuditKeyRotated")},
                _ADMIN_ERRORS,
            )
        },
        "/v1/audit/hash-requester": {
            "post": _op(
                "The keyed hash a redacted export shows for a requester",
                "audit",
                {"200": _json("The hash", "HashResponse")},
                (*_BODY_ERRORS, 409),
                body="HashRequest",
            )
        },
        "/v1/audit/export": {
            "get": _op(
                "Stream audit records consistent with a checkpoint",
                "audit",
                {"200": _export_answer()},
                (*_ADMIN_ERRORS, 404),
                params=(
                    _query(
                        "format",
                        {"enum": ["jsonl", "csv", "ocsf", "proofs"]},
                        "Output format (jsonl by default)",
                    ),
                    _query("since", _BOUND, "Lower bound (RFC 3339; empty: none)"),
                    _query("until", _BOUND, "Upper bound (RFC 3339; empty: none)"),
                    size,
                    *_EXPORT_FILTERS,
                ),
            )
        },
    }


def _token_paths() -> dict[str, Schema]:
    # The admin role only (broker.service.admin.ENDPOINT_PERMISSIONS).
    return {
        "/v1/tokens": {
            "get": _op(
                "List admin tokens (metadata only, never a token or its hash)",
                "tokens",
                {"200": _json("Every stored token", "AdminTokenList")},
                _ADMIN_ERRORS,
            ),
            "post": _op(
                "Create an admin token: the answer is the only time it is shown",
                "tokens",
                {"201": _json("The new token and its metadata", "AdminTokenCreated")},
                (*_BODY_ERRORS, 409),
                body="AdminTokenCreate",
            ),
        },
        "/v1/tokens/{id}": {
            "delete": _op(
                "Revoke an admin token (refused from the next request on)",
                "tokens",
                {"200": _json("The revoked token", "AdminTokenInfo")},
                (*_ADMIN_ERRORS, 404),
                params=(_path("id"),),
            )
        },
    }


def _export_answer() -> Schema:
    text = {"schema": {"type": "string"}}
    return {
        "description": "Records, one per line (X-Audit-Checkpoint, X-Audit-Tree-Size headers)",
        "content": {
            "application/x-ndjson": text,
            "text/csv": text,
            "application/json": text,
        },
    }


def _ops_paths() -> dict[str, Schema]:
    return {
        "/healthz": {
            "get": _op("Liveness", "ops", {"200": _json("Alive", "Health")}, (), security=PUBLIC)
        },
        "/readyz": {
            "get": _op(
                "Readiness: the store, audit sink and Vault answer",
                "ops",
                {
                    "200": _json("Ready", "Ready"),
                    "503": _json("A backend is down", "Ready"),
                },
                (),
                security=PUBLIC,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics",
                "ops",
                {"200": _text("Prometheus text exposition")},
                _BASE_ERRORS,
                security=PUBLIC,
            )
        },
        "/openapi.json": {
            "get": _op(
                "This document",
                "ops",
                {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
                (),
                security=PUBLIC,
            )
        },
    }


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document as a JSON-compatible dict (a fresh copy)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Attested key broker",
            "version": __version__,
            "description": "Trustee KBS protocol 0.4.0 (/kbs/v0) and the admin API (/v1).",
        },
        "paths": {
            **_kbs_paths(),
            **_key_paths(),
            **_policy_paths(),
            **_audit_paths(),
            **_token_paths(),
            **_ops_paths(),
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "kbsSession": {"type": "apiKey", "in": "cookie", "name": "kbs-session-id"},
                "resourceToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "The attestation result token from /kbs/v0/attest",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An admin token; its role decides what it may do",
                },
            },
        },
    }


@cache
def _encoded() -> bytes:
    return msgspec.json.encode(build_document())


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=_encoded(), content_type="application/json")
