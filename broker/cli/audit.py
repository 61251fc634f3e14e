"""``broker audit``: verify an export offline, or download one from a running broker.

Usage::

    broker audit verify audit.jsonl
    broker audit export --format jsonl --since 2025-01-01T00:00:00Z --out audit.jsonl

``verify`` implements the procedure in ``docs/audit-format.md`` and needs no
network or key. ``export`` streams ``GET /v1/audit/export`` to a file or stdout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import re
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, NoReturn

import aiohttp
import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.adapters.audit_keys import (
    commit_rotation,
    load_or_create_audit_key,
    load_or_create_requester_key,
    prepare_rotation,
)
from broker.adapters.audit_store import SQLiteTransparencyStore
from broker.audit.audit_key import AuditKeyInvalid, trusted_keys
from broker.audit.chain import AuditChainBroken, parse_jsonl, verify_jsonl
from broker.audit.export import EXPORT_FORMATS, parse_bound
from broker.audit.merkle import MerkleProofError, verify_consistency
from broker.audit.proofs import ConsistencyProof, InclusionProof
from broker.audit.receipt import (
    Receipt,
    ReceiptError,
    decode_receipt_header,
    verify_receipt,
    verify_receipt_inclusion,
)
from broker.audit.report import build_report, render_html, render_text
from broker.audit.verify_export import ExportInvalid, verify_checkpoints, verify_export
from broker.cli._admin import addr_option, call, token_option
from broker.errors import BrokerError

__all__ = ["audit"]

DEFAULT_ADDR = "http://127.0.0.1:8300"
# Set by GET /v1/audit/export (broker.api.audit).
CHECKPOINT_HEADER = "X-Audit-Checkpoint"
TREE_SIZE_HEADER = "X-Audit-Tree-Size"
_CHUNK = 64 * 1024


@click.group("audit")
def audit() -> None:
    """Verify and export the hash-chained audit log."""


def _trusted(values: tuple[str, ...]) -> dict[str, Ed25519PublicKey]:
    """``--audit-key``: verifier key text, a file of them (one a line), or a saved key list."""
    texts: list[str] = []
    for value in values:
        path = Path(value)
        if not path.is_file():
            texts.append(value)
            continue
        raw = path.read_text(encoding="utf-8")
        try:
            listed = json.loads(raw)
        except ValueError:
            texts.extend(line for line in raw.splitlines() if line.strip())
            continue
        if not isinstance(listed, dict) or not isinstance(listed.get("keys"), list):
            raise AuditKeyInvalid(f"{path} is JSON but not a key list from /v1/audit/keys")
        texts.extend(str(k.get("verifier_key", "")) for k in listed["keys"])
    if not texts:
        raise click.UsageError("--audit-key is required with --checkpoint")
    return trusted_keys(texts)


def _fail(message: str) -> NoReturn:
    click.echo(f"BROKEN: {message}", err=True)
    sys.exit(1)


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
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Signed checkpoint the export must match; twice to check two against each other.",
)
@click.option(
    "--audit-key",
    "audit_keys",
    multiple=True,
    metavar="PUBKEY",
    help="Trusted audit verifier key (text, file, or saved /v1/audit/keys list); repeatable.",
)
@click.option(
    "--proofs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Inclusion proofs for a filtered export (one line per record).",
)
@click.option("--origin", help="Require the checkpoints to be for this log.")
def verify(
    file: Path,
    from_genesis: bool,
    expect_head: str | None,
    checkpoints: tuple[Path, ...],
    audit_keys: tuple[str, ...],
    proofs: Path | None,
    origin: str | None,
) -> None:
    """Check every record and link of a JSONL export FILE, and its tree against checkpoints.

    Exits 0 and prints one summary line if everything holds; otherwise exits
    1 naming the first broken record (0-based index, line index+1) or check.
    """
    if checkpoints or proofs:
        _verify_against_checkpoints(file, checkpoints, audit_keys, proofs, origin)
        return
    try:
        with file.open("rb") as f:
            report = verify_jsonl(f, require_genesis=from_genesis, expected_head=expect_head)
    except AuditChainBroken as exc:
        _fail(f"record {exc.index} (line {exc.index + 1}): {exc.reason}")
    except OSError as exc:
        click.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        sys.exit(1)
    if report.count == 0:
        _fail(f"{file} holds no audit records")
    start = "genesis" if report.from_genesis else f"prev_hash {report.first_prev_hash}"
    click.echo(
        f"OK: {report.count} records, seq {report.first_seq}..{report.last_seq} "
        f"(linked from {start}), head {report.head_hash}"
    )


def _verify_against_checkpoints(
    file: Path,
    checkpoints: tuple[Path, ...],
    audit_keys: tuple[str, ...],
    proofs: Path | None,
    origin: str | None,
) -> None:
    if not checkpoints:
        raise click.UsageError("--proofs needs --checkpoint")
    try:
        trusted = _trusted(audit_keys)
        notes = [p.read_bytes() for p in checkpoints]
        with contextlib.ExitStack() as stack:
            lines = stack.enter_context(file.open("rb"))
            proof_lines = None if proofs is None else stack.enter_context(proofs.open("rb"))
            result = verify_export(lines, notes, trusted, origin=origin, proofs=proof_lines)
    except AuditChainBroken as exc:
        _fail(f"record {exc.index} (line {exc.index + 1}): {exc.reason}")
    except ExportInvalid as exc:
        _fail(exc.message)
    except AuditKeyInvalid as exc:
        raise click.UsageError(f"--audit-key: {exc.message}") from None
    except OSError as exc:
        click.echo(f"error: {exc.filename}: {exc.strerror}", err=True)
        sys.exit(1)
    cp = result.checkpoints[-1]
    what = (
        f"{result.count} selected records (seq {result.first_seq}..{result.last_seq}), "
        "each included in"
        if result.selection
        else f"{result.count} records, complete and in order for"
    )
    others = len(result.checkpoints) - 1
    click.echo(
        f"OK: {what} checkpoint size {cp.size} root {cp.root_hash.hex()} "
        f"signed by {cp.key_id}"
        + (f"; consistent with {others} older checkpoint(s)" if others else "")
    )


@audit.command("verify-consistency")
@click.argument("old", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--proof", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--audit-key", "audit_keys", multiple=True, metavar="PUBKEY", required=True)
def verify_consistency_cmd(old: Path, new: Path, proof: Path, audit_keys: tuple[str, ...]) -> None:
    """Check that checkpoint NEW extends checkpoint OLD (nothing removed or rewritten)."""
    try:
        trusted = _trusted(audit_keys)
        a, b = verify_checkpoints([old.read_bytes(), new.read_bytes()], trusted)
        p = ConsistencyProof.from_json(proof.read_bytes())
        if (p.from_size, p.to_size) != (a.size, b.size):
            _fail(f"the proof is from {p.from_size} to {p.to_size}, not {a.size} to {b.size}")
        verify_consistency(a.size, b.size, a.root_hash, b.root_hash, p.hashes)
    except ExportInvalid as exc:
        _fail(exc.message)
    except MerkleProofError as exc:
        _fail(f"consistency: {exc.message}")
    except AuditKeyInvalid as exc:
        raise click.UsageError(f"--audit-key: {exc.message}") from None
    click.echo(f"OK: checkpoint size {b.size} is consistent with checkpoint size {a.size}")


def _read_receipt(path: Path) -> Receipt:
    raw = path.read_text(encoding="utf-8").strip()
    if raw.startswith("{"):
        try:
            return Receipt.from_dict(json.loads(raw))
        except ValueError:
            raise ReceiptError("receipt file is not JSON") from None
    return decode_receipt_header(raw)


@audit.command("verify-receipt")
@click.argument("receipt", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--proof", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option(
    "--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option("--audit-key", "audit_keys", multiple=True, metavar="PUBKEY", required=True)
def verify_receipt_cmd(
    receipt: Path, proof: Path, checkpoint: Path, audit_keys: tuple[str, ...]
) -> None:
    """Check a release RECEIPT (JSON or header value) is signed and included in a checkpoint."""
    try:
        trusted = _trusted(audit_keys)
        r = _read_receipt(receipt)
        verify_receipt(r, trusted)
        (cp,) = verify_checkpoints([checkpoint.read_bytes()], trusted)
        p = InclusionProof.from_json(proof.read_bytes())
        if p.index != r.seq:
            _fail(f"the proof is for seq {p.index}, the receipt for seq {r.seq}")
        verify_receipt_inclusion(r, p.hashes, cp)
    except ReceiptError as exc:
        _fail(f"receipt: {exc.message}")
    except ExportInvalid as exc:
        _fail(exc.message)
    except MerkleProofError as exc:
        _fail(f"inclusion: {exc.message}")
    except AuditKeyInvalid as exc:
        raise click.UsageError(f"--audit-key: {exc.message}") from None
    click.echo(
        f"OK: release record seq {r.seq} (receipt by {r.key_id}) is in checkpoint size {cp.size}"
    )


_FILTERS = ("resource", "decision", "tee", "measurement", "requester")


@audit.command("export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice([*sorted(EXPORT_FORMATS), "proofs"]),
    default="jsonl",
    show_default=True,
    help="jsonl can be verified offline; csv is for spreadsheets; ocsf for SIEMs.",
)
@click.option("--since", metavar="T", help="RFC 3339 time, e.g. 2025-01-01T00:00:00Z.")
@click.option("--until", metavar="T", help="RFC 3339 time, e.g. 2025-02-01T00:00:00Z.")
@click.option("--resource", help="Only records for this resource path.")
@click.option(
    "--decision", "--outcome", "decision", help="Only this decision: allow, deny, error, ok."
)
@click.option("--tee", help="Only this TEE type (e.g. snp, tdx, sample).")
@click.option("--measurement", help="Only records whose claims hold this measurement.")
@click.option("--requester", help="Only this client address or actor (or its hmac-sha256:).")
@click.option("--size", type=int, help="Export against the stored checkpoint of this size.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write here (atomically, on success) instead of stdout.",
)
@click.option(
    "--checkpoint-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Save the checkpoint the export is consistent with [default with --out: OUT.checkpoint].",
)
@click.option(
    "--proofs-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="For a filtered jsonl export: save per-record inclusion proofs "
    "[default with --out: OUT.proofs].",
)
@click.option(
    "--url",
    envvar="BROKER_ADDR",
    default=DEFAULT_ADDR,
    show_default=True,
    help="Broker base URL [env: BROKER_ADDR].",
)
@click.option("--token", envvar="BROKER_TOKEN", help="Auditor bearer token [env: BROKER_TOKEN].")
def export(
    *,
    fmt: str,
    since: str | None,
    until: str | None,
    resource: str | None,
    decision: str | None,
    tee: str | None,
    measurement: str | None,
    requester: str | None,
    size: int | None,
    out: Path | None,
    checkpoint_out: Path | None,
    proofs_out: Path | None,
    url: str,
    token: str | None,
) -> None:
    """Download an audit export from a running broker, with its checkpoint."""
    if not token:
        raise click.UsageError("no admin token: set BROKER_TOKEN or pass --token")
    token = _token_value(token)
    params = {"format": fmt}
    filters = {
        "resource": resource,
        "decision": decision,
        "tee": tee,
        "measurement": measurement,
        "requester": requester,
    }
    params.update({k: v for k, v in filters.items() if v is not None})
    if size is not None:
        params["size"] = str(size)
    filtered = any(v is not None for v in (since, until, *filters.values()))
    if out is not None and checkpoint_out is None:
        checkpoint_out = out.with_name(out.name + ".checkpoint")
    if out is not None and proofs_out is None and filtered and fmt == "jsonl":
        proofs_out = out.with_name(out.name + ".proofs")
    try:
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                parse_bound(value, name=name)  # fail here rather than after a round trip
                params[name] = value
        if out is None:
            headers = asyncio.run(_download(url, token, params, sys.stdout.buffer))
        else:
            headers = _download_to_file(url, token, params, out)
        note = _checkpoint_from(headers)
        if checkpoint_out is not None:
            if note is None:
                raise BrokerError("the broker sent no checkpoint with the export")
            _write_atomic(checkpoint_out, note.encode("utf-8"))
        if proofs_out is not None and note is not None:
            tree_size = headers.get(TREE_SIZE_HEADER, "")
            _download_to_file(
                url, token, {**params, "format": "proofs", "size": tree_size}, proofs_out
            )
    except BrokerError as exc:
        click.echo(f"error: {exc.diagnostics()}", err=True)
        sys.exit(1)


def _token_value(token: str) -> str:
    if token.startswith("@"):
        return Path(token[1:]).read_text(encoding="utf-8").strip()
    return token


def _checkpoint_from(headers: Mapping[str, str]) -> str | None:
    raw = headers.get(CHECKPOINT_HEADER)
    if raw is None:
        return None
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise BrokerError("the broker sent a malformed checkpoint header") from None


def _write_atomic(out: Path, data: bytes) -> None:
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as sink:
            sink.write(data)
            sink.flush()
            os.fsync(sink.fileno())
        partial.replace(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def _download_to_file(url: str, token: str, params: dict[str, str], out: Path) -> Mapping[str, str]:
    # A broken stream must not leave something that looks like a complete export.
    partial = out.with_name(out.name + ".partial")
    try:
        with partial.open("wb") as sink:
            headers = asyncio.run(_download(url, token, params, sink))
            sink.flush()
            os.fsync(sink.fileno())
        partial.replace(out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return headers


async def _download(
    url: str, token: str, params: dict[str, str], sink: BinaryIO
) -> Mapping[str, str]:
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
            return dict(resp.headers)
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
        elif isinstance(body, dict) and isinstance(body.get("type"), str):
            code = body["type"].rsplit("/", 1)[-1]
            detail += f" {code}: {body.get('detail', '')}"
    return f"broker refused the export: {detail}"


# -- talking to the broker: checkpoints, proofs, keys --------------------------------------------


def _get(url: str, path: str, token: str | None = None, *, method: str = "GET") -> bytes:
    if not url.startswith(("http://", "https://")):
        raise click.ClickException("--url must start with http:// or https://")
    headers = {} if token is None else {"Authorization": f"Bearer {_token_value(token)}"}
    request = urllib.request.Request(  # noqa: S310 - scheme checked above
        url.rstrip("/") + path, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - scheme checked
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            err = json.loads(raw)
            message = (
                f"{exc.code} {str(err.get('type', '')).rsplit('/', 1)[-1]}: {err.get('detail', '')}"
            )
        except ValueError:
            message = f"{exc.code} {exc.reason}"
        raise click.ClickException(message) from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach the broker at {url}: {exc.reason}") from None


def _emit(data: bytes, out: Path | None) -> None:
    if out is None:
        click.echo(data.decode("utf-8"), nl=not data.endswith(b"\n"))
    else:
        _write_atomic(out, data)


_out_option = click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout."
)


@audit.command("checkpoint")
@click.option("--size", type=int, help="A stored checkpoint of this tree size (default: latest).")
@click.option("--sign", is_flag=True, help="Ask the broker to sign one now (auditor token).")
@_out_option
@addr_option
@token_option
def checkpoint_cmd(
    size: int | None, sign: bool, out: Path | None, url: str, token: str | None
) -> None:
    """Fetch a signed checkpoint (public) or have one signed now."""
    if sign:
        note = _get(url, "/v1/audit/checkpoint", token or "", method="POST")
    else:
        note = _get(url, "/v1/audit/checkpoint" + (f"?size={size}" if size is not None else ""))
    _emit(note, out)


@audit.command("keys")
@_out_option
@addr_option
def keys_cmd(out: Path | None, url: str) -> None:
    """Fetch the broker's audit verifier keys (public), one a line, oldest first."""
    listed = json.loads(_get(url, "/v1/audit/keys"))
    text = "".join(f"{k['verifier_key']}\n" for k in listed["keys"])
    _emit(text.encode("utf-8"), out)


@audit.command("proof")
@click.argument("kind", type=click.Choice(["inclusion", "consistency"]))
@click.argument("first", type=int)
@click.argument("second", type=int)
@_out_option
@addr_option
@token_option
def proof_cmd(
    kind: str, first: int, second: int, out: Path | None, url: str, token: str | None
) -> None:
    """Fetch a proof: ``inclusion INDEX SIZE`` or ``consistency FROM TO`` (auditor token)."""
    if kind == "inclusion":
        path = f"/v1/audit/proof/inclusion?index={first}&size={second}"
    else:
        path = f"/v1/audit/proof/consistency?from={first}&to={second}"
    _emit(_get(url, path, token or ""), out)


@audit.command("rotate-key")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Rotate offline in this data dir (the broker must be stopped).",
)
@click.option("--origin", help="Offline: the log origin (default: attested-broker/audit).")
@addr_option
@token_option
def rotate_key_cmd(data_dir: Path | None, origin: str | None, url: str, token: str | None) -> None:
    """New checkpoints and receipts are signed with a new audit key; old keys stay published."""
    if data_dir is None:
        click.echo(json.dumps(call(url, token, "POST", "/v1/audit/rotate-key"), indent=2))
        return
    name = origin or "attested-broker/audit"
    store = SQLiteTransparencyStore(data_dir / "audit.db")
    now = datetime.now(UTC)
    try:
        store.create_sync()
        current = load_or_create_audit_key(data_dir, name=name)
        store.add_verifier_key_sync(current.key_id, current.verifier_key(), now)
        new = prepare_rotation(data_dir, name=name)
        store.add_verifier_key_sync(new.key_id, new.verifier_key(), now)
        commit_rotation(data_dir)
    except (BrokerError, sqlite3.Error) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"key_id": new.key_id, "verifier_key": new.verifier_key()}, indent=2))


@audit.command("hash-requester")
@click.argument("value")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Use the HMAC key in this data dir instead of asking the broker.",
)
@addr_option
@token_option
def hash_requester_cmd(value: str, data_dir: Path | None, url: str, token: str | None) -> None:
    """Print the hmac-sha256: value redacted exports show for a client address or actor."""
    if data_dir is not None:
        try:
            key = load_or_create_requester_key(data_dir, create=False)
        except BrokerError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(key.hash(value))
        return
    click.echo(call(url, token, "POST", "/v1/audit/hash-requester", {"value": value})["hash"])


def _since(text: str, now: datetime) -> datetime:
    match = re.fullmatch(r"(\d+)([dhm])", text.strip())
    if match is None:
        try:
            return parse_bound(text, name="since")
        except BrokerError as exc:
            raise click.UsageError(f"--since: {exc.message} (or use 30d, 12h, 90m)") from None
    amount, unit = int(match[1]), match[2]
    return now - timedelta(**{{"d": "days", "h": "hours", "m": "minutes"}[unit]: amount})


@audit.command("report")
@click.option("--since", default="30d", show_default=True, help="30d, 12h, 90m or RFC 3339.")
@click.option("--until", help="RFC 3339 time (default: now).")
@click.option(
    "--from-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Report on a JSONL export instead of asking the broker.",
)
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), help="Also write HTML.")
@addr_option
@token_option
def report_cmd(
    since: str, until: str | None, from_file: Path | None, html: Path | None, url: str,
    token: str | None,
) -> None:  # fmt: skip
    """Who received which key, and what was refused (text; HTML with charts)."""
    now = datetime.now(UTC)
    lo = _since(since, now)
    hi = parse_bound(until, name="until") if until else None
    try:
        if from_file is None:
            if not token:
                raise click.UsageError("no auditor token: set BROKER_TOKEN or pass --token")
            params = {"format": "jsonl", "since": lo.isoformat()}
            if hi is not None:
                params["until"] = hi.isoformat()
            buf = io.BytesIO()
            asyncio.run(_download(url, _token_value(token), params, buf))
            raw = buf.getvalue().splitlines(keepends=True)
        else:
            raw = from_file.read_bytes().splitlines(keepends=True)
        report = build_report(parse_jsonl(raw), since=lo, until=hi)
    except (BrokerError, AuditChainBroken) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(render_text(report), nl=False)
    if html is not None:
        _write_atomic(html, render_html(report).encode("utf-8"))
