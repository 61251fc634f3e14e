"""The enclave-side client: auth -> attest -> resource, then unwrap.

    async with BrokerClient("http://127.0.0.1:8300") as client:
        released = await client.get_resource("default/key/demo", SampleProvider())

It depends only on the wire format, the binding digest and the unwrap half of
the key layer, so it stays small enough to vendor.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.audit_key import AuditKeyInvalid, trusted_keys
from broker.audit.receipt import Receipt, ReceiptError, decode_receipt_header, verify_receipt
from broker.client.providers import EvidenceProvider
from broker.client.tls import client_context
from broker.errors import BackendError, BrokerError, ConfigError, MalformedRequest, TokenInvalid
from broker.evidence.binding import expectation_for
from broker.keys.material import SecretBytes
from broker.keys.unwrap import ClientKeyPair, unwrap
from broker.keys.wrap import WrapContext

PROTOCOL_VERSION = "0.4.0"


class RemoteError(BrokerError):
    """The broker answered with an error body."""

    def __init__(self, status: int, code: str, detail: str, reasons: list[str]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.reasons = tuple(reasons)


@dataclass(frozen=True, slots=True)
class Released:
    resource: str
    version: int
    alg: str
    value: SecretBytes = field(repr=False)
    # The broker's signed promise that this release is in its audit log (verified).
    receipt: Receipt | None = None


def _token_jti(token: str) -> str:
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return str(data["jti"])
    except (IndexError, KeyError, ValueError, binascii.Error):
        raise TokenInvalid("broker returned a malformed token") from None


RECEIPT_HEADER = "X-Audit-Receipt"


def _tls_reason(exc: aiohttp.ClientError) -> str:
    cause = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None)
    if isinstance(cause, ssl.SSLCertVerificationError):
        # Set by OpenSSL's own checks; a pin mismatch carries its reason in args.
        message = getattr(cause, "verify_message", None)
        return str(message or (cause.args[0] if cause.args else "certificate refused"))
    if isinstance(cause, ssl.SSLError):
        return cause.reason or type(cause).__name__
    return type(exc).__name__


class BrokerClient:
    """KBS client. Release receipts are verified against the broker's audit keys.

    ``trusted_audit_keys`` pins the audit verifier keys (C2SP text, old and
    new); then every release must carry a receipt signed by one of them.
    Without it the keys are fetched once from ``GET /v1/audit/keys`` of the
    same broker, which checks the receipt's integrity but trusts that broker
    for the keys; a release without a receipt is then accepted with
    ``receipt=None`` (an older broker).

    Over ``https://`` the broker's certificate is verified against the system
    trust store, or only against ``ca_file``; ``pin_sha256`` adds SPKI pins
    checked during the handshake (see ``broker.client.tls``); ``cert_file``
    and ``key_file`` present a client certificate to a broker that asks for one.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        wrap: str = "p256",
        trusted_audit_keys: Iterable[str] | None = None,
        ca_file: str | None = None,
        pin_sha256: Sequence[str] = (),
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._ssl: ssl.SSLContext | None = None
        if ca_file or pin_sha256 or cert_file:
            if not self._url.startswith("https://"):
                # Silently sending evidence in the clear past a pin would be worse than failing.
                raise ConfigError("ca-file, pin-sha256 and cert-file need an https:// broker URL")
            self._ssl = client_context(
                ca_file=ca_file, pin_sha256=pin_sha256, cert_file=cert_file, key_file=key_file
            )
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._wrap = wrap
        self._http: aiohttp.ClientSession | None = None
        self.token: str | None = None
        self._pinned = trusted_audit_keys is not None
        self._audit_keys: Mapping[str, Ed25519PublicKey] | None = (
            None if trusted_audit_keys is None else trusted_keys(trusted_audit_keys)
        )

    async def __aenter__(self) -> BrokerClient:
        # unsafe=True: the jar must keep cookies of an IP-address host (127.0.0.1).
        self._http = aiohttp.ClientSession(
            timeout=self._timeout,
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True),
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("use BrokerClient as an async context manager")
        return self._http

    async def _call(
        self, method: str, path: str, **kwargs: Any
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        try:
            async with self.http.request(method, self._url + path, **kwargs) as resp:
                body = await resp.read()
        except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as exc:
            # Not retryable: an untrusted or unpinned certificate does not fix itself.
            raise BackendError(
                f"TLS verification of the broker at {self._url} failed: {_tls_reason(exc)}",
                retryable=False,
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError(
                f"cannot reach the broker at {self._url}: {type(exc).__name__}"
            ) from None
        if resp.status >= 400:
            try:
                err = json.loads(body)
                code = str(err.get("type", "")).rsplit("/", 1)[-1]
                raise RemoteError(
                    resp.status, code, str(err.get("detail", "")), list(err.get("reasons") or [])
                )
            except (ValueError, AttributeError):
                raise RemoteError(
                    resp.status, "HTTPError", body[:200].decode("utf-8", "replace"), []
                ) from None
        return resp, body

    async def attest(self, provider: EvidenceProvider) -> ClientKeyPair:
        """Runs auth + attest; keeps the token; returns the ephemeral key pair."""
        _, body = await self._call(
            "POST",
            "/kbs/v0/auth",
            json={"version": PROTOCOL_VERSION, "tee": provider.tee, "extra-params": ""},
        )
        try:
            nonce = str(json.loads(body)["nonce"])
        except (ValueError, KeyError, TypeError):
            raise MalformedRequest("broker sent a malformed challenge") from None
        keypair = ClientKeyPair.generate(self._wrap)  # type: ignore[arg-type]
        pubkey = keypair.public_jwk()
        expect = expectation_for(nonce, pubkey, "")
        evidence = await provider.evidence(expect.report_data)
        _, body = await self._call(
            "POST",
            "/kbs/v0/attest",
            json={
                "runtime-data": {"nonce": nonce, "tee-pubkey": pubkey},
                "tee-evidence": {"primary_evidence": evidence, "additional_evidence": ""},
            },
        )
        try:
            self.token = str(json.loads(body)["token"])
        except (ValueError, KeyError, TypeError):
            raise MalformedRequest("broker sent a malformed attestation response") from None
        return keypair

    async def fetch(self, resource: str, keypair: ClientKeyPair) -> Released:
        """GET one resource with the current token and unwrap it."""
        if self.token is None:
            raise TokenInvalid("attest first")
        resp, body = await self._call(
            "GET",
            f"/kbs/v0/resource/{resource}",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        version = int(resp.headers.get("X-Key-Version", "0"))
        envelope = json.loads(body)
        context = WrapContext(resource=resource, version=version, jti=_token_jti(self.token))
        value = unwrap(envelope, keypair, context=context)
        receipt = await self._receipt(resp.headers.get(RECEIPT_HEADER))
        return Released(
            resource, version, resp.headers.get("X-Wrap-Alg", ""), SecretBytes(value), receipt
        )

    async def audit_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """The trusted audit keys: pinned, or fetched once from the broker.

        Raises:
            AuditKeyInvalid: the broker published a malformed key.
            BackendError, RemoteError: the keys could not be fetched.
        """
        if self._audit_keys is None:
            _, body = await self._call("GET", "/v1/audit/keys")
            try:
                texts = [str(k["verifier_key"]) for k in json.loads(body)["keys"]]
            except (ValueError, KeyError, TypeError):
                raise MalformedRequest("broker sent a malformed audit key list") from None
            self._audit_keys = trusted_keys(texts)
        return self._audit_keys

    async def _receipt(self, header: str | None) -> Receipt | None:
        """Raises: ReceiptError (missing when pinned, malformed, or not signed by a trusted key)."""
        if header is None:
            if self._pinned:
                raise ReceiptError("the release carries no audit receipt")
            return None
        receipt = decode_receipt_header(header)
        try:
            keys = await self.audit_keys()
        except AuditKeyInvalid as exc:
            raise ReceiptError(f"cannot verify the receipt: {exc.message}") from None
        verify_receipt(receipt, keys)
        return receipt

    async def get_resource(self, resource: str, provider: EvidenceProvider) -> Released:
        keypair = await self.attest(provider)
        return await self.fetch(resource, keypair)
