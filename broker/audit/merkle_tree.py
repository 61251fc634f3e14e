"""Incremental RFC 9162 trees: an O(log n) accumulator and a cached in-memory tree.

Usage (the append path: keep only the right edge, O(log n) memory)::

    acc = MerkleAccumulator()
    for record in new_records:
        acc.append(record_leaf_hash(record))
    size, root = acc.size, acc.root()
    saved = acc.hashes                     # persist with size; restore with from_state

Usage (serving proofs from the leaf hashes)::

    tree = MerkleTree(stored_leaf_hashes)  # O(n) once
    tree.append(leaf)                      # amortised O(1)
    tree.root(size)                        # O(log n), any size up to tree.size
    tree.inclusion_proof(index, size)      # O(log^2 n)
    tree.consistency_proof(old, new)       # O(log^2 n)

``MerkleTree`` keeps every complete subtree hash: about 2n hashes (64 bytes
per leaf), which is fine for millions of records. A larger log would keep
only the upper levels (or tiles) and recompute the rest from leaf hashes;
the proof algorithms take any ``subtree_hash`` callable, so only the store
changes. Neither class does I/O or locking: an async adapter calls them on
the thread that owns them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from broker.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    InvalidTreeRange,
    build_consistency_proof,
    build_inclusion_proof,
    node_hash,
)

__all__ = ["MerkleAccumulator", "MerkleTree"]


def _check_leaf(value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise InvalidTreeRange(f"a leaf hash must be {HASH_SIZE} bytes")
    return value


def _check_int(name: str, value: object, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidTreeRange(f"{name} {value!r} is outside 0..{high}")
    return value


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Combine perfect subtrees, left to right by decreasing size, into the tree root."""
    if not hashes:
        return EMPTY_ROOT
    root = hashes[-1]
    for left in reversed(hashes[:-1]):
        root = node_hash(left, root)
    return root


class MerkleAccumulator:
    """The right edge (compact range ``[0, size)``) of an append-only RFC 9162 tree.

    ``hashes`` holds one hash per set bit of ``size``, the largest (leftmost)
    subtree first: exactly what is needed to append and to compute the root.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, hashes: Sequence[bytes]) -> MerkleAccumulator:
        """Restore from a saved ``(size, hashes)``.

        Raises:
            InvalidTreeRange: the number of hashes does not match ``size``.
        """
        size = _check_int("accumulator size", size, 2**63 - 1)
        if len(hashes) != size.bit_count():
            raise InvalidTreeRange(
                f"a tree of size {size} has {size.bit_count()} edge hashes, not {len(hashes)}"
            )
        acc = cls()
        acc._size = size
        acc._hashes = [_check_leaf(h) for h in hashes]
        return acc

    @property
    def size(self) -> int:
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash. O(log n) hashes in the worst case, O(1) amortised.

        Raises:
            InvalidTreeRange: ``leaf_hash`` is not 32 bytes.
        """
        h = _check_leaf(leaf_hash)
        # Each trailing 1 bit of size is a complete subtree of the same height
        # as the one being carried: merge them, like binary addition.
        size = self._size
        while size & 1:
            h = node_hash(self._hashes.pop(), h)
            size >>= 1
        self._hashes.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """``append`` each leaf hash in order."""
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        """MTH of the leaves appended so far. O(log n)."""
        return _fold(self._hashes)

    def copy(self) -> MerkleAccumulator:
        return MerkleAccumulator.from_state(self._size, self._hashes)


class MerkleTree:
    """An append-only RFC 9162 tree over leaf hashes, answering roots and proofs for any size.

    ``levels[h][i]`` is the hash of the complete subtree of ``2**h`` leaves
    starting at leaf ``i * 2**h``; ``levels[0]`` are the leaf hashes.
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[list[bytes]] = [[]]
        for h in leaf_hashes:
            self.append(h)

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf_hash(self, index: int) -> bytes:
        """The leaf hash at ``index``.

        Raises:
            InvalidTreeRange: no such leaf.
        """
        self._check_size("leaf index", index, self.size - 1)
        return self._levels[0][index]

    def append(self, leaf_hash: bytes) -> None:
        """Add one leaf hash; completes the subtrees it closes. Amortised O(1).

        Raises:
            InvalidTreeRange: ``leaf_hash`` is not 32 bytes.
        """
        h = _check_leaf(leaf_hash)
        level = 0
        while True:
            row = self._levels[level]
            row.append(h)
            if len(row) % 2:
                return
            h = node_hash(row[-2], row[-1])
            level += 1
            if level == len(self._levels):
                self._levels.append([])

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """``append`` each leaf hash in order."""
        for h in leaf_hashes:
            self.append(h)

    def subtree_hash(self, start: int, end: int) -> bytes:
        """MTH of ``D[start:end]``, from cached complete subtrees. O(log n).

        ``start`` must be a multiple of the largest power of two not above
        ``end - start``, as in every range the RFC 9162 algorithms visit and
        every prefix ``[0, n)``: such a range splits left to right into
        complete subtrees of decreasing size, whose fold is its MTH.

        Raises:
            InvalidTreeRange: the range is empty, beyond the tree or not so aligned.
        """
        self._check_size("range end", end, self.size)
        length = end - start
        _check_int("range start", start, end)
        if length < 1:
            raise InvalidTreeRange(f"subtree range [{start!r}, {end}) is empty or negative")
        height = length.bit_length() - 1
        if start % (1 << height):
            raise InvalidTreeRange(f"subtree range [{start}, {end}) is not aligned")
        parts: list[bytes] = []
        while start < end:
            while (1 << height) > end - start:
                height -= 1
            parts.append(self._levels[height][start >> height])
            start += 1 << height
        return _fold(parts)

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first ``size`` leaves (default: all). O(log n).

        Raises:
            InvalidTreeRange: ``size`` exceeds the tree.
        """
        n = self.size if size is None else self._check_size("size", size, self.size)
        return EMPTY_ROOT if n == 0 else self.subtree_hash(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

        Raises:
            InvalidTreeRange: ``size`` exceeds the tree or ``index >= size``.
        """
        n = self.size if size is None else self._check_size("size", size, self.size)
        return build_inclusion_proof(self.subtree_hash, index, n)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """RFC 9162 consistency proof between two sizes of this tree.

        Raises:
            InvalidTreeRange: ``new_size`` exceeds the tree or ``old_size > new_size``.
        """
        n = self.size if new_size is None else self._check_size("size", new_size, self.size)
        return build_consistency_proof(self.subtree_hash, old_size, n)

    def accumulator(self, size: int | None = None) -> MerkleAccumulator:
        """The compact right edge of the first ``size`` leaves, to continue appending elsewhere.

        Raises:
            InvalidTreeRange: ``size`` exceeds the tree.
        """
        n = self.size if size is None else self._check_size("size", size, self.size)
        hashes: list[bytes] = []
        start = 0
        for height in range(n.bit_length() - 1, -1, -1):
            if n >> height & 1:
                hashes.append(self._levels[height][start >> height])
                start += 1 << height
        return MerkleAccumulator.from_state(n, hashes)

    @staticmethod
    def _check_size(name: str, value: int, high: int) -> int:
        return _check_int(name, value, high)
