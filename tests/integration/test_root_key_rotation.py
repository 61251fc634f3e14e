"""Root-key rotation: every value re-sealed, no release failing, crash-safe at each step."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.adapters.datadir import load_root_keys
from broker.adapters.local_kek import LocalKEK
from broker.adapters.local_root_key import LocalRootKeyManager
from broker.config import Settings
from broker.keys.sealing import sealed_key_id
from broker.service.context import RequestContext
from broker.wiring import Services, open_services
from tests.fakes import FakeClock
from tests.integration.kbs_helpers import attest, create_key, fetch

Client = TestClient[Any, Any]
ADMIN = RequestContext(request_id="t", client="test", actor="token:admin")


async def _readable(services: Services) -> dict[tuple[str, int], bytes]:
    kek = services.root_key._manager._kek  # type: ignore[attr-defined]
    return {
        (r, v): kek.unseal_now(s, resource=r, version=v).reveal()
        for r, v, s in await services.store.all_sealed()
    }


async def test_rotation_under_load(
    client: Client, services: Services, admin_headers: dict[str, str], settings: Settings
) -> None:
    """Releases keep working while the root key rotates; afterwards one new key seals everything."""
    data = Path(settings.server.data_dir)
    for i in range(20):
        await create_key(client, admin_headers, f"default/key/k{i}")
    secret = os.urandom(40)
    await client.post(
        "/v1/secrets",
        json={"id": "default/secret/s", "value": base64.b64encode(secret).decode()},
        headers=admin_headers,
    )
    old_key = (data / "root.key").read_bytes()
    before = await _readable(services)
    token, keypair = await attest(client)

    async def releases() -> int:
        done = 0
        for i in range(60):
            await fetch(client, f"default/key/k{i % 20}", token, keypair)
            done += 1
        return done

    loader = asyncio.create_task(releases())
    resp = await client.post("/v1/root-key/rotate", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["resealed"] == 21
    assert await loader == 60
    assert (data / "root.key").read_bytes() != old_key
    assert not (data / "root.key.next").exists()
    after = await _readable(services)
    assert after == before
    kids = {sealed_key_id(s) for _, _, s in await services.store.all_sealed()}
    assert len(kids) == 1
    assert await fetch(client, "default/secret/s", token, keypair) == secret
    # No plaintext reached the disk.
    await services.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for name in os.listdir(data):
        raw = (data / name).read_bytes()
        assert secret not in raw and old_key not in raw


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", [1, 2, 3, 4])
async def test_interrupted_rotation_leaves_store_readable(
    settings: Settings, clock: FakeClock, step: int
) -> None:
    """A rotation stopped after any step leaves every value readable after restart, and the next rotation finishes."""
    data = Path(settings.server.data_dir)
    first = await open_services(settings, clock=clock)
    for i in range(5):
        await first.keys.create_key(f"default/key/k{i}", ADMIN)
    expected = await _readable(first)

    def crash(at: int) -> None:
        if at == step:
            raise Crash

    current, others = load_root_keys(data, create=False)
    manager = LocalRootKeyManager(data, LocalKEK(current, others), first.store, after_step=crash)
    with pytest.raises(Crash):
        await manager.rotate()
    await first.close()

    second = await open_services(settings, clock=clock)
    try:
        assert await _readable(second) == expected
        await second.root_key.rotate(ADMIN)
        assert not (data / "root.key.next").exists()
        assert await _readable(second) == expected
        assert len({sealed_key_id(s) for _, _, s in await second.store.all_sealed()}) == 1
    finally:
        await second.close()


@pytest.mark.slow
async def test_kill_9_mid_rotation(settings: Settings, clock: FakeClock) -> None:
    """SIGKILL of an offline rotation at several points never leaves the store unreadable."""
    data = Path(settings.server.data_dir)
    svc = await open_services(settings, clock=clock)
    for i in range(1500):
        await svc.keys.put_secret(f"default/secret/s{i}", os.urandom(64), ADMIN)
    expected = await _readable(svc)
    await svc.close()
    for delay in (0.05, 0.15, 0.3, 0.6, 1.0):
        proc = subprocess.Popen(  # noqa: ASYNC220 - the child runs unattended
            [
                sys.executable,
                "-m",
                "broker.cli",
                "root-key",
                "rotate",
                "--offline",
                "--data-dir",
                str(data),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)  # noqa: ASYNC251 - nothing else runs meanwhile
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        reopened = await open_services(settings, clock=clock)
        try:
            assert await _readable(reopened) == expected
        finally:
            await reopened.close()
