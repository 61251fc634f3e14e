"""Named regressions for what the schemathesis run found (each was a 500 or a lax answer)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request

from broker.api.kbs import _version_param
from broker.errors import MalformedRequest

KEY = "default/schemathesis/k1"


async def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    assert set(body) >= {"type", "detail", "request_id"}
    return body


@pytest.mark.parametrize("version", ["35045382686968598520", "\u0663", "-1", "+1", "0", "9" * 5000])
async def test_key_version_path_out_of_range_is_400(
    client: TestClient[Any, Any], admin_headers: dict[str, str], version: str
) -> None:
    """A version path segment that is huge, signed or non-ASCII is a 400, not a store crash."""
    await client.post("/v1/keys", json={"id": KEY}, headers=admin_headers)
    response = await client.post(f"/v1/keys/{KEY}/versions/{version}/retire", headers=admin_headers)
    body = await _error(response, 400)
    assert body["type"] == "/errors/MalformedRequest"


@pytest.mark.parametrize("version", ["\u00b2", "\u0663", "9" * 5000])
def test_resource_version_query_non_ascii_digits_are_malformed(version: str) -> None:
    """?version=² passed isdigit() but crashed int(); now it is MalformedRequest."""
    request = make_mocked_request("GET", "/kbs/v0/resource/a/b/c", headers={})
    request = request.clone(rel_url=request.rel_url.with_query(version=version))
    with pytest.raises(MalformedRequest):
        _version_param(request)


@pytest.mark.parametrize("value", [2**63, -1])
async def test_min_release_version_out_of_range_is_400(
    client: TestClient[Any, Any], admin_headers: dict[str, str], value: int
) -> None:
    """min_release_version beyond what the store holds (or negative) is refused at the wire."""
    await client.post("/v1/keys", json={"id": KEY}, headers=admin_headers)
    response = await client.patch(
        f"/v1/keys/{KEY}", json={"min_release_version": value}, headers=admin_headers
    )
    await _error(response, 400)


async def test_repeated_checkpoint_size_is_400(client: TestClient[Any, Any]) -> None:
    """?size=&size=3 was read as 'no size' (first value); a repeated parameter is now refused."""
    response = await client.get("/v1/audit/checkpoint?size=&size=3")
    await _error(response, 400)


async def test_proof_format_matches_the_document(
    client: TestClient[Any, Any], admin_headers: dict[str, str]
) -> None:
    """The proofs' "format" member is an integer, as the OpenAPI document now says."""
    await client.post("/v1/audit/checkpoint", headers=admin_headers)
    response = await client.get("/v1/audit/proof/consistency?from=0&to=0", headers=admin_headers)
    assert response.status == 200
    assert isinstance((await response.json())["format"], int)
