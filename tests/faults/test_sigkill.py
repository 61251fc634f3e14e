"""SIGKILL of ``broker serve`` while it creates, rotates and releases keys.

The store lives in the broker's process, so killing the broker kills the store
in the middle of whatever transaction it had open. After each kill: both SQLite
files pass ``PRAGMA integrity_check``, no resource lacks its version row, every
acknowledged write is there, and every release a client got has a durable audit
record (tests/e2e/test_audit_crash.py proves the same receipts' Merkle inclusion).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path

import aiohttp
import pytest

from broker.client import BrokerClient, SampleProvider
from tests.faults.broker_proc import BrokerProcess, integrity_check, store_defects
from tests.faults.ledger import Tally, assert_every_release_recorded, read_log, release_once
from tests.integration.conftest import write_policies

pytestmark = pytest.mark.slow

HOT = "default/key/hot"


class Acked:
    """Admin writes the broker answered 2xx to (these must survive the kill)."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.rotated: dict[str, int] = {}


async def _admin_load(url: str, token: str, prefix: str, acked: Acked, stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        n = 0
        while not stop.is_set():
            rid = f"default/{prefix}/k{n}"
            n += 1
            try:
                async with http.post(f"{url}/v1/keys", json={"id": rid}) as resp:
                    if resp.status == 201:
                        acked.created.append(rid)
                async with http.post(f"{url}/v1/keys/{HOT}/rotate", json={}) as resp:
                    if resp.status == 200:
                        version = int((await resp.json())["current_version"])
                        acked.rotated[HOT] = max(acked.rotated.get(HOT, 0), version)
            except (aiohttp.ClientError, TimeoutError):
                return


async def _release_load(
    url: str, tally: Tally, target: int, reached: asyncio.Event, stop: asyncio.Event
) -> None:
    async with BrokerClient(url, timeout=5) as client:
        while not stop.is_set() and not tally.unreachable:
            await release_once(client, HOT, tally)
            if len(tally.receipts) >= target:
                reached.set()
    reached.set()  # the broker went away first: never leave the killer waiting


async def _load_then_kill(
    broker: BrokerProcess, prefix: str, *, kill_after_releases: int, acked: Acked, tally: Tally
) -> None:
    reached, stop = asyncio.Event(), asyncio.Event()
    target = len(tally.receipts) + kill_after_releases
    tally.unreachable = 0

    async def killer() -> None:
        await reached.wait()
        # A little jitter, so the kill lands at a different point of some transaction each time.
        await asyncio.sleep(random.uniform(0, 0.05))
        broker.kill()
        stop.set()

    token = broker.admin_token()
    await asyncio.gather(
        killer(),
        *(_admin_load(broker.url, token, f"{prefix}{i}", acked, stop) for i in range(2)),
        *(_release_load(broker.url, tally, target, reached, stop) for _ in range(4)),
    )


def _check_store(path: Path, acked: Acked) -> None:
    assert integrity_check(path) == "ok"
    assert store_defects(path) == []
    conn = sqlite3.connect(path)
    try:
        ids = {row[0] for row in conn.execute("SELECT id FROM resources")}
        hot = conn.execute("SELECT current_version FROM resources WHERE id = ?", (HOT,)).fetchone()
    finally:
        conn.close()
    assert set(acked.created) <= ids, "an acknowledged key was lost"
    assert hot[0] >= acked.rotated.get(HOT, 1), "an acknowledged rotation was lost"


async def _read_every_key(url: str, token: str) -> int:
    """Each stored key answers its admin GET and is released (unwrapped) to an attester."""
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http,
        BrokerClient(url) as client,
    ):
        async with http.get(f"{url}/v1/keys") as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
        items = body["keys"] if isinstance(body, dict) else body
        ids = [item["id"] for item in items]
        keypair = await client.attest(SampleProvider())
        for rid in ids:
            async with http.get(f"{url}/v1/keys/{rid}") as resp:
                assert resp.status == 200, (rid, await resp.text())
            released = await client.fetch(rid, keypair)
            assert len(released.value.reveal()) == 32
        return len(ids)


def test_sigkill_under_load_loses_nothing(tmp_path: Path) -> None:
    """kill -9 under load: stores intact, no half-created key, nothing acknowledged lost."""
    # Two rounds under creation + rotation + release load; every received key is durably
    # recorded.
    write_policies(tmp_path / "policies")
    broker = BrokerProcess(tmp_path)
    acked, tally = Acked(), Tally()
    for round_no, kill_after in enumerate((25, 5)):
        broker.start()
        if round_no == 0:
            body = json.dumps({"id": HOT}).encode()
            assert (
                broker.request("POST", "/v1/keys", token=broker.admin_token(), body=body)[0] == 201
            )
        try:
            asyncio.run(
                _load_then_kill(
                    broker,
                    f"r{round_no}-",
                    kill_after_releases=kill_after,
                    acked=acked,
                    tally=tally,
                )
            )
        finally:
            broker.kill()
        assert broker.proc is not None and broker.proc.returncode == -9
        # The store and the log as a restart would find them (sqlite3 recovers the WAL).
        _check_store(broker.data / "broker.db", acked)
        assert integrity_check(broker.data / "audit.db") == "ok"
        records, verified = read_log(broker.data / "audit.db")
        assert verified == len(records)
        assert_every_release_recorded(records, tally.receipts, exact=False)
    assert len(tally.receipts) >= 30 and acked.created and acked.rotated
    assert not [f for f in tally.failures if f[0] >= 500], tally.failures

    broker.start()
    try:
        count = asyncio.run(_read_every_key(broker.url, broker.admin_token()))
    finally:
        broker.stop()
    assert count >= len(acked.created) + 1
