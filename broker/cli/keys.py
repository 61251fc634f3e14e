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
@click.option("--rotate-every", default=None, help="Scheduled rotation period, e.g. 30d.")
@addr_option
@token_option
def create(resource: str, rotate_every: str | None, url: str, token: str | None) -> None:
    """Generate a 256-bit data key at REPO/TYPE/TAG."""
    body = (
        {"id": resource} if rotate_every is None else {"id": resource, "rotate_every": rotate_every}
    )
    _print(call(url, token, "POST", "/v1/keys", body))


@keys.command("put-secret")
@click.argument("resource")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the secret bytes.",
)
@click.option(
    "--vault-kv", default=None, help="Read the value from Vault KV v2: path#field[@version]."
)
@addr_option
@token_option
def put_secret(
    resource: str, path: Path | None, vault_kv: str | None, url: str, token: str | None
) -> None:
    """Upload a file as the secret at REPO/TYPE/TAG, or point it at a Vault KV v2 secret."""
    if (path is None) == (vault_kv is None):
        raise click.UsageError("give exactly one of --file and --vault-kv")
    if vault_kv is not None:
        body = {"id": resource, "vault_kv": vault_kv}
    else:
        assert path is not None
        body = {"id": resource, "value": base64.b64encode(path.read_bytes()).decode()}
    _print(call(url, token, "POST", "/v1/secrets", body))


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
    _print(call(url, token, "GET", _key_path(resource)))


@keys.command("delete")
@click.argument("resource")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@addr_option
@token_option
def delete(resource: str, yes: bool, url: str, token: str | None) -> None:
    """Delete a resource and every version of it."""
    if not yes:
        click.confirm(f"Delete {resource} and all its versions?", abort=True)
    call(url, token, "DELETE", _key_path(resource))
    click.echo(f"deleted {resource}")


def _key_path(resource: str) -> str:
    if resource.count("/") != 2:
        raise click.ClickException("resource ids look like repo/type/tag")
    return f"/v1/keys/{resource}"


@keys.command("rotate")
@click.argument("resource")
@click.option(
    "--file",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="For a secret: the file holding the new value.",
)
@addr_option
@token_option
def rotate(resource: str, path: Path | None, url: str, token: str | None) -> None:
    """Add a version of RESOURCE and make it current."""
    body = {} if path is None else {"value": base64.b64encode(path.read_bytes()).decode()}
    _print(call(url, token, "POST", _key_path(resource) + "/rotate", body))


@keys.command("set")
@click.argument("resource")
@click.option(
    "--min-release-version", type=int, default=None, help="Refuse releases of versions below N."
)
@click.option(
    "--rotate-every", default=None, help="Scheduled rotation, e.g. 30d; 'never' turns it off."
)
@addr_option
@token_option
def set_settings(
    resource: str,
    min_release_version: int | None,
    rotate_every: str | None,
    url: str,
    token: str | None,
) -> None:
    """Change RESOURCE's release floor or rotation period."""
    if min_release_version is None and rotate_every is None:
        raise click.UsageError("give --min-release-version and/or --rotate-every")
    body = {"min_release_version": min_release_version, "rotate_every": rotate_every}
    _print(
        call(
            url,
            token,
            "PATCH",
            _key_path(resource),
            {k: v for k, v in body.items() if v is not None},
        )
    )


@keys.command("retire")
@click.argument("resource")
@click.option("--version", type=int, required=True)
@addr_option
@token_option
def retire(resource: str, version: int, url: str, token: str | None) -> None:
    """Stop releasing one version (it is still held and can be restored)."""
    call(url, token, "POST", f"{_key_path(resource)}/versions/{version}/retire")
    click.echo(f"retired {resource} version {version}")


@keys.command("restore")
@click.argument("resource")
@click.option("--version", type=int, required=True)
@addr_option
@token_option
def restore(resource: str, version: int, url: str, token: str | None) -> None:
    """Make a retired version releasable again."""
    call(url, token, "POST", f"{_key_path(resource)}/versions/{version}/restore")
    click.echo(f"restored {resource} version {version}")


@keys.command("destroy")
@click.argument("resource")
@click.option("--version", type=int, required=True)
@click.option("--yes", is_flag=True, help="Confirm: the material is erased, irreversibly.")
@addr_option
@token_option
def destroy(resource: str, version: int, yes: bool, url: str, token: str | None) -> None:
    """Erase one version's material (irreversible; needs --yes)."""
    if not yes:
        raise click.UsageError("destroying a version is irreversible: pass --yes")
    call(url, token, "POST", f"{_key_path(resource)}/versions/{version}/destroy")
    click.echo(f"destroyed {resource} version {version}")


@keys.command("due")
@addr_option
@token_option
def due(url: str, token: str | None) -> None:
    """List keys past their rotation period."""
    _print(call(url, token, "GET", "/v1/keys?due=true"))
