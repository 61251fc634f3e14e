"""Fail closed, lose nothing: audit failures, unwritable stores, secrets in logs."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient

from broker.config import Settings
from broker.errors import BrokerError
from broker.logging import redact
from broker.wiring import Services, open_services
from tests.fakes import FakeClock
from tests.integration.kbs_helpers import attest, create_key, error_of, fetch

Client = TestClient[Any, Any]


async def test_audit_failure_blocks_release(
    client: Client, services: Services, admin_headers: dict[str, str]
) -> None:
    """If the audit record cannot be made durable the release is 503 and nothing is sent."""
    await create_key(client, admin_headers, "default/key/demo")
    token, keypair = await attest(client)
    before = [r async for r in services.audit.iter_records(None, None)]
    services.audit._fail_writes = lambda: True  # type: ignore[attr-defined]
    resp = await client.get(
        "/kbs/v0/resource/default/key/demo", headers={"Authorization": f"Bearer {token}"}
    )
    status, code, body = await error_of(resp)
    assert (status, code) == (503, "AuditUnavailable")
    assert set(body) <= {"type", "detail", "request_id", "reasons"}
    ready = await client.get("/readyz")
    services.audit._fail_writes = None  # type: ignore[attr-defined]
    assert ready.status in {200, 503}
    # Recovery: the next release works and the chain has no gap.
    assert len(await fetch(client, "default/key/demo", token, keypair)) == 32
    after = [r async for r in services.audit.iter_records(None, None)]
    assert [r.seq for r in after] == list(range(len(after)))
    assert len(after) == len(before) + 1


async def test_unwritable_data_dir(tmp_path: Path, settings: Settings, clock: FakeClock) -> None:
    """A data dir the broker cannot write refuses to start with a clear error."""
    if os.geteuid() == 0:
        target = tmp_path / "file-not-dir"
        target.write_text("x")
        bad = replace(settings, server=replace(settings.server, data_dir=str(target / "data")))
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        bad = replace(settings, server=replace(settings.server, data_dir=str(locked / "data")))
    with pytest.raises(BrokerError, match="data dir"):
        await open_services(bad, clock=clock)


async def test_broken_policy_refuses_start(
    tmp_path: Path, settings: Settings, clock: FakeClock
) -> None:
    """A broken policy file at start-up refuses to start, naming file and line."""
    folder = tmp_path / "broken-policies"
    folder.mkdir()
    (folder / "bad.yaml").write_text("version: 1\nname: x\nresources: [\n")
    bad = replace(settings, policy=replace(settings.policy, dir=str(folder)))
    with pytest.raises(BrokerError) as info:
        await open_services(bad, clock=clock)
    assert "bad.yaml" in info.value.diagnostics()


def test_redaction_processor() -> None:
    """Log fields named like secrets are redacted; identifiers are kept."""
    out = redact(
        None,
        "info",
        {
            "event": "x",
            "root_key": "AAA",
            "token": "t",
            "resource": "a/b/c",
            "jti": "j",
            "secret_value": "s",
        },
    )
    assert out["root_key"] == out["token"] == out["secret_value"] == "[redacted]"
    assert out["resource"] == "a/b/c" and out["jti"] == "j"


async def test_no_secret_in_logs_or_audit(
    client: Client,
    services: Services,
    settings: Settings,
    admin_headers: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Released key bytes and the root key never appear in logs or audit records."""
    from broker.logging import configure_logging

    configure_logging("json", "debug", cache=False)
    try:
        secret = os.urandom(24)
        import base64

        await client.post(
            "/v1/secrets",
            json={"id": "default/secret/s", "value": base64.b64encode(secret).decode()},
            headers=admin_headers,
        )
        await create_key(client, admin_headers, "default/key/k")
        token, keypair = await attest(client)
        released = [
            await fetch(client, r, token, keypair) for r in ("default/secret/s", "default/key/k")
        ]
        # A denied and a failed request too, so error paths are covered.
        await client.get(
            "/kbs/v0/resource/other/key/x", headers={"Authorization": f"Bearer {token}"}
        )
        await client.post("/kbs/v0/attest", data=b"{", headers={"Content-Type": "application/json"})
        root = (Path(settings.server.data_dir) / "root.key").read_bytes()
        records = [r.to_dict(with_hash=True) async for r in services.audit.iter_records(None, None)]
        audit_text = json.dumps(records)
        logs = capsys.readouterr()
        haystacks = [
            logs.out,
            logs.err,
            audit_text,
            (Path(settings.server.data_dir) / "audit.db").read_bytes().hex(),
        ]
        needles = [root, *released]
        for needle in needles:
            forms = {
                needle.hex(),
                base64.b64encode(needle).decode(),
                base64.urlsafe_b64encode(needle).decode().rstrip("="),
            }
            for hay in haystacks:
                for form in forms:
                    assert form not in hay
    finally:
        structlog.reset_defaults()
