"""``storm``: SEV-SNP attestation throughput, latency under concurrency, and a boot storm.

The broker runs as a child process trusting a synthetic TEST AMD chain
(``bench.snp_synth``; benchmark only, never a deployment's roots). Every
simulated enclave gets a fresh nonce, so every report is new and the broker's
real SNP verifier does the whole chain and report signature work each time.

(b) attestation: auth + attest only, many enclaves at ATTEST_CONCURRENCY;
    attestations/s and server CPU ms each, beside the crypto floor measured in
    the same run: cores x P-384 verifies/s on one core (target ratio >= 0.6);
(c) latency: the full flow (auth + attest + 3 resources) at concurrency
    1, 16, 64 and 256, p50/p99 per enclave;
(d) boot storm: N enclaves (10,000 in a full run) each doing the full flow,
    at most STORM_CONCURRENCY in flight; total time, p99 per enclave (target
    < 2 s), enclaves finished and errors (must be 0).

A 429 from auth or attest (the broker's verification queue is full) is
retried after its Retry-After, as a guest must, and counted in ``429s``.
The loader shares this machine's cores with the broker. Everything binds
127.0.0.1; every phase is bounded by a count and a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import floors
from bench.common import Budget, Rate, Result, compare, percentile, run_loop
from bench.loader import PhaseStats, new_session
from bench.server import SubprocessServer
from bench.snp_synth import SyntheticSNPProvider, TestAMD, write_roots
from bench.storm_load import (
    Refusals,
    StormStats,
    attest_with,
    enclave,
    run_timed,
    snp_broker,
)
from broker.evidence import anchors_from_dir, get_verifier
from broker.evidence.binding import expectation_for
from broker.evidence.model import VerifyContext

ATTEST_CONCURRENCY = 32
LATENCY_CONCURRENCY = (1, 16, 64, 256)
STORM_CONCURRENCY = 256
P99_TARGET_S = 2.0
FLOOR_RATIO_TARGET = 0.6
COLUMNS = [
    "phase",
    "tee",
    "conc",
    "done",
    "errors",
    "429s",
    "total s",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "cpu ms/op",
    "sys %",
    "cpu/P-384",
    "vs floor",
]


@dataclass(frozen=True, slots=True)
class StormBudget:
    """Counts and deadlines of each phase (every phase stops at whichever comes first)."""

    attestations: int
    attest_seconds: float
    latency_enclaves: tuple[int, ...]  # one per LATENCY_CONCURRENCY level
    latency_seconds: float
    enclaves: int
    storm_seconds: float

    @classmethod
    def of(cls, budget: Budget, enclaves: int | None) -> StormBudget:
        if budget.rounds == 1:  # the smoke budget
            return cls(16, 10.0, (2, 16, 24, 32), 10.0, enclaves or 100, 40.0)
        return cls(2_000, 40.0, (100, 500, 1_000, 1_500), 25.0, enclaves or 10_000, 600.0)


def _verifier_op(amd: TestAMD, now: datetime) -> floors.Op:
    """The broker's SNP verifier alone on one synthetic report (test roots, binding on)."""
    chip = amd.chip(now)
    with tempfile.TemporaryDirectory(prefix="bench-test-amd-roots-") as tmp:
        anchors = anchors_from_dir(str(write_roots(amd, Path(tmp))))
    expect = expectation_for("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", {"kty": "EC"}, "")
    evidence = chip.evidence(expect.report_data)
    ctx = VerifyContext(now=now, anchors=anchors, expect=expect)
    verifier = get_verifier("sev-snp")
    verifier.verify(evidence, ctx)  # it must verify before it is timed
    return lambda: verifier.verify(evidence, ctx)


def _row(
    phase: str, tee: str, conc: int, stats: PhaseStats, cpu: tuple[float, float], refused: int
) -> dict[str, Any]:
    done = len(stats.latencies)
    total = cpu[0] + cpu[1]
    return {
        "phase": phase,
        "tee": tee,
        "conc": conc,
        "done": done,
        "errors": stats.errors,
        "429s": refused,
        "total s": stats.elapsed,
        "ops/s": done / stats.elapsed if stats.elapsed > 0 else 0.0,
        "p50 ms": percentile(stats.latencies, 50) * 1e3,
        "p99 ms": percentile(stats.latencies, 99) * 1e3,
        "cpu ms/op": total * 1e3 / done if done else None,
        "sys %": 100 * cpu[1] / total if total > 0 else None,
    }


def _check(result: Result, row: dict[str, Any], stats: PhaseStats) -> None:
    where = f"{row['phase']} at concurrency {row['conc']}"
    if stats.errors:
        result.errors.append(f"{where}: {stats.errors} errors (first: {stats.first_error})")
    if not stats.latencies:
        result.errors.append(f"{where}: nothing completed")


def _cpu_since(server: SubprocessServer, before: tuple[float, float]) -> tuple[float, float]:
    user, system = server.cpu_seconds()
    return user - before[0], system - before[1]


def _start_profiler(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes] | None:
    """py-spy on the broker for the storm, when ``--profile`` asked for it and it exists."""
    binary = Path(sys.executable).parent / "py-spy"
    if not binary.exists():
        return None
    command = [str(binary), "record", "-p", str(pid), "-d", str(seconds), "-r", "50"]
    # --subprocesses: the worker processes, when the broker runs several.
    command += ["-o", str(out), "--nonblocking", "--subprocesses"]
    if out.suffix == ".txt":
        command += ["-f", "raw"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _enclaves(
    server: SubprocessServer,
    provider: SyntheticSNPProvider,
    *,
    conc: int,
    count: int,
    seconds: float,
    attest_only: bool = False,
) -> tuple[StormStats, tuple[float, float], int]:
    """``count`` enclaves at ``conc`` in flight: stats, the server CPU they cost, 429s."""
    refusals = Refusals()
    async with new_session(conc) as http:

        async def one(index: int) -> None:
            if attest_only:
                await attest_with(http, server.url, provider, refusals)
            else:
                await enclave(http, server.url, provider, check=index == 0, refusals=refusals)

        cpu0 = server.cpu_seconds()
        stats = await run_timed(one, count=count, concurrency=conc, seconds=seconds)
        return stats, _cpu_since(server, cpu0), refusals.count


async def _phases(
    server: SubprocessServer,
    provider: SyntheticSNPProvider,
    plan: StormBudget,
    result: Result,
    profile: Path | None,
) -> None:
    # (b) auth + attest only.
    timed, cpu, refused = await _enclaves(
        server, provider, conc=ATTEST_CONCURRENCY, count=plan.attestations,
        seconds=plan.attest_seconds, attest_only=True,
    )  # fmt: skip
    phase = "(b) attestation: auth + attest"
    row = _row(phase, "sev-snp", ATTEST_CONCURRENCY, timed.stats, cpu, refused)
    result.rows.append(row)
    _check(result, row, timed.stats)
    # (c) full flow latency per concurrency level.
    for conc, count in zip(LATENCY_CONCURRENCY, plan.latency_enclaves, strict=True):
        timed, cpu, refused = await _enclaves(
            server, provider, conc=conc, count=count, seconds=plan.latency_seconds
        )
        phase = "(c) full flow: auth + attest + 3"
        # With fewer enclaves than the level (smoke), fewer are ever in flight.
        row = _row(phase, "sev-snp", min(conc, count), timed.stats, cpu, refused)
        result.rows.append(row)
        _check(result, row, timed.stats)
    # (d) the boot storm.
    profiler = None
    if profile is not None:
        profiler = _start_profiler(server.proc.pid, profile, int(min(plan.storm_seconds, 60)))
    loader0 = os.times()
    storm, cpu, refused = await _enclaves(
        server, provider, conc=STORM_CONCURRENCY, count=plan.enclaves, seconds=plan.storm_seconds
    )
    loader1 = os.times()
    if profiler is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(profiler.wait, 90)
        if profiler.poll() is None:
            profiler.kill()
            await asyncio.to_thread(profiler.wait)
        result.notes.append(f"py-spy profile of the broker during the storm: {profile}")
    loader_cpu = (loader1.user - loader0.user) + (loader1.system - loader0.system)
    _storm_row(result, plan, storm, cpu, refused, loader_cpu)


def _storm_row(
    result: Result,
    plan: StormBudget,
    storm: StormStats,
    cpu: tuple[float, float],
    refused: int,
    loader_cpu: float,
) -> None:
    stats = storm.stats
    phase = f"(d) boot storm: {plan.enclaves:,} enclaves"
    row = _row(phase, "sev-snp", min(STORM_CONCURRENCY, plan.enclaves), stats, cpu, refused)
    result.rows.append(row)
    _check(result, row, stats)
    done = len(stats.latencies)
    if done < plan.enclaves:
        result.notes.append(
            f"boot storm: {done:,} of {plan.enclaves:,} enclaves finished before the "
            f"{plan.storm_seconds:.0f} s deadline ({row['ops/s']:.1f} enclaves/s)"
        )
    since_start = percentile(storm.finished_at, 99)
    p99_ok = "met" if row["p99 ms"] < P99_TARGET_S * 1e3 else "MISSED"
    result.notes.append(
        f"boot storm: p99 per enclave {row['p99 ms'] / 1e3:.2f} s (target < {P99_TARGET_S:.0f} s:"
        f" {p99_ok}); p99 time to keys since the storm began {since_start:.1f} s; loader CPU "
        f"{loader_cpu * 1e3 / max(done, 1):.1f} ms per enclave (same cores as the broker)"
    )
    result.extra["storm"] = {
        "enclaves": plan.enclaves,
        "finished": done,
        "errors": stats.errors,
        "refused_429": refused,
        "total_s": stats.elapsed,
        "p99_since_start_s": since_start,
        "loader_cpu_s": loader_cpu,
    }


def _merge(first: list[Rate], second: list[Rate]) -> list[Rate]:
    return [
        Rate(statistics.median([*a.rounds, *b.rounds]), (*a.rounds, *b.rounds), a.ops + b.ops)
        for a, b in zip(first, second, strict=True)
    ]


def _add_floor(result: Result, p384: Rate, verifier: Rate) -> None:
    cores = os.cpu_count() or 1
    floor = p384.ops_per_s * cores
    p384_ms = p384.seconds_per_op * 1e3
    for row in result.rows:
        if row["cpu ms/op"] is not None:
            row["cpu/P-384"] = row["cpu ms/op"] / p384_ms
    attest = result.rows[0]
    attest["vs floor"] = attest["ops/s"] / floor
    result.rows.append(
        {"phase": "floor: P-384 verify, 1 core", "ops/s": p384.ops_per_s, "cpu ms/op": p384_ms,
         "cpu/P-384": 1.0}
    )  # fmt: skip
    result.rows.append(
        {"phase": f"floor: {cores} cores x P-384 verify", "ops/s": floor, "vs floor": 1.0}
    )
    result.rows.append(
        {"phase": "verifier alone: SNPVerifier.verify, 1 core", "tee": "sev-snp",
         "ops/s": verifier.ops_per_s, "cpu ms/op": verifier.seconds_per_op * 1e3,
         "cpu/P-384": verifier.seconds_per_op / p384.seconds_per_op,
         "vs floor": verifier.ops_per_s / floor}
    )  # fmt: skip
    verdict = "met" if attest["vs floor"] >= FLOOR_RATIO_TARGET else "MISSED"
    result.notes.append(
        f"(b) attestations/s / (cores x P-384 verifies/s per core) = {attest['vs floor']:.3f} "
        f"(target >= {FLOOR_RATIO_TARGET}: {verdict}); cores = {cores}"
    )
    result.notes.append(
        "429s: auth/attest answers 'retry later' (the broker's verification queue was full); "
        "each was retried after its Retry-After, as a guest must, and is not an error"
    )
    result.notes.append(
        "cpu/P-384 = server CPU per op / one P-384 verify; an attestation verifies 1 P-384 "
        "(the report) + 3 RSA-4096-PSS (ARK, ASK, VCEK) and issues an ES256 token"
    )
    result.notes.append(
        "evidence: synthetic SEV-SNP v3 Milan reports, fresh nonce each, signed by a TEST "
        "ARK->ASK->VCEK chain the broker trusts for this run only (evidence.roots_dir)"
    )


async def _run(
    budget: Budget, plan: StormBudget, result: Result, profile: Path | None, workers: int
) -> None:
    now = datetime.now(UTC)
    amd = TestAMD.generate(now)
    verifier_op = _verifier_op(amd, now)
    sides = [floors.p384_verify(), verifier_op]
    before = compare(sides, budget)
    async with snp_broker(amd, workers=workers) as (server, chip):
        provider = SyntheticSNPProvider(chip)
        try:
            await _phases(server, provider, plan, result, profile)
        except aiohttp.ClientError as exc:
            result.errors.append(f"{type(exc).__name__}: {exc}")
    p384, verifier = _merge(before, compare(sides, budget))
    _add_floor(result, p384, verifier)
    shape = (
        "one process"
        if workers == 1
        else f"--workers {workers} (processes on one port, sharing the SQLite data dir)"
    )
    result.notes.append(f"server: python -m broker.cli serve --dev, {shape}, info logs")
    result.notes.append(f"server cpu: {server.cpu_scope}")


def run(
    budget: Budget,
    *,
    enclaves: int | None = None,
    profile: Path | None = None,
    workers: int | None = None,
) -> Result:
    """``workers``: the broker's worker processes (default: one per CPU)."""
    result = Result(
        name="storm",
        title="SEV-SNP attestation, latency and a boot storm vs the P-384 floor",
        columns=COLUMNS,
    )
    plan = StormBudget.of(budget, enclaves)
    started = time.perf_counter()
    run_loop(_run(budget, plan, result, profile, workers or os.cpu_count() or 1))
    result.extra["plan"] = {
        "attestations": plan.attestations,
        "latency_enclaves": plan.latency_enclaves,
        "enclaves": plan.enclaves,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result
