"""Resource id validation."""

from __future__ import annotations

import pytest

from broker.errors import InvalidResourcePath
from broker.service.resources import parse_resource_id


@pytest.mark.parametrize("good", ["default/key/demo", "a/b/c", "repo.x/type_1/tag-2"])
def test_valid(good: str) -> None:
    """Ordinary ids pass."""
    assert parse_resource_id(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "..",
        "a/../b",
        "a/b/..",
        "a//b",
        "a/b",
        "a/b/c/d",
        "/a/b",
        "a/b/" + "x" * 200,
        "a/b/.hidden",
        "a/b/c d",
        "a/b/%2e%2e",
        "",
    ],
)
def test_invalid(bad: str) -> None:
    """Traversal, empty, over-long and odd segments are refused."""
    with pytest.raises(InvalidResourcePath):
        parse_resource_id(bad)
