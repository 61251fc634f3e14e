"""``broker client``: the enclave side, for trying the broker and for scripts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

import click

from broker.client import BrokerClient, RemoteError
from broker.client.providers import PROVIDERS, EvidenceProvider
from broker.client.providers_hw import HARDWARE_PROVIDERS
from broker.errors import BrokerError

_ALL_PROVIDERS: dict[str, Callable[[], EvidenceProvider]] = {**PROVIDERS, **HARDWARE_PROVIDERS}


@click.group()
def client() -> None:
    """Act as an enclave: attest and fetch resources."""


def write_secret_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


@client.command("get-resource")
@click.argument("resource")
@click.option("--url", envvar="BROKER_ADDR", default="http://127.0.0.1:8300", show_default=True)
@click.option(
    "--tee",
    type=click.Choice(sorted(_ALL_PROVIDERS)),
    default="sample",
    show_default=True,
    help="Evidence provider: sample (simulated), or the TEE device this enclave has.",
)
@click.option(
    "--wrap",
    type=click.Choice(["p256", "p521", "rsa", "x25519", "mlkem768x25519", "sealedbox"]),
    default="p256",
    show_default=True,
    help="Ephemeral key type the release is wrapped to.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the secret (created 0600).",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Trust only this CA (PEM) for the broker's https:// certificate.",
)
@click.option(
    "--pin-sha256",
    multiple=True,
    help="SHA-256 of the broker certificate's public key (base64 or hex); repeatable.",
)
def get_resource(
    resource: str,
    url: str,
    tee: str,
    wrap: str,
    out: Path,
    ca_file: str | None,
    pin_sha256: tuple[str, ...],
) -> None:
    """Attest, fetch RESOURCE (repo/type/tag), unwrap it and write it to --out."""

    async def run() -> None:
        async with BrokerClient(url, wrap=wrap, ca_file=ca_file, pin_sha256=pin_sha256) as broker:
            released = await broker.get_resource(resource, _ALL_PROVIDERS[tee]())
        write_secret_file(out, released.value.reveal())
        click.echo(
            f"wrote {len(released.value)} bytes of {released.resource} version {released.version}"
            f" ({released.alg}) to {out}"
        )

    try:
        asyncio.run(run())
    except RemoteError as exc:
        detail = f" reasons: {', '.join(exc.reasons)}" if exc.reasons else ""
        raise click.ClickException(f"{exc.message}{detail}") from None
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from None
