"""Root-key rotation on the Vault backend: rotate the transit key, rewrap everything.

Rewrap moves each stored ciphertext to the newest transit key version
without the plaintext ever leaving Vault; it runs in one store transaction,
so the store never holds a mix written by two rotations. Old ciphertexts stay
decryptable until the operator raises ``min_decryption_version``.
"""

from __future__ import annotations

import structlog

from broker.adapters.vault_kek import VaultTransitKEK
from broker.ports import KeyStore, RotationResult

log = structlog.get_logger(__name__)


class VaultRootKeyManager:
    def __init__(self, kek: VaultTransitKEK, store: KeyStore) -> None:
        self._kek = kek
        self._store = store

    async def rotate(self) -> RotationResult:
        latest = await self._kek.rotate_kek()

        async def rewrap(resource: str, version: int, sealed: bytes) -> bytes:
            return await self._kek.rewrap(sealed, resource=resource, version=version)

        count = await self._store.reseal_all(rewrap)
        log.info("root_key.rotated", backend="vault", resealed=count, transit_version=latest)
        return RotationResult(count, f"transit:v{latest}")
