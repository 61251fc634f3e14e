"""The transparency log end to end: receipts, checkpoints, proofs, exports and their tampering."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from broker.audit.audit_key import trusted_keys
from broker.audit.checkpoint import verify_checkpoint
from broker.audit.merkle import verify_consistency
from broker.audit.proofs import ConsistencyProof, InclusionProof
from broker.audit.receipt import decode_receipt_header, verify_receipt, verify_receipt_inclusion
from broker.audit.record import AuditEvent, AuditRecord, chain_next, parse_time
from broker.cli.audit import audit
from broker.config import Settings
from broker.wiring import Services
from tests.integration.kbs_helpers import attest, create_key

RESOURCE = "default/key/demo"


async def _release(client: TestClient[Any, Any]) -> str:
    """One release; returns the X-Audit-Receipt header."""
    token, _ = await attest(client)
    resp = await client.get(
        f"/kbs/v0/resource/{RESOURCE}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200, await resp.text()
    return resp.headers["X-Audit-Receipt"]


async def _trusted(client: TestClient[Any, Any]) -> dict[str, Any]:
    listed = await (await client.get("/v1/audit/keys")).json()
    return trusted_keys(k["verifier_key"] for k in listed["keys"])


async def _auditor(settings: Settings) -> dict[str, str]:
    token = (Path(settings.server.data_dir) / "auditor.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}


async def _export(
    client: TestClient[Any, Any], headers: dict[str, str], **params: str
) -> tuple[bytes, str]:
    resp = await client.get(
        "/v1/audit/export", params={"format": "jsonl", **params}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    raw = resp.headers["X-Audit-Checkpoint"]
    note = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    return await resp.read(), note


@pytest.fixture
async def populated(client: TestClient[Any, Any], admin_headers: dict[str, str]) -> list[str]:
    await create_key(client, admin_headers, RESOURCE)
    return [await _release(client) for _ in range(8)]


async def test_receipt_verifies_and_is_included_in_newer_checkpoint(
    client: TestClient[Any, Any], settings: Settings, populated: list[str]
) -> None:
    """Every release carries a signed receipt whose inclusion proof verifies against a later checkpoint."""
    trusted = await _trusted(client)
    receipt = decode_receipt_header(populated[0])
    verify_receipt(receipt, trusted)
    auditor = await _auditor(settings)
    cp_text = await (await client.post("/v1/audit/checkpoint", headers=auditor)).text()
    cp = verify_checkpoint(cp_text, trusted)
    assert cp.size > receipt.seq
    resp = await client.get(
        "/v1/audit/proof/inclusion",
        params={"index": str(receipt.seq), "size": str(cp.size)},
        headers=auditor,
    )
    proof = InclusionProof.from_dict(await resp.json())
    verify_receipt_inclusion(receipt, proof.hashes, cp)


async def test_checkpoints_are_consistent_over_time(
    client: TestClient[Any, Any], settings: Settings, populated: list[str]
) -> None:
    """A later checkpoint extends an earlier one (consistency proof from the API verifies)."""
    auditor = await _auditor(settings)
    trusted = await _trusted(client)
    old = verify_checkpoint(
        await (await client.post("/v1/audit/checkpoint", headers=auditor)).text(), trusted
    )
    await _release(client)
    new = verify_checkpoint(await (await client.get("/v1/audit/checkpoint")).text(), trusted)
    if new.size == old.size:
        new = verify_checkpoint(
            await (await client.post("/v1/audit/checkpoint", headers=auditor)).text(), trusted
        )
    resp = await client.get(
        "/v1/audit/proof/consistency",
        params={"from": str(old.size), "to": str(new.size)},
        headers=auditor,
    )
    proof = ConsistencyProof.from_dict(await resp.json())
    verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof.hashes)
    stored = await client.get("/v1/audit/checkpoint", params={"size": str(old.size)})
    assert stored.status == 200 and await stored.text() == old.note


async def test_proof_outside_tree_is_400_and_needs_auditor(
    client: TestClient[Any, Any], settings: Settings, populated: list[str]
) -> None:
    """Ranges the tree lacks are 400 TreeRangeInvalid; proofs need a token."""
    auditor = await _auditor(settings)
    resp = await client.get(
        "/v1/audit/proof/inclusion", params={"index": "5", "size": "100000"}, headers=auditor
    )
    assert resp.status == 400
    assert (await resp.json())["type"].endswith("TreeRangeInvalid")
    resp = await client.get("/v1/audit/proof/consistency", params={"from": "9", "to": "3"})
    assert resp.status == 401


async def test_audit_key_rotation(
    client: TestClient[Any, Any], admin_headers: dict[str, str], settings: Settings,
    populated: list[str],
) -> None:  # fmt: skip
    """After rotation new checkpoints name the new key; old ones still verify with the old key published."""
    auditor = await _auditor(settings)
    old_cp = await (await client.post("/v1/audit/checkpoint", headers=auditor)).text()
    denied = await client.post("/v1/audit/rotate-key", headers=auditor)
    assert denied.status == 403
    resp = await client.post("/v1/audit/rotate-key", headers=admin_headers)
    assert resp.status == 200, await resp.text()
    new_id = (await resp.json())["key_id"]
    trusted = await _trusted(client)
    assert len(trusted) == 2
    assert verify_checkpoint(old_cp, trusted).key_id != new_id
    latest = verify_checkpoint(await (await client.get("/v1/audit/checkpoint")).text(), trusted)
    assert latest.key_id == new_id
    assert decode_receipt_header(await _release(client)).key_id == new_id


# -- tamper suite on real exports ---------------------------------------------------------------


@pytest.fixture
async def exported(
    client: TestClient[Any, Any], settings: Settings, populated: list[str], tmp_path: Path
) -> tuple[list[bytes], Path, Path]:
    """A full export of a running broker, its checkpoint and the published keys, on disk."""
    for _ in range(12):
        await _release(client)
    body, note = await _export(client, await _auditor(settings))
    cp = tmp_path / "audit.checkpoint"
    cp.write_text(note)
    keys = tmp_path / "keys.json"
    keys.write_bytes(await (await client.get("/v1/audit/keys")).read())
    return body.splitlines(keepends=True), cp, keys


def _verify(tmp_path: Path, lines: list[bytes], cp: Path, keys: Path, *extra: str) -> Any:
    path = tmp_path / "tampered.jsonl"
    path.write_bytes(b"".join(lines))
    return CliRunner().invoke(
        audit, ["verify", str(path), "--checkpoint", str(cp), "--audit-key", str(keys), *extra]
    )


def test_untouched_export_verifies(
    tmp_path: Path, exported: tuple[list[bytes], Path, Path]
) -> None:
    """The real export verifies against its checkpoint: complete and in order."""
    lines, cp, keys = exported
    result = _verify(tmp_path, lines, cp, keys)
    assert result.exit_code == 0, result.output
    assert f"OK: {len(lines)} records, complete and in order" in result.stdout


def test_deleted_record_detected(tmp_path: Path, exported: tuple[list[bytes], Path, Path]) -> None:
    """Deleting record 5 is a sequence break at index 5."""
    lines, cp, keys = exported
    del lines[5]
    result = _verify(tmp_path, lines, cp, keys)
    assert result.exit_code == 1
    assert "record 5 (line 6): sequence break: expected seq 5, found 6" in result.stderr


def test_swapped_records_detected(tmp_path: Path, exported: tuple[list[bytes], Path, Path]) -> None:
    """Swapping records 3 and 4 is a sequence break at index 3."""
    lines, cp, keys = exported
    lines[3], lines[4] = lines[4], lines[3]
    result = _verify(tmp_path, lines, cp, keys)
    assert result.exit_code == 1
    assert "record 3 (line 4): sequence break: expected seq 3, found 4" in result.stderr


def test_edited_field_detected(tmp_path: Path, exported: tuple[list[bytes], Path, Path]) -> None:
    """Changing the client address of record 7 is a modified record at index 7."""
    lines, cp, keys = exported
    data = json.loads(lines[7])
    data["client"] = "203.0.113.9"
    lines[7] = rfc8785.dumps(data) + b"\n"
    result = _verify(tmp_path, lines, cp, keys)
    assert result.exit_code == 1
    assert "record 7 (line 8): modified record" in result.stderr


def test_rechained_edit_detected_by_tree(
    tmp_path: Path, exported: tuple[list[bytes], Path, Path]
) -> None:
    """An edit with every later hash and link recomputed still fails: the tree root differs."""
    lines, cp, keys = exported
    records = [AuditRecord.from_dict(json.loads(line)) for line in lines]
    prev = records[1]
    out = [lines[0], lines[1]]
    for i, rec in enumerate(records[2:], start=2):
        values = rec.to_dict(with_hash=False)
        if i == 2:
            values["detail"] = "rewritten"
        fields = {k: v for k, v in values.items() if k not in {"format", "seq", "prev_hash"}}
        fields["time"] = parse_time(fields["time"])
        fields["reasons"] = tuple(fields["reasons"])
        prev = chain_next(prev, AuditEvent(**fields))
        out.append(rfc8785.dumps(prev.to_dict()) + b"\n")
    result = _verify(tmp_path, out, cp, keys)
    assert result.exit_code == 1
    assert "tree root:" in result.stderr


def test_truncated_tail_detected(tmp_path: Path, exported: tuple[list[bytes], Path, Path]) -> None:
    """Cutting the last 10 records is reported as truncation, naming the missing range."""
    lines, cp, keys = exported
    n = len(lines)
    result = _verify(tmp_path, lines[:-10], cp, keys)
    assert result.exit_code == 1
    assert f"truncated: the checkpoint covers {n} records but the export holds {n - 10}" in (
        result.stderr
    )
    assert f"records {n - 10}..{n - 1} are missing" in result.stderr


async def test_spliced_exports_detected(
    aiohttp_client: Any, tmp_path: Path, exported: tuple[list[bytes], Path, Path],
    settings: Settings,
) -> None:  # fmt: skip
    """The head of one broker's export joined to the tail of another's breaks at the seam."""
    from dataclasses import replace

    from broker.api.app import create_app
    from broker.wiring import open_services
    from tests.fakes import FakeClock

    lines, cp, keys = exported
    other_settings = replace(
        settings, server=replace(settings.server, data_dir=str(tmp_path / "other"))
    )
    other = await open_services(other_settings, clock=FakeClock())
    try:
        c2 = await aiohttp_client(create_app(other_settings, services=other))
        token = (tmp_path / "other" / "admin.token").read_text().strip()
        await create_key(c2, {"Authorization": f"Bearer {token}"}, RESOURCE)
        for _ in range(len(lines) // 3 + 2):
            await _release(c2)
        body, _ = await _export(c2, {"Authorization": f"Bearer {token}"})
    finally:
        await other.close()
    foreign = body.splitlines(keepends=True)
    seam = 10
    spliced = lines[:seam] + foreign[seam : len(lines)]
    result = _verify(tmp_path, spliced, cp, keys)
    assert result.exit_code == 1
    assert f"record {seam} (line {seam + 1}): prev_hash" in result.stderr


def test_two_checkpoints_checked_together(
    tmp_path: Path, exported: tuple[list[bytes], Path, Path]
) -> None:
    """A forged older checkpoint (not signed by a published key) is refused by name."""
    lines, cp, keys = exported
    forged = tmp_path / "forged.checkpoint"
    forged.write_text(cp.read_text().replace("\n" + str(len(lines)) + "\n", "\n3\n", 1))
    result = _verify(tmp_path, lines, cp, keys, "--checkpoint", str(forged))
    assert result.exit_code == 1
    assert "checkpoint 2:" in result.stderr


async def test_filtered_export_with_proofs(
    client: TestClient[Any, Any], settings: Settings, populated: list[str], tmp_path: Path
) -> None:
    """A filtered export verifies record by record with its inclusion proofs; a dropped proof is named."""
    auditor = await _auditor(settings)
    body, note = await _export(client, auditor, decision="allow")
    size = verify_checkpoint(note, await _trusted(client)).size
    proofs_resp = await client.get(
        "/v1/audit/export",
        params={"format": "proofs", "decision": "allow", "size": str(size)},
        headers=auditor,
    )
    proofs = await proofs_resp.read()
    (tmp_path / "sel.jsonl").write_bytes(body)
    (tmp_path / "sel.proofs").write_bytes(proofs)
    (tmp_path / "cp").write_text(note)
    (tmp_path / "keys.json").write_bytes(await (await client.get("/v1/audit/keys")).read())
    args = ["verify", str(tmp_path / "sel.jsonl"), "--checkpoint", str(tmp_path / "cp"),
            "--audit-key", str(tmp_path / "keys.json"), "--proofs", str(tmp_path / "sel.proofs")]  # fmt: skip
    ok = CliRunner().invoke(audit, args)
    assert ok.exit_code == 0, ok.output
    assert "selected records" in ok.stdout
    assert all(json.loads(line)["decision"] == "allow" for line in body.splitlines())
    lines = proofs.splitlines(keepends=True)
    (tmp_path / "sel.proofs").write_bytes(b"".join(lines[1:]))
    bad = CliRunner().invoke(audit, args)
    assert bad.exit_code == 1
    assert "inclusion: record 0:" in bad.stderr


async def test_requester_hashing_in_csv(
    aiohttp_client: Any, settings: Settings, tmp_path: Path
) -> None:
    """With hash_requesters, CSV exports show hmac-sha256 values that the key holder can match."""
    from dataclasses import replace

    from broker.api.app import create_app
    from broker.wiring import open_services
    from tests.fakes import FakeClock

    hashed = replace(settings, audit=replace(settings.audit, hash_requesters=True))
    services = await open_services(hashed, clock=FakeClock())
    try:
        c = await aiohttp_client(create_app(hashed, services=services))
        auditor = await _auditor(hashed)
        await attest(c)
        resp = await c.get("/v1/audit/export", params={"format": "csv"}, headers=auditor)
        text = await resp.text()
        assert "127.0.0.1" not in text
        h = await c.post("/v1/audit/hash-requester", json={"value": "127.0.0.1"}, headers=auditor)
        value = (await h.json())["hash"]
        assert value.startswith("hmac-sha256:") and value in text
        offline = CliRunner().invoke(
            audit, ["hash-requester", "127.0.0.1", "--data-dir", hashed.server.data_dir]
        )
        assert offline.stdout.strip() == value
    finally:
        await services.close()


async def test_audit_failure_gives_503_and_no_receipt(
    client: TestClient[Any, Any], services: Services, populated: list[str]
) -> None:
    """When the audit store fails, releases fail closed (503); afterwards the tree has no gap."""
    token, _ = await attest(client)
    size_before = services.audit_log.tree_size
    services.audit._fail_writes = lambda: True
    resp = await client.get(
        f"/kbs/v0/resource/{RESOURCE}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 503
    assert "X-Audit-Receipt" not in resp.headers
    ready = await client.get("/readyz")
    assert services.audit_log.tree_size == size_before
    services.audit._fail_writes = None
    assert ready.status in (200, 503)
    receipt = decode_receipt_header(await _release(client))
    assert receipt.seq >= size_before
    assert services.audit_log.tree_size == (await services.audit.head()).seq + 1  # type: ignore[union-attr]
