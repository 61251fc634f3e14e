"""Audit record format v1: events, canonical bytes, hashing, strict parsing."""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.claims import freeze_claims
from broker.audit.record import (
    FORMAT_VERSION,
    GENESIS_HASH,
    MAX_DETAIL_CHARS,
    RECORD_KEYS,
    AuditEvent,
    AuditHashMismatch,
    AuditRecord,
    AuditRecordInvalid,
    chain_next,
    format_time,
    parse_time,
)
from broker.errors import BrokerError

from ._factory import T0, make_chain, make_event


def test_first_record_starts_at_genesis() -> None:
    """The first record has seq 0 and the all-zero prev_hash."""
    record = chain_next(None, make_event())
    assert record.seq == 0
    assert record.prev_hash == GENESIS_HASH
    assert record.format == FORMAT_VERSION


def test_next_record_links_to_previous_hash() -> None:
    """chain_next numbers consecutively and links to the previous record's hash."""
    a, b, c = make_chain(3)
    assert (b.seq, c.seq) == (1, 2)
    assert b.prev_hash == a.hash
    assert c.prev_hash == b.hash


def test_hash_is_sha256_of_jcs_without_hash() -> None:
    """hash = SHA-256 hex of the RFC 8785 bytes of the record dict minus 'hash'."""
    record = chain_next(None, make_event())
    body = record.to_dict(with_hash=False)
    assert "hash" not in body
    assert record.canonical_bytes() == rfc8785.dumps(body)
    assert record.hash == hashlib.sha256(rfc8785.dumps(body)).hexdigest()


def test_to_dict_has_exactly_the_v1_fields() -> None:
    """The record dict holds the documented v1 field set, hash last."""
    d = chain_next(None, make_event()).to_dict()
    assert list(d) == [
        "format", "seq", "prev_hash", "event", "time", "request_id", "client", "actor",
        "tee", "evidence_digest", "claims", "policy_digest", "decision", "reasons",
        "resource", "version", "wrap_alg", "pubkey_thumbprint", "detail", "error_code", "hash",
    ]  # fmt: skip


def test_round_trip_through_json() -> None:
    """from_dict(json(to_dict())) gives an equal record with the same hash."""
    for record in make_chain(4):
        back = AuditRecord.from_dict(json.loads(json.dumps(record.to_dict())))
        assert back == record
        assert back.hash == record.hash


def test_time_is_utc_with_microseconds() -> None:
    """Times are stored as RFC 3339 UTC with six fractional digits, whatever the input zone."""
    cet = timezone(timedelta(hours=1))
    record = chain_next(None, make_event(time=datetime(2025, 1, 1, 1, 0, tzinfo=cet)))
    assert record.to_dict()["time"] == "2025-01-01T00:00:00.000000Z"
    assert format_time(T0) == "2025-01-02T03:04:05.678901Z"
    assert parse_time("2025-01-02T03:04:05.678901Z") == T0


@pytest.mark.parametrize(
    "text",
    [
        "2025-01-02T03:04:05Z",
        "2025-01-02T03:04:05.678901+00:00",
        "2025-01-02 03:04:05.678901Z",
        "2025-02-30T03:04:05.000000Z",
        "2025-01-02T03:04:05.6789Z",
    ],
)
def test_parse_time_accepts_only_the_record_spelling(text: str) -> None:
    """Any other spelling of a time, or an impossible date, is rejected."""
    with pytest.raises(AuditRecordInvalid):
        parse_time(text)


def test_event_rejects_naive_time() -> None:
    """A naive datetime cannot be placed in UTC and is refused."""
    with pytest.raises(AuditRecordInvalid, match="timezone-aware"):
        make_event(time=datetime(2025, 1, 1))


@pytest.mark.parametrize("name", ["Kbs.auth", "kbs", "kbs..auth", "kbs.auth.", "kbs auth", ""])
def test_event_name_must_be_dotted_lowercase(name: str) -> None:
    """Event names follow the dotted component.event pattern."""
    with pytest.raises(AuditRecordInvalid, match="event"):
        make_event(event=name)


def test_event_rejects_unknown_decision() -> None:
    """Decision is one of allow, deny, error, ok."""
    with pytest.raises(AuditRecordInvalid, match="decision"):
        make_event(decision="maybe")


def test_event_normalises_claims_deeply_and_immutably() -> None:
    """Claims are copied (mutating the input later changes nothing) and frozen."""
    claims: dict[str, Any] = {"pcrs": [1, 2], "nested": {"k": "v"}}
    event = make_event(claims=claims)
    claims["pcrs"].append(3)
    claims["nested"]["k"] = "changed"
    record = chain_next(None, event)
    assert record.to_dict()["claims"] == {"pcrs": [1, 2], "nested": {"k": "v"}}
    assert record.claims is not None
    with pytest.raises(TypeError):
        record.claims["new"] = 1  # type: ignore[index]


def test_event_records_unsafe_integers_as_text() -> None:
    """Integers beyond +/-(2**53-1) become decimal strings so JCS can encode them."""
    event = make_event(claims={"reported_tcb": 2**63 + 5, "small": 2**53 - 1})
    d = chain_next(None, event).to_dict()
    assert d["claims"] == {"reported_tcb": str(2**63 + 5), "small": 2**53 - 1}


@pytest.mark.parametrize(
    "claims",
    [
        {"x": float("nan")},
        {"x": float("inf")},
        {"x": b"raw"},
        {1: "non-str key"},
        {"x": {"y": object()}},
    ],
)
def test_event_rejects_non_json_claims(claims: dict[Any, Any]) -> None:
    """Claims must be JSON: no NaN, bytes, non-string keys or objects."""
    with pytest.raises(AuditRecordInvalid):
        make_event(claims=claims)


def test_event_rejects_claims_that_are_not_an_object() -> None:
    """Claims are a JSON object or None."""
    with pytest.raises(AuditRecordInvalid):
        make_event(claims=["a", "list"])


def test_event_rejects_too_deep_claims() -> None:
    """Pathologically nested claims are refused rather than recursed into."""
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(40):
        cursor["n"] = {}
        cursor = cursor["n"]
    with pytest.raises(AuditRecordInvalid, match="deeper"):
        make_event(claims=deep)


def test_event_cuts_long_detail() -> None:
    """A long detail is cut to MAX_DETAIL_CHARS rather than failing the request."""
    event = make_event(detail="x" * (MAX_DETAIL_CHARS + 50))
    assert len(event.detail) == MAX_DETAIL_CHARS
    assert event.detail.endswith("\u2026")


def test_event_repairs_lone_surrogates() -> None:
    """Text that is not valid Unicode (lone surrogates) is repaired so it can be hashed."""
    event = make_event(request_id="abc\udcff", reasons=["r\ud800"])
    record = chain_next(None, event)
    assert record.request_id == "abc?"
    assert record.reasons == ("r?",)


def test_event_accepts_list_reasons_and_rejects_non_string_reason() -> None:
    """Reasons may be given as a list but must be strings."""
    assert make_event(reasons=["a", "b"]).reasons == ("a", "b")
    with pytest.raises(AuditRecordInvalid, match="reasons"):
        make_event(reasons=("a", 3))


@pytest.mark.parametrize("version", [-1, True, 1.0, "3", 2**60])
def test_event_rejects_bad_version(version: object) -> None:
    """The key version is a non-negative integer or None; bools and floats are refused."""
    with pytest.raises(AuditRecordInvalid, match="version"):
        make_event(version=version)


def test_event_has_no_field_for_key_material() -> None:
    """The event type cannot carry key material: no key/secret/plaintext field exists."""
    names = set(AuditEvent.__dataclass_fields__)
    for forbidden in ("key", "secret", "plaintext", "wrapped_key", "data_key", "token"):
        assert forbidden not in names


# -- from_dict strictness ---------------------------------------------------------------------


def _good() -> dict[str, Any]:
    return chain_next(None, make_event()).to_dict()


def _mutate(**changes: Any) -> dict[str, Any]:
    d = _good()
    d.update(changes)
    return d


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({k: v for k, v in _good().items() if k != "tee"}, "missing field 'tee'"),
        (_mutate(extra=1), "unknown field 'extra'"),
        (_mutate(format=2), "format"),
        (_mutate(format=True), "format"),
        (_mutate(format="1"), "format"),
        (_mutate(seq=-1), "seq"),
        (_mutate(seq=True), "seq"),
        (_mutate(seq=1.5), "seq"),
        (_mutate(prev_hash="AB" * 32), "prev_hash"),
        (_mutate(prev_hash="0" * 63), "prev_hash"),
        (_mutate(time="2025-01-02T03:04:05Z"), "time"),
        (_mutate(time=5), "time"),
        (_mutate(tee=None), "tee"),
        (_mutate(claims=[1]), "claims"),
        (_mutate(claims={"x": 2**60}), "2\\*\\*53"),
        (_mutate(reasons="a"), "reasons"),
        (_mutate(reasons=[1]), "reasons"),
        (_mutate(decision="yes"), "decision"),
        (_mutate(detail="x" * (MAX_DETAIL_CHARS + 1)), "detail"),
        (_mutate(version=1.0), "version"),
        (_mutate(hash="00" * 32), "hash does not match"),
    ],
)
def test_from_dict_is_strict(data: dict[str, Any], match: str) -> None:
    """Every deviation from the v1 schema raises AuditRecordInvalid naming the problem."""
    with pytest.raises(AuditRecordInvalid, match=match):
        AuditRecord.from_dict(data)


def test_from_dict_seq_zero_requires_genesis() -> None:
    """A record claiming seq 0 must link to the genesis hash."""
    with pytest.raises(AuditRecordInvalid, match="genesis"):
        AuditRecord.from_dict(_mutate(prev_hash="1" * 64))


def test_hash_mismatch_is_its_own_error() -> None:
    """A wrong hash raises AuditHashMismatch (a BrokerError with a stable code)."""
    with pytest.raises(AuditHashMismatch) as info:
        AuditRecord.from_dict(_mutate(detail="edited"))
    assert isinstance(info.value, BrokerError)
    assert info.value.code == "AuditHashMismatch"


def test_from_dict_without_hash_computes_it() -> None:
    """Without a 'hash' member, from_dict accepts the record and computes the hash."""
    d = _good()
    expected = d.pop("hash")
    assert AuditRecord.from_dict(d).hash == expected


def test_from_dict_rejects_non_mapping() -> None:
    """A JSON array or string is not a record."""
    with pytest.raises(AuditRecordInvalid, match="not a JSON object"):
        AuditRecord.from_dict([1, 2])  # type: ignore[arg-type]


def test_records_are_frozen() -> None:
    """Records cannot be modified after construction."""
    record = chain_next(None, make_event())
    with pytest.raises(AttributeError):
        record.seq = 5  # type: ignore[misc]


def test_record_time_keeps_microseconds() -> None:
    """Microseconds survive the round trip, so two close events stay distinguishable."""
    t = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(microseconds=7)
    record = chain_next(None, make_event(time=t))
    assert AuditRecord.from_dict(record.to_dict()).time == t


# -- property: from_dict and AuditEvent raise only AuditRecordInvalid -------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(key=st.sampled_from(sorted(RECORD_KEYS)), value=_json)
def test_from_dict_with_any_field_value_raises_only_our_error(key: str, value: Any) -> None:
    """Replacing any field with any JSON value parses or raises AuditRecordInvalid only."""
    data = _good()
    data[key] = value
    try:
        record = AuditRecord.from_dict(data)
    except AuditRecordInvalid:
        return
    assert record.to_dict()[key] == value or key == "hash"


@settings(max_examples=200)
@given(
    key=st.sampled_from([f.name for f in fields(AuditEvent) if f.init and f.name != "time"]),
    value=_json | st.binary() | st.builds(object),
)
def test_event_with_any_field_value_raises_only_our_error(key: str, value: Any) -> None:
    """An event built from arbitrary values is either valid or rejected with AuditRecordInvalid."""
    try:
        event = make_event(**{key: value})
    except AuditRecordInvalid:
        return
    chain_next(None, event)


# Floats of 2**53 and more are written as integers by RFC 8785 and so do not
# read back; the format refuses those on parsing (tested above).
_round_trip_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(-1e15, 1e15) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    claims=st.dictionaries(st.text(), _round_trip_json, max_size=6),
    detail=st.text(max_size=40),
    resource=st.text(max_size=20),
)
def test_canonical_and_body_bytes_are_rfc8785_for_any_claims(
    claims: dict[str, Any], detail: str, resource: str
) -> None:
    """The spliced canonical and stored bytes equal the reference RFC 8785 encoding."""
    try:
        event = make_event(claims=claims, detail=detail, resource=resource)
    except AuditRecordInvalid:
        return  # e.g. a non-finite float: refused, never encoded
    record = chain_next(None, event)
    assert record.canonical_bytes() == rfc8785.dumps(record.to_dict(with_hash=False))
    assert record.body_bytes() == rfc8785.dumps(record.to_dict(with_hash=True))
    again = AuditRecord.from_dict(json.loads(record.body_bytes()))
    assert again.hash == record.hash
    assert again.body_bytes() == record.body_bytes()


@settings(max_examples=100)
@given(claims=st.dictionaries(st.text(), _round_trip_json, max_size=6))
def test_frozen_claims_make_the_same_record(claims: dict[str, Any]) -> None:
    """Claims frozen once (freeze_claims) give the record plain claims would give."""
    try:
        frozen = freeze_claims(claims)
    except AuditRecordInvalid:
        with pytest.raises(AuditRecordInvalid):
            make_event(claims=claims)
        return
    plain = chain_next(None, make_event(claims=claims))
    reused = chain_next(None, make_event(claims=frozen))
    assert reused == plain
    assert reused.canonical_bytes() == plain.canonical_bytes()
    assert reused.body_bytes() == plain.body_bytes()
