"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and verification.

Usage::

    leaves = [leaf_hash(r.canonical_bytes()) for r in records]
    root = root_from_leaves(leaves)
    proof = inclusion_proof(leaves, index=3, size=len(leaves))
    verify_inclusion(leaves[3], 3, len(leaves), proof, root)    # raises MerkleProofError
    proof = consistency_proof(leaves, old_size=4, new_size=len(leaves))
    verify_consistency(4, len(leaves), old_root, root, proof)

The functions over a ``Sequence`` of leaf hashes are the reference algorithms
of RFC 9162 section 2.1 and recompute every subtree they touch: O(n) hashes
per call. ``build_inclusion_proof``/``build_consistency_proof`` run the same
algorithms over any ``subtree_hash(start, end)`` callable, which is how
``broker.audit.merkle_tree.MerkleTree`` answers in O(log^2 n) from cached
subtree hashes. Verification needs no tree at all: O(log n).

The leaf data of an audit record is its canonical bytes
(``AuditRecord.canonical_bytes()``), so a leaf hash commits to exactly what
the record's own ``hash`` commits to, with RFC 9162's 0x00 domain prefix.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Final

from broker.audit.record import AuditRecord
from broker.errors import BrokerError, RequestError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "InvalidTreeRange",
    "MerkleProofError",
    "SubtreeHash",
    "build_consistency_proof",
    "build_inclusion_proof",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "record_leaf_hash",
    "root_from_leaves",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE: Final = 32
# RFC 9162 section 2.1.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
_LEAF_PREFIX: Final = b"\x00"
_NODE_PREFIX: Final = b"\x01"

SubtreeHash = Callable[[int, int], bytes]
"""``subtree_hash(start, end)``: MTH of the leaves ``D[start:end]`` (``end > start``)."""


class MerkleProofError(BrokerError):
    """An inclusion or consistency proof does not verify; the message says which check failed."""

    code = "MerkleProofInvalid"


class InvalidTreeRange(RequestError):
    """A proof was asked for an index or size the tree does not have."""

    code = "TreeRangeInvalid"


# -- hashing ------------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 section 2.1.1: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 section 2.1.1: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def record_leaf_hash(record: AuditRecord) -> bytes:
    """The leaf hash of an audit record: ``leaf_hash(record.canonical_bytes())``."""
    return leaf_hash(record.canonical_bytes())


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n > 1``): RFC 9162's ``k``."""
    return 1 << ((n - 1).bit_length() - 1)


def _mth(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    if end - start == 1:
        return leaves[start]
    k = _split(end - start)
    return node_hash(_mth(leaves, start, start + k), _mth(leaves, start + k, end))


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 section 2.1.1 over already-hashed leaves. O(n)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return _mth(leaf_hashes, 0, len(leaf_hashes))


# -- proof generation ---------------------------------------------------------------------------


def _check_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidTreeRange(f"{name} {value!r} is outside {low}..{high}")


def build_inclusion_proof(subtree_hash: SubtreeHash, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 section 2.1.3.1, leaf to root.

    Raises:
        InvalidTreeRange: ``index`` is not below ``size``.
    """
    _check_range("size", size, 1, 2**63 - 1)
    _check_range("leaf index", index, 0, size - 1)
    path: list[bytes] = []
    start, end = 0, size
    # The recursion of 2.1.3.1 descends towards the leaf and appends the
    # sibling on the way back up; walking down and reversing is the same list.
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(subtree_hash(start + k, end))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k))
            start += k
    path.reverse()
    return path


def build_consistency_proof(subtree_hash: SubtreeHash, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 section 2.1.4.1.

    Empty when ``old_size`` is 0 or equal to ``new_size`` (nothing to prove).

    Raises:
        InvalidTreeRange: ``old_size`` is larger than ``new_size``.
    """
    _check_range("new size", new_size, 0, 2**63 - 1)
    _check_range("old size", old_size, 0, new_size)
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    m, start, end, whole = old_size, 0, new_size, True
    # SUBPROOF(m, D[start:end], whole), unrolled; the RFC appends the sibling
    # after the recursive call, so collect them and reverse at the end.
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(subtree_hash(start + k, end))
            end = start + k
        else:
            proof.append(subtree_hash(start, start + k))
            m -= k
            start += k
            whole = False
    if not whole:
        proof.append(subtree_hash(start, end))
    proof.reverse()
    return proof


def _list_subtree(leaf_hashes: Sequence[bytes], size: int) -> SubtreeHash:
    _check_range("size", size, 0, len(leaf_hashes))
    return lambda start, end: _mth(leaf_hashes, start, end)


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """Inclusion proof for leaf ``index`` in the tree of the first ``size`` leaves. O(size).

    Raises:
        InvalidTreeRange: ``size`` exceeds the leaves given, or ``index >= size``.
    """
    return build_inclusion_proof(_list_subtree(leaf_hashes, size), index, size)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Consistency proof from the tree of ``old_size`` leaves to that of ``new_size``. O(new_size).

    Raises:
        InvalidTreeRange: ``new_size`` exceeds the leaves given, or ``old_size > new_size``.
    """
    return build_consistency_proof(_list_subtree(leaf_hashes, new_size), old_size, new_size)


# -- verification -------------------------------------------------------------------------------


def _check_hash(name: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MerkleProofError(f"{name} is not a {HASH_SIZE}-byte SHA-256 hash")
    return value


def _check_size(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MerkleProofError(f"{name} must be a non-negative integer")
    return value


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def _inclusion_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2: ``leaf_hash`` is leaf ``index`` of the tree ``(size, root)``.

    Raises:
        MerkleProofError: naming the check that failed.
    """
    # (0) Inputs: hashes are 32 bytes, sizes are non-negative integers.
    _check_hash("leaf hash", leaf_hash)
    _check_hash("root hash", root)
    _check_size("leaf index", index)
    _check_size("tree size", size)
    hashes = [_check_hash(f"proof[{i}]", p) for i, p in enumerate(proof)]
    # (1) The index must lie inside the tree.
    if index >= size:
        raise MerkleProofError(f"leaf index {index} is not below tree size {size}")
    # Not a step of the RFC (step 4/5 would fail anyway): says why in plain words.
    expected = _inclusion_length(index, size)
    if len(hashes) != expected:
        raise MerkleProofError(
            f"inclusion proof for leaf {index} of {size} has {len(hashes)} hashes, "
            f"expected {expected}"
        )
    # (2) fn = leaf_index, sn = tree_size - 1; (3) r = hash.
    fn, sn, r = index, size - 1, leaf_hash
    # (4) Fold the path into r, choosing the side from the bits of fn and sn.
    for p in hashes:
        if sn == 0:
            raise MerkleProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    # (5) sn must be 0 and r must be the root.
    if sn != 0:
        raise MerkleProofError("inclusion proof is shorter than the path to the root")
    if not _same(r, root):
        raise MerkleProofError(
            f"inclusion proof for leaf {index} of {size} gives root {r.hex()}, "
            f"not the expected {root.hex()}"
        )


def _consistency_length(old_size: int, new_size: int) -> int:
    shift = (old_size & -old_size).bit_length() - 1
    inner = ((old_size - 1) ^ (new_size - 1)).bit_length()
    border = ((old_size - 1) >> inner).bit_count()
    seeded = 0 if old_size == 1 << shift else 1
    return seeded + inner - shift + border


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2: the tree ``(new_size, new_root)`` extends ``(old_size, old_root)``.

    Trivial cases, decided without hashing: equal sizes need equal roots and
    an empty proof; an empty old tree needs the empty-tree root and an empty
    proof.

    Raises:
        MerkleProofError: naming the check that failed.
    """
    # (0) Inputs: hashes are 32 bytes, sizes are non-negative integers, no shrinking.
    _check_hash("old root hash", old_root)
    _check_hash("new root hash", new_root)
    _check_size("old tree size", old_size)
    _check_size("new tree size", new_size)
    path = [_check_hash(f"proof[{i}]", p) for i, p in enumerate(proof)]
    if old_size > new_size:
        raise MerkleProofError(f"old tree size {old_size} is larger than new size {new_size}")
    if old_size in (0, new_size):
        _verify_trivial(old_size, new_size, old_root, new_root, path)
        return
    # (1) A non-trivial proof is never empty; its length follows from the sizes.
    expected = _consistency_length(old_size, new_size)
    if len(path) != expected:
        raise MerkleProofError(
            f"consistency proof from {old_size} to {new_size} has {len(path)} hashes, "
            f"expected {expected}"
        )
    fr, sr = _consistency_roots(old_size, new_size, old_root, path)
    # (7) Both roots must match (the path reaching the top was checked in the fold).
    if not _same(fr, old_root):
        raise MerkleProofError(
            f"consistency proof gives old root {fr.hex()} for size {old_size}, "
            f"not the expected {old_root.hex()}"
        )
    if not _same(sr, new_root):
        raise MerkleProofError(
            f"consistency proof gives new root {sr.hex()} for size {new_size}, "
            f"not the expected {new_root.hex()}"
        )


def _consistency_roots(
    old_size: int, new_size: int, old_root: bytes, path: list[bytes]
) -> tuple[bytes, bytes]:
    """Steps (2)-(7) of RFC 9162 section 2.1.4.2 up to the root comparison: ``(fr, sr)``."""
    # (2) An old tree that is a perfect subtree is its own first node.
    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    # (3) fn = first - 1, sn = second - 1; (4) skip the levels where fn is odd.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (5) Both running roots start at the first node.
    fr = sr = path[0]
    # (6) Fold the rest: left siblings feed both roots, right siblings only the new one.
    for c in path[1:]:
        if sn == 0:
            raise MerkleProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    # (7) ... and sn is 0.
    if sn != 0:
        raise MerkleProofError("consistency proof is shorter than the path to the root")
    return fr, sr


def _verify_trivial(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: list[bytes]
) -> None:
    if path:
        raise MerkleProofError(
            f"consistency proof from {old_size} to {new_size} must be empty, has {len(path)} hashes"
        )
    if old_size == 0 and not _same(old_root, EMPTY_ROOT):
        raise MerkleProofError("old root of an empty tree is not the empty-tree hash")
    if old_size == new_size and not _same(old_root, new_root):
        raise MerkleProofError(
            f"trees of equal size {old_size} have different roots "
            f"{old_root.hex()} and {new_root.hex()} (the log forked)"
        )
