"""A condition sees the same result whether it gets every claim or only those it names."""

from __future__ import annotations

from typing import Any

import cel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.policy._cel import compile_condition
from broker.policy.evaluate import _claims_read
from broker.policy.model import Condition

CONDITIONS = [
    "claims.vmpl == 0",
    "claims.tcb.snp >= 8 && claims.vmpl < 2",
    "has(claims.debug) && claims.debug == false",
    "!has(claims.missing)",
    "claims .measurement == 'ab' || claims.svn > 1",
    'claims.note == "claims.secret"',  # a string literal is not a claim read
    "size(claims) > 2",  # the map itself
    'claims["vmpl"] == 0',
    'claims.exists(k, k == "vmpl")',
    "[1, 2].exists(claims, claims > 1)",  # a macro variable shadows the name
    "claims.tcb.exists(k, k == 'snp')",
]
KEYS = ["vmpl", "tcb", "debug", "measurement", "svn", "note", "secret", "missing", "other"]
_values = st.one_of(
    st.integers(-3, 10),
    st.booleans(),
    st.sampled_from(["ab", "cd", "claims.secret"]),
    st.dictionaries(st.sampled_from(["snp", "tee"]), st.integers(0, 10), max_size=2),
)


def _condition(source: str) -> Condition:
    compiled = compile_condition(source)
    return Condition(
        0, source, compiled.program, compiled.refs, 1, 1, compiled.variables, compiled.claim_fields
    )


def _outcome(program: Any, claims: dict[str, Any]) -> object:
    try:
        return program.execute(cel.Context(variables={"claims": claims}))
    except Exception as exc:  # noqa: BLE001 - an error is an outcome to compare too
        return type(exc).__name__


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ("claims.vmpl == 0", {"vmpl"}),
        ("claims.tcb.snp >= 8 && claims.vmpl < 2", {"tcb", "vmpl"}),
        ('claims.note == "claims.secret"', {"note"}),
        ("size(claims) > 2", None),
        ('claims["vmpl"] == 0', None),
        ('claims.exists(k, k == "vmpl")', None),
        ("[1, 2].exists(claims, claims > 1)", None),
        ("claims.tcb.exists(k, k == 'snp')", {"tcb"}),
    ],
)
def test_the_fields_a_condition_reads(source: str, fields: set[str] | None) -> None:
    """Field reads are narrowed; any other use of the map keeps it whole."""
    expected = None if fields is None else frozenset(fields)
    assert compile_condition(source).claim_fields == expected


@settings(max_examples=300)
@given(claims=st.dictionaries(st.sampled_from(KEYS), _values, max_size=len(KEYS)))
def test_narrowed_claims_give_the_same_outcome(claims: dict[str, Any]) -> None:
    """Every condition, alone and all together, decides the same on narrowed claims."""
    conditions = [_condition(source) for source in CONDITIONS]
    for cond in conditions:
        narrowed = _claims_read([cond], claims)
        assert _outcome(cond.program, narrowed) == _outcome(cond.program, claims), cond.source
    together = _claims_read(conditions, claims)
    assert together == claims  # one condition needs the whole map: nothing is dropped
