"""``broker policy``: commands for policy authors.

    broker policy lint [DIR] [--strict] [--production]
    broker policy test [DIR] [--evidence-dir DIR] [--require-evidence]
    broker policy explain --resource ID (--evidence FILE --tee TEE [--at T]
                          [--collateral F] [--vcek F] | --claims FILE) [--json]
    broker policy simulate DRAFT_DIR [--since 30d] [--data-dir DIR | --url U --token T]
    broker policy import --from azure-skr|ita-kbs FILE --name NAME --resource GLOB

Exit status: 0 fine, 1 findings / failures / refused input (for CI gates).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from broker.cli._admin import addr_option, call, token_option
from broker.errors import BrokerError
from broker.policy.evidence_files import EvidenceFiles, verify_files
from broker.policy.explain import explain as explain_decision
from broker.policy.explain import format_text
from broker.policy.importers import IMPORTERS
from broker.policy.lint import ERROR, lint_dir
from broker.policy.load import load_policy_dir, load_policy_texts, read_policy_dir
from broker.policy.model import ReleaseRequest
from broker.policy.simulate import format_text as format_simulation
from broker.policy.simulate import parse_since
from broker.policy.simulate import simulate as simulate_sets
from broker.policy.testing import FAIL, SKIP, evidence_source, parse_cases, read_cases, run_case

_DIR = click.Path(file_okay=False, path_type=Path)
_FILE = click.Path(dir_okay=False, path_type=Path)


def default_evidence_dir(policy_dir: Path) -> Path:
    """``$BROKER_EVIDENCE_DIR``, else ``shared/evidence`` beside the policy dir's repository."""
    configured = os.environ.get("BROKER_EVIDENCE_DIR")
    if configured:
        return Path(configured)
    return policy_dir.resolve().parent.parent / "shared" / "evidence"


def _time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text[:40]!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise click.BadParameter(f"{text[:40]!r} has no UTC offset (append Z)")
    return when


def _fail(exc: BrokerError) -> None:
    click.echo(f"error: {exc.diagnostics()}", err=True)
    raise SystemExit(1)


@click.group(name="policy")
def policy() -> None:
    """Check, test, explain, simulate and import release policies."""


@policy.command(name="lint")
@click.argument("directory", required=False, default="policies", type=_DIR)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
@click.option("--production", is_flag=True, help="Refuse policies marked environment: dev.")
def lint(directory: Path, *, strict: bool, production: bool) -> None:
    """Report every error and warning in the policy DIRECTORY (default: policies)."""
    diagnostics = lint_dir(directory, now=datetime.now(UTC), production=production)
    for diag in diagnostics:
        click.echo(diag.format())
    errors = sum(1 for d in diagnostics if d.severity == ERROR)
    warnings = len(diagnostics) - errors
    click.echo(f"{errors} error(s), {warnings} warning(s)", err=True)
    if errors or (strict and warnings):
        raise SystemExit(1)


@policy.command(name="test")
@click.argument("directory", required=False, default="policies", type=_DIR)
@click.option("--evidence-dir", type=_DIR, default=None, help="Where case evidence paths point.")
@click.option("--require-evidence", is_flag=True, help="A skipped case fails the run.")
def test(directory: Path, evidence_dir: Path | None, *, require_evidence: bool) -> None:
    """Run the cases in DIRECTORY/tests/*.yaml against the policies in DIRECTORY."""
    evidence_dir = evidence_dir or default_evidence_dir(directory)
    now = datetime.now(UTC)
    try:
        policies = load_policy_dir(directory, now=now)
        cases = parse_cases(read_cases(directory / "tests"), base=str(directory / "tests"))
    except BrokerError as exc:
        _fail(exc)
        return
    if not cases:
        click.echo(f"error: no test cases in {directory / 'tests'}", err=True)
        raise SystemExit(1)
    source = evidence_source(evidence_dir)
    results = [run_case(case, policies, source, now) for case in cases]
    for result in results:
        click.echo(result.format())
    failed = sum(r.status == FAIL for r in results)
    skipped = sum(r.status == SKIP for r in results)
    click.echo(f"{len(results) - failed - skipped} passed, {failed} failed, {skipped} skipped")
    if failed or (require_evidence and skipped):
        raise SystemExit(1)


@policy.command(name="explain")
@click.option("--resource", required=True, help="Resource id repo/type/tag.")
@click.option("--policies", "directory", default="policies", type=_DIR, show_default=True)
@click.option("--evidence", type=_FILE, default=None, help="Evidence file (verified first).")
@click.option("--tee", default=None, help="TEE of --evidence.")
@click.option("--at", default=None, help="Verification and evaluation time (RFC 3339).")
@click.option("--collateral", type=_FILE, default=None, help="DCAP collateral JSON.")
@click.option("--vcek", type=_FILE, default=None, help="VCEK/VLEK certificate (SEV-SNP).")
@click.option(
    "--claims", "claims_file", type=_FILE, default=None, help='{"tee", "claims", "flags"}'
)
@click.option("--version", "key_version", type=int, default=1, show_default=True)
@click.option("--wrap-alg", default="RSA-OAEP-256", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the explanation as JSON.")
def explain(
    resource: str,
    directory: Path,
    evidence: Path | None,
    tee: str | None,
    at: str | None,
    collateral: Path | None,
    vcek: Path | None,
    claims_file: Path | None,
    key_version: int,
    wrap_alg: str,
    *,
    as_json: bool,
) -> None:
    """Show the decision for RESOURCE and, per rule, every condition's inputs."""
    if (evidence is None) == (claims_file is None):
        raise click.UsageError("give exactly one of --evidence (with --tee) and --claims")
    now = _time(at)
    try:
        policies = load_policy_dir(directory, now=now)
        if evidence is not None:
            if tee is None:
                raise click.UsageError("--evidence needs --tee")
            verified = verify_files(EvidenceFiles(tee, evidence, now, collateral, vcek))
            tee, claims, flags = verified.tee, dict(verified.claims), dict(verified.flags)
        else:
            assert claims_file is not None
            tee, claims, flags = _claims_document(claims_file)
    except BrokerError as exc:
        _fail(exc)
        return
    report = explain_decision(
        policies,
        tee=tee,
        claims=claims,
        flags=flags,
        request=ReleaseRequest(resource, key_version, True, wrap_alg),
        now=now,
    )
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else format_text(report))


def _claims_document(path: Path) -> tuple[str, dict[str, Any], dict[str, bool]]:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"--claims {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), dict):
        raise click.BadParameter('--claims must hold {"tee": ..., "claims": {...}, "flags": {...}}')
    flags = doc.get("flags") or {}
    if not isinstance(flags, dict):
        raise click.BadParameter("--claims: flags must be an object")
    return str(doc.get("tee", "")), doc["claims"], flags


@policy.command(name="simulate")
@click.argument("draft", type=_DIR)
@click.option("--since", default="30d", show_default=True, help="How far back to replay.")
@click.option("--live", "live_dir", default="policies", type=_DIR, show_default=True)
@click.option("--data-dir", type=_DIR, default=None, help="Read the audit log of this data dir.")
@addr_option
@token_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def simulate(
    draft: Path,
    since: str,
    live_dir: Path,
    data_dir: Path | None,
    url: str,
    token: str | None,
    *,
    as_json: bool,
) -> None:
    """Replay recent attestations against DRAFT and the live set: who loses or gains access."""
    now = datetime.now(UTC)
    try:
        files = read_policy_dir(draft)
        window = parse_since(since)
        if data_dir is None:
            body = {name: data.decode("utf-8") for name, data in files.items()}
            report = call(url, token, "POST", f"/v1/policies/simulate?since={since}", body)
            click.echo(json.dumps(report, indent=2) if as_json else _remote_text(report))
            return
        draft_set = load_policy_texts(files, now=now, base=str(draft))
        live_set = load_policy_dir(live_dir, now=now)
        audit_db = data_dir / "audit.db"
        if not audit_db.is_file():
            raise click.ClickException(f"no audit log at {audit_db}")
        records = asyncio.run(_read_audit(audit_db, now - window))
    except BrokerError as exc:
        _fail(exc)
        return
    result = simulate_sets(records, live=live_set, draft=draft_set, now=now)
    click.echo(json.dumps(result.to_dict(), indent=2) if as_json else format_simulation(result))


async def _read_audit(path: Path, since: datetime) -> list[dict[str, Any]]:
    from broker.adapters.sqlite_audit import SQLiteAuditLog  # noqa: PLC0415 - only this command

    log = SQLiteAuditLog(path)
    await log.start()
    try:
        return [r.to_dict() async for r in log.iter_records(since, None)]
    finally:
        await log.close()


def _remote_text(report: dict[str, Any]) -> str:
    lines = [
        f"live  {report.get('live_digest')}",
        f"draft {report.get('draft_digest')}",
        f"{report.get('subjects')} attested TEE(s), {report.get('requests')} request(s) replayed",
    ]
    for title in ("lose", "gain"):
        for c in report.get(title, []):
            lines.append(
                f"{title.upper()} {c['resource']}  tee={c['tee']}  "
                f"measurement={c['measurement'] or '-'}  requests={c['count']}"
            )
    return "\n".join(lines)


@policy.command(name="import")
@click.option("--from", "kind", type=click.Choice(sorted(IMPORTERS)), required=True)
@click.argument("source", type=_FILE)
@click.option("--name", required=True, help="Name of the new policy.")
@click.option("--resource", "resources", multiple=True, required=True, help="Resource glob.")
@click.option("--output", "-o", type=_FILE, default=None, help="Write here instead of stdout.")
def import_policy(
    kind: str, source: Path, name: str, resources: tuple[str, ...], output: Path | None
) -> None:
    """Convert a foreign key-release policy (Azure SKR, ITA KBS) into a policy file."""
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise click.ClickException(f"cannot read {source}: {exc.strerror}") from None
    try:
        text, notes = IMPORTERS[kind](data, name=name, resources=resources)
    except BrokerError as exc:
        _fail(exc)
        return
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
