"""The audit signing key and the requester HMAC key in the data dir, and audit key rotation.

Usage::

    key = load_or_create_audit_key(data_dir, name="attested-broker/audit")
    new = rotate_audit_key(data_dir, name="attested-broker/audit")     # writes .next, renames
    hmac_key = load_or_create_requester_key(data_dir)

Files are created 0600 with O_EXCL and fsynced (the same discipline as the
token key). The audit key is separate from the token key: a leaked token key
lets someone mint attestation tokens, a leaked audit key lets someone sign a
false log history, and each can be rotated without touching the other.

Rotation writes ``audit-signing-key.pem.next`` first and renames it over the
current file last; the caller records the new verifier key between the two
steps. A rotation interrupted after the first step is finished by
``pending_rotation`` at the next start, so the published key list never
misses a key that signed something.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from broker.adapters.datadir import fsync_dir, write_secret_file
from broker.audit.audit_key import AuditKey
from broker.audit.privacy import KEY_SIZE, RequesterKey
from broker.errors import ConfigError

__all__ = [
    "AUDIT_KEY_FILE",
    "AUDIT_KEY_NEXT_FILE",
    "REQUESTER_KEY_FILE",
    "commit_rotation",
    "load_or_create_audit_key",
    "load_or_create_requester_key",
    "pending_rotation",
    "prepare_rotation",
]

AUDIT_KEY_FILE: Final = "audit-signing-key.pem"
AUDIT_KEY_NEXT_FILE: Final = "audit-signing-key.pem.next"
REQUESTER_KEY_FILE: Final = "audit-requester-hmac.key"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _load(path: Path, name: str) -> AuditKey:
    # AuditKey.from_pem raises AuditKeyInvalid (a ConfigError) without echoing the file.
    return AuditKey.from_pem(_read(path), name=name)


def load_or_create_audit_key(data: Path, *, name: str) -> AuditKey:
    """The current audit key, generated on first start.

    Raises:
        ConfigError: the file cannot be read or is not an Ed25519 PEM key.
    """
    path = data / AUDIT_KEY_FILE
    if not path.exists():
        try:
            write_secret_file(path, AuditKey.generate(name).to_pem())
        except FileExistsError:
            pass  # a racing start created it first: use that one
        except OSError as exc:
            raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
        fsync_dir(data)
    return _load(path, name)


def pending_rotation(data: Path, *, name: str) -> AuditKey | None:
    """The key of an interrupted rotation (``.next`` present), to be committed.

    Raises:
        ConfigError: the file exists but is unreadable.
    """
    path = data / AUDIT_KEY_NEXT_FILE
    return _load(path, name) if path.exists() else None


def prepare_rotation(data: Path, *, name: str) -> AuditKey:
    """Step 1 of a rotation: write (or reuse) ``.next``. Publish its verifier key, then commit.

    Raises:
        ConfigError: the file cannot be written or read.
    """
    path = data / AUDIT_KEY_NEXT_FILE
    if not path.exists():
        try:
            write_secret_file(path, AuditKey.generate(name).to_pem())
        except OSError as exc:
            raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
        fsync_dir(data)
    return _load(path, name)


def commit_rotation(data: Path) -> None:
    """Step 2: the next key becomes the current one (atomic rename).

    Raises:
        ConfigError: the rename fails.
    """
    try:
        (data / AUDIT_KEY_NEXT_FILE).replace(data / AUDIT_KEY_FILE)
        fsync_dir(data)
    except OSError as exc:
        raise ConfigError(f"cannot install the new audit key: {exc.strerror}") from None


def load_or_create_requester_key(data: Path, *, create: bool = True) -> RequesterKey:
    """The per-deployment HMAC key for requester identifiers (32 random bytes).

    Raises:
        ConfigError: missing (and ``create`` is False), unreadable or the wrong size.
    """
    path = data / REQUESTER_KEY_FILE
    if not path.exists():
        if not create:
            raise ConfigError(f"requester HMAC key {path} does not exist")
        try:
            write_secret_file(path, RequesterKey.generate().material)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"cannot create {path}: {exc.strerror}") from None
    raw = _read(path)
    if len(raw) != KEY_SIZE:
        raise ConfigError(f"requester HMAC key {path} is not {KEY_SIZE} bytes")
    return RequesterKey(raw)
