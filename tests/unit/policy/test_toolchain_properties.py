"""Arbitrary input to the case-file parser and the importers raises only our errors."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import PolicyError
from broker.policy._paths import reads
from broker.policy.importers import IMPORTERS
from broker.policy.testing import parse_cases

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_case_parser_on_arbitrary_bytes(data: bytes) -> None:
    """Any bytes either parse into cases or raise PolicyError."""
    with contextlib.suppress(PolicyError):
        parse_cases({"t.yaml": data})


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(IMPORTERS)), _JSON)
def test_importers_on_arbitrary_json(kind: str, doc: object) -> None:
    """Any JSON value either converts or raises PolicyError (never another exception)."""
    with contextlib.suppress(PolicyError):
        IMPORTERS[kind](json.dumps(doc).encode(), name="x", resources=("a/b/c",))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_path_finder_never_raises(source: str) -> None:
    """Finding claim paths in any text returns a list."""
    assert isinstance(reads(source), list)
