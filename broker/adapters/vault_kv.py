"""Secrets released straight from Vault/OpenBao KV v2, read at release time.

Reads are confined under the configured prefix (``VaultSettings.kv_prefix``), the same
prefix the broker's Vault policy grants, so a resource path can never name another
team's secret. A missing path, version or field is ``ResourceNotFound``; a deleted or
destroyed version counts as missing.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from broker.adapters.vault_client import VaultClient, VaultRequestError
from broker.errors import InvalidResourcePath, KeyManagementError, ResourceNotFound
from broker.keys.material import SecretBytes

_NOT_FOUND = 404


class VaultKVSource:
    def __init__(self, client: VaultClient, *, mount: str = "", prefix: str | None = None) -> None:
        self._client = client
        self._mount = mount or client.settings.kv_mount
        self._prefix = client.settings.kv_prefix if prefix is None else prefix

    async def read(
        self,
        path: str,
        *,
        field: str,
        version: int | None = None,
        encoding: Literal["utf-8", "base64"] = "utf-8",
    ) -> SecretBytes:
        """The value of ``field`` in the secret at ``<prefix><path>`` (latest or ``version``).

        Raises:
            InvalidResourcePath: ``path`` is empty or tries to leave the prefix.
            ResourceNotFound: no such path, version (or it was deleted) or field.
            BackendError: Vault unreachable or refusing (for example, the policy).
        """
        full = self._prefix + _checked(path)
        if version is not None and version < 1:
            raise ResourceNotFound(f"secret {path!r} has no version {version}")
        try:
            resp = await self._client.call(
                "KV read",
                lambda c: c.secrets.kv.v2.read_secret_version(
                    path=full,
                    version=version,
                    mount_point=self._mount,
                    raise_on_deleted_version=True,
                ),
            )
        except VaultRequestError as exc:
            if exc.vault_status == _NOT_FOUND:
                which = f" version {version}" if version is not None else ""
                raise ResourceNotFound(f"secret {path!r}{which} not found in Vault KV") from None
            raise
        value = _field(resp, field, path)
        return _decode(value, encoding, path, field)


def _checked(path: str) -> str:
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") for p in parts):
        raise InvalidResourcePath("KV path must be non-empty segments without '.' or '..'")
    return path


def _field(resp: Any, field: str, path: str) -> Any:
    outer = resp.get("data") if isinstance(resp, dict) else None
    inner = outer.get("data") if isinstance(outer, dict) else None
    if not isinstance(inner, dict):
        # KV v2 answers a deleted version with data: null when not told to raise.
        raise ResourceNotFound(f"secret {path!r} has no data in Vault KV")
    if field not in inner:
        raise ResourceNotFound(f"secret {path!r} has no field {field!r}")
    return inner[field]


def _decode(value: Any, encoding: str, path: str, field: str) -> SecretBytes:
    if not isinstance(value, str):
        raise KeyManagementError(f"secret {path!r} field {field!r} is not a string")
    if encoding == "utf-8":
        return SecretBytes(value.encode("utf-8"))
    try:
        return SecretBytes(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        raise KeyManagementError(f"secret {path!r} field {field!r} is not valid base64") from None


__all__ = ["VaultKVSource"]
