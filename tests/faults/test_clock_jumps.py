"""Clock jumps (FakeClock): forward past nonce and token lifetimes, backward, past a period."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from broker.keys.unwrap import ClientKeyPair
from broker.service.context import RequestContext
from broker.wiring import Services
from tests.fakes import FakeClock
from tests.integration.kbs_helpers import (
    attest,
    auth,
    error_of,
    fetch,
    sample_attestation,
)

Client = TestClient[Any, Any]
ADMIN = RequestContext(request_id="clock-test", client="local", actor="test")
KEY = "default/key/clock"


async def _released(client: Client, token: str) -> tuple[int, str]:
    resp = await client.get(f"/kbs/v0/resource/{KEY}", headers={"Authorization": f"Bearer {token}"})
    if resp.status == 200:
        return 200, ""
    status, code, _ = await error_of(resp)
    return status, code


async def test_forward_past_nonce_lifetime(
    client: Client, services: Services, clock: FakeClock
) -> None:
    """A nonce older than kbs.nonce_ttl_seconds (clock jumped forward) is refused with 401."""
    nonce = await auth(client)
    clock.advance(services.settings.kbs.nonce_ttl_seconds + 1)
    resp = await client.post(
        "/kbs/v0/attest", json=sample_attestation(nonce, ClientKeyPair.generate("p256"))
    )
    assert (await error_of(resp))[:2] == (401, "NonceExpired")
    # A fresh challenge after the jump works.
    await attest(client)


async def test_forward_past_token_lifetime(
    client: Client, services: Services, clock: FakeClock
) -> None:
    """A token used after kbs.token_ttl_seconds is refused with 401; nothing is released."""
    await services.keys.create_key(KEY, ADMIN)
    token, keypair = await attest(client)
    assert len(await fetch(client, KEY, token, keypair)) == 32
    clock.advance(services.settings.kbs.token_ttl_seconds)
    assert await _released(client, token) == (401, "TokenInvalid")
    clock.advance(10 * 365 * 86400)
    assert await _released(client, token) == (401, "TokenInvalid")


async def test_backward_jump_refuses_future_tokens(
    client: Client, services: Services, clock: FakeClock
) -> None:
    """A backward jump refuses tokens issued "in the future" (401) and nothing else breaks."""
    # Fresh attestations keep working and the audit chain still verifies.
    await services.keys.create_key(KEY, ADMIN)
    token, _ = await attest(client)
    clock.advance(-3600)
    assert await _released(client, token) == (401, "TokenInvalid")
    fresh, fresh_keys = await attest(client)
    assert len(await fetch(client, KEY, fresh, fresh_keys)) == 32
    # Within the allowed skew (60 s) a backward step is tolerated.
    clock.advance(-30)
    assert len(await fetch(client, KEY, fresh, fresh_keys)) == 32
    assert (await client.get("/readyz")).status == 200
    report = await services.audit.verify()
    assert report.count == len([r async for r in services.audit.iter_records(None, None)])


async def test_jump_past_rotation_period_rotates_once(services: Services, clock: FakeClock) -> None:
    """A jump over many rotation periods rotates each due key exactly once."""
    # However many scheduler passes run; a backward jump rotates nothing.
    await services.keys.create_key(KEY, ADMIN, rotate_every="1h")
    await services.keys.create_key("default/key/still", ADMIN, rotate_every="30d")
    clock.advance(-7200)
    assert await services.rotation.run_once() == []
    clock.advance(7200 + 10 * 3600 + 1)
    assert await services.rotation.run_once() == [KEY]
    assert await services.rotation.run_once() == []
    assert await services.rotation.run_once() == []
    info = await services.store.info(KEY)
    assert info.current_version == 2
    assert (await services.store.info("default/key/still")).current_version == 1
    rotated = [r async for r in services.audit.iter_records(None, None) if r.resource == KEY]
    assert sum(1 for r in rotated if "rotat" in r.event) == 1


async def test_checkpoints_across_a_backward_jump(
    client: Client, services: Services, clock: FakeClock, admin_headers: dict[str, str]
) -> None:
    """Checkpoints are signed across a backward jump of a day; the log keeps verifying."""
    await attest(client)
    first = await client.post("/v1/audit/checkpoint", headers=admin_headers)
    assert first.status == 200, await first.text()
    clock.advance(-86400)
    await attest(client)
    second = await client.post("/v1/audit/checkpoint", headers=admin_headers)
    assert second.status == 200, await second.text()
    assert await first.text() != await second.text()
    clock.advance(2 * 86400)
    await attest(client)
    third = await client.post("/v1/audit/checkpoint", headers=admin_headers)
    assert third.status == 200, await third.text()
    assert (await services.audit.verify()).count == services.audit_log.tree_size
