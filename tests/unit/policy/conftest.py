"""Helpers shared by the policy tests."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

from broker.policy.model import ReleaseRequest

NOW = datetime(2026, 1, 1, tzinfo=UTC)
REQUEST = ReleaseRequest(
    resource="default/key/1", version=1, is_current=True, wrap_alg="RSA-OAEP-256"
)


def doc(text: str) -> bytes:
    """YAML text with the test's indentation removed."""
    return textwrap.dedent(text).lstrip("\n").encode()


REFS = doc(
    """
    version: 1
    refs:
      good_measurements:
        description: test
        source: unit test
        added_by: tests
        values: ["aa", "bb"]
    """
)
