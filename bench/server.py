"""A broker to benchmark: ``broker serve --dev`` as a child process, or in this process.

Both bind 127.0.0.1 on a port of their own, keep every file in a temporary
data dir, and load one policy that lets the sample TEE fetch ``bench/*/*``.
The child process is preferred: its CPU time can be read from
``/proc/<pid>/stat`` apart from the load generator's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import aiohttp
from aiohttp import web

from bench.common import REPO_ROOT

HOST = "127.0.0.1"
BENCH_POLICY = textwrap.dedent(
    """\
    version: 1
    name: bench-sample
    description: Benchmark only. Sample (software) TEE guests may fetch bench/*/* keys.
    resources: ["bench/*/*"]
    rules:
      - name: sample-guests
        tee: sample
        when:
          - claims.svn >= 1
    """
)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


class Server(Protocol):
    url: str
    admin_token: str
    # What cpu_seconds() measures, for the report.
    cpu_scope: str

    def cpu_seconds(self) -> tuple[float, float]:
        """(user, system) CPU seconds so far."""
        ...

    async def stop(self) -> None: ...


def _prepare(folder: Path) -> tuple[Path, Path]:
    policies = folder / "policies"
    policies.mkdir()
    (policies / "bench.yaml").write_text(BENCH_POLICY)
    return folder / "data", policies


def _process_tree(root: int) -> list[list[str]]:
    """The /proc stat fields (after the command name) of ``root`` and its descendants."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "stat").read_text()
            except OSError:
                continue  # exited meanwhile
            stats[int(entry.name)] = text.rpartition(")")[2].split()
    tree, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats:
            tree.append(stats[pid])
            # Field 4 is the parent's pid.
            frontier += [child for child, f in stats.items() if int(f[1]) == pid]
    return tree


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def _wait_ready(url: str, alive: Callable[[], bool], deadline: float) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url + "/readyz") as resp:
                    if resp.status == 200:
                        return
            if not alive() or time.monotonic() > deadline:
                raise RuntimeError("broker did not become ready")
            await asyncio.sleep(0.1)


class SubprocessServer:
    """``python -m broker.cli serve --dev`` on a free port; stopped by its PID."""

    cpu_scope = "server processes (/proc/<pid>/stat utime+stime, workers included)"

    def __init__(
        self,
        config_toml: str = "",
        *,
        policies: Path | None = None,
        token_dir: Path | None = None,
        workers: int = 1,
    ) -> None:
        """``policies``: a policy folder to serve instead of its own (replicas share one).
        ``token_dir``: where the dev admin token appears when the config sets
        ``[server] keys_dir`` (the broker writes it there, not in the data dir).
        ``workers``: ``serve --workers`` (worker processes on the one port).
        """
        self.workers = workers
        self._tmp = tempfile.TemporaryDirectory(prefix="broker-bench-")
        folder = Path(self._tmp.name)
        data, own_policies = _prepare(folder)
        policies = policies or own_policies
        port = _free_port()
        self.url = f"http://{HOST}:{port}"
        self.log_path = folder / "serve.log"
        self._log = self.log_path.open("w")
        paths = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        command = [sys.executable, "-m", "broker.cli", "serve", "--dev", "--host", HOST]
        command += ["--port", str(port), "--data-dir", str(data), "--policies", str(policies)]
        if workers > 1:
            command += ["--workers", str(workers)]
        if config_toml:
            config = folder / "broker.toml"
            config.write_text(config_toml)
            command += ["--config", str(config)]
        self.proc = subprocess.Popen(
            command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=folder,
            env=env,
        )
        self._token_dir = token_dir or data
        self.admin_token = ""
        self._ticks = os.sysconf("SC_CLK_TCK")

    async def start(self) -> None:
        try:
            await _wait_ready(
                self.url, lambda: self.proc.poll() is None, time.monotonic() + START_TIMEOUT
            )
        except RuntimeError:
            await self.stop()
            raise RuntimeError(f"broker did not start; log: {self.log_text()[-2000:]}") from None
        self.admin_token = (self._token_dir / "admin.token").read_text().strip()

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU of the broker and its worker processes, all threads."""
        user = system = 0
        for fields in _process_tree(self.proc.pid):
            # Fields 14 and 15 (utime, stime) count every thread of a process.
            user += int(fields[11])
            system += int(fields[12])
        return user / self._ticks, system / self._ticks

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT)
        self._log.close()
        self._tmp.cleanup()


class InProcessServer:
    """The aiohttp app on an AppRunner in this event loop (shares the CPU with the loader)."""

    cpu_scope = "whole bench process, loader included (time.process_time)"

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="broker-bench-")
        self._folder = Path(self._tmp.name)
        self.url = ""
        self.admin_token = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        from broker.api.app import create_app  # noqa: PLC0415 - only this mode needs the app
        from broker.config import load_settings, with_dev_defaults  # noqa: PLC0415
        from broker.logging import configure_logging  # noqa: PLC0415

        configure_logging("json", "warning")
        data, policies = _prepare(self._folder)
        base = with_dev_defaults(load_settings(None, {}))
        settings = replace(
            base,
            server=replace(base.server, host=HOST, port=1, data_dir=str(data)),
            policy=replace(base.policy, dir=str(policies)),
        )
        self._runner = web.AppRunner(create_app(settings), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        self.admin_token = (data / "admin.token").read_text().strip()

    def cpu_seconds(self) -> tuple[float, float]:
        times = os.times()
        return times.user, times.system

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self._tmp.cleanup()


async def start_server(mode: str) -> SubprocessServer | InProcessServer:
    server: SubprocessServer | InProcessServer = (
        SubprocessServer() if mode == "subprocess" else InProcessServer()
    )
    await server.start()
    return server
