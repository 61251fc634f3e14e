"""The server TLS context and the [tls] / [limits] settings."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from broker.api.tls import server_context
from broker.config import LimitsSettings, TLSSettings, load_settings, with_dev_defaults
from broker.errors import ConfigError
from tests.tls_certs import issue, make_ca


@pytest.fixture
def tls(tmp_path: Path) -> TLSSettings:
    ca = make_ca(tmp_path, "ca")
    leaf = issue(ca, tmp_path, "server")
    return TLSSettings(cert_file=str(leaf.cert_file), key_file=str(leaf.key_file))


def test_context_is_tls12_plus_aead_only(tls: TLSSettings) -> None:
    """TLS 1.2 is the floor, every suite is AEAD with ECDHE, compression and renegotiation off."""
    ctx = server_context(tls)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.verify_mode == ssl.CERT_NONE
    suites = ctx.get_ciphers()
    assert suites and all(s["aead"] for s in suites)
    assert all(s["kea"] in {"kx-ecdhe", "kx-any"} for s in suites)
    assert not any("CBC" in s["description"] or "SHA1" in s["name"] for s in suites)


def test_min_version_13_and_client_ca(tls: TLSSettings, tmp_path: Path) -> None:
    """min_version 1.3 raises the floor; client_ca_file makes a client certificate mandatory."""
    clients = make_ca(tmp_path / "clients", "client-ca")
    ctx = server_context(
        TLSSettings(
            cert_file=tls.cert_file,
            key_file=tls.key_file,
            client_ca_file=str(clients.cert_file),
            min_version="1.3",
        )
    )
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3
    assert ctx.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("which", ["cert_file", "key_file", "client_ca_file"])
def test_unreadable_files_are_config_errors(tls: TLSSettings, tmp_path: Path, which: str) -> None:
    """A missing or unparsable file is a ConfigError naming the setting."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    values = {
        "cert_file": tls.cert_file,
        "key_file": tls.key_file,
        "client_ca_file": "",
        which: str(garbage),
    }
    with pytest.raises(ConfigError, match=which.split("_file", maxsplit=1)[0]):
        server_context(TLSSettings(**values))
    values[which] = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match=which.split("_file", maxsplit=1)[0]):
        server_context(TLSSettings(**values))


def test_key_not_matching_certificate(tls: TLSSettings, tmp_path: Path) -> None:
    """A key of another certificate is refused at start-up, not at the first handshake."""
    other = issue(make_ca(tmp_path / "o", "other"), tmp_path / "o", "other-server")
    with pytest.raises(ConfigError, match=r"tls\.cert_file"):
        server_context(TLSSettings(cert_file=tls.cert_file, key_file=str(other.key_file)))


def test_context_needs_tls_enabled() -> None:
    """Asking for a context without a certificate fails closed."""
    with pytest.raises(ConfigError):
        server_context(TLSSettings())


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('[tls]\ncert_file = "c.pem"\n', "tls.cert_file"),
        ('[tls]\nkey_file = "k.pem"\n', "tls.cert_file"),
        ('[tls]\nclient_ca_file = "ca.pem"\n', "tls.client_ca_file"),
        ('[tls]\ncert_file = "c"\nkey_file = "k"\nmin_version = "1.1"\n', "tls.min_version"),
        ("[limits]\nburst = 0\n", "limits.burst"),
        ("[limits]\nglobal_per_second = -1\n", "limits.global_per_second"),
        ("[limits]\nattest_per_client_per_minute = 0\n", "attest_per_client_per_minute"),
        ("[limits]\nverify_concurrency = 0\n", "limits.verify_concurrency"),
        ("[limits]\nauth_concurrency = 0\n", "limits.auth_concurrency"),
        ("[limits]\nqueue_seconds = -1\n", "limits.queue_seconds"),
    ],
)
def test_invalid_settings(tmp_path: Path, text: str, match: str) -> None:
    """Half-configured TLS, old TLS versions and zero limits are refused by name."""
    cfg = tmp_path / "b.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(cfg, {})


def test_limits_defaults_and_env() -> None:
    """Limits are on by default and environment variables set them."""
    s = load_settings(None, {"BROKER_LIMITS_BURST": "3", "BROKER_TLS_MIN_VERSION": "1.3"})
    assert s.limits.burst == 3 and s.tls.min_version == "1.3" and not s.tls.enabled
    assert load_settings(None, {}).limits == LimitsSettings()


def test_dev_relaxes_only_default_limits() -> None:
    """--dev lifts the default rate limits but keeps limits the operator set."""
    dev = with_dev_defaults(load_settings(None, {}))
    assert dev.limits.attest_per_client_per_minute >= 100_000
    assert dev.limits.verify_concurrency == LimitsSettings().verify_concurrency
    kept = with_dev_defaults(load_settings(None, {"BROKER_LIMITS_BURST": "2"}))
    assert kept.limits.burst == 2
    assert kept.limits.attest_per_client_per_minute == 60
