"""``broker serve``: run the broker."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path

import click
import structlog
from aiohttp import web

from broker.adapters.datadir import ADMIN_TOKEN_FILE
from broker.api.app import create_app, install_reload_signal
from broker.config import Settings, load_settings, with_dev_defaults
from broker.errors import BrokerError
from broker.logging import configure_logging


def _settings(
    config: Path | None,
    dev: bool,
    data_dir: str | None,
    port: int | None,
    host: str | None,
    policies: str | None,
) -> Settings:
    settings = load_settings(config, os.environ)
    if dev:
        settings = with_dev_defaults(settings)
    server = settings.server
    if data_dir is not None:
        server = replace(server, data_dir=data_dir)
    if port is not None:
        server = replace(server, port=port)
    if host is not None:
        server = replace(server, host=host)
    settings = replace(settings, server=server)
    if policies is not None:
        settings = replace(settings, policy=replace(settings.policy, dir=policies))
    return settings


async def _run(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.server.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    install_reload_signal(app)
    url = f"http://{settings.server.host}:{settings.server.port}"
    click.echo(f"broker listening on {url}", err=True)
    if settings.dev:
        token_path = Path(settings.server.data_dir) / ADMIN_TOKEN_FILE
        click.echo(f"dev admin token written to {token_path}", err=True)
    structlog.get_logger("broker").info("broker.started", url=url, dev=settings.dev)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _run_loop(main: Coroutine[None, None, None]) -> None:
    try:
        import uvloop  # noqa: PLC0415 - optional: absent on platforms it does not support
    except ImportError:  # pragma: no cover
        asyncio.run(main)
        return
    uvloop.run(main)


@click.command()
@click.option(
    "--config",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (BROKER_<SECTION>_<KEY> variables override it).",
)
@click.option(
    "--dev", is_flag=True, help="Embedded defaults: generated keys and tokens, sample TEE on."
)
@click.option("--data-dir", default=None, help="Where the store, audit log and keys live.")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1 (default 8300).")
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--policies", default=None, help="Policy directory (default ./policies).")
def serve(
    config: Path | None,
    dev: bool,
    data_dir: str | None,
    port: int | None,
    host: str | None,
    policies: str | None,
) -> None:
    """Run the broker."""
    try:
        settings = _settings(config, dev, data_dir, port, host, policies)
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from None
    if not Path(settings.policy.dir).is_dir():
        raise click.ClickException(
            f"policy directory {settings.policy.dir!r} not found: run from the repository root"
            " (it holds policies/) or pass --policies DIR"
        )
    configure_logging(settings.log.format, settings.log.level)
    try:
        _run_loop(_run(settings))
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from None
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror}"
        ) from None
