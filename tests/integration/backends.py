"""Running one behaviour suite against the local store and the OpenBao backend."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from broker.config import Settings
from tests.openbao import OpenBaoServer


def vault_backed(
    settings: Settings, server: OpenBaoServer, folder: Path, *, transit_key: str = ""
) -> Settings:
    """``settings`` with keys sealed by the server's transit key (root token from a 0600 file)."""
    token_file = folder / "vault.token"
    token_file.write_text(server.root_token)
    token_file.chmod(0o600)
    return replace(
        settings,
        keys=replace(settings.keys, backend="vault"),
        vault=replace(
            settings.vault,
            addr=server.addr,
            token_file=str(token_file),
            transit_key=transit_key or server.transit_key,
            timeout=2.0,
            max_retries=2,
        ),
    )


def postgres_backed(settings: Settings, dsn: str, folder: Path) -> Settings:
    """``settings`` with keys and sessions in PostgreSQL (DSN from a 0600 file)."""
    dsn_file = folder / "pg.dsn"
    dsn_file.write_text(dsn)
    dsn_file.chmod(0o600)
    return replace(
        settings, store=replace(settings.store, backend="postgres", dsn_file=str(dsn_file))
    )
