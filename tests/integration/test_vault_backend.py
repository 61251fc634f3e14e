"""The broker on the OpenBao backend: KV v2 secrets, outages, transit rotation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.adapters.vault_kek import sealed_key_version
from broker.config import Settings
from broker.wiring import Services, open_services
from tests.fakes import FakeClock
from tests.integration.backends import vault_backed
from tests.integration.kbs_helpers import attest, create_key, error_of, fetch
from tests.integration.openbao_fixture import openbao  # noqa: F401
from tests.openbao import OpenBaoServer

Client = TestClient[Any, Any]


@pytest.fixture
def settings(settings: Settings, openbao: OpenBaoServer, tmp_path: Path) -> Settings:  # noqa: F811
    return vault_backed(settings, openbao, tmp_path, transit_key=openbao.new_transit_key("broker"))


async def test_kv_secret_released(
    client: Client,
    admin_headers: dict[str, str],
    openbao: OpenBaoServer,  # noqa: F811
) -> None:
    """A resource pointing at KV v2 releases the value Vault holds now, or a pinned version."""
    v1 = openbao.write_kv("broker/app/db", {"password": "first"})
    openbao.write_kv("broker/app/db", {"password": "second"})
    for rid, ref in (
        ("default/secret/db", "app/db#password"),
        ("default/secret/db-v1", f"app/db#password@{v1}"),
    ):
        resp = await client.post(
            "/v1/secrets", json={"id": rid, "vault_kv": ref}, headers=admin_headers
        )
        assert resp.status == 201, await resp.text()
    token, keypair = await attest(client)
    assert await fetch(client, "default/secret/db", token, keypair) == b"second"
    assert await fetch(client, "default/secret/db-v1", token, keypair) == b"first"
    await client.post(
        "/v1/secrets",
        json={"id": "default/secret/gone", "vault_kv": "app/nothing#x"},
        headers=admin_headers,
    )
    resp = await client.get(
        "/kbs/v0/resource/default/secret/gone", headers={"Authorization": f"Bearer {token}"}
    )
    assert (await error_of(resp))[:2] == (404, "ResourceNotFound")
    resp = await client.post("/v1/keys/default/secret/db/rotate", json={}, headers=admin_headers)
    assert (await error_of(resp))[:2] == (409, "Conflict")


async def test_outage_is_503_then_recovers(
    client: Client,
    admin_headers: dict[str, str],
    services: Services,
    openbao: OpenBaoServer,  # noqa: F811
) -> None:
    """Vault down: 503 with an audit record, nothing released; back up: service resumes without restart."""
    await create_key(client, admin_headers, "default/key/k")
    token, keypair = await attest(client)
    with openbao.paused():
        resp = await client.get(
            "/kbs/v0/resource/default/key/k", headers={"Authorization": f"Bearer {token}"}
        )
        status, code, body = await error_of(resp)
        assert (status, code) == (503, "BackendUnavailable")
        assert "Vault" in body["detail"] and openbao.root_token not in body["detail"]
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["checks"]["vault"] != "ok"
    assert len(await fetch(client, "default/key/k", token, keypair)) == 32
    assert (await client.get("/readyz")).status == 200
    events = [(r.event, r.error_code) async for r in services.audit.iter_records(None, None)]
    assert ("resource.failed", "BackendUnavailable") in events


async def test_root_key_rotation_rewraps(
    client: Client, admin_headers: dict[str, str], services: Services
) -> None:
    """`root-key rotate` on Vault rotates the transit key and rewraps every stored value."""
    for i in range(3):
        await create_key(client, admin_headers, f"default/key/k{i}")
    token, keypair = await attest(client)
    before = [await fetch(client, f"default/key/k{i}", token, keypair) for i in range(3)]
    assert {sealed_key_version(s) for _, _, s in await services.store.all_sealed()} == {1}
    resp = await client.post("/v1/root-key/rotate", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {"resealed": 3, "key_id": "transit:v2"}
    assert {sealed_key_version(s) for _, _, s in await services.store.all_sealed()} == {2}
    kek = services.release._kek  # type: ignore[attr-defined]
    await kek.set_min_decryption_version(2)
    assert [await fetch(client, f"default/key/k{i}", token, keypair) for i in range(3)] == before


async def test_start_refuses_missing_transit_key(settings: Settings, clock: FakeClock) -> None:
    """A broker configured for a transit key that does not exist refuses to start."""
    from broker.errors import BrokerError

    bad = replace(settings, vault=replace(settings.vault, transit_key="no-such-key"))
    with pytest.raises(BrokerError):
        await open_services(bad, clock=clock)
