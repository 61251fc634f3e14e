"""``broker audit``: verify an export offline, or download one from a running broker.

Usage::

    broker audit verify audit.jsonl
    broker audit export --format jsonl --since 2025-01-01T00:00:00Z --out audit.jsonl

``verify`` implements the procedure in ``docs/audit-format.md`` and needs no
network or key. ``export`` streams ``GET /v1/audit/export`` to a file or stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import BinaryIO

import aiohttp
import click

from broker.audit.chain import AuditChainBroken, verify_jsonl
from broker.audit.export import EXPORT_FORMATS, parse_bound
from broker.errors import BrokerError

__all__ = ["audit"]

DEFAULT_ADDR = "http://127.0.0.1:8300"
_CHUNK = 64 * 1024


@click.group("audit")
def audit() -> None:
    """Verify and export the hash-chained audit log."""


@audit.command("verify")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--from-genesis",
    is_flag=True,
    help="Require the file to start at seq 0 (a full export, not a time window).",
)
@click.option(
    "--expect-head",
    metavar="HASH",
    help="Require the last record's hash to be HASH (detects records cut from the end).",
)
def verify(file: Path, from_genesis: bool, expect_head: str | None) -> None:
    """Check every record and link of a JSONL export FILE.

    Exits 0 and prints one summary line if the chain is intact; otherwise
    exits 1 naming the first broken record (0-based index, line index+1).
    """
    try:
        with file.open("rb") as f:
            report = verify_jsonl(f, require_genesis=from_genesis, expected_head=expect_head)
    except AuditChainBroken as exc:
        click.echo(f"BROKEN: record {exc.index} (line {exc.index + 1}): {exc.reason}", err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        sys.exit(1)
    if report.count == 0:
        click.echo(f"BROKEN: {file} holds no audit records", err=True)
        sys.exit(1)
    start = "genesis" if report.from_genesis else f"prev_hash {report.first_prev_hash}"
    click.echo(
        f"OK: {report.count} records, seq {report.first_seq}..{report.last_seq} "
        f"(linked from {start}), head {report.head_hash}"
    )


@audit.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(sorted(EXPORT_FORMATS)),
    default="jsonl",
    show_default=True,
    help="jsonl can be verified offline; csv is for spreadsheets.",
)
@click.option("--since", metavar="T", help="RFC 3339 time, e.g. 2025-01-01T00:00:00Z.")
@click.option("--until", metavar="T", help="RFC 3339 time, e.g. 2025-02-01T00:00:00Z.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here (atomically, on success) instead of stdout.",
)
@click.option(
    "--url",
    envvar="BROKER_ADDR",
    default=DEFAULT_ADDR,
    show_default=True,
    help="Broker base URL [env: BROKER_ADDR].",
)
@click.option("--token", envvar="BROKER_TOKEN", help="Admin bearer token [env: BROKER_TOKEN].")
def export(
    *,
    fmt: str,
    since: str | None,
    until: str | None,
    out: Path | None,
    url: str,
    token: str | None,
) -> None:
    """Download an audit export from a running broker."""
    if not token:
        raise click.UsageError("no admin token: set BROKER_TOKEN or pass --token")
    params = {"format": fmt}
    try:
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                parse_bound(value, name=name)  # fail here rather than after a round trip
                params[name] = value
        if out is None:
            asyncio.run(_download(url, token, params, sys.stdout.buffer))
        else:
            _download_to_file(url, token, params, out)
    except BrokerError as exc:
        click.echo(f"error: {exc.diagnostics()}", err=True)
        sys.exit(1)


def _download_to_file(url: str, token: str, params: dict[str, str], out: Path) -> None:
    # A broken stream must not leave something that looks like a complete export.
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as sink:
            asyncio.run(_download(url, token, params, sink))
            sink.flush()
            os.fsync(sink.fileno())
        partial.replace(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


async def _download(url: str, token: str, params: dict[str, str], sink: BinaryIO) -> None:
    endpoint = url.rstrip("/") + "/v1/audit/export"
    headers = {"Authorization": f"Bearer {token}"}
    # No total timeout: a large export may take long; a stalled one may not.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(endpoint, params=params, headers=headers) as resp,
        ):
            if resp.status != 200:
                raise BrokerError(await _describe_error(resp))
            async for chunk in resp.content.iter_chunked(_CHUNK):
                sink.write(chunk)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BrokerError(f"export from {endpoint} failed: {type(exc).__name__}: {exc}") from None


async def _describe_error(resp: aiohttp.ClientResponse) -> str:
    """The broker's error body is ``{"code": ..., "message": ...}``; fall back to the status."""
    detail = f"HTTP {resp.status}"
    with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
        body = await resp.json(content_type=None)
        if isinstance(body, dict) and isinstance(body.get("code"), str):
            message = body.get("message") or body.get("detail") or ""
            detail += f" {body['code']}" + (f": {message}" if isinstance(message, str) else "")
    return f"broker refused the export: {detail}"
