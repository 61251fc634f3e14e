"""Chain verification: every kind of tampering is caught at the first broken record."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.audit.chain import AuditChainBroken, ChainReport, verify_chain, verify_jsonl
from broker.audit.record import GENESIS_HASH, AuditRecord, chain_next
from broker.errors import BrokerError

from ._factory import export_bytes, make_chain, make_event


def _dicts(records: list[AuditRecord]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in records]


def _lines(data: bytes) -> list[bytes]:
    # As ``open(path, "rb")`` yields them: split after b"\n" only.
    return list(io.BytesIO(data))


def _broken(records: Any, **kwargs: Any) -> AuditChainBroken:
    with pytest.raises(AuditChainBroken) as info:
        verify_chain(records, **kwargs)
    return info.value


def test_intact_chain_verifies() -> None:
    """An untouched chain verifies and reports count, range and head."""
    records = make_chain(6)
    report = verify_chain(_dicts(records), require_genesis=True, expected_head=records[-1].hash)
    assert report == ChainReport(
        count=6, head_hash=records[-1].hash, first_seq=0, last_seq=5, first_prev_hash=GENESIS_HASH
    )
    assert report.from_genesis


def test_error_is_a_broker_error_with_index() -> None:
    """AuditChainBroken is a BrokerError with code AuditChainBroken, index and reason."""
    dicts = _dicts(make_chain(3))
    dicts[1]["detail"] = "edited"
    err = _broken(dicts)
    assert isinstance(err, BrokerError)
    assert err.code == "AuditChainBroken"
    assert err.index == 1
    assert "record 1" in err.diagnostics()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("decision", "deny"),
        ("resource", "tenant-b/db/key"),
        ("claims", {"measurement": "ff" * 48}),
        ("reasons", []),
        ("version", 4),
        ("time", "2030-01-01T00:00:00.000000Z"),
    ],
)
def test_modified_field_is_detected_at_its_record(field: str, value: Any) -> None:
    """Editing any field of record 2 breaks its self-hash: reported at index 2."""
    dicts = _dicts(make_chain(5))
    dicts[2][field] = value
    err = _broken(dicts)
    assert err.index == 2
    assert err.reason.startswith("modified record")


def test_modified_record_with_recomputed_hash_breaks_the_next_link() -> None:
    """Re-hashing an edited record moves the failure to the next record's prev_hash."""
    records = make_chain(5)
    dicts = _dicts(records)
    edited = {k: v for k, v in dicts[2].items() if k != "hash"}
    edited["detail"] = "edited"
    dicts[2] = AuditRecord.from_dict(edited).to_dict()
    err = _broken(dicts)
    assert err.index == 3
    assert "prev_hash" in err.reason


def test_deleted_record_is_detected() -> None:
    """Removing record 2 leaves a sequence gap at index 2."""
    dicts = _dicts(make_chain(5))
    del dicts[2]
    err = _broken(dicts)
    assert err.index == 2
    assert "expected seq 2, found 3" in err.reason


def test_inserted_copy_is_detected() -> None:
    """A duplicated record inserted after record 1 is caught at index 2."""
    dicts = _dicts(make_chain(5))
    dicts.insert(2, dict(dicts[1]))
    err = _broken(dicts)
    assert err.index == 2
    assert "sequence break" in err.reason


def test_inserted_forged_record_is_detected() -> None:
    """A well-formed, correctly linked forgery still breaks the sequence after it."""
    records = make_chain(5)
    forged = chain_next(records[1], make_event(99, detail="forged"))
    dicts = _dicts(records)
    dicts.insert(2, forged.to_dict())
    err = _broken(dicts)
    assert err.index == 3


def test_swapped_records_are_detected() -> None:
    """Swapping records 2 and 3 is caught at index 2."""
    dicts = _dicts(make_chain(5))
    dicts[2], dicts[3] = dicts[3], dicts[2]
    err = _broken(dicts)
    assert err.index == 2


def test_replaced_prev_hash_is_detected() -> None:
    """A record from another chain with the right seq but a foreign prev_hash is caught."""
    ours = make_chain(4)
    theirs = make_chain(4, client="10.0.0.9")
    dicts = _dicts(ours)
    dicts[2] = theirs[2].to_dict()
    err = _broken(dicts)
    assert err.index == 2
    assert "prev_hash" in err.reason


@pytest.mark.parametrize("drop", ["hash", "seq", "claims"])
def test_missing_field_is_malformed(drop: str) -> None:
    """A record missing a field is reported as malformed at its index."""
    dicts = _dicts(make_chain(3))
    del dicts[1][drop]
    err = _broken(dicts)
    assert err.index == 1
    assert err.reason.startswith("malformed record")


def test_non_object_record_is_malformed() -> None:
    """A non-object entry in the input is malformed at its index."""
    dicts: list[Any] = _dicts(make_chain(3))
    dicts[2] = ["not", "a", "record"]
    err = _broken(dicts)
    assert err.index == 2


def test_window_not_from_genesis_verifies_unless_required() -> None:
    """A time-window export (seq 2..4) verifies alone but not when a full chain is required."""
    records = make_chain(5)
    window = _dicts(records[2:])
    report = verify_chain(window)
    assert (report.first_seq, report.last_seq, report.count) == (2, 4, 3)
    assert report.first_prev_hash == records[1].hash
    assert not report.from_genesis
    err = _broken(window, require_genesis=True)
    assert err.index == 0
    assert "starts at seq 2" in err.reason


def test_truncated_tail_is_caught_by_expected_head() -> None:
    """Dropping the last records is only visible against a head hash known separately."""
    records = make_chain(5)
    dicts = _dicts(records[:3])
    assert verify_chain(dicts).count == 3
    err = _broken(dicts, expected_head=records[-1].hash)
    assert err.index == 2
    assert "expected head" in err.reason


def test_empty_chain() -> None:
    """An empty input verifies as zero records, but fails if a head or genesis is required."""
    assert verify_chain([]) == ChainReport(count=0, head_hash=GENESIS_HASH)
    assert _broken([], require_genesis=True).index == 0
    assert _broken([], expected_head="ab" * 32).index == 0


# -- JSONL ------------------------------------------------------------------------------------


def test_jsonl_export_verifies() -> None:
    """An export file verifies line by line."""
    records = make_chain(4)
    report = verify_jsonl(_lines(export_bytes(records)), require_genesis=True)
    assert report.head_hash == records[-1].hash


def test_truncated_line_is_detected() -> None:
    """A file cut in the middle of its last line fails at that line."""
    data = export_bytes(make_chain(4))
    with pytest.raises(AuditChainBroken) as info:
        verify_jsonl(_lines(data[:-40]))
    assert info.value.index == 3
    assert "newline" in info.value.reason


def test_missing_final_newline_is_detected() -> None:
    """Even a complete last record must end with a newline (a cut at the boundary shows)."""
    data = export_bytes(make_chain(2))
    with pytest.raises(AuditChainBroken) as info:
        verify_jsonl(_lines(data[:-1]))
    assert info.value.index == 1


def test_truncated_line_in_the_middle_is_detected() -> None:
    """A line cut short in the middle of the file is malformed at its index."""
    lines = _lines(export_bytes(make_chain(4)))
    lines[1] = lines[1][:30] + b"\n"
    with pytest.raises(AuditChainBroken) as info:
        verify_jsonl(lines)
    assert info.value.index == 1
    assert info.value.reason.startswith("malformed line")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda line: line.replace(b'"seq":', b'"seq": '),  # whitespace
        lambda line: b" " + line,
        lambda line: line[:-1] + b"\r\n",
        lambda line: json.dumps(json.loads(line), sort_keys=False).encode() + b"\n",
    ],
)
def test_non_canonical_line_is_rejected(mangle: Any) -> None:
    """A line re-spelled in any way other than RFC 8785 counts as edited."""
    lines = _lines(export_bytes(make_chain(3)))
    lines[1] = mangle(lines[1])
    with pytest.raises(AuditChainBroken) as info:
        verify_jsonl(lines)
    assert info.value.index == 1


@pytest.mark.parametrize(
    "bad",
    [b"\xff\xfe\n", b"[1,2]\n", b"NaN\n", b'{"a":NaN}\n', b"\n", b"[" * 100_000 + b"\n"],
)
def test_malformed_lines(bad: bytes) -> None:
    """Undecodable, non-object and non-JSON lines are malformed at their index."""
    lines = _lines(export_bytes(make_chain(2)))
    lines.insert(1, bad)
    with pytest.raises(AuditChainBroken) as info:
        verify_jsonl(lines)
    assert info.value.index == 1
    assert info.value.reason.startswith("malformed line")


def test_line_with_unsafe_integer_is_rejected() -> None:
    """A value RFC 8785 cannot represent (integer beyond 2**53) is malformed."""
    lines = _lines(export_bytes(make_chain(2)))
    lines[0] = lines[0].replace(b'"seq":0', b'"seq":90071992547409930')
    with pytest.raises(AuditChainBroken) as info:
        verify_jsonl(lines)
    assert info.value.index == 0


# -- property: any single byte flip is caught at its line ----------------------------------------

_CHAIN = make_chain(5, claims={"note": "caf\u00e9 \u2603", "ctl": "\x01\x1f", "n": [1, 2.5]})
_DATA = export_bytes(_CHAIN)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(pos=st.integers(0, len(_DATA) - 1), mask=st.integers(1, 255))
def test_any_byte_flip_is_detected_at_its_line(pos: int, mask: int) -> None:
    """Flipping any bits of any byte of a JSONL export fails verification at that byte's line."""
    data = bytearray(_DATA)
    data[pos] ^= mask
    expected_index = _DATA.count(b"\n", 0, pos)
    with pytest.raises(AuditChainBroken) as info:
        verify_jsonl(_lines(bytes(data)))
    assert info.value.index == expected_index


@settings(max_examples=200)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_verify_as_a_nonempty_chain(data: bytes) -> None:
    """Random bytes raise only AuditChainBroken (or verify as empty)."""
    try:
        report = verify_jsonl(_lines(data))
    except AuditChainBroken:
        return
    assert report.count == 0
