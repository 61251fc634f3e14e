"""Transparency-log use cases: checkpoints, proofs, receipts, audit key rotation.

Usage::

    log = AuditLogService(tree, store, key, clock, data_dir=..., origin=..., audit=sink)
    await log.start()                       # publishes the key, finishes a pending rotation
    receipt = await log.receipt(record)     # for a committed record
    cp = await log.sign_checkpoint()        # on demand; periodic in run_forever
    proof = log.inclusion_proof(index, size)

The tree only ever holds committed records (the audit log's ``on_commit``
hook appends them), so everything signed here describes durable records.
On a log shared by several replicas the tree also reads what the others
appended (``sync``): before every checkpoint, so the periodic one too.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import structlog

from broker.adapters.audit_keys import commit_rotation, pending_rotation, prepare_rotation
from broker.adapters.audit_store import StoredCheckpoint
from broker.adapters.audit_tree import AuditTree
from broker.audit.audit_key import AuditKey, trusted_keys
from broker.audit.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from broker.audit.privacy import RequesterKey
from broker.audit.proofs import ConsistencyProof, InclusionProof
from broker.audit.receipt import Receipt, issue_receipt
from broker.audit.record import AuditRecord
from broker.errors import AuditWriteError, BrokerError
from broker.ports import AuditSink, Clock
from broker.service.auditing import event, record
from broker.service.context import RequestContext

__all__ = ["AuditLogService", "CheckpointNotFound", "PublishedKey", "TransparencyStore"]

log = structlog.get_logger(__name__)


class CheckpointNotFound(BrokerError):
    """No checkpoint was signed for the requested tree size."""

    code = "CheckpointNotFound"
    status = 404


class TransparencyStore(Protocol):
    """Checkpoints and verifier keys (SQLite next to the records, or PostgreSQL)."""

    async def create(self) -> None: ...

    async def add_verifier_key(self, key_id: str, verifier_key: str, now: datetime) -> None: ...

    async def verifier_keys(self) -> list[tuple[str, str, datetime]]: ...

    async def add_checkpoint(self, cp: Checkpoint) -> None: ...

    async def checkpoint(self, size: int | None = None) -> StoredCheckpoint | None: ...


@dataclass(frozen=True, slots=True)
class PublishedKey:
    key_id: str
    verifier_key: str
    created_at: datetime
    current: bool


class AuditLogService:
    """Signs checkpoints and receipts over the committed tree; serves proofs."""

    def __init__(
        self,
        tree: AuditTree,
        store: TransparencyStore,
        key: AuditKey,
        clock: Clock,
        *,
        audit: AuditSink,
        data_dir: Path,
        origin: str,
        interval: float,
        requester_key: RequesterKey | None = None,
    ) -> None:
        self._tree = tree
        self._store = store
        self._key = key
        self._clock = clock
        self._audit = audit
        self._data = data_dir
        self.origin = origin
        self._interval = interval
        self.requester_key = requester_key
        self._latest: Checkpoint | None = None
        self._lock = asyncio.Lock()

    @property
    def key(self) -> AuditKey:
        return self._key

    @property
    def tree_size(self) -> int:
        return self._tree.size

    async def sync(self) -> int:
        """Catch the tree up with records other replicas appended (a no-op on a log
        with one writer); returns the tree size. Call before proofs of sizes this
        replica has not signed. Raises: AuditWriteError."""
        return await self._tree.sync()

    async def start(self) -> None:
        """Create the tables, finish an interrupted rotation, publish the current key.

        Raises:
            AuditWriteError, ConfigError: the broker must not start.
        """
        await self._store.create()
        now = self._clock.now()
        pending = await asyncio.to_thread(pending_rotation, self._data, name=self._key.name)
        if pending is not None:
            await self._store.add_verifier_key(pending.key_id, pending.verifier_key(), now)
            await asyncio.to_thread(commit_rotation, self._data)
            self._key = pending
        await self._store.add_verifier_key(self._key.key_id, self._key.verifier_key(), now)
        stored = await self._store.checkpoint()
        if stored is not None:
            self._latest = await self._open(stored[1])

    async def _open(self, note: str) -> Checkpoint:
        # Re-verified on the way out: a stored note that no published key
        # signed (a tampered database) is never served as genuine.
        trusted = trusted_keys(k.verifier_key for k in await self.verifier_keys())
        return verify_checkpoint(note, trusted, origin=self.origin)

    # -- keys ----------------------------------------------------------------------------------

    async def verifier_keys(self) -> list[PublishedKey]:
        """Every audit key ever used, oldest first. Raises: AuditWriteError."""
        rows = await self._store.verifier_keys()
        return [PublishedKey(k, v, t, k == self._key.key_id) for k, v, t in rows]

    async def rotate_key(self, ctx: RequestContext) -> PublishedKey:
        """Sign with a new key from now on; the old key stays published. Audited.

        A checkpoint of the current tree is signed with the new key at once,
        so the handover is visible: the same size and root under both keys.

        Raises:
            AuditWriteError, ConfigError: the rotation did not complete.
        """
        async with self._lock:
            now = self._clock.now()
            new = await asyncio.to_thread(prepare_rotation, self._data, name=self._key.name)
            await self._store.add_verifier_key(new.key_id, new.verifier_key(), now)
            await asyncio.to_thread(commit_rotation, self._data)
            old, self._key = self._key, new
        await record(
            self._audit,
            event(
                "audit.key_rotated", ctx, now, decision="ok", detail=f"{old.key_id} -> {new.key_id}"
            ),
        )
        await self.sign_checkpoint(force=True)
        log.info("audit.key_rotated", old=old.key_id, new=new.key_id)
        return PublishedKey(new.key_id, new.verifier_key(), now, True)

    # -- checkpoints ---------------------------------------------------------------------------

    async def sign_checkpoint(self, *, force: bool = False) -> Checkpoint:
        """The latest checkpoint, signing a new one first if the tree grew (or ``force``).

        Raises:
            AuditWriteError: the tree is broken or the checkpoint cannot be stored.
        """
        async with self._lock:
            await self._tree.sync()
            self._tree.check()
            size = self._tree.size
            latest = self._latest
            if (
                not force
                and latest is not None
                and latest.size == size
                and latest.key_id == self._key.key_id
            ):
                return latest
            cp = sign_checkpoint(
                self._key, size, self._tree.root(size), self._clock.now(), self.origin
            )
            await self._store.add_checkpoint(cp)
            self._latest = cp
            log.info("audit.checkpoint_signed", size=size, key_id=cp.key_id)
            return cp

    async def checkpoint(self, size: int | None = None) -> Checkpoint:
        """The newest stored checkpoint, or the newest one of exactly ``size``.

        Raises:
            CheckpointNotFound: none stored (for that size).
        """
        if size is None and self._latest is not None:
            return self._latest
        stored = await self._store.checkpoint(size)
        if stored is None:
            what = "yet" if size is None else f"for tree size {size}"
            raise CheckpointNotFound(f"no checkpoint has been signed {what}")
        return await self._open(stored[1])

    async def run_forever(self) -> None:
        """Sign a checkpoint every ``interval`` seconds when the tree has grown."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sign_checkpoint()
            except BrokerError as exc:
                log.warning("audit.checkpoint_failed", code=exc.code)

    # -- proofs and receipts -------------------------------------------------------------------

    def inclusion_proof(self, index: int, size: int) -> InclusionProof:
        """Raises: InvalidTreeRange (400) when the tree lacks the leaf or the size."""
        self._tree.check()
        return InclusionProof(index, size, tuple(self._tree.inclusion_proof(index, size)))

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyProof:
        """Raises: InvalidTreeRange (400) when the tree lacks either size."""
        self._tree.check()
        hashes = self._tree.consistency_proof(old_size, new_size)
        return ConsistencyProof(old_size, new_size, tuple(hashes))

    async def receipt(self, committed: AuditRecord) -> Receipt:
        """A signed receipt for a committed record, naming the current tree size.

        Raises:
            AuditWriteError: the tree does not hold the record and cannot read it
                (it never answers for a leaf it lacks).
        """
        self._tree.check()
        if committed.seq >= self._tree.size:
            # Only on a shared log whose catch-up read after COMMIT failed: the
            # record is durable, so read once more before the release goes unanswered.
            await self._tree.sync(upto=committed.seq + 1)
        if committed.seq >= self._tree.size:
            raise AuditWriteError(f"audit tree does not hold record {committed.seq} yet")
        return issue_receipt(
            self._key,
            committed.seq,
            self._tree.leaf_hash(committed.seq),
            self._clock.now(),
            self.origin,
            tree_size=self._tree.size,
        )
