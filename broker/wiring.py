"""The composition root: builds adapters from settings and hands them to services.

Only entry points (``broker serve``, tests) call ``open_services``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp

from broker.adapters.audit_keys import load_or_create_audit_key, load_or_create_requester_key
from broker.adapters.audit_store import SQLiteTransparencyStore
from broker.adapters.audit_tree import AuditTree
from broker.adapters.collateral import CachedCollateral, EvidenceSuppliedCollateral
from broker.adapters.collateral_online import OnlineCollateral
from broker.adapters.datadir import (
    ADMIN_TOKEN_FILE,
    AUDITOR_TOKEN_FILE,
    TOKEN_KEY_FILE,
    load_or_create_token,
    load_or_create_token_key,
    load_root_keys,
    prepare_data_dir,
)
from broker.adapters.local_kek import LocalKEK
from broker.adapters.local_root_key import LocalRootKeyManager
from broker.adapters.memory_sessions import MemorySessionStore
from broker.adapters.pg_audit import PostgresAuditLog
from broker.adapters.pg_audit_store import PostgresTransparencyStore
from broker.adapters.pg_db import PostgresDB
from broker.adapters.pg_keys import PostgresKeyStore
from broker.adapters.pg_lease import PostgresLease
from broker.adapters.pg_sessions import PostgresSessionStore
from broker.adapters.pg_tokens import PostgresTokenStore
from broker.adapters.sqlite_audit import SQLiteAuditLog
from broker.adapters.sqlite_db import SQLiteDB
from broker.adapters.sqlite_keys import SQLiteKeyStore
from broker.adapters.sqlite_lease import SQLiteLease
from broker.adapters.sqlite_sessions import SQLiteSessionStore
from broker.adapters.sqlite_sessions import reset as reset_sessions
from broker.adapters.sqlite_tokens import SQLiteTokenStore
from broker.adapters.vault_client import VaultClient, VaultSettings
from broker.adapters.vault_kek import VaultTransitKEK
from broker.adapters.vault_kv import VaultKVSource
from broker.adapters.vault_root_key import VaultRootKeyManager
from broker.config import Settings
from broker.errors import AuditWriteError, ConfigError
from broker.evidence import TrustAnchors, anchors_from_dir, pinned_anchors
from broker.keys.wrap import ALL_ALGORITHMS
from broker.ports import Clock, CollateralSource, KEKService, KeyStore, RootKeyManager
from broker.service.admin import AdminAuth, AdminService
from broker.service.admin_tokens import AdminTokenService
from broker.service.attest import AttestLimits, AttestService
from broker.service.audit_log import AuditLogService, TransparencyStore
from broker.service.challenge import ChallengeService
from broker.service.context import SystemClock
from broker.service.keys import KeyLifecycle
from broker.service.policies import PolicyHolder
from broker.service.release import ReleaseService
from broker.service.root_key import RootKeyService
from broker.service.rotation import RotationScheduler
from broker.tokens import TokenKey, TokenVerifier


@dataclass(slots=True)
class Services:
    settings: Settings
    clock: Clock
    db: SQLiteDB | PostgresDB
    store: SQLiteKeyStore | PostgresKeyStore
    sessions: MemorySessionStore | SQLiteSessionStore | PostgresSessionStore
    audit: SQLiteAuditLog | PostgresAuditLog
    policies: PolicyHolder
    token_key: TokenKey
    tokens: TokenVerifier
    anchors: TrustAnchors
    challenge: ChallengeService
    attest: AttestService
    release: ReleaseService
    keys: KeyLifecycle
    rotation: RotationScheduler
    root_key: RootKeyService
    vault: VaultClient | None
    online_collateral: OnlineCollateral | None
    admin: AdminService
    admin_auth: AdminAuth
    audit_log: AuditLogService
    admin_tokens: AdminTokenService

    async def close(self) -> None:
        await self.audit.close()
        await self.db.close()
        if isinstance(self.sessions, SQLiteSessionStore):
            self.sessions.close()
        lease = self.rotation.lease
        if isinstance(lease, SQLiteLease):
            lease.close()
        if self.vault is not None:
            self.vault.close()
        if self.online_collateral is not None:
            await self.online_collateral.close()


def _admin_tokens(settings: Settings, data: Path) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for role, configured, default in (
        ("admin", settings.admin.admin_token_file, ADMIN_TOKEN_FILE),
        ("auditor", settings.admin.auditor_token_file, AUDITOR_TOKEN_FILE),
    ):
        if configured:
            tokens[role] = load_or_create_token(Path(configured), create=False)
        elif settings.dev:
            tokens[role] = load_or_create_token(data / default, create=True)
    if "admin" not in tokens:
        raise ConfigError("admin.admin_token_file is required outside --dev")
    return tokens


def _allowed_algs(settings: Settings) -> frozenset[str]:
    configured = settings.keys.allowed_wrap_algs
    if not configured:
        return frozenset(ALL_ALGORITHMS)
    unknown = set(configured) - set(ALL_ALGORITHMS)
    if unknown:
        raise ConfigError(f"keys.allowed_wrap_algs: unknown algorithm(s) {sorted(unknown)}")
    return frozenset(configured)


@dataclass(frozen=True, slots=True)
class KeyBackend:
    kek: KEKService
    root_keys: RootKeyManager
    kv: VaultKVSource | None = None
    vault: VaultClient | None = None


def _read_secret_file(path: str, name: str) -> str:
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None


def vault_settings(settings: Settings, environ: Mapping[str, str] | None = None) -> VaultSettings:
    """Vault credentials from files (or BROKER_VAULT_TOKEN / _SECRET_ID), read once."""
    env = environ if environ is not None else os.environ
    v = settings.vault
    if v.auth not in ("token", "approle"):
        raise ConfigError("vault.auth: must be 'token' or 'approle'")
    return VaultSettings(
        addr=v.addr,
        auth="approle" if v.auth == "approle" else "token",
        token=env.get("BROKER_VAULT_TOKEN") or _read_secret_file(v.token_file, "vault.token_file"),
        role_id=v.role_id,
        secret_id=env.get("BROKER_VAULT_SECRET_ID")
        or _read_secret_file(v.secret_id_file, "vault.secret_id_file"),
        transit_mount=v.transit_mount,
        transit_key=v.transit_key,
        kv_mount=v.kv_mount,
        kv_prefix=v.kv_prefix,
        ca_bundle=v.ca_bundle,
        verify_tls=v.verify_tls,
        namespace=v.namespace,
        timeout=v.timeout,
        max_retries=v.max_retries,
    )


# Sessions and the rotation lease of the worker processes sharing one SQLite data dir.
SESSIONS_FILE = "sessions.db"

StoreParts = tuple[
    SQLiteDB | PostgresDB,
    SQLiteKeyStore | PostgresKeyStore,
    MemorySessionStore | SQLiteSessionStore | PostgresSessionStore,
    PostgresLease | SQLiteLease | None,
]


def _store_dsn(settings: Settings) -> str:
    dsn = os.environ.get("BROKER_STORE_DSN") or _read_secret_file(
        settings.store.dsn_file, "store.dsn_file"
    )
    if not dsn:
        raise ConfigError(
            "store.dsn_file (or BROKER_STORE_DSN): required for store.backend postgres"
        )
    return dsn


def _shared_sqlite(settings: Settings) -> bool:
    return settings.store.backend == "sqlite" and settings.server.workers > 1


def reset_shared_sessions(settings: Settings) -> None:
    """Empty the sessions file the SQLite workers share; the supervisor calls it once,
    before it starts them (a restart ends every open challenge, as with one process).

    Raises:
        BackendError: the file cannot be recreated.
    """
    prepare_data_dir(settings.data_path)
    reset_sessions(settings.data_path / SESSIONS_FILE)


async def _open_store(settings: Settings, data: Path) -> StoreParts:
    """Keys and sessions: SQLite plus this process's memory (one process) or a sessions
    file its worker processes share, or PostgreSQL for replicas."""
    if settings.store.backend == "postgres":
        pg = PostgresDB(_store_dsn(settings), max_size=settings.store.pool_max)
        await pg.open()
        return pg, PostgresKeyStore(pg), PostgresSessionStore(pg), PostgresLease(pg)
    db = SQLiteDB(data / "broker.db")
    await db.open()
    if not _shared_sqlite(settings):
        return db, SQLiteKeyStore(db), MemorySessionStore(), None
    sessions = SQLiteSessionStore(data / SESSIONS_FILE)
    lease = SQLiteLease(data / SESSIONS_FILE)
    try:
        sessions.open()
        lease.open()
    except BaseException:
        sessions.close()
        await db.close()
        raise
    return db, SQLiteKeyStore(db), sessions, lease


async def _key_backend(settings: Settings, store: KeyStore) -> KeyBackend:
    data = settings.keys_path
    if settings.keys.backend == "vault":
        client = VaultClient(vault_settings(settings))
        transit = VaultTransitKEK(client)
        try:
            await transit.check()
        except BaseException:
            client.close()
            raise
        return KeyBackend(
            kek=transit,
            root_keys=VaultRootKeyManager(transit, store),
            kv=VaultKVSource(client),
            vault=client,
        )
    current, others = load_root_keys(data, create=True)
    local = LocalKEK(current, others, reload=lambda: load_root_keys(data, create=False))
    return KeyBackend(kek=local, root_keys=LocalRootKeyManager(data, local, store))


def _collateral_source(
    settings: Settings, clock: Clock
) -> tuple[CollateralSource, OnlineCollateral | None]:
    ev = settings.evidence
    online = (
        OnlineCollateral(
            aiohttp.ClientSession, amd_kds_url=ev.amd_kds_url, intel_pcs_url=ev.intel_pcs_url
        )
        if ev.collateral_online
        else None
    )
    if ev.collateral_dir:
        cached = CachedCollateral(
            Path(ev.collateral_dir),
            max_age=timedelta(seconds=ev.collateral_max_age_seconds),
            upstream=online,
            clock=clock,
        )
        return cached, online
    if online is not None:
        return online, online
    return EvidenceSuppliedCollateral(), None


async def open_services(settings: Settings, *, clock: Clock | None = None) -> Services:
    """Raises ConfigError/PolicyError/BackendError: the broker must not start."""
    clock = clock or SystemClock()
    data = settings.data_path
    prepare_data_dir(data)
    keys_dir = settings.keys_path
    if keys_dir != data:
        prepare_data_dir(keys_dir, must_write=False)
    token_key = load_or_create_token_key(keys_dir / TOKEN_KEY_FILE)
    tokens = _admin_tokens(settings, keys_dir)
    allowed = _allowed_algs(settings)
    anchors = (
        anchors_from_dir(settings.evidence.roots_dir)
        if settings.evidence.roots_dir
        else pinned_anchors()
    )
    policies = PolicyHolder(Path(settings.policy.dir), now=clock.now())
    db, store, sessions, lease = await _open_store(settings, data)
    try:
        token_store = await _token_store(db)
        admin_auth = AdminAuth(
            tokens,
            store=token_store,
            clock=clock,
            client_cert_roles=dict(settings.admin.client_cert_roles),
        )
        audit, audit_log = await _open_audit(settings, data, clock, db)
    except BaseException:
        await db.close()
        raise
    try:
        await audit_log.start()
        backend = await _key_backend(settings, store)
    except BaseException:
        await audit.close()
        await db.close()
        raise
    kek = backend.kek
    collateral, online = _collateral_source(settings, clock)
    keys = KeyLifecycle(store, kek, audit, clock, max_secret_bytes=settings.keys.max_secret_bytes)
    attestation_tokens = TokenVerifier(token_key, issuer=settings.kbs.issuer)
    return Services(
        settings=settings,
        clock=clock,
        db=db,
        store=store,
        sessions=sessions,
        audit=audit,
        policies=policies,
        token_key=token_key,
        tokens=attestation_tokens,
        anchors=anchors,
        challenge=ChallengeService(
            sessions,
            audit,
            clock,
            enabled_tees=frozenset(settings.kbs.enabled_tees),
            nonce_ttl=settings.kbs.nonce_ttl_seconds,
        ),
        attest=AttestService(
            sessions,
            audit,
            clock,
            policies,
            token_key,
            anchors,
            collateral,
            issuer=settings.kbs.issuer,
            limits=AttestLimits(
                token_ttl=settings.kbs.token_ttl_seconds,
                max_evidence_bytes=settings.evidence.max_evidence_bytes,
                max_age_seconds=settings.evidence.max_age_seconds,
                allowed_wrap_algs=allowed,
            ),
            tokens=attestation_tokens,
            verify_inline=settings.server.workers > 1,
        ),
        release=ReleaseService(
            store,
            kek,
            audit,
            clock,
            policies,
            allowed_wrap_algs=allowed,
            kv=backend.kv,
            receipts=audit_log.receipt,
        ),
        keys=keys,
        rotation=RotationScheduler(
            keys, clock, interval=settings.keys.rotation_check_seconds, lease=lease
        ),
        root_key=RootKeyService(backend.root_keys, audit, clock),
        vault=backend.vault,
        online_collateral=online,
        admin=AdminService(audit, clock, policies),
        admin_auth=admin_auth,
        audit_log=audit_log,
        admin_tokens=AdminTokenService(token_store, audit, clock),
    )


async def _token_store(db: SQLiteDB | PostgresDB) -> SQLiteTokenStore | PostgresTokenStore:
    """Admin tokens live next to the keys (one SQLite file, or the shared database)."""
    if isinstance(db, PostgresDB):
        pg = PostgresTokenStore(db)
        await pg.migrate()
        return pg
    return SQLiteTokenStore(db)


async def _open_audit(
    settings: Settings, data: Path, clock: Clock, db: SQLiteDB | PostgresDB
) -> tuple[SQLiteAuditLog | PostgresAuditLog, AuditLogService]:
    """The audit log, its tree (rebuilt from the stored records: O(n)) and the log service.

    On PostgreSQL the log is shared by every replica: each replica's tree
    follows the shared log and catches up with what the others appended.

    Raises:
        AuditWriteError, ConfigError: the broker must not start.
    """
    origin = settings.audit_origin
    keys_dir = settings.keys_path
    key = load_or_create_audit_key(keys_dir, name=origin)
    requester_key = (
        load_or_create_requester_key(keys_dir) if settings.audit.hash_requesters else None
    )
    tree = AuditTree()
    audit: SQLiteAuditLog | PostgresAuditLog
    transparency: TransparencyStore
    if isinstance(db, PostgresDB):
        audit = PostgresAuditLog(db, on_commit=tree.append_records, catch_up=tree.sync)
        tree.follow(audit)
        await audit.start()
        try:
            await tree.sync()
        except BaseException:
            await audit.close()
            raise
        transparency = PostgresTransparencyStore(db)
    else:
        shared = _shared_sqlite(settings)
        sqlite_audit = SQLiteAuditLog(
            data / "audit.db",
            on_commit=tree.append_records,
            shared=shared,
            catch_up=tree.sync if shared else None,
        )
        audit = sqlite_audit
        await sqlite_audit.start()
        try:
            # After start (the schema exists) and before any append can run.
            await tree.load(sqlite_audit.path)
            if shared:
                # The other workers may append meanwhile: the tree follows them.
                tree.follow(sqlite_audit)
                await tree.sync()
            else:
                head = await sqlite_audit.head()
                if tree.size != (0 if head is None else head.seq + 1):
                    raise AuditWriteError(
                        "audit tree and audit log disagree on size", retryable=False
                    )
        except BaseException:
            await sqlite_audit.close()
            raise
        transparency = SQLiteTransparencyStore(sqlite_audit.path)
    service = AuditLogService(
        tree,
        transparency,
        key,
        clock,
        audit=audit,
        data_dir=keys_dir,
        origin=origin,
        interval=settings.audit.checkpoint_interval_seconds,
        requester_key=requester_key,
    )
    return audit, service
