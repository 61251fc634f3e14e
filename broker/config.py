"""Settings: one TOML file, ``BROKER_<SECTION>_<KEY>`` environment overrides.

Loaded only by entry points (``broker serve``) and passed down explicitly.
Every default is the safe one; ``--dev`` is the only switch that enables the
simulated TEE and generates credentials.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final, TypeVar, get_type_hints

from broker.errors import ConfigError

PRODUCTION_TEES = ("sev-snp", "tdx", "sgx", "nitro", "az-snp-vtpm", "az-tdx-vtpm")


MAX_WORKERS: Final = 64


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8300
    data_dir: str = "broker-data"
    # Where the key files live (root key, token key, audit key, admin tokens); empty: data_dir.
    # Replicas of one broker share it (e.g. one Secret mounted read-only into every pod).
    keys_dir: str = ""
    max_request_bytes: int = 1 << 20
    # Seconds a shutdown waits for in-flight requests.
    shutdown_timeout: float = 10.0
    # Worker processes on one port (SO_REUSEPORT); `serve --workers` overrides it.
    workers: int = 1


@dataclass(frozen=True, slots=True)
class KBSSettings:
    nonce_ttl_seconds: int = 300
    token_ttl_seconds: int = 300
    issuer: str = "attested-broker"
    enabled_tees: tuple[str, ...] = PRODUCTION_TEES
    # The simulated TEE releases keys to anyone who can run the client: only --dev enables it.
    allow_sample_tee: bool = False


@dataclass(frozen=True, slots=True)
class EvidenceSettings:
    # Empty: the vendor roots pinned in the package.
    roots_dir: str = ""
    # Operator-loaded collateral (AMD KDS / Intel PCS responses) for air-gapped sites.
    collateral_dir: str = ""
    # Fetch missing collateral from AMD KDS / Intel PCS (into collateral_dir when set).
    collateral_online: bool = False
    # DCAP collateral older than this (file time) is refused; its nextUpdate also applies.
    collateral_max_age_seconds: int = 30 * 86400
    amd_kds_url: str = "https://kdsintf.amd.com"
    intel_pcs_url: str = "https://api.trustedservices.intel.com"
    max_evidence_bytes: int = 512 * 1024
    max_age_seconds: int = 300


@dataclass(frozen=True, slots=True)
class PolicySettings:
    dir: str = "policies"


@dataclass(frozen=True, slots=True)
class KeySettings:
    max_secret_bytes: int = 64 * 1024
    # Empty: every algorithm the broker implements.
    allowed_wrap_algs: tuple[str, ...] = ()
    # How often the scheduler looks for keys past their rotate_every period.
    rotation_check_seconds: int = 60
    # "local": values sealed under the root key in the data dir; "vault": sealed by
    # a Vault/OpenBao transit key (the broker then holds no root key).
    backend: str = "local"


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """``[store]``: where keys, versions and sessions live."""

    # "sqlite": one file in the data dir (one broker); "postgres": shared by replicas.
    backend: str = "sqlite"
    # The PostgreSQL DSN, read once at start-up from this file (or BROKER_STORE_DSN).
    dsn_file: str = ""
    pool_max: int = 10


@dataclass(frozen=True, slots=True)
class VaultBackendSettings:
    """``[vault]``: used when ``keys.backend = "vault"``."""

    addr: str = ""
    auth: str = "token"
    # Secrets come from files (or BROKER_VAULT_* variables), read once at start-up.
    token_file: str = ""
    role_id: str = ""
    secret_id_file: str = ""
    transit_mount: str = "transit"
    transit_key: str = "broker-kek"
    kv_mount: str = "secret"
    kv_prefix: str = "broker/"
    ca_bundle: str = ""
    verify_tls: bool = True
    namespace: str = ""
    timeout: float = 5.0
    max_retries: int = 3


@dataclass(frozen=True, slots=True)
class AdminSettings:
    # Files holding one bearer token each; the role is the key.
    admin_token_file: str = ""
    auditor_token_file: str = ""
    # Verified client-certificate subject -> role, e.g. {"CN=ops-team" = "operator"}
    # (TOML inline table; BROKER_ADMIN_CLIENT_CERT_ROLES takes a JSON object). Used only
    # when tls.client_ca_file makes the server verify client certificates.
    client_cert_roles: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """``[audit]``: the transparency log over the audit records."""

    # Names the log in checkpoints and receipts, and the audit key; empty: "<kbs.issuer>/audit".
    origin: str = ""
    # A checkpoint is signed this often, when the tree has grown since the last one.
    checkpoint_interval_seconds: int = 60
    # Replace client addresses and admin actors by HMAC-SHA256 (key in the data dir)
    # in CSV and OCSF exports.
    hash_requesters: bool = False


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """``[tls]``: HTTPS for the broker; empty ``cert_file``: plain HTTP (behind a TLS proxy)."""

    cert_file: str = ""
    key_file: str = ""
    # Set: every client must present a certificate issued by one of these CAs.
    client_ca_file: str = ""
    min_version: str = "1.2"

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """``[limits]``: request rates on ``/kbs/v0/auth`` and ``/kbs/v0/attest``, verification work.

    A client is its peer address. Per-client buckets hold ``burst`` requests and refill at
    the per-minute rate; one global bucket over both routes holds one second's worth
    (at least ``burst``) and refills at ``global_per_second``.
    """

    auth_per_client_per_minute: int = 60
    attest_per_client_per_minute: int = 60
    global_per_second: int = 200
    burst: int = 20
    # Attestations verified at once, and auth requests in progress at once: the rest
    # wait up to queue_seconds, then 429. They bound the store's queue, which a
    # readiness probe waits in too.
    verify_concurrency: int = 16
    auth_concurrency: int = 16
    queue_seconds: float = 5.0


@dataclass(frozen=True, slots=True)
class LogSettings:
    format: str = "json"
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    kbs: KBSSettings = field(default_factory=KBSSettings)
    evidence: EvidenceSettings = field(default_factory=EvidenceSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    keys: KeySettings = field(default_factory=KeySettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    vault: VaultBackendSettings = field(default_factory=VaultBackendSettings)
    log: LogSettings = field(default_factory=LogSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    dev: bool = False

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def keys_path(self) -> Path:
        return Path(self.server.keys_dir or self.server.data_dir)

    @property
    def audit_origin(self) -> str:
        return self.audit.origin or f"{self.kbs.issuer}/audit"


_T = TypeVar("_T")


def _coerce(key: str, raw: Any, kind: Any) -> Any:  # noqa: PLR0912 - one branch per type
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in {
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        }:
            return raw.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{key}: expected a boolean")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}: expected an integer")
        try:
            return int(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer") from None
    if kind is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number") from None
    if kind is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{key}: expected a string")
        return raw
    if kind == tuple[str, ...]:
        if isinstance(raw, str):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise ConfigError(f"{key}: expected a list of strings")
    if kind == tuple[tuple[str, str], ...]:
        return _string_pairs(key, raw)
    raise ConfigError(f"{key}: unsupported setting type")  # pragma: no cover


def _string_pairs(key: str, raw: Any) -> tuple[tuple[str, str], ...]:
    """A table of strings (TOML, or a JSON object from the environment) as sorted pairs."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ConfigError(f"{key}: expected a JSON object of strings") from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise ConfigError(f"{key}: expected a table of strings")
    return tuple(sorted(raw.items()))


def _section(cls: type[_T], name: str, table: Mapping[str, Any], environ: Mapping[str, str]) -> _T:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    for key in table:
        if key not in known:
            raise ConfigError(f"{name}.{key}: unknown setting")
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        env_name = f"BROKER_{name.upper()}_{f.name.upper()}"
        if env_name in environ:
            values[f.name] = _coerce(env_name, environ[env_name], hints[f.name])
        elif f.name in table:
            values[f.name] = _coerce(f"{name}.{f.name}", table[f.name], hints[f.name])
    return cls(**values)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "kbs": KBSSettings,
    "evidence": EvidenceSettings,
    "policy": PolicySettings,
    "keys": KeySettings,
    "admin": AdminSettings,
    "vault": VaultBackendSettings,
    "store": StoreSettings,
    "log": LogSettings,
    "audit": AuditSettings,
    "tls": TLSSettings,
    "limits": LimitsSettings,
}


def load_settings(path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Read TOML (if given), apply ``BROKER_*`` overrides, validate.

    Raises:
        ConfigError: naming the offending key.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for key in data:
        if key not in _SECTIONS:
            raise ConfigError(f"{key}: unknown config section")
    sections = {
        name: _section(cls, name, data.get(name, {}), environ) for name, cls in _SECTIONS.items()
    }
    settings = Settings(**sections)
    validate(settings)
    return settings


def with_dev_defaults(settings: Settings) -> Settings:
    """What ``--dev`` changes: the simulated TEE on, console logs on a TTY."""
    tees = settings.kbs.enabled_tees
    if "sample" not in tees:
        tees = (*tees, "sample")
    limits = settings.limits
    if limits == LimitsSettings():
        # One laptop or benchmark drives every enclave from one address; limits the
        # operator set (config or environment) are kept.
        limits = replace(limits, **DEV_RATE_LIMITS)
    return replace(
        settings,
        dev=True,
        kbs=replace(settings.kbs, enabled_tees=tees, allow_sample_tee=True),
        limits=limits,
    )


DEV_RATE_LIMITS: dict[str, int] = {
    "auth_per_client_per_minute": 1_000_000,
    "attest_per_client_per_minute": 1_000_000,
    "global_per_second": 100_000,
    "burst": 10_000,
}


def validate(settings: Settings) -> None:
    if not 0 < settings.server.port < 65536:
        raise ConfigError("server.port: must be 1..65535")
    if not 1 <= settings.server.workers <= MAX_WORKERS:
        raise ConfigError(f"server.workers: must be 1..{MAX_WORKERS}")
    for name, value in (
        ("server.max_request_bytes", settings.server.max_request_bytes),
        ("kbs.nonce_ttl_seconds", settings.kbs.nonce_ttl_seconds),
        ("kbs.token_ttl_seconds", settings.kbs.token_ttl_seconds),
        ("evidence.max_evidence_bytes", settings.evidence.max_evidence_bytes),
        ("keys.max_secret_bytes", settings.keys.max_secret_bytes),
        ("keys.rotation_check_seconds", settings.keys.rotation_check_seconds),
        ("audit.checkpoint_interval_seconds", settings.audit.checkpoint_interval_seconds),
    ):
        if value <= 0:
            raise ConfigError(f"{name}: must be positive")
    if "sample" in settings.kbs.enabled_tees and not settings.kbs.allow_sample_tee:
        raise ConfigError(
            "kbs.enabled_tees: 'sample' needs kbs.allow_sample_tee = true (never in production)"
        )
    if settings.store.backend not in {"sqlite", "postgres"}:
        raise ConfigError("store.backend: must be 'sqlite' or 'postgres'")
    if settings.keys.backend not in {"local", "vault"}:
        raise ConfigError("keys.backend: must be 'local' or 'vault'")
    if settings.keys.backend == "vault" and not settings.vault.addr:
        raise ConfigError("vault.addr: required when keys.backend is 'vault'")
    _validate_audit_origin(settings.audit_origin)
    _validate_transport(settings.tls, settings.limits)
    if settings.log.format not in {"json", "console"}:
        raise ConfigError("log.format: must be 'json' or 'console'")


def _validate_transport(tls: TLSSettings, limits: LimitsSettings) -> None:
    if bool(tls.cert_file) != bool(tls.key_file):
        raise ConfigError("tls.cert_file and tls.key_file: set both or neither")
    if tls.client_ca_file and not tls.enabled:
        raise ConfigError("tls.client_ca_file: needs tls.cert_file and tls.key_file")
    if tls.min_version not in {"1.2", "1.3"}:
        raise ConfigError("tls.min_version: must be '1.2' or '1.3'")
    # Zero would mean "no limit": a limit is lowered, never switched off.
    for name in (
        "auth_per_client_per_minute",
        "attest_per_client_per_minute",
        "global_per_second",
        "burst",
        "verify_concurrency",
        "auth_concurrency",
    ):
        if getattr(limits, name) <= 0:
            raise ConfigError(f"limits.{name}: must be positive")
    if limits.queue_seconds < 0:
        raise ConfigError("limits.queue_seconds: must not be negative")


def _validate_audit_origin(origin: str) -> None:
    # The origin is also the audit key's name (C2SP signed-note key name rules).
    if not 0 < len(origin) <= 256 or "+" in origin or any(c.isspace() for c in origin):
        raise ConfigError("audit.origin: 1..256 characters, no spaces and no '+'")


def as_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)
