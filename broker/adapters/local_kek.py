"""The local KEK: stored values sealed under the root key in the data dir."""

from __future__ import annotations

from broker.keys.material import SecretBytes
from broker.keys.sealing import RootKey, seal, unseal


class LocalKEK:
    def __init__(self, root: RootKey) -> None:
        self._root = root

    async def seal(self, plaintext: SecretBytes, *, resource: str, version: int) -> bytes:
        return seal(self._root, plaintext, resource=resource, version=version)

    async def unseal(self, sealed: bytes, *, resource: str, version: int) -> SecretBytes:
        return unseal(self._root, sealed, resource=resource, version=version)
