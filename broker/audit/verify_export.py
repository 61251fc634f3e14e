"""Offline verification of an export against signed checkpoints (``broker audit verify``).

Usage::

    trusted = trusted_keys([verifier_key_text])
    with open("audit.jsonl", "rb") as f:
        result = verify_export(f, [checkpoint_note], trusted)      # a full export
    with open("sel.jsonl", "rb") as f, open("sel.proofs", "rb") as p:
        result = verify_export(f, [checkpoint_note], trusted, proofs=p)   # a selection

The numbered steps are those of "How verification works" in
``docs/audit-format.md``. A *full* export (records 0..N-1) is checked as a
chain and recomputed as a tree: it proves that these are all the records the
checkpoint commits to, in order and unchanged. A *selection* (any filter) is
checked record by record with an inclusion proof each: it proves that every
record it holds is in the log at its position, but not that no matching
record was left out.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker import jcs
from broker.audit.chain import AuditChainBroken, parse_jsonl, verify_chain
from broker.audit.checkpoint import Checkpoint, CheckpointError, verify_checkpoint
from broker.audit.merkle import MerkleProofError, leaf_hash, verify_inclusion
from broker.audit.merkle_tree import MerkleAccumulator
from broker.audit.proofs import InclusionProof
from broker.audit.record import AuditHashMismatch, AuditRecord, AuditRecordInvalid
from broker.errors import BrokerError

__all__ = ["ExportInvalid", "ExportVerification", "verify_checkpoints", "verify_export"]


class ExportInvalid(BrokerError):
    """The export does not match its checkpoint(s); ``check`` names the step that failed."""

    code = "AuditExportInvalid"

    def __init__(self, check: str, reason: str, *, index: int | None = None) -> None:
        where = f"record {index}: " if index is not None else ""
        super().__init__(f"{check}: {where}{reason}")
        self.check = check
        self.reason = reason
        self.index = index


@dataclass(frozen=True, slots=True)
class ExportVerification:
    """What a successful verification established."""

    count: int
    first_seq: int
    last_seq: int
    tree_size: int
    root_hash: bytes
    checkpoints: tuple[Checkpoint, ...]
    selection: bool


def verify_checkpoints(
    notes: Sequence[str | bytes],
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    origin: str | None = None,
) -> list[Checkpoint]:
    """Step (8): every checkpoint is signed by a trusted key, all for one log; sorted by size.

    Raises:
        ExportInvalid: a checkpoint does not verify, or two are for different logs.
    """
    if not notes:
        raise ExportInvalid("checkpoint", "no checkpoint given")
    out: list[Checkpoint] = []
    for i, note in enumerate(notes):
        try:
            out.append(verify_checkpoint(note, trusted, origin=origin))
        except CheckpointError as exc:
            raise ExportInvalid(f"checkpoint {i + 1}", exc.message) from None
    if len({cp.origin for cp in out}) > 1:
        raise ExportInvalid("checkpoint", "checkpoints are for different logs")
    return sorted(out, key=lambda cp: cp.size)


def _canonical(data: Mapping[str, Any]) -> bytes:
    return jcs.dumps({k: v for k, v in data.items() if k != "hash"})


def verify_export(
    lines: Iterable[bytes],
    checkpoints: Sequence[str | bytes],
    trusted: Mapping[str, Ed25519PublicKey],
    *,
    origin: str | None = None,
    proofs: Iterable[bytes] | None = None,
) -> ExportVerification:
    """Verify an export file's lines against checkpoints; stop at the first failure.

    Raises:
        AuditChainBroken: a record or link is broken (steps 1-6), naming its index.
        ExportInvalid: a checkpoint, the tree, the record count or a proof does not match.
    """
    cps = verify_checkpoints(checkpoints, trusted, origin=origin)
    if proofs is not None:
        return _verify_selection(lines, cps[-1], proofs, cps)
    return _verify_full(lines, cps)


def _verify_full(lines: Iterable[bytes], cps: list[Checkpoint]) -> ExportVerification:
    acc = MerkleAccumulator()
    roots: dict[int, bytes] = {}
    wanted = {cp.size for cp in cps}
    if 0 in wanted:
        roots[0] = acc.root()

    def leaves() -> Iterator[Mapping[str, Any]]:
        for data in parse_jsonl(lines):
            yield data
            # verify_chain has accepted this record (it raises before asking for the next).
            acc.append(leaf_hash(_canonical(data)))
            if acc.size in wanted:
                roots[acc.size] = acc.root()

    # (1)-(6) Every line, record and link, from genesis.
    report = verify_chain(leaves(), require_genesis=bool(cps[-1].size))
    newest = cps[-1]
    # (9) Count: the checkpoint says how many records there are.
    if report.count < newest.size:
        raise ExportInvalid(
            "truncated",
            f"the checkpoint covers {newest.size} records but the export holds {report.count}; "
            f"records {report.count}..{newest.size - 1} are missing from the end",
        )
    if report.count > newest.size:
        raise ExportInvalid(
            "count",
            f"the export holds {report.count} records, more than the {newest.size} its newest "
            "checkpoint covers: verify against the checkpoint delivered with the export",
        )
    # (10) Root: the recomputed tree of each checkpoint's size has that checkpoint's root.
    for cp in reversed(cps):
        if not hmac.compare_digest(roots[cp.size], cp.root_hash):
            if cp is newest:
                raise ExportInvalid(
                    "tree root",
                    f"the {report.count} records hash to root {roots[cp.size].hex()}, not the "
                    f"checkpoint's {cp.root_hash.hex()} (records were changed and re-chained, "
                    "or the checkpoint is for another log)",
                )
            raise ExportInvalid(
                "consistency",
                f"the checkpoint of size {cp.size} (root {cp.root_hash.hex()}) is not a prefix "
                f"of the log the newer checkpoint of size {newest.size} commits to: the log "
                "was rewritten or forked after it",
            )
    return ExportVerification(
        count=report.count,
        first_seq=report.first_seq,
        last_seq=report.last_seq,
        tree_size=newest.size,
        root_hash=newest.root_hash,
        checkpoints=tuple(cps),
        selection=False,
    )


def _record(index: int, data: Mapping[str, Any]) -> AuditRecord:
    try:
        return AuditRecord.from_dict(data)
    except AuditHashMismatch as exc:
        raise AuditChainBroken(index, f"modified record: {exc.message}") from None
    except AuditRecordInvalid as exc:
        raise AuditChainBroken(index, f"malformed record: {exc.message}") from None


def _verify_selection(
    lines: Iterable[bytes], cp: Checkpoint, proofs: Iterable[bytes], cps: list[Checkpoint]
) -> ExportVerification:
    proof_iter = iter(proofs)
    count, first, prev = 0, -1, -1
    for index, data in enumerate(parse_jsonl(lines)):
        # (1)-(3) Line, shape and self-hash, as for a full export.
        record = _record(index, data)
        # (5') Order: seq strictly increases (a selection may skip, never repeat or go back).
        if record.seq <= prev:
            raise AuditChainBroken(
                index,
                f"sequence out of order: seq {record.seq} after seq {prev} "
                "(record duplicated or reordered)",
            )
        proof = _next_proof(index, proof_iter)
        # (11) Inclusion: this record's leaf is leaf `seq` of the checkpoint's tree.
        if proof.index != record.seq:
            raise ExportInvalid(
                "inclusion",
                f"the proof on line {index + 1} is for seq {proof.index}, the record has "
                f"seq {record.seq} (a record or a proof was added or removed)",
                index=index,
            )
        try:
            verify_inclusion(
                leaf_hash(record.canonical_bytes()), record.seq, cp.size, proof.hashes, cp.root_hash
            )
        except MerkleProofError as exc:
            raise ExportInvalid(
                "inclusion",
                f"seq {record.seq} is not in the checkpoint's tree: {exc.message}",
                index=index,
            ) from None
        first = record.seq if first < 0 else first
        prev = record.seq
        count += 1
    if next(proof_iter, None) is not None:
        raise ExportInvalid("inclusion", f"the proofs file has more lines than the {count} records")
    if count == 0:
        raise ExportInvalid("count", "the export holds no records")
    return ExportVerification(count, first, prev, cp.size, cp.root_hash, tuple(cps), True)


def _next_proof(index: int, proofs: Iterator[bytes]) -> InclusionProof:
    raw = next(proofs, None)
    if raw is None:
        raise ExportInvalid("inclusion", "the proofs file ends before the export", index=index)
    try:
        return InclusionProof.from_json(raw)
    except MerkleProofError as exc:
        raise ExportInvalid("inclusion", f"proof line {index + 1}: {exc.message}") from None
