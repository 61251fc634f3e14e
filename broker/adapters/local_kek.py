"""The local KEK: stored values sealed under root keys kept in the data dir.

A keyring, not a single key: during a root-key rotation (and after one that
was interrupted) values sealed under the old and the new key coexist, and
each value names the key it was sealed under. Seal always uses the current
key. When a value names a key this process does not hold (another worker
rotated), the key files are read again once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from broker.errors import KeyManagementError
from broker.keys.material import SecretBytes
from broker.keys.sealing import RootKey, seal, sealed_key_id, unseal

KeyLoader = Callable[[], tuple[RootKey, Sequence[RootKey]]]


class LocalKEK:
    def __init__(
        self, current: RootKey, others: Sequence[RootKey] = (), *, reload: KeyLoader | None = None
    ) -> None:
        self._reload = reload
        self._install(current, others)

    def _install(self, current: RootKey, others: Sequence[RootKey]) -> None:
        self._current = current
        self._ring = {k.key_id: k for k in (*others, current)}

    @property
    def current_key_id(self) -> bytes:
        return self._current.key_id

    def add(self, key: RootKey) -> None:
        self._ring[key.key_id] = key

    def make_current(self, key: RootKey) -> None:
        self._ring[key.key_id] = key
        self._current = key

    def forget_all_but_current(self) -> None:
        self._ring = {self._current.key_id: self._current}

    async def seal(self, plaintext: SecretBytes, *, resource: str, version: int) -> bytes:
        return seal(self._current, plaintext, resource=resource, version=version)

    async def unseal(self, sealed: bytes, *, resource: str, version: int) -> SecretBytes:
        return self.unseal_now(sealed, resource=resource, version=version)

    def unseal_now(self, sealed: bytes, *, resource: str, version: int) -> SecretBytes:
        kid = sealed_key_id(sealed)
        key = self._ring.get(kid)
        if key is None and self._reload is not None:
            current, others = self._reload()
            for k in (*others, current):
                self._ring.setdefault(k.key_id, k)
            key = self._ring.get(kid)
        if key is None:
            raise KeyManagementError("value was sealed under a root key this broker does not hold")
        return unseal(key, sealed, resource=resource, version=version)
