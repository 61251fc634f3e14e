"""Admin API: roles, keys and secrets, policy status, audit export."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.audit.chain import verify_chain
from broker.config import Settings
from tests.integration.kbs_helpers import attest, create_key, error_of, fetch

Client = TestClient[Any, Any]


@pytest.fixture
def auditor_headers(settings: Settings) -> dict[str, str]:
    token = (Path(settings.server.data_dir) / "auditor.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


async def test_no_token_refused(client: Client) -> None:
    """The admin API needs a bearer token."""
    resp = await client.get("/v1/keys")
    assert (await error_of(resp))[:2] == (401, "AdminUnauthorized")
    resp = await client.get("/v1/keys", headers={"Authorization": "Bearer wrong-token-value"})
    assert (await error_of(resp))[:2] == (401, "AdminUnauthorized")


async def test_auditor_cannot_write(client: Client, auditor_headers: dict[str, str]) -> None:
    """The auditor role reads but cannot create keys or reload policies."""
    resp = await client.post("/v1/keys", json={"id": "a/b/c"}, headers=auditor_headers)
    assert (await error_of(resp))[:2] == (403, "Forbidden")
    resp = await client.post("/v1/policies/reload", headers=auditor_headers)
    assert (await error_of(resp))[:2] == (403, "Forbidden")
    assert (await client.get("/v1/keys", headers=auditor_headers)).status == 200


async def test_key_lifecycle(client: Client, admin_headers: dict[str, str]) -> None:
    """Create, list, show and delete a key; metadata never includes the value."""
    await create_key(client, admin_headers, "default/key/one")
    resp = await client.post("/v1/keys", json={"id": "default/key/one"}, headers=admin_headers)
    assert (await error_of(resp))[:2] == (409, "Conflict")
    listed = await (await client.get("/v1/keys", headers=admin_headers)).json()
    assert [k["id"] for k in listed] == ["default/key/one"]
    shown = await (await client.get("/v1/keys/default/key/one", headers=admin_headers)).json()
    assert (
        shown["kind"] == "data-key" and shown["size"] == 32 and shown["created_by"] == "token:admin"
    )
    assert set(shown) == {
        "id",
        "kind",
        "current_version",
        "min_release_version",
        "rotate_every",
        "last_rotated_at",
        "created_at",
        "created_by",
        "size",
        "versions",
    }
    assert shown["versions"][0]["state"] == "active"
    assert (await client.delete("/v1/keys/default/key/one", headers=admin_headers)).status == 204
    resp = await client.get("/v1/keys/default/key/one", headers=admin_headers)
    assert (await error_of(resp))[:2] == (404, "ResourceNotFound")


async def test_secret_release(client: Client, admin_headers: dict[str, str]) -> None:
    """An uploaded secret is released byte for byte."""
    secret = b"db-password-\x00\xff"
    resp = await client.post(
        "/v1/secrets",
        json={"id": "default/secret/db", "value": base64.b64encode(secret).decode()},
        headers=admin_headers,
    )
    assert resp.status == 201
    token, keypair = await attest(client)
    assert await fetch(client, "default/secret/db", token, keypair) == secret


@pytest.mark.parametrize(
    "body",
    [
        {"id": "a/b/c", "value": "!!"},
        {"id": "a/b/c", "value": ""},
        {"id": "a/b/c", "value": base64.b64encode(b"x" * 70000).decode()},
        {"id": "../b/c", "value": "eA=="},
    ],
)
async def test_bad_secrets(
    client: Client, admin_headers: dict[str, str], body: dict[str, str]
) -> None:
    """Malformed, empty, oversized secrets and bad ids are 400."""
    resp = await client.post("/v1/secrets", json=body, headers=admin_headers)
    assert (await resp.json())["type"].rsplit("/", 1)[-1] in {
        "MalformedRequest",
        "InvalidResourcePath",
    }
    assert resp.status == 400


async def test_policy_status(client: Client, admin_headers: dict[str, str]) -> None:
    """GET /v1/policies lists files and the set digest."""
    body = await (await client.get("/v1/policies", headers=admin_headers)).json()
    assert body["digest"].startswith("sha256:") and body["files"]


async def test_audit_export_verifies(
    client: Client, admin_headers: dict[str, str], auditor_headers: dict[str, str]
) -> None:
    """The JSONL export of a run verifies as an unbroken chain; CSV has a header."""
    await create_key(client, admin_headers, "default/key/demo")
    token, keypair = await attest(client)
    await fetch(client, "default/key/demo", token, keypair)
    resp = await client.get("/v1/audit/export?format=jsonl", headers=auditor_headers)
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    records = [json.loads(line) for line in lines]
    report = verify_chain(records)
    assert report.count == len(records) >= 4
    events = [r["event"] for r in records]
    assert (
        "resource.released" in events and "kbs.attest" in events and "admin.key_created" in events
    )
    released = next(r for r in records if r["event"] == "resource.released")
    assert released["resource"] == "default/key/demo" and released["wrap_alg"] == "ECDH-ES+A256KW"
    assert released["pubkey_thumbprint"] and released["policy_digest"].startswith("sha256:")
    csv_text = await (
        await client.get("/v1/audit/export?format=csv", headers=auditor_headers)
    ).text()
    assert csv_text.splitlines()[0].startswith("format") or "seq" in csv_text.splitlines()[0]
    resp = await client.get("/v1/audit/export?format=xml", headers=auditor_headers)
    assert resp.status == 400
    resp = await client.get("/v1/audit/export?since=yesterday", headers=auditor_headers)
    assert resp.status == 400
