"""Secrets hygiene of ``broker serve``: no core dumps, and no key bytes in anything it emits."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import aiohttp
import pytest

from broker.client import BrokerClient, RemoteError, SampleProvider
from tests.faults.broker_proc import BrokerProcess
from tests.integration.conftest import write_policies

pytestmark = pytest.mark.slow

_PROBE = textwrap.dedent(
    """\
    import ctypes, sys
    import broker.cli.serve as serve

    def probe(main):
        main.close()
        flag = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE
        print(f"dumpable={flag}")

    serve._run_loop = probe
    serve.serve.main(sys.argv[1:], standalone_mode=False)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_serve_start_up_disables_core_dumps(tmp_path: Path) -> None:
    """``broker serve`` marks its own process non-dumpable before it opens any key."""
    policies = write_policies(tmp_path / "policies")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "--dev", "--data-dir", str(tmp_path / "data"),
         "--policies", str(policies), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "dumpable=0" in done.stdout


def _forms(secret: bytes) -> set[bytes]:
    """The encodings a leak would most likely take."""
    forms = {
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        base64.b64encode(secret).rstrip(b"="),
    }
    # A JSON string escapes "/" in standard base64 on some encoders.
    forms |= {f.replace(b"/", b"\\/") for f in forms if b"/" in f}
    return forms


def test_forms_catch_common_encodings() -> None:
    """The grep finds a secret embedded as JSON base64, base64url or upper-case hex."""
    secret = bytes(range(200, 232))
    for text in (
        json.dumps({"k": base64.b64encode(secret).decode()}).encode(),
        b"k=" + base64.urlsafe_b64encode(secret).rstrip(b"=") + b";",
        b"<" + secret.hex().upper().encode() + b">",
    ):
        assert any(form in text for form in _forms(secret))


async def _full_flow(broker: BrokerProcess, secret: bytes) -> tuple[list[bytes], list[bytes]]:
    """Upload, create, rotate, release, deny, fail, reload, export, scrape.
    Returns (needles, haystacks gathered from the API)."""
    admin = {"Authorization": f"Bearer {broker.admin_token()}"}
    auditor = {"Authorization": f"Bearer {broker.auditor_token()}"}
    url = broker.url
    pages: list[bytes] = []
    async with aiohttp.ClientSession() as http:
        value = base64.b64encode(secret).decode()
        async with http.post(
            f"{url}/v1/secrets", json={"id": "default/secret/s", "value": value}, headers=admin
        ) as resp:
            assert resp.status == 201, await resp.text()
            pages.append(await resp.read())
        for path, body in (
            ("/v1/keys", {"id": "default/key/k"}),
            ("/v1/keys/default/key/k/rotate", {}),
        ):
            async with http.post(url + path, json=body, headers=admin) as resp:
                assert resp.status in (200, 201), await resp.text()
                pages.append(await resp.read())
        needles: list[bytes] = []
        async with BrokerClient(url) as client:
            keypair = await client.attest(SampleProvider())
            for rid in ("default/secret/s", "default/key/k"):
                needles.append((await client.fetch(rid, keypair)).value.reveal())
            assert client.token is not None
            needles.append(client.token.encode())
            with pytest.raises(RemoteError):
                await client.fetch("other/key/x", keypair)
        async with http.post(
            f"{url}/kbs/v0/attest", data=b"{", headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status >= 400
        broker.signal(signal.SIGHUP)
        await asyncio.sleep(0.3)
        for path, headers in (
            ("/v1/keys", admin),
            ("/v1/keys/default/key/k", admin),
            ("/v1/keys/default/secret/s", admin),
            ("/v1/policies", admin),
            ("/v1/audit/export", auditor),
            ("/v1/audit/export?format=ocsf", auditor),
            ("/metrics", {}),
        ):
            async with http.get(url + path, headers=headers) as resp:
                assert resp.status == 200, (path, await resp.text())
                pages.append(await resp.read())
    return needles, pages


def test_no_key_bytes_in_any_output(tmp_path: Path) -> None:
    """No key, secret, root key or bearer token in anything a debug-logging broker emits."""
    # Haystacks: stdout, stderr, audit exports, metrics, admin answers and the audit database.
    write_policies(tmp_path / "policies")
    broker = BrokerProcess(tmp_path, env={"BROKER_LOG_LEVEL": "debug"})
    secret = os.urandom(24)
    broker.start()
    try:
        released, pages = asyncio.run(_full_flow(broker, secret))
    finally:
        broker.stop()
    assert released[0] == secret and len(released[1]) == 32
    kbs_token = released[2]
    # Debug is asked for (the most verbose level); the release path's own events were captured.
    assert b"key.released" in broker.stderr and b"request.done" in broker.stderr
    data = broker.data
    needles = [
        secret,
        *released,
        (data / "root.key").read_bytes(),
        broker.admin_token().encode(),
        broker.auditor_token().encode(),
    ]
    haystacks = {
        "stdout": bytes(broker.stdout),
        "stderr": bytes(broker.stderr),
        "audit.db": (data / "audit.db").read_bytes(),
        **{f"api page {i}": page for i, page in enumerate(pages)},
    }
    # Values are stored sealed: no plaintext, root key or admin token in the store's file.
    # (The KBS token is kept there on purpose, for cookie sessions; it is bound to the
    # attester's key, so it unwraps nothing by itself.)
    store = (data / "broker.db").read_bytes()
    for n, needle in enumerate(needles):
        if needle != kbs_token:
            assert not any(form in store for form in _forms(needle)), f"secret #{n} in broker.db"
    for n, needle in enumerate(needles):
        assert len(needle) >= 16
        for form in _forms(needle):
            for name, hay in haystacks.items():
                assert form not in hay, f"secret #{n} found in {name}"
