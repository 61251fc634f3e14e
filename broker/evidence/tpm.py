"""TPM 2.0 quotes: TPMS_ATTEST parsing, AK signature and PCR digest checks.

Structures follow TPM 2.0 Library Part 2 (Structures): TPMS_ATTEST (10.12.12),
TPMS_CLOCK_INFO (10.11.1), TPMS_QUOTE_INFO (10.12.4), TPML_PCR_SELECTION
(10.9.7) and TPMS_PCR_SELECTION (10.6.2). All integers are big-endian.
Only quotes over the SHA-256 bank signed with RSASSA-PKCS1-v1_5/SHA-256 by an
RSA attestation key given as a JWK are supported (Azure vTPM).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from broker.errors import EvidenceFormatError, EvidenceSignatureError

__all__ = [
    "PCRSelection",
    "TPMSAttest",
    "VerifiedQuote",
    "rsa_key_from_jwk",
    "verify_quote",
]

TPM_GENERATED_VALUE = 0xFF544347  # "\xffTCG"
TPM_ST_ATTEST_QUOTE = 0x8018
TPM_ALG_SHA256 = 0x000B
SHA256_SIZE = 32
MAX_PCR_BANKS = 16
MAX_SIZE_OF_SELECT = 4  # 32 PCRs; a PC client TPM has 24
MAX_MESSAGE = 4096
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True, slots=True)
class PCRSelection:
    """One TPMS_PCR_SELECTION: a hash bank and the PCR indexes, ascending."""

    hash_alg: int
    pcrs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TPMSAttest:
    """A TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE."""

    qualified_signer: bytes
    extra_data: bytes
    clock: int
    reset_count: int
    restart_count: int
    safe: bool
    firmware_version: int
    pcr_select: tuple[PCRSelection, ...]
    pcr_digest: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> TPMSAttest:
        """Parses the quote message; every byte must be consumed.

        Raises:
            EvidenceFormatError: not a TPMS_ATTEST quote structure.
        """
        if len(data) > MAX_MESSAGE:
            raise EvidenceFormatError("TPM quote message too large")
        reader = _Reader(data)
        if reader.uint(4) != TPM_GENERATED_VALUE:
            raise EvidenceFormatError("TPMS_ATTEST magic is not TPM_GENERATED_VALUE")
        if reader.uint(2) != TPM_ST_ATTEST_QUOTE:
            raise EvidenceFormatError("TPMS_ATTEST type is not TPM_ST_ATTEST_QUOTE")
        qualified_signer = reader.sized()
        extra_data = reader.sized()
        clock, reset_count, restart_count = reader.uint(8), reader.uint(4), reader.uint(4)
        safe = reader.uint(1)
        if safe > 1:
            raise EvidenceFormatError("TPMS_CLOCK_INFO.safe is not a TPMI_YES_NO")
        firmware_version = reader.uint(8)
        count = reader.uint(4)
        if count > MAX_PCR_BANKS:
            raise EvidenceFormatError("too many PCR selections")
        selections = tuple(_selection(reader) for _ in range(count))
        pcr_digest = reader.sized()
        if not reader.at_end():
            raise EvidenceFormatError("trailing bytes after TPMS_ATTEST")
        return cls(
            qualified_signer=qualified_signer,
            extra_data=extra_data,
            clock=clock,
            reset_count=reset_count,
            restart_count=restart_count,
            safe=bool(safe),
            firmware_version=firmware_version,
            pcr_select=selections,
            pcr_digest=pcr_digest,
        )


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """A quote whose signature and PCR digest verified.

    ``pcrs`` holds the SHA-256 bank values of the selected PCRs only: values
    the quote does not select are not attested and are dropped.
    """

    attest: TPMSAttest
    pcrs: dict[int, bytes]

    @property
    def nonce(self) -> bytes:
        """TPMS_ATTEST.extraData, the qualifying data the verifier chose."""
        return self.attest.extra_data


def verify_quote(
    message: bytes, signature: bytes, pcrs: Sequence[object], ak_jwk: object
) -> VerifiedQuote:
    """Verifies a TPM2_Quote result against its attestation key.

    Raises:
        EvidenceFormatError: malformed message, PCR list or key.
        EvidenceSignatureError: the signature does not verify under the AK, or
            the supplied PCR values do not hash to the signed pcrDigest.
    """
    # (1) Parse TPMS_ATTEST (magic, quote type, TPMS_QUOTE_INFO).
    attest = TPMSAttest.from_bytes(message)
    # (2) Signature: RSASSA-PKCS1-v1_5 with SHA-256 over the whole message.
    key = rsa_key_from_jwk(ak_jwk)
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise EvidenceSignatureError("TPM quote signature does not verify under the AK") from None
    # (3) PCRs: SHA-256 over the selected values, in selection order, must be
    #     the signed pcrDigest (Part 3, TPM2_Quote).
    selected = _selected_pcrs(attest, pcrs)
    digest = hashlib.sha256(b"".join(selected.values())).digest()
    if not hmac.compare_digest(digest, attest.pcr_digest):
        raise EvidenceSignatureError("PCR values do not match the quoted pcrDigest")
    return VerifiedQuote(attest=attest, pcrs=selected)


def rsa_key_from_jwk(jwk: object) -> rsa.RSAPublicKey:
    """An RSA public key from a JWK (RFC 7518 section 6.3.1).

    Raises:
        EvidenceFormatError: not an RSA JWK of an acceptable size.
    """
    if not isinstance(jwk, Mapping) or jwk.get("kty") != "RSA":
        raise EvidenceFormatError("attestation key is not an RSA JWK")
    n = _b64url_uint(jwk.get("n"), "n")
    e = _b64url_uint(jwk.get("e"), "e")
    if not MIN_RSA_BITS <= n.bit_length() <= MAX_RSA_BITS or e < 3 or e % 2 == 0:
        raise EvidenceFormatError("attestation key has unacceptable RSA parameters")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise EvidenceFormatError("attestation key is not a valid RSA key") from None


class _Reader:
    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise EvidenceFormatError("TPMS_ATTEST is truncated")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def sized(self) -> bytes:
        """A TPM2B: a 2-byte size, then that many bytes."""
        return self.take(self.uint(2))

    def at_end(self) -> bool:
        return self._pos == len(self._data)


def _selection(reader: _Reader) -> PCRSelection:
    hash_alg = reader.uint(2)
    size = reader.uint(1)
    if size > MAX_SIZE_OF_SELECT:
        raise EvidenceFormatError("PCR select bitmap too large")
    bitmap = reader.take(size)
    # Part 2, 10.6.2: octet i, bit j selects PCR 8*i + j.
    pcrs = tuple(
        8 * octet + bit
        for octet, value in enumerate(bitmap)
        for bit in range(8)
        if value >> bit & 1
    )
    return PCRSelection(hash_alg=hash_alg, pcrs=pcrs)


def _selected_pcrs(attest: TPMSAttest, pcrs: Sequence[object]) -> dict[int, bytes]:
    if not attest.pcr_select:
        raise EvidenceFormatError("the quote selects no PCRs")
    selected: dict[int, bytes] = {}
    for selection in attest.pcr_select:
        if selection.hash_alg != TPM_ALG_SHA256:
            raise EvidenceFormatError("only the SHA-256 PCR bank is supported")
        for index in selection.pcrs:
            if index in selected:
                raise EvidenceFormatError("a PCR is selected twice")
            if index >= len(pcrs):
                raise EvidenceFormatError("a selected PCR value is missing")
            value = pcrs[index]
            if not isinstance(value, bytes) or len(value) != SHA256_SIZE:
                raise EvidenceFormatError("PCR values must be 32-byte SHA-256 digests")
            selected[index] = value
    return selected


def _b64url_uint(value: object, name: str) -> int:
    if not isinstance(value, str) or not _B64URL.fullmatch(value) or len(value) > 2048:
        raise EvidenceFormatError(f"JWK member {name!r} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise EvidenceFormatError(f"JWK member {name!r} is not base64url") from None
    return int.from_bytes(raw, "big")
