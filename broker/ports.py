"""The interfaces the services need; adapters implement them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from broker.keys.material import SecretBytes


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """Metadata of a stored resource (never its value)."""

    id: str
    kind: str  # "data-key" | "secret"
    current_version: int
    created_at: datetime
    created_by: str
    size: int


@dataclass(frozen=True, slots=True)
class StoredValue:
    info: ResourceInfo
    version: int
    sealed: bytes


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
        self, resource: str, *, kind: str, sealed: bytes, size: int, actor: str, now: datetime
    ) -> ResourceInfo: ...

    async def get_current(self, resource: str) -> StoredValue: ...

    async def info(self, resource: str) -> ResourceInfo: ...

    async def list(self) -> Sequence[ResourceInfo]: ...

    async def delete(self, resource: str) -> None: ...

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


class AuditSink(Protocol):
    async def append(self, event: Any) -> Any: ...

    def iter_records(
        self, since: datetime | None, until: datetime | None
    ) -> AsyncIterator[Any]: ...

    async def check_writable(self) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...
