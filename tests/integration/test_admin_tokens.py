"""Stored admin tokens: the stores on SQLite and PostgreSQL, the API, the CLI, the audit trail."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from broker.adapters.pg_db import PostgresDB
from broker.adapters.pg_tokens import PostgresTokenStore
from broker.adapters.sqlite_db import SQLiteDB
from broker.adapters.sqlite_tokens import SQLiteTokenStore
from broker.cli.tokens import tokens as tokens_cli
from broker.config import Settings, load_settings
from broker.errors import ConfigError, Conflict, ResourceNotFound
from broker.ports import AdminTokenInfo, AdminTokenStore
from broker.wiring import open_services
from tests.fakes import FakeClock
from tests.integration.kbs_helpers import error_of
from tests.integration.postgres_fixture import pg_dsn, postgres  # noqa: F401

Client = TestClient[Any, Any]
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _info(token_id: str, **changes: Any) -> AdminTokenInfo:
    base = AdminTokenInfo(
        id=token_id,
        name="ci",
        role="operator",
        created_at=T0,
        created_by="token:admin",
        expires_at=T0 + timedelta(days=30),
        revoked_at=None,
    )
    return replace(base, **changes)


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AdminTokenStore]:
    """A token store on each backend."""
    if request.param == "sqlite":
        db = SQLiteDB(tmp_path / "broker.db")
        await db.open()
        yield SQLiteTokenStore(db)
        await db.close()
        return
    dsn = request.getfixturevalue("pg_dsn")
    pg = PostgresDB(dsn)
    await pg.open()
    pg_store = PostgresTokenStore(pg)
    await pg_store.migrate()
    await pg_store.migrate()  # idempotent, as on a second replica
    yield pg_store
    await pg.close()


async def test_store_round_trip(store: AdminTokenStore) -> None:
    """A token is found by its digest only; metadata and times survive the store."""
    digest = hashlib.sha256(b"bkt_secret").digest()
    await store.add_token(_info("a1"), digest)
    await store.add_token(_info("b2", expires_at=None, name="ops"), b"\x01" * 32)
    found = await store.token_by_digest(digest)
    assert found == _info("a1")
    assert await store.token_by_digest(b"\x00" * 32) is None
    assert [i.id for i in await store.list_tokens()] == ["a1", "b2"]
    with pytest.raises(Conflict):
        await store.add_token(_info("a1"), b"\x02" * 32)


async def test_store_revoke(store: AdminTokenStore) -> None:
    """Revocation is stamped once; an unknown id is ResourceNotFound."""
    await store.add_token(_info("a1"), b"\x03" * 32)
    first = await store.revoke_token("a1", T0 + timedelta(hours=1))
    again = await store.revoke_token("a1", T0 + timedelta(hours=2))
    assert first.revoked_at == again.revoked_at == T0 + timedelta(hours=1)
    with pytest.raises(ResourceNotFound):
        await store.revoke_token("nope", T0)


async def test_sqlite_keeps_only_the_digest(tmp_path: Path) -> None:
    """The SQLite file holds the SHA-256 of a token, never the token."""
    db = SQLiteDB(tmp_path / "broker.db")
    await db.open()
    await SQLiteTokenStore(db).add_token(_info("a1"), hashlib.sha256(b"bkt_plain").digest())
    await db.close()
    raw = (tmp_path / "broker.db").read_bytes() + (
        (tmp_path / "broker.db-wal").read_bytes() if (tmp_path / "broker.db-wal").exists() else b""
    )
    assert b"bkt_plain" not in raw
    with sqlite3.connect(tmp_path / "broker.db") as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(admin_tokens)")]
    assert "token" not in columns and "digest" in columns


async def test_api_create_list_revoke(
    client: Client, admin_headers: dict[str, str], clock: FakeClock
) -> None:
    """Create returns the token once; list shows metadata only; revoke and expiry give 401."""
    resp = await client.post(
        "/v1/tokens",
        json={"name": "ci-deployer", "role": "key-admin", "expires": "1h"},
        headers=admin_headers,
    )
    assert resp.status == 201 and resp.headers["Cache-Control"] == "no-store"
    created = await resp.json()
    token, info = created["token"], created["info"]
    assert token.startswith("bkt_") and len(token) > 40
    assert info["role"] == "key-admin" and info["state"] == "active"
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/v1/keys", headers=headers)).status == 200
    assert (await error_of(await client.get("/v1/tokens", headers=headers)))[:2] == (
        403,
        "Forbidden",
    )
    listing = await (await client.get("/v1/tokens", headers=admin_headers)).text()
    assert token not in listing and hashlib.sha256(token.encode()).hexdigest() not in listing
    assert set(json.loads(listing)[0]) == {
        "id",
        "name",
        "role",
        "state",
        "created_at",
        "created_by",
        "expires_at",
        "revoked_at",
    }
    clock.advance(3601)
    assert (await error_of(await client.get("/v1/keys", headers=headers)))[:2] == (
        401,
        "AdminTokenExpired",
    )
    resp = await client.delete(f"/v1/tokens/{info['id']}", headers=admin_headers)
    assert (await resp.json())["state"] == "revoked"
    assert (await error_of(await client.get("/v1/keys", headers=headers)))[:2] == (
        401,
        "AdminTokenRevoked",
    )
    missing = await client.delete("/v1/tokens/unknown", headers=admin_headers)
    assert (await error_of(missing))[:2] == (404, "ResourceNotFound")


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "role": "root"},
        {"name": "", "role": "auditor"},
        {"name": "a b", "role": "auditor"},
        {"name": "x", "role": "auditor", "expires": "forever"},
        {"name": "x", "role": "auditor", "expires": "0m"},
        {"name": "x", "role": "auditor", "token": "chosen-by-caller"},
    ],
)
async def test_api_rejects_bad_requests(
    client: Client, admin_headers: dict[str, str], body: dict[str, str]
) -> None:
    """Unknown roles, bad names and lifetimes, and caller-chosen tokens are 400."""
    resp = await client.post("/v1/tokens", json=body, headers=admin_headers)
    assert (await error_of(resp))[:2] == (400, "MalformedRequest")


async def test_token_actions_are_audited(client: Client, admin_headers: dict[str, str]) -> None:
    """Creation and revocation are audit records naming the token's id, never the token."""
    created = await (
        await client.post(
            "/v1/tokens", json={"name": "auditme", "role": "auditor"}, headers=admin_headers
        )
    ).json()
    await client.delete(f"/v1/tokens/{created['info']['id']}", headers=admin_headers)
    export = await (await client.get("/v1/audit/export", headers=admin_headers)).text()
    records = [json.loads(line) for line in export.splitlines()]
    events = {r["event"]: r for r in records if r["event"].startswith("admin.token_")}
    assert set(events) == {"admin.token_created", "admin.token_revoked"}
    assert events["admin.token_created"]["resource"] == f"token/{created['info']['id']}"
    assert events["admin.token_created"]["actor"] == "token:admin"
    assert created["token"] not in export
    assert hashlib.sha256(created["token"].encode()).hexdigest() not in export


def _cli_json(output: str) -> Any:
    # The in-process server's log lines share the captured stdout: the answer is the
    # indented JSON document that starts on a line of its own.
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line in {"{", "[", "[]"})
    end = next(i for i in range(start, len(lines)) if lines[i] in {"}", "]", "[]"})
    return json.loads("\n".join(lines[start : end + 1]))


async def test_cli_tokens(client: Client, admin_headers: dict[str, str], tmp_path: Path) -> None:
    """``broker tokens create | list | revoke`` against a running broker."""
    url = str(client.make_url("/")).rstrip("/")
    admin = admin_headers["Authorization"].removeprefix("Bearer ")
    runner = CliRunner()

    def run(*args: str) -> Any:
        result = runner.invoke(tokens_cli, [*args, "--url", url, "--token", admin])
        assert result.exit_code == 0, result.output
        return result

    out = tmp_path / "ops.token"
    created = await asyncio.to_thread(
        run, "create", "--role", "operator", "--name", "ops", "--expires", "30d", "--out", str(out)
    )
    info = _cli_json(created.stdout)
    assert info["role"] == "operator" and out.stat().st_mode & 0o777 == 0o600
    token = out.read_text().strip()
    assert token not in created.output
    listed = _cli_json((await asyncio.to_thread(run, "list")).stdout)
    assert [t["name"] for t in listed] == ["ops"]
    revoked = _cli_json((await asyncio.to_thread(run, "revoke", info["id"])).stdout)
    assert revoked["state"] == "revoked"
    resp = await client.post("/v1/policies/reload", headers={"Authorization": f"Bearer {token}"})
    assert (await error_of(resp))[:2] == (401, "AdminTokenRevoked")


async def test_production_start_needs_admin_credentials(tmp_path: Path) -> None:
    """Outside --dev, a broker without admin.admin_token_file refuses to start."""
    base = load_settings(None, {})
    settings: Settings = replace(base, server=replace(base.server, data_dir=str(tmp_path / "data")))
    with pytest.raises(ConfigError, match="admin_token_file"):
        await open_services(settings)


async def test_unknown_client_cert_role_refuses_start(settings: Settings) -> None:
    """A client-certificate rule naming an unknown role stops the broker at start-up."""
    bad = replace(settings, admin=replace(settings.admin, client_cert_roles=(("CN=x", "root"),)))
    with pytest.raises(ConfigError, match="client_cert_roles"):
        await open_services(bad)
