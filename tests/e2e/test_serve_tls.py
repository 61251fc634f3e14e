"""``broker serve`` with [tls], fetched from by ``broker client --ca-file/--pin-sha256``."""

from __future__ import annotations

import base64
import signal
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from broker.client.tls import spki_sha256
from tests.e2e.test_serve_subprocess import BROKER, _free_port, _run
from tests.integration.conftest import write_policies
from tests.tls_certs import issue, make_ca

pytestmark = pytest.mark.slow


def test_serve_over_tls(tmp_path: Path) -> None:
    """The broker serves HTTPS from config; the client fetches with the CA, and fails on a wrong pin."""
    ca = make_ca(tmp_path / "pki", "ca")
    leaf = issue(ca, tmp_path / "pki", "server")
    other = issue(make_ca(tmp_path / "pki", "other"), tmp_path / "pki", "other-server")
    config = tmp_path / "broker.toml"
    config.write_text(f'[tls]\ncert_file = "{leaf.cert_file}"\nkey_file = "{leaf.key_file}"\n')
    port = _free_port()
    data = tmp_path / "data"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [
            *BROKER,
            "serve",
            "--dev",
            "--config",
            str(config),
            "--data-dir",
            str(data),
            "--port",
            str(port),
            "--policies",
            str(write_policies(tmp_path / "policies")),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cafile=str(ca.cert_file))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=1, context=ctx) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("broker did not start: " + (tmp_path / "serve.log").read_text())
            time.sleep(0.1)
        assert "https://" in (tmp_path / "serve.log").read_text()

        env = {
            "BROKER_ADDR": url,
            "BROKER_TOKEN": "@" + str(data / "admin.token"),
            "SSL_CERT_FILE": str(ca.cert_file),
        }
        created = _run("keys", "create", "default/key/tls", env=env)
        assert created.returncode == 0, created.stderr
        out = tmp_path / "tls.key"
        pin = base64.b64encode(spki_sha256(leaf.cert.public_bytes(Encoding.DER))).decode()
        args = ["client", "get-resource", "default/key/tls", "--url", url, "--ca-file"]
        got = _run(*args, str(ca.cert_file), "--pin-sha256", pin, "--out", str(out))
        assert got.returncode == 0, got.stderr
        assert len(out.read_bytes()) == 32

        wrong = base64.b64encode(spki_sha256(other.cert.public_bytes(Encoding.DER))).decode()
        bad = tmp_path / "bad.key"
        refused = _run(*args, str(ca.cert_file), "--pin-sha256", wrong, "--out", str(bad))
        assert refused.returncode != 0 and "pinned" in refused.stderr
        assert not bad.exists()
        no_ca = _run("client", "get-resource", "default/key/tls", "--url", url, "--out", str(bad))
        assert no_ca.returncode != 0 and "TLS verification" in no_ca.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
