"""Files the broker keeps in its data dir: root key, token key, dev admin tokens.

Secret files are created 0600 with O_EXCL, so a racing second start cannot
read a half-written key, and their contents are never logged.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from broker.errors import ConfigError
from broker.keys.sealing import RootKey
from broker.tokens import TokenKey

ROOT_KEY_FILE = "root.key"
# Written before a root-key rotation re-seals anything, renamed over root.key after.
ROOT_KEY_NEXT_FILE = "root.key.next"
TOKEN_KEY_FILE = "token-signing-key.pem"  # noqa: S105 - a file name
ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
AUDITOR_TOKEN_FILE = "auditor.token"  # noqa: S105 - a file name


def prepare_data_dir(path: Path, *, must_write: bool = True) -> None:
    """Creates the folder (0700). A shared keys dir may be read-only (a mounted Secret)."""
    if not path.is_dir():
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"cannot create data dir {path}: {exc.strerror}") from None
    if must_write and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"data dir {path} is not writable")


def write_secret_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_secret(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def load_or_create_root_key(path: Path, *, create: bool) -> RootKey:
    if not path.exists():
        if not create:
            raise ConfigError(f"root key file {path} does not exist (create one or use --dev)")
        write_secret_file(path, RootKey.generate().material.reveal())
    raw = _read_secret(path)
    try:
        return RootKey.from_bytes(raw)
    except Exception:  # noqa: BLE001 - the message must not echo key bytes
        raise ConfigError(f"root key file {path} is malformed") from None


def load_root_keys(data: Path, *, create: bool) -> tuple[RootKey, list[RootKey]]:
    """The current root key and, if a rotation was interrupted, the next one.

    Both are kept so that every stored value opens whatever point the
    rotation reached; the next rotation finishes the job.
    """
    current = load_or_create_root_key(data / ROOT_KEY_FILE, create=create)
    nxt = data / ROOT_KEY_NEXT_FILE
    others = [load_or_create_root_key(nxt, create=False)] if nxt.exists() else []
    return current, others


def write_next_root_key(data: Path) -> RootKey:
    """Creates root.key.next (or reuses it, finishing an interrupted rotation)."""
    path = data / ROOT_KEY_NEXT_FILE
    if not path.exists():
        write_secret_file(path, RootKey.generate().material.reveal())
        fsync_dir(data)
    return load_or_create_root_key(path, create=False)


def promote_next_root_key(data: Path) -> None:
    """Atomically makes root.key.next the root key."""
    os.replace(data / ROOT_KEY_NEXT_FILE, data / ROOT_KEY_FILE)
    fsync_dir(data)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_or_create_token_key(path: Path) -> TokenKey:
    if not path.exists():
        write_secret_file(path, TokenKey.generate().to_pem())
    try:
        return TokenKey.from_pem(_read_secret(path))
    except Exception:  # noqa: BLE001 - the message must not echo key bytes
        raise ConfigError(f"token key file {path} is malformed") from None


def load_or_create_token(path: Path, *, create: bool) -> str:
    if not path.exists():
        if not create:
            raise ConfigError(f"admin token file {path} does not exist")
        write_secret_file(path, secrets.token_urlsafe(32).encode())
    token = _read_secret(path).decode("utf-8", "replace").strip()
    if len(token) < 16:
        raise ConfigError(f"admin token in {path} is too short (16 characters at least)")
    return token
