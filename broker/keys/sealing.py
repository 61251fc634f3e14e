"""Values at rest: AES-256-GCM under the root key, the resource id as AAD.

Sealed layout (version marker first, so the format can change)::

    0x01 | root key id (8 bytes) | nonce (12) | ciphertext || tag (16)

The AAD binds a sealed value to its resource and version, so a row copied to
another resource fails to open.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.errors import KeyManagementError
from broker.keys.material import SecretBytes

FORMAT_V1 = 0x01
ROOT_KEY_BYTES = 32
_NONCE = 12
_KID = 8


@dataclass(frozen=True, slots=True)
class RootKey:
    """The key-encryption key of the local store."""

    material: SecretBytes = field(repr=False)

    @classmethod
    def generate(cls) -> RootKey:
        return cls(SecretBytes(os.urandom(ROOT_KEY_BYTES)))

    @classmethod
    def from_bytes(cls, raw: bytes) -> RootKey:
        if len(raw) != ROOT_KEY_BYTES:
            raise KeyManagementError(f"root key must be {ROOT_KEY_BYTES} bytes")
        return cls(SecretBytes(raw))

    @property
    def key_id(self) -> bytes:
        return hashlib.sha256(b"broker-root-key-id\0" + self.material.reveal()).digest()[:_KID]


def aad_for(resource: str, version: int) -> bytes:
    return f"broker-sealed-v1\0{resource}\0{version}".encode()


def seal(root: RootKey, plaintext: SecretBytes, *, resource: str, version: int) -> bytes:
    nonce = os.urandom(_NONCE)
    body = AESGCM(root.material.reveal()).encrypt(
        nonce, plaintext.reveal(), aad_for(resource, version)
    )
    return bytes([FORMAT_V1]) + root.key_id + nonce + body


def sealed_key_id(sealed: bytes) -> bytes:
    """The id of the root key a value was sealed under (b"" if not our format)."""
    if len(sealed) < 1 + _KID or sealed[0] != FORMAT_V1:
        return b""
    return sealed[1 : 1 + _KID]


def unseal(root: RootKey, sealed: bytes, *, resource: str, version: int) -> SecretBytes:
    """Raises KeyManagementError (without detail) if the value cannot be opened."""
    if len(sealed) < 1 + _KID + _NONCE + 16 or sealed[0] != FORMAT_V1:
        raise KeyManagementError("sealed value has an unknown format")
    kid, nonce, body = (
        sealed[1 : 1 + _KID],
        sealed[1 + _KID : 1 + _KID + _NONCE],
        sealed[1 + _KID + _NONCE :],
    )
    if kid != root.key_id:
        raise KeyManagementError("sealed value was sealed under another root key")
    try:
        return SecretBytes(
            AESGCM(root.material.reveal()).decrypt(nonce, body, aad_for(resource, version))
        )
    except InvalidTag:
        raise KeyManagementError("sealed value failed authentication") from None
