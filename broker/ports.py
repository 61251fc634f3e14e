"""The interfaces the services need; adapters implement them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from broker.errors import (
    KeyVersionDestroyed,
    KeyVersionNotReleasable,
    MalformedRequest,
    ResourceNotFound,
)
from broker.evidence.collateral import CollateralRequest
from broker.keys.material import SecretBytes

# Version states: released only while "active"; "destroyed" has no material left.
ACTIVE, RETIRED, DESTROYED = "active", "retired", "destroyed"


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: int
    state: str
    created_at: datetime
    created_by: str


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """Metadata of a stored resource (never its value)."""

    id: str
    kind: str  # "data-key" | "secret" | "vault-kv"
    current_version: int
    min_release_version: int
    rotate_every: int | None  # seconds; None: no scheduled rotation
    last_rotated_at: datetime
    created_at: datetime
    created_by: str
    size: int
    # For "vault-kv": where the value lives ("path#field" or "path#field@version").
    source: str = ""


@dataclass(frozen=True, slots=True)
class StoredValue:
    info: ResourceInfo
    version: int
    sealed: bytes


def releasable_version(
    info: ResourceInfo, version: int | None, state: str | None, sealed: bytes | None
) -> StoredValue:
    """The KeyStore release rule, shared by every store: ``version`` as asked (None:
    the current one), and the ``state`` and ``sealed`` value stored for it (``state``
    None: no such version).

    Raises:
        ResourceNotFound, KeyVersionDestroyed, KeyVersionNotReleasable.
    """
    wanted = info.current_version if version is None else version
    if state is None:
        raise ResourceNotFound(f"resource {info.id} has no version {wanted}")
    if state == DESTROYED or sealed is None:
        raise KeyVersionDestroyed(f"version {wanted} of {info.id} was destroyed")
    if state == RETIRED:
        raise KeyVersionNotReleasable(f"version {wanted} of {info.id} is retired")
    if wanted < info.min_release_version:
        raise KeyVersionNotReleasable(
            f"version {wanted} of {info.id} is below its minimum release version"
            f" {info.min_release_version}"
        )
    return StoredValue(info=info, version=wanted, sealed=bytes(sealed))


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    tee: str
    nonce: str
    created_at: float
    expires_at: float
    used: bool
    token: str | None


class KeyStore(Protocol):
    async def create(
        self,
        resource: str,
        *,
        kind: str,
        sealed: bytes,
        size: int,
        actor: str,
        now: datetime,
        rotate_every: int | None = None,
        source: str = "",
    ) -> ResourceInfo: ...

    async def get_version(self, resource: str, version: int | None) -> StoredValue:
        """``None`` is the current version. Raises ResourceNotFound,
        KeyVersionNotReleasable or KeyVersionDestroyed."""
        ...

    async def add_version(
        self,
        resource: str,
        *,
        version: int,
        sealed: bytes,
        size: int,
        actor: str,
        now: datetime,
        expected_rotated_at: datetime | None = None,
    ) -> ResourceInfo:
        """Adds ``version`` (= current + 1) and makes it current. Raises Conflict if
        another writer rotated first (or, with ``expected_rotated_at``, if the
        resource was rotated since that time)."""
        ...

    async def info(self, resource: str) -> ResourceInfo: ...

    async def versions(self, resource: str) -> Sequence[VersionInfo]: ...

    async def list(self) -> Sequence[ResourceInfo]: ...

    async def update_settings(
        self,
        resource: str,
        *,
        min_release_version: int | None = None,
        rotate_every: int | None = None,
        clear_rotate_every: bool = False,
    ) -> ResourceInfo: ...

    async def set_version_state(self, resource: str, version: int, state: str) -> None: ...

    async def destroy_version(self, resource: str, version: int) -> None:
        """Erases the material of one version (irreversible)."""
        ...

    async def due(self, now: datetime) -> Sequence[ResourceInfo]: ...

    async def delete(self, resource: str) -> None: ...

    async def all_sealed(self) -> Sequence[tuple[str, int, bytes]]: ...

    async def reseal_all(self, reseal: Callable[[str, int, bytes], Awaitable[bytes]]) -> int:
        """Re-seals every stored value in one transaction; returns the count."""
        ...

    async def check_writable(self) -> None: ...


class SessionStore(Protocol):
    async def create_session(self, session: Session) -> None: ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def consume_session(self, session_id: str) -> Session:
        """Marks the nonce used; raises NonceReplayed if it already was."""
        ...

    async def set_session_token(self, session_id: str, token: str) -> None: ...

    async def purge_sessions(self, before: float) -> int: ...


class KEKService(Protocol):
    """Seals and opens stored values (local root key, or Vault transit)."""

    async def seal(self, plaintext: SecretBytes, *, resource: str, version: int) -> bytes: ...

    async def unseal(self, sealed: bytes, *, resource: str, version: int) -> SecretBytes: ...


@dataclass(frozen=True, slots=True)
class RotationResult:
    resealed: int
    key_id: str


class RootKeyManager(Protocol):
    async def rotate(self) -> RotationResult: ...


@dataclass(frozen=True, slots=True)
class KVRef:
    """Where a ``vault-kv`` resource's value lives."""

    path: str
    field: str
    version: int | None = None

    def __str__(self) -> str:
        text = f"{self.path}#{self.field}"
        return text if self.version is None else f"{text}@{self.version}"


def parse_kv_ref(text: str) -> KVRef:
    """``path#field`` or ``path#field@version``."""
    path, _, rest = text.partition("#")
    field, _, version = rest.partition("@")
    if not path or not field or (version and not version.isdigit()):
        raise MalformedRequest("a Vault reference looks like path#field or path#field@version")
    return KVRef(path, field, int(version) if version else None)


class SecretSource(Protocol):
    """An external store the broker reads a secret from at release time."""

    async def read(self, path: str, *, field: str, version: int | None = None) -> SecretBytes: ...


class CollateralSource(Protocol):
    async def fetch(self, req: CollateralRequest) -> Mapping[str, bytes]:
        """The collateral documents for ``req``, keyed as VerifyContext.collateral.

        Raises:
            CollateralError: the source has no (usable) collateral for ``req``.
            BackendError: a backend the source depends on is unreachable.
        """
        ...


class Lease(Protocol):
    """A named lease with expiry: one holder at a time across replicas (or workers).

    A holder that stops renewing loses the lease after ``ttl`` seconds, and
    another may take it; renew well within ``ttl``.
    """

    async def acquire(self, holder: str, ttl: float) -> bool:
        """Takes the lease if it is free or expired, or extends it if ``holder`` has it.

        Returns whether ``holder`` holds the lease for the next ``ttl`` seconds.

        Raises:
            ConfigError: empty holder or non-positive ttl.
            BackendError: the store failed (the caller must assume it holds nothing).
        """
        ...

    async def renew(self, holder: str, ttl: float) -> bool:
        """Extends the lease by ``ttl`` from now if ``holder`` still has it (not expired).

        Returns False when the lease was lost: stop the work it guarded.
        """
        ...

    async def release(self, holder: str) -> None:
        """Gives the lease up at once (on shutdown) if ``holder`` has it; else a no-op."""
        ...

    async def holder(self) -> str | None:
        """Who holds the lease now, or None if it is free or expired."""
        ...


class AuditSink(Protocol):
    async def append(self, event: Any) -> Any: ...

    def iter_records(
        self, since: datetime | None, until: datetime | None
    ) -> AsyncIterator[Any]: ...

    async def check_writable(self) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class AdminTokenInfo:
    """A stored admin token's metadata. The token itself is never stored, only its SHA-256."""

    id: str
    name: str
    role: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None


class AdminTokenStore(Protocol):
    """Hashed admin tokens, shared by every replica (a revocation applies everywhere)."""

    async def add_token(self, info: AdminTokenInfo, digest: bytes) -> None: ...

    async def token_by_digest(self, digest: bytes) -> AdminTokenInfo | None: ...

    async def list_tokens(self) -> Sequence[AdminTokenInfo]: ...

    async def revoke_token(self, token_id: str, now: datetime) -> AdminTokenInfo:
        """Raises ResourceNotFound; revoking twice keeps the first revocation time."""
        ...
