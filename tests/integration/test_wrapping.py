"""Wrapping negotiated by the enclave's key: every algorithm end to end, allow-lists, PQ policy."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from broker.api.app import create_app
from broker.client.session import _token_jti
from broker.config import Settings
from broker.errors import UnwrapError
from broker.keys.unwrap import ClientKeyPair, unwrap
from broker.keys.wrap import WrapContext
from broker.wiring import Services, open_services
from tests.fakes import FakeClock
from tests.integration.conftest import write_policies
from tests.integration.kbs_helpers import (
    attest,
    auth,
    create_key,
    error_of,
    fetch,
    sample_attestation,
)

Client = TestClient[Any, Any]
KINDS_AND_ALGS = [
    ("p256", "ECDH-ES+A256KW"),
    ("p521", "ECDH-ES+A256KW"),
    ("rsa", "RSA-OAEP-256"),
    ("x25519", "HPKE-3"),
    ("mlkem768x25519", "HPKE-10"),
    ("sealedbox", "nacl-sealedbox"),
]


@pytest.mark.parametrize(("kind", "alg"), KINDS_AND_ALGS)
async def test_every_algorithm_round_trips(
    client: Client, admin_headers: dict[str, str], services: Services, kind: str, alg: str
) -> None:
    """Each client key type gets its algorithm; it is named in the response, token and audit record."""
    await create_key(client, admin_headers, "default/key/k")
    token, keypair = await attest(client, kind)
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["wrap_alg"] == alg
    resp = await client.get(
        "/kbs/v0/resource/default/key/k", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.headers["X-Wrap-Alg"] == alg
    assert len(await fetch(client, "default/key/k", token, keypair)) == 32
    released = [
        r async for r in services.audit.iter_records(None, None) if r.event == "resource.released"
    ]
    assert {r.wrap_alg for r in released} == {alg}


@pytest.mark.parametrize("kind", ["p256", "x25519", "mlkem768x25519", "sealedbox"])
async def test_moved_to_another_context_fails(
    client: Client, admin_headers: dict[str, str], kind: str
) -> None:
    """A wrapped key presented as another resource (or version) does not open."""
    await create_key(client, admin_headers, "default/key/a")
    token, keypair = await attest(client, kind)
    resp = await client.get(
        "/kbs/v0/resource/default/key/a", headers={"Authorization": f"Bearer {token}"}
    )
    envelope = await resp.json()
    jti = _token_jti(token)
    assert len(unwrap(envelope, keypair, context=WrapContext("default/key/a", 1, jti))) == 32
    for ctx in (
        WrapContext("default/key/b", 1, jti),
        WrapContext("default/key/a", 2, jti),
        WrapContext("default/key/a", 1, "other-jti"),
    ):
        with pytest.raises(UnwrapError):
            unwrap(envelope, keypair, context=ctx)


async def test_disallowed_algorithm_refused(
    aiohttp_client: Any, settings: Settings, clock: FakeClock
) -> None:
    """A key whose algorithm the config does not allow is refused with a clear 400 at attest."""
    restricted = replace(
        settings, keys=replace(settings.keys, allowed_wrap_algs=("HPKE-10", "ECDH-ES+A256KW"))
    )
    svc = await open_services(restricted, clock=clock)
    try:
        c = await aiohttp_client(create_app(restricted, services=svc))
        nonce = await auth(c)
        resp = await c.post(
            "/kbs/v0/attest", json=sample_attestation(nonce, ClientKeyPair.generate("rsa"))
        )
        status, code, body = await error_of(resp)
        assert (status, code) == (400, "UnsupportedKey")
        assert "RSA-OAEP-256" in body["detail"]
    finally:
        await svc.close()


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "P-384", "x": "AAAA", "y": "AAAA"},
        {"kty": "oct", "k": "AAAA"},
        {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
        {"kty": "AKP", "alg": "ML-KEM-512", "pub": "AAAA"},
        {},
    ],
)
async def test_unknown_key_types_refused(client: Client, jwk: dict[str, str]) -> None:
    """Unknown or unsupported JWKs are a 400 UnsupportedKey."""
    nonce = await auth(client)
    body = sample_attestation(nonce, ClientKeyPair.generate("p256"))
    body["runtime-data"]["tee-pubkey"] = jwk
    resp = await client.post("/kbs/v0/attest", json=body)
    assert (await error_of(resp))[:2] == (400, "UnsupportedKey")


async def test_policy_requires_post_quantum(
    client: Client, admin_headers: dict[str, str], settings: Settings
) -> None:
    """A policy requiring the PQ hybrid refuses an EC key with a reason id and releases to HPKE-10."""
    write_policies(
        Path(settings.policy.dir),
        """\
version: 1
name: pq-only
resources: ["default/*/*"]
rules:
  - name: hybrid-wrapping
    tee: sample
    when:
      - claims.svn >= 1
      - request.wrap_strength >= 3
""",
    )
    assert (await client.post("/v1/policies/reload", headers=admin_headers)).status == 200
    await create_key(client, admin_headers, "default/key/pq")
    token, _ = await attest(client, "p256")
    resp = await client.get(
        "/kbs/v0/resource/default/key/pq", headers={"Authorization": f"Bearer {token}"}
    )
    status, code, body = await error_of(resp)
    assert (status, code) == (403, "PolicyDenied")
    assert "rule.failed:pq-only/hybrid-wrapping#1" in body["reasons"]
    token, keypair = await attest(client, "mlkem768x25519")
    assert len(await fetch(client, "default/key/pq", token, keypair)) == 32
