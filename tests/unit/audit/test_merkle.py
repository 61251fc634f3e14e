"""RFC 9162 Merkle trees: reference vectors, proofs, verification and the incremental forms."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.merkle import (
    EMPTY_ROOT,
    InvalidTreeRange,
    MerkleProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    record_leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from broker.audit.merkle_tree import MerkleAccumulator, MerkleTree
from broker.errors import BrokerError
from tests.unit.audit._factory import make_chain

# Interop vectors: the 8-leaf test tree used by Certificate Transparency and
# Trillian, from github.com/google/trillian merkle/testonly/constants.go
# (LeafInputs, RootHashes) and merkle/logverifier/log_verifier_test.go
# (inclusionProofs, consistencyProofs; there the leaf numbers are 1-based).
CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]


def _hs(*hexes: str) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# (leaf index, tree size, proof)
CT_INCLUSION = [
    (
        0,
        8,
        _hs(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        5,
        8,
        _hs(
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (2, 3, _hs("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")),
    (
        1,
        5,
        _hs(
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
# (old size, new size, proof)
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        _hs(
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
    ),
    (
        6,
        8,
        _hs(
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ),
    (
        2,
        5,
        _hs(
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
    ),
]
CT_LEAF_HASHES = [leaf_hash(d) for d in CT_LEAVES]


def _flip(b: bytes, pos: int = 0) -> bytes:
    return b[:pos] + bytes([b[pos] ^ 0x01]) + b[pos + 1 :]


def _inclusion_shape(index: int, size: int) -> list[bool]:
    """Fold directions of RFC 9162 2.1.3.2 (True: proof hash on the left); a test oracle."""
    fn, sn, out = index, size - 1, []
    while sn:
        left = bool(fn & 1 or fn == sn)
        out.append(left)
        if left and not fn & 1:
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        fn, sn = fn >> 1, sn >> 1
    return out


# -- hashing and reference vectors ----------------------------------------------------------------


def test_leaf_and_node_hash_domain_separation() -> None:
    """Leaves hash with a 0x00 prefix and nodes with 0x01 (RFC 9162 2.1.1)."""
    assert leaf_hash(b"x") == hashlib.sha256(b"\x00x").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )
    assert root_from_leaves([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()


@pytest.mark.parametrize("size", range(9))
def test_ct_reference_roots(size: int) -> None:
    """Roots of the CT/Trillian 8-leaf tree at every size 0..8."""
    assert root_from_leaves(CT_LEAF_HASHES[:size]) == CT_ROOTS[size]
    assert MerkleTree(CT_LEAF_HASHES).root(size) == CT_ROOTS[size]
    acc = MerkleAccumulator()
    acc.extend(CT_LEAF_HASHES[:size])
    assert acc.root() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), CT_INCLUSION)
def test_ct_reference_inclusion_proofs(index: int, size: int, proof: list[bytes]) -> None:
    """Inclusion proofs equal the reference ones and verify against the reference roots."""
    assert inclusion_proof(CT_LEAF_HASHES, index, size) == proof
    assert MerkleTree(CT_LEAF_HASHES).inclusion_proof(index, size) == proof
    verify_inclusion(CT_LEAF_HASHES[index], index, size, proof, CT_ROOTS[size])


@pytest.mark.parametrize(("old", "new", "proof"), CT_CONSISTENCY)
def test_ct_reference_consistency_proofs(old: int, new: int, proof: list[bytes]) -> None:
    """Consistency proofs equal the reference ones and verify against the reference roots."""
    assert consistency_proof(CT_LEAF_HASHES, old, new) == proof
    assert MerkleTree(CT_LEAF_HASHES).consistency_proof(old, new) == proof
    verify_consistency(old, new, CT_ROOTS[old], CT_ROOTS[new], proof)


def test_record_leaf_hash_is_the_canonical_bytes() -> None:
    """An audit record's leaf data is its RFC 8785 canonical bytes."""
    record = make_chain(1)[0]
    assert record_leaf_hash(record) == hashlib.sha256(b"\x00" + record.canonical_bytes()).digest()


# -- verification failures --------------------------------------------------------------------------


def test_inclusion_failures_name_the_check() -> None:
    """Each kind of bad inclusion input is refused with a message saying what failed."""
    index, size, proof = CT_INCLUSION[1]
    leaf, root = CT_LEAF_HASHES[index], CT_ROOTS[size]
    cases = [
        ((leaf, size, size, proof, root), "not below tree size"),
        ((leaf, index, size, proof[:-1], root), "has 2 hashes, expected 3"),
        ((leaf, index, size, [*proof, root], root), "has 4 hashes"),
        ((leaf, index, size, [proof[0][:31], *proof[1:]], root), r"proof\[0\] is not a 32-byte"),
        ((leaf, index, size, proof, CT_ROOTS[7]), "not the expected"),
        ((b"short", index, size, proof, root), "leaf hash is not"),
        ((leaf, -1, size, proof, root), "non-negative"),
        ((leaf, True, size, proof, root), "non-negative"),
    ]
    for args, message in cases:
        with pytest.raises(MerkleProofError, match=message) as info:
            verify_inclusion(*args)
        assert info.value.code == "MerkleProofInvalid"


def test_inclusion_trillian_corruptions_fail() -> None:
    """The corruptions of Trillian's verifier tests (index, size, garbage) all fail."""
    for index, size, proof in CT_INCLUSION:
        leaf, root = CT_LEAF_HASHES[index], CT_ROOTS[size]
        probes = [
            (index - 1, size, proof),
            (index + 1, size, proof),
            (index ^ 2, size, proof),
            (index, size * 2, proof),
            (index, size // 2, proof),
            (index, size, [b"\x00" * 32, *proof]),
            (index, size, [*proof, root]),
        ]
        for i, s, p in probes:
            with pytest.raises(MerkleProofError):
                verify_inclusion(leaf, i, s, p, root)


def test_consistency_trivial_cases() -> None:
    """Equal sizes need equal roots; size 0 needs the empty root; both need an empty proof."""
    r1, r2 = CT_ROOTS[1], CT_ROOTS[2]
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, CT_ROOTS[5], [])
    verify_consistency(3, 3, CT_ROOTS[3], CT_ROOTS[3], [])
    with pytest.raises(MerkleProofError, match="forked"):
        verify_consistency(1, 1, r1, r2, [])
    with pytest.raises(MerkleProofError, match="empty-tree"):
        verify_consistency(0, 1, r1, r2, [])
    with pytest.raises(MerkleProofError, match="must be empty"):
        verify_consistency(1, 1, r1, r1, [EMPTY_ROOT])
    with pytest.raises(MerkleProofError, match="larger than new size"):
        verify_consistency(2, 1, r2, r1, [])
    with pytest.raises(MerkleProofError, match="has 0 hashes"):
        verify_consistency(1, 2, r1, r2, [])


def test_consistency_swapped_roots_fail() -> None:
    """A consistency proof does not verify with its roots swapped or replaced."""
    for old, new, proof in CT_CONSISTENCY[1:]:
        with pytest.raises(MerkleProofError):
            verify_consistency(old, new, CT_ROOTS[new], CT_ROOTS[old], proof)
        with pytest.raises(MerkleProofError, match="new root"):
            verify_consistency(old, new, CT_ROOTS[old], EMPTY_ROOT, proof)


def test_proof_generation_rejects_bad_ranges() -> None:
    """Asking for a proof outside the tree is a request error, not a crash."""
    leaves = CT_LEAF_HASHES
    for call in (
        lambda: inclusion_proof(leaves, 8, 8),
        lambda: inclusion_proof(leaves, 0, 9),
        lambda: inclusion_proof(leaves, 0, 0),
        lambda: consistency_proof(leaves, 5, 4),
        lambda: consistency_proof(leaves, 1, 9),
        lambda: MerkleTree(leaves).inclusion_proof(0, 9),
        lambda: MerkleTree(leaves).subtree_hash(1, 4),
        lambda: MerkleTree(leaves).subtree_hash(3, 3),
        lambda: MerkleTree(leaves).leaf_hash(8),
        lambda: MerkleTree([b"short"]),
    ):
        with pytest.raises(InvalidTreeRange) as info:
            call()
        assert isinstance(info.value, BrokerError)
        assert info.value.status == 400


# -- incremental forms -----------------------------------------------------------------------------


def test_tree_matches_reference_for_every_size_and_proof() -> None:
    """The cached tree gives the reference root and proofs for all sizes up to 40."""
    leaves = [leaf_hash(i.to_bytes(2, "big")) for i in range(40)]
    tree = MerkleTree(leaves)
    for n in range(41):
        assert tree.root(n) == root_from_leaves(leaves[:n])
        assert tree.accumulator(n).root() == tree.root(n)
        for m in range(n + 1):
            assert tree.consistency_proof(m, n) == consistency_proof(leaves, m, n)
        for i in range(n):
            assert tree.inclusion_proof(i, n) == inclusion_proof(leaves, i, n)


def test_accumulator_state_round_trip() -> None:
    """An accumulator saved as (size, hashes) continues exactly where it stopped."""
    leaves = [leaf_hash(bytes([i])) for i in range(23)]
    acc = MerkleAccumulator()
    acc.extend(leaves[:13])
    assert len(acc.hashes) == bin(13).count("1")
    restored = MerkleAccumulator.from_state(acc.size, acc.hashes)
    restored.extend(leaves[13:])
    assert restored.root() == root_from_leaves(leaves)
    assert acc.copy().root() == acc.root()
    with pytest.raises(InvalidTreeRange, match="edge hashes"):
        MerkleAccumulator.from_state(13, acc.hashes[:-1])
    with pytest.raises(InvalidTreeRange):
        MerkleAccumulator.from_state(-1, [])


def test_tree_default_size_is_current() -> None:
    """Without a size, roots and proofs refer to the whole tree."""
    tree = MerkleTree()
    assert tree.root() == EMPTY_ROOT
    tree.extend(CT_LEAF_HASHES)
    assert tree.size == 8
    assert tree.root() == CT_ROOTS[8]
    assert tree.leaf_hash(3) == CT_LEAF_HASHES[3]
    assert tree.inclusion_proof(0) == CT_INCLUSION[0][2]
    assert tree.consistency_proof(6) == CT_CONSISTENCY[2][2]


# -- properties ------------------------------------------------------------------------------------

_leaves = st.lists(st.binary(max_size=8), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(data=_leaves, picks=st.data())
def test_every_proof_verifies_and_any_byte_change_fails(
    data: list[bytes], picks: st.DataObject
) -> None:
    """Random appends: proofs verify; a flipped byte in leaf, proof or root never does."""
    acc, tree = MerkleAccumulator(), MerkleTree()
    roots = [EMPTY_ROOT]
    for d in data:
        acc.append(leaf_hash(d))
        tree.append(leaf_hash(d))
        roots.append(acc.root())
    n = len(data)
    assert tree.root() == roots[n]
    index = picks.draw(st.integers(0, n - 1))
    leaf = leaf_hash(data[index])
    proof = tree.inclusion_proof(index)
    verify_inclusion(leaf, index, n, proof, roots[n])
    pos = picks.draw(st.integers(0, 31))
    with pytest.raises(MerkleProofError):
        verify_inclusion(_flip(leaf, pos), index, n, proof, roots[n])
    with pytest.raises(MerkleProofError):
        verify_inclusion(leaf, index, n, proof, _flip(roots[n], pos))
    if proof:
        k = picks.draw(st.integers(0, len(proof) - 1))
        bad = [*proof[:k], _flip(proof[k], pos), *proof[k + 1 :]]
        with pytest.raises(MerkleProofError):
            verify_inclusion(leaf, index, n, bad, roots[n])
        with pytest.raises(MerkleProofError):
            verify_inclusion(leaf, index, n, proof[:k] + proof[k + 1 :], roots[n])

    old = picks.draw(st.integers(1, n))
    cproof = tree.consistency_proof(old)
    verify_consistency(old, n, roots[old], roots[n], cproof)
    if old < n:
        with pytest.raises(MerkleProofError):
            verify_consistency(old, n, _flip(roots[old], pos), roots[n], cproof)
        with pytest.raises(MerkleProofError):
            verify_consistency(old, n, roots[old], _flip(roots[n], pos), cproof)
        k = picks.draw(st.integers(0, len(cproof) - 1))
        bad = [*cproof[:k], _flip(cproof[k], pos), *cproof[k + 1 :]]
        with pytest.raises(MerkleProofError):
            verify_consistency(old, n, roots[old], roots[n], bad)


@settings(max_examples=60, deadline=None)
@given(data=_leaves, picks=st.data())
def test_a_changed_size_fails_unless_the_path_shape_is_identical(
    data: list[bytes], picks: st.DataObject
) -> None:
    """A wrong tree size only verifies when it gives the same path shape (why sizes are signed)."""
    leaves = [leaf_hash(d) for d in data]
    n = len(leaves)
    root = root_from_leaves(leaves)
    index = picks.draw(st.integers(0, n - 1))
    proof = inclusion_proof(leaves, index, n)
    other = picks.draw(st.integers(0, 2 * n + 2).filter(lambda s: s != n))
    try:
        verify_inclusion(leaves[index], index, other, proof, root)
    except MerkleProofError:
        return
    assert other > index
    assert _inclusion_shape(index, other) == _inclusion_shape(index, n)


@settings(max_examples=40, deadline=None)
@given(data=st.lists(st.binary(max_size=4), min_size=2, max_size=30), picks=st.data())
def test_consistency_with_changed_old_size_fails(data: list[bytes], picks: st.DataObject) -> None:
    """A consistency proof for (m, n) does not verify for another old size with the same roots."""
    leaves = [leaf_hash(d) for d in data]
    n = len(leaves)
    m = picks.draw(st.integers(1, n - 1))
    proof = consistency_proof(leaves, m, n)
    roots = {s: root_from_leaves(leaves[:s]) for s in range(n + 1)}
    other = picks.draw(st.integers(1, n - 1).filter(lambda s: s != m))
    with pytest.raises(MerkleProofError):
        verify_consistency(other, n, roots[m], roots[n], proof)
