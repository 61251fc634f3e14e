"""The audit signing key (Ed25519) and its public identity, in C2SP signed-note terms.

Usage::

    key = AuditKey.generate("broker.example/audit")
    pem = key.to_pem()                                  # PKCS#8; store it secret
    key = AuditKey.from_pem(pem, name="broker.example/audit")
    key.key_id         # 'broker.example/audit+1a2b3c4d'
    key.verifier_key() # 'broker.example/audit+1a2b3c4d+AR...' (publish this)
    trusted = trusted_keys([key.verifier_key(), old_verifier_key])

A key is named (C2SP signed-note: the name is usually the log origin) and
identified by ``key_id = "<name>+<8 hex digits>"``, where the hex digits are
the C2SP key hash ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``. That is
the prefix of the C2SP verifier key text, so a key id names one public key
and one name. Rotating the key keeps the name and changes the id; verifiers
keep every old verifier key in their trusted set so older checkpoints and
receipts still verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from broker.errors import ConfigError

__all__ = [
    "ED25519_SIGNATURE_TYPE",
    "KEY_HASH_SIZE",
    "AuditKey",
    "AuditKeyInvalid",
    "check_key_name",
    "key_hash",
    "key_id_for",
    "parse_key_id",
    "parse_verifier_key",
    "public_key_from_pem",
    "signature_is_valid",
    "trusted_keys",
]

# C2SP signed-note signature type for Ed25519.
ED25519_SIGNATURE_TYPE: Final = 0x01
KEY_HASH_SIZE: Final = 4
MAX_KEY_NAME_CHARS: Final = 256
_KEY_ID_RE: Final = re.compile(r"(?P<name>[^+]+)\+(?P<hash>[0-9a-f]{8})")


class AuditKeyInvalid(ConfigError):
    """An audit key, key name or verifier key cannot be used."""

    code = "AuditKeyInvalid"


def check_key_name(name: object) -> str:
    """C2SP signed-note: a key name is non-empty UTF-8 without whitespace or ``+``.

    Raises:
        AuditKeyInvalid: otherwise (or longer than ``MAX_KEY_NAME_CHARS``).
    """
    if not isinstance(name, str) or not name or len(name) > MAX_KEY_NAME_CHARS:
        raise AuditKeyInvalid(f"key name must be 1..{MAX_KEY_NAME_CHARS} characters")
    if "+" in name or any(c.isspace() or not c.isprintable() for c in name):
        raise AuditKeyInvalid("key name may not contain '+', spaces or control characters")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise AuditKeyInvalid("key name is not valid Unicode text") from None
    return name


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_hash(name: str, public_key: Ed25519PublicKey) -> bytes:
    """C2SP key hash: ``SHA-256(name || 0x0A || 0x01 || raw public key)[:4]``."""
    material = check_key_name(name).encode() + b"\n" + bytes([ED25519_SIGNATURE_TYPE])
    return hashlib.sha256(material + _raw(public_key)).digest()[:KEY_HASH_SIZE]


def key_id_for(name: str, public_key: Ed25519PublicKey) -> str:
    """``"<name>+<hex key hash>"``: the identifier checkpoints and receipts name."""
    return f"{name}+{key_hash(name, public_key).hex()}"


def parse_key_id(key_id: str) -> tuple[str, bytes]:
    """Split a key id into its name and 4-byte key hash.

    Raises:
        AuditKeyInvalid: not of the form ``name+8hex``.
    """
    match = _KEY_ID_RE.fullmatch(key_id)
    if match is None:
        raise AuditKeyInvalid("key id is not '<name>+<8 lowercase hex digits>'")
    return check_key_name(match["name"]), bytes.fromhex(match["hash"])


def signature_is_valid(
    key_id: str, public_key: Ed25519PublicKey, signature: bytes, message: bytes
) -> bool:
    """True when ``public_key`` is the key ``key_id`` names and signed ``message``.

    A predicate rather than a raise: checkpoints and receipts each turn a
    False into their own error type.
    """
    try:
        name, expected_hash = parse_key_id(key_id)
        if key_hash(name, public_key) != expected_hash:
            return False
        public_key.verify(signature, message)
    except (AuditKeyInvalid, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class AuditKey:
    """An Ed25519 audit signing key with its name. The private half never prints.

    Raises:
        AuditKeyInvalid: on construction with a bad name or a non-Ed25519 key.
    """

    name: str
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if not isinstance(self.private_key, Ed25519PrivateKey):
            raise AuditKeyInvalid("audit key must be an Ed25519 private key")
        object.__setattr__(self, "key_id", key_id_for(self.name, self.public_key))

    @classmethod
    def generate(cls, name: str) -> AuditKey:
        """A fresh key from the operating system's random source."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes, *, name: str, password: bytes | None = None) -> AuditKey:
        """Load a PKCS#8 PEM private key.

        Raises:
            AuditKeyInvalid: not a PEM Ed25519 private key, or the password is wrong.
        """
        try:
            key = serialization.load_pem_private_key(pem, password=password)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The library's message may quote the input; name only the problem.
            raise AuditKeyInvalid(
                "audit key is not a readable PEM private key (or wrong password)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyInvalid("audit key must be an Ed25519 private key")
        return cls(name, key)

    def to_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM of the private key, encrypted when ``password`` is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM of the public key."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verifier_key(self) -> str:
        """C2SP verifier key text: ``<name>+<hex key hash>+<base64(0x01 || public key)>``."""
        blob = bytes([ED25519_SIGNATURE_TYPE]) + _raw(self.public_key)
        return f"{self.key_id}+{base64.b64encode(blob).decode('ascii')}"

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) over ``message``."""
        return self.private_key.sign(message)


def parse_verifier_key(text: str) -> tuple[str, Ed25519PublicKey]:
    """Parse C2SP verifier key text into ``(key_id, public_key)``, checking its key hash.

    Raises:
        AuditKeyInvalid: malformed, not Ed25519, or the hash does not match the key.
    """
    if not isinstance(text, str):
        raise AuditKeyInvalid("verifier key must be text")
    # maxsplit: the base64 of the key may itself contain "+".
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise AuditKeyInvalid("verifier key is not '<name>+<hash>+<base64 key>'")
    name, hash_hex, blob_b64 = parts
    key_id = f"{name}+{hash_hex}"
    _, expected = parse_key_id(key_id)
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        raise AuditKeyInvalid("verifier key is not valid base64") from None
    if len(blob) != 33 or blob[0] != ED25519_SIGNATURE_TYPE:
        raise AuditKeyInvalid("verifier key is not an Ed25519 key (type 0x01, 32 bytes)")
    try:
        public_key = Ed25519PublicKey.from_public_bytes(blob[1:])
    except ValueError:
        raise AuditKeyInvalid("verifier key holds an invalid Ed25519 public key") from None
    if key_hash(name, public_key) != expected:
        raise AuditKeyInvalid(f"verifier key {key_id}: hash does not match the public key")
    return key_id, public_key


def public_key_from_pem(pem: bytes, *, name: str) -> tuple[str, Ed25519PublicKey]:
    """Load a SubjectPublicKeyInfo PEM Ed25519 key and give it its key id under ``name``.

    Raises:
        AuditKeyInvalid: not a PEM Ed25519 public key, or a bad name.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AuditKeyInvalid("not a readable PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyInvalid("audit public key must be Ed25519")
    return key_id_for(name, key), key


def trusted_keys(verifier_keys: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """The trusted set (``key_id -> public key``) from published verifier keys, old and new.

    Raises:
        AuditKeyInvalid: on the first malformed verifier key.
    """
    return dict(parse_verifier_key(text) for text in verifier_keys)
