"""``broker tokens``: create, list and revoke admin tokens through the admin API (admin role)."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import click

from broker.cli._admin import addr_option, call, token_option
from broker.service.admin import ROLES


def _print(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def write_secret_file(path: Path, token: str) -> None:
    # O_EXCL: never overwrite (or follow a planted link to) an existing file; 0600 from birth.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise click.ClickException(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")


@click.group()
def tokens() -> None:
    """Admin tokens: each has a role, an optional expiry, and can be revoked."""


@tokens.command("create")
@click.option("--role", required=True, type=click.Choice(ROLES), help="The token's role.")
@click.option("--name", required=True, help="Who or what holds the token (e.g. ci-deployer).")
@click.option("--expires", default=None, help="Lifetime, e.g. 30d, 12h, 90m, 2w (default: none).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the token to this new file (mode 0600) instead of printing it.",
)
@addr_option
@token_option
def create(
    role: str, name: str, expires: str | None, out: Path | None, url: str, token: str | None
) -> None:
    """Create a token. It is shown once: the broker keeps only its SHA-256."""
    body: dict[str, Any] = {"name": name, "role": role}
    if expires is not None:
        body["expires"] = expires
    answer = call(url, token, "POST", "/v1/tokens", body)
    if out is not None:
        write_secret_file(out, answer["token"])
        _print(answer["info"])
        click.echo(f"token written to {out}", err=True)
        return
    _print(answer)
    click.echo("store the token now: it cannot be shown again", err=True)


@tokens.command("list")
@addr_option
@token_option
def list_tokens(url: str, token: str | None) -> None:
    """List tokens (metadata only: id, name, role, state, times)."""
    _print(call(url, token, "GET", "/v1/tokens"))


@tokens.command("revoke")
@click.argument("token_id")
@addr_option
@token_option
def revoke(token_id: str, url: str, token: str | None) -> None:
    """Revoke the token TOKEN_ID; it is refused from the next request on."""
    _print(call(url, token, "DELETE", f"/v1/tokens/{urllib.parse.quote(token_id, safe='')}"))
