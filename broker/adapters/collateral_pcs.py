"""Turning Intel PCS v4 answers into dcap-qvl ``QuoteCollateralV3`` JSON.

No I/O here: ``collateral_online`` fetches, these functions reshape. The TCB
Info and QE Identity signatures cover the exact bytes Intel sent for the
``tcbInfo`` / ``enclaveIdentity`` member, so those members are cut out of the
response text, never decoded and re-encoded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from broker.errors import CollateralError
from broker.evidence.dcap_collateral import Collateral

__all__ = ["PCSResponse", "assemble_dcap_collateral", "crl_der", "issuer_chain", "signed_member"]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_HEX_TEXT = re.compile(rb"[0-9a-fA-F]+")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True, slots=True)
class PCSResponse:
    """One upstream answer: the headers that matter and the body."""

    headers: dict[str, str]
    body: bytes


def _skip(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    return pos if match is None else match.end()


def raw_members(text: str) -> dict[str, str]:
    """The top-level members of a JSON object as their exact source text.

    Raises:
        CollateralError: ``text`` is not one JSON object, or repeats a member.
    """
    members: dict[str, str] = {}
    pos = _skip(text, 0)
    if text[pos : pos + 1] != "{":
        raise CollateralError("PCS answer is not a JSON object")
    pos = _skip(text, pos + 1)
    try:
        while text[pos : pos + 1] != "}":
            if members:
                if text[pos : pos + 1] != ",":
                    raise CollateralError("PCS answer has a malformed member list")
                pos = _skip(text, pos + 1)
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip(text, pos)
            if not isinstance(key, str) or text[pos : pos + 1] != ":":
                raise CollateralError("PCS answer has a malformed member")
            start = _skip(text, pos + 1)
            _, end = _DECODER.raw_decode(text, start)
            if key in members:
                raise CollateralError(f"PCS answer repeats member {key[:32]!r}")
            members[key] = text[start:end]
            pos = _skip(text, end)
    except (ValueError, RecursionError) as exc:
        raise CollateralError("PCS answer is not JSON") from exc
    if text[pos + 1 :].strip(" \t\n\r"):
        raise CollateralError("PCS answer has trailing data")
    return members


def signed_member(body: bytes, member: str, what: str) -> tuple[str, str]:
    """``(exact text of member, hex signature)`` from a PCS signed-JSON answer."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CollateralError(f"{what} answer is not UTF-8") from exc
    members = raw_members(text)
    if member not in members or "signature" not in members:
        raise CollateralError(f"{what} answer lacks {member!r} or 'signature'")
    if not members[member].startswith("{"):
        raise CollateralError(f"{what} member {member!r} is not an object")
    signature = json.loads(members["signature"])
    if not isinstance(signature, str) or not _HEX_TEXT.fullmatch(signature.encode()):
        raise CollateralError(f"{what} signature is not hex")
    return members[member], signature.lower()


def issuer_chain(response: PCSResponse, names: tuple[str, ...], what: str) -> str:
    """The URL-encoded PEM chain Intel sends in a response header."""
    for name in names:
        value = response.headers.get(name.lower())
        if value:
            chain = unquote(value)
            if "-----BEGIN CERTIFICATE-----" not in chain:
                raise CollateralError(f"{what} issuer chain header is not PEM")
            return chain
    raise CollateralError(f"{what} answer lacks the {names[0]} header")


def crl_der(body: bytes, what: str) -> bytes:
    """A CRL sent as DER, PEM or hex-encoded DER (PCCS), as DER."""
    data = body.strip()
    try:
        if data.startswith(b"-----BEGIN"):
            return x509.load_pem_x509_crl(data).public_bytes(Encoding.DER)
        if _HEX_TEXT.fullmatch(data):
            data = bytes.fromhex(data.decode("ascii"))
        x509.load_der_x509_crl(data)
    except ValueError as exc:
        raise CollateralError(f"{what} is not a CRL") from exc
    return data


def assemble_dcap_collateral(
    *, tcb: PCSResponse, qe_identity: PCSResponse, pck_crl: PCSResponse, root_crl: PCSResponse
) -> bytes:
    """The ``QuoteCollateralV3`` JSON document from the four PCS answers.

    Raises:
        CollateralError: an answer lacks a part or the result does not parse.
    """
    tcb_info, tcb_signature = signed_member(tcb.body, "tcbInfo", "TCB Info")
    qe_text, qe_signature = signed_member(qe_identity.body, "enclaveIdentity", "QE Identity")
    doc = {
        "pck_crl_issuer_chain": issuer_chain(pck_crl, ("SGX-PCK-CRL-Issuer-Chain",), "PCK CRL"),
        "root_ca_crl": crl_der(root_crl.body, "root CA CRL").hex(),
        "pck_crl": crl_der(pck_crl.body, "PCK CRL").hex(),
        "tcb_info_issuer_chain": issuer_chain(
            tcb, ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain"), "TCB Info"
        ),
        "tcb_info": tcb_info,
        "tcb_info_signature": tcb_signature,
        "qe_identity_issuer_chain": issuer_chain(
            qe_identity,
            ("SGX-Enclave-Identity-Issuer-Chain", "Enclave-Identity-Issuer-Chain"),
            "QE Identity",
        ),
        "qe_identity": qe_text,
        "qe_identity_signature": qe_signature,
    }
    raw = json.dumps(doc).encode()
    Collateral.from_json(raw)  # the verifier's own parser must accept what we store
    return raw
