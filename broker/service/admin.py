"""Admin authentication and roles; policy reload. Every action is audited."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from broker.errors import AdminAuthError, Forbidden
from broker.ports import AuditSink, Clock
from broker.service.auditing import event, record
from broker.service.context import RequestContext
from broker.service.policies import PolicyHolder, ReloadResult

# Which role may do what. Unknown permissions are refused (fail closed).
ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "admin": frozenset(
        {
            "keys.read",
            "keys.write",
            "root_key.rotate",
            "policy.read",
            "policy.reload",
            "audit.read",
            "audit.rotate_key",
        }
    ),
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
    """Policy reload and audit reads (key lifecycle lives in service.keys)."""

    def __init__(self, audit: AuditSink, clock: Clock, policies: PolicyHolder) -> None:
        self._audit = audit
        self._clock = clock
        self._policies = policies

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
