"""DCAP collateral (dcap-qvl ``QuoteCollateralV3`` JSON): parse and verify it.

    collateral = Collateral.from_json(raw)
    signed = verify_collateral(collateral, root, now=now, tee="tdx")
    signed.tcb_info["tcbLevels"] ...

Layout: ``*_issuer_chain`` are PEM chains, ``root_ca_crl`` / ``pck_crl`` hex
DER, ``tcb_info`` / ``qe_identity`` the exact signed JSON text of Intel PCS
(never re-serialised), ``*_signature`` hex raw r||s P-256 signatures.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509

from broker.errors import CollateralError
from broker.evidence.dcap_pki import check_not_revoked, load_pem_chain, verify_chain, verify_p256

MAX_COLLATERAL_SIZE = 512 * 1024
_TCB_INFO_ID = {"tdx": "TDX", "sgx": "SGX"}
_QE_IDENTITY_ID = {"tdx": "TD_QE", "sgx": "QE"}


@dataclass(frozen=True, slots=True)
class Collateral:
    """Unverified collateral, fields decoded from their JSON text forms."""

    pck_crl_issuer_chain: bytes
    root_ca_crl: bytes
    pck_crl: bytes
    tcb_info_issuer_chain: bytes
    tcb_info: str
    tcb_info_signature: bytes
    qe_identity_issuer_chain: bytes
    qe_identity: str
    qe_identity_signature: bytes

    @classmethod
    def from_json(cls, raw: bytes) -> Collateral:
        """Raises CollateralError on anything but the documented layout."""
        if len(raw) > MAX_COLLATERAL_SIZE:
            raise CollateralError(f"collateral of {len(raw)} bytes is too large")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CollateralError("collateral is not JSON") from exc
        if not isinstance(doc, dict):
            raise CollateralError("collateral is not a JSON object")

        def text(name: str) -> str:
            value = doc.get(name)
            if not isinstance(value, str):
                raise CollateralError(f"collateral field {name!r} missing or not a string")
            return value

        def hexbytes(name: str) -> bytes:
            try:
                return bytes.fromhex(text(name))
            except (ValueError, binascii.Error) as exc:
                raise CollateralError(f"collateral field {name!r} is not hex") from exc

        return cls(
            pck_crl_issuer_chain=text("pck_crl_issuer_chain").encode(),
            root_ca_crl=hexbytes("root_ca_crl"),
            pck_crl=hexbytes("pck_crl"),
            tcb_info_issuer_chain=text("tcb_info_issuer_chain").encode(),
            tcb_info=text("tcb_info"),
            tcb_info_signature=hexbytes("tcb_info_signature"),
            qe_identity_issuer_chain=text("qe_identity_issuer_chain").encode(),
            qe_identity=text("qe_identity"),
            qe_identity_signature=hexbytes("qe_identity_signature"),
        )


@dataclass(frozen=True, slots=True)
class SignedCollateral:
    """TCB Info and QE Identity whose Intel signatures and dates checked out."""

    tcb_info: dict[str, Any]
    qe_identity: dict[str, Any]


def verify_collateral(
    col: Collateral, root: x509.Certificate, *, now: datetime, tee: str
) -> SignedCollateral:
    """Steps (C1)-(C4); every failure is a CollateralError.

    (C1) The root CA CRL is the root's, signed and current.
    (C2) TCB Info: signing chain to the pinned root, signer not revoked,
         signature over the exact text, issueDate <= now <= nextUpdate.
    (C3) QE Identity: the same.
    (C4) The PCK CRL issuer chain reaches the pinned root.
    """
    check_not_revoked(root, col.root_ca_crl, root, now=now)  # (C1): the root cannot be listed
    tcb_info = _verify_signed_json(
        "TCB Info",
        col.tcb_info,
        signature=col.tcb_info_signature,
        chain_pem=col.tcb_info_issuer_chain,
        root_crl=col.root_ca_crl,
        root=root,
        now=now,
    )
    qe_identity = _verify_signed_json(
        "QE Identity",
        col.qe_identity,
        signature=col.qe_identity_signature,
        chain_pem=col.qe_identity_issuer_chain,
        root_crl=col.root_ca_crl,
        root=root,
        now=now,
    )
    if tcb_info.get("id") != _TCB_INFO_ID[tee] or tcb_info.get("version") != 3:
        raise CollateralError(f"TCB Info is not a version 3 {_TCB_INFO_ID[tee]} TCB Info")
    if qe_identity.get("id") != _QE_IDENTITY_ID[tee] or qe_identity.get("version") != 2:
        raise CollateralError(f"QE Identity is not a version 2 {_QE_IDENTITY_ID[tee]} identity")
    crl_chain = load_pem_chain(col.pck_crl_issuer_chain, error=CollateralError)
    verify_chain(crl_chain, root, now=now, error=CollateralError)  # (C4)
    return SignedCollateral(tcb_info=tcb_info, qe_identity=qe_identity)


def _verify_signed_json(
    what: str,
    text: str,
    *,
    signature: bytes,
    chain_pem: bytes,
    root_crl: bytes,
    root: x509.Certificate,
    now: datetime,
) -> dict[str, Any]:
    chain = load_pem_chain(chain_pem, error=CollateralError)
    verify_chain(chain, root, now=now, error=CollateralError)
    for cert in chain[:-1]:
        if cert.issuer == root.subject:
            check_not_revoked(cert, root_crl, root, now=now)
    verify_p256(chain[0], signature, text.encode(), what=what, error=CollateralError)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CollateralError(f"{what} is not JSON") from exc
    if not isinstance(doc, dict):
        raise CollateralError(f"{what} is not a JSON object")
    issued = parse_time(doc.get("issueDate"), what)
    next_update = parse_time(doc.get("nextUpdate"), what)
    if now < issued:
        raise CollateralError(f"{what} issued {issued.isoformat()}, after {now.isoformat()}")
    if now > next_update:
        raise CollateralError(f"{what} is stale: nextUpdate {next_update.isoformat()} passed")
    return doc


def parse_time(value: object, what: str) -> datetime:
    if not isinstance(value, str):
        raise CollateralError(f"{what} lacks a date")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CollateralError(f"{what} has a malformed date") from exc
    if parsed.tzinfo is None:
        raise CollateralError(f"{what} has a date without a timezone")
    return parsed
