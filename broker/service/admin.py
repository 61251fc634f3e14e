"""Admin use cases: keys and secrets, policy reload, audit export. Every action is audited."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from broker.errors import AdminAuthError, BrokerError, Forbidden, MalformedRequest
from broker.keys.material import SecretBytes
from broker.ports import AuditSink, Clock, KEKService, KeyStore, ResourceInfo
from broker.service.auditing import event, record
from broker.service.context import RequestContext
from broker.service.policies import PolicyHolder, ReloadResult
from broker.service.resources import parse_resource_id

DATA_KEY_BYTES = 32
_EVENT = {"data-key": "key", "secret": "secret"}

# Which role may do what. Unknown permissions are refused (fail closed).
ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "admin": frozenset({"keys.read", "keys.write", "policy.read", "policy.reload", "audit.read"}),
    "auditor": frozenset({"audit.read", "keys.read", "policy.read"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str


class AdminAuth:
    """Bearer tokens, kept only as SHA-256 digests and compared in constant time."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        # role -> token
        self._digests = [
            (hashlib.sha256(token.encode()).digest(), role) for role, token in tokens.items()
        ]

    def authenticate(self, header: str | None) -> Principal:
        if not header or not header.startswith("Bearer "):
            raise AdminAuthError("admin API needs 'Authorization: Bearer <token>'")
        digest = hashlib.sha256(header[7:].strip().encode()).digest()
        found = None
        for candidate, role in self._digests:
            if hmac.compare_digest(candidate, digest):
                found = role
        if found is None:
            raise AdminAuthError("unknown admin token")
        return Principal(name=f"token:{found}", role=found)

    @staticmethod
    def require(principal: Principal, permission: str) -> None:
        if permission not in ROLE_PERMISSIONS.get(principal.role, frozenset()):
            raise Forbidden(f"role {principal.role!r} may not {permission}")


class AdminService:
    def __init__(
        self,
        store: KeyStore,
        kek: KEKService,
        audit: AuditSink,
        clock: Clock,
        policies: PolicyHolder,
        *,
        max_secret_bytes: int,
    ) -> None:
        self._store = store
        self._kek = kek
        self._audit = audit
        self._clock = clock
        self._policies = policies
        self._max_secret = max_secret_bytes

    async def _audited(self, name: str, ctx: RequestContext, now: datetime, resource: str) -> None:
        await record(self._audit, event(name, ctx, now, decision="ok", resource=resource))

    async def create_key(self, resource: str, ctx: RequestContext) -> ResourceInfo:
        return await self._create(
            resource, SecretBytes(os.urandom(DATA_KEY_BYTES)), "data-key", ctx
        )

    async def put_secret(self, resource: str, value: bytes, ctx: RequestContext) -> ResourceInfo:
        if not value:
            raise MalformedRequest("secret is empty")
        if len(value) > self._max_secret:
            raise MalformedRequest(f"secret larger than {self._max_secret} bytes")
        return await self._create(resource, SecretBytes(value), "secret", ctx)

    async def _create(
        self, resource: str, value: SecretBytes, kind: str, ctx: RequestContext
    ) -> ResourceInfo:
        now = self._clock.now()
        resource = parse_resource_id(resource)
        sealed = await self._kek.seal(value, resource=resource, version=1)
        try:
            info = await self._store.create(
                resource, kind=kind, sealed=sealed, size=len(value), actor=ctx.actor, now=now
            )
        except BrokerError as exc:
            await record(
                self._audit,
                event(
                    f"admin.{_EVENT[kind]}_create",
                    ctx,
                    now,
                    decision="error",
                    resource=resource,
                    error_code=exc.code,
                ),
            )
            raise
        await self._audited(f"admin.{_EVENT[kind]}_created", ctx, now, resource)
        return info

    async def list_keys(self) -> Sequence[ResourceInfo]:
        return await self._store.list()

    async def show_key(self, resource: str) -> ResourceInfo:
        return await self._store.info(parse_resource_id(resource))

    async def delete_key(self, resource: str, ctx: RequestContext) -> None:
        now = self._clock.now()
        resource = parse_resource_id(resource)
        await self._store.delete(resource)
        await self._audited("admin.resource_deleted", ctx, now, resource)

    async def reload_policies(self, ctx: RequestContext) -> ReloadResult:
        now = self._clock.now()
        result = self._policies.reload(now=now)
        await record(
            self._audit,
            event(
                "admin.policy_reload",
                ctx,
                now,
                decision="ok" if result.ok else "error",
                policy_digest=result.digest,
                detail=result.error[:300],
            ),
        )
        return result

    def audit_records(
        self, since: datetime | None, until: datetime | None
    ) -> AsyncIterator[object]:
        return self._audit.iter_records(since, until)
