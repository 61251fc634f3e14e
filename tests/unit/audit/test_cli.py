"""``broker audit verify`` and ``broker audit export`` command behaviour."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from broker.audit.export import EXPORT_FORMATS, to_csv, to_jsonl
from broker.cli.audit import audit

from ._factory import export_bytes, make_chain

GOOD_TOKEN = "admin-token-for-tests"


def _run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(audit, list(args), env=env, catch_exceptions=False)


# -- verify -----------------------------------------------------------------------------------


def test_verify_good_file(tmp_path: Path) -> None:
    """An intact export exits 0 with a one-line summary naming count and head."""
    records = make_chain(5)
    path = tmp_path / "audit.jsonl"
    path.write_bytes(export_bytes(records))
    result = _run("verify", str(path))
    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1
    assert result.stdout.startswith("OK: 5 records, seq 0..4 (linked from genesis)")
    assert records[-1].hash in result.stdout


def test_verify_names_first_broken_record(tmp_path: Path) -> None:
    """A modified record exits 1 and names its index, line and the problem."""
    lines = export_bytes(make_chain(5)).splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"decision":"allow"', b'"decision":"deny"')
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(lines))
    result = _run("verify", str(path))
    assert result.exit_code == 1
    assert "record 3 (line 4)" in result.stderr
    assert "modified record" in result.stderr
    assert result.stdout == ""


def test_verify_deleted_record(tmp_path: Path) -> None:
    """A deleted line is reported as a sequence break at its position."""
    lines = export_bytes(make_chain(5)).splitlines(keepends=True)
    del lines[1]
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"".join(lines))
    result = _run("verify", str(path))
    assert result.exit_code == 1
    assert "record 1" in result.stderr
    assert "expected seq 1, found 2" in result.stderr


def test_verify_window_and_from_genesis(tmp_path: Path) -> None:
    """A window export verifies, showing its link, unless --from-genesis is given."""
    records = make_chain(5)
    path = tmp_path / "window.jsonl"
    path.write_bytes(export_bytes(records[2:]))
    ok = _run("verify", str(path))
    assert ok.exit_code == 0
    assert f"seq 2..4 (linked from prev_hash {records[1].hash})" in ok.stdout
    strict = _run("verify", "--from-genesis", str(path))
    assert strict.exit_code == 1
    assert "record 0" in strict.stderr


def test_verify_expect_head(tmp_path: Path) -> None:
    """--expect-head detects records removed from the end."""
    records = make_chain(5)
    path = tmp_path / "audit.jsonl"
    path.write_bytes(export_bytes(records[:4]))
    assert _run("verify", "--expect-head", records[3].hash, str(path)).exit_code == 0
    result = _run("verify", "--expect-head", records[4].hash, str(path))
    assert result.exit_code == 1
    assert "record 3" in result.stderr


def test_verify_empty_file_fails(tmp_path: Path) -> None:
    """An empty file proves nothing and exits 1."""
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    result = _run("verify", str(path))
    assert result.exit_code == 1
    assert "no audit records" in result.stderr


def test_verify_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    """A path that does not exist is rejected by argument parsing (exit 2)."""
    assert _run("verify", str(tmp_path / "nope.jsonl")).exit_code == 2


# -- export -----------------------------------------------------------------------------------


@dataclass
class FakeBroker:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def broker() -> Iterator[FakeBroker]:
    """A stand-in export endpoint on 127.0.0.1, served from a background thread."""
    records = make_chain(4)
    state = FakeBroker(url="")

    async def handle(request: web.Request) -> web.StreamResponse:
        state.requests.append(
            {"auth": request.headers.get("Authorization"), "query": dict(request.query)}
        )
        if request.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
            return web.json_response(
                {"code": "AdminUnauthorized", "message": "unknown admin token"}, status=401
            )
        fmt = request.query["format"]
        response = web.StreamResponse(
            headers={
                "Content-Type": EXPORT_FORMATS.get(fmt, "application/x-ndjson"),
                "X-Audit-Checkpoint": "Y2hlY2twb2ludAo=",  # base64url("checkpoint\n")
                "X-Audit-Tree-Size": "4",
            }
        )
        await response.prepare(request)
        if fmt != "proofs":
            for chunk in (to_jsonl if fmt == "jsonl" else to_csv)(records):
                await response.write(chunk.encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/v1/audit/export", handle)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app)
    asyncio.run_coroutine_threadsafe(runner.setup(), loop).result()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    asyncio.run_coroutine_threadsafe(site.start(), loop).result()
    host, port = runner.addresses[0][:2]
    state.url = f"http://{host}:{port}"
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_export_jsonl_to_file(broker: FakeBroker, tmp_path: Path) -> None:
    """Export streams the body to --out, sending the bearer token and the query."""
    out = tmp_path / "audit.jsonl"
    result = _run(
        "export", "--format", "jsonl", "--since", "2025-01-01T00:00:00Z",
        "--until", "2025-02-01T00:00:00+01:00", "--out", str(out),
        env={"BROKER_ADDR": broker.url, "BROKER_TOKEN": GOOD_TOKEN},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == export_bytes(make_chain(4))
    assert not (tmp_path / "audit.jsonl.partial").exists()
    assert (tmp_path / "audit.jsonl.checkpoint").read_text() == "checkpoint\n"
    # A time window is a selection: its inclusion proofs come in a second request.
    assert broker.requests[1]["query"]["format"] == "proofs"
    assert broker.requests[1]["query"]["size"] == "4"
    assert broker.requests[:1] == [
        {
            "auth": f"Bearer {GOOD_TOKEN}",
            "query": {
                "format": "jsonl",
                "since": "2025-01-01T00:00:00Z",
                "until": "2025-02-01T00:00:00+01:00",
            },
        }
    ]
    assert _run("verify", "--from-genesis", str(out)).exit_code == 0


def test_export_csv_to_stdout_with_options(broker: FakeBroker) -> None:
    """--url/--token override the environment; without --out the body goes to stdout."""
    result = _run(
        "export", "--format", "csv", "--url", broker.url + "/", "--token", GOOD_TOKEN,
        env={"BROKER_ADDR": "http://127.0.0.1:9", "BROKER_TOKEN": "wrong"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == "".join(to_csv(make_chain(4))).encode()
    assert broker.requests[0]["query"] == {"format": "csv"}


def test_export_refused_token(broker: FakeBroker, tmp_path: Path) -> None:
    """A 401 exits 1 with the broker's error code and leaves no output file."""
    out = tmp_path / "audit.jsonl"
    result = _run("export", "--url", broker.url, "--token", "bad", "--out", str(out))
    assert result.exit_code == 1
    assert "HTTP 401 AdminUnauthorized" in result.stderr
    assert "bad" not in result.stderr.replace("broker refused", "")
    assert not out.exists()
    assert not (tmp_path / "audit.jsonl.partial").exists()


def test_export_requires_token() -> None:
    """Without BROKER_TOKEN or --token the command stops before any request (exit 2)."""
    result = _run("export", env={"BROKER_TOKEN": ""})
    assert result.exit_code == 2
    assert "BROKER_TOKEN" in result.stderr


def test_export_rejects_bad_time_before_connecting(broker: FakeBroker) -> None:
    """A malformed --since fails locally with exit 1."""
    result = _run("export", "--url", broker.url, "--token", GOOD_TOKEN, "--since", "yesterday")
    assert result.exit_code == 1
    assert "since" in result.stderr
    assert broker.requests == []


def test_export_unreachable_broker() -> None:
    """A connection failure exits 1 with a one-line error, not a traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _run("export", "--url", f"http://127.0.0.1:{port}", "--token", GOOD_TOKEN)
    assert result.exit_code == 1
    assert "export from" in result.stderr
    assert "Traceback" not in result.output
