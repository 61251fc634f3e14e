"""kill -9 during a load of releases: every receipt a client got is in the log after restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from broker.audit.audit_key import trusted_keys
from broker.audit.checkpoint import verify_checkpoint
from broker.audit.proofs import InclusionProof
from broker.audit.receipt import Receipt, verify_receipt_inclusion
from broker.audit.verify_export import verify_export
from broker.client import BrokerClient, RemoteError, SampleProvider
from broker.errors import BackendError
from tests.e2e.test_serve_subprocess import BROKER, _free_port, _run
from tests.integration.conftest import write_policies

pytestmark = pytest.mark.slow

RESOURCE = "default/key/demo"
WORKERS = 8
MAX_RELEASES = 400
KILL_AFTER = 60


def _start(tmp: Path, port: int, log_name: str) -> subprocess.Popen[bytes]:
    log = (tmp / log_name).open("wb")
    proc = subprocess.Popen(
        [*BROKER, "serve", "--dev", "--data-dir", str(tmp / "data"), "--port", str(port),
         "--policies", str(tmp / "policies")],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("broker did not start: " + (tmp / log_name).read_text())
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


async def _load(url: str, proc: subprocess.Popen[bytes]) -> list[Receipt]:
    """Releases from several clients until the broker is killed (or the cap is reached)."""
    receipts: list[Receipt] = []
    killed = asyncio.Event()

    async def worker() -> None:
        async with BrokerClient(url, timeout=5) as client:
            while not killed.is_set() and len(receipts) < MAX_RELEASES:
                try:
                    released = await client.get_resource(RESOURCE, SampleProvider())
                except (BackendError, RemoteError):
                    return  # the broker is gone: what was answered before counts
                assert released.receipt is not None
                receipts.append(released.receipt)
                if len(receipts) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return receipts


def _get(url: str, path: str, token: str | None = None) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url + path, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as resp:
        return bytes(resp.read())


def test_kill_9_loses_no_receipted_release(tmp_path: Path) -> None:
    """After kill -9 and restart, each receipted release is proven included; the full log verifies."""
    write_policies(tmp_path / "policies")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port, "serve1.log")
    try:
        env = {"BROKER_ADDR": url, "BROKER_TOKEN": "@" + str(tmp_path / "data" / "admin.token")}
        assert _run("keys", "create", RESOURCE, env=env).returncode == 0
        receipts = asyncio.run(_load(url, proc))
        proc.wait(timeout=15)
    finally:
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL
    assert len(receipts) >= KILL_AFTER

    proc = _start(tmp_path, port, "serve2.log")
    try:
        auditor = (tmp_path / "data" / "auditor.token").read_text().strip()
        keys: dict[str, Any] = trusted_keys(
            line for line in _run("audit", "keys", "--url", url).stdout.splitlines() if line
        )
        export = tmp_path / "audit.jsonl"
        done = _run("audit", "export", "--url", url, "--token", auditor, "--out", str(export))
        assert done.returncode == 0, done.stderr
        note = (tmp_path / "audit.jsonl.checkpoint").read_text()
        cp = verify_checkpoint(note, keys)
        with export.open("rb") as f:
            result = verify_export(f, [note], keys)
        assert result.count == cp.size
        for receipt in receipts:
            raw = _get(
                url, f"/v1/audit/proof/inclusion?index={receipt.seq}&size={cp.size}", auditor
            )
            verify_receipt_inclusion(receipt, InclusionProof.from_json(raw).hashes, cp)
    finally:
        _stop(proc)
