"""The VEK (VCEK or VLEK) certificate extensions AMD's KDS puts in every VEK.

    name = product_name(vek)                  # "Milan-B0"
    product = product_of(name)                # Product.MILAN
    spl(vek, "microcode")                     # certified TCB component

Extension OIDs and encodings follow AMD's "Versioned Chip Endorsement Key
(VCEK) Certificate and KDS Interface Specification" (publication 57230),
section "VCEK Certificate Extensions". Every malformed or missing extension is
a ``CollateralError``: the VEK is collateral, not evidence.

Each reading depends on the certificate alone, and a host presents the same
VEK with every report, so readings are memoised per certificate (bounded;
failures are not memoised and raise again on every call).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import MappingProxyType

from cryptography import x509

from broker.errors import CollateralError
from broker.evidence._x509 import CERT_MEMO_SIZE, per_certificate
from broker.evidence.snp_report import Product

__all__ = ["certified_tcb", "hwid_candidates", "product_name", "product_of", "spl"]

_AMD_OID = "1.3.6.1.4.1.3704.1"
_OID_PRODUCT_NAME = x509.ObjectIdentifier(f"{_AMD_OID}.2")
_OID_HWID = x509.ObjectIdentifier(f"{_AMD_OID}.4")
_OID_SPL = {
    "bootloader": x509.ObjectIdentifier(f"{_AMD_OID}.3.1"),
    "tee": x509.ObjectIdentifier(f"{_AMD_OID}.3.2"),
    "snp": x509.ObjectIdentifier(f"{_AMD_OID}.3.3"),
    "microcode": x509.ObjectIdentifier(f"{_AMD_OID}.3.8"),
    "fmc": x509.ObjectIdentifier(f"{_AMD_OID}.3.9"),
}
_DER_INTEGER, _DER_OCTET_STRING, _DER_IA5STRING = 0x02, 0x04, 0x16


def _der_value(data: bytes, tag: int, what: str) -> bytes:
    """The content of one DER TLV that must span ``data`` exactly."""
    if len(data) < 2 or data[0] != tag:
        raise CollateralError(f"VEK extension {what} is not DER tag 0x{tag:02x}")
    length, start = data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 2 or len(data) < 2 + count:
            raise CollateralError(f"VEK extension {what} has a bad DER length")
        length, start = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    if len(data) != start + length:
        raise CollateralError(f"VEK extension {what} has a bad DER length")
    return data[start:]


def _extension(vek: x509.Certificate, oid: x509.ObjectIdentifier, what: str) -> bytes | None:
    try:
        value = vek.extensions.get_extension_for_oid(oid).value
    except x509.ExtensionNotFound:
        return None
    if not isinstance(value, x509.UnrecognizedExtension):
        raise CollateralError(f"VEK extension {what} has an unexpected type")
    return value.value


def spl(vek: x509.Certificate, name: str) -> int:
    """The certified SPL of one TCB component; CollateralError if absent or malformed."""
    raw = _extension(vek, _OID_SPL[name], f"{name} SPL")
    if raw is None:
        raise CollateralError(f"VEK lacks the {name} SPL extension")
    content = _der_value(raw, _DER_INTEGER, f"{name} SPL")
    if not content or content[0] & 0x80:
        raise CollateralError(f"VEK {name} SPL is not a non-negative INTEGER")
    return int.from_bytes(content, "big")


@per_certificate(CERT_MEMO_SIZE)
def certified_tcb(vek: x509.Certificate, names: tuple[str, ...]) -> Mapping[str, int]:
    """``spl`` of each of ``names``, in that order, read-only; CollateralError
    for the first one absent or malformed."""
    return MappingProxyType({name: spl(vek, name) for name in names})


@per_certificate(CERT_MEMO_SIZE)
def product_name(vek: x509.Certificate) -> str:
    """The ``productName`` text (``Milan-B0``); CollateralError if absent or malformed."""
    raw = _extension(vek, _OID_PRODUCT_NAME, "productName")
    if raw is None:
        raise CollateralError("VEK lacks the productName extension")
    try:
        return _der_value(raw, _DER_IA5STRING, "productName").decode("ascii")
    except UnicodeDecodeError as exc:
        raise CollateralError("VEK productName is not ASCII") from exc


def product_of(name: str) -> Product:
    """The product a ``productName`` names; CollateralError for an unsupported one."""
    family = name.split("-", 1)[0]
    try:
        return Product(family)
    except ValueError:
        raise CollateralError(f"VEK product {name[:32]!r} is not supported") from None


@per_certificate(CERT_MEMO_SIZE)
def hwid_candidates(vek: x509.Certificate) -> tuple[bytes, ...]:
    """The values the VCEK ``hwID`` may stand for; CollateralError if it is absent."""
    raw = _extension(vek, _OID_HWID, "hwID")
    if raw is None:
        raise CollateralError("VCEK lacks the hwID extension")
    # KDS has served hwID both as raw bytes and DER-wrapped as an OCTET STRING.
    with contextlib.suppress(CollateralError):
        return raw, _der_value(raw, _DER_OCTET_STRING, "hwID")
    return (raw,)
