"""``broker root-key``: rotate the local store's root key."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click

from broker.adapters.datadir import load_root_keys
from broker.adapters.local_kek import LocalKEK
from broker.adapters.local_root_key import LocalRootKeyManager
from broker.adapters.sqlite_audit import SQLiteAuditLog
from broker.adapters.sqlite_db import SQLiteDB
from broker.adapters.sqlite_keys import SQLiteKeyStore
from broker.cli._admin import addr_option, call, token_option
from broker.errors import BrokerError
from broker.service.context import RequestContext, SystemClock
from broker.service.root_key import RootKeyService


@click.group("root-key")
def root_key() -> None:
    """Manage the root key that seals the local store."""


async def _offline(data: Path) -> dict[str, object]:
    current, others = load_root_keys(data, create=False)
    kek = LocalKEK(current, others)
    db = SQLiteDB(data / "broker.db")
    audit = SQLiteAuditLog(data / "audit.db")
    await db.open()
    try:
        await audit.start()
        try:
            service = RootKeyService(
                LocalRootKeyManager(data, kek, SQLiteKeyStore(db)), audit, SystemClock()
            )
            ctx = RequestContext(request_id="cli", client="local", actor="cli:offline")
            result = await service.rotate(ctx)
        finally:
            await audit.close()
    finally:
        await db.close()
    return {"resealed": result.resealed, "key_id": result.key_id}


@root_key.command("rotate")
@click.option(
    "--offline",
    is_flag=True,
    help="Rotate directly on a stopped broker's data dir instead of through the API.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --offline: the broker's data dir.",
)
@addr_option
@token_option
def rotate(offline: bool, data_dir: Path | None, url: str, token: str | None) -> None:
    """Re-seal every stored value under a new root key, in one transaction."""
    if offline:
        if data_dir is None:
            raise click.UsageError("--offline needs --data-dir")
        try:
            result = asyncio.run(_offline(data_dir))
        except BrokerError as exc:
            raise click.ClickException(exc.diagnostics()) from None
    else:
        result = call(url, token, "POST", "/v1/root-key/rotate", {})
    click.echo(json.dumps(result, sort_keys=True))
