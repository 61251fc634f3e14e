"""deploy/compose and deploy/Containerfile: schema, health checks, wiring, exposure."""

from __future__ import annotations

import json
import re
from pathlib import PurePosixPath
from typing import Any

import pytest

from tests.deploy import COMPOSE, DEPLOY, package_dir, yaml_documents
from tests.vectors import REPO_ROOT

BROKERS = ("broker-1", "broker-2")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml_documents(COMPOSE / "compose.yaml")[0]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = compose["services"]
    return found


def test_compose_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    """compose.yaml validates against the Compose Specification JSON schema."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
    vendored = package_dir("check_jsonschema")
    if vendored is None:
        pytest.skip("check-jsonschema (which ships the compose-spec schema) not installed")
    schema = json.loads(
        (vendored / "builtin_schemas" / "vendor" / "compose-spec.json").read_text("utf-8")
    )
    jsonschema.validate(compose, schema)


def test_the_topology_is_postgres_openbao_two_brokers_and_a_proxy(
    services: dict[str, Any],
) -> None:
    """Services: PostgreSQL, OpenBao (and its init), shared keys, two brokers, the proxy."""
    assert set(services) == {
        "postgres",
        "openbao",
        "openbao-init",
        "broker-keys",
        *BROKERS,
        "proxy",
    }


def test_long_running_services_have_health_checks(services: dict[str, Any]) -> None:
    """Every service that keeps running declares a health check; brokers probe /readyz."""
    for name, service in services.items():
        if service.get("restart") == "no":
            continue
        assert service["healthcheck"]["test"], name
    for name in BROKERS:
        assert any("/readyz" in part for part in services[name]["healthcheck"]["test"]), name


def test_start_order_waits_for_health_and_one_shots(services: dict[str, Any]) -> None:
    """Brokers wait for healthy PostgreSQL and finished init jobs; the proxy for brokers."""
    for name in BROKERS:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["openbao-init"]["condition"] == "service_completed_successfully"
        assert depends["broker-keys"]["condition"] == "service_completed_successfully"
    assert services["openbao-init"]["depends_on"]["openbao"]["condition"] == "service_healthy"
    for name in BROKERS:
        assert services["proxy"]["depends_on"][name]["condition"] == "service_healthy"


def test_only_the_proxy_publishes_and_only_on_loopback(services: dict[str, Any]) -> None:
    """No service but the proxy publishes a port, and it binds 127.0.0.1."""
    for name, service in services.items():
        ports = service.get("ports", [])
        if name != "proxy":
            assert not ports, name
            continue
        for port in ports:
            text = port if isinstance(port, str) else f"{port['host_ip']}:{port['published']}"
            assert text.startswith("127.0.0.1:"), port


def test_brokers_run_unprivileged_read_only(services: dict[str, Any]) -> None:
    """Brokers: non-root uid, read-only root, no capabilities, no new privileges."""
    for name in (*BROKERS, "broker-keys"):
        service = services[name]
        assert not service["user"].startswith("0"), name
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_images_are_pinned(services: dict[str, Any]) -> None:
    """Every image has an explicit tag that is not 'latest'."""
    for name, service in services.items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert tag and tag != "latest", name


def test_mounted_files_and_secret_files_exist_or_are_made(compose: dict[str, Any]) -> None:
    """Bind-mounted files exist; secret files are the ones make-secrets.sh writes."""
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), source
    maker = (COMPOSE / "make-secrets.sh").read_text("utf-8")
    for secret in compose["secrets"].values():
        name = PurePosixPath(secret["file"]).name
        assert f"secrets/{name} ]" in maker, name
    assert "secrets/" in (COMPOSE / ".gitignore").read_text("utf-8").split()


def test_haproxy_balances_both_brokers_checking_readyz(services: dict[str, Any]) -> None:
    """HAProxy lists exactly the broker services and health-checks /readyz."""
    cfg = (COMPOSE / "haproxy.cfg").read_text("utf-8")
    servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+):8300\b", cfg, flags=re.MULTILINE)
    assert sorted(host for _, host in servers) == sorted(BROKERS)
    assert re.search(r"http-check send meth GET uri /readyz", cfg)
    assert re.search(r"^\s*bind :8300$", cfg, flags=re.MULTILINE)
    published = services["proxy"]["ports"][0].rsplit(":", 1)[1]
    assert published == "8300"
    # Never retry a request a broker may already have processed (a nonce is single-use).
    assert re.search(r"^\s*retry-on conn-failure$", cfg, flags=re.MULTILINE)


def test_openbao_policy_matches_the_documented_least_privilege() -> None:
    """The OpenBao policy grants exactly the paths docs/keys.md lists."""
    docs = (REPO_ROOT / "docs" / "keys.md").read_text("utf-8")
    hcl = (COMPOSE / "broker-policy.hcl").read_text("utf-8")

    def grants(text: str) -> set[tuple[str, str]]:
        return set(re.findall(r'path "([^"]+)"\s*{\s*capabilities = (\[[^\]]*\])', text))

    assert grants(hcl)
    assert grants(hcl) == grants(docs)


def test_containerfile_builds_a_non_root_broker_image() -> None:
    """python:3.11-slim, the project pip-installed, a numeric non-root USER, serve --config."""
    text = (DEPLOY / "Containerfile").read_text("utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert froms and all(f == "python:3.11-slim" for f in froms)
    assert re.search(r"pip install .*\s\.$", text, flags=re.MULTILINE)
    (user,) = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    (cmd,) = re.findall(r"^CMD\s+(\[.*\])$", text, flags=re.MULTILINE)
    assert json.loads(cmd)[:2] == ["serve", "--config"]
    (entry,) = re.findall(r"^ENTRYPOINT\s+(\[.*\])$", text, flags=re.MULTILINE)
    assert json.loads(entry) == ["broker"]
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)", text, flags=re.MULTILINE):
        assert (REPO_ROOT / source).exists(), source


def test_compose_builds_from_the_containerfile(services: dict[str, Any]) -> None:
    """Every built service uses deploy/Containerfile with the repository as context."""
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        assert (COMPOSE / build["context"]).resolve() == REPO_ROOT.resolve(), name
        assert build["dockerfile"] == "deploy/Containerfile", name
