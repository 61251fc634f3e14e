"""``broker policy``: commands for policy authors.

``broker policy lint [DIR]`` prints one ``file:line:col: severity: message``
line per finding and exits 1 when any is an error (or, with ``--strict``, a
warning), so CI can gate policy changes on it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from broker.policy.lint import ERROR, lint_dir


@click.group(name="policy")
def policy() -> None:
    """Check and explain release policies."""


@policy.command(name="lint")
@click.argument(
    "directory",
    required=False,
    default="policies",
    type=click.Path(file_okay=False, path_type=Path),
)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def lint(directory: Path, *, strict: bool) -> None:
    """Report every error and warning in the policy DIRECTORY (default: policies)."""
    diagnostics = lint_dir(directory, now=datetime.now(UTC))
    for diag in diagnostics:
        click.echo(diag.format())
    errors = sum(1 for d in diagnostics if d.severity == ERROR)
    warnings = len(diagnostics) - errors
    click.echo(f"{errors} error(s), {warnings} warning(s)", err=True)
    if errors or (strict and warnings):
        raise SystemExit(1)
