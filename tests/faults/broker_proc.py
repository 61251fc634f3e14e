"""A ``broker serve --dev`` child process for fault tests: output kept, stopped by PID.

Output goes through pipes drained by threads (not files), so a child under a
file-size limit can always write its logs, and a test can grep all of it.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

BROKER = [sys.executable, "-m", "broker.cli"]
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        # Ignored, SIGXFSZ lets a write past the limit fail with EFBIG (what a full
        # disk looks like to SQLite) instead of killing the process; SIG_IGN survives exec.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        # Soft limit only: the test can give the space back (prlimit) to the running child.
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def _drain(stream: IO[bytes], sink: bytearray) -> None:
    fd = stream.fileno()
    for chunk in iter(lambda: os.read(fd, 65536), b""):
        sink.extend(chunk)


@dataclass
class BrokerProcess:
    """One broker child on 127.0.0.1; ``stdout``/``stderr`` hold everything it wrote."""

    folder: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("broker is not running")
        return self.proc.pid

    def exit_code(self) -> int | None:
        """None while running (or never started)."""
        return None if self.proc is None else self.proc.poll()

    def admin_token(self) -> str:
        return (self.data / "admin.token").read_text().strip()

    def auditor_token(self) -> str:
        return (self.data / "auditor.token").read_text().strip()

    def start(self, *, file_size_limit: int | None = None) -> None:
        """Start and wait for /readyz (or fail with the child's output)."""
        argv = [
            *BROKER, "serve", "--dev", "--data-dir", str(self.data), "--port", str(self.port),
            "--policies", str(self.folder / "policies"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **self.env},
            preexec_fn=None if file_size_limit is None else _file_size_limit(file_size_limit),  # noqa: PLW1509 - setrlimit must run in the child
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=_drain, args=(self.proc.stdout, self.stdout), daemon=True),
            threading.Thread(target=_drain, args=(self.proc.stderr, self.stderr), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("broker did not start:\n" + self.output())
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def output(self) -> str:
        return (bytes(self.stdout) + bytes(self.stderr)).decode("utf-8", "replace")

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def _reap(self, timeout: float) -> None:
        assert self.proc is not None
        self.proc.wait(timeout=timeout)
        for thread in self._threads:
            thread.join(timeout=5)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        """SIGKILL by PID (no clean shutdown of any kind)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self._reap(15)

    def stop(self) -> None:
        """SIGTERM by PID, SIGKILL after 15 s; idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
        self._reap(15)

    def request(
        self, method: str, path: str, *, token: str | None = None, body: bytes | None = None
    ) -> tuple[int, bytes]:
        """One HTTP call; (status, body) for error statuses too."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return int(exc.code), bytes(exc.read())


def integrity_check(path: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file (recovering its WAL, as a restart would)."""
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def store_defects(path: Path) -> list[str]:
    """Half-written resources in a SQLite key store: a resource without the row of its
    current version, a version row without its resource, or a gap in the versions."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT 'no current version: ' || r.id FROM resources r WHERE NOT EXISTS ("
            " SELECT 1 FROM resource_versions v WHERE v.resource = r.id"
            " AND v.version = r.current_version)"
            " UNION ALL SELECT 'orphan version: ' || resource FROM resource_versions"
            " WHERE resource NOT IN (SELECT id FROM resources)"
            " UNION ALL SELECT 'version gap: ' || r.id FROM resources r"
            " WHERE (SELECT COUNT(*) FROM resource_versions v WHERE v.resource = r.id)"
            " != r.current_version"
        ).fetchall()
    finally:
        conn.close()
    return [str(row[0]) for row in rows]
