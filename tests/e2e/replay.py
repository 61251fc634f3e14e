"""Posting one attestation twice against a live broker."""

from __future__ import annotations

import aiohttp

from broker.client.providers import SampleProvider
from broker.evidence.binding import expectation_for
from broker.keys.unwrap import ClientKeyPair


async def replay_status(url: str) -> tuple[int, int]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.post(
            f"{url}/kbs/v0/auth", json={"version": "0.4.0", "tee": "sample", "extra-params": ""}
        ) as r:
            nonce = (await r.json())["nonce"]
        pubkey = ClientKeyPair.generate("p256").public_jwk()
        evidence = await SampleProvider().evidence(expectation_for(nonce, pubkey, "").report_data)
        body = {
            "runtime-data": {"nonce": nonce, "tee-pubkey": pubkey},
            "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
        }
        async with http.post(f"{url}/kbs/v0/attest", json=body) as first:
            status1 = first.status
        async with http.post(f"{url}/kbs/v0/attest", json=body) as second:
            status2 = second.status
    return status1, status2
