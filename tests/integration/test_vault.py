"""The Vault/OpenBao key backends against a real OpenBao dev server."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import hvac
import pytest

from broker.adapters.vault_client import (
    VaultClient,
    VaultRequestError,
    VaultSettings,
    broker_policy_hcl,
)
from broker.adapters.vault_kek import (
    FORMAT_VAULT_TRANSIT,
    VaultTransitKEK,
    is_vault_sealed,
    sealed_key_version,
)
from broker.adapters.vault_kv import VaultKVSource
from broker.errors import (
    BackendError,
    ConfigError,
    InvalidResourcePath,
    KeyManagementError,
    ResourceNotFound,
)
from broker.keys.material import SecretBytes
from broker.keys.sealing import FORMAT_V1, RootKey, seal
from tests.integration.openbao_fixture import openbao, openbao_tls  # noqa: F401
from tests.openbao import OpenBaoServer

PLAINTEXT = b"TOP-SECRET-DATA-KEY-0123456789ab"
RESOURCE = "default/tenant-a/data-key"


def fast(server: OpenBaoServer, **overrides: Any) -> VaultSettings:
    """Root-token settings with short timeouts, so outage tests stay quick."""
    base = VaultSettings(
        addr=server.addr,
        token=server.root_token,
        timeout=0.5,
        max_retries=2,
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    return replace(base, **overrides)


@pytest.fixture
def make_client(openbao: OpenBaoServer) -> Iterator[Callable[..., VaultClient]]:  # noqa: F811
    """Builds VaultClients and closes them after the test."""
    made: list[VaultClient] = []

    def build(settings: VaultSettings | None = None, **kw: Any) -> VaultClient:
        client = VaultClient(settings or fast(openbao), **kw)
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


@pytest.fixture
def kek(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> VaultTransitKEK:
    """A KEK on a fresh derived key of its own."""
    return VaultTransitKEK(make_client(), key=openbao.new_transit_key())


def assert_no_secrets(exc: BaseException, *secrets: str | bytes) -> None:
    """No secret appears in the message, repr, diagnostics or any chained exception."""
    texts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen), repr(seen.args)]
        if hasattr(seen, "diagnostics"):
            texts.append(seen.diagnostics())
        seen = seen.__cause__ or seen.__context__
    blob = "\n".join(texts)
    for secret in secrets:
        value = secret.decode() if isinstance(secret, bytes) else secret
        assert value not in blob
    assert base64.b64encode(PLAINTEXT).decode() not in blob
    assert PLAINTEXT.decode() not in blob


# --- format and settings (no server needed) -------------------------------------------------


def test_sealed_format_marker_differs_from_local() -> None:
    """Vault-sealed values carry their own marker, distinct from the local AES-GCM format."""
    local = seal(RootKey.generate(), SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    assert local[0] == FORMAT_V1
    assert not is_vault_sealed(local)
    assert is_vault_sealed(bytes([FORMAT_VAULT_TRANSIT]) + b"vault:v3:AAAA")
    assert sealed_key_version(bytes([FORMAT_VAULT_TRANSIT]) + b"vault:v3:AAAA") == 3


@pytest.mark.parametrize(
    "sealed",
    [b"", b"\x02", b"\x02vault:v0:AAAA", b"\x02vault:vx:AAAA", b"\x01vault:v1:AAAA", b"\x02v1:AA"],
)
def test_malformed_sealed_values_are_rejected(sealed: bytes) -> None:
    """Anything that is not marker + transit ciphertext raises KeyManagementError."""
    with pytest.raises(KeyManagementError):
        sealed_key_version(sealed)


def test_settings_validate_and_redact() -> None:
    """Settings fail closed on missing credentials and never print token or secret_id."""
    with pytest.raises(ConfigError):
        VaultSettings(addr="http://127.0.0.1:1")
    with pytest.raises(ConfigError):
        VaultSettings(addr="http://127.0.0.1:1", auth="approle", role_id="r")
    with pytest.raises(ConfigError):
        VaultSettings(addr="127.0.0.1:8200", token="t")
    tok = VaultSettings(addr="https://vault:8200", token="hvs.SECRETTOKEN")
    role = VaultSettings(addr="https://v", auth="approle", role_id="r", secret_id="SECRETID")
    assert "SECRETTOKEN" not in repr(tok)
    assert "SECRETID" not in repr(role)
    assert tok.verify is True
    assert replace(tok, ca_bundle="/etc/ca.pem").verify == "/etc/ca.pem"
    assert replace(tok, verify_tls=False).verify is False


def test_policy_hcl_names_only_the_broker_paths() -> None:
    """The policy grants the transit key's operations and KV reads under the prefix only."""
    hcl = broker_policy_hcl(transit_key="k1", kv_prefix="broker/")
    for path in (
        "transit/encrypt/k1",
        "transit/decrypt/k1",
        "transit/rewrap/k1",
        "transit/keys/k1",
        "secret/data/broker/*",
    ):
        assert f'path "{path}"' in hcl
    assert '"delete"' not in hcl
    assert '"create"' not in hcl


# --- transit KEK -----------------------------------------------------------------------------


async def test_seal_unseal_round_trip(kek: VaultTransitKEK) -> None:
    """A sealed value is marker + vault:v1 ciphertext and opens to the same bytes."""
    sealed = await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    assert sealed[0] == FORMAT_VAULT_TRANSIT
    assert sealed[1:].startswith(b"vault:v1:")
    assert PLAINTEXT not in sealed
    opened = await kek.unseal(sealed, resource=RESOURCE, version=1)
    assert opened.reveal() == PLAINTEXT
    assert (await kek.check()).derived


async def test_sealed_value_is_bound_to_resource_and_version(kek: VaultTransitKEK) -> None:
    """The transit context binds the value: another resource or version does not open it."""
    sealed = await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    for resource, version in ((RESOURCE + "x", 1), (RESOURCE, 2), ("default/tenant-b/key", 1)):
        with pytest.raises(KeyManagementError, match="failed authentication") as info:
            await kek.unseal(sealed, resource=resource, version=version)
        assert_no_secrets(info.value)
    tampered = sealed[:-4] + (b"AAAA" if sealed[-4:] != b"AAAA" else b"BBBB")
    with pytest.raises(KeyManagementError):
        await kek.unseal(tampered, resource=RESOURCE, version=1)


async def test_rotate_rewrap_and_retire_old_versions(kek: VaultTransitKEK) -> None:
    """Rotate + rewrap moves to the new version; old ciphertext opens until retired."""
    old = await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    assert sealed_key_version(old) == 1
    assert await kek.rotate_kek() == 2
    fresh = await kek.seal(SecretBytes(b"new"), resource=RESOURCE, version=2)
    assert sealed_key_version(fresh) == 2

    moved = await kek.rewrap(old, resource=RESOURCE, version=1)
    assert sealed_key_version(moved) == 2
    assert (await kek.unseal(moved, resource=RESOURCE, version=1)).reveal() == PLAINTEXT
    assert (await kek.unseal(old, resource=RESOURCE, version=1)).reveal() == PLAINTEXT

    await kek.set_min_decryption_version(2)
    versions = await kek.key_versions()
    assert (versions.latest_version, versions.min_decryption_version) == (2, 2)
    with pytest.raises(KeyManagementError, match=r"version 1.*min_decryption_version") as info:
        await kek.unseal(old, resource=RESOURCE, version=1)
    assert_no_secrets(info.value)
    with pytest.raises(KeyManagementError, match="min_decryption_version"):
        await kek.rewrap(old, resource=RESOURCE, version=1)
    assert (await kek.unseal(moved, resource=RESOURCE, version=1)).reveal() == PLAINTEXT


async def test_rewrap_needs_the_right_binding(kek: VaultTransitKEK) -> None:
    """Rewrap checks the context too, so it cannot move a value to another resource."""
    sealed = await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    with pytest.raises(KeyManagementError):
        await kek.rewrap(sealed, resource="default/other/key", version=1)


async def test_non_derived_key_fails_the_start_up_check(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """A transit key without derived=true cannot bind a context and is refused at start-up."""
    openbao.root_client().secrets.transit.create_key(name="plain-key", mount_point="transit")
    with pytest.raises(KeyManagementError, match="not derived"):
        await VaultTransitKEK(make_client(), key="plain-key").check()
    with pytest.raises(VaultRequestError, match="not found") as info:
        await VaultTransitKEK(make_client(), key="no-such-key").check()
    assert info.value.status == 503
    assert info.value.vault_status == 404


# --- KV v2 -----------------------------------------------------------------------------------


async def test_kv_read_latest_and_specific_version(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """KV v2 reads return the latest value or the requested version as SecretBytes."""
    assert openbao.write_kv("broker/app/db", {"password": "one"}) == 1
    assert openbao.write_kv("broker/app/db", {"password": "two", "bin": "AAEC"}) == 2
    kv = VaultKVSource(make_client())
    assert (await kv.read("app/db", field="password")).reveal() == b"two"
    assert (await kv.read("app/db", field="password", version=1)).reveal() == b"one"
    assert (await kv.read("app/db", field="bin", encoding="base64")).reveal() == b"\0\1\2"


async def test_kv_missing_path_version_or_field_is_not_found(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """Missing path, version, deleted version or field all raise ResourceNotFound."""
    openbao.write_kv("broker/app/api", {"token": "v1"})
    openbao.write_kv("broker/app/api", {"token": "v2"})
    openbao.root_client().secrets.kv.v2.delete_secret_versions(
        path="broker/app/api", versions=[1], mount_point="secret"
    )
    kv = VaultKVSource(make_client())
    with pytest.raises(ResourceNotFound):
        await kv.read("app/nope", field="token")
    with pytest.raises(ResourceNotFound):
        await kv.read("app/api", field="token", version=9)
    with pytest.raises(ResourceNotFound):
        await kv.read("app/api", field="token", version=1)
    with pytest.raises(ResourceNotFound):
        await kv.read("app/api", field="other")
    for bad in ("", "../x", "a//b", "a/./b"):
        with pytest.raises(InvalidResourcePath):
            await kv.read(bad, field="token")


# --- AppRole and the policy -----------------------------------------------------------------


def approle_settings(server: OpenBaoServer) -> VaultSettings:
    return replace(
        fast(server),
        auth="approle",
        token="",
        role_id=server.role_id,
        secret_id=server.secret_id,
        transit_key=server.transit_key,
    )


async def test_approle_login_and_least_privilege(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """AppRole auth works for the broker's paths and is refused everything else."""
    client = make_client(approle_settings(openbao))
    kek = VaultTransitKEK(client)
    sealed = await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    assert (await kek.unseal(sealed, resource=RESOURCE, version=1)).reveal() == PLAINTEXT
    assert sealed_key_version(await kek.rewrap(sealed, resource=RESOURCE, version=1)) >= 1
    assert (await kek.check()).derived

    openbao.write_kv("broker/svc", {"k": "v"})
    openbao.write_kv("elsewhere/svc", {"k": "v"})
    assert (await VaultKVSource(client).read("svc", field="k")).reveal() == b"v"
    with pytest.raises(BackendError, match="permission denied") as info:
        await VaultKVSource(client, prefix="elsewhere/").read("svc", field="k")
    assert_no_secrets(info.value, openbao.secret_id, openbao.root_token)

    other = VaultTransitKEK(client, key=openbao.new_transit_key())
    with pytest.raises(BackendError, match="permission denied") as info:
        await other.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    assert_no_secrets(info.value, openbao.secret_id)


async def test_approle_logs_in_again_when_the_token_is_revoked(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """A 403 for a revoked token triggers a re-login, also under concurrency; callers never see it."""
    settings = approle_settings(openbao)
    hc = hvac.Client(url=settings.addr, timeout=settings.timeout)
    kek = VaultTransitKEK(make_client(settings, client=hc))
    sealed = await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    first = hc.token
    openbao.root_client().auth.token.revoke(first)
    assert (await kek.unseal(sealed, resource=RESOURCE, version=1)).reveal() == PLAINTEXT
    assert hc.token != first

    second = hc.token
    openbao.root_client().auth.token.revoke(second)
    opened = await asyncio.gather(
        *(kek.unseal(sealed, resource=RESOURCE, version=1) for _ in range(8))
    )
    assert {o.reveal() for o in opened} == {PLAINTEXT}
    assert hc.token not in (first, second)


async def test_bad_credentials_are_refused_without_leaking_them(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """A wrong token or secret_id is a BackendError that names neither."""
    bad_token = "hvs.WRONG-TOKEN-" + "z" * 16
    kek = VaultTransitKEK(make_client(fast(openbao, token=bad_token)))
    with pytest.raises(BackendError, match="Vault transit encrypt") as info:
        await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    assert_no_secrets(info.value, bad_token)
    assert not info.value.retryable

    bad_secret = "00000000-dead-beef-0000-000000000000"
    settings = replace(approle_settings(openbao), secret_id=bad_secret)
    with pytest.raises(BackendError) as info:
        await VaultTransitKEK(make_client(settings)).seal(
            SecretBytes(PLAINTEXT), resource=RESOURCE, version=1
        )
    assert_no_secrets(info.value, bad_secret, openbao.role_id)


# --- outages (last: the restart test wipes the dev server's state) ---------------------------


async def test_paused_vault_fails_within_the_retry_bound_then_recovers(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """A hung Vault (SIGSTOP) gives BackendError within the bound; the same adapter recovers."""
    settings = fast(openbao)
    client = make_client(settings)
    await client.health()
    kek = VaultTransitKEK(client, key=openbao.new_transit_key())
    sealed = await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    with openbao.paused():
        started = time.monotonic()
        with pytest.raises(
            BackendError, match="Vault transit decrypt failed after 3 attempts"
        ) as info:
            await kek.unseal(sealed, resource=RESOURCE, version=1)
        elapsed = time.monotonic() - started
        with pytest.raises(BackendError, match="Vault health check"):
            await client.health()
    assert info.value.status == 503
    assert info.value.retryable
    assert elapsed < settings.deadline + 1.0
    assert_no_secrets(info.value, openbao.root_token)
    assert (await kek.unseal(sealed, resource=RESOURCE, version=1)).reveal() == PLAINTEXT


async def test_stopped_vault_fails_fast_and_recovers_after_restart(
    openbao: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """Connection refused is a BackendError; after a restart the same adapter works again."""
    settings = fast(openbao)
    kek = VaultTransitKEK(make_client(settings), key=openbao.transit_key)
    await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    openbao.stop()
    try:
        started = time.monotonic()
        with pytest.raises(BackendError, match="connection failed") as info:
            await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
        assert time.monotonic() - started < settings.deadline
        assert_no_secrets(info.value, openbao.root_token)
    finally:
        openbao.start()  # a fresh dev server: re-provisioned, earlier keys are gone
    sealed = await kek.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    assert (await kek.unseal(sealed, resource=RESOURCE, version=1)).reveal() == PLAINTEXT


# --- TLS (a second, HTTPS dev server) --------------------------------------------------------


async def test_tls_is_verified_by_default_and_trusts_a_ca_bundle(
    openbao_tls: OpenBaoServer,  # noqa: F811
    make_client: Callable[..., VaultClient],
) -> None:
    """Verification is on by default (untrusted CA: no retry, BackendError); a CA bundle fixes it."""
    settings = fast(openbao_tls)
    started = time.monotonic()
    with pytest.raises(BackendError, match="TLS error") as info:
        await VaultTransitKEK(make_client(settings)).check()
    assert not info.value.retryable
    assert not isinstance(info.value, VaultRequestError)
    assert time.monotonic() - started < settings.timeout * 2
    assert_no_secrets(info.value, openbao_tls.root_token)

    trusted = VaultTransitKEK(make_client(replace(settings, ca_bundle=openbao_tls.ca_path)))
    sealed = await trusted.seal(SecretBytes(PLAINTEXT), resource=RESOURCE, version=1)
    assert (await trusted.unseal(sealed, resource=RESOURCE, version=1)).reveal() == PLAINTEXT
