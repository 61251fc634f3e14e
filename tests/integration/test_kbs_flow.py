"""The KBS protocol end to end in process: happy path and every refusal."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.config import Settings
from broker.keys.unwrap import ClientKeyPair
from broker.tokens import TokenKey, issue
from broker.wiring import Services
from tests.fakes import FakeClock
from tests.integration.conftest import DENY_ALL_SAMPLE, write_policies
from tests.integration.kbs_helpers import (
    attest,
    auth,
    create_key,
    error_of,
    fetch,
    sample_attestation,
)

Client = TestClient[Any, Any]


async def test_release_roundtrip(client: Client, admin_headers: dict[str, str]) -> None:
    """A sample enclave attests and gets the data key it can unwrap."""
    await create_key(client, admin_headers, "default/key/demo")
    token, keypair = await attest(client)
    value = await fetch(client, "default/key/demo", token, keypair)
    assert len(value) == 32


@pytest.mark.parametrize("kind", ["p256", "p521", "rsa"])
async def test_each_jwe_key_type(client: Client, admin_headers: dict[str, str], kind: str) -> None:
    """Every JWE key type the protocol names gets a release it can open."""
    await create_key(client, admin_headers, "default/key/k")
    token, keypair = await attest(client, kind)
    assert len(await fetch(client, "default/key/k", token, keypair)) == 32


async def test_cookie_session_release(client: Client, admin_headers: dict[str, str]) -> None:
    """After attest, the session cookie alone authorizes the GET."""
    await create_key(client, admin_headers, "default/key/demo")
    await attest(client)
    resp = await client.get("/kbs/v0/resource/default/key/demo")
    assert resp.status == 200
    assert resp.headers["X-Key-Version"] == "1"


async def test_auth_sets_strict_cookie(client: Client) -> None:
    """The session cookie is HttpOnly and SameSite=Strict; the nonce is 32 bytes."""
    resp = await client.post(
        "/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
    )
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert len(base64.b64decode((await resp.json())["nonce"])) == 32


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "MalformedRequest"),
        (b'{"version": "0.4.0"}', "MalformedRequest"),
        (b'{"version": "9.0.0", "tee": "sample", "extra-params": ""}', "UnsupportedVersion"),
        (b'{"version": "0.4.0", "tee": "warp-drive", "extra-params": ""}', "UnsupportedTEE"),
    ],
)
async def test_auth_refusals(client: Client, body: bytes, code: str) -> None:
    """Bad auth requests get 400 with a specific code."""
    resp = await client.post(
        "/kbs/v0/auth", data=body, headers={"Content-Type": "application/json"}
    )
    assert (await error_of(resp))[:2] == (400, code)


async def test_disabled_tee(
    aiohttp_client: Any, settings: Settings, clock: FakeClock, tmp_path: Path
) -> None:
    """A tee the config does not enable is refused even if the broker knows it."""
    from dataclasses import replace

    from broker.api.app import create_app
    from broker.wiring import open_services

    restricted = replace(settings, kbs=replace(settings.kbs, enabled_tees=("sev-snp",)))
    svc = await open_services(restricted, clock=clock)
    try:
        c = await aiohttp_client(create_app(restricted, services=svc))
        resp = await c.post(
            "/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
        )
        status, code, body = await error_of(resp)
        assert (status, code) == (400, "UnsupportedTEE")
        assert "not enabled" in body["detail"]
    finally:
        await svc.close()


async def test_attest_without_session(client: Client) -> None:
    """Attest without the auth cookie is 401 SessionMissing."""
    keypair = ClientKeyPair.generate("p256")
    nonce = base64.b64encode(b"x" * 32).decode()
    resp = await client.post("/kbs/v0/attest", json=sample_attestation(nonce, keypair))
    assert (await error_of(resp))[:2] == (401, "SessionMissing")


async def test_nonce_replay(client: Client) -> None:
    """Attesting twice with one nonce is 409 NonceReplayed."""
    nonce = await auth(client)
    body = sample_attestation(nonce, ClientKeyPair.generate("p256"))
    assert (await client.post("/kbs/v0/attest", json=body)).status == 200
    resp = await client.post("/kbs/v0/attest", json=body)
    assert (await error_of(resp))[:2] == (409, "NonceReplayed")


async def test_nonce_expired(client: Client, clock: FakeClock) -> None:
    """A nonce older than its lifetime is 401 NonceExpired."""
    nonce = await auth(client)
    clock.advance(301)
    resp = await client.post(
        "/kbs/v0/attest", json=sample_attestation(nonce, ClientKeyPair.generate("p256"))
    )
    assert (await error_of(resp))[:2] == (401, "NonceExpired")


async def test_report_data_mismatch(client: Client) -> None:
    """Evidence bound to another key is 403 and burns the nonce."""
    nonce = await auth(client)
    body = sample_attestation(nonce, ClientKeyPair.generate("p256"))
    body["runtime-data"]["tee-pubkey"] = ClientKeyPair.generate("p256").public_jwk()
    resp = await client.post("/kbs/v0/attest", json=body)
    assert (await error_of(resp))[:2] == (403, "EvidenceNotFresh")


async def test_wrong_nonce_in_runtime_data(client: Client) -> None:
    """Runtime data naming another nonce than the session's is refused."""
    await auth(client)
    other = base64.b64encode(b"o" * 32).decode()
    resp = await client.post(
        "/kbs/v0/attest", json=sample_attestation(other, ClientKeyPair.generate("p256"))
    )
    assert (await error_of(resp))[:2] == (403, "EvidenceNotFresh")


async def test_unsupported_pubkey(client: Client) -> None:
    """A tee-pubkey we cannot wrap to (private key included) is 400."""
    nonce = await auth(client)
    keypair = ClientKeyPair.generate("p256")
    body = sample_attestation(nonce, keypair)
    body["runtime-data"]["tee-pubkey"] = {**keypair.public_jwk(), "d": "AAAA"}
    resp = await client.post("/kbs/v0/attest", json=body)
    assert (await error_of(resp))[:2] == (400, "UnsupportedKey")


async def test_body_too_large(client: Client) -> None:
    """A body over the limit is 413 BodyTooLarge."""
    resp = await client.post(
        "/kbs/v0/attest",
        data=io.BytesIO(b"x" * ((1 << 20) + 10)),
        headers={"Content-Type": "application/json"},
    )
    assert (await error_of(resp))[:2] == (413, "BodyTooLarge")


def _forged_tokens(services: Services, clock: FakeClock, keypair: ClientKeyPair) -> dict[str, str]:
    def make(key: TokenKey, issuer: str, ttl: int = 300, shift: float = 0) -> str:
        from datetime import timedelta

        token, _ = issue(
            key,
            issuer=issuer,
            tee="sample",
            claims={"svn": 1},
            flags={},
            tee_pubkey=keypair.public_jwk(),
            policy_digest="",
            evidence_digest="",
            now=clock.now() - timedelta(seconds=shift),
            ttl_seconds=ttl,
        )
        return token

    good = make(services.token_key, services.settings.kbs.issuer)
    header, payload, _ = good.split(".")
    none_header = (
        base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    )
    return {
        "alg-none": f"{none_header}.{payload}.",
        "other-broker": make(TokenKey.generate(), services.settings.kbs.issuer),
        "expired": make(services.token_key, services.settings.kbs.issuer, ttl=10, shift=60),
        "tampered": f"{header}.{payload[:-4]}AAAA.{good.split('.')[2]}",
        "garbage": "not-a-token",
    }


async def test_forged_tokens_refused(
    client: Client, services: Services, clock: FakeClock, admin_headers: dict[str, str]
) -> None:
    """alg none, another broker's key, expired and tampered tokens are 401."""
    await create_key(client, admin_headers, "default/key/demo")
    keypair = ClientKeyPair.generate("p256")
    for name, token in _forged_tokens(services, clock, keypair).items():
        resp = await client.get(
            "/kbs/v0/resource/default/key/demo", headers={"Authorization": f"Bearer {token}"}
        )
        assert (await error_of(resp))[:2] == (401, "TokenInvalid"), name


async def test_resource_without_token(client: Client) -> None:
    """A GET with neither cookie nor token is 401."""
    resp = await client.get("/kbs/v0/resource/default/key/demo")
    assert (await error_of(resp))[:2] == (401, "SessionMissing")


@pytest.mark.parametrize(
    "path",
    [
        "default/key/..",
        "default/key/%2e%2e",
        "default//x",
        "default/key/" + "x" * 300,
        "default/key",
    ],
)
async def test_bad_resource_paths(client: Client, path: str) -> None:
    """Traversal, empty and over-long resource paths are 400."""
    from yarl import URL

    token, _ = await attest(client)
    url = client.make_url("/").with_path(f"/kbs/v0/resource/{path}", encoded=True)
    resp = await client.session.get(
        URL(str(url), encoded=True), headers={"Authorization": f"Bearer {token}"}
    )
    assert (await error_of(resp))[:2] == (400, "InvalidResourcePath")


async def test_unknown_resource(client: Client) -> None:
    """A resource the policy allows but the store lacks is 404."""
    token, _ = await attest(client)
    resp = await client.get(
        "/kbs/v0/resource/default/key/nothing", headers={"Authorization": f"Bearer {token}"}
    )
    assert (await error_of(resp))[:2] == (404, "ResourceNotFound")


async def test_policy_denial_lists_reasons(
    client: Client, admin_headers: dict[str, str], settings: Settings
) -> None:
    """A policy that denies gives 403 with reason ids and no secret."""
    await create_key(client, admin_headers, "default/key/demo")
    write_policies(Path(settings.policy.dir), DENY_ALL_SAMPLE)
    assert (await client.post("/v1/policies/reload", headers=admin_headers)).status == 200
    token, _ = await attest(client)
    resp = await client.get(
        "/kbs/v0/resource/default/key/demo", headers={"Authorization": f"Bearer {token}"}
    )
    status, code, body = await error_of(resp)
    assert (status, code) == (403, "PolicyDenied")
    assert body["reasons"] and all(isinstance(r, str) for r in body["reasons"])


async def test_ungoverned_resource_denied(client: Client, admin_headers: dict[str, str]) -> None:
    """No policy for a resource means deny."""
    await create_key(client, admin_headers, "other/key/demo")
    token, _ = await attest(client)
    resp = await client.get(
        "/kbs/v0/resource/other/key/demo", headers={"Authorization": f"Bearer {token}"}
    )
    status, code, body = await error_of(resp)
    assert (status, code) == (403, "PolicyDenied")
    assert "policy.none" in body["reasons"]


async def test_broken_policy_reload_keeps_last_good(
    client: Client, admin_headers: dict[str, str], settings: Settings
) -> None:
    """A broken policy file on reload keeps the last good set and says why."""
    before = await (await client.get("/v1/policies", headers=admin_headers)).json()
    (Path(settings.policy.dir) / "broken.yaml").write_text("version: 1\nrules: [\n")
    resp = await client.post("/v1/policies/reload", headers=admin_headers)
    assert resp.status == 422
    body = await resp.json()
    assert body["ok"] is False and "broken.yaml" in body["error"]
    after = await (await client.get("/v1/policies", headers=admin_headers)).json()
    assert after["digest"] == before["digest"]
    assert "broken.yaml" in after["last_reload_error"]


async def test_error_bodies_have_request_ids(client: Client) -> None:
    """Every error body names its request id and a stable type, never a trace."""
    resp = await client.post(
        "/kbs/v0/auth", data=b"[", headers={"Content-Type": "application/json"}
    )
    body = await resp.json()
    assert body["request_id"] == resp.headers["X-Request-Id"]
    assert body["type"].endswith("/errors/MalformedRequest")
    assert "Traceback" not in json.dumps(body)


async def test_body_too_large_without_length(client: Client) -> None:
    """A chunked body that grows past the limit is 413 too."""

    async def chunks() -> Any:
        for _ in range(40):
            yield b"x" * 65536

    resp = await client.post(
        "/kbs/v0/auth", data=chunks(), headers={"Content-Type": "application/json"}
    )
    assert (await error_of(resp))[:2] == (413, "BodyTooLarge")


async def test_flow_as_one_of_several_workers(
    aiohttp_client: Any, settings: Settings, clock: FakeClock
) -> None:
    """Configured as one of several workers (shared session file, verification on the
    loop), the broker runs the whole flow, cookie session included, and refuses a replay."""
    from dataclasses import replace

    from broker.adapters.sqlite_sessions import SQLiteSessionStore
    from broker.api.app import create_app
    from broker.wiring import open_services, reset_shared_sessions

    workers = replace(settings, server=replace(settings.server, workers=2))
    reset_shared_sessions(workers)
    svc = await open_services(workers, clock=clock)
    try:
        assert isinstance(svc.sessions, SQLiteSessionStore)
        c = await aiohttp_client(create_app(workers, services=svc))
        token = (Path(workers.server.data_dir) / "admin.token").read_text().strip()
        await create_key(c, {"Authorization": f"Bearer {token}"}, "default/key/w")
        bearer, keypair = await attest(c)
        assert len(await fetch(c, "default/key/w", bearer, keypair)) == 32
        assert (await c.get("/kbs/v0/resource/default/key/w")).status == 200  # the cookie
        nonce = await auth(c)
        body = sample_attestation(nonce, ClientKeyPair.generate("p256"))
        assert (await c.post("/kbs/v0/attest", json=body)).status == 200
        resp = await c.post("/kbs/v0/attest", json=body)
        assert (await error_of(resp))[:2] == (409, "NonceReplayed")
    finally:
        await svc.close()
