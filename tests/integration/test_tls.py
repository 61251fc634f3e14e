"""A real TLS listener on 127.0.0.1: CA trust, pins, TLS versions, client certificates."""

from __future__ import annotations

import asyncio
import base64
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.serialization import Encoding

from broker.api.app import create_app
from broker.api.tls import server_context
from broker.client import BrokerClient, SampleProvider
from broker.client.tls import client_context, spki_sha256
from broker.config import Settings, TLSSettings
from broker.errors import BackendError
from broker.wiring import Services
from tests.tls_certs import Issued, issue, make_ca

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    ca = make_ca(tmp_path / "pki", "broker-ca")
    other = make_ca(tmp_path / "pki", "other-ca")
    clients = make_ca(tmp_path / "pki", "client-ca")
    return {
        "ca": ca,
        "other": other,
        "clients": clients,
        "server": issue(ca, tmp_path / "pki", "server"),
        "impostor": issue(other, tmp_path / "pki", "impostor"),
        "client": issue(clients, tmp_path / "pki", "enclave", server=False),
        "stranger": issue(other, tmp_path / "pki", "stranger", server=False),
    }


@pytest.fixture
async def serve(settings: Settings, services: Services) -> AsyncIterator[Serve]:
    runners: list[web.AppRunner] = []

    async def start(leaf: Issued, **tls: str) -> str:
        tls_settings = TLSSettings(
            cert_file=str(leaf.cert_file), key_file=str(leaf.key_file), **tls
        )
        app = create_app(replace(settings, tls=tls_settings), services=services)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(tls_settings))
        await site.start()
        port = runner.addresses[0][1]
        return f"https://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


def _pin(leaf: Issued) -> str:
    return base64.b64encode(spki_sha256(leaf.cert.public_bytes(Encoding.DER))).decode()


async def test_attest_over_tls_with_the_right_ca(serve: Serve, pki: dict[str, Any]) -> None:
    """The client trusting the broker's CA completes auth + attest over TLS."""
    url = await serve(pki["server"])
    async with BrokerClient(url, ca_file=str(pki["ca"].cert_file)) as client:
        await client.attest(SampleProvider())
        assert client.token


async def test_other_ca_is_refused(serve: Serve, pki: dict[str, Any]) -> None:
    """A certificate from another CA fails verification, and is not retryable."""
    url = await serve(pki["impostor"])
    async with BrokerClient(url, ca_file=str(pki["ca"].cert_file)) as client:
        with pytest.raises(BackendError, match="TLS verification") as info:
            await client.attest(SampleProvider())
    assert info.value.retryable is False


async def test_pins(serve: Serve, pki: dict[str, Any]) -> None:
    """The right SPKI pin passes (alone or beside an old one); a wrong pin fails the handshake."""
    url = await serve(pki["server"])
    ca = str(pki["ca"].cert_file)
    async with BrokerClient(
        url, ca_file=ca, pin_sha256=[_pin(pki["impostor"]), _pin(pki["server"])]
    ) as client:
        await client.attest(SampleProvider())
    async with BrokerClient(url, ca_file=ca, pin_sha256=[_pin(pki["impostor"])]) as client:
        with pytest.raises(BackendError, match="pinned"):
            await client.attest(SampleProvider())


async def test_wrong_pin_sends_nothing(
    serve: Serve, pki: dict[str, Any], services: Services
) -> None:
    """A pin mismatch stops the connection inside the handshake: no request reaches the broker."""
    url = await serve(pki["server"])
    before = [r async for r in services.audit.iter_records()]
    async with BrokerClient(
        url, ca_file=str(pki["ca"].cert_file), pin_sha256=[_pin(pki["impostor"])]
    ) as client:
        with pytest.raises(BackendError):
            await client.attest(SampleProvider())
    after = [r async for r in services.audit.iter_records()]
    assert len(after) == len(before)


async def _handshake(url: str, ctx: ssl.SSLContext) -> None:
    host, port = url.removeprefix("https://").split(":")
    _, writer = await asyncio.open_connection(host, int(port), ssl=ctx, server_hostname="localhost")
    writer.close()
    await writer.wait_closed()


def _legacy(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Lets ``ctx`` speak TLS 1.0/1.1 (what an old or downgrading peer would offer)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = ssl.TLSVersion.TLSv1
    return ctx


async def test_tls11_is_refused(serve: Serve, pki: dict[str, Any]) -> None:
    """A TLS 1.1 client is refused by the broker, though it connects to a server allowing 1.1."""
    url = await serve(pki["server"])
    old = _legacy(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    old.load_verify_locations(cafile=str(pki["ca"].cert_file))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(url, old)

    # Control: the same client does speak TLS 1.1 to a server that permits it.
    permissive = _legacy(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    permissive.load_cert_chain(pki["server"].cert_file, pki["server"].key_file)

    async def hang_up(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    control = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=permissive)
    try:
        port = control.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=old, server_hostname="localhost"
        )
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.1"
        writer.close()
    finally:
        control.close()
        await control.wait_closed()

    tls12 = client_context(ca_file=str(pki["ca"].cert_file))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    await _handshake(url, tls12)


async def test_min_version_13_refuses_tls12(serve: Serve, pki: dict[str, Any]) -> None:
    """With min_version 1.3 a TLS 1.2-only client is refused."""
    url = await serve(pki["server"], min_version="1.3")
    tls12 = client_context(ca_file=str(pki["ca"].cert_file))
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _handshake(url, tls12)
    await _handshake(url, client_context(ca_file=str(pki["ca"].cert_file)))


async def _healthz(url: str, ctx: ssl.SSLContext) -> int:
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http,
        http.get(url + "/healthz") as resp,
    ):
        return resp.status


async def test_client_certificate_required(serve: Serve, pki: dict[str, Any]) -> None:
    """With client_ca_file set, no certificate or one from another CA gets no HTTP answer."""
    url = await serve(pki["server"], client_ca_file=str(pki["clients"].cert_file))
    ca = str(pki["ca"].cert_file)
    good: Issued = pki["client"]
    stranger: Issued = pki["stranger"]
    assert (
        await _healthz(
            url,
            client_context(ca_file=ca, cert_file=str(good.cert_file), key_file=str(good.key_file)),
        )
        == 200
    )
    for ctx in (
        client_context(ca_file=ca),
        client_context(
            ca_file=ca, cert_file=str(stranger.cert_file), key_file=str(stranger.key_file)
        ),
    ):
        with pytest.raises(aiohttp.ClientError):
            await _healthz(url, ctx)
    async with BrokerClient(
        url, ca_file=ca, cert_file=str(good.cert_file), key_file=str(good.key_file)
    ) as client:
        await client.attest(SampleProvider())


async def test_session_cookie_is_secure_under_tls(
    serve: Serve, pki: dict[str, Any], client: Any
) -> None:
    """The kbs-session-id cookie carries Secure over TLS and not over plain HTTP."""
    url = await serve(pki["server"])
    body = {"version": "0.4.0", "tee": "sample", "extra-params": ""}
    ctx = client_context(ca_file=str(pki["ca"].cert_file))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http,
        http.post(url + "/kbs/v0/auth", json=body) as resp,
    ):
        assert resp.status == 200
        cookie = resp.headers["Set-Cookie"]
    assert "kbs-session-id=" in cookie and "Secure" in cookie and "HttpOnly" in cookie
    plain = await client.post("/kbs/v0/auth", json=body)
    assert plain.status == 200
    assert "Secure" not in plain.headers["Set-Cookie"]
