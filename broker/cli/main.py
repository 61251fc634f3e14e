"""``broker``: the command line. Subcommands live in their own modules."""

from __future__ import annotations

import click

from broker import __version__
from broker.cli.audit import audit
from broker.cli.client import client
from broker.cli.evidence import evidence
from broker.cli.keys import keys
from broker.cli.policy import policy
from broker.cli.refs import refs
from broker.cli.root_key import root_key
from broker.cli.serve import serve
from broker.cli.tokens import tokens


@click.group()
@click.version_option(__version__, prog_name="broker")
def cli() -> None:
    """Attested key broker: verify TEE evidence, apply policy, release wrapped keys."""


cli.add_command(serve)
cli.add_command(keys)
cli.add_command(policy)
cli.add_command(refs)
cli.add_command(audit)
cli.add_command(client)
cli.add_command(evidence)
cli.add_command(root_key)
cli.add_command(tokens)


def main() -> None:
    cli(prog_name="broker")
