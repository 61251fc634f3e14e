"""README's quickstart is what CI runs, and its commands exist."""

from __future__ import annotations

import re

from click.testing import CliRunner

from broker.cli.main import cli
from tests.vectors import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def _quickstart_commands() -> list[str]:
    block = re.search(r"## Quickstart.*?```sh\n(.*?)```", README, re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line and not line.startswith("#")]


def test_exactly_two_setup_commands() -> None:
    """The quickstart has exactly two set-up commands."""
    assert len(_quickstart_commands()) == 2


def test_ci_runs_readme_test_command() -> None:
    """.ci/run calls README's test command verbatim."""
    test_command = _quickstart_commands()[1]
    assert test_command in (REPO_ROOT / ".ci" / "run").read_text().splitlines()


def test_documented_cli_commands_exist() -> None:
    """Every `broker ...` command line shown in the README names a real command."""
    runner = CliRunner()
    blocks = "\n".join(re.findall(r"```sh\n(.*?)```", README, re.S))
    code = "\n".join(line.split("#")[0] for line in blocks.splitlines())
    for line in re.findall(
        r"(?:^|[\s;&|])(?:\.venv/bin/)?broker ([a-z][a-z-]*(?: [a-z][a-z-]*)?)", code, re.M
    ):
        words = [w for w in line.split() if not w.startswith("-")]
        result = runner.invoke(cli, [*words, "--help"])
        if result.exit_code != 0:  # a one-word command followed by an argument
            result = runner.invoke(cli, [words[0], "--help"])
        assert result.exit_code == 0, line
