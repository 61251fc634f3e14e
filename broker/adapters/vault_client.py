"""Vault/OpenBao access for the key backends: settings, auth, retries, error mapping.

hvac is synchronous, so every call runs in a worker thread (``asyncio.to_thread``); the
backoff between attempts sleeps on the event loop, not in the thread. Only transport
failures (connection refused or reset, timeouts), 5xx and 429 are retried, a bounded number
of times; everything else is answered at once. Every hvac/requests exception leaves this
module as a ``BackendError`` (503) whose message names Vault and the operation and never
carries the token, the AppRole secret or any payload.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import hvac
import hvac.exceptions
import requests
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from broker.errors import BackendError, ConfigError

_T = TypeVar("_T")

# Re-login this long before an AppRole token's TTL runs out, so a call never races expiry.
_RENEW_MARGIN = 30.0
_MAX_REASON = 200

BROKER_POLICY_TEMPLATE = """\
# Attested key broker: the least it needs from Vault/OpenBao.

# Seal and open stored values (derived key: the context binds resource and version).
path "{transit}/encrypt/{key}" {{
  capabilities = ["update"]
}}
path "{transit}/decrypt/{key}" {{
  capabilities = ["update"]
}}
# Rotation: move ciphertext to the newest key version without seeing plaintext.
path "{transit}/rewrap/{key}" {{
  capabilities = ["update"]
}}
# Read the key's versions (start-up check, rotation status).
path "{transit}/keys/{key}" {{
  capabilities = ["read"]
}}
# Rotation workflow (`broker keys rotate`); drop these two for a release-only broker.
path "{transit}/keys/{key}/rotate" {{
  capabilities = ["update"]
}}
path "{transit}/keys/{key}/config" {{
  capabilities = ["update"]
}}
# Secrets released from KV v2, read-only and only under the broker's prefix.
path "{kv}/data/{prefix}*" {{
  capabilities = ["read"]
}}
"""


def broker_policy_hcl(
    *,
    transit_mount: str = "transit",
    transit_key: str = "broker-kek",
    kv_mount: str = "secret",
    kv_prefix: str = "broker/",
) -> str:
    """The Vault policy (HCL) to attach to the broker's token or AppRole."""
    return BROKER_POLICY_TEMPLATE.format(
        transit=transit_mount, key=transit_key, kv=kv_mount, prefix=kv_prefix
    )


@dataclass(frozen=True, slots=True)
class VaultSettings:
    """How to reach Vault. TLS verification is on unless ``verify_tls`` is set false."""

    addr: str
    auth: Literal["token", "approle"] = "token"
    token: str = field(default="", repr=False)
    role_id: str = ""
    secret_id: str = field(default="", repr=False)
    approle_mount: str = "approle"
    transit_mount: str = "transit"
    transit_key: str = "broker-kek"
    kv_mount: str = "secret"
    # KV reads are confined under this prefix (matching the policy above).
    kv_prefix: str = "broker/"
    # A CA bundle path for a private CA; empty: the system trust store.
    ca_bundle: str = ""
    verify_tls: bool = True
    namespace: str = ""
    # Seconds for one HTTP request (connect and read).
    timeout: float = 5.0
    # Retries after the first attempt, for transport errors, 5xx and 429 only.
    max_retries: int = 3
    backoff_initial: float = 0.2
    backoff_max: float = 2.0

    def __post_init__(self) -> None:
        if not self.addr.startswith(("https://", "http://")):
            raise ConfigError("vault.addr: must be an http(s):// URL")
        if self.auth == "token" and not self.token:
            raise ConfigError("vault.token: required when vault.auth is 'token'")
        if self.auth == "approle" and not (self.role_id and self.secret_id):
            raise ConfigError("vault.role_id and vault.secret_id: required for AppRole auth")
        if self.auth not in ("token", "approle"):
            raise ConfigError("vault.auth: must be 'token' or 'approle'")
        if self.timeout <= 0 or self.max_retries < 0:
            raise ConfigError("vault.timeout must be positive and vault.max_retries >= 0")

    @property
    def verify(self) -> bool | str:
        """The ``requests`` ``verify`` argument."""
        if not self.verify_tls:
            return False
        return self.ca_bundle or True

    @property
    def deadline(self) -> float:
        """An upper bound on one operation's wall time, retries and backoff included."""
        attempts = self.max_retries + 1
        return attempts * self.timeout + self.max_retries * self.backoff_max + self.timeout


class VaultRequestError(BackendError):
    """Vault answered and refused the request (4xx other than 429): not retried.

    ``vault_status`` is the HTTP status Vault gave (0 if unknown); callers that expect a
    rejection (a decrypt that fails authentication) turn it into their own error.
    """

    def __init__(self, message: str, *, vault_status: int, reason: str) -> None:
        super().__init__(message, retryable=False)
        self.vault_status = vault_status
        self.reason = reason


_STATUS = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.UnsupportedOperation: 405,
    hvac.exceptions.PreconditionFailed: 412,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}


def _status_of(exc: BaseException) -> int:
    for cls, status in _STATUS.items():
        if isinstance(exc, cls):
            return status
    return 0


def _retryable(exc: BaseException) -> bool:
    # An untrusted certificate does not fix itself (requests files SSLError under
    # ConnectionError, so it is excluded first).
    if isinstance(exc, requests.exceptions.SSLError):
        return False
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    status = _status_of(exc)
    return status == 429 or status >= 500


class VaultClient:
    """An hvac client shared by the transit and KV adapters of one broker process."""

    def __init__(self, settings: VaultSettings, *, client: Any = None) -> None:
        self._settings = settings
        self._client: Any = client or hvac.Client(
            url=settings.addr,
            verify=settings.verify,
            timeout=settings.timeout,
            namespace=settings.namespace or None,
        )
        self._lock = threading.Lock()
        # monotonic() after which the AppRole token must be replaced; token auth: never.
        self._token_expires = 0.0 if settings.auth == "approle" else float("inf")
        if settings.auth == "token":
            self._client.token = settings.token

    @property
    def settings(self) -> VaultSettings:
        return self._settings

    async def call(self, operation: str, fn: Callable[[Any], _T]) -> _T:
        """Run ``fn(hvac_client)`` off the loop with bounded retries; see the module doc.

        Raises:
            VaultRequestError: Vault refused the request (4xx other than 429).
            BackendError: Vault unreachable, timing out or failing (5xx/429) after retries.
        """
        s = self._settings
        attempts = 0
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(_retryable),
                stop=stop_after_attempt(s.max_retries + 1) | stop_after_delay(s.deadline),
                wait=wait_exponential(multiplier=s.backoff_initial, max=s.backoff_max),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    return await asyncio.to_thread(self._run, fn)
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            raise _to_backend_error(operation, exc, attempts) from None
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True always raises

    def _run(self, fn: Callable[[Any], _T]) -> _T:
        """One attempt, in a worker thread; logs in again once if the token was refused."""
        self._ensure_login(stale=None)
        used = self._client.token
        try:
            return fn(self._client)
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            # Vault answers an expired or revoked token with 403; a policy refusal looks
            # the same, so a token-auth client (nothing to renew) re-raises at once.
            if self._settings.auth != "approle":
                raise
        self._ensure_login(stale=used)
        return fn(self._client)

    def _ensure_login(self, *, stale: str | None) -> None:
        """Log in if the token is due, or if ``stale`` is still the current token."""
        if self._settings.auth != "approle":
            return
        with self._lock:
            if stale is None and time.monotonic() < self._token_expires:
                return
            if stale is not None and self._client.token != stale:
                return  # another request already replaced the refused token
            s = self._settings
            resp = self._client.auth.approle.login(
                role_id=s.role_id,
                secret_id=s.secret_id,
                use_token=True,
                mount_point=s.approle_mount,
            )
            auth = resp.get("auth") if isinstance(resp, dict) else None
            ttl = float((auth or {}).get("lease_duration") or 0)
            # A zero TTL means the token does not expire (root-like); never re-login for time.
            self._token_expires = (
                time.monotonic() + max(ttl - _RENEW_MARGIN, ttl / 2) if ttl else float("inf")
            )

    def close(self) -> None:
        """Close the pooled HTTP connections (the broker's shutdown hook)."""
        self._client.adapter.close()

    async def health(self) -> None:
        """Raises BackendError unless Vault is initialised, unsealed and active."""

        def check(client: Any) -> None:
            # ``read_health_status`` returns the JSON body when healthy and a bare Response
            # (instead of raising) for the sealed/uninitialised/standby status codes.
            resp = client.sys.read_health_status(method="GET", standby_ok=True)
            if not isinstance(resp, dict) or resp.get("sealed") or not resp.get("initialized"):
                raise hvac.exceptions.VaultDown("sealed, uninitialised or not active")

        await self.call("health check", check)


def _reason(exc: BaseException) -> str:
    """A short, secret-free description of why a call failed."""
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (certificate not trusted?)"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection failed"
    if isinstance(exc, hvac.exceptions.VaultError):
        # Vault's own error strings name the problem ("permission denied", "encryption key
        # not found", "ciphertext or signature version is disallowed by policy (too old)");
        # they never echo tokens or payloads, and are cut short anyway.
        errors = exc.errors if isinstance(exc.errors, list) else []
        fallback = "not found" if _status_of(exc) == 404 else type(exc).__name__
        text = "; ".join(str(e) for e in errors) or fallback
        return text[:_MAX_REASON]
    return type(exc).__name__


def _to_backend_error(operation: str, exc: BaseException, attempts: int) -> BackendError:
    status = _status_of(exc)
    reason = _reason(exc)
    suffix = f" (HTTP {status})" if status else ""
    if _retryable(exc):
        where = f" after {attempts} attempt{'s' if attempts != 1 else ''}"
        return BackendError(f"Vault {operation} failed{where}: {reason}{suffix}")
    if not isinstance(exc, hvac.exceptions.VaultError):
        # Vault never answered (TLS failure): not a refusal, but retrying will not help.
        return BackendError(f"Vault {operation} failed: {reason}", retryable=False)
    return VaultRequestError(
        f"Vault {operation} refused: {reason}{suffix}", vault_status=status, reason=reason
    )
