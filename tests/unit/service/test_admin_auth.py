"""AdminAuth, the endpoint table and client-certificate rules, without a server."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from broker.errors import AdminAuthError, ConfigError, Forbidden, MalformedRequest
from broker.ports import AdminTokenInfo
from broker.service.admin import (
    ENDPOINT_PERMISSIONS,
    PUBLIC,
    ROLE_PERMISSIONS,
    AdminAuth,
    AdminTokenExpired,
    AdminTokenRevoked,
    endpoint_permission,
    token_digest,
)
from broker.service.admin_tokens import parse_lifetime
from broker.service.client_certs import CertRoleMap
from tests.fakes import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class MemoryTokens:
    def __init__(self, *rows: tuple[str, AdminTokenInfo]) -> None:
        self.rows = {token_digest(t): info for t, info in rows}

    async def add_token(self, info: AdminTokenInfo, digest: bytes) -> None:
        self.rows[digest] = info

    async def token_by_digest(self, digest: bytes) -> AdminTokenInfo | None:
        return self.rows.get(digest)

    async def list_tokens(self) -> Sequence[AdminTokenInfo]:
        return list(self.rows.values())

    async def revoke_token(self, token_id: str, now: datetime) -> AdminTokenInfo:
        raise NotImplementedError


def _stored(role: str, **kw: datetime | None) -> AdminTokenInfo:
    return AdminTokenInfo(
        id="t1",
        name="ci",
        role=role,
        created_at=T0,
        created_by="token:admin",
        expires_at=kw.get("expires_at"),
        revoked_at=kw.get("revoked_at"),
    )


def _peer(*rdns: tuple[str, str]) -> dict[str, object]:
    return {"subject": tuple(((name, value),) for name, value in rdns)}


def test_admin_holds_every_permission_in_the_table() -> None:
    """The break-glass role can call every protected endpoint."""
    needed = set(ENDPOINT_PERMISSIONS.values()) - {PUBLIC}
    assert needed <= ROLE_PERMISSIONS["admin"]
    assert set().union(*ROLE_PERMISSIONS.values()) == ROLE_PERMISSIONS["admin"]


def test_unknown_endpoint_is_forbidden() -> None:
    """A route without an entry has no permission anyone holds."""
    with pytest.raises(Forbidden):
        endpoint_permission("GET", "/v1/not-in-the-table")
    assert endpoint_permission("HEAD", "/v1/keys") == endpoint_permission("GET", "/v1/keys")


async def test_bootstrap_and_stored_tokens() -> None:
    """Bootstrap tokens and stored ones authenticate; expired and revoked ones do not."""
    clock = FakeClock(T0)
    store = MemoryTokens(
        ("ok", _stored("operator", expires_at=T0 + timedelta(hours=1))),
        ("old", _stored("operator", expires_at=T0)),
        ("gone", _stored("auditor", revoked_at=T0)),
    )
    auth = AdminAuth({"admin": "boot"}, store=store, clock=clock)
    assert (await auth.authenticate("Bearer boot")).role == "admin"
    assert (await auth.authenticate("Bearer ok")).name == "token:ci/t1"
    with pytest.raises(AdminTokenExpired):
        await auth.authenticate("Bearer old")
    with pytest.raises(AdminTokenRevoked):
        await auth.authenticate("Bearer gone")
    for header in (None, "", "Basic x", "Bearer nope"):
        with pytest.raises(AdminAuthError):
            await auth.authenticate(header)


async def test_token_wins_over_certificate() -> None:
    """A bad bearer token is refused even when a mapped certificate is presented."""
    auth = AdminAuth({"admin": "boot"}, client_cert_roles={"CN=ops": "operator"})
    peer = _peer(("commonName", "ops"))
    assert (await auth.authenticate(None, peercert=peer)).role == "operator"
    with pytest.raises(AdminAuthError):
        await auth.authenticate("Bearer wrong", peercert=peer)


def test_certificate_rules() -> None:
    """Every attribute of a rule must match; conflicting roles are refused."""
    rules = CertRoleMap.parse(
        {"CN=ops,O=Example": "operator", "O=Example,OU=audit": "auditor"},
        roles=frozenset(ROLE_PERMISSIONS),
    )
    ops = _peer(("commonName", "ops"), ("organizationName", "Example"))
    assert rules.role_for(ops) == ("CN=ops,O=Example", "operator")
    with pytest.raises(AdminAuthError):
        rules.role_for(_peer(("commonName", "ops"), ("organizationName", "Other")))
    both = _peer(
        ("commonName", "ops"), ("organizationName", "Example"), ("organizationalUnitName", "audit")
    )
    with pytest.raises(AdminAuthError, match="different roles"):
        rules.role_for(both)


@pytest.mark.parametrize(
    "table", [{"CN=ops": "root"}, {"ops": "operator"}, {"XX=ops": "operator"}, {"CN=": "auditor"}]
)
def test_bad_certificate_rules_refuse_to_start(table: dict[str, str]) -> None:
    """Unknown roles and malformed subjects are configuration errors."""
    with pytest.raises(ConfigError):
        AdminAuth({"admin": "boot"}, client_cert_roles=table)


def test_lifetimes() -> None:
    """Token lifetimes parse from 30d-style text within a minute and two years."""
    assert parse_lifetime("30d") == timedelta(days=30)
    assert parse_lifetime("2w") == timedelta(weeks=2)
    for bad in ("0m", "1s", "999w", "soon", ""):
        with pytest.raises(MalformedRequest, match="expires"):
            parse_lifetime(bad)
