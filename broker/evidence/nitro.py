"""AWS Nitro Enclaves attestation documents.

A document is a COSE_Sign1 (RFC 9052) whose payload is a CBOR map signed with
ECDSA P-384 by a per-enclave certificate that chains to the pinned AWS Nitro
Enclaves root (``aws-nitro-enclaves-root-g1``). Reference: AWS "Verifying the
root of trust" (attestation document specification and validation steps).

KBS binding rule (``NitroVerifier``): when the caller sets an expectation, the
document's ``user_data`` must equal ``expect.runtime_digest``, the SHA-384 of
the canonical runtime data, which covers both the challenge nonce and the
tee-pubkey. The ``nonce`` field alone would bind the challenge but not the key,
so it is never enough; when the document carries a ``nonce`` it must also
equal ``expect.nonce``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from broker.errors import EvidenceFormatError, EvidenceSignatureError, FreshnessError
from broker.evidence._x509 import load_certificate, verify_chain
from broker.evidence.model import (
    TrustAnchors,
    VerifiedClaims,
    VerifyContext,
    evidence_digest,
)

__all__ = [
    "NitroDocument",
    "NitroResult",
    "NitroVerifier",
    "verify_nitro_document",
]

ROOT_NAME = "aws-nitro-enclaves-root-g1"

COSE_SIGN1_TAG = 18
COSE_HEADER_ALG = 1
COSE_ALG_ES384 = -35
SIGNATURE_SIZE = 96  # raw r || s, 48 bytes each (RFC 9053 section 2.1)

# Limits from the attestation document specification; user_data and nonce
# reach 1024 bytes in real documents, so all three share that cap.
MAX_DOCUMENT_BYTES = 64 * 1024
MAX_OPTIONAL_FIELD = 1024
MAX_CERT_BYTES = 1024
MAX_CABUNDLE = 8
MAX_PCRS = 32
PCR_SIZE = 48  # digest "SHA384"
DEBUG_PCRS = (0, 1, 2)

# A document minted a moment ago on a host whose clock runs slightly ahead.
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class NitroDocument:
    """A decoded, not yet verified, attestation document."""

    protected: bytes
    payload: bytes
    signature: bytes
    module_id: str
    timestamp_ms: int
    pcrs: Mapping[int, bytes]
    certificate: bytes
    cabundle: tuple[bytes, ...]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None

    @classmethod
    def from_bytes(cls, document: bytes) -> NitroDocument:
        """Decodes the COSE_Sign1 envelope and the payload map.

        Raises:
            EvidenceFormatError: not a well-formed Nitro attestation document.
        """
        if len(document) > MAX_DOCUMENT_BYTES:
            raise EvidenceFormatError("attestation document too large")
        envelope = _decode_cbor(document, "COSE_Sign1")
        if isinstance(envelope, cbor2.CBORTag) and envelope.tag == COSE_SIGN1_TAG:
            envelope = envelope.value
        # cbor2 decodes the content of a tag as immutable (tuple, frozendict).
        if not isinstance(envelope, list | tuple) or len(envelope) != 4:
            raise EvidenceFormatError("COSE_Sign1 must be a 4-element array")
        protected, unprotected, payload, signature = envelope
        if not (
            isinstance(protected, bytes)
            and isinstance(unprotected, Mapping)
            and isinstance(payload, bytes)
            and isinstance(signature, bytes)
        ):
            raise EvidenceFormatError("COSE_Sign1 members have the wrong types")
        if _decode_cbor(protected, "protected header") != {COSE_HEADER_ALG: COSE_ALG_ES384}:
            raise EvidenceFormatError("protected header must be exactly {alg: ES384}")
        if COSE_HEADER_ALG in unprotected:
            raise EvidenceFormatError("the algorithm must not appear in the unprotected header")
        if len(signature) != SIGNATURE_SIZE:
            raise EvidenceFormatError("ES384 signature must be 96 bytes")
        fields = _decode_cbor(payload, "payload")
        if not isinstance(fields, dict):
            raise EvidenceFormatError("payload must be a map")
        return cls(protected=protected, payload=payload, signature=signature, **_fields(fields))


@dataclass(frozen=True, slots=True)
class NitroResult:
    """A document that verified, before any challenge binding."""

    claims: dict[str, Any]
    flags: dict[str, bool]
    nonce: bytes | None
    user_data: bytes | None
    public_key: bytes | None


def verify_nitro_document(
    document: bytes,
    *,
    anchors: TrustAnchors,
    now: datetime,
    max_age_seconds: int | None = None,
) -> NitroResult:
    """Verifies a Nitro attestation document at ``now``.

    Raises:
        EvidenceFormatError: malformed COSE or payload.
        EvidenceSignatureError: cabundle[0] is not the pinned root, or a bad
            chain or document signature.
        CollateralError: a certificate is outside its validity at ``now``.
        FreshnessError: the document timestamp is too old or in the future.
    """
    # (1) Decode: COSE_Sign1 (tag 18 optional), protected header {1: -35},
    #     payload map with typed, size-checked fields, no duplicate keys.
    doc = NitroDocument.from_bytes(document)
    # (2) Chain: cabundle[0] is the pinned AWS root; root -> cabundle[1:] ->
    #     certificate, each signed by its predecessor and valid at `now`.
    leaf = _verify_chain(doc.certificate, doc.cabundle, root_pem=anchors.get(ROOT_NAME), now=now)
    # (3) Signature: ES384 by the leaf over Sig_structure
    #     ["Signature1", protected, h'', payload] (RFC 9052 section 4.4).
    _verify_signature(doc, leaf)
    # (4) Freshness: the timestamp is not in the future and not too old.
    issued = _timestamp(doc.timestamp_ms)
    if issued > now + CLOCK_SKEW:
        raise FreshnessError("attestation document timestamp is in the future")
    if max_age_seconds is not None and now - issued > timedelta(seconds=max_age_seconds):
        raise FreshnessError("attestation document is older than the allowed age")
    # (5) Claims: PCR0-2 all zero means the enclave runs in debug mode.
    pcrs = doc.pcrs
    debug = all(not any(pcrs.get(i, b"\0")) for i in DEBUG_PCRS)
    claims: dict[str, Any] = {
        "module_id": doc.module_id,
        "timestamp_ms": doc.timestamp_ms,
        "timestamp": issued.isoformat(),
        "public_key": _hex(doc.public_key),
        "user_data": _hex(doc.user_data),
        "nonce": _hex(doc.nonce),
        "digest": "SHA384",
        "pcrs": {str(i): pcrs[i].hex() for i in sorted(pcrs)},
        "debug_mode": debug,
        "leaf_cert_subject": leaf.subject.rfc4514_string(),
    }
    return NitroResult(
        claims=claims,
        flags={"debug": debug},
        nonce=doc.nonce,
        user_data=doc.user_data,
        public_key=doc.public_key,
    )


class NitroVerifier:
    """KBS verifier for ``tee = "nitro"``.

    ``evidence`` is ``{"attestation_document": <base64 COSE_Sign1>}`` or the
    base64 text itself.
    """

    tee = "nitro"

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims:
        """Raises EvidenceError subclasses; see ``verify_nitro_document``."""
        raw = _document_bytes(evidence, ctx.max_evidence_bytes)
        result = verify_nitro_document(
            raw, anchors=ctx.anchors, now=ctx.now, max_age_seconds=ctx.max_age_seconds
        )
        # (6) Binding: see the module docstring for the rule.
        if ctx.expect is not None:
            if result.user_data is None or not hmac.compare_digest(
                result.user_data, ctx.expect.runtime_digest
            ):
                raise FreshnessError("user_data does not bind the challenge nonce and tee-pubkey")
            if result.nonce is not None and not hmac.compare_digest(result.nonce, ctx.expect.nonce):
                raise FreshnessError("document nonce does not match the challenge nonce")
        return VerifiedClaims(
            tee=self.tee,
            claims=result.claims,
            flags=result.flags,
            evidence_digest=evidence_digest(raw),
        )


def _decode_cbor(data: bytes, what: str) -> Any:
    """One complete CBOR item, no trailing bytes, no duplicate map keys."""
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream, allow_duplicate_keys=False, allow_indefinite=False, max_depth=16
        ).decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise EvidenceFormatError(f"{what} is not valid CBOR") from exc
    if stream.tell() != len(data):
        raise EvidenceFormatError(f"{what} has trailing bytes")
    return value


def _fields(fields: dict[Any, Any]) -> dict[str, Any]:
    """Typed payload fields (attestation document specification, section 3.2)."""
    module_id = fields.get("module_id")
    if not isinstance(module_id, str) or not module_id:
        raise EvidenceFormatError("module_id must be a non-empty string")
    if fields.get("digest") != "SHA384":
        raise EvidenceFormatError("digest must be SHA384")
    timestamp = fields.get("timestamp")
    if type(timestamp) is not int or not 0 < timestamp < 1 << 63:
        raise EvidenceFormatError("timestamp must be a positive integer")
    certificate = _bytes_field(fields, "certificate", required=True, limit=MAX_CERT_BYTES)
    cabundle = fields.get("cabundle")
    if not isinstance(cabundle, list) or not 1 <= len(cabundle) <= MAX_CABUNDLE:
        raise EvidenceFormatError("cabundle must be a non-empty array")
    if not all(isinstance(c, bytes) and 0 < len(c) <= MAX_CERT_BYTES for c in cabundle):
        raise EvidenceFormatError("cabundle entries must be DER certificates")
    return {
        "module_id": module_id,
        "timestamp_ms": timestamp,
        "pcrs": _pcrs(fields.get("pcrs")),
        "certificate": certificate,
        "cabundle": tuple(cabundle),
        "public_key": _bytes_field(fields, "public_key"),
        "user_data": _bytes_field(fields, "user_data"),
        "nonce": _bytes_field(fields, "nonce"),
    }


def _pcrs(value: object) -> dict[int, bytes]:
    if not isinstance(value, dict) or not 1 <= len(value) <= MAX_PCRS:
        raise EvidenceFormatError("pcrs must be a map of 1 to 32 entries")
    pcrs: dict[int, bytes] = {}
    for index, digest in value.items():
        if type(index) is not int or not 0 <= index < MAX_PCRS:
            raise EvidenceFormatError("PCR index out of range")
        if not isinstance(digest, bytes) or len(digest) != PCR_SIZE:
            raise EvidenceFormatError("PCR values must be 48-byte SHA-384 digests")
        pcrs[index] = digest
    return pcrs


def _bytes_field(
    fields: dict[Any, Any], name: str, *, required: bool = False, limit: int = MAX_OPTIONAL_FIELD
) -> bytes | None:
    value = fields.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, bytes) or len(value) > limit or (required and not value):
        raise EvidenceFormatError(f"{name} must be a byte string of at most {limit} bytes")
    return value


def _verify_signature(doc: NitroDocument, leaf: x509.Certificate) -> None:
    public_key = leaf.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP384R1
    ):
        raise EvidenceSignatureError("signing certificate does not hold a P-384 key")
    sig_structure = cbor2.dumps(["Signature1", doc.protected, b"", doc.payload])
    r = int.from_bytes(doc.signature[:48], "big")
    s = int.from_bytes(doc.signature[48:], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), sig_structure, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature:
        raise EvidenceSignatureError("COSE_Sign1 signature does not verify") from None


def _timestamp(ms: int) -> datetime:
    try:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    except OverflowError:
        raise EvidenceFormatError("timestamp out of range") from None


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _document_bytes(evidence: object, limit: int) -> bytes:
    if isinstance(evidence, dict):
        evidence = evidence.get("attestation_document")
    if not isinstance(evidence, str):
        raise EvidenceFormatError("evidence must carry a base64 attestation_document")
    if len(evidence) > (limit * 4) // 3 + 4:
        raise EvidenceFormatError("attestation document too large")
    text = evidence.strip()
    try:
        if "-" in text or "_" in text:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        else:
            raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise EvidenceFormatError("attestation_document is not base64") from None
    if not raw or len(raw) > limit:
        raise EvidenceFormatError("attestation document size out of range")
    return raw


def _verify_chain(
    leaf_der: bytes, cabundle: tuple[bytes, ...], *, root_pem: bytes, now: datetime
) -> x509.Certificate:
    """Root -> cabundle[1:] -> leaf; returns the verified leaf certificate."""
    root = load_certificate(root_pem)
    if not hmac.compare_digest(cabundle[0], root.public_bytes(serialization.Encoding.DER)):
        raise EvidenceSignatureError("cabundle does not start with the pinned AWS root")
    leaf = _load(leaf_der)
    intermediates = [_load(der) for der in reversed(cabundle[1:])]
    verify_chain(leaf, intermediates, root, now=now, max_len=MAX_CABUNDLE + 1)
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return leaf
    except ValueError:
        raise EvidenceFormatError("signing certificate has malformed extensions") from None
    if constraints.ca:
        raise EvidenceSignatureError("document signing certificate is a CA")
    return leaf


def _load(der: bytes) -> x509.Certificate:
    """A document certificate, every field parsed; cryptography only warns
    about some malformed names, which here must fail as data."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            cert = load_certificate(der)
            _ = (cert.subject, cert.issuer, cert.extensions, cert.signature_hash_algorithm)
            cert.public_key()
        except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm, Warning):
            raise EvidenceFormatError("certificate in the document does not parse") from None
    return cert
