"""Three broker replicas on one PostgreSQL: shared sessions, one audit log, a replica killed mid-load."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import rfc8785

from broker.audit.audit_key import trusted_keys
from broker.audit.merkle import leaf_hash
from broker.audit.receipt import decode_receipt_header
from broker.audit.verify_export import verify_export
from broker.evidence.binding import expectation_for
from broker.keys.unwrap import ClientKeyPair
from tests.integration.conftest import write_policies
from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401

pytestmark = pytest.mark.slow
REPLICAS = 3
KEY = "default/key/fleet"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail("replica did not start: " + log.read_text()[-3000:])


@pytest.fixture
def replicas(tmp_path: Path, pg_dsn: str) -> Iterator[list[tuple[str, subprocess.Popen[bytes]]]]:  # noqa: F811
    keys_dir = tmp_path / "keys"
    policies = write_policies(tmp_path / "policies")
    dsn_file = tmp_path / "pg.dsn"
    dsn_file.write_text(pg_dsn)
    started: list[tuple[str, subprocess.Popen[bytes]]] = []
    logs = []
    try:
        for i in range(REPLICAS):
            config = tmp_path / f"r{i}.toml"
            config.write_text(
                f'[server]\nkeys_dir = "{keys_dir}"\n'
                f'[store]\nbackend = "postgres"\ndsn_file = "{dsn_file}"\n'
                "[audit]\ncheckpoint_interval_seconds = 1\n"
            )
            port = _free_port()
            log = (tmp_path / f"r{i}.log").open("wb")
            logs.append(log)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "broker.cli",
                    "serve",
                    "--dev",
                    "--config",
                    str(config),
                    "--data-dir",
                    str(tmp_path / f"data{i}"),
                    "--port",
                    str(port),
                    "--policies",
                    str(policies),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            url = f"http://127.0.0.1:{port}"
            _wait_ready(url, proc, tmp_path / f"r{i}.log")  # one at a time: the first creates keys
            started.append((url, proc))
        yield started
    finally:
        for _, proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


async def _auth(http: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    async with http.post(
        f"{url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
    ) as r:
        r.raise_for_status()
        return (await r.json())["nonce"], r.cookies["kbs-session-id"].value


def _attestation(nonce: str) -> dict[str, Any]:
    pubkey = ClientKeyPair.generate("p256").public_jwk()
    report = expectation_for(nonce, pubkey, "").report_data
    return {
        "runtime-data": {"nonce": nonce, "tee-pubkey": pubkey},
        "tee-evidence": {
            "primary_evidence": {"svn": "1", "report_data": base64.b64encode(report).decode()}
        },
    }


async def _enclave(
    urls: list[str], rng: random.Random, received: list[str], failures: list[str]
) -> None:
    """auth on one replica, attest on another, fetch from a third; record receipts."""
    a, b, c = (rng.choice(urls) for _ in range(3))
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            nonce, session = await _auth(http, a)
            cookie = {"Cookie": f"kbs-session-id={session}"}
            async with http.post(
                f"{b}/kbs/v0/attest", json=_attestation(nonce), headers=cookie
            ) as r:
                r.raise_for_status()
                token = (await r.json())["token"]
            async with http.get(
                f"{c}/kbs/v0/resource/{KEY}", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                r.raise_for_status()
                received.append(r.headers["X-Audit-Receipt"])
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        failures.append(type(exc).__name__)


async def _run(urls: list[str], kill: subprocess.Popen[bytes], admin: str, auditor: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{urls[0]}/v1/keys", json={"id": KEY}, headers={"Authorization": f"Bearer {admin}"}
        ) as r:
            assert r.status == 201, await r.text()
        # Cross-replica: auth on A, attest on B works; the same nonce on C is a replay.
        nonce, session = await _auth(http, urls[0])
        body, cookie = _attestation(nonce), {"Cookie": f"kbs-session-id={session}"}
        async with http.post(f"{urls[1]}/kbs/v0/attest", json=body, headers=cookie) as r:
            assert r.status == 200, await r.text()
        async with http.post(f"{urls[2]}/kbs/v0/attest", json=body, headers=cookie) as r:
            assert r.status == 409

    rng = random.Random(7)
    received: list[str] = []
    failures: list[str] = []
    tasks = [asyncio.create_task(_enclave(urls, rng, received, failures)) for _ in range(60)]
    await asyncio.sleep(0.5)
    kill.send_signal(signal.SIGKILL)  # a replica dies mid-load
    await asyncio.gather(*tasks)
    survivors = [u for u in urls if u != urls[1]]
    more = [asyncio.create_task(_enclave(survivors, rng, received, failures)) for _ in range(30)]
    await asyncio.gather(*more)
    assert len(received) >= 30, failures

    # One log for all replicas: every received receipt names a record in it, once.
    await check_one_log(survivors[0], survivors[1], auditor, received)


async def check_one_log(
    export_from: str, keys_from: str, auditor: str, received: Sequence[str]
) -> None:
    """The exported log verifies, and every receipt a client got names a release in it:
    no release is missing from the log, and no record answers two releases."""
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {auditor}"}
        async with http.get(f"{export_from}/v1/audit/export?format=jsonl", headers=headers) as r:
            assert r.status == 200, await r.text()
            export = await r.read()
            note = base64.urlsafe_b64decode(r.headers["X-Audit-Checkpoint"]).decode()
        async with http.get(f"{keys_from}/v1/audit/keys") as r:
            published = await r.json()
    lines = export.splitlines(keepends=True)
    keys = (
        trusted_keys([k["verifier_key"] for k in published["keys"]])
        if isinstance(published, dict)
        else trusted_keys([k["verifier_key"] for k in published])
    )
    verify_export(lines, [note], keys)
    records = [json.loads(line) for line in lines]
    by_seq = {r["seq"]: r for r in records}
    releases = [r for r in records if r["event"] == "resource.released"]
    assert len({r["request_id"] for r in releases}) == len(releases)  # no duplicates
    for header in received:
        receipt = decode_receipt_header(header)
        record = by_seq[receipt.seq]
        assert record["event"] == "resource.released"
        canonical = {k: v for k, v in record.items() if k != "hash"}
        assert leaf_hash(rfc8785.dumps(canonical)) == receipt.leaf_hash
    # Every release a client received is in the log (no release without a record).
    assert len({decode_receipt_header(h).seq for h in received}) == len(received)


def test_three_replicas_one_log(
    replicas: list[tuple[str, subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    """Sessions cross replicas, replays are refused everywhere, and a killed replica loses nothing."""
    urls = [u for u, _ in replicas]
    admin = (tmp_path / "keys" / "admin.token").read_text().strip()
    auditor = (tmp_path / "keys" / "auditor.token").read_text().strip()
    asyncio.run(_run(urls, replicas[1][1], admin, auditor))
