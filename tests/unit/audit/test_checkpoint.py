"""Audit keys and signed checkpoints: C2SP signed-note interop, rotation, strict parsing."""

from __future__ import annotations

import base64
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.audit_key import (
    AuditKey,
    AuditKeyInvalid,
    parse_verifier_key,
    public_key_from_pem,
    trusted_keys,
)
from broker.audit.checkpoint import (
    CheckpointError,
    open_note,
    sign_checkpoint,
    sign_note,
    verify_checkpoint,
)
from broker.audit.merkle import EMPTY_ROOT, record_leaf_hash, root_from_leaves
from broker.audit.record import AuditRecord
from broker.errors import BrokerError

ORIGIN = "broker.example/audit"
NOW = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
ROOT = bytes(range(32))

# Interop vector: the example signed note of golang.org/x/mod/sumdb/note
# (package documentation of note.go, also used by note_test.go): its signer
# key holds the Ed25519 seed, and Ed25519 is deterministic, so signing the
# same text must give the published note byte for byte.
GO_SIGNER_KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VERIFIER_KEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n\u2014 PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _go_key() -> AuditKey:
    seed = base64.b64decode(GO_SIGNER_KEY.split("+", 4)[4])
    assert seed[0] == 0x01
    return AuditKey("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed[1:]))


@pytest.fixture(scope="module")
def key() -> AuditKey:
    return AuditKey.generate(ORIGIN)


@pytest.fixture(scope="module")
def trusted(key: AuditKey) -> dict[str, object]:
    return dict(trusted_keys([key.verifier_key()]))


# -- audit key -------------------------------------------------------------------------------------


def test_go_signed_note_interop() -> None:
    """Key id, verifier key and signed note match the Go sumdb/note reference example."""
    key = _go_key()
    assert key.key_id == "PeterNeumann+c74f20a3"
    assert key.verifier_key() == GO_VERIFIER_KEY
    assert sign_note(key, GO_TEXT) == GO_NOTE
    assert open_note(GO_NOTE, trusted_keys([GO_VERIFIER_KEY])) == (GO_TEXT, key.key_id)
    with pytest.raises(CheckpointError, match="does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), trusted_keys([GO_VERIFIER_KEY]))


def test_private_key_never_prints(key: AuditKey) -> None:
    """repr shows the name and key id only."""
    text = repr(key)
    assert "private" not in text
    assert key.key_id in text
    pem = key.to_pem().decode()
    assert pem.splitlines()[1] not in text


def test_pem_round_trip_plain_and_encrypted(key: AuditKey) -> None:
    """A key saved as PKCS#8 PEM (optionally encrypted) loads back with the same id."""
    assert AuditKey.from_pem(key.to_pem(), name=ORIGIN).key_id == key.key_id
    pem = key.to_pem(password=b"pw")
    assert b"ENCRYPTED" in pem
    assert AuditKey.from_pem(pem, name=ORIGIN, password=b"pw").key_id == key.key_id
    with pytest.raises(AuditKeyInvalid, match="wrong password"):
        AuditKey.from_pem(pem, name=ORIGIN, password=b"nope")
    assert public_key_from_pem(key.public_pem(), name=ORIGIN)[0] == key.key_id


def test_pem_of_another_key_type_is_refused() -> None:
    """Only Ed25519 keys can be audit keys; the error does not echo the input."""
    ec = generate_private_key(SECP256R1())
    pem = ec.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    with pytest.raises(AuditKeyInvalid, match="Ed25519") as info:
        AuditKey.from_pem(pem, name=ORIGIN)
    assert "BEGIN" not in info.value.message
    with pytest.raises(AuditKeyInvalid):
        AuditKey.from_pem(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", name="x"
        )
    with pytest.raises(AuditKeyInvalid):
        public_key_from_pem(pem, name=ORIGIN)
    assert isinstance(AuditKeyInvalid("x"), BrokerError)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "tab\there", "x" * 257])
def test_bad_key_names(name: str) -> None:
    """Key names are non-empty, without spaces, '+' or control characters."""
    with pytest.raises(AuditKeyInvalid):
        AuditKey.generate(name)


@pytest.mark.parametrize(
    "text",
    [
        "PeterNeumann+c74f20a3",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpC2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_verifier_keys(text: str) -> None:
    """Mangled verifier keys (hash, type, length, case) are refused."""
    with pytest.raises(AuditKeyInvalid):
        parse_verifier_key(text)


# -- checkpoints -----------------------------------------------------------------------------------


def test_sign_and_verify_round_trip(key: AuditKey, trusted: dict[str, object]) -> None:
    """A signed checkpoint verifies and gives back its fields; the text is the documented form."""
    cp = sign_checkpoint(key, 42, ROOT, NOW, ORIGIN)
    body = f"{ORIGIN}\n42\n{base64.b64encode(ROOT).decode()}\nformat 1\ntime 2025-05-06T07:08:09.123456Z\n"
    assert cp.note.startswith(body + "\n\u2014 " + ORIGIN + " ")
    assert cp.body() == body
    got = verify_checkpoint(cp.note, trusted, origin=ORIGIN)  # type: ignore[arg-type]
    assert (got.origin, got.size, got.root_hash, got.time, got.key_id) == (
        ORIGIN,
        42,
        ROOT,
        NOW,
        key.key_id,
    )
    assert got == verify_checkpoint(cp.note.encode(), trusted)  # type: ignore[arg-type]
    assert got == cp


def test_time_is_kept_in_utc(key: AuditKey, trusted: dict[str, object]) -> None:
    """A time with another offset is signed as the same instant in UTC; naive times are refused."""
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    cp = sign_checkpoint(key, 1, ROOT, local, ORIGIN)
    assert verify_checkpoint(cp.note, trusted).time == NOW  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="timezone"):
        sign_checkpoint(key, 1, ROOT, NOW.replace(tzinfo=None), ORIGIN)


def test_rotation_old_and_new_keys_verify(key: AuditKey) -> None:
    """After rotation both keys stay trusted; a key dropped from the set no longer verifies."""
    new = AuditKey.generate(ORIGIN)
    assert new.key_id != key.key_id
    trusted = trusted_keys([key.verifier_key(), new.verifier_key()])
    old_cp = sign_checkpoint(key, 1, ROOT, NOW, ORIGIN)
    new_cp = sign_checkpoint(new, 2, ROOT, NOW, ORIGIN)
    assert verify_checkpoint(old_cp.note, trusted).key_id == key.key_id
    assert verify_checkpoint(new_cp.note, trusted).key_id == new.key_id
    with pytest.raises(CheckpointError, match="not signed by a trusted key"):
        verify_checkpoint(old_cp.note, trusted_keys([new.verifier_key()]))


def test_cosignatures_by_unknown_keys_are_ignored(
    key: AuditKey, trusted: dict[str, object]
) -> None:
    """Extra signature lines by keys outside the trusted set do not matter."""
    cp = sign_checkpoint(key, 5, ROOT, NOW, ORIGIN)
    witness = AuditKey.generate("witness.example")
    witness_line = sign_note(witness, cp.body()).split("\n\n", 1)[1]
    own_line = cp.note.split("\n\n", 1)[1]
    for note in (cp.note + witness_line, cp.body() + "\n" + witness_line + own_line):
        assert verify_checkpoint(note, trusted).size == 5  # type: ignore[arg-type]


def test_bad_trusted_signature_rejects_even_with_a_good_one(
    key: AuditKey, trusted: dict[str, object]
) -> None:
    """A failing signature by a trusted key rejects the note (C2SP signed-note)."""
    cp = sign_checkpoint(key, 5, ROOT, NOW, ORIGIN)
    sig_line = cp.note.split("\n\n")[1]
    other = sign_checkpoint(key, 6, ROOT, NOW, ORIGIN).note.split("\n\n")[1]
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(cp.body() + "\n" + other + sig_line, trusted)  # type: ignore[arg-type]


def test_trusted_map_entry_for_another_key_does_not_verify(key: AuditKey) -> None:
    """A trusted map that pairs a key id with the wrong public key never verifies."""
    cp = sign_checkpoint(key, 5, ROOT, NOW, ORIGIN)
    wrong = {key.key_id: AuditKey.generate(ORIGIN).public_key}
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_checkpoint(cp.note, wrong)


def test_origin_mismatch(key: AuditKey, trusted: dict[str, object]) -> None:
    """A checkpoint of another log is refused when the origin is given."""
    cp = sign_checkpoint(key, 5, ROOT, NOW, "other.example/log")
    with pytest.raises(CheckpointError, match="expected"):
        verify_checkpoint(cp.note, trusted, origin=ORIGIN)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "root", "origin", "message"),
    [
        (-1, ROOT, ORIGIN, "tree size"),
        (True, ROOT, ORIGIN, "tree size"),
        (2**63, ROOT, ORIGIN, "tree size"),
        (1, ROOT[:31], ORIGIN, "root hash"),
        (1, ROOT, "", "origin"),
        (1, ROOT, " padded", "origin"),
        (1, ROOT, "two\nlines", "origin"),
    ],
)
def test_sign_refuses_values_the_format_cannot_carry(
    key: AuditKey, size: int, root: bytes, origin: str, message: str
) -> None:
    """Sizes, roots and origins outside the format are refused before signing."""
    with pytest.raises(CheckpointError, match=message):
        sign_checkpoint(key, size, root, NOW, origin)


def _resigned(key: AuditKey, body: str) -> str:
    return sign_note(key, body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"{ORIGIN}\n42\n", "needs origin"),
        (f"{ORIGIN}\n042\n{base64.b64encode(ROOT).decode()}\nformat 1\ntime x\n", "leading zeros"),
        (f"{ORIGIN}\n4a\n{base64.b64encode(ROOT).decode()}\nformat 1\ntime x\n", "decimal"),
        (f"{ORIGIN}\n{'9' * 30}\n{base64.b64encode(ROOT).decode()}\nformat 1\ntime x\n", "decimal"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\nformat 1\ntime x\n", "32 bytes"),
        (f"{ORIGIN}\n1\n!!\nformat 1\ntime x\n", "base64"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\n", "unsupported checkpoint format"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\nformat 2\ntime x\n", "unsupported"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\nformat 1\n", "exactly"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\nformat 1\ntime x\nextra\n", "exactly"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT).decode()}\nformat 1\ntime 2025-01-01\n", "time"),
    ],
)
def test_signed_but_malformed_bodies(
    key: AuditKey, trusted: dict[str, object], body: str, message: str
) -> None:
    """Even correctly signed text must be a format-1 checkpoint."""
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(_resigned(key, body), trusted)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda n: n.rstrip("\n"), "newline"),
        (lambda n: n.replace("\n\n", "\n"), "blank line"),
        (lambda n: n.replace("\u2014 ", "-- "), "em dash"),
        (lambda n: n.replace("\u2014 ", "\u2014 a "), "signature line"),
        (lambda n: n + "\u2014 x AAAA\n", "too short"),
        (lambda n: n + "\u2014 x !!!!\n", "base64"),
        (lambda n: n + "\u2014 x AAAAAAB=\n", "canonical"),
        (lambda n: n + "\u2014 a+b AAAAAAAA\n", "signature line"),
        (lambda n: n.replace("\n\n", "\r\n\n"), "control"),
        (lambda n: n + "\u2014 x AAAAAAAA\n" * 100, "more than 100"),
        (lambda n: n + "x" * 20000, "larger"),
        (lambda n: n.split("\n\n")[0] + "\n\n", "no signature"),
    ],
)
def test_malformed_notes(
    key: AuditKey, trusted: dict[str, object], mangle: object, message: str
) -> None:
    """Malformed signed notes are refused with a message naming the problem."""
    note = sign_checkpoint(key, 3, ROOT, NOW, ORIGIN).note
    with pytest.raises(CheckpointError, match=message):
        verify_checkpoint(mangle(note), trusted)  # type: ignore[operator, arg-type]


def test_non_utf8_and_non_text(trusted: dict[str, object]) -> None:
    """Bytes that are not UTF-8, and values that are not text, are refused."""
    with pytest.raises(CheckpointError, match="UTF-8"):
        verify_checkpoint(b"\xff\n\n", trusted)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="text or bytes"):
        verify_checkpoint(42, trusted)  # type: ignore[arg-type]


def test_sign_note_refuses_bad_text(key: AuditKey) -> None:
    """Note text is one or more newline-terminated lines without blank lines."""
    for text in ("", "no newline", "a\n\nb\n", "\n"):
        with pytest.raises(CheckpointError):
            sign_note(key, text)


def test_empty_tree_checkpoint(key: AuditKey, trusted: dict[str, object]) -> None:
    """A checkpoint of the empty tree carries size 0 and the empty-tree root."""
    cp = sign_checkpoint(key, 0, EMPTY_ROOT, NOW, ORIGIN)
    assert verify_checkpoint(cp.note, trusted).size == 0  # type: ignore[arg-type]


# -- properties ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_checkpoint_errors(data: bytes) -> None:
    """Arbitrary bytes never verify and raise nothing but CheckpointError."""
    trusted = trusted_keys([GO_VERIFIER_KEY])
    with pytest.raises(CheckpointError):
        verify_checkpoint(data, trusted)


@settings(max_examples=200, deadline=None)
@given(pos=st.integers(min_value=0), value=st.integers(0, 255))
def test_any_byte_change_to_a_checkpoint_fails(pos: int, value: int) -> None:
    """Changing any one byte of a signed checkpoint makes it fail verification."""
    key = _go_key()
    note = sign_checkpoint(key, 7, ROOT, NOW, ORIGIN).note.encode()
    pos %= len(note)
    if note[pos] == value:
        value ^= 0x01
    mutated = note[:pos] + bytes([value]) + note[pos + 1 :]
    with pytest.raises(CheckpointError):
        verify_checkpoint(mutated, trusted_keys([GO_VERIFIER_KEY]))


# -- documentation ---------------------------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[3] / "docs"


def _doc_block(kind: str) -> str:
    # The section may live on its own or be merged into audit-format.md.
    for name in ("transparency-log.md", "audit-format.md"):
        path = DOCS / name
        if path.is_file():
            found = re.search(rf"```{kind}\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
            if found:
                return found.group(1)
    raise AssertionError(f"no ```{kind} block in the docs")


def _example_chain_leaves() -> list[bytes]:
    lines = _doc_block("jsonl").splitlines()
    return [record_leaf_hash(AuditRecord.from_dict(json.loads(line))) for line in lines]


def test_documented_checkpoint_verifies_and_covers_the_example_chain() -> None:
    """The checkpoint in the docs verifies with the documented key and commits to the example chain."""
    trusted = trusted_keys([_doc_block("verifier-key").strip()])
    cp = verify_checkpoint(_doc_block("checkpoint"), trusted, origin="broker.example/audit")
    leaves = _example_chain_leaves()
    assert cp.size == len(leaves) == 2
    assert cp.root_hash == root_from_leaves(leaves)


def test_every_verifier_key_round_trips() -> None:
    """Verifier keys parse back to the same key id, even when their base64 holds a '+'."""
    for _ in range(40):
        key = AuditKey.generate(ORIGIN)
        assert parse_verifier_key(key.verifier_key())[0] == key.key_id


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(st.text(max_size=120), st.just(GO_VERIFIER_KEY).map(lambda k: k[:-3])))
def test_arbitrary_verifier_key_text_raises_only_key_errors(text: str) -> None:
    """Arbitrary text never parses as a verifier key unless it is one; only AuditKeyInvalid escapes."""
    try:
        key_id, _ = parse_verifier_key(text)
    except AuditKeyInvalid:
        return
    assert text.strip().startswith(key_id + "+")
