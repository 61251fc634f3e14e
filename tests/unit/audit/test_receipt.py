"""Release receipts: issue, strict JSON form, signature, and inclusion in a later checkpoint."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.audit_key import AuditKey, trusted_keys
from broker.audit.checkpoint import sign_checkpoint, verify_checkpoint
from broker.audit.merkle import MerkleProofError, record_leaf_hash
from broker.audit.merkle_tree import MerkleTree
from broker.audit.receipt import (
    Receipt,
    ReceiptError,
    issue_receipt,
    verify_receipt,
    verify_receipt_inclusion,
    verify_receipt_record,
)
from tests.unit.audit._factory import make_chain
from tests.unit.audit.test_checkpoint import _doc_block, _example_chain_leaves

ORIGIN = "broker.example/audit"
NOW = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
KEY = AuditKey.generate(ORIGIN)
TRUSTED = trusted_keys([KEY.verifier_key()])
RECORDS = make_chain(12)
TREE = MerkleTree(record_leaf_hash(r) for r in RECORDS)


def _receipt(seq: int = 4, **kw: Any) -> Receipt:
    return issue_receipt(KEY, seq, TREE.leaf_hash(seq), NOW, ORIGIN, **kw)


def test_issue_verify_and_json_round_trip() -> None:
    """A receipt survives JSON and verifies against the trusted keys."""
    receipt = _receipt()
    assert receipt.tree_size == 5
    data = json.loads(json.dumps(receipt.to_dict()))
    assert set(data) == {
        "format",
        "origin",
        "seq",
        "leaf_hash",
        "tree_size",
        "time",
        "key_id",
        "signature",
    }
    assert data["time"] == "2025-05-06T07:08:09.123456Z"
    again = Receipt.from_dict(data)
    assert again == receipt
    verify_receipt(again, TRUSTED)
    verify_receipt_record(again, RECORDS[4])


def test_receipt_inclusion_in_later_checkpoint() -> None:
    """A receipt for seq 4 is proven included in a checkpoint of 12 records."""
    receipt = _receipt(tree_size=5)
    cp = verify_checkpoint(sign_checkpoint(KEY, 12, TREE.root(), NOW, ORIGIN).note, TRUSTED)
    verify_receipt_inclusion(receipt, TREE.inclusion_proof(4, 12), cp)
    with pytest.raises(MerkleProofError):
        verify_receipt_inclusion(receipt, TREE.inclusion_proof(5, 12), cp)


def test_inclusion_rejects_older_or_foreign_checkpoints() -> None:
    """The checkpoint must be for the same log and at least the receipt's tree size."""
    receipt = _receipt(tree_size=8)
    older = sign_checkpoint(KEY, 6, TREE.root(6), NOW, ORIGIN)
    with pytest.raises(ReceiptError, match="older"):
        verify_receipt_inclusion(receipt, TREE.inclusion_proof(4, 6), older)
    foreign = sign_checkpoint(KEY, 12, TREE.root(), NOW, "other.example/log")
    with pytest.raises(ReceiptError, match="log"):
        verify_receipt_inclusion(receipt, TREE.inclusion_proof(4, 12), foreign)


def test_a_rewritten_log_cannot_prove_the_receipt() -> None:
    """If record 4 is replaced, the new tree's proof does not verify the receipt's leaf."""
    receipt = _receipt()
    forged = make_chain(12, detail="rewritten")
    forged_tree = MerkleTree(record_leaf_hash(r) for r in forged)
    cp = sign_checkpoint(KEY, 12, forged_tree.root(), NOW, ORIGIN)
    with pytest.raises(MerkleProofError):
        verify_receipt_inclusion(receipt, forged_tree.inclusion_proof(4), cp)
    with pytest.raises(ReceiptError, match="does not hash"):
        verify_receipt_record(receipt, forged[4])
    with pytest.raises(ReceiptError, match="seq"):
        verify_receipt_record(receipt, RECORDS[5])


def test_untrusted_or_rotated_keys() -> None:
    """Receipts verify under any key in the trusted set and under no other."""
    new = AuditKey.generate(ORIGIN)
    receipt = _receipt()
    verify_receipt(receipt, trusted_keys([new.verifier_key(), KEY.verifier_key()]))
    with pytest.raises(ReceiptError, match="not trusted"):
        verify_receipt(receipt, trusted_keys([new.verifier_key()]))
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(receipt, {KEY.key_id: new.public_key})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("seq", 3),
        ("tree_size", 6),
        ("leaf_hash", "00" * 32),
        ("time", "2025-05-06T07:08:09.123457Z"),
        ("origin", "other.example/log"),
    ],
)
def test_changed_fields_break_the_signature(field: str, value: object) -> None:
    """Changing any signed field makes the signature fail."""
    data = _receipt().to_dict()
    data[field] = value
    with pytest.raises(ReceiptError, match="does not verify"):
        verify_receipt(Receipt.from_dict(data), TRUSTED)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "format"),
        ({"format": True}, "format"),
        ({"extra": 1}, "unknown"),
        ({"seq": "4"}, "seq"),
        ({"seq": True}, "seq"),
        ({"tree_size": 4}, "tree_size"),
        ({"leaf_hash": "AB" * 32}, "leaf_hash"),
        ({"leaf_hash": 1}, "leaf_hash"),
        ({"signature": "!!"}, "base64"),
        ({"signature": "AAAA"}, "64 bytes"),
        ({"time": "2025-05-06T07:08:09Z"}, "time"),
        ({"key_id": "nohash"}, "key id"),
        ({"origin": ""}, "origin"),
    ],
)
def test_from_dict_is_strict(change: dict[str, object], message: str) -> None:
    """Malformed receipt JSON is refused with a message naming the field."""
    data = {**_receipt().to_dict(), **change}
    with pytest.raises(ReceiptError, match=message):
        Receipt.from_dict(data)


def test_from_dict_missing_field_and_non_object() -> None:
    """A missing field or a non-object is refused."""
    data = _receipt().to_dict()
    del data["signature"]
    with pytest.raises(ReceiptError, match="missing"):
        Receipt.from_dict(data)
    with pytest.raises(ReceiptError, match="object"):
        Receipt.from_dict([])  # type: ignore[arg-type]


def test_issue_refuses_bad_values() -> None:
    """Naive times, short hashes and impossible sizes are refused before signing."""
    with pytest.raises(ReceiptError, match="timezone"):
        issue_receipt(KEY, 1, TREE.leaf_hash(1), NOW.replace(tzinfo=None), ORIGIN)
    with pytest.raises(ReceiptError, match="leaf_hash"):
        issue_receipt(KEY, 1, b"short", NOW, ORIGIN)
    with pytest.raises(ReceiptError, match="tree_size"):
        issue_receipt(KEY, 3, TREE.leaf_hash(3), NOW, ORIGIN, tree_size=3)
    with pytest.raises(ReceiptError, match="seq"):
        issue_receipt(KEY, -1, TREE.leaf_hash(3), NOW, ORIGIN)


def test_receipt_signature_is_domain_separated() -> None:
    """The signed bytes start with the receipt context, never a checkpoint's origin line."""
    receipt = _receipt()
    assert receipt.signed_bytes().startswith(b"broker audit receipt v1\n{")


@settings(max_examples=150, deadline=None)
@given(
    data=st.dictionaries(
        st.sampled_from(
            ["format", "origin", "seq", "leaf_hash", "tree_size", "time", "key_id", "signature"]
        ),
        st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=70), st.binary()),
    )
)
def test_arbitrary_dicts_raise_only_receipt_errors(data: dict[str, object]) -> None:
    """Arbitrary JSON-ish objects never parse into a verifying receipt, and raise only ReceiptError."""
    with pytest.raises(ReceiptError):
        verify_receipt(Receipt.from_dict(data), TRUSTED)


def test_documented_receipt_verifies_against_documented_checkpoint() -> None:
    """The receipt in the docs verifies and is included in the documented checkpoint."""
    trusted = trusted_keys([_doc_block("verifier-key").strip()])
    receipt = Receipt.from_dict(json.loads(_doc_block("json")))
    verify_receipt(receipt, trusted)
    cp = verify_checkpoint(_doc_block("checkpoint"), trusted)
    leaves = _example_chain_leaves()
    assert receipt.leaf_hash == leaves[1]
    verify_receipt_inclusion(receipt, [leaves[0]], cp)
