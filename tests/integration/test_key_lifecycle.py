"""Versioned keys: rotation never makes old data unreadable; floors, retirement, destruction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.adapters.sqlite_db import SQLiteDB
from broker.client.session import _token_jti
from broker.config import Settings
from broker.keys.unwrap import ClientKeyPair, unwrap
from broker.keys.wrap import WrapContext
from broker.wiring import Services
from tests.fakes import FakeClock
from tests.integration.backends import postgres_backed, vault_backed
from tests.integration.kbs_helpers import attest, create_key, error_of
from tests.integration.openbao_fixture import openbao  # noqa: F401
from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401

Client = TestClient[Any, Any]
KEY = "default/key/disk"


@pytest.fixture(params=["local", "openbao", "postgres"])
def settings(settings: Settings, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Every test of this suite runs on the local store, on a real OpenBao transit key,
    and with keys and sessions in a real PostgreSQL."""
    if request.param == "local":
        return settings
    if request.param == "postgres":
        return postgres_backed(settings, request.getfixturevalue("pg_dsn"), tmp_path)
    return vault_backed(settings, request.getfixturevalue("openbao"), tmp_path)


async def _get(
    client: Client, token: str, keypair: ClientKeyPair, version: int | None = None
) -> tuple[int, bytes]:
    query = "" if version is None else f"?version={version}"
    resp = await client.get(
        f"/kbs/v0/resource/{KEY}{query}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200, await resp.text()
    got = int(resp.headers["X-Key-Version"])
    value = unwrap(
        await resp.json(),
        keypair,
        context=WrapContext(resource=KEY, version=got, jti=_token_jti(token)),
    )
    return got, value


async def _status(client: Client, token: str, version: int) -> tuple[int, str]:
    resp = await client.get(
        f"/kbs/v0/resource/{KEY}?version={version}", headers={"Authorization": f"Bearer {token}"}
    )
    status, code, _ = await error_of(resp)
    return status, code


async def test_rotation_keeps_old_versions_readable(
    client: Client, admin_headers: dict[str, str]
) -> None:
    """Data encrypted with version 1 stays decryptable after rotation by fetching version 1."""
    await create_key(client, admin_headers, KEY)
    token, keypair = await attest(client)
    v1, key1 = await _get(client, token, keypair)
    assert v1 == 1
    resp = await client.post(f"/v1/keys/{KEY}/rotate", json={}, headers=admin_headers)
    assert (await resp.json())["current_version"] == 2
    v2, key2 = await _get(client, token, keypair)
    assert v2 == 2 and key2 != key1
    assert await _get(client, token, keypair, 1) == (1, key1)


async def test_min_release_version_refuses_old(
    client: Client, admin_headers: dict[str, str]
) -> None:
    """After min_release_version is raised, version 1 is refused with a clear error."""
    await create_key(client, admin_headers, KEY)
    await client.post(f"/v1/keys/{KEY}/rotate", json={}, headers=admin_headers)
    resp = await client.patch(
        f"/v1/keys/{KEY}", json={"min_release_version": 2}, headers=admin_headers
    )
    assert (await resp.json())["min_release_version"] == 2
    token, keypair = await attest(client)
    assert await _status(client, token, 1) == (403, "KeyVersionNotReleasable")
    assert (await _get(client, token, keypair))[0] == 2
    resp = await client.patch(
        f"/v1/keys/{KEY}", json={"min_release_version": 9}, headers=admin_headers
    )
    assert resp.status == 400


async def test_retire_and_restore(client: Client, admin_headers: dict[str, str]) -> None:
    """A retired version is not releasable; restoring it makes it releasable again."""
    await create_key(client, admin_headers, KEY)
    await client.post(f"/v1/keys/{KEY}/rotate", json={}, headers=admin_headers)
    assert (
        await client.post(f"/v1/keys/{KEY}/versions/1/retire", headers=admin_headers)
    ).status == 204
    token, keypair = await attest(client)
    assert await _status(client, token, 1) == (403, "KeyVersionNotReleasable")
    assert (
        await client.post(f"/v1/keys/{KEY}/versions/1/restore", headers=admin_headers)
    ).status == 204
    assert (await _get(client, token, keypair, 1))[0] == 1


async def test_destroy_erases_material(
    client: Client, admin_headers: dict[str, str], services: Services, settings: Settings
) -> None:
    """A destroyed version is gone from the store, not just flagged."""
    await create_key(client, admin_headers, KEY)
    before = {(r, v): s for r, v, s in await services.store.all_sealed()}
    sealed_v1 = before[(KEY, 1)]
    await client.post(f"/v1/keys/{KEY}/rotate", json={}, headers=admin_headers)
    resp = await client.post(f"/v1/keys/{KEY}/versions/2/destroy", headers=admin_headers)
    assert (await error_of(resp))[:2] == (409, "Conflict")  # current cannot be destroyed
    assert (
        await client.post(f"/v1/keys/{KEY}/versions/1/destroy", headers=admin_headers)
    ).status == 204
    token, _ = await attest(client)
    assert await _status(client, token, 1) == (410, "KeyVersionDestroyed")
    assert (KEY, 1) not in {(r, v) for r, v, _ in await services.store.all_sealed()}
    if isinstance(services.db, SQLiteDB):  # PostgreSQL pages are checked in test_pg_stores
        await services.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw = (Path(settings.server.data_dir) / "broker.db").read_bytes()
        assert sealed_v1 not in raw
    shown = await (await client.get(f"/v1/keys/{KEY}", headers=admin_headers)).json()
    assert [v["state"] for v in shown["versions"]] == ["destroyed", "active"]


async def test_unknown_version(client: Client, admin_headers: dict[str, str]) -> None:
    """A version that never existed is 404; a malformed one is 400."""
    await create_key(client, admin_headers, KEY)
    token, _ = await attest(client)
    assert await _status(client, token, 7) == (404, "ResourceNotFound")
    resp = await client.get(
        f"/kbs/v0/resource/{KEY}?version=x", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 400


async def test_secret_rotation_needs_value(client: Client, admin_headers: dict[str, str]) -> None:
    """A secret rotates to an uploaded value; a data key refuses one."""
    import base64

    await client.post(
        "/v1/secrets",
        json={"id": KEY, "value": base64.b64encode(b"one").decode()},
        headers=admin_headers,
    )
    assert (
        await client.post(f"/v1/keys/{KEY}/rotate", json={}, headers=admin_headers)
    ).status == 400
    resp = await client.post(
        f"/v1/keys/{KEY}/rotate",
        json={"value": base64.b64encode(b"two").decode()},
        headers=admin_headers,
    )
    assert resp.status == 200
    token, keypair = await attest(client)
    assert (await _get(client, token, keypair))[1] == b"two"
    assert (await _get(client, token, keypair, 1))[1] == b"one"


async def test_policy_can_require_current(
    client: Client, admin_headers: dict[str, str], settings: Settings
) -> None:
    """A rule conditioned on resource.is_current refuses older versions."""
    from tests.integration.conftest import write_policies

    write_policies(
        Path(settings.policy.dir),
        """\
version: 1
name: test-sample
resources: ["default/*/*"]
rules:
  - name: current-only
    tee: sample
    when:
      - claims.svn >= 1
      - resource.is_current
""",
    )
    assert (await client.post("/v1/policies/reload", headers=admin_headers)).status == 200
    await create_key(client, admin_headers, KEY)
    await client.post(f"/v1/keys/{KEY}/rotate", json={}, headers=admin_headers)
    token, keypair = await attest(client)
    assert (await _get(client, token, keypair))[0] == 2
    assert await _status(client, token, 1) == (403, "PolicyDenied")


async def test_lifecycle_is_audited(
    client: Client, admin_headers: dict[str, str], services: Services
) -> None:
    """Every lifecycle action lands in the audit log with who did it."""
    await create_key(client, admin_headers, KEY)
    await client.post(f"/v1/keys/{KEY}/rotate", json={}, headers=admin_headers)
    await client.patch(
        f"/v1/keys/{KEY}",
        json={"min_release_version": 2, "rotate_every": "30d"},
        headers=admin_headers,
    )
    await client.post(f"/v1/keys/{KEY}/versions/1/retire", headers=admin_headers)
    await client.post(f"/v1/keys/{KEY}/versions/1/destroy", headers=admin_headers)
    records = [r async for r in services.audit.iter_records(None, None)]
    events = [(r.event, r.actor, r.version) for r in records if r.event.startswith("admin.key")]
    assert events == [
        ("admin.key_created", "token:admin", 1),
        ("admin.key_rotated", "token:admin", 2),
        ("admin.key_configured", "token:admin", None),
        ("admin.key_version_retired", "token:admin", 1),
        ("admin.key_version_destroyed", "token:admin", 1),
    ]


async def test_scheduled_rotation(
    client: Client, admin_headers: dict[str, str], services: Services, clock: FakeClock
) -> None:
    """Keys past rotate_every rotate once per period, and `due` lists them."""
    resp = await client.post(
        "/v1/keys", json={"id": KEY, "rotate_every": "1d"}, headers=admin_headers
    )
    assert resp.status == 201
    assert await services.rotation.run_once() == []
    clock.advance(86400)
    due = await (await client.get("/v1/keys?due=true", headers=admin_headers)).json()
    assert [d["id"] for d in due] == [KEY]
    assert await services.rotation.run_once() == [KEY]
    assert await services.rotation.run_once() == []
    assert (await services.store.info(KEY)).current_version == 2
    records = [r async for r in services.audit.iter_records(None, None)]
    assert any(r.event == "admin.key_rotated" and r.actor == "scheduler" for r in records)


async def test_concurrent_writes_do_not_collide(
    client: Client, admin_headers: dict[str, str]
) -> None:
    """Many creates, rotations and attestations at once: no 5xx, every key present."""
    import asyncio

    async def make(i: int) -> int:
        resp = await client.post(
            "/v1/keys", json={"id": f"default/key/c{i}"}, headers=admin_headers
        )
        return resp.status

    statuses = await asyncio.gather(
        *(make(i) for i in range(30)), *(attest(client) for _ in range(10))
    )
    assert [s for s in statuses if isinstance(s, int)] == [201] * 30
    rotations = await asyncio.gather(
        *(
            client.post(f"/v1/keys/default/key/c{i}/rotate", json={}, headers=admin_headers)
            for i in range(30)
        )
    )
    assert [r.status for r in rotations] == [200] * 30
    listed = await (await client.get("/v1/keys", headers=admin_headers)).json()
    assert len(listed) == 30 and {k["current_version"] for k in listed} == {2}
