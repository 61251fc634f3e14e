"""Release receipts: the log's signed promise that a record is at a given position.

Usage::

    receipt = issue_receipt(key, record.seq, record_leaf_hash(record), now,
                            "broker.example/audit", tree_size=tree.size)
    body = receipt.to_dict()                  # JSON for the client
    receipt = Receipt.from_dict(body)         # strict
    verify_receipt(receipt, trusted)          # signature by a trusted key
    verify_receipt_inclusion(receipt, tree.inclusion_proof(receipt.seq, cp.size), cp)

A receipt is handed out when a record commits, before any checkpoint covers
it (like a CT signed certificate timestamp). Later, anyone holding it checks
that a newer signed checkpoint includes the record at that index: a log that
dropped or rewrote the record cannot produce that inclusion proof.

Signed bytes: ``RECEIPT_CONTEXT`` followed by the RFC 8785 JSON of
``to_dict()`` without ``signature``. The context string keeps a receipt
signature from ever being valid as a checkpoint signature, and the reverse.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker import jcs
from broker.audit.audit_key import AuditKey, AuditKeyInvalid, parse_key_id, signature_is_valid
from broker.audit.checkpoint import MAX_TREE_SIZE, Checkpoint, CheckpointError, check_origin
from broker.audit.merkle import HASH_SIZE, record_leaf_hash, verify_inclusion
from broker.audit.record import AuditRecord, AuditRecordInvalid, format_time, parse_time
from broker.errors import BrokerError

__all__ = [
    "MAX_HEADER_CHARS",
    "RECEIPT_CONTEXT",
    "RECEIPT_FORMAT",
    "RECEIPT_KEYS",
    "Receipt",
    "ReceiptError",
    "decode_receipt_header",
    "encode_receipt_header",
    "issue_receipt",
    "verify_receipt",
    "verify_receipt_inclusion",
    "verify_receipt_record",
]

RECEIPT_FORMAT: Final = 1
RECEIPT_CONTEXT: Final = b"broker audit receipt v1\n"
RECEIPT_KEYS: Final = frozenset(
    {"format", "origin", "seq", "leaf_hash", "tree_size", "time", "key_id", "signature"}
)
_HEX_HASH_RE: Final = re.compile(r"[0-9a-f]{64}")
_ED25519_SIG_SIZE: Final = 64
# A receipt is ~400 bytes of JSON; anything much larger is not one.
MAX_HEADER_CHARS: Final = 4096


class ReceiptError(BrokerError):
    """A receipt is malformed, its signature does not verify, or it does not match."""

    code = "ReceiptInvalid"


def _check_int(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ReceiptError(f"{name} must be an integer in {low}..{high}")
    return value


@dataclass(frozen=True, slots=True)
class Receipt:
    """Record ``seq`` with leaf hash ``leaf_hash`` is in the log, whose size was ``tree_size``.

    Holding one means it is well formed, not that it verified: call ``verify_receipt``.

    Raises:
        ReceiptError: on construction with values the format cannot hold.
    """

    origin: str
    seq: int
    leaf_hash: bytes
    tree_size: int
    time: datetime
    key_id: str
    signature: bytes

    def __post_init__(self) -> None:
        time: object = self.time
        if not isinstance(time, datetime):
            raise ReceiptError("time must be a datetime")
        try:
            check_origin(self.origin)
            parse_key_id(self.key_id)
            format_time(time)
        except (CheckpointError, AuditKeyInvalid, AuditRecordInvalid) as exc:
            raise ReceiptError(f"receipt: {exc.message}") from None
        object.__setattr__(self, "time", time.astimezone(UTC))
        _check_int("seq", self.seq, 0, MAX_TREE_SIZE - 1)
        _check_int("tree_size", self.tree_size, self.seq + 1, MAX_TREE_SIZE)
        leaf: object = self.leaf_hash
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            raise ReceiptError(f"leaf_hash must be {HASH_SIZE} bytes")
        sig: object = self.signature
        if not isinstance(sig, bytes) or len(sig) != _ED25519_SIG_SIZE:
            raise ReceiptError(f"signature must be {_ED25519_SIG_SIZE} bytes")

    def _body(self) -> dict[str, Any]:
        return {
            "format": RECEIPT_FORMAT,
            "origin": self.origin,
            "seq": self.seq,
            "leaf_hash": self.leaf_hash.hex(),
            "tree_size": self.tree_size,
            "time": format_time(self.time),
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        """What the signature covers: the context string and the canonical body."""
        return RECEIPT_CONTEXT + jcs.dumps(self._body())

    def to_dict(self) -> dict[str, Any]:
        """JSON form: hashes in lowercase hex, the signature in standard base64."""
        return {**self._body(), "signature": base64.b64encode(self.signature).decode("ascii")}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Receipt:
        """Parse the JSON form strictly: every key, right types, nothing else.

        Raises:
            ReceiptError: naming the first problem found.
        """
        if not isinstance(data, Mapping):
            raise ReceiptError("receipt is not a JSON object")
        keys = set(data)
        if keys != RECEIPT_KEYS:
            missing, extra = sorted(RECEIPT_KEYS - keys), sorted(map(str, keys - RECEIPT_KEYS))
            raise ReceiptError(f"receipt fields: missing {missing}, unknown {extra}")
        fmt = data["format"]
        if type(fmt) is not int or fmt != RECEIPT_FORMAT:
            raise ReceiptError(f"unsupported receipt format {fmt!r}")
        for name in ("origin", "leaf_hash", "time", "key_id", "signature"):
            if not isinstance(data[name], str):
                raise ReceiptError(f"{name} must be a string")
        if not _HEX_HASH_RE.fullmatch(data["leaf_hash"]):
            raise ReceiptError("leaf_hash must be 64 lowercase hex digits")
        try:
            signature = base64.b64decode(data["signature"], validate=True)
            time = parse_time(data["time"])
        except (binascii.Error, ValueError):
            raise ReceiptError("signature is not valid base64") from None
        except AuditRecordInvalid as exc:
            raise ReceiptError(f"receipt time: {exc.message}") from None
        return cls(
            origin=data["origin"],
            seq=data["seq"],
            leaf_hash=bytes.fromhex(data["leaf_hash"]),
            tree_size=data["tree_size"],
            time=time,
            key_id=data["key_id"],
            signature=signature,
        )


def issue_receipt(
    key: AuditKey,
    seq: int,
    leaf_hash: bytes,
    time: datetime,
    origin: str,
    *,
    tree_size: int | None = None,
) -> Receipt:
    """Sign a receipt for record ``seq``. ``tree_size`` defaults to ``seq + 1``.

    Raises:
        ReceiptError: a value the format cannot hold (naive time, bad sizes, bad hash).
    """
    size = seq + 1 if tree_size is None else tree_size
    # Built unsigned first so every field is checked before anything is signed.
    try:
        unsigned = Receipt(origin, seq, leaf_hash, size, time, key.key_id, bytes(64))
    except TypeError:
        raise ReceiptError("seq and tree_size must be integers") from None
    signature = key.sign(unsigned.signed_bytes())
    return Receipt(origin, seq, leaf_hash, size, unsigned.time, key.key_id, signature)


def verify_receipt(receipt: Receipt, trusted_keys: Mapping[str, Ed25519PublicKey]) -> None:
    """The receipt is signed by a trusted key (``key_id -> public key``, old keys included).

    Raises:
        ReceiptError: the key is not trusted or the signature does not verify.
    """
    # (1) The named key must be in the trusted set.
    public_key = trusted_keys.get(receipt.key_id)
    if public_key is None:
        raise ReceiptError(f"receipt is signed by {receipt.key_id}, which is not trusted")
    # (2) Ed25519 over the context string and the canonical body.
    if not signature_is_valid(
        receipt.key_id, public_key, receipt.signature, receipt.signed_bytes()
    ):
        raise ReceiptError(f"receipt signature by {receipt.key_id} does not verify")


def verify_receipt_inclusion(
    receipt: Receipt, proof: Sequence[bytes], checkpoint: Checkpoint
) -> None:
    """The receipt's leaf sits at index ``seq`` in the (verified) ``checkpoint``'s tree.

    Call ``verify_receipt`` first: this checks position, not who signed the receipt.

    Raises:
        ReceiptError: the checkpoint is for another log or older than the receipt.
        MerkleProofError: the inclusion proof does not verify.
    """
    # (1) Same log.
    if receipt.origin != checkpoint.origin:
        raise ReceiptError(
            f"receipt is for log {receipt.origin!r}, checkpoint for {checkpoint.origin!r}"
        )
    # (2) The checkpoint must be at least as new as the receipt.
    if checkpoint.size < receipt.tree_size:
        raise ReceiptError(
            f"checkpoint size {checkpoint.size} is older than the receipt's tree size "
            f"{receipt.tree_size}"
        )
    # (3) RFC 9162 inclusion of the leaf at its index.
    verify_inclusion(receipt.leaf_hash, receipt.seq, checkpoint.size, proof, checkpoint.root_hash)


def verify_receipt_record(receipt: Receipt, record: AuditRecord) -> None:
    """The receipt is for this record: same ``seq`` and the record's leaf hash.

    Raises:
        ReceiptError: it is for another record, or the record was changed.
    """
    if record.seq != receipt.seq:
        raise ReceiptError(f"receipt is for seq {receipt.seq}, record has seq {record.seq}")
    if not hmac.compare_digest(record_leaf_hash(record), receipt.leaf_hash):
        raise ReceiptError(f"record {record.seq} does not hash to the receipt's leaf hash")


def encode_receipt_header(receipt: Receipt) -> str:
    """The ``X-Audit-Receipt`` value: unpadded base64url of the receipt's RFC 8785 JSON."""
    raw = jcs.dumps(receipt.to_dict())
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_receipt_header(value: str) -> Receipt:
    """Parse an ``X-Audit-Receipt`` value (well-formedness only: then call ``verify_receipt``).

    Raises:
        ReceiptError: not base64url of a receipt's JSON.
    """
    if len(value) > MAX_HEADER_CHARS:
        raise ReceiptError("receipt header is missing or too long")
    text = value.strip()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise ReceiptError("receipt header is not base64url of JSON") from None
    return Receipt.from_dict(data)
