"""Client certificates mapped to admin roles, over a real TLS server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.api.app import create_app
from broker.config import Settings
from broker.wiring import open_services
from tests.fakes import FakeClock

NOW = datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _issue(cn: str, issuer: Issued | None, *, ca: bool = False, ip: str | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.cert.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(hours=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if ip is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
            critical=False,
        )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def _write(folder: Path, name: str, issued: Issued) -> tuple[Path, Path]:
    cert = folder / f"{name}.pem"
    key = folder / f"{name}.key"
    cert.write_bytes(issued.cert.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        issued.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@dataclass(frozen=True, slots=True)
class TLSServer:
    url: str
    certs: Path


@pytest.fixture
async def tls_server(
    tmp_path: Path, settings: Settings, clock: FakeClock
) -> AsyncIterator[TLSServer]:
    """The broker over TLS, verifying client certificates against a test CA when sent."""
    certs = tmp_path / "certs"
    certs.mkdir()
    ca = _issue("test-client-ca", None, ca=True)
    _write(certs, "ca", ca)
    _write(certs, "server", _issue("broker", ca, ip="127.0.0.1"))
    _write(certs, "ops", _issue("ops-team", ca))
    _write(certs, "stranger", _issue("stranger", ca))
    _write(certs, "rogue", _issue("ops-team", _issue("rogue-ca", None, ca=True)))
    mapped = replace(
        settings, admin=replace(settings.admin, client_cert_roles=(("CN=ops-team", "operator"),))
    )
    services = await open_services(mapped, clock=clock)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
    server_ctx.load_verify_locations(certs / "ca.pem")
    # Optional: token clients without a certificate still connect; a sent one must verify.
    server_ctx.verify_mode = ssl.CERT_OPTIONAL
    runner = web.AppRunner(create_app(mapped, services=services))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield TLSServer(url=f"https://127.0.0.1:{port}", certs=certs)
    finally:
        await runner.cleanup()
        await services.close()


def _client_ctx(server: TLSServer, name: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=server.certs / "ca.pem")
    if name is not None:
        ctx.load_cert_chain(server.certs / f"{name}.pem", server.certs / f"{name}.key")
    return ctx


async def _call(server: TLSServer, who: str | None, method: str, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, ssl=_client_ctx(server, who)) as resp,
    ):
        body = await resp.json() if resp.content_type == "application/json" else {}
        code = str(body.get("type", "")).rsplit("/", 1)[-1] if isinstance(body, dict) else ""
        return resp.status, code


async def test_mapped_certificate_gets_its_role(tls_server: TLSServer) -> None:
    """CN=ops-team is an operator: it reloads policies and cannot read keys."""
    assert (await _call(tls_server, "ops", "POST", "/v1/policies/reload"))[0] == 200
    assert await _call(tls_server, "ops", "GET", "/v1/keys") == (403, "Forbidden")


async def test_unmapped_or_missing_certificate_is_401(tls_server: TLSServer) -> None:
    """A verified certificate no rule maps, or none at all, is not an admin."""
    assert await _call(tls_server, "stranger", "GET", "/v1/keys") == (401, "AdminUnauthorized")
    assert await _call(tls_server, None, "POST", "/v1/policies/reload") == (
        401,
        "AdminUnauthorized",
    )


async def test_certificate_from_another_ca_is_refused(tls_server: TLSServer) -> None:
    """The same subject from an untrusted CA never reaches the broker (handshake fails)."""
    with pytest.raises(aiohttp.ClientError):
        await _call(tls_server, "rogue", "POST", "/v1/policies/reload")


async def test_certificate_actor_is_audited(tls_server: TLSServer, settings: Settings) -> None:
    """The audit record of a certificate-authenticated action names the certificate rule."""
    await _call(tls_server, "ops", "POST", "/v1/policies/reload")
    token = (Path(settings.server.data_dir) / "admin.token").read_text().strip()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            tls_server.url + "/v1/audit/export",
            ssl=_client_ctx(tls_server, None),
            headers={"Authorization": f"Bearer {token}"},
        ) as resp,
    ):
        text = await resp.text()
    assert '"actor":"cert:CN=ops-team"' in text.replace(" ", "")
