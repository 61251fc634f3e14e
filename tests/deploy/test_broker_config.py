"""Every broker configuration and command line in deploy/ is one the broker accepts."""

from __future__ import annotations

import importlib.util
import json
import re
import stat
from pathlib import Path
from types import ModuleType

import pytest

from broker.cli.serve import serve
from broker.config import load_settings
from tests.deploy import (
    COMPOSE,
    DEPLOY,
    KUBERNETES,
    PENDING_SERVE_OPTIONS,
    SYSTEMD,
    kubernetes_objects,
    one,
    serve_options,
    shell_words,
    yaml_documents,
)

# The store each deployment is for: replicas share PostgreSQL; one host uses SQLite.
STORE_BACKENDS = {"kubernetes": "postgres", "compose": "postgres", "systemd": "sqlite"}


def _configs() -> dict[str, str]:
    """Name -> TOML text of every broker config deploy/ ships."""
    configmap = one(kubernetes_objects(), "ConfigMap", "attested-broker-config")
    return {
        "kubernetes": configmap["data"]["broker.toml"],
        "compose": (COMPOSE / "broker.toml").read_text("utf-8"),
        "systemd": (SYSTEMD / "broker.toml").read_text("utf-8"),
    }


def _serve_commands() -> dict[str, list[str]]:
    """Where -> the `broker serve` argument vector deploy/ runs."""
    pod = one(kubernetes_objects(), "Deployment")["spec"]["template"]["spec"]
    (broker,) = [c for c in pod["containers"] if c["name"] == "broker"]
    compose = yaml_documents(COMPOSE / "compose.yaml")[0]
    entry = compose["x-broker"]["entrypoint"][-1]
    serve_line = entry[entry.index("broker serve") :]
    unit = (SYSTEMD / "attested-broker.service").read_text("utf-8")
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, flags=re.MULTILINE)
    (cmd,) = re.findall(r"^CMD\s+(\[.*\])$", (DEPLOY / "Containerfile").read_text("utf-8"), re.M)
    return {
        "kubernetes": ["broker", *broker["args"]],
        "compose": shell_words(serve_line),
        "systemd": shell_words(exec_start),
        "containerfile": ["broker", *json.loads(cmd)],
    }


@pytest.mark.parametrize("name", ["kubernetes", "compose", "systemd"])
def test_config_loads_with_load_settings(name: str, tmp_path: Path) -> None:
    """The config loads with today's broker.config (no environment overrides)."""
    path = tmp_path / "broker.toml"
    path.write_text(_configs()[name], encoding="utf-8")
    settings = load_settings(path, {})
    assert settings.server.port == 8300
    assert settings.admin.admin_token_file.startswith("/run/")
    assert settings.log.format == "json"
    assert not settings.kbs.allow_sample_tee


@pytest.mark.parametrize("name", ["kubernetes", "compose", "systemd"])
def test_store_is_explicit_and_postgres_reads_its_dsn_from_a_file(
    name: str, tmp_path: Path
) -> None:
    """[store] names the backend; PostgreSQL's DSN comes from a mounted secret file."""
    path = tmp_path / "broker.toml"
    path.write_text(_configs()[name], encoding="utf-8")
    store = load_settings(path, {}).store
    assert store.backend == STORE_BACKENDS[name]
    if store.backend == "postgres":
        assert store.dsn_file.startswith("/run/secrets/")
        assert store.pool_max > 0


@pytest.mark.parametrize("where", ["kubernetes", "compose", "systemd", "containerfile"])
def test_serve_options_are_known_to_broker_serve(where: str) -> None:
    """Every option passed to `broker serve` exists (or is pending in this release)."""
    known = {opt for param in serve.params for opt in param.opts}
    used = set(serve_options(_serve_commands()[where]))
    assert "--config" in used
    assert used - known <= PENDING_SERVE_OPTIONS, used - known


def test_config_mount_paths_agree() -> None:
    """The config path every command passes is where the file is mounted."""
    for where, command in _serve_commands().items():
        assert command[command.index("--config") + 1] == "/etc/attested-broker/broker.toml", where
    compose = yaml_documents(COMPOSE / "compose.yaml")[0]
    for name in ("broker-1", "broker-2"):
        mounts = compose["services"][name]["volumes"]
        assert "./broker.toml:/etc/attested-broker/broker.toml:ro" in mounts
    assert (KUBERNETES / "configmap-config.yaml").is_file()


def _shared_keys_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("shared_keys", DEPLOY / "shared_keys.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shared_keys_script_makes_the_files_the_deployments_copy(tmp_path: Path) -> None:
    """deploy/shared_keys.py writes exactly the three files the manifests install, 0600."""
    module = _shared_keys_module()
    out = tmp_path / "keys"
    assert module.main([str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "audit-requester-hmac.key",
        "audit-signing-key.pem",
        "token-signing-key.pem",
    ]
    for path in out.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert module.main([str(out)]) == 0  # a second run keeps the keys
    assert before == {p.name: p.read_bytes() for p in out.iterdir()}
    deployment = (KUBERNETES / "deployment.yaml").read_text("utf-8")
    compose = (COMPOSE / "compose.yaml").read_text("utf-8")
    for name in names:
        assert f"/{name}" in deployment, name
        assert f"/{name}" in compose, name
