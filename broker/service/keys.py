"""Key lifecycle: create, upload, rotate, retire, destroy. Every action is audited.

Rotation adds version n+1 and makes it current; earlier versions stay
releasable (explicitly, with ``?version=N``) until they are retired, fall
below ``min_release_version`` or are destroyed, so data an enclave encrypted
with an old version stays readable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import structlog

from broker.errors import BrokerError, Conflict, MalformedRequest
from broker.keys.material import SecretBytes
from broker.ports import (
    ACTIVE,
    RETIRED,
    AuditSink,
    Clock,
    KEKService,
    KeyStore,
    ResourceInfo,
    VersionInfo,
    parse_kv_ref,
)
from broker.service.auditing import event, record
from broker.service.context import RequestContext
from broker.service.resources import parse_resource_id

log = structlog.get_logger(__name__)

DATA_KEY_BYTES = 32
_PERIOD = re.compile(r"(\d{1,9})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_ROTATE_EVERY = 60


def parse_period(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``3600s`` -> seconds (at least a minute)."""
    match = _PERIOD.fullmatch(text.strip())
    if match is None:
        raise MalformedRequest("rotate_every must look like 30d, 12h, 90m or 3600s")
    seconds = int(match.group(1)) * _UNIT[match.group(2)]
    if seconds < MIN_ROTATE_EVERY:
        raise MalformedRequest(f"rotate_every must be at least {MIN_ROTATE_EVERY} seconds")
    return seconds


@dataclass(frozen=True, slots=True)
class KeyDetails:
    info: ResourceInfo
    versions: Sequence[VersionInfo]


class KeyLifecycle:
    def __init__(
        self,
        store: KeyStore,
        kek: KEKService,
        audit: AuditSink,
        clock: Clock,
        *,
        max_secret_bytes: int,
    ) -> None:
        self._store = store
        self._kek = kek
        self._audit = audit
        self._clock = clock
        self._max_secret = max_secret_bytes

    async def _audited(
        self,
        name: str,
        ctx: RequestContext,
        now: datetime,
        resource: str,
        *,
        version: int | None = None,
        detail: str = "",
    ) -> None:
        await record(
            self._audit,
            event(name, ctx, now, decision="ok", resource=resource, version=version, detail=detail),
        )

    async def _failed(
        self, name: str, ctx: RequestContext, now: datetime, resource: str, exc: BrokerError
    ) -> None:
        await record(
            self._audit,
            event(
                name,
                ctx,
                now,
                decision="error",
                resource=resource[:400],
                error_code=exc.code,
                detail=exc.message[:300],
            ),
        )

    async def create_key(
        self, resource: str, ctx: RequestContext, *, rotate_every: str | None = None
    ) -> ResourceInfo:
        every = parse_period(rotate_every) if rotate_every else None
        value = SecretBytes(os.urandom(DATA_KEY_BYTES))
        return await self._create(resource, value, "data-key", ctx, rotate_every=every)

    async def put_secret(self, resource: str, value: bytes, ctx: RequestContext) -> ResourceInfo:
        if not value:
            raise MalformedRequest("secret is empty")
        if len(value) > self._max_secret:
            raise MalformedRequest(f"secret larger than {self._max_secret} bytes")
        return await self._create(resource, SecretBytes(value), "secret", ctx)

    async def link_vault_secret(self, resource: str, ref: str, ctx: RequestContext) -> ResourceInfo:
        """A resource whose value is read from Vault KV v2 at each release."""
        now = self._clock.now()
        try:
            resource = parse_resource_id(resource)
            source = str(parse_kv_ref(ref))
            info = await self._store.create(
                resource,
                kind="vault-kv",
                sealed=b"",
                size=0,
                actor=ctx.actor,
                now=now,
                source=source,
            )
        except BrokerError as exc:
            await self._failed("admin.secret_linked", ctx, now, resource, exc)
            raise
        await self._audited("admin.secret_linked", ctx, now, resource, version=1, detail=source)
        return info

    async def _create(
        self,
        resource: str,
        value: SecretBytes,
        kind: str,
        ctx: RequestContext,
        *,
        rotate_every: int | None = None,
    ) -> ResourceInfo:
        now = self._clock.now()
        name = "admin.key_created" if kind == "data-key" else "admin.secret_created"
        try:
            resource = parse_resource_id(resource)
            sealed = await self._kek.seal(value, resource=resource, version=1)
            info = await self._store.create(
                resource,
                kind=kind,
                sealed=sealed,
                size=len(value),
                actor=ctx.actor,
                now=now,
                rotate_every=rotate_every,
            )
        except BrokerError as exc:
            await self._failed(name, ctx, now, resource, exc)
            raise
        await self._audited(name, ctx, now, resource, version=1)
        return info

    async def rotate(
        self,
        resource: str,
        ctx: RequestContext,
        *,
        value: bytes | None = None,
        expected_rotated_at: datetime | None = None,
    ) -> ResourceInfo:
        """Adds a version: a fresh data key, or ``value`` for a secret."""
        now = self._clock.now()
        try:
            resource = parse_resource_id(resource)
            info = await self._store.info(resource)
            if info.kind == "data-key":
                if value is not None:
                    raise MalformedRequest("a data key is generated by the broker; give no value")
                material = SecretBytes(os.urandom(DATA_KEY_BYTES))
            elif info.kind == "secret":
                if not value or len(value) > self._max_secret:
                    raise MalformedRequest("rotating a secret needs its new value (non-empty)")
                material = SecretBytes(value)
            else:
                raise Conflict(
                    f"resource {resource} is kept elsewhere ({info.kind}); rotate it there"
                )
            version = info.current_version + 1
            sealed = await self._kek.seal(material, resource=resource, version=version)
            updated = await self._store.add_version(
                resource,
                version=version,
                sealed=sealed,
                size=len(material),
                actor=ctx.actor,
                now=now,
                expected_rotated_at=expected_rotated_at,
            )
        except BrokerError as exc:
            await self._failed("admin.key_rotated", ctx, now, resource, exc)
            raise
        await self._audited(
            "admin.key_rotated", ctx, now, resource, version=updated.current_version
        )
        log.info("key.rotated", resource=resource, version=updated.current_version)
        return updated

    async def configure(
        self,
        resource: str,
        ctx: RequestContext,
        *,
        min_release_version: int | None = None,
        rotate_every: str | None = None,
    ) -> ResourceInfo:
        now = self._clock.now()
        resource = parse_resource_id(resource)
        clear = rotate_every in {"", "never", "off"}
        every = None if clear or rotate_every is None else parse_period(rotate_every)
        info = await self._store.update_settings(
            resource,
            min_release_version=min_release_version,
            rotate_every=every,
            clear_rotate_every=clear,
        )
        await self._audited(
            "admin.key_configured",
            ctx,
            now,
            resource,
            detail=(
                f"min_release_version={info.min_release_version} rotate_every={info.rotate_every}"
            ),
        )
        return info

    async def set_state(self, resource: str, version: int, state: str, ctx: RequestContext) -> None:
        now = self._clock.now()
        resource = parse_resource_id(resource)
        await self._store.set_version_state(resource, version, state)
        name = "admin.key_version_retired" if state == RETIRED else "admin.key_version_restored"
        await self._audited(name, ctx, now, resource, version=version)

    async def retire(self, resource: str, version: int, ctx: RequestContext) -> None:
        await self.set_state(resource, version, RETIRED, ctx)

    async def restore(self, resource: str, version: int, ctx: RequestContext) -> None:
        await self.set_state(resource, version, ACTIVE, ctx)

    async def destroy(self, resource: str, version: int, ctx: RequestContext) -> None:
        now = self._clock.now()
        resource = parse_resource_id(resource)
        await self._store.destroy_version(resource, version)
        await self._audited("admin.key_version_destroyed", ctx, now, resource, version=version)

    async def details(self, resource: str) -> KeyDetails:
        resource = parse_resource_id(resource)
        return KeyDetails(await self._store.info(resource), await self._store.versions(resource))

    async def list(self) -> Sequence[ResourceInfo]:
        return await self._store.list()

    async def due(self) -> Sequence[ResourceInfo]:
        return await self._store.due(self._clock.now())

    async def delete(self, resource: str, ctx: RequestContext) -> None:
        now = self._clock.now()
        resource = parse_resource_id(resource)
        await self._store.delete(resource)
        await self._audited("admin.resource_deleted", ctx, now, resource)
