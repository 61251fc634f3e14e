"""``broker serve --workers N``: several processes on one port, on the PostgreSQL store
and on the embedded SQLite store of one host."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from broker.client import BrokerClient, SampleProvider
from tests.e2e.test_replicas import _attestation, _auth, _free_port, _wait_ready, check_one_log
from tests.integration.conftest import write_policies
from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401

pytestmark = pytest.mark.slow


def _wait_announced(log_path: Path, proc: subprocess.Popen[bytes], workers: int = 1) -> None:
    """Until worker 0 has announced the port and ``workers`` workers have started
    listening: with SO_REUSEPORT, a worker not yet listening gets no connection."""
    deadline = time.monotonic() + 60
    while True:
        text = log_path.read_text(errors="replace")
        started = {
            json.loads(line).get("worker")
            for line in text.splitlines()
            if '"broker.started"' in line
        }
        if "broker listening" in text and len(started) >= workers:
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("the workers never all started: " + text[-3000:])
        time.sleep(0.1)


def test_workers_share_one_port(tmp_path: Path, pg_dsn: str) -> None:  # noqa: F811
    """Two workers serve one port; sessions and keys are shared; SIGTERM stops them all."""
    dsn_file = tmp_path / "pg.dsn"
    dsn_file.write_text(pg_dsn)
    config = tmp_path / "broker.toml"
    config.write_text(f'[store]\nbackend = "postgres"\ndsn_file = "{dsn_file}"\n')
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = _serve(tmp_path, port, log, "--workers", "2", "--config", str(config))
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc, log_path)
            # /readyz answers as soon as one worker listens; worker 0 (the one that
            # announces) may still be starting on a loaded machine.
            _wait_announced(log_path, proc)
            token = (tmp_path / "data" / "admin.token").read_text().strip()

            async def flow() -> list[int]:
                import aiohttp

                async with (
                    aiohttp.ClientSession() as http,
                    http.post(
                        f"{url}/v1/keys",
                        json={"id": "default/key/w"},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as resp,
                ):
                    assert resp.status == 201
                sizes = []
                for _ in range(8):  # new connections: the kernel spreads them over the workers
                    async with BrokerClient(url) as client:
                        released = await client.get_resource("default/key/w", SampleProvider())
                        sizes.append(len(released.value))
                async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as resp:
                    text = await resp.text()
                assert "broker_releases_total" in text
                return sizes

            assert asyncio.run(flow()) == [32] * 8
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0 or proc.returncode is not None
    assert "broker listening" in log_path.read_text()


def _serve(tmp_path: Path, port: int, log: object, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker.cli",
            "serve",
            "--dev",
            *extra,
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(port),
            "--policies",
            str(write_policies(tmp_path / "policies")),
        ],
        stdout=log,  # type: ignore[arg-type]
        stderr=subprocess.STDOUT,
    )


async def _one_enclave(url: str, key: str) -> str:
    """auth, attest and fetch, each on a new connection (so on any worker); the receipt."""

    def fresh() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async with fresh() as http:
        nonce, session = await _auth(http, url)
    async with (
        fresh() as http,
        http.post(
            f"{url}/kbs/v0/attest",
            json=_attestation(nonce),
            headers={"Cookie": f"kbs-session-id={session}"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        token = (await r.json())["token"]
    async with (
        fresh() as http,
        http.get(f"{url}/kbs/v0/resource/{key}", headers={"Authorization": f"Bearer {token}"}) as r,
    ):
        assert r.status == 200, await r.text()
        return r.headers["X-Audit-Receipt"]


async def _sqlite_flow(url: str, admin: str, auditor: str) -> None:
    key = "default/key/w"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/v1/keys", json={"id": key}, headers={"Authorization": f"Bearer {admin}"}
        ) as r:
            assert r.status == 201, await r.text()
        # A nonce is consumed once, whichever worker sees it again.
        nonce, session = await _auth(http, url)
        body, cookie = _attestation(nonce), {"Cookie": f"kbs-session-id={session}"}
        statuses = []
        for _ in range(4):
            async with (
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh,
                fresh.post(f"{url}/kbs/v0/attest", json=body, headers=cookie) as r,
            ):
                statuses.append(r.status)
        assert statuses == [200, 409, 409, 409]
    received = await asyncio.gather(*(_one_enclave(url, key) for _ in range(40)))

    await check_one_log(url, url, auditor, received)


def test_workers_share_one_sqlite_data_dir(tmp_path: Path) -> None:
    """Two workers on one SQLite data dir: sessions, nonces and one audit log are shared."""
    port = _free_port()
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        proc = _serve(tmp_path, port, log, "--workers", "2")
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc, log_path)
            _wait_announced(log_path, proc, workers=2)
            data = tmp_path / "data"
            admin = (data / "admin.token").read_text().strip()
            auditor = (data / "auditor.token").read_text().strip()
            asyncio.run(_sqlite_flow(url, admin, auditor))
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0 or proc.returncode is not None
    served = set()
    for line in log_path.read_text(errors="replace").splitlines():
        if '"request.done"' in line:
            served.add(json.loads(line).get("worker"))
    assert served == {0, 1}  # both workers answered: the flows did cross them
