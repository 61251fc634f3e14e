"""``release``: the broker over HTTP on 127.0.0.1, driven by simulated sample-TEE enclaves.

(a) token path: attest once, then GET a resource with the bearer token at
    concurrency 1, 16 and 64 (releases/s, p50/p99 latency, server CPU/release);
(b) full flow: auth + attest + 3 resources per enclave, for many enclaves at
    concurrency 16 and 64 (total time, p99 per enclave, errors, which must be 0).

The floor is the cryptography a release cannot avoid: one ES256 verify (the
token), one ECDH-ES wrap to a P-256 key (ephemeral key pair + ECDH) and one
AES-256-GCM open (the sealed value). It is measured in this process before and
after the load, while the broker idles.
"""

from __future__ import annotations

import os
import statistics
from datetime import UTC, datetime
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec

from bench import floors
from bench.common import Budget, Rate, Result, compare, percentile, run_loop
from bench.loader import Attested, PhaseStats, attest, fetch, new_session, run_bounded
from bench.openbao_side import run_openbao_side
from bench.server import Server, SubprocessServer, start_server
from broker import tokens
from broker.keys import sealing
from broker.keys.algorithms import WrapContext
from broker.keys.material import SecretBytes
from broker.keys.unwrap import ClientKeyPair
from broker.keys.wrap import wrap

TOKEN_CONCURRENCY = (1, 16, 64)
FLOW_CONCURRENCY = (16, 64)
RESOURCES = ("bench/key/k0", "bench/key/k1", "bench/key/k2")
COLUMNS = [
    "phase",
    "conc",
    "done",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "cpu ms/op",
    "sys %",
    "ratio wall",
    "ratio cpu",
]


def floor_op() -> floors.Op:
    """ES256 verify + P-256 keygen/ECDH + AES-256-GCM open."""
    return floors.chain(
        floors.p256_verify(), floors.ecdh_ephemeral(ec.SECP256R1()), floors.aes_gcm_open()
    )


def library_op() -> floors.Op:
    """The broker's own pure calls for one release: token verify, unseal, wrap."""
    key = tokens.TokenKey.generate()
    now = datetime.now(UTC)
    jwk = ClientKeyPair.generate("p256").public_jwk()
    token, info = tokens.issue(
        key, issuer="attested-broker", tee="sample", claims={"svn": 1, "debug": False},
        flags={"debug": False}, tee_pubkey=jwk, policy_digest="sha256:" + "0" * 64,
        evidence_digest="sha256:" + "1" * 64, now=now, ttl_seconds=3600,
    )  # fmt: skip
    root = sealing.RootKey.generate()
    sealed = sealing.seal(root, SecretBytes(os.urandom(32)), resource=RESOURCES[0], version=1)
    context = WrapContext(resource=RESOURCES[0], version=1, jti=info.jti)

    def op() -> object:
        claims = tokens.verify(key, token, issuer="attested-broker", now=now)
        value = sealing.unseal(root, sealed, resource=RESOURCES[0], version=1)
        return wrap(claims.tee_pubkey, value.reveal(), context=context)

    return op


async def _create_keys(server_url: str, admin_token: str) -> None:
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for resource in RESOURCES:
            async with http.post(
                server_url + "/v1/keys", json={"id": resource}, headers=headers
            ) as resp:
                if resp.status != 201:
                    raise RuntimeError(f"creating {resource}: HTTP {resp.status}")


def _cpu_delta(server: Server, before: tuple[float, float]) -> tuple[float, float]:
    user, system = server.cpu_seconds()
    return user - before[0], system - before[1]


def _row(
    phase: str, concurrency: int, stats: PhaseStats, cpu: tuple[float, float], per_op: int = 1
) -> dict[str, Any]:
    done = len(stats.latencies)
    total = cpu[0] + cpu[1]
    return {
        "phase": phase,
        "conc": concurrency,
        "done": done,
        "ops/s": done / stats.elapsed if stats.elapsed > 0 else 0.0,
        "p50 ms": percentile(stats.latencies, 50) * 1e3,
        "p99 ms": percentile(stats.latencies, 99) * 1e3,
        "errors": stats.errors,
        "cpu ms/op": total * 1e3 / done if done else None,
        "sys %": 100 * cpu[1] / total if total > 0 else None,
        "total s": stats.elapsed,
        "releases per op": per_op,
    }


async def _token_path(
    url: str, server: Server, concurrency: int, budget: Budget
) -> tuple[dict[str, Any], PhaseStats]:
    async with new_session(concurrency) as http:
        who: Attested = await attest(http, url)
        await fetch(http, url, who, RESOURCES[0], check=True)
        cpu0 = server.cpu_seconds()
        stats = await run_bounded(
            lambda i: fetch(http, url, who, RESOURCES[i % len(RESOURCES)]),
            count=budget.token_requests,
            concurrency=concurrency,
            seconds=budget.phase_seconds,
        )
        cpu = _cpu_delta(server, cpu0)
    return _row("token path: GET resource", concurrency, stats, cpu), stats


async def _enclave(http: aiohttp.ClientSession, url: str, index: int) -> None:
    who = await attest(http, url)
    for n, resource in enumerate(RESOURCES):
        await fetch(http, url, who, resource, check=index == 0 and n == 0)


async def _full_flow(
    url: str, server: Server, concurrency: int, budget: Budget
) -> tuple[dict[str, Any], PhaseStats]:
    async with new_session(concurrency) as http:
        cpu0 = server.cpu_seconds()
        stats = await run_bounded(
            lambda i: _enclave(http, url, i),
            count=budget.enclaves,
            concurrency=concurrency,
            seconds=budget.phase_seconds,
        )
        cpu = _cpu_delta(server, cpu0)
    row = _row("full flow: enclave (auth+attest+3)", concurrency, stats, cpu, len(RESOURCES))
    return row, stats


def _merge(first: list[Rate], second: list[Rate]) -> list[Rate]:
    return [
        Rate(
            ops_per_s=statistics.median([*a.rounds, *b.rounds]),
            rounds=(*a.rounds, *b.rounds),
            ops=a.ops + b.ops,
        )
        for a, b in zip(first, second, strict=True)
    ]


async def _run(budget: Budget, mode: str, result: Result, include_openbao: bool) -> None:
    sides = [floor_op(), library_op()]
    before = compare(sides, budget)
    server = await start_server(mode)
    try:
        await _create_keys(server.url, server.admin_token)
        for concurrency in TOKEN_CONCURRENCY:
            row, stats = await _token_path(server.url, server, concurrency, budget)
            result.rows.append(row)
            _check(result, row, stats)
        for concurrency in FLOW_CONCURRENCY:
            row, stats = await _full_flow(server.url, server, concurrency, budget)
            result.rows.append(row)
            _check(result, row, stats)
    finally:
        await server.stop()
    if include_openbao:
        rows, notes = await run_openbao_side(budget)
        for row in rows:
            row["releases per op"] = 1
            result.rows.append(row)
            if row["errors"]:
                result.errors.append(
                    f"{row['phase']} at concurrency {row['conc']}: {row['errors']} errors"
                )
        result.notes.extend(notes)
    floor_rate, library_rate = _merge(before, compare(sides, budget))
    _add_ratios(result, floor_rate, library_rate)
    result.extra["server"] = {"mode": mode, "cpu scope": server.cpu_scope}
    result.notes.append(f"server cpu: {server.cpu_scope}")
    if isinstance(server, SubprocessServer):
        result.notes.append(
            "server: python -m broker.cli serve --dev (uvloop, info logs to a file)"
        )


def _check(result: Result, row: dict[str, Any], stats: PhaseStats) -> None:
    if stats.errors:
        result.errors.append(
            f"{row['phase']} at concurrency {row['conc']}: {stats.errors} errors "
            f"(first: {stats.first_error})"
        )
    if not stats.latencies:
        result.errors.append(f"{row['phase']} at concurrency {row['conc']}: nothing completed")


def _add_ratios(result: Result, floor_rate: Rate, library_rate: Rate) -> None:
    floor_ms = floor_rate.seconds_per_op * 1e3
    for row in result.rows:
        releases = row.pop("releases per op")
        if releases == 1 and row["ops/s"]:
            row["ratio wall"] = floor_rate.ops_per_s / row["ops/s"]
        if row["cpu ms/op"] is not None:
            row["ratio cpu"] = row["cpu ms/op"] / (releases * floor_ms)
    result.rows.append(
        {
            "phase": "floor: ES256 verify + P-256 ECDH-ES + AES-GCM open",
            "ops/s": floor_rate.ops_per_s,
            "cpu ms/op": floor_ms,
            "ratio cpu": 1.0,
        }
    )
    result.rows.append(
        {
            "phase": "library: tokens.verify + unseal + keys.wrap",
            "ops/s": library_rate.ops_per_s,
            "cpu ms/op": library_rate.seconds_per_op * 1e3,
            "ratio cpu": library_rate.seconds_per_op / floor_rate.seconds_per_op,
        }
    )
    result.notes.append(
        "ratio wall = floor ops/s / releases/s; ratio cpu = server CPU per release / floor cost "
        "(full flow: per enclave, against 3 release floors; attestation work is on top)"
    )
    result.notes.append(
        "floor and library rows run single-threaded in the bench process (no HTTP, no SQLite, "
        "no audit), before and after the load; their 'cpu ms/op' is ms per op"
    )


def run(budget: Budget, mode: str = "subprocess", *, openbao: bool = True) -> Result:
    result = Result(
        name="release",
        title="key releases over HTTP on 127.0.0.1 vs the release floor",
        columns=COLUMNS,
    )
    run_loop(_run(budget, mode, result, openbao))
    return result
