"""Admin authentication and least-privilege roles; policy reload. Every action is audited.

``ENDPOINT_PERMISSIONS`` is the one table saying which permission each admin
endpoint needs; ``ROLE_PERMISSIONS`` says which role holds it. An endpoint
missing from the table refuses everyone (fail closed), and so does an unknown
role or permission.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from broker.errors import AdminAuthError, ConfigError, Forbidden
from broker.ports import AdminTokenInfo, AdminTokenStore, AuditSink, Clock
from broker.service.auditing import event, record
from broker.service.client_certs import CertRoleMap
from broker.service.context import RequestContext
from broker.service.policies import PolicyHolder, ReloadResult

KEYS_READ: Final = "keys.read"
KEYS_WRITE: Final = "keys.write"
ROOT_KEY_ROTATE: Final = "root_key.rotate"
AUDIT_KEY_ROTATE: Final = "audit.rotate_key"
POLICY_READ: Final = "policy.read"
POLICY_RELOAD: Final = "policy.reload"
POLICY_SIMULATE: Final = "policy.simulate"
AUDIT_READ: Final = "audit.read"
AUDIT_CHECKPOINT: Final = "audit.checkpoint"
TOKENS_MANAGE: Final = "tokens.manage"
# Not a permission: the endpoint needs no credential (it reveals only public data).
PUBLIC: Final = "public"

# The break-glass role holds every permission; only it manages tokens.
ADMIN_ROLE: Final = "admin"

# Which role may do what: each role holds exactly what its job needs.
ROLE_PERMISSIONS: Mapping[str, frozenset[str]] = {
    "key-admin": frozenset({KEYS_READ, KEYS_WRITE, ROOT_KEY_ROTATE, AUDIT_KEY_ROTATE}),
    "policy-admin": frozenset({POLICY_READ, POLICY_RELOAD, POLICY_SIMULATE}),
    # A fresh checkpoint is what an auditor verifies an export against.
    "auditor": frozenset({AUDIT_READ, AUDIT_CHECKPOINT, KEYS_READ, POLICY_READ}),
    "operator": frozenset({POLICY_RELOAD, AUDIT_CHECKPOINT}),
    ADMIN_ROLE: frozenset(
        {
            KEYS_READ,
            KEYS_WRITE,
            ROOT_KEY_ROTATE,
            AUDIT_KEY_ROTATE,
            POLICY_READ,
            POLICY_RELOAD,
            POLICY_SIMULATE,
            AUDIT_READ,
            AUDIT_CHECKPOINT,
            TOKENS_MANAGE,
        }
    ),
}
ROLES: Final = tuple(ROLE_PERMISSIONS)

_KEY: Final = "/v1/keys/{repo}/{type}/{tag}"
_VERSION: Final = _KEY + "/versions/{version}"

# (method, route template) -> permission. HEAD is checked as GET.
ENDPOINT_PERMISSIONS: Mapping[tuple[str, str], str] = {
    ("GET", "/v1/keys"): KEYS_READ,
    ("POST", "/v1/keys"): KEYS_WRITE,
    ("POST", "/v1/secrets"): KEYS_WRITE,
    ("GET", _KEY): KEYS_READ,
    ("PATCH", _KEY): KEYS_WRITE,
    ("DELETE", _KEY): KEYS_WRITE,
    ("POST", _KEY + "/rotate"): KEYS_WRITE,
    ("POST", _VERSION + "/retire"): KEYS_WRITE,
    ("POST", _VERSION + "/restore"): KEYS_WRITE,
    ("POST", _VERSION + "/destroy"): KEYS_WRITE,
    ("POST", "/v1/root-key/rotate"): ROOT_KEY_ROTATE,
    ("GET", "/v1/policies"): POLICY_READ,
    ("POST", "/v1/policies/reload"): POLICY_RELOAD,
    ("POST", "/v1/policies/simulate"): POLICY_SIMULATE,
    ("GET", "/v1/audit/keys"): PUBLIC,
    ("GET", "/v1/audit/checkpoint"): PUBLIC,
    ("POST", "/v1/audit/checkpoint"): AUDIT_CHECKPOINT,
    ("GET", "/v1/audit/proof/inclusion"): AUDIT_READ,
    ("GET", "/v1/audit/proof/consistency"): AUDIT_READ,
    ("GET", "/v1/audit/export"): AUDIT_READ,
    ("POST", "/v1/audit/hash-requester"): AUDIT_READ,
    ("POST", "/v1/audit/rotate-key"): AUDIT_KEY_ROTATE,
    ("GET", "/v1/tokens"): TOKENS_MANAGE,
    ("POST", "/v1/tokens"): TOKENS_MANAGE,
    ("DELETE", "/v1/tokens/{id}"): TOKENS_MANAGE,
}


def endpoint_permission(method: str, route: str) -> str:
    """The permission ``method route`` needs (``PUBLIC`` for none).

    Raises:
        Forbidden: the endpoint has no entry, so nobody may call it.
    """
    wanted = "GET" if method.upper() == "HEAD" else method.upper()
    permission = ENDPOINT_PERMISSIONS.get((wanted, route))
    if permission is None:
        raise Forbidden(f"no access rule for {wanted} {route}")
    return permission


def roles_with(permission: str) -> frozenset[str]:
    return frozenset(role for role, held in ROLE_PERMISSIONS.items() if permission in held)


class AdminTokenExpired(AdminAuthError):
    """A stored admin token past its expiry."""

    code = "AdminTokenExpired"


class AdminTokenRevoked(AdminAuthError):
    """A stored admin token that was revoked."""

    code = "AdminTokenRevoked"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class AdminAuth:
    """Bearer tokens (bootstrap files and stored ones) and, optionally, client certificates.

    Only SHA-256 digests are held. Bootstrap digests are compared in constant
    time, every one of them on every request. A stored token is found by its
    digest: the lookup's timing depends only on a hash of a 256-bit secret, so
    it tells a caller nothing about any stored token (the usual design for
    API tokens). The store is asked on every request, so a revocation made
    on one replica applies on all of them at once.
    """

    def __init__(
        self,
        tokens: Mapping[str, str],
        *,
        store: AdminTokenStore | None = None,
        clock: Clock | None = None,
        client_cert_roles: Mapping[str, str] | None = None,
    ) -> None:
        # role -> token
        for role in tokens:
            if role not in ROLE_PERMISSIONS:
                raise ConfigError(f"admin token for unknown role {role!r}")
        self._digests = [(token_digest(token), role) for role, token in tokens.items()]
        if store is not None and clock is None:
            raise ConfigError("stored admin tokens need a clock")
        self._store = store
        self._clock = clock
        self._certs = CertRoleMap.parse(client_cert_roles or {}, roles=frozenset(ROLES))

    async def authenticate(
        self, header: str | None, *, peercert: Mapping[str, Any] | None = None
    ) -> Principal:
        """A bearer token if one is sent, else a verified client certificate.

        Raises:
            AdminAuthError: no credential, an unknown token or certificate subject.
            AdminTokenExpired, AdminTokenRevoked: a stored token no longer valid.
        """
        if header:
            if not header.startswith("Bearer "):
                raise AdminAuthError("admin API needs 'Authorization: Bearer <token>'")
            return await self._bearer(header[7:].strip())
        if peercert:
            subject, role = self._certs.role_for(peercert)
            return Principal(name=f"cert:{subject}", role=role)
        raise AdminAuthError("admin API needs 'Authorization: Bearer <token>'")

    async def _bearer(self, token: str) -> Principal:
        digest = token_digest(token)
        found = None
        for candidate, role in self._digests:
            if hmac.compare_digest(candidate, digest):
                found = role
        if found is not None:
            return Principal(name=f"token:{found}", role=found)
        if self._store is None or self._clock is None:
            raise AdminAuthError("unknown admin token")
        info = await self._store.token_by_digest(digest)
        if info is None:
            raise AdminAuthError("unknown admin token")
        return self._check_stored(info, self._clock)

    @staticmethod
    def _check_stored(info: AdminTokenInfo, clock: Clock) -> Principal:
        if info.revoked_at is not None:
            raise AdminTokenRevoked(f"admin token {info.id} was revoked")
        if info.expires_at is not None and info.expires_at <= clock.now():
            raise AdminTokenExpired(f"admin token {info.id} expired")
        if info.role not in ROLE_PERMISSIONS:
            raise AdminAuthError(f"admin token {info.id} has an unknown role")
        return Principal(name=f"token:{info.name}/{info.id}", role=info.role)

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
