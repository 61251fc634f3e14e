"""deploy/systemd: the unit parses, carries the hardening, and systemd accepts it."""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict

import pytest

from tests.deploy import SYSTEMD, serve_options, shell_words

UNIT = SYSTEMD / "attested-broker.service"
# systemd-analyze security's exposure scale is 0..100 (the "1.2 OK" it prints is 12).
MAX_EXPOSURE = 20


def _unit() -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value (systemd keys may repeat, unlike configparser's)."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in UNIT.read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        assert section, f"key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not key=value: {line}"
        sections[section][key.strip()].append(value.strip())
    return sections


def test_unit_has_the_three_sections() -> None:
    """[Unit], [Service] and [Install] are present and the service is wanted at boot."""
    unit = _unit()
    assert set(unit) == {"Unit", "Service", "Install"}
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("SystemCallArchitectures", "native"),
        ("StateDirectory", "attested-broker"),
        ("StateDirectoryMode", "0700"),
        ("UMask", "0077"),
    ],
)
def test_service_is_hardened(key: str, value: str) -> None:
    """Each hardening setting is present with the expected value."""
    assert _unit()["Service"][key] == [value]


def test_system_calls_are_filtered() -> None:
    """The syscall allow list is @system-service, minus privileged and resource calls."""
    filters = _unit()["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert "~@privileged @resources" in filters


def test_network_families_are_restricted() -> None:
    """Only IP and Unix sockets."""
    (families,) = _unit()["Service"]["RestrictAddressFamilies"]
    assert set(families.split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_reload_sends_sighup_and_start_runs_serve() -> None:
    """ExecReload sends SIGHUP to the main process; ExecStart runs broker serve --config."""
    service = _unit()["Service"]
    (reload_cmd,) = service["ExecReload"]
    assert shell_words(reload_cmd)[1:] == ["-HUP", "$MAINPID"]
    (start,) = service["ExecStart"]
    words = shell_words(start)
    assert words[0].endswith("/broker")
    assert "--config" in serve_options(words)
    assert words[words.index("--config") + 1] == "/etc/attested-broker/broker.toml"


def test_admin_token_is_a_credential_the_config_points_at() -> None:
    """LoadCredential's admin-token is the file broker.toml names."""
    (credential,) = _unit()["Service"]["LoadCredential"]
    name, _, _source = credential.partition(":")
    config = (SYSTEMD / "broker.toml").read_text("utf-8")
    assert f'"/run/credentials/attested-broker.service/{name}"' in config


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.skip("systemd-analyze not installed")
    return found


def test_systemd_analyze_verify_finds_nothing_but_the_absent_binary() -> None:
    """`systemd-analyze verify` reports no error other than the uninstalled ExecStart."""
    result = subprocess.run(
        [_analyze(), "verify", "--man=no", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = [
        line
        for line in (result.stdout + result.stderr).splitlines()
        if line.strip() and "/opt/attested-broker/bin/broker is not executable" not in line
    ]
    assert not lines, "\n".join(lines)


def test_systemd_analyze_security_rates_the_unit_ok() -> None:
    """`systemd-analyze security --offline` rates the exposure at most 2.0 ("OK")."""
    result = subprocess.run(
        [
            _analyze(),
            "security",
            "--offline=yes",
            f"--threshold={MAX_EXPOSURE}",
            "--no-pager",
            str(UNIT),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "Unknown command verb" in result.stderr or "unrecognized option" in result.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit offline")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
