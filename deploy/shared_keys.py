"""Make the files every replica of one broker must share, in an empty directory.

    python deploy/shared_keys.py DIR [--origin NAME]

Writes ``token-signing-key.pem`` (an attestation token minted by one replica must verify
on the others), ``audit-signing-key.pem`` (checkpoints of the one shared audit log) and
``audit-requester-hmac.key`` (the same requester pseudonyms from every replica), each 0600.
Load them into the Secret ``attested-broker-keys`` (Kubernetes) or the ``broker-keys``
volume (compose); the directory itself should then be deleted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from broker.adapters.audit_keys import load_or_create_audit_key, load_or_create_requester_key
from broker.adapters.datadir import TOKEN_KEY_FILE, load_or_create_token_key, prepare_data_dir
from broker.errors import BrokerError


def make_shared_keys(directory: Path, *, origin: str) -> list[Path]:
    """Create the three files (existing ones are kept) and return their paths."""
    prepare_data_dir(directory)
    load_or_create_token_key(directory / TOKEN_KEY_FILE)
    load_or_create_audit_key(directory, name=origin)
    load_or_create_requester_key(directory)
    return sorted(p for p in directory.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--origin",
        default="attested-broker/audit",
        help="the audit log origin (audit.origin, or '<kbs.issuer>/audit')",
    )
    args = parser.parse_args(argv)
    try:
        for path in make_shared_keys(args.directory, origin=args.origin):
            sys.stdout.write(f"{path}\n")
    except BrokerError as exc:
        sys.stderr.write(f"error: {exc.diagnostics()}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
