"""broker.jcs is byte-for-byte rfc8785.dumps, errors included."""

from __future__ import annotations

from types import MappingProxyType

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import jcs


def _deep(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def _same(value: object) -> None:
    try:
        expected = rfc8785.dumps(value)
    except Exception as exc:  # noqa: BLE001 - the same exception type must come back
        with pytest.raises(type(exc)):
            jcs.dumps(value)
        return
    assert jcs.dumps(value) == expected


def test_every_code_point_below_u0800_escapes_as_jcs() -> None:
    """Strings and keys: control characters, quotes, backslash, DEL, Latin, Greek..."""
    text = "".join(chr(c) for c in range(0x800))
    _same(text)
    _same({text[:128]: text})
    for c in range(0x800):
        _same({chr(c): chr(c)})


@pytest.mark.parametrize(
    "value",
    [
        {"b": 1, "a": [True, None, "x"], "c": {"z": -1, "y": ""}},
        {"\ue000": 1, "\U0001d11e": 2},  # JCS sorts by UTF-16 code unit: the pair first
        {"\u00e9": 1, "e": 2},
        [1.5, 1e21, 1e-7, -0.0, 100.0],  # ECMAScript number spelling
        2**53 - 1,
        -(2**53 - 1),
        2**53,  # out of the I-JSON range: refused
        -(2**53),
        "\ud800",  # a lone surrogate: refused
        {"k": "\udfff"},
        (1, "two", (3,)),
        b"bytes",
        MappingProxyType({"a": 1}),
        {1: "non-string key"},
        float("nan"),
        _deep(70),
        True,
        None,
    ],
)
def test_edge_values_match_the_reference(value: object) -> None:
    _same(value)


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)
_plain_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53 - 1), max_value=2**53 - 1)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.text(st.characters(max_codepoint=127), max_size=8), children, max_size=5
        )
    ),
    max_leaves=30,
)


@settings(max_examples=400)
@given(_json)
def test_any_json_value_matches_the_reference(value: object) -> None:
    _same(value)


@settings(max_examples=400)
@given(_plain_json)
def test_plain_values_take_the_fast_path_and_match(value: object) -> None:
    """The fast path itself (no fallback) is what produces the reference bytes."""
    assert jcs._plain(value, 0)
    _same(value)
