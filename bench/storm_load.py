"""The storm's broker and enclaves: a child broker trusting TEST AMD roots, and the
KBS flow of one simulated enclave with any evidence provider.

    async with snp_broker(TestAMD.generate(now)) as (server, chip):
        who = await attest_with(http, server.url, SyntheticSNPProvider(chip))

BENCHMARK ONLY: the broker started here trusts the synthetic AMD chain of
``bench.snp_synth`` (``[evidence] roots_dir`` points at a temporary folder of
test roots) and a policy that lets those synthetic SEV-SNP guests fetch
``bench/*/*``. Both live in temporary directories removed when the broker
stops; nothing here is, or may become, a deployment configuration.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.loader import (
    PROTOCOL_VERSION,
    SESSION_COOKIE,
    Attested,
    LoadError,
    PhaseStats,
    fetch,
    run_bounded,
)
from bench.server import SubprocessServer
from bench.snp_synth import BENCH_MEASUREMENT, TestAMD, TestChip, write_roots
from broker.client.providers import EvidenceProvider
from broker.evidence.binding import expectation_for
from broker.keys.unwrap import ClientKeyPair

RESOURCES = ("bench/key/k0", "bench/key/k1", "bench/key/k2")
# Replaces the benchmark server's policy file, then reloaded through the admin API.
STORM_POLICY = textwrap.dedent(
    f"""\
    version: 1
    name: bench-storm
    description: >-
      Benchmark only. Sample guests, and SEV-SNP guests whose evidence is signed by
      the synthetic TEST AMD chain the benchmark trusts, may fetch bench/*/* keys.
    resources: ["bench/*/*"]
    rules:
      - name: sample-guests
        tee: sample
        when:
          - claims.svn >= 1
      - name: synthetic-snp-guests
        tee: sev-snp
        when:
          - claims.policy_debug_allowed == false
          - claims.vmpl == 0
          - claims.measurement == "{BENCH_MEASUREMENT.hex()}"
    """
)


async def _expect_json(resp: aiohttp.ClientResponse, what: str) -> Any:
    body = await resp.read()
    if resp.status != 200:
        raise LoadError(f"{what}: HTTP {resp.status} {body[:200]!r}")
    return json.loads(body)


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


# A refused (429) auth or attest is retried after Retry-After, as a real guest must;
# a little jitter keeps the refused ones from coming back in one wave.
MAX_RETRIES = 100
RETRY_JITTER = 0.25


@dataclass(slots=True)
class Refusals:
    """429 answers (rate limit or verification queue full) seen, each one retried."""

    count: int = 0


async def _post_retrying(
    http: aiohttp.ClientSession,
    url: str,
    what: str,
    body: Any,
    refusals: Refusals,
    headers: dict[str, str] | None = None,
) -> tuple[Any, str | None]:
    """POST until it is not refused; (JSON body, session cookie value if one was set)."""
    for _ in range(MAX_RETRIES + 1):
        async with http.post(url, json=body, headers=headers) as resp:
            if resp.status != 429:
                data = await _expect_json(resp, what)
                cookie = resp.cookies.get(SESSION_COOKIE)
                return data, None if cookie is None else cookie.value
            await resp.read()
            wait = float(resp.headers.get("Retry-After", "1"))
        refusals.count += 1
        await asyncio.sleep(wait * (1 + RETRY_JITTER * random.random()))
    raise LoadError(f"{what}: still refused (429) after {MAX_RETRIES} retries")


def auth_request(provider: EvidenceProvider) -> dict[str, str]:
    """The body of ``POST /kbs/v0/auth`` for ``provider``'s TEE."""
    return {"version": PROTOCOL_VERSION, "tee": provider.tee, "extra-params": ""}


async def attest_request(
    provider: EvidenceProvider, nonce: str
) -> tuple[dict[str, Any], ClientKeyPair]:
    """A fresh enclave key pair and the attest body binding it and ``nonce`` into the evidence."""
    keypair = ClientKeyPair.generate("p256")
    pubkey = keypair.public_jwk()
    evidence = await provider.evidence(expectation_for(nonce, pubkey, "").report_data)
    body = {
        "runtime-data": {"nonce": nonce, "tee-pubkey": pubkey},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
    }
    return body, keypair


async def attest_with(
    http: aiohttp.ClientSession,
    url: str,
    provider: EvidenceProvider,
    refusals: Refusals | None = None,
) -> Attested:
    """auth + attest with ``provider``'s evidence bound to the fresh nonce and key.

    A 429 is retried after its Retry-After (the broker keeps the session's
    nonce for a refused attest) and counted in ``refusals``.
    """
    refusals = refusals if refusals is not None else Refusals()
    request = auth_request(provider)
    data, cookie = await _post_retrying(http, url + "/kbs/v0/auth", "auth", request, refusals)
    if cookie is None:
        raise LoadError("auth: no session cookie")
    body, keypair = await attest_request(provider, str(data["nonce"]))
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"}
    data, _ = await _post_retrying(http, url + "/kbs/v0/attest", "attest", body, refusals, headers)
    token = str(data["token"])
    return Attested(token=token, jti=_jti(token), keypair=keypair)


async def enclave(
    http: aiohttp.ClientSession,
    url: str,
    provider: EvidenceProvider,
    *,
    resources: int = len(RESOURCES),
    check: bool = False,
    refusals: Refusals | None = None,
) -> None:
    """One enclave boot: auth, attest, ``resources`` keys (``check``: unwrap the first)."""
    who = await attest_with(http, url, provider, refusals)
    for n in range(resources):
        await fetch(http, url, who, RESOURCES[n % len(RESOURCES)], check=check and n == 0)


@dataclass(slots=True)
class StormStats:
    """A phase's stats plus, per finished enclave, when it finished after the start."""

    stats: PhaseStats
    finished_at: list[float]


async def run_timed(
    job: Callable[[int], Awaitable[object]], *, count: int, concurrency: int, seconds: float
) -> StormStats:
    """``run_bounded`` that also records each success's finish time since the phase start."""
    finished: list[float] = []
    start = time.perf_counter()

    async def timed(index: int) -> None:
        await job(index)
        finished.append(time.perf_counter() - start)

    stats = await run_bounded(timed, count=count, concurrency=concurrency, seconds=seconds)
    return StormStats(stats=stats, finished_at=finished)


async def _admin(server: SubprocessServer, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.request(method, server.url + path, json=body, headers=headers) as resp,
    ):
        text = await resp.text()
        if resp.status not in (200, 201):
            raise RuntimeError(f"{method} {path}: HTTP {resp.status} {text[:300]}")
        return json.loads(text) if text else None


@asynccontextmanager
async def snp_broker(
    amd: TestAMD, *, workers: int = 1
) -> AsyncIterator[tuple[SubprocessServer, TestChip]]:
    """A child broker trusting the TEST AMD chain ``amd``, with 3 keys and the storm policy.

    BENCHMARK ONLY (see the module docstring). Yields the server and the one
    synthetic chip whose VCEK signs every report. ``workers``: its worker processes.
    """
    chip = amd.chip(datetime.now(UTC))
    with tempfile.TemporaryDirectory(prefix="bench-test-amd-roots-") as tmp:
        roots = write_roots(amd, Path(tmp) / "roots")
        # In place before the start: every worker loads it (a reload reaches one).
        policies = Path(tmp) / "policies"
        policies.mkdir()
        (policies / "bench.yaml").write_text(STORM_POLICY)
        server = SubprocessServer(
            f'[evidence]\nroots_dir = "{roots}"\n', policies=policies, workers=workers
        )
        await server.start()
        try:
            for resource in RESOURCES:
                await _admin(server, "POST", "/v1/keys", {"id": resource})
            yield server, chip
        finally:
            await server.stop()
