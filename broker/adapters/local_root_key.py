"""Root-key rotation of the local store (files + keyring + SQLite), crash-safe at every step.

(1) Write ``root.key.next`` (fsynced) and add it to the keyring, so every
    reader can open values sealed under either key from here on.
(2) In ONE store transaction, open every value with the key it names and
    seal it under the next key (plaintext stays in memory).
(3) Make the next key current for new writes.
(4) Rename ``root.key.next`` over ``root.key`` (atomic) and forget the old key.

Killed before (2) commits: the store is under the old key, both files exist.
Killed after (2), before (4): the store is under the new key, both files
exist. After (4): one key, one store. Start-up loads both files when both
exist, so the store is always readable, and the next rotation reuses
``root.key.next`` to finish. No release fails meanwhile: readers hold both
keys for the whole rotation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from broker.adapters.datadir import promote_next_root_key, write_next_root_key
from broker.adapters.local_kek import LocalKEK
from broker.keys.material import SecretBytes
from broker.keys.sealing import seal
from broker.ports import KeyStore, RotationResult

log = structlog.get_logger(__name__)


class LocalRootKeyManager:
    """Implements RootKeyManager; ``after_step`` is a seam for crash tests."""

    def __init__(
        self,
        data_dir: Path,
        kek: LocalKEK,
        store: KeyStore,
        *,
        after_step: Callable[[int], None] | None = None,
    ) -> None:
        self._data = data_dir
        self._kek = kek
        self._store = store
        self._after_step = after_step or (lambda _step: None)

    async def rotate(self) -> RotationResult:
        nxt = write_next_root_key(self._data)
        self._kek.add(nxt)
        self._after_step(1)

        async def reseal(resource: str, version: int, sealed: bytes) -> bytes:
            value: SecretBytes = self._kek.unseal_now(sealed, resource=resource, version=version)
            return seal(nxt, value, resource=resource, version=version)

        count = await self._store.reseal_all(reseal)
        self._after_step(2)
        self._kek.make_current(nxt)
        self._after_step(3)
        promote_next_root_key(self._data)
        self._kek.forget_all_but_current()
        self._after_step(4)
        key_id = nxt.key_id.hex()
        log.info("root_key.rotated", resealed=count, key_id=key_id)
        return RotationResult(count, key_id)
