"""TPM 2.0 quote parsing and verification (TPMS_ATTEST, AK signature, PCR digest)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import struct
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import EvidenceFormatError, EvidenceSignatureError
from broker.evidence.tpm import (
    TPM_ALG_SHA256,
    PCRSelection,
    TPMSAttest,
    rsa_key_from_jwk,
    verify_quote,
)
from tests.vectors import expected, read_bytes, requires_evidence, vector_ids

SHA1 = 0x0004


def _b64url(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "kid": "HCLAkPub", "n": _b64url(numbers.n), "e": _b64url(numbers.e)}


def _attest(
    *,
    extra: bytes = b"nonce",
    banks: list[tuple[int, bytes]] | None = None,
    digest: bytes = b"\0" * 32,
    magic: int = 0xFF544347,
    kind: int = 0x8018,
    safe: int = 1,
) -> bytes:
    """A synthetic TPMS_ATTEST (Part 2, 10.12.12) for the parser and verifier."""
    banks = [(TPM_ALG_SHA256, b"\xff\xff\xff")] if banks is None else banks
    selection = struct.pack(">I", len(banks)) + b"".join(
        struct.pack(">HB", alg, len(bitmap)) + bitmap for alg, bitmap in banks
    )
    return (
        struct.pack(">IH", magic, kind)
        + struct.pack(">H", 4)
        + b"name"
        + struct.pack(">H", len(extra))
        + extra
        + struct.pack(">QIIB", 1234, 5, 6, safe)
        + struct.pack(">Q", 0x20200312)
        + selection
        + struct.pack(">H", len(digest))
        + digest
    )


@pytest.fixture(scope="module")
def ak() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


PCRS = [bytes([i]) * 32 for i in range(24)]


def _digest(indexes: list[int]) -> bytes:
    return hashlib.sha256(b"".join(PCRS[i] for i in indexes)).digest()


# --- synthetic quotes ---


def test_parse_fields() -> None:
    """from_bytes reads every TPMS_ATTEST field of a quote."""
    attest = TPMSAttest.from_bytes(_attest(extra=b"abc", digest=b"\1" * 32))
    assert attest.qualified_signer == b"name"
    assert attest.extra_data == b"abc"
    assert (attest.clock, attest.reset_count, attest.restart_count) == (1234, 5, 6)
    assert attest.safe is True
    assert attest.firmware_version == 0x20200312
    assert attest.pcr_select == (PCRSelection(hash_alg=TPM_ALG_SHA256, pcrs=tuple(range(24))),)
    assert attest.pcr_digest == b"\1" * 32


def test_bitmap_selects_pcrs_by_octet_and_bit() -> None:
    """Octet i bit j of pcrSelect selects PCR 8*i + j."""
    attest = TPMSAttest.from_bytes(_attest(banks=[(TPM_ALG_SHA256, b"\x81\x00\x02")]))
    assert attest.pcr_select[0].pcrs == (0, 7, 17)


@pytest.mark.parametrize(
    "message",
    [
        _attest(magic=0xFF544348),
        _attest(kind=0x8014),
        _attest(safe=2),
        _attest()[:-1],
        _attest() + b"\0",
        _attest(banks=[(TPM_ALG_SHA256, b"\xff" * 5)]),
        _attest(banks=[(TPM_ALG_SHA256, b"\xff")] * 17),
        b"",
        b"\xff\x54\x43\x47",
    ],
    ids=[
        "magic",
        "type",
        "safe",
        "truncated",
        "trailing",
        "bitmap-size",
        "too-many-banks",
        "empty",
        "magic-only",
    ],
)
def test_malformed_messages_rejected(message: bytes) -> None:
    """Each structural defect is an EvidenceFormatError."""
    with pytest.raises(EvidenceFormatError):
        TPMSAttest.from_bytes(message)


def test_synthetic_quote_verifies(ak: rsa.RSAPrivateKey) -> None:
    """A quote signed by the AK over matching PCRs verifies and exposes the nonce."""
    message = _attest(extra=b"challenge", digest=_digest(list(range(24))))
    quote = verify_quote(message, _sign(ak, message), PCRS, _jwk(ak))
    assert quote.nonce == b"challenge"
    assert quote.pcrs == dict(enumerate(PCRS))


def test_only_selected_pcrs_are_reported(ak: rsa.RSAPrivateKey) -> None:
    """PCR values the quote does not select are dropped, not attested."""
    message = _attest(banks=[(TPM_ALG_SHA256, b"\x03\x00\x00")], digest=_digest([0, 1]))
    quote = verify_quote(message, _sign(ak, message), PCRS, _jwk(ak))
    assert sorted(quote.pcrs) == [0, 1]


def test_wrong_key_rejected(ak: rsa.RSAPrivateKey) -> None:
    """A signature by another key does not verify."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = _attest(digest=_digest(list(range(24))))
    with pytest.raises(EvidenceSignatureError):
        verify_quote(message, _sign(other, message), PCRS, _jwk(ak))


def test_pcr_digest_mismatch_rejected(ak: rsa.RSAPrivateKey) -> None:
    """Supplied PCRs that do not hash to pcrDigest are refused."""
    message = _attest(digest=_digest(list(range(24))))
    changed = [*PCRS[:7], b"\xee" * 32, *PCRS[8:]]
    with pytest.raises(EvidenceSignatureError, match="pcrDigest"):
        verify_quote(message, _sign(ak, message), changed, _jwk(ak))


@pytest.mark.parametrize(
    ("banks", "pcrs", "match"),
    [
        ([(SHA1, b"\xff\xff\xff")], PCRS, "SHA-256"),
        ([], PCRS, "no PCRs"),
        ([(TPM_ALG_SHA256, b"\x01"), (TPM_ALG_SHA256, b"\x01")], PCRS, "twice"),
        ([(TPM_ALG_SHA256, b"\xff\xff\xff")], PCRS[:23], "missing"),
        ([(TPM_ALG_SHA256, b"\x01")], [b"\0" * 20], "32-byte"),
    ],
    ids=["sha1-bank", "empty-selection", "duplicate", "missing-value", "short-value"],
)
def test_selection_problems_rejected(
    ak: rsa.RSAPrivateKey, banks: list[tuple[int, bytes]], pcrs: list[bytes], match: str
) -> None:
    """Unsupported banks and PCR lists that do not fit the selection are format errors."""
    message = _attest(banks=banks)
    with pytest.raises(EvidenceFormatError, match=match):
        verify_quote(message, _sign(ak, message), pcrs, _jwk(ak))


@pytest.mark.parametrize(
    "jwk",
    [
        None,
        {"kty": "EC", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "e": "AQAB"},
        {"kty": "RSA", "n": "not*base64", "e": "AQAB"},
        {"kty": "RSA", "n": _b64url((1 << 1023) | 1), "e": "AQAB"},
        {"kty": "RSA", "n": _b64url((1 << 2047) | 1), "e": "Ag"},
    ],
    ids=["none", "ec", "no-n", "bad-base64", "1024-bit", "even-e"],
)
def test_unacceptable_jwk_rejected(jwk: object) -> None:
    """Only RSA JWKs of at least 2048 bits with a valid exponent load."""
    with pytest.raises(EvidenceFormatError):
        rsa_key_from_jwk(jwk)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_format_errors(data: bytes) -> None:
    """The TPMS_ATTEST parser raises nothing but EvidenceFormatError."""
    with contextlib.suppress(EvidenceFormatError):
        TPMSAttest.from_bytes(data)


# --- real quotes from the Azure vectors ---

AZURE_IDS = vector_ids("azure-vtpm")


def _real_quote(vector_id: str) -> tuple[bytes, bytes, list[bytes], dict[str, Any], dict[str, Any]]:
    exp = expected("azure-vtpm", vector_id)
    evidence = json.loads(read_bytes("azure-vtpm", exp["files"]["evidence"]))
    quote = evidence.get("tpm_quote") or evidence["quote"]

    def blob(value: Any) -> bytes:
        return bytes(value) if isinstance(value, list) else bytes.fromhex(value)

    ak_jwk = next(k for k in exp["claims"]["runtime_data"]["keys"] if k["kid"] == "HCLAkPub")
    return (
        blob(quote["message"]),
        blob(quote["signature"]),
        [blob(p) for p in quote["pcrs"]],
        ak_jwk,
        exp["claims"],
    )


@requires_evidence
@pytest.mark.parametrize("vector_id", AZURE_IDS)
def test_real_quote_verifies(vector_id: str) -> None:
    """Each Azure vTPM quote verifies under its HCLAkPub with the expected PCRs and nonce."""
    message, signature, pcrs, ak_jwk, claims = _real_quote(vector_id)
    quote = verify_quote(message, signature, pcrs, ak_jwk)
    assert quote.nonce.hex() == claims["tpm_nonce_hex"]
    assert {str(i): v.hex() for i, v in quote.pcrs.items()} == claims["pcrs_sha256"]
    assert sorted(quote.pcrs) == claims["pcr_selection_sha256"]


@requires_evidence
@pytest.mark.parametrize("vector_id", AZURE_IDS)
def test_real_quote_mutations_rejected(vector_id: str) -> None:
    """A flipped byte in the message, the signature or a PCR is refused."""
    message, signature, pcrs, ak_jwk, _ = _real_quote(vector_id)
    for i in range(len(message)):
        bad = bytearray(message)
        bad[i] ^= 0x01
        with pytest.raises((EvidenceFormatError, EvidenceSignatureError)):
            verify_quote(bytes(bad), signature, pcrs, ak_jwk)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(EvidenceSignatureError):
        verify_quote(message, flipped, pcrs, ak_jwk)
    changed = [bytes([pcrs[3][0] ^ 1]) + pcrs[3][1:] if i == 3 else p for i, p in enumerate(pcrs)]
    with pytest.raises(EvidenceSignatureError):
        verify_quote(message, signature, changed, ak_jwk)
