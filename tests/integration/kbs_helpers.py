"""Driving the KBS protocol through the aiohttp test client."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp.test_utils import TestClient

from broker.client.session import _token_jti
from broker.evidence.binding import expectation_for
from broker.keys.unwrap import ClientKeyPair, unwrap
from broker.keys.wrap import WrapContext


async def auth(client: TestClient[Any, Any], tee: str = "sample") -> str:
    resp = await client.post(
        "/kbs/v0/auth", json={"version": "0.4.0", "tee": tee, "extra-params": ""}
    )
    assert resp.status == 200, await resp.text()
    nonce: str = (await resp.json())["nonce"]
    return nonce


def sample_attestation(nonce: str, keypair: ClientKeyPair, **extra: Any) -> dict[str, Any]:
    pubkey = keypair.public_jwk()
    expect = expectation_for(nonce, pubkey, "")
    evidence = {"svn": "1", "report_data": base64.b64encode(expect.report_data).decode(), **extra}
    return {
        "runtime-data": {"nonce": nonce, "tee-pubkey": pubkey},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    }


async def attest(
    client: TestClient[Any, Any], kind: str = "p256", **extra: Any
) -> tuple[str, ClientKeyPair]:
    nonce = await auth(client)
    keypair = ClientKeyPair.generate(kind)  # type: ignore[arg-type]
    resp = await client.post("/kbs/v0/attest", json=sample_attestation(nonce, keypair, **extra))
    assert resp.status == 200, await resp.text()
    token: str = (await resp.json())["token"]
    return token, keypair


async def fetch(
    client: TestClient[Any, Any], resource: str, token: str, keypair: ClientKeyPair
) -> bytes:
    resp = await client.get(
        f"/kbs/v0/resource/{resource}", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200, await resp.text()
    version = int(resp.headers["X-Key-Version"])
    envelope = await resp.json()
    return unwrap(
        envelope,
        keypair,
        context=WrapContext(resource=resource, version=version, jti=_token_jti(token)),
    )


async def create_key(client: TestClient[Any, Any], headers: dict[str, str], resource: str) -> None:
    resp = await client.post("/v1/keys", json={"id": resource}, headers=headers)
    assert resp.status == 201, await resp.text()


async def error_of(resp: Any) -> tuple[int, str, dict[str, Any]]:
    body = await resp.json()
    return resp.status, body["type"].rsplit("/", 1)[-1], body
