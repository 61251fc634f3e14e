"""Property tests: evaluate never crashes; garbage never loads."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.errors import PolicyError
from broker.policy.evaluate import evaluate
from broker.policy.load import load_policy_texts
from broker.policy.model import ReleaseRequest
from tests.unit.policy.conftest import NOW, REFS, REQUEST, doc

POLICY = doc(
    """
    version: 1
    name: p
    resources: ["default/*/*", "snp/*/*"]
    rules:
      - name: good
        tee: [sample, sev-snp, tdx]
        when:
          - claims.svn >= 1
          - claims.m in refs.good_measurements
          - claims.reported_tcb.snp >= 8 || claims.x.startsWith("a")
          - size(claims.list) > 0 && claims.list.all(v, v in refs.good_measurements)
      - name: no-debug
        tee: [sample, sev-snp, tdx]
        effect: deny
        when:
          - flags.debug
          - claims.svn / claims.div > 0
    """
)
POLICIES = load_policy_texts({"p.yaml": POLICY, "refs/r.yaml": REFS}, now=NOW)

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=8),
)
_json: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
_keys = st.sampled_from(["svn", "m", "reported_tcb", "x", "list", "div", "measurement"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tee=st.sampled_from(["sample", "sev-snp", "tdx", "nitro", "", "x"]),
    claims=st.dictionaries(st.one_of(_keys, st.text(max_size=6)), _json, max_size=8),
    flags=st.dictionaries(st.sampled_from(["debug", "tcb_out_of_date", "x"]), _json, max_size=3),
    resource=st.one_of(st.sampled_from(["default/key/1", "snp/a/b"]), st.text(max_size=20)),
    version=st.integers(min_value=-(2**70), max_value=2**70),
)
def test_random_claims_never_crash(
    tee: str, claims: dict[str, Any], flags: dict[str, Any], resource: str, version: int
) -> None:
    """Any claims, flags and request produce a Decision; a deny always has a reason."""
    request = ReleaseRequest(resource, version, True, "RSA-OAEP-256")
    decision = evaluate(POLICIES, tee=tee, claims=claims, flags=flags, request=request, now=NOW)
    assert decision.allow or decision.reasons
    if decision.allow:
        assert decision.matched_rule == "p/good"
        assert not any(t.matched for t in decision.trace if t.rule == "no-debug")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_load_without_policy_error(data: bytes) -> None:
    """Random bytes either raise PolicyError or (rarely) form a valid file."""
    for name in ("x.yaml", "refs/x.yaml"):
        with pytest.raises(PolicyError) as info:
            load_policy_texts({name: data}, now=NOW)
        assert info.value.path == name


_yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=10)),
    lambda c: st.one_of(
        st.lists(c, max_size=3), st.dictionaries(st.text(max_size=8), c, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["version", "name", "resources", "rules", "refs", "x"]),
        _yaml_values,
        max_size=5,
    )
)
def test_structured_garbage_raises_policy_error(document: dict[str, Any]) -> None:
    """Well-formed YAML with the wrong shape raises PolicyError, never another error."""
    text = json.dumps(document).encode()  # JSON is YAML
    for name in ("x.yaml", "refs/x.yaml"):
        try:
            load_policy_texts({name: text}, now=NOW)
        except PolicyError:
            continue
        raise AssertionError(f"loaded {document!r}")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_policy_raises_only_policy_error(data: st.DataObject) -> None:
    """Byte mutations of a valid policy either load or raise PolicyError."""
    text = bytearray(POLICY)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
        text[index] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        policies = load_policy_texts({"p.yaml": bytes(text), "refs/r.yaml": REFS}, now=NOW)
    except PolicyError:
        return
    evaluate(policies, tee="sample", claims={"svn": 1}, flags={}, request=REQUEST, now=NOW)
