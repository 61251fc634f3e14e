"""Talking to the admin API from the CLI (``BROKER_ADDR``, ``BROKER_TOKEN``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click

DEFAULT_ADDR = "http://127.0.0.1:8300"

addr_option = click.option(
    "--url", envvar="BROKER_ADDR", default=DEFAULT_ADDR, show_default=True, help="Broker address."
)
token_option = click.option(
    "--token", envvar="BROKER_TOKEN", default=None, help="Admin bearer token (or BROKER_TOKEN)."
)


def _token(token: str | None) -> str:
    if not token:
        raise click.ClickException("an admin token is needed: set BROKER_TOKEN or pass --token")
    if token.startswith("@"):
        with open(token[1:], encoding="utf-8") as fh:
            return fh.read().strip()
    return token


def call(url: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    """Returns the decoded JSON answer, or exits with the broker's error."""
    if not url.startswith(("http://", "https://")):
        raise click.ClickException("--url must start with http:// or https://")
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {_token(token)}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            err = json.loads(raw)
            code = str(err.get("type", "")).rsplit("/", 1)[-1]
            message = f"{exc.code} {code}: {err.get('detail', '')}"
        except ValueError:
            message = f"{exc.code} {exc.reason}"
        raise click.ClickException(message) from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach the broker at {url}: {exc.reason}") from None
    return json.loads(raw) if raw else None
