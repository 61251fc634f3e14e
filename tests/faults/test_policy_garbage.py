"""A policy file replaced with garbage while releases run: the last good set stays in force."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.config import Settings
from broker.service.context import RequestContext
from broker.wiring import Services
from tests.faults.broker_proc import BrokerProcess
from tests.faults.ledger import Tally, release_many
from tests.integration.conftest import ALLOW_SAMPLE, write_policies
from tests.integration.kbs_helpers import attest, fetch

Client = TestClient[Any, Any]
KEY = "default/key/policy"
ADMIN = RequestContext(request_id="policy-test", client="local", actor="test")

GARBAGE = {
    "binary": os.urandom(512),
    "truncated": ALLOW_SAMPLE.encode()[: len(ALLOW_SAMPLE) // 2] + b"\n  - [",
    "not-a-policy": b"- just\n- a list\n",
    "bad-expression": ALLOW_SAMPLE.replace("claims.svn >= 1", "claims.svn >=== ((").encode(),
    "empty": b"",
    "nul-bytes": b"\x00" * 64,
}


async def _status(client: Client, headers: dict[str, str]) -> dict[str, Any]:
    resp = await client.get("/v1/policies", headers=headers)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def test_garbage_policy_keeps_last_good_set_under_load(
    client: Client, services: Services, settings: Settings, admin_headers: dict[str, str]
) -> None:
    """Garbage policies under load: reload 422, old set kept and reported, releases go on."""
    # Each kind of garbage: /v1/policies reports the error with the old digest, and every
    # release running meanwhile is allowed; a good file clears the error.
    await services.keys.create_key(KEY, ADMIN)
    policy_file = Path(settings.policy.dir) / "test.yaml"
    good = (await _status(client, admin_headers))["digest"]
    stop = asyncio.Event()
    released: list[int] = []

    async def load() -> None:
        while not stop.is_set():
            token, keypair = await attest(client)
            assert len(await fetch(client, KEY, token, keypair)) == 32
            released.append(1)

    workers = [asyncio.create_task(load()) for _ in range(4)]
    try:
        for name, garbage in GARBAGE.items():
            policy_file.write_bytes(garbage)
            resp = await client.post("/v1/policies/reload", headers=admin_headers)
            assert resp.status == 422, (name, await resp.text())
            status = await _status(client, admin_headers)
            assert status["digest"] == good, name
            assert status["last_reload_error"], name
            await asyncio.sleep(0.05)
        write_policies(policy_file.parent)
        resp = await client.post("/v1/policies/reload", headers=admin_headers)
        assert resp.status == 200, await resp.text()
        assert (await _status(client, admin_headers))["last_reload_error"] == ""
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert len(released) >= len(GARBAGE)


@pytest.mark.slow
def test_sighup_with_garbage_keeps_serving(tmp_path: Path) -> None:
    """``broker serve``: garbage + SIGHUP under load keeps releases working, reports the error."""
    write_policies(tmp_path / "policies")
    broker = BrokerProcess(tmp_path)
    broker.start()
    try:
        body = json.dumps({"id": KEY}).encode()
        assert broker.request("POST", "/v1/keys", token=broker.admin_token(), body=body)[0] == 201
        tally = Tally()

        async def run() -> None:
            loads = [
                asyncio.create_task(release_many(broker.url, KEY, 15, tally)) for _ in range(3)
            ]
            for garbage in GARBAGE.values():
                (tmp_path / "policies" / "test.yaml").write_bytes(garbage)
                broker.signal(signal.SIGHUP)
                await asyncio.sleep(0.1)
            await asyncio.gather(*loads)

        asyncio.run(run())
        assert tally.outcomes == ["200"] * 45, tally.failures
        deadline = time.monotonic() + 5
        while True:
            status, text = broker.request("GET", "/v1/policies", token=broker.admin_token())
            assert status == 200, text
            if json.loads(text)["last_reload_error"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert json.loads(text)["last_reload_error"]
    finally:
        broker.stop()
    assert "policy.reload_failed" in broker.output()
