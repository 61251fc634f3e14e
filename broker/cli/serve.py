"""``broker serve``: run the broker."""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path

import click
import structlog
from aiohttp import web

from broker.adapters.datadir import ADMIN_TOKEN_FILE
from broker.api.app import create_app, install_reload_signal
from broker.api.tls import server_context
from broker.cli.heap import settle_heap
from broker.config import MAX_WORKERS, Settings, load_settings, validate, with_dev_defaults
from broker.errors import BrokerError, ConfigError
from broker.logging import bind_process, configure_logging
from broker.wiring import open_services, reset_shared_sessions


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


async def _run(settings: Settings, *, reuse_port: bool = False, announce: bool = True) -> None:
    # Built first: a certificate that does not load stops the start, before any bind.
    ssl_context = server_context(settings.tls) if settings.tls.enabled else None
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.server.shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(
        runner,
        settings.server.host,
        settings.server.port,
        reuse_port=reuse_port or None,
        ssl_context=ssl_context,
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror}"
        ) from None
    install_reload_signal(app)
    settle_heap()
    scheme = "https" if ssl_context is not None else "http"
    url = f"{scheme}://{settings.server.host}:{settings.server.port}"
    if announce:
        click.echo(f"broker listening on {url}", err=True)
    if settings.dev and announce:
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


async def _prepare(settings: Settings) -> None:
    services = await open_services(settings)
    await services.close()


_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def disable_core_dumps() -> bool:
    """Linux: no core dump (and no ptrace by other users) can copy key material out of
    this process. Best effort: False where prctl is unavailable. execve resets the flag,
    so every spawned worker calls it again."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _worker(settings: Settings, index: int) -> None:
    """One of N worker processes sharing the port (SO_REUSEPORT)."""
    disable_core_dumps()
    configure_logging(settings.log.format, settings.log.level)
    bind_process(worker=index)
    try:
        _run_loop(_run(settings, reuse_port=True, announce=index == 0))
    except BrokerError as exc:
        click.echo(f"worker {index}: {exc.diagnostics()}", err=True)
        sys.exit(1)


def _run_workers(settings: Settings, workers: int) -> None:
    """Starts ``workers`` processes on one port; stops them all on SIGINT/SIGTERM.

    Prometheus metrics are aggregated across the workers through a shared
    multiprocess directory; a worker that dies takes the others down with it,
    so a supervisor (Kubernetes, systemd) restarts the whole broker.
    """
    metrics_dir = tempfile.mkdtemp(prefix="broker-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=_worker, args=(settings, i), daemon=False) for i in range(workers)
    ]
    for proc in procs:
        proc.start()
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)

    def reload(_signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, reload)
    try:
        while any(p.is_alive() for p in procs):
            for proc in procs:
                proc.join(timeout=0.5)
                if not proc.is_alive() and not stopping:
                    click.echo(f"a worker exited ({proc.exitcode}); stopping the broker", err=True)
                    stop(signal.SIGTERM, None)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    if any(p.exitcode not in (0, -signal.SIGTERM) for p in procs) and not stopping:
        sys.exit(1)


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
@click.option(
    "--workers",
    type=click.IntRange(1, MAX_WORKERS),
    default=None,
    help="Worker processes on one port (SO_REUSEPORT; default server.workers, 1). They share"
    " the SQLite data dir of one host, or the PostgreSQL store.",
)
def serve(
    config: Path | None,
    dev: bool,
    data_dir: str | None,
    port: int | None,
    host: str | None,
    policies: str | None,
    workers: int | None,
) -> None:
    """Run the broker."""
    disable_core_dumps()
    try:
        settings = _settings(config, dev, data_dir, port, host, policies)
        if workers is not None:
            settings = replace(settings, server=replace(settings.server, workers=workers))
            validate(settings)
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from None
    workers = settings.server.workers
    if not Path(settings.policy.dir).is_dir():
        raise click.ClickException(
            f"policy directory {settings.policy.dir!r} not found: run from the repository root"
            " (it holds policies/) or pass --policies DIR"
        )
    configure_logging(settings.log.format, settings.log.level)
    try:
        if workers > 1:
            if settings.store.backend == "sqlite":
                # Sessions never outlive the broker: the workers start on an empty set.
                reset_shared_sessions(settings)
            # Create key files and schemas once, before the workers race to.
            _run_loop(_prepare(settings))
            _run_workers(settings, workers)
            return
        _run_loop(_run(settings))
    except BrokerError as exc:
        raise click.ClickException(exc.diagnostics()) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.strerror}: {exc.filename}") from None
