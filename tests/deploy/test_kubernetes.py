"""deploy/kubernetes: schema, wiring between objects, and the hardening the docs promise."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from broker.config import load_settings
from broker.policy.load import load_policy_texts
from tests.deploy import KUBERNETES, kubernetes_objects, one, yaml_documents

# The oldest Kubernetes minor these manifests support, and the newest the schemas know.
SCHEMA_VERSIONS = ("1.29.0", "1.33.0")
LABELS = {"app.kubernetes.io/name": "attested-broker", "app.kubernetes.io/component": "server"}
SECRET_MODE = 0o400


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return kubernetes_objects()


@pytest.fixture(scope="module")
def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def broker(pod: dict[str, Any]) -> dict[str, Any]:
    (container,) = [c for c in pod["containers"] if c["name"] == "broker"]
    found: dict[str, Any] = container
    return found


def _volume(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [v for v in pod["volumes"] if v["name"] == name]
    assert len(found) == 1, name
    volume: dict[str, Any] = found[0]
    return volume


def _mount(container: dict[str, Any], name: str) -> dict[str, Any]:
    found = [m for m in container["volumeMounts"] if m["name"] == name]
    assert len(found) == 1, name
    mount: dict[str, Any] = found[0]
    return mount


def _config_text(objects: list[dict[str, Any]]) -> str:
    text: str = one(objects, "ConfigMap", "attested-broker-config")["data"]["broker.toml"]
    return text


def test_every_yaml_file_parses() -> None:
    """Every YAML file under deploy/kubernetes parses into mappings with a kind."""
    files = sorted(KUBERNETES.glob("*.yaml"))
    assert len(files) >= 8
    for path in files:
        for doc in yaml_documents(path):
            assert doc.get("kind"), path


def test_kustomization_lists_existing_files_and_no_placeholder_secret() -> None:
    """The kustomization applies existing manifests, never the placeholder Secret."""
    kustomization = yaml_documents(KUBERNETES / "kustomization.yaml")[0]
    assert kustomization["kind"] == "Kustomization"
    for name in kustomization["resources"]:
        assert (KUBERNETES / name).is_file(), name
    assert "secret.example.yaml" not in kustomization["resources"]
    for image in kustomization["images"]:
        assert image["newTag"] not in ("", "latest")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_objects_match_the_kubernetes_schemas(version: str) -> None:
    """Each object (and the example Secret) validates against the bundled OpenAPI schemas."""
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate not installed")
    docs = kubernetes_objects() + yaml_documents(KUBERNETES / "secret.example.yaml")
    for doc in docs:
        kv.validate(doc, version, strict=True)


def test_kustomize_builds() -> None:
    """`kubectl kustomize` renders the directory (offline; skipped without kubectl)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml_documents_from_text(result.stdout)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    assert "image: registry.example.internal/attested-broker:0.1.0" in result.stdout


def yaml_documents_from_text(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_deployment_runs_three_replicas_rolling_without_loss(
    objects: list[dict[str, Any]],
) -> None:
    """Three replicas; a rollout surges one and never takes one away first."""
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxSurge": 1, "maxUnavailable": 0}
    assert deployment["spec"]["selector"]["matchLabels"] == LABELS
    assert deployment["spec"]["template"]["metadata"]["labels"] == LABELS


def test_selectors_of_service_pdb_netpol_and_spread_match_the_pods(
    objects: list[dict[str, Any]], pod: dict[str, Any]
) -> None:
    """Service, PDB (minAvailable 2), NetworkPolicy and spread all select the broker pods."""
    labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert one(objects, "Service")["spec"]["selector"] == labels
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 2
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert one(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"] == labels
    spread = pod["topologySpreadConstraints"]
    by_key = {c["topologyKey"]: c for c in spread}
    assert by_key["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    for constraint in spread:
        assert constraint["labelSelector"]["matchLabels"] == labels


def test_probes_hit_healthz_and_readyz_on_the_container_port(broker: dict[str, Any]) -> None:
    """Liveness and start-up probe /healthz, readiness /readyz, all on the 8300 port."""
    ports = {p["name"]: p["containerPort"] for p in broker["ports"]}
    assert ports == {"http": 8300}
    expected = {
        "livenessProbe": "/healthz",
        "startupProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        get = broker[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("http", 8300), probe


def test_service_targets_the_named_port(objects: list[dict[str, Any]]) -> None:
    """The Service forwards 8300 to the container's named port."""
    (port,) = one(objects, "Service")["spec"]["ports"]
    assert port["port"] == 8300
    assert port["targetPort"] == "http"


def test_images_are_pinned_never_latest(pod: dict[str, Any]) -> None:
    """Every container names the kustomize-pinned image, never a floating tag."""
    for container in pod["containers"] + pod["initContainers"]:
        image = container["image"]
        assert image == "attested-broker" or (":" in image and not image.endswith(":latest"))


def test_pod_and_containers_are_locked_down(pod: dict[str, Any]) -> None:
    """Non-root, seccomp RuntimeDefault, read-only root, no capabilities, no API token."""
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] != 0
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True, container["name"]
        assert ctx["allowPrivilegeEscalation"] is False, container["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], container["name"]
        assert "add" not in ctx["capabilities"], container["name"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]


def test_secrets_are_read_only_0400_files(pod: dict[str, Any], broker: dict[str, Any]) -> None:
    """Both Secrets are volumes (never env), mode 0400, mounted read-only."""
    for name in ("credentials", "keys"):
        assert _volume(pod, name)["secret"]["defaultMode"] == SECRET_MODE
    assert _mount(broker, "credentials")["readOnly"] is True
    assert _mount(pod["initContainers"][0], "keys")["readOnly"] is True
    for container in pod["containers"] + pod["initContainers"]:
        for env in container.get("env", []):
            assert "valueFrom" not in env, env["name"]


def test_config_paths_point_into_the_mounts(
    objects: list[dict[str, Any]], pod: dict[str, Any], broker: dict[str, Any]
) -> None:
    """Every file the config names is under a mount that provides it."""
    settings = tomllib.loads(_config_text(objects))
    credentials = _mount(broker, "credentials")["mountPath"]
    example = {d["metadata"]["name"]: d for d in yaml_documents(KUBERNETES / "secret.example.yaml")}
    secret_keys = set(example["attested-broker-credentials"]["stringData"])
    for path in (
        settings["admin"]["admin_token_file"],
        settings["admin"]["auditor_token_file"],
        settings["vault"]["secret_id_file"],
        settings["store"]["dsn_file"],
    ):
        parent = str(PurePosixPath(path).parent)
        assert parent == credentials, path
        assert PurePosixPath(path).name in secret_keys, path
    assert _mount(broker, "policies")["mountPath"] == settings["policy"]["dir"]
    assert _mount(broker, "policies").get("subPath") is None  # updates must reach the pod
    assert _mount(broker, "data")["mountPath"] == settings["server"]["data_dir"]
    ca = PurePosixPath(settings["vault"]["ca_bundle"])
    assert str(ca.parent) == _mount(broker, "vault-ca")["mountPath"]
    assert settings["server"]["port"] == 8300
    # The init container installs exactly the keys the keys Secret holds.
    install = " ".join(pod["initContainers"][0]["command"])
    for key in example["attested-broker-keys"]["stringData"]:
        assert key in install, key
    assert f"{settings['server']['data_dir']}/" in install
    assert "pg-dsn" in secret_keys


def test_config_loads_with_the_current_broker(
    objects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The ConfigMap's broker.toml loads with broker.config.load_settings."""
    path = tmp_path / "broker.toml"
    path.write_text(_config_text(objects), encoding="utf-8")
    settings = load_settings(path, {})
    assert settings.keys.backend == "vault"
    assert settings.vault.auth == "approle"
    assert settings.server.host == "0.0.0.0"  # inside the pod, by design
    assert settings.kbs.allow_sample_tee is False


def test_policy_configmap_loads_as_a_policy_directory(
    objects: list[dict[str, Any]], pod: dict[str, Any]
) -> None:
    """The policy ConfigMap, laid out by the volume's items, is a valid policy directory."""
    data = one(objects, "ConfigMap", "attested-broker-policies")["data"]
    items = _volume(pod, "policies")["configMap"]["items"]
    assert {i["key"] for i in items} == set(data)
    files = {i["path"]: data[i["key"]].encode() for i in items}
    policy_set = load_policy_texts(files, now=datetime.now(UTC))
    assert policy_set.policies


def test_network_policy_admits_8300_and_reaches_only_pg_vault_dns(
    objects: list[dict[str, Any]],
) -> None:
    """Ingress on TCP 8300 only; egress to 5432, 8200 and 53 only."""
    spec = one(objects, "NetworkPolicy")["spec"]
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    ingress_ports = [p for rule in spec["ingress"] for p in rule["ports"]]
    assert ingress_ports == [{"protocol": "TCP", "port": 8300}]
    egress_ports = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert egress_ports == {("TCP", 5432), ("TCP", 8200), ("UDP", 53), ("TCP", 53)}
    for rule in spec["egress"]:
        assert rule["to"], "an egress rule without 'to' would allow every destination"
