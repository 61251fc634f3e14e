"""OpenBao and PostgreSQL stopped and restarted under load, with the broker left running.

While the backend is down every flow fails with 503 (never 500) and releases
nothing; once it is back, flows succeed again on the same broker. Every 200
release has its durable ``resource.released`` audit record, and no such record
exists for a request that was refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from broker.api.app import create_app
from broker.config import Settings
from broker.logging import configure_logging
from broker.service.context import RequestContext
from broker.wiring import Services, open_services
from tests.fakes import FakeClock
from tests.faults.outage import PhasedLoad
from tests.integration.backends import postgres_backed, vault_backed
from tests.integration.openbao_fixture import openbao  # noqa: F401
from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401
from tests.openbao import TRANSIT_MOUNT, OpenBaoServer
from tests.postgres import PostgresServer

pytestmark = pytest.mark.slow

Client = TestClient[Any, Any]
KEY = "default/key/outage"
ADMIN = RequestContext(request_id="outage-test", client="local", actor="test")
DOWN_FOR = 1.5  # seconds of load against the stopped backend


def _admin_headers(settings: Settings) -> dict[str, str]:
    token = (Path(settings.server.data_dir) / "admin.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


async def _audited_releases(services: Services) -> set[str]:
    return {
        r.request_id
        async for r in services.audit.iter_records(None, None)
        if r.event == "resource.released"
    }


async def _check(load: PhasedLoad, services: Services) -> None:
    statuses = {o.status for o in load.outcomes}
    assert statuses <= {200, 503}, sorted(statuses)
    for phase in {o.phase for o in load.outcomes if o.phase.endswith("down")}:
        down = [o for o in load.outcomes if o.phase == phase]
        assert all(o.status != 200 for o in down if o.step == "resource"), phase
        assert any(o.status == 503 for o in down), phase
    released = {o.request_id for o in load.outcomes if o.step == "resource" and o.status == 200}
    assert released == await _audited_releases(services)


async def _outage(
    load: PhasedLoad, stop: Any, start: Any, during: Any = None, *, label: str = ""
) -> None:
    """``up`` (or the previous phase), ``<label>down``, ``<label>back``: 3 releases each side."""
    await load.wait_for(load.phase, "resource", 200, 3)
    async with load.hold():
        await asyncio.to_thread(stop)
        load.phase = f"{label}down"
    await asyncio.sleep(DOWN_FOR)
    if during is not None:
        await during()
    async with load.hold():
        await asyncio.to_thread(start)
        load.phase = f"{label}back"
    await load.wait_for(load.phase, "resource", 200, 3)


# -- OpenBao -----------------------------------------------------------------------------------


@pytest.fixture
def transit_key(openbao: OpenBaoServer) -> str:  # noqa: F811
    """A transit key that can be backed up: a dev server forgets everything when stopped,
    so the restart restores it, as a persistent server would simply still have it."""
    name = "outage-kek"
    openbao.root_client().secrets.transit.create_key(
        name=name,
        key_type="aes256-gcm96",
        derived=True,
        exportable=True,
        allow_plaintext_backup=True,
        mount_point=TRANSIT_MOUNT,
    )
    return name


@pytest.fixture
def vault_settings(
    settings: Settings,
    openbao: OpenBaoServer,  # noqa: F811
    transit_key: str,
    tmp_path: Path,
) -> Settings:
    return vault_backed(settings, openbao, tmp_path, transit_key=transit_key)


async def _create_refused(client: Client, headers: dict[str, str], rid: str) -> None:
    """Creating a key while the backend is down is 503 and leaves no trace of the key."""
    resp = await client.post("/v1/keys", json={"id": rid}, headers=headers)
    assert resp.status == 503, await resp.text()
    assert (await client.get(f"/v1/keys/{rid}", headers=headers)).status in (404, 503)


async def test_openbao_stopped_and_restarted_under_load(
    aiohttp_client: Any,
    vault_settings: Settings,
    openbao: OpenBaoServer,  # noqa: F811
    transit_key: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """OpenBao wedged, then killed mid-load: releases 503 and unreleased; back: they resume."""
    configure_logging("json", "debug", cache=False)
    services = await open_services(vault_settings, clock=FakeClock())
    try:
        client = await aiohttp_client(create_app(vault_settings, services=services))
        admin_headers = _admin_headers(vault_settings)
        await services.keys.create_key(KEY, ADMIN)
        backup = openbao.root_client().secrets.transit.backup_key(
            name=transit_key, mount_point=TRANSIT_MOUNT
        )["data"]["backup"]

        def restart() -> None:
            openbao.start()
            openbao.root_client().secrets.transit.restore_key(
                backup=backup, name=transit_key, mount_point=TRANSIT_MOUNT
            )

        async with PhasedLoad(client, KEY).running() as load:
            # Wedged first (SIGSTOP: requests hang until the client times out), then gone.
            await _outage(load, openbao.pause, openbao.resume, label="wedged-")
            await _outage(
                load,
                openbao.stop,
                restart,
                lambda: _create_refused(client, admin_headers, "default/key/during"),
            )
        await _check(load, services)
        assert load.count("wedged-down", "resource", 503) > 0
        missing = await client.get("/v1/keys/default/key/during", headers=admin_headers)
        assert missing.status == 404, await missing.text()
        assert all(
            o.status == 200 for o in load.outcomes if o.phase == "down" and o.step != "resource"
        ), "auth and attest do not need Vault"
    finally:
        await services.close()
        structlog.reset_defaults()
    logs = capsys.readouterr()
    assert "vault.request_failed" in logs.err or "BackendUnavailable" in logs.err
    # Outage errors name neither the Vault token nor key material.
    for secret in (openbao.root_token, backup):
        assert secret not in logs.out + logs.err


# -- PostgreSQL --------------------------------------------------------------------------------


async def test_postgres_stopped_and_restarted_under_load(
    aiohttp_client: Any,
    settings: Settings,
    postgres: PostgresServer,  # noqa: F811
    pg_dsn: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    """PostgreSQL stopped mid-load: flows 503, nothing released; restarted: same broker serves."""
    pg_settings = postgres_backed(settings, pg_dsn, tmp_path)
    services = await open_services(pg_settings, clock=FakeClock())
    try:
        client = await aiohttp_client(create_app(pg_settings, services=services))
        admin_headers = _admin_headers(pg_settings)
        await services.keys.create_key(KEY, ADMIN)
        async with PhasedLoad(client, KEY).running() as load:
            await _outage(
                load,
                postgres.stop,
                postgres.start,
                lambda: _create_refused(client, admin_headers, "default/key/during"),
            )
        await _check(load, services)
        missing = await client.get("/v1/keys/default/key/during", headers=admin_headers)
        assert missing.status == 404, await missing.text()
        assert load.count("down", "auth", 503) > 0
    finally:
        await services.close()
