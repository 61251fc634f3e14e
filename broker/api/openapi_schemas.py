"""JSON Schemas (OpenAPI 3.1 dialect) of the KBS and admin message bodies.

They mirror ``broker.wire`` and the handlers' JSON answers; the route test in
``tests/unit/api/test_openapi.py`` and the schemathesis run keep them honest.
"""

from __future__ import annotations

from typing import Any, Final

Schema = dict[str, Any]

_STR: Final[Schema] = {"type": "string"}
_INT: Final[Schema] = {"type": "integer"}
_BOOL: Final[Schema] = {"type": "boolean"}
_VERSION: Final[Schema] = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_TIME: Final[Schema] = {"type": "string", "format": "date-time"}
_HEX_LIST: Final[Schema] = {"type": "array", "items": {"type": "string", "pattern": "^[0-9a-f]*$"}}


def version_schema() -> Schema:
    return dict(_VERSION)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(
    required: dict[str, Schema], optional: dict[str, Schema] | None = None, *, closed: bool = True
) -> Schema:
    schema: Schema = {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


# Request bodies are closed (the wire structs forbid unknown fields); answers
# are open so a new field is not a breaking change for clients.
SCHEMAS: Final[dict[str, Schema]] = {
    "Error": _object(
        {
            "type": {"type": "string", "pattern": "^/errors/[A-Za-z0-9._-]+$"},
            "detail": _STR,
            "request_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
        },
        {"reasons": {"type": "array", "items": _STR}},
    ),
    "AuthRequest": _object(
        {"version": {"type": "string", "examples": ["0.4.0"]}, "tee": _STR},
        {"extra-params": {}},
    ),
    "Challenge": _object({"nonce": _STR}, {"extra-params": {}}, closed=False),
    "AttestRequest": _object(
        {
            "runtime-data": _object(
                {"nonce": _STR, "tee-pubkey": {"type": "object"}},
            ),
            "tee-evidence": _object(
                {"primary_evidence": {}},
                {"additional_evidence": _STR},
            ),
        },
        {"init-data": {}},
    ),
    "AttestResponse": _object({"token": _STR}, closed=False),
    # A JWE JSON serialization or an HPKE / sealed-box envelope (see broker.keys.envelope).
    "WrappedKey": _object({"protected": _STR}, closed=False),
    "CreateKey": _object({"id": _STR}, {"rotate_every": _nullable(_STR)}),
    "PutSecret": _object(
        {"id": _STR},
        {
            "value": _nullable({"type": "string", "contentEncoding": "base64"}),
            "vault_kv": _nullable(_STR),
        },
    ),
    "KeySettings": _object(
        {},
        {
            "min_release_version": _nullable({**_VERSION, "minimum": 0}),
            "rotate_every": _nullable(_STR),
        },
    ),
    "RotateKey": _object({}, {"value": _nullable({"type": "string", "contentEncoding": "base64"})}),
    "VersionInfo": _object(
        {"version": _INT, "state": _STR, "created_at": _TIME, "created_by": _STR}, closed=False
    ),
    "KeyInfo": _object(
        {
            "id": _STR,
            "kind": _STR,
            "current_version": _INT,
            "min_release_version": _INT,
            "rotate_every": _nullable(_INT),
            "last_rotated_at": _TIME,
            "created_at": _TIME,
            "created_by": _STR,
            "size": _INT,
        },
        {"versions": _nullable({"type": "array", "items": ref("VersionInfo")})},
        closed=False,
    ),
    "KeyList": {"type": "array", "items": ref("KeyInfo")},
    "RootKeyRotated": _object({"resealed": _INT, "key_id": _STR}, closed=False),
    "PolicyStatus": _object(
        {
            "digest": _STR,
            "loaded_at": _TIME,
            "files": {
                "type": "array",
                "items": _object({"name": _STR, "digest": _STR}, closed=False),
            },
        },
        {"last_reload_error": _STR},
        closed=False,
    ),
    "ReloadStatus": _object(
        {"ok": _BOOL, "digest": _STR, "loaded_at": _TIME}, {"error": _STR}, closed=False
    ),
    # File name -> policy or reference-value text (YAML).
    "DraftPolicySet": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": _STR,
    },
    "SimulationReport": _object(
        {
            "live_digest": _STR,
            "draft_digest": _STR,
            "subjects": _INT,
            "requests": _INT,
            "unchanged": _INT,
            "lose": {"type": "array", "items": {"type": "object"}},
            "gain": {"type": "array", "items": {"type": "object"}},
        },
        closed=False,
    ),
    "AuditKeys": _object(
        {
            "origin": _STR,
            "keys": {
                "type": "array",
                "items": _object(
                    {"key_id": _STR, "verifier_key": _STR, "created_at": _TIME, "current": _BOOL},
                    closed=False,
                ),
            },
        },
        closed=False,
    ),
    "AuditKeyRotated": _object({"key_id": _STR, "verifier_key": _STR}, closed=False),
    "HashRequest": _object({"value": _STR}),
    "HashResponse": _object({"hash": _STR}, closed=False),
    "InclusionProof": _object(
        {"format": _INT, "index": _INT, "tree_size": _INT, "hashes": _HEX_LIST}, closed=False
    ),
    "ConsistencyProof": _object(
        {"format": _INT, "from_size": _INT, "to_size": _INT, "hashes": _HEX_LIST}, closed=False
    ),
    "Health": _object({"status": {"const": "ok"}}, closed=False),
    "AdminTokenCreate": _object(
        {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"},
            "role": {"enum": ["admin", "key-admin", "policy-admin", "auditor", "operator"]},
        },
        {"expires": _nullable({"type": "string", "pattern": "^[0-9]{1,9}[mhdw]$"})},
    ),
    "AdminTokenInfo": _object(
        {
            "id": _STR,
            "name": _STR,
            "role": _STR,
            "state": {"enum": ["active", "expired", "revoked"]},
            "created_at": _TIME,
            "created_by": _STR,
            "expires_at": _nullable(_TIME),
            "revoked_at": _nullable(_TIME),
        },
        closed=False,
    ),
    "AdminTokenCreated": _object({"token": _STR, "info": ref("AdminTokenInfo")}, closed=False),
    "AdminTokenList": {"type": "array", "items": ref("AdminTokenInfo")},
    "Ready": _object(
        {"ready": _BOOL, "checks": {"type": "object", "additionalProperties": _STR}},
        closed=False,
    ),
}
