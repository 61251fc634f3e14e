"""Collateral on the KBS path: pre-loaded files for evidence that does not carry its own."""

from __future__ import annotations

import base64
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from broker.api.app import create_app
from broker.config import Settings
from broker.evidence.collateral import collateral_request
from broker.keys.unwrap import ClientKeyPair
from broker.wiring import open_services
from tests.fakes import FakeClock
from tests.integration.kbs_helpers import error_of
from tests.vectors import expected, parse_time, read_bytes, requires_evidence

pytestmark = requires_evidence
VECTOR = ("tdx", "dcapqvl-tdx-uptodate")


async def _attest_real_quote(
    aiohttp_client: Any, settings: Settings, clock: FakeClock
) -> tuple[int, str]:
    svc = await open_services(settings, clock=clock)
    try:
        client = await aiohttp_client(create_app(settings, services=svc))
        resp = await client.post(
            "/kbs/v0/auth", json={"version": "0.4.0", "tee": "tdx", "extra-params": ""}
        )
        nonce = (await resp.json())["nonce"]
        quote = read_bytes(VECTOR[0], expected(*VECTOR)["files"]["quote"])
        body = {
            "runtime-data": {
                "nonce": nonce,
                "tee-pubkey": ClientKeyPair.generate("p256").public_jwk(),
            },
            "tee-evidence": {"primary_evidence": {"quote": base64.b64encode(quote).decode()}},
        }
        status, code, _ = await error_of(await client.post("/kbs/v0/attest", json=body))
        return status, code
    finally:
        await svc.close()


@pytest.fixture
def at_vector_time() -> FakeClock:
    return FakeClock(parse_time(expected(*VECTOR)["verification_time"]))


async def test_without_collateral_refused(
    aiohttp_client: Any, settings: Settings, at_vector_time: FakeClock
) -> None:
    """A quote without collateral and no collateral source is refused as CollateralInvalid."""
    assert await _attest_real_quote(aiohttp_client, settings, at_vector_time) == (
        403,
        "CollateralInvalid",
    )


async def test_preloaded_collateral_is_used(
    aiohttp_client: Any, settings: Settings, at_vector_time: FakeClock, tmp_path: Path
) -> None:
    """With the collateral pre-loaded, the quote verifies and only the challenge binding fails."""
    quote = read_bytes(VECTOR[0], expected(*VECTOR)["files"]["quote"])
    req = collateral_request("tdx", {"quote": base64.b64encode(quote).decode()})
    assert req is not None
    target = tmp_path / "collateral" / "dcap" / "tdx" / f"{req.fmspc}-{req.ca}.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(read_bytes(VECTOR[0], expected(*VECTOR)["files"]["collateral"]))
    cached = replace(
        settings, evidence=replace(settings.evidence, collateral_dir=str(tmp_path / "collateral"))
    )
    # The real quote's REPORT_DATA cannot bind this challenge: everything before that passed.
    assert await _attest_real_quote(aiohttp_client, cached, at_vector_time) == (
        403,
        "EvidenceNotFresh",
    )
