"""Settings loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import load_settings, with_dev_defaults
from broker.errors import ConfigError


def test_defaults_are_safe() -> None:
    """Without config the sample TEE is off and the bind address is loopback."""
    s = load_settings(None, {})
    assert "sample" not in s.kbs.enabled_tees
    assert s.server.host == "127.0.0.1" and s.server.port == 8300
    assert s.server.max_request_bytes == 1 << 20


def test_toml_and_env(tmp_path: Path) -> None:
    """TOML values apply and BROKER_* variables override them."""
    cfg = tmp_path / "b.toml"
    cfg.write_text('[server]\nport = 9000\n[kbs]\nenabled_tees = ["tdx"]\n')
    s = load_settings(cfg, {"BROKER_SERVER_PORT": "9001"})
    assert s.server.port == 9001 and s.kbs.enabled_tees == ("tdx",)


@pytest.mark.parametrize(
    ("text", "env", "match"),
    [
        ("[server]\nprot = 1\n", {}, "server.prot"),
        ("[nope]\n", {}, "nope"),
        ("[server]\nport = 'x'\n", {}, "server.port"),
        ("", {"BROKER_SERVER_PORT": "0"}, "server.port"),
        ('[kbs]\nenabled_tees = ["sample"]\n', {}, "allow_sample_tee"),
        ("[server\n", {}, "b.toml"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, env: dict[str, str], match: str) -> None:
    """Invalid settings raise ConfigError naming the key."""
    cfg = tmp_path / "b.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(cfg, env)


def test_dev_enables_sample() -> None:
    """--dev turns the simulated TEE on."""
    s = with_dev_defaults(load_settings(None, {}))
    assert s.dev and "sample" in s.kbs.enabled_tees and s.kbs.allow_sample_tee
