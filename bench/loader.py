"""The async load generator: simulated sample-TEE enclaves speaking KBS 0.4.0.

Every loop is bounded twice, by a request count and by a deadline, and ends
by itself. Responses are checked for status and shape; the first release of
a run is also unwrapped, so the figures belong to a broker that works.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from broker.client.providers import SampleProvider
from broker.evidence.binding import expectation_for
from broker.keys.algorithms import WrapContext
from broker.keys.unwrap import ClientKeyPair, unwrap

PROTOCOL_VERSION = "0.4.0"
SESSION_COOKIE = "kbs-session-id"


class LoadError(Exception):
    """A request the broker answered wrongly (status or body)."""


@dataclass(frozen=True, slots=True)
class Attested:
    token: str
    jti: str
    keypair: ClientKeyPair


@dataclass(slots=True)
class PhaseStats:
    """Latencies (seconds) of the operations that succeeded, and the failures."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    elapsed: float = 0.0


def new_session(concurrency: int) -> aiohttp.ClientSession:
    # Cookies are handled by hand: one shared pool serves many simulated enclaves.
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(concurrency, 1)),
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def _expect_json(resp: aiohttp.ClientResponse, what: str) -> Any:
    body = await resp.read()
    if resp.status != 200:
        raise LoadError(f"{what}: HTTP {resp.status} {body[:200]!r}")
    return json.loads(body)


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


async def attest(http: aiohttp.ClientSession, url: str, kind: str = "p256") -> Attested:
    """auth + attest as a sample-TEE guest; returns the token and the ephemeral key pair."""
    request = {"version": PROTOCOL_VERSION, "tee": "sample", "extra-params": ""}
    async with http.post(url + "/kbs/v0/auth", json=request) as resp:
        nonce = str((await _expect_json(resp, "auth"))["nonce"])
        cookie = resp.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise LoadError("auth: no session cookie")
    keypair = ClientKeyPair.generate(kind)  # type: ignore[arg-type]
    pubkey = keypair.public_jwk()
    evidence = await SampleProvider().evidence(expectation_for(nonce, pubkey, "").report_data)
    body = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": pubkey},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    }
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie.value}"}
    async with http.post(url + "/kbs/v0/attest", json=body, headers=headers) as resp:
        token = str((await _expect_json(resp, "attest"))["token"])
    return Attested(token=token, jti=_jti(token), keypair=keypair)


async def fetch(
    http: aiohttp.ClientSession, url: str, who: Attested, resource: str, *, check: bool = False
) -> None:
    """GET one resource with the bearer token; ``check`` also unwraps it."""
    headers = {"Authorization": f"Bearer {who.token}"}
    async with http.get(f"{url}/kbs/v0/resource/{resource}", headers=headers) as resp:
        envelope = await _expect_json(resp, "resource")
        version = int(resp.headers.get("X-Key-Version", "-1"))
    if not isinstance(envelope, dict) or "ciphertext" not in envelope:
        raise LoadError("resource: response is not a wrapped key")
    if check:
        context = WrapContext(resource=resource, version=version, jti=who.jti)
        if len(unwrap(envelope, who.keypair, context=context)) != 32:
            raise LoadError("resource: unwrapped key is not 32 bytes")


async def run_bounded(
    job: Callable[[int], Awaitable[None]], *, count: int, concurrency: int, seconds: float
) -> PhaseStats:
    """Runs ``job(i)`` for i < count on ``concurrency`` workers, none started after the deadline."""
    stats = PhaseStats()
    next_index = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        nonlocal next_index
        while next_index < count and time.perf_counter() < deadline:
            index = next_index
            next_index += 1
            began = time.perf_counter()
            try:
                await job(index)
            except (LoadError, aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                stats.errors += 1
                stats.first_error = stats.first_error or f"{type(exc).__name__}: {exc}"
            else:
                stats.latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    stats.elapsed = time.perf_counter() - start
    return stats
