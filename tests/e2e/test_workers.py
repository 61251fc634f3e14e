"""``broker serve --workers N``: several processes on one port, on the PostgreSQL store."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from broker.client import BrokerClient, SampleProvider
from tests.e2e.test_replicas import _free_port, _wait_ready
from tests.integration.conftest import write_policies
from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401

pytestmark = pytest.mark.slow


def _wait_announced(log_path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while "broker listening" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("worker 0 never announced: " + log_path.read_text()[-3000:])
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
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker.cli",
                "serve",
                "--dev",
                "--workers",
                "2",
                "--config",
                str(config),
                "--data-dir",
                str(tmp_path / "data"),
                "--port",
                str(port),
                "--policies",
                str(write_policies(tmp_path / "policies")),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
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
