"""Signed checkpoints of the audit transparency log (C2SP tlog-checkpoint in a signed note).

Usage::

    cp = sign_checkpoint(key, size=tree.size, root=tree.root(), time=now,
                         origin="broker.example/audit")
    publish(cp.note)                                   # the text below
    cp = verify_checkpoint(text, trusted_keys(published_verifier_keys),
                           origin="broker.example/audit")

Format v1 (``docs/audit-format.md``), UTF-8, every line ending in ``\\n``::

    broker.example/audit                   origin: names the log
    42                                     tree size, decimal
    3q2+7w...=                             root hash, standard base64 (32 bytes)
    format 1                               extension line: this format's version
    time 2025-05-06T07:08:09.123456Z       extension line: signing time (UTC)
                                           blank line
    — broker.example/audit HEu1e5r...      signature line(s)

A signature line is an em dash (U+2014), a space, the key name, a space and
``base64(4-byte C2SP key hash || 64-byte Ed25519 signature)``; the signature
covers every byte above the blank line, final newline included.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit.audit_key import (
    KEY_HASH_SIZE,
    AuditKey,
    AuditKeyInvalid,
    check_key_name,
    key_hash,
    signature_is_valid,
)
from broker.audit.merkle import HASH_SIZE
from broker.audit.record import AuditRecordInvalid, format_time, parse_time
from broker.errors import BrokerError

__all__ = [
    "CHECKPOINT_FORMAT",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "AuditKey",
    "Checkpoint",
    "CheckpointError",
    "check_origin",
    "open_note",
    "sign_checkpoint",
    "sign_note",
    "verify_checkpoint",
]

CHECKPOINT_FORMAT: Final = 1
MAX_NOTE_BYTES: Final = 16 * 1024
# C2SP signed-note lets a verifier refuse notes with more than 100 signatures.
MAX_SIGNATURES: Final = 100
MAX_ORIGIN_CHARS: Final = 256
MAX_TREE_SIZE: Final = 2**63 - 1
_SIG_PREFIX: Final = "\u2014 "
_ED25519_SIG_SIZE: Final = 64


class CheckpointError(BrokerError):
    """A checkpoint is malformed, unsigned by a trusted key, or cannot be made."""

    code = "CheckpointInvalid"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head signed by ``key_id``. Holding one from ``verify_checkpoint`` means it verified.

    ``note`` is the full signed-note text, to republish byte for byte.
    """

    origin: str
    size: int
    root_hash: bytes
    time: datetime
    key_id: str
    note: str

    def body(self) -> str:
        """The signed text: everything above the blank line, final newline included."""
        return _body(self.origin, self.size, self.root_hash, self.time)


def check_origin(origin: object) -> str:
    """The origin line: 1..256 printable characters, no leading or trailing space.

    Raises:
        CheckpointError: otherwise.
    """
    if not isinstance(origin, str) or not 0 < len(origin) <= MAX_ORIGIN_CHARS:
        raise CheckpointError(f"origin must be 1..{MAX_ORIGIN_CHARS} characters")
    if not origin.isprintable() or origin != origin.strip():
        raise CheckpointError("origin must be printable text without surrounding spaces")
    try:
        origin.encode("utf-8")
    except UnicodeEncodeError:
        raise CheckpointError("origin is not valid Unicode text") from None
    return origin


def _body(origin: str, size: int, root: bytes, time: datetime) -> str:
    root_b64 = base64.b64encode(root).decode("ascii")
    return f"{origin}\n{size}\n{root_b64}\nformat {CHECKPOINT_FORMAT}\ntime {format_time(time)}\n"


def sign_checkpoint(
    key: AuditKey, size: int, root: bytes, time: datetime, origin: str
) -> Checkpoint:
    """Sign the tree head ``(size, root)`` at ``time`` for the log ``origin``.

    Raises:
        CheckpointError: a value the format cannot carry (bad origin, size, root or naive time).
    """
    check_origin(origin)
    _check_head(size, root)
    try:
        body = _body(origin, size, root, time)
    except AuditRecordInvalid as exc:
        raise CheckpointError(f"checkpoint time: {exc.message}") from None
    note = sign_note(key, body)
    return Checkpoint(origin, size, root, parse_time(format_time(time)), key.key_id, note)


def sign_note(key: AuditKey, text: str) -> str:
    """C2SP signed note: ``text``, a blank line and one signature line by ``key``.

    Raises:
        CheckpointError: ``text`` is empty, lacks its final newline or holds a blank line.
    """
    if not text.endswith("\n") or "\n\n" in text or text.startswith("\n"):
        raise CheckpointError("note text must be non-empty lines, each ending in a newline")
    blob = key_hash(key.name, key.public_key) + key.sign(text.encode("utf-8"))
    return f"{text}\n{_SIG_PREFIX}{key.name} {base64.b64encode(blob).decode('ascii')}\n"


def _check_head(size: object, root: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
        raise CheckpointError(f"tree size must be an integer in 0..{MAX_TREE_SIZE}")
    if not isinstance(root, bytes) or len(root) != HASH_SIZE:
        raise CheckpointError(f"root hash must be {HASH_SIZE} bytes")


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signature:
    key_id: str
    signature: bytes


def _split_note(note: str) -> tuple[str, list[_Signature]]:
    # (2) Text and signatures are separated by the last blank line.
    if not note.endswith("\n"):
        raise CheckpointError("signed note does not end with a newline")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckpointError("signed note has no blank line before its signatures")
    body, sig_block = note[: cut + 1], note[cut + 2 :]
    lines = sig_block.split("\n")[:-1]
    # (3) One or more signature lines, at most MAX_SIGNATURES.
    if not lines:
        raise CheckpointError("signed note carries no signature")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(f"signed note carries more than {MAX_SIGNATURES} signatures")
    return body, [_parse_signature_line(i, line) for i, line in enumerate(lines)]


def _parse_signature_line(index: int, line: str) -> _Signature:
    where = f"signature line {index + 1}"
    if not line.startswith(_SIG_PREFIX):
        raise CheckpointError(f"{where} does not start with an em dash and a space")
    fields = line[len(_SIG_PREFIX) :].split(" ")
    if len(fields) != 2:
        raise CheckpointError(f"{where} is not '\u2014 <key name> <base64 signature>'")
    name, blob_b64 = fields
    try:
        check_key_name(name)
        blob = base64.b64decode(blob_b64, validate=True)
    except AuditKeyInvalid as exc:
        raise CheckpointError(f"{where}: {exc.message}") from None
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{where}: signature is not valid base64") from None
    # Only the canonical spelling: otherwise unused base64 bits would let one
    # signature be written several ways.
    if base64.b64encode(blob).decode("ascii") != blob_b64:
        raise CheckpointError(f"{where}: signature is not canonical base64")
    if len(blob) <= KEY_HASH_SIZE:
        raise CheckpointError(f"{where}: signature is too short")
    return _Signature(f"{name}+{blob[:KEY_HASH_SIZE].hex()}", blob[KEY_HASH_SIZE:])


def _parse_body(body: str) -> tuple[str, int, bytes, datetime]:
    lines = body.split("\n")[:-1]
    # (5) Exactly origin, size, root hash and the two v1 extension lines.
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs origin, tree size and root hash lines")
    origin, size_text, root_b64, *extensions = lines
    check_origin(origin)
    if (
        not 0 < len(size_text) <= len(str(MAX_TREE_SIZE))
        or not size_text.isascii()
        or not size_text.isdigit()
        or size_text != str(int(size_text))
    ):
        raise CheckpointError("tree size is not a decimal number without leading zeros")
    size = int(size_text)
    if size > MAX_TREE_SIZE:
        raise CheckpointError(f"tree size exceeds {MAX_TREE_SIZE}")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("root hash is not valid base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode("ascii") != root_b64:
        raise CheckpointError(f"root hash is not the canonical base64 of {HASH_SIZE} bytes")
    if not extensions or extensions[0] != f"format {CHECKPOINT_FORMAT}":
        raise CheckpointError(
            f"unsupported checkpoint format (expected 'format {CHECKPOINT_FORMAT}')"
        )
    if len(extensions) != 2 or not extensions[1].startswith("time "):
        raise CheckpointError("checkpoint format 1 has exactly the 'format' and 'time' lines")
    try:
        time = parse_time(extensions[1].removeprefix("time "))
    except AuditRecordInvalid as exc:
        raise CheckpointError(f"checkpoint time: {exc.message}") from None
    return origin, size, root, time


def _decode_note(note: object) -> str:
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise CheckpointError(f"signed note is larger than {MAX_NOTE_BYTES} bytes")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("signed note is not UTF-8") from None
    if not isinstance(note, str):
        raise CheckpointError("signed note must be text or bytes")
    if len(note.encode("utf-8", "surrogatepass")) > MAX_NOTE_BYTES:
        raise CheckpointError(f"signed note is larger than {MAX_NOTE_BYTES} bytes")
    if any(c != "\n" and not c.isprintable() for c in note):
        raise CheckpointError("signed note holds control or unprintable characters")
    return note


def open_note(
    note: str | bytes, trusted_public_keys: Mapping[str, Ed25519PublicKey]
) -> tuple[str, str]:
    """Verify a C2SP signed note; return its text and the id of the first trusted signer.

    Signatures by keys not in the set are ignored (co-signers, witnesses).
    A signature by a trusted key that does not verify rejects the whole note,
    as C2SP signed-note requires.

    Raises:
        CheckpointError: malformed, or not signed by any trusted key.
    """
    # (1) Size and encoding: bounded, UTF-8, no control characters but newlines.
    # (2)-(3) Split off and parse the signature lines.
    text, signatures = _split_note(_decode_note(note))
    # (4) At least one signature by a trusted key; any bad trusted signature rejects.
    text_bytes = text.encode("utf-8")
    signer: str | None = None
    for sig in signatures:
        public_key = trusted_public_keys.get(sig.key_id)
        if public_key is None:
            continue
        if len(sig.signature) != _ED25519_SIG_SIZE or not signature_is_valid(
            sig.key_id, public_key, sig.signature, text_bytes
        ):
            raise CheckpointError(f"signature by trusted key {sig.key_id} does not verify")
        signer = signer or sig.key_id
    if signer is None:
        named = ", ".join(sorted({s.key_id for s in signatures}))
        raise CheckpointError(f"note is not signed by a trusted key (signed by: {named})")
    return text, signer


def verify_checkpoint(
    note: str | bytes,
    trusted_public_keys: Mapping[str, Ed25519PublicKey],
    *,
    origin: str | None = None,
) -> Checkpoint:
    """Verify a signed checkpoint against the trusted keys (``key_id -> public key``).

    Steps (1)-(4) are ``open_note``; ``origin``, when given, must match.

    Raises:
        CheckpointError: naming the first problem found.
    """
    note = _decode_note(note)
    text, signer = open_note(note, trusted_public_keys)
    # (5) Only now parse the signed text: its fields are trusted from here on.
    cp_origin, size, root, time = _parse_body(text)
    # (6) The expected log.
    if origin is not None and cp_origin != origin:
        raise CheckpointError(f"checkpoint is for log {cp_origin!r}, expected {origin!r}")
    return Checkpoint(cp_origin, size, root, time, signer, note)
