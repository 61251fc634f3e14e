"""A full disk under the audit store: releases refused (503), nothing lost, service resumes.

The disk fills for real as far as SQLite can tell: the broker child runs under
RLIMIT_FSIZE with SIGXFSZ ignored, so a write past the limit fails with EFBIG,
the errno SQLite maps to "database or disk is full", just as on a full filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sqlite3
import time
from pathlib import Path

import pytest

from broker.client import BrokerClient, RemoteError, SampleProvider
from tests.faults.broker_proc import BrokerProcess, integrity_check, store_defects
from tests.faults.ledger import (
    Tally,
    assert_every_release_recorded,
    read_log,
    release_many,
    release_once,
)
from tests.integration.conftest import write_policies

pytestmark = pytest.mark.slow

RESOURCE = "default/key/disk"
# The largest file the broker may write: room for start-up and a few releases (an audit
# WAL grows by tens of KiB per flow until its checkpoint), then the "disk" is full.
LIMIT = 192 * 1024
ATTEMPTS_WHILE_FULL = 25


def _create_key(broker: BrokerProcess) -> None:
    body = json.dumps({"id": RESOURCE}).encode()
    status, text = broker.request("POST", "/v1/keys", token=broker.admin_token(), body=body)
    assert status == 201, text


async def _fill_and_refuse(url: str) -> tuple[Tally, Tally]:
    """Releases until the first refusal, then more; one client also holds an early token."""
    flows, held = Tally(), Tally()
    async with BrokerClient(url, timeout=10) as early, BrokerClient(url, timeout=10) as client:
        keypair = await early.attest(SampleProvider())
        while not flows.failures and len(flows.outcomes) < 200:
            await release_once(client, RESOURCE, flows)
        for _ in range(ATTEMPTS_WHILE_FULL):
            await release_once(client, RESOURCE, flows)
            # A token obtained before the disk filled: only the release record can fail now.
            try:
                released = await early.fetch(RESOURCE, keypair)
            except RemoteError as exc:
                held.note_error(exc)
            else:
                held.note_release(None if released.receipt is None else released.receipt.seq)
    return flows, held


def _checkpoint_after_failure(output: str) -> bool:
    """The checkpoint signer failed on the full disk and signed again afterwards."""
    failed = output.rfind("audit.checkpoint_failed")
    return failed >= 0 and output.find("audit.checkpoint_signed", failed) >= 0


def _set_file_size_limit(broker: BrokerProcess, limit: int) -> None:
    resource.prlimit(broker.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


def _readiness(broker: BrokerProcess) -> dict[str, object]:
    status, body = broker.request("GET", "/readyz")
    checks: dict[str, object] = json.loads(body)["checks"]
    return {"status": status, **checks}


def test_disk_full_refuses_releases_and_recovers(tmp_path: Path) -> None:
    """Disk full: releases 503, nothing lost, /readyz 503; space back: serves, log verifies."""
    # Every release after the first refusal is 503 with nothing released; when space returns
    # the same process serves again, and after a restart the chain verifies, has no gap and
    # holds every release a client got.
    write_policies(tmp_path / "policies")
    broker = BrokerProcess(tmp_path, env={"BROKER_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "1"})
    broker.start(file_size_limit=LIMIT)
    resumed = Tally()
    try:
        _create_key(broker)
        flows, held = asyncio.run(_fill_and_refuse(broker.url))
        assert broker.proc is not None and broker.proc.poll() is None, "killed by SIGXFSZ?"
        # Not a byte can be written anywhere (after the fill phase a small frame may still
        # fit): now the readiness probe must see it too, not only the requests.
        _set_file_size_limit(broker, 1)
        full = _readiness(broker)
        create = broker.request(
            "POST", "/v1/keys", token=broker.admin_token(), body=b'{"id": "default/key/full"}'
        )
        time.sleep(1.5)  # one checkpoint pass against the full disk
        # Space returns under the running broker.
        _set_file_size_limit(broker, resource.RLIM_INFINITY)
        asyncio.run(release_many(broker.url, RESOURCE, 3, resumed))
        back = _readiness(broker)
        deadline = time.monotonic() + 5
        while not _checkpoint_after_failure(broker.output()) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        broker.stop()
    first = flows.outcomes.index(next(o for o in flows.outcomes if o != "200"))
    after_full = flows.outcomes[first:]
    # Every refusal is a 503 (never a 500), and nothing is released once the disk is full.
    assert all(o.startswith("503:") for o in after_full), after_full
    assert "503:AuditUnavailable" in after_full
    assert set(held.outcomes) == {"503:AuditUnavailable"}, held.outcomes
    assert "disk is full" in broker.output() or "disk I/O error" in broker.output()
    assert flows.receipts, "no release succeeded before the disk filled: LIMIT too small"
    assert full["status"] == 503 and full["audit"] != "ok" and full["store"] != "ok", full
    assert create[0] == 503, create
    assert resumed.outcomes == ["200"] * 3, resumed.outcomes
    assert _checkpoint_after_failure(broker.output()), "checkpoint signer did not resume"
    assert back == {"status": 200, "store": "ok", "audit": "ok"}, back

    for name in ("audit.db", "broker.db"):
        assert integrity_check(broker.data / name) == "ok"
    assert store_defects(broker.data / "broker.db") == []
    with contextlib.closing(sqlite3.connect(broker.data / "broker.db")) as conn:
        refused = conn.execute("SELECT id FROM resources WHERE id = 'default/key/full'")
        assert refused.fetchall() == [], "a key refused with 503 was stored"
    after = Tally()
    broker.start()
    try:
        asyncio.run(release_many(broker.url, RESOURCE, 2, after))
    finally:
        broker.stop()
    assert after.outcomes == ["200"] * 2
    # No space at all at start-up: a clean refusal naming the store, not a traceback.
    broker.stderr.clear()
    with pytest.raises(RuntimeError, match="did not start"):
        broker.start(file_size_limit=1)
    assert broker.exit_code() == 1
    assert "cannot open the store" in broker.output() and "Traceback" not in broker.output()

    records, verified = read_log(broker.data / "audit.db")
    assert verified == len(records)
    assert_every_release_recorded(
        records, flows.receipts + held.receipts + resumed.receipts + after.receipts
    )
