"""POST /v1/policies/simulate: a draft replayed against recent audit records."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.integration.conftest import ALLOW_SAMPLE, DENY_ALL_SAMPLE
from tests.integration.kbs_helpers import attest, create_key, fetch


async def test_simulate_reports_lost_access(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """A sample guest that fetched a key would lose it under a stricter draft."""
    await create_key(client, admin_headers, "default/key/app")
    token, keypair = await attest(client)
    await fetch(client, "default/key/app", token, keypair)
    resp = await client.post(
        "/v1/policies/simulate", json={"test.yaml": DENY_ALL_SAMPLE}, headers=admin_headers
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["subjects"] == 1 and body["requests"] == 1
    assert [(c["resource"], c["tee"], c["change"]) for c in body["lose"]] == [
        ("default/key/app", "sample", "lose")
    ]
    assert body["lose"][0]["draft_reasons"] == ["rule.failed:test-sample/sample-guests#0"]
    same = await client.post(
        "/v1/policies/simulate", json={"test.yaml": ALLOW_SAMPLE}, headers=admin_headers
    )
    assert (await same.json())["lose"] == []


async def test_simulate_needs_auth_and_a_valid_draft(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """No token: 401; a draft that does not load: 400 with its first error."""
    resp = await client.post("/v1/policies/simulate", json={"a.yaml": ALLOW_SAMPLE})
    assert resp.status == 401
    resp = await client.post(
        "/v1/policies/simulate", json={"a.yaml": "version: 2\n"}, headers=admin_headers
    )
    assert resp.status == 400
    assert "DraftPolicyInvalid" in (await resp.json())["type"]
    resp = await client.post("/v1/policies/simulate", json=[], headers=admin_headers)
    assert resp.status == 400
