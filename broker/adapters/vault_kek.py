"""Vault/OpenBao transit as the broker's KEK (the ``KEKService`` port).

Sealed layout (a one-byte marker, so the store tells local- and Vault-sealed values apart)::

    0x02 | ASCII transit ciphertext "vault:v<N>:<base64>"

The key must be a *derived* transit key (``derived=true``, type ``aes256-gcm96``): transit
accepts a ``context`` only for derived keys, and derives a per-context key from it. The
context is the same resource-and-version string the local KEK uses as AAD
(``broker.keys.sealing.aad_for``), so a value sealed for one resource or version does not
open for another. Vault keeps every key version; ``rotate_kek`` adds one, ``rewrap`` moves
a sealed value to the newest without the broker seeing plaintext, and raising
``min_decryption_version`` retires the old versions for good.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Literal

from broker.adapters.vault_client import VaultClient, VaultRequestError
from broker.errors import BackendError, KeyManagementError
from broker.keys.material import SecretBytes
from broker.keys.sealing import FORMAT_V1, aad_for

# Must differ from the local format's marker: it is what tells the two apart.
FORMAT_VAULT_TRANSIT = FORMAT_V1 + 1

_CIPHERTEXT = re.compile(rb"vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/]+={0,2}")
# Vault's decrypt errors, by cause (transit answers both with HTTP 400).
_TOO_OLD = ("disallowed by policy", "too old")
_AUTH_FAILED = ("message authentication failed", "invalid ciphertext")


@dataclass(frozen=True, slots=True)
class TransitKeyVersions:
    """What Vault reports about the KEK's versions."""

    latest_version: int
    min_decryption_version: int
    min_encryption_version: int
    derived: bool


def is_vault_sealed(sealed: bytes) -> bool:
    return bool(sealed) and sealed[0] == FORMAT_VAULT_TRANSIT


def sealed_key_version(sealed: bytes) -> int:
    """The transit key version a sealed value was made with (for rotation scans)."""
    return int(_split(sealed)[1])


def _split(sealed: bytes) -> tuple[str, int]:
    body = sealed[1:]
    match = _CIPHERTEXT.fullmatch(body) if is_vault_sealed(sealed) else None
    if match is None:
        raise KeyManagementError("sealed value is not a Vault transit ciphertext")
    return body.decode("ascii"), int(match.group(1))


def _context(resource: str, version: int) -> str:
    return base64.b64encode(aad_for(resource, version)).decode("ascii")


def _pack(ciphertext: Any) -> bytes:
    raw = ciphertext.encode("ascii") if isinstance(ciphertext, str) else b""
    if _CIPHERTEXT.fullmatch(raw) is None:
        raise BackendError("Vault transit returned an unexpected ciphertext format")
    return bytes([FORMAT_VAULT_TRANSIT]) + raw


class VaultTransitKEK:
    """``KEKService`` over a derived transit key; see the module doc for the format."""

    def __init__(self, client: VaultClient, *, mount: str = "", key: str = "") -> None:
        self._client = client
        self._mount = mount or client.settings.transit_mount
        self._key = key or client.settings.transit_key

    @property
    def key_name(self) -> str:
        return self._key

    async def seal(self, plaintext: SecretBytes, *, resource: str, version: int) -> bytes:
        encoded = base64.b64encode(plaintext.reveal()).decode("ascii")
        resp = await self._client.call(
            "transit encrypt",
            lambda c: c.secrets.transit.encrypt_data(
                name=self._key,
                plaintext=encoded,
                context=_context(resource, version),
                mount_point=self._mount,
            ),
        )
        return _pack(_data(resp).get("ciphertext"))

    async def unseal(self, sealed: bytes, *, resource: str, version: int) -> SecretBytes:
        """Raises KeyManagementError if the value does not open (wrong binding, retired
        key version, tampered), BackendError if Vault is unreachable or refuses."""
        resp = await self._open_sealed("decrypt", sealed, resource, version)
        try:
            return SecretBytes(base64.b64decode(_data(resp).get("plaintext", ""), validate=True))
        except (binascii.Error, TypeError, ValueError):
            raise BackendError("Vault transit returned an undecodable plaintext") from None

    async def rewrap(self, sealed: bytes, *, resource: str, version: int) -> bytes:
        """The same value sealed under the newest key version; Vault never returns plaintext."""
        resp = await self._open_sealed("rewrap", sealed, resource, version)
        return _pack(_data(resp).get("ciphertext"))

    async def _open_sealed(
        self, op: Literal["decrypt", "rewrap"], sealed: bytes, resource: str, version: int
    ) -> Any:
        """Transit ``decrypt`` or ``rewrap`` of a stored value, bound to its resource and version.

        Raises:
            KeyManagementError: the value does not open; BackendError: Vault failed.
        """
        ciphertext, key_version = _split(sealed)
        try:
            return await self._client.call(
                f"transit {op}",
                lambda c: getattr(c.secrets.transit, f"{op}_data")(
                    name=self._key,
                    ciphertext=ciphertext,
                    context=_context(resource, version),
                    mount_point=self._mount,
                ),
            )
        except VaultRequestError as exc:
            raise _decrypt_error(exc, key_version) from None

    async def rotate_kek(self) -> int:
        """Add a key version; new seals use it. Returns the new latest version."""
        await self._client.call(
            "transit rotate",
            lambda c: c.secrets.transit.rotate_key(name=self._key, mount_point=self._mount),
        )
        return (await self.key_versions()).latest_version

    async def set_min_decryption_version(self, version: int) -> None:
        """Retire every key version below ``version``: values sealed under them stop opening."""
        if version < 1:
            raise KeyManagementError("min_decryption_version must be at least 1")
        await self._client.call(
            "transit key config",
            lambda c: c.secrets.transit.update_key_configuration(
                name=self._key, min_decryption_version=version, mount_point=self._mount
            ),
        )

    async def key_versions(self) -> TransitKeyVersions:
        resp = await self._client.call(
            "transit read key",
            lambda c: c.secrets.transit.read_key(name=self._key, mount_point=self._mount),
        )
        data = _data(resp)
        try:
            return TransitKeyVersions(
                latest_version=int(data["latest_version"]),
                min_decryption_version=int(data["min_decryption_version"]),
                min_encryption_version=int(data.get("min_encryption_version") or 0),
                derived=bool(data.get("derived")),
            )
        except (KeyError, TypeError, ValueError):
            raise BackendError("Vault transit read key returned an unexpected body") from None

    async def check(self) -> TransitKeyVersions:
        """Start-up check: the key exists, is readable and is derived (context binding)."""
        versions = await self.key_versions()
        if not versions.derived:
            raise KeyManagementError(
                f"Vault transit key {self._key!r} is not derived: create it with derived=true"
            )
        return versions


def _data(resp: Any) -> dict[str, Any]:
    data = resp.get("data") if isinstance(resp, dict) else None
    if not isinstance(data, dict):
        raise BackendError("Vault returned a response without data")
    return data


def _decrypt_error(exc: VaultRequestError, key_version: int) -> BackendError | KeyManagementError:
    reason = exc.reason.lower()
    if any(marker in reason for marker in _TOO_OLD):
        return KeyManagementError(
            f"sealed value uses Vault transit key version {key_version}, "
            "which is below the key's min_decryption_version (retired)"
        )
    if any(marker in reason for marker in _AUTH_FAILED):
        return KeyManagementError("sealed value failed authentication in Vault transit")
    return exc
