"""Offline export verification, proof JSON, export filters and requester hashing."""

from __future__ import annotations

import contextlib
import io
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.audit_key import AuditKey
from broker.audit.chain import AuditChainBroken
from broker.audit.checkpoint import sign_checkpoint
from broker.audit.filters import ExportFilter
from broker.audit.merkle import record_leaf_hash
from broker.audit.merkle_tree import MerkleTree
from broker.audit.privacy import RequesterKey
from broker.audit.proofs import InclusionProof, ProofFormatError
from broker.audit.verify_export import ExportInvalid, verify_export
from broker.errors import MalformedRequest

from ._factory import export_bytes, make_chain

NOW = datetime(2025, 5, 6, 7, 8, 9, tzinfo=UTC)
KEY = AuditKey.generate("test/audit")
TRUSTED = {KEY.key_id: KEY.public_key}


def _setup(n: int) -> tuple[bytes, str, MerkleTree]:
    records = make_chain(n)
    tree = MerkleTree(record_leaf_hash(r) for r in records)
    cp = sign_checkpoint(KEY, n, tree.root(), NOW, "test/audit")
    return export_bytes(records), cp.note, tree


def test_full_export_verifies() -> None:
    """An intact export matches its checkpoint."""
    data, note, _ = _setup(9)
    result = verify_export(io.BytesIO(data), [note], TRUSTED)
    assert (result.count, result.tree_size, result.selection) == (9, 9, False)


def test_older_checkpoint_must_be_a_prefix() -> None:
    """A second, older checkpoint is checked against the recomputed tree at its size."""
    data, note, tree = _setup(9)
    old = sign_checkpoint(KEY, 4, tree.root(4), NOW, "test/audit").note
    verify_export(io.BytesIO(data), [note, old], TRUSTED)
    forked = sign_checkpoint(KEY, 4, tree.root(5), NOW, "test/audit").note
    with pytest.raises(ExportInvalid, match="consistency"):
        verify_export(io.BytesIO(data), [note, forked], TRUSTED)


def test_truncation_and_untrusted_key() -> None:
    """A cut tail names the missing range; a checkpoint by an unknown key is refused."""
    data, note, _ = _setup(9)
    cut = b"".join(data.splitlines(keepends=True)[:6])
    with pytest.raises(ExportInvalid, match=r"records 6\.\.8 are missing"):
        verify_export(io.BytesIO(cut), [note], TRUSTED)
    with pytest.raises(ExportInvalid, match="checkpoint 1"):
        verify_export(io.BytesIO(data), [note], {})


def test_selection_with_proofs() -> None:
    """A selection verifies with one proof per record; a proof for another seq is named."""
    data, note, tree = _setup(9)
    lines = data.splitlines(keepends=True)
    picked = [1, 4, 7]
    proofs = [
        InclusionProof(i, 9, tuple(tree.inclusion_proof(i, 9))).to_json() + "\n" for i in picked
    ]
    sel = b"".join(lines[i] for i in picked)
    result = verify_export(io.BytesIO(sel), [note], TRUSTED, proofs=[p.encode() for p in proofs])
    assert (result.count, result.first_seq, result.last_seq) == (3, 1, 7)
    swapped = [proofs[1], proofs[0], proofs[2]]
    with pytest.raises(ExportInvalid, match="inclusion: record 0"):
        verify_export(io.BytesIO(sel), [note], TRUSTED, proofs=[p.encode() for p in swapped])
    backwards = lines[4] + lines[1]
    with pytest.raises(AuditChainBroken, match="out of order"):
        verify_export(
            io.BytesIO(backwards), [note], TRUSTED, proofs=[p.encode() for p in proofs[1::-1]]
        )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_proof_parser_raises_only_its_error(raw: bytes) -> None:
    """Arbitrary bytes never parse as a proof unless valid; only ProofFormatError escapes."""
    with contextlib.suppress(ProofFormatError):
        InclusionProof.from_json(raw)


def test_filters() -> None:
    """Filters match resource, decision, measurement (any case) and hashed requesters."""
    record = make_chain(1)[0]
    key = RequesterKey.generate()
    assert ExportFilter(resource="tenant-a/db/key", decision="allow").matches(record)
    assert not ExportFilter(decision="deny").matches(record)
    assert ExportFilter(measurement="00" * 48).matches(record)
    assert ExportFilter(requester="127.0.0.1").matches(record)
    assert ExportFilter(requester=key.hash("127.0.0.1")).matches(record, key)
    assert not ExportFilter(requester=key.hash("10.0.0.1")).matches(record, key)
    with pytest.raises(MalformedRequest):
        ExportFilter(decision="maybe")


def test_requester_hash_is_keyed_and_stable() -> None:
    """Same key and value give the same hash; another key gives another; empty stays empty."""
    a, b = RequesterKey.generate(), RequesterKey.generate()
    assert a.hash("10.1.2.3") == a.hash("10.1.2.3") != b.hash("10.1.2.3")
    assert a.hash("") == ""
    assert a.material.hex() not in repr(a)
