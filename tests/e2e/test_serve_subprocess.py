"""``broker serve`` as a real process, fetched from by ``broker client``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import DENY_ALL_SAMPLE, write_policies

pytestmark = pytest.mark.slow

BROKER = [sys.executable, "-m", "broker.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BROKER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    port = _free_port()
    data = tmp_path / "data"
    policies = write_policies(tmp_path / "policies")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            *BROKER,
            "serve",
            "--dev",
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--policies",
            str(policies),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("broker did not start: " + (tmp_path / "serve.log").read_text())
        time.sleep(0.1)
    try:
        yield url, tmp_path, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_fetch_allow_deny_replay(server: tuple[str, Path, subprocess.Popen[str]]) -> None:
    """A key is fetched (allowed), then refused by a denying policy (403), and a replayed nonce is 409."""
    url, tmp, proc = server
    env = {"BROKER_ADDR": url, "BROKER_TOKEN": "@" + str(tmp / "data" / "admin.token")}
    created = _run("keys", "create", "default/key/demo", env=env)
    assert created.returncode == 0, created.stderr
    out = tmp / "demo.key"
    got = _run(
        "client",
        "get-resource",
        "default/key/demo",
        "--url",
        url,
        "--tee",
        "sample",
        "--out",
        str(out),
    )
    assert got.returncode == 0, got.stderr
    assert len(out.read_bytes()) == 32 and (out.stat().st_mode & 0o777) == 0o600

    # Deny: swap the policy and reload with SIGHUP.
    write_policies(tmp / "policies", DENY_ALL_SAMPLE)
    proc.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    denied = _run(
        "client", "get-resource", "default/key/demo", "--url", url, "--out", str(tmp / "x.key")
    )
    assert denied.returncode != 0
    assert (
        "403" in denied.stderr
        and "PolicyDenied" in denied.stderr
        and "rule.failed" in denied.stderr
    )
    assert not (tmp / "x.key").exists()

    # Replay: the same attestation body twice on one session.
    import asyncio

    from tests.e2e.replay import replay_status

    assert asyncio.run(replay_status(url)) == (200, 409)

    # The audit trail exports and verifies offline.
    export = tmp / "audit.jsonl"
    auditor = {
        "BROKER_ADDR": url,
        "BROKER_TOKEN": (tmp / "data" / "auditor.token").read_text().strip(),
    }
    exported = _run("audit", "export", "--format", "jsonl", "--out", str(export), env=auditor)
    assert exported.returncode == 0, exported.stderr
    verified = _run("audit", "verify", str(export))
    assert verified.returncode == 0, verified.stdout + verified.stderr
