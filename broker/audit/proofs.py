"""JSON forms of inclusion and consistency proofs, as served and as stored next to exports.

Usage::

    proof = InclusionProof(index=3, tree_size=8, hashes=tuple(tree.inclusion_proof(3, 8)))
    text = proof.to_json()                                   # what GET /v1/audit/proof/... returns
    proof = InclusionProof.from_dict(json.loads(text))       # strict
    verify_inclusion(leaf, proof.index, proof.tree_size, proof.hashes, checkpoint.root_hash)

Hashes are 64 lowercase hex digits, ordered as RFC 9162 section 2.1 lists
them (leaf to root). The size the proof was made for is part of the object,
but a verifier must still take the size it compares against from the
verified checkpoint (``docs/audit-format.md``, "Size and root belong
together").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from broker.audit.merkle import MerkleProofError

__all__ = [
    "MAX_PROOF_HASHES",
    "PROOF_FORMAT",
    "ConsistencyProof",
    "InclusionProof",
    "ProofFormatError",
]

PROOF_FORMAT: Final = 1
# A tree of 2**63 leaves needs at most 63 (inclusion) or 2*63 (consistency) hashes.
MAX_PROOF_HASHES: Final = 130
_HEX_RE: Final = re.compile(r"[0-9a-f]{64}")
_MAX_SIZE: Final = 2**63 - 1


class ProofFormatError(MerkleProofError):
    """A proof document is not of the JSON form this module writes."""

    code = "MerkleProofMalformed"


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_SIZE:
        raise ProofFormatError(f"proof field {name!r} must be an integer in 0..{_MAX_SIZE}")
    return value


def _hashes(data: Mapping[str, Any]) -> tuple[bytes, ...]:
    raw = data.get("hashes")
    if not isinstance(raw, list) or len(raw) > MAX_PROOF_HASHES:
        raise ProofFormatError(f"proof 'hashes' must be a list of at most {MAX_PROOF_HASHES}")
    out: list[bytes] = []
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not _HEX_RE.fullmatch(item):
            raise ProofFormatError(f"proof hashes[{i}] is not 64 lowercase hex digits")
        out.append(bytes.fromhex(item))
    return tuple(out)


def _check_keys(data: object, keys: frozenset[str], kind: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise ProofFormatError(f"{kind} proof is not a JSON object")
    if set(data) != keys:
        raise ProofFormatError(f"{kind} proof must have exactly the fields {sorted(keys)}")
    fmt = data["format"]
    if type(fmt) is not int or fmt != PROOF_FORMAT:
        raise ProofFormatError(f"unsupported {kind} proof format {fmt!r}")
    return data


def _loads(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ProofFormatError("proof is not JSON") from None


_INCLUSION_KEYS: Final = frozenset({"format", "index", "tree_size", "hashes"})
_CONSISTENCY_KEYS: Final = frozenset({"format", "from_size", "to_size", "hashes"})


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """Leaf ``index`` is in the tree of ``tree_size`` leaves; ``hashes`` is the audit path."""

    index: int
    tree_size: int
    hashes: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROOF_FORMAT,
            "index": self.index,
            "tree_size": self.tree_size,
            "hashes": [h.hex() for h in self.hashes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: object) -> InclusionProof:
        """Raises: ProofFormatError, naming the first problem."""
        d = _check_keys(data, _INCLUSION_KEYS, "inclusion")
        return cls(_int(d, "index"), _int(d, "tree_size"), _hashes(d))

    @classmethod
    def from_json(cls, text: str | bytes) -> InclusionProof:
        """Raises: ProofFormatError."""
        return cls.from_dict(_loads(text))


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """The tree of ``to_size`` leaves extends the tree of ``from_size`` leaves."""

    from_size: int
    to_size: int
    hashes: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROOF_FORMAT,
            "from_size": self.from_size,
            "to_size": self.to_size,
            "hashes": [h.hex() for h in self.hashes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: object) -> ConsistencyProof:
        """Raises: ProofFormatError, naming the first problem."""
        d = _check_keys(data, _CONSISTENCY_KEYS, "consistency")
        return cls(_int(d, "from_size"), _int(d, "to_size"), _hashes(d))

    @classmethod
    def from_json(cls, text: str | bytes) -> ConsistencyProof:
        """Raises: ProofFormatError."""
        return cls.from_dict(_loads(text))
