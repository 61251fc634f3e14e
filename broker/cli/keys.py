"""``broker keys``: manage keys and secrets through the admin API."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import click

from broker.cli._admin import addr_option, call, token_option


def _print(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


@click.group()
def keys() -> None:
    """Create, list, show and delete keys and secrets."""


@keys.command("create")
@click.argument("resource")
@addr_option
@token_option
def create(resource: str, url: str, token: str | None) -> None:
    """Generate a 256-bit data key at REPO/TYPE/TAG."""
    _print(call(url, token, "POST", "/v1/keys", {"id": resource}))


@keys.command("put-secret")
@click.argument("resource")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="File holding the secret bytes.",
)
@addr_option
@token_option
def put_secret(resource: str, path: Path, url: str, token: str | None) -> None:
    """Upload the bytes of a file as the secret at REPO/TYPE/TAG."""
    value = base64.b64encode(path.read_bytes()).decode()
    _print(call(url, token, "POST", "/v1/secrets", {"id": resource, "value": value}))


@keys.command("list")
@addr_option
@token_option
def list_keys(url: str, token: str | None) -> None:
    """List resources (metadata only)."""
    _print(call(url, token, "GET", "/v1/keys"))


@keys.command("show")
@click.argument("resource")
@addr_option
@token_option
def show(resource: str, url: str, token: str | None) -> None:
    """Show one resource's metadata."""
    _print(call(url, token, "GET", f"/v1/keys/{resource}"))


@keys.command("delete")
@click.argument("resource")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@addr_option
@token_option
def delete(resource: str, yes: bool, url: str, token: str | None) -> None:
    """Delete a resource and every version of it."""
    if not yes:
        click.confirm(f"Delete {resource} and all its versions?", abort=True)
    call(url, token, "DELETE", f"/v1/keys/{resource}")
    click.echo(f"deleted {resource}")
