"""The KBS challenge binding: what REPORT_DATA must hold.

Trustee KBS protocol 0.4.0: SHA-384 over the RFC 8785 (JCS) canonical JSON of
``{"additional-evidence", "nonce", "tee-pubkey"}``, zero padded to the 64-byte
report-data field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

from broker import jcs
from broker.errors import FreshnessError, MalformedRequest
from broker.evidence.model import Expectation

REPORT_DATA_SIZE = 64


def canonical_digest(value: Any) -> bytes:
    """SHA-384 of the JCS canonical form of a JSON value."""
    try:
        canonical = jcs.dumps(value)
    except (jcs.CanonicalizationError, TypeError, ValueError) as exc:
        raise MalformedRequest("runtime data cannot be canonicalized") from exc
    return hashlib.sha384(canonical).digest()


def expectation_for(nonce_b64: str, tee_pubkey: Any, additional_evidence: str) -> Expectation:
    """The binding a piece of evidence must carry for this challenge."""
    try:
        nonce = base64.b64decode(nonce_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedRequest("nonce is not standard base64") from exc
    digest = canonical_digest(
        {"additional-evidence": additional_evidence, "nonce": nonce_b64, "tee-pubkey": tee_pubkey}
    )
    return Expectation(
        report_data=digest.ljust(REPORT_DATA_SIZE, b"\0"), nonce=nonce, runtime_digest=digest
    )


def verify_report_data(actual: bytes, expect: Expectation) -> None:
    """Raises FreshnessError unless ``actual`` equals the expected REPORT_DATA."""
    if not hmac.compare_digest(actual, expect.report_data):
        raise FreshnessError("report data does not bind the challenge nonce and tee-pubkey")
