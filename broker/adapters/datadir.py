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
TOKEN_KEY_FILE = "token-signing-key.pem"  # noqa: S105 - a file name
ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 - a file name
AUDITOR_TOKEN_FILE = "auditor.token"  # noqa: S105 - a file name


def prepare_data_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create data dir {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"data dir {path} is not writable")


def _write_secret(path: Path, data: bytes) -> None:
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
        _write_secret(path, RootKey.generate().material.reveal())
    raw = _read_secret(path)
    try:
        return RootKey.from_bytes(raw)
    except Exception:  # noqa: BLE001 - the message must not echo key bytes
        raise ConfigError(f"root key file {path} is malformed") from None


def load_or_create_token_key(path: Path) -> TokenKey:
    if not path.exists():
        _write_secret(path, TokenKey.generate().to_pem())
    try:
        return TokenKey.from_pem(_read_secret(path))
    except Exception:  # noqa: BLE001 - the message must not echo key bytes
        raise ConfigError(f"token key file {path} is malformed") from None


def load_or_create_token(path: Path, *, create: bool) -> str:
    if not path.exists():
        if not create:
            raise ConfigError(f"admin token file {path} does not exist")
        _write_secret(path, secrets.token_urlsafe(32).encode())
    token = _read_secret(path).decode("utf-8", "replace").strip()
    if len(token) < 16:
        raise ConfigError(f"admin token in {path} is too short (16 characters at least)")
    return token
