"""AMD SEV-SNP attestation reports: parse, verify against pinned AMD roots.

    result = verify_snp_report(report_bytes, vcek_der, anchors=pinned_anchors(), now=now)
    result.claims["measurement"], result.flags["debug"]

Layout and semantics follow the AMD "SEV Secure Nested Paging Firmware ABI
Specification" (publication 56860): Table "ATTESTATION_REPORT Structure",
Table "TCB_VERSION Structure" and Table "Guest Policy Structure". The VEK
certificate extensions follow AMD's "Versioned Chip Endorsement Key (VCEK)
Certificate and KDS Interface Specification" (publication 57230).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from broker.errors import CollateralError, EvidenceFormatError, EvidenceSignatureError
from broker.evidence import _x509
from broker.evidence.binding import verify_report_data
from broker.evidence.model import (
    HardwareResult,
    TrustAnchors,
    VerifiedClaims,
    VerifyContext,
    evidence_digest,
)

__all__ = [
    "REPORT_SIZE",
    "SNPReport",
    "SNPVerifier",
    "TCBVersion",
    "decode_tcb",
    "verify_snp_report",
]

REPORT_SIZE = 0x4A0
SUPPORTED_VERSIONS = frozenset({2, 3, 5})
SIGNED_END = 0x2A0  # the signature covers bytes 0x000..0x29F
_SIG_ALGO_ECDSA_P384_SHA384 = 1
_SIG_FIELD = 72  # r and s: little-endian, zero above the 48-byte P-384 value
_P384_BYTES = 48

# ATTESTATION_REPORT offsets (ABI spec table "ATTESTATION_REPORT Structure").
_VERSION, _GUEST_SVN, _POLICY, _FAMILY_ID, _IMAGE_ID = 0x000, 0x004, 0x008, 0x010, 0x020
_VMPL, _SIGNATURE_ALGO, _CURRENT_TCB, _PLATFORM_INFO, _KEY_INFO = 0x030, 0x034, 0x038, 0x040, 0x048
_REPORT_DATA, _MEASUREMENT, _HOST_DATA, _ID_KEY_DIGEST = 0x050, 0x090, 0x0C0, 0x0E0
_AUTHOR_KEY_DIGEST, _REPORT_ID, _REPORT_ID_MA, _REPORTED_TCB = 0x110, 0x140, 0x160, 0x180
_CPUID_FAM_ID, _CPUID_MOD_ID, _CPUID_STEP, _CHIP_ID = 0x188, 0x189, 0x18A, 0x1A0
_COMMITTED_TCB, _CURRENT_BUILD, _CURRENT_MINOR, _CURRENT_MAJOR = 0x1E0, 0x1E8, 0x1E9, 0x1EA
_COMMITTED_BUILD, _COMMITTED_MINOR, _COMMITTED_MAJOR = 0x1EC, 0x1ED, 0x1EE
_LAUNCH_TCB, _LAUNCH_MIT_VECTOR, _CURRENT_MIT_VECTOR = 0x1F0, 0x1F8, 0x200
_SIG_R, _SIG_S, _SIG_RESERVED = 0x2A0, 0x2E8, 0x330
_MAX_VMPL = 3

# SIGNING_KEY (KEY_INFO bits 4:2).
_SIGNING_VCEK, _SIGNING_VLEK, _SIGNING_NONE = 0, 1, 7

# Guest policy bits.
_POLICY_SMT, _POLICY_MIGRATE_MA, _POLICY_DEBUG, _POLICY_SINGLE_SOCKET = 16, 18, 19, 20

# VEK certificate extensions (KDS spec, "VCEK Certificate Extensions").
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


class Product(StrEnum):
    """SEV-SNP CPU generations, as named by the VEK ``productName`` extension."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


# CPUID family of each product (reported from report version 3 on).
_FAMILY = {Product.MILAN: 0x19, Product.GENOA: 0x19, Product.TURIN: 0x1A}
# The VCEK hwID is the whole CHIP_ID, except on Turin (8 bytes, zero padded).
_HWID_LEN = {Product.MILAN: 64, Product.GENOA: 64, Product.TURIN: 8}


@dataclass(frozen=True, slots=True)
class TCBVersion:
    """A decoded TCB_VERSION; ``fmc`` exists on Turin only."""

    bootloader: int
    tee: int
    snp: int
    microcode: int
    fmc: int | None = None

    def to_dict(self) -> dict[str, int]:
        parts = {"bootloader": self.bootloader, "tee": self.tee, "snp": self.snp}
        parts["microcode"] = self.microcode
        return parts if self.fmc is None else {"fmc": self.fmc, **parts}


def decode_tcb(raw: bytes, product: Product) -> TCBVersion:
    """TCB_VERSION per product: Turin moved the fields (ABI spec, TCB_VERSION).

    Milan/Genoa: byte0 bootloader, byte1 TEE, byte6 SNP, byte7 microcode.
    Turin: byte0 FMC, byte1 bootloader, byte2 TEE, byte3 SNP, byte7 microcode.
    """
    if len(raw) != 8:
        raise EvidenceFormatError(f"TCB_VERSION is {len(raw)} bytes, must be 8")
    if product is Product.TURIN:
        return TCBVersion(bootloader=raw[1], tee=raw[2], snp=raw[3], microcode=raw[7], fmc=raw[0])
    return TCBVersion(bootloader=raw[0], tee=raw[1], snp=raw[6], microcode=raw[7])


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


def _u64(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 8], "little")


@dataclass(frozen=True, slots=True)
class SNPReport:
    """An ATTESTATION_REPORT, parsed but not verified. TCBs stay raw bytes
    because their layout depends on the product, known only from the VEK."""

    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: bytes
    platform_info: int
    author_key_en: int
    mask_chip_key: int
    signing_key: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: bytes
    cpuid_fam_id: int
    cpuid_mod_id: int
    cpuid_step: int
    chip_id: bytes
    committed_tcb: bytes
    current_fw: tuple[int, int, int]
    committed_fw: tuple[int, int, int]
    launch_tcb: bytes
    launch_mit_vector: int
    current_mit_vector: int
    signature_r: int
    signature_s: int
    raw: bytes = field(repr=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> SNPReport:
        """Parses the 1184-byte report.

        Raises:
            EvidenceFormatError: wrong size, unsupported VERSION or
                SIGNATURE_ALGO, unknown SIGNING_KEY, VMPL above 3, or non-zero
                bytes in the unsigned signature area.
        """
        data = bytes(data)
        if len(data) != REPORT_SIZE:
            raise EvidenceFormatError(f"SNP report is {len(data)} bytes, must be {REPORT_SIZE}")
        version = _u32(data, _VERSION)
        if version not in SUPPORTED_VERSIONS:
            raise EvidenceFormatError(f"SNP report VERSION (0x000) {version} is not supported")
        if (algo := _u32(data, _SIGNATURE_ALGO)) != _SIG_ALGO_ECDSA_P384_SHA384:
            raise EvidenceFormatError(f"SNP report SIGNATURE_ALGO (0x034) {algo} is unknown")
        if (vmpl := _u32(data, _VMPL)) > _MAX_VMPL:
            raise EvidenceFormatError(f"SNP report VMPL (0x030) {vmpl} is not a guest VMPL")
        key_info = _u32(data, _KEY_INFO)
        signing_key = (key_info >> 2) & 0x7
        if signing_key not in (_SIGNING_VCEK, _SIGNING_VLEK, _SIGNING_NONE):
            raise EvidenceFormatError(f"SNP report SIGNING_KEY (0x048) {signing_key} is unknown")
        # Bytes past 0x29F are not signed: anything but a canonical r, s and
        # zero padding would let two byte strings carry one signed report.
        for offset, end in ((_SIG_R + _P384_BYTES, _SIG_S), (_SIG_S + _P384_BYTES, REPORT_SIZE)):
            if any(data[offset:end]):
                raise EvidenceFormatError(f"SNP report signature area at 0x{offset:03X} not zero")

        def raw(offset: int, size: int) -> bytes:
            return data[offset : offset + size]

        return cls(
            version=version,
            guest_svn=_u32(data, _GUEST_SVN),
            policy=_u64(data, _POLICY),
            family_id=raw(_FAMILY_ID, 16),
            image_id=raw(_IMAGE_ID, 16),
            vmpl=vmpl,
            signature_algo=algo,
            current_tcb=raw(_CURRENT_TCB, 8),
            platform_info=_u64(data, _PLATFORM_INFO),
            author_key_en=key_info & 0x1,
            mask_chip_key=(key_info >> 1) & 0x1,
            signing_key=signing_key,
            report_data=raw(_REPORT_DATA, 64),
            measurement=raw(_MEASUREMENT, 48),
            host_data=raw(_HOST_DATA, 32),
            id_key_digest=raw(_ID_KEY_DIGEST, 48),
            author_key_digest=raw(_AUTHOR_KEY_DIGEST, 48),
            report_id=raw(_REPORT_ID, 32),
            report_id_ma=raw(_REPORT_ID_MA, 32),
            reported_tcb=raw(_REPORTED_TCB, 8),
            cpuid_fam_id=data[_CPUID_FAM_ID],
            cpuid_mod_id=data[_CPUID_MOD_ID],
            cpuid_step=data[_CPUID_STEP],
            chip_id=raw(_CHIP_ID, 64),
            committed_tcb=raw(_COMMITTED_TCB, 8),
            current_fw=(data[_CURRENT_MAJOR], data[_CURRENT_MINOR], data[_CURRENT_BUILD]),
            committed_fw=(data[_COMMITTED_MAJOR], data[_COMMITTED_MINOR], data[_COMMITTED_BUILD]),
            launch_tcb=raw(_LAUNCH_TCB, 8),
            launch_mit_vector=_u64(data, _LAUNCH_MIT_VECTOR),
            current_mit_vector=_u64(data, _CURRENT_MIT_VECTOR),
            signature_r=int.from_bytes(raw(_SIG_R, _SIG_FIELD), "little"),
            signature_s=int.from_bytes(raw(_SIG_S, _SIG_FIELD), "little"),
            raw=data,
        )

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_END]

    def policy_bit(self, bit: int) -> bool:
        return bool(self.policy >> bit & 1)


# --- VEK certificate extensions -------------------------------------------


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


def _spl(vek: x509.Certificate, name: str) -> int:
    raw = _extension(vek, _OID_SPL[name], f"{name} SPL")
    if raw is None:
        raise CollateralError(f"VEK lacks the {name} SPL extension")
    content = _der_value(raw, _DER_INTEGER, f"{name} SPL")
    if not content or content[0] & 0x80:
        raise CollateralError(f"VEK {name} SPL is not a non-negative INTEGER")
    return int.from_bytes(content, "big")


def _product_name(vek: x509.Certificate) -> str:
    raw = _extension(vek, _OID_PRODUCT_NAME, "productName")
    if raw is None:
        raise CollateralError("VEK lacks the productName extension")
    try:
        return _der_value(raw, _DER_IA5STRING, "productName").decode("ascii")
    except UnicodeDecodeError as exc:
        raise CollateralError("VEK productName is not ASCII") from exc


def _product(name: str) -> Product:
    family = name.split("-", 1)[0]
    try:
        return Product(family)
    except ValueError:
        raise CollateralError(f"VEK product {name[:32]!r} is not supported") from None


def _hwid_candidates(vek: x509.Certificate) -> list[bytes]:
    raw = _extension(vek, _OID_HWID, "hwID")
    if raw is None:
        raise CollateralError("VCEK lacks the hwID extension")
    # KDS has served hwID both as raw bytes and DER-wrapped as an OCTET STRING.
    candidates = [raw]
    with contextlib.suppress(CollateralError):
        candidates.append(_der_value(raw, _DER_OCTET_STRING, "hwID"))
    return candidates


# --- Verification -----------------------------------------------------------


def _anchor(anchors: TrustAnchors, name: str) -> x509.Certificate:
    if name not in anchors.pem:
        raise CollateralError(f"no pinned AMD certificate {name!r}")
    return _x509.load_certificate(anchors.get(name))


def _verify_vek_chain(
    report: SNPReport,
    vek: x509.Certificate,
    product: Product,
    *,
    anchors: TrustAnchors,
    now: datetime,
    crls: Sequence[bytes],
) -> None:
    stem = f"amd-{product.value.lower()}"
    ark = _anchor(anchors, f"{stem}-ark")
    # VCEK-signed reports chain through the ASK, VLEK-signed ones through the ASVK.
    middle = "asvk" if report.signing_key == _SIGNING_VLEK else "ask"
    signer = _anchor(anchors, f"{stem}-{middle}")
    _x509.verify_chain(vek, [signer], ark, now=now, max_len=3)
    if crls:
        _x509.check_revocation([vek, signer, ark], [_x509.load_crl(c) for c in crls], now=now)


def _verify_signature(report: SNPReport, vek: x509.Certificate) -> None:
    key = vek.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp384r1":
        raise EvidenceSignatureError("VEK public key is not ECDSA P-384")
    signature = encode_dss_signature(report.signature_r, report.signature_s)
    try:
        key.verify(signature, report.signed_bytes, ec.ECDSA(hashes.SHA384()))
    except InvalidSignature as exc:
        raise EvidenceSignatureError("SNP report signature does not verify with the VEK") from exc


def _verify_vek_binding(report: SNPReport, vek: x509.Certificate, product: Product) -> None:
    reported = decode_tcb(report.reported_tcb, product)
    certified = {n: _spl(vek, n) for n in reported.to_dict()}
    if certified != reported.to_dict():
        raise CollateralError(
            f"VEK certifies TCB {certified}, the report claims REPORTED_TCB {reported.to_dict()}"
        )
    if report.signing_key != _SIGNING_VCEK:
        return  # a VLEK is not chip-specific: no hwID to compare
    size = _HWID_LEN[product]
    if report.chip_id[size:] != bytes(64 - size) or all(
        c != report.chip_id[:size] for c in _hwid_candidates(vek)
    ):
        raise CollateralError("VCEK hwID does not match the report CHIP_ID")


def _claims(report: SNPReport, product: Product, product_name: str) -> dict[str, Any]:
    def tcb(raw: bytes) -> dict[str, int]:
        return decode_tcb(raw, product).to_dict()

    return {
        "report_version": report.version,
        "guest_svn": report.guest_svn,
        "policy": hex(report.policy),
        "policy_debug_allowed": report.policy_bit(_POLICY_DEBUG),
        "policy_smt_allowed": report.policy_bit(_POLICY_SMT),
        "policy_migrate_ma": report.policy_bit(_POLICY_MIGRATE_MA),
        "policy_single_socket": report.policy_bit(_POLICY_SINGLE_SOCKET),
        "vmpl": report.vmpl,
        "signature_algo": report.signature_algo,
        "signing_key": "VLEK" if report.signing_key == _SIGNING_VLEK else "VCEK",
        "author_key_en": report.author_key_en,
        "mask_chip_key": report.mask_chip_key,
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "host_data": report.host_data.hex(),
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "chip_id": report.chip_id.hex(),
        "platform_info": hex(report.platform_info),
        "reported_tcb": tcb(report.reported_tcb),
        "current_tcb": tcb(report.current_tcb),
        "committed_tcb": tcb(report.committed_tcb),
        "launch_tcb": tcb(report.launch_tcb),
        "current_fw": ".".join(str(part) for part in report.current_fw),
        "cpuid_fam_id": hex(report.cpuid_fam_id),
        "cpuid_mod_id": hex(report.cpuid_mod_id),
        "vek_product_name_ext": product_name,
    }


def _flags(report: SNPReport, claims: Mapping[str, Any]) -> dict[str, bool]:
    return {
        "debug": report.policy_bit(_POLICY_DEBUG),
        "vmpl_nonzero": report.vmpl != 0,
        "signing_key_vlek": report.signing_key == _SIGNING_VLEK,
        "smt_allowed": report.policy_bit(_POLICY_SMT),
        "migrate_ma_allowed": report.policy_bit(_POLICY_MIGRATE_MA),
        "author_key_en": report.author_key_en == 1,
        "reported_tcb_below_current": claims["reported_tcb"] != claims["current_tcb"],
    }


def verify_snp_report(
    report: bytes,
    vek_der: bytes,
    *,
    anchors: TrustAnchors,
    now: datetime,
    crls: Sequence[bytes] = (),
) -> HardwareResult:
    """Verifies a raw ATTESTATION_REPORT and its VCEK/VLEK; no challenge binding.

    Raises:
        EvidenceFormatError: the report or certificate does not parse.
        EvidenceSignatureError: the chain or the report signature is bad, or
            the report is unsigned (SIGNING_KEY none, MASK_CHIP_KEY set).
        CollateralError: a certificate is outside its validity or revoked, a
            root is not pinned, or the VEK does not certify this TCB / chip.
    """
    # (1) Parse: exact size, known VERSION, SIGNATURE_ALGO and SIGNING_KEY.
    parsed = SNPReport.from_bytes(report)
    vek = _x509.load_certificate(vek_der)
    if parsed.signing_key == _SIGNING_NONE or parsed.mask_chip_key:
        raise EvidenceSignatureError("SNP report is not signed (SIGNING_KEY none or MASK_CHIP_KEY)")
    # (2) Chain: product from the VEK; VEK <- ASK|ASVK <- ARK (pinned, self-signed),
    #     all valid at `now`, none revoked by the supplied CRLs.
    product_name = _product_name(vek)
    product = _product(product_name)
    _verify_vek_chain(parsed, vek, product, anchors=anchors, now=now, crls=crls)
    if parsed.version >= 3 and parsed.cpuid_fam_id != _FAMILY[product]:
        raise CollateralError(
            f"report CPUID family 0x{parsed.cpuid_fam_id:x} is not a {product.value} family"
        )
    # (3) Signature: ECDSA P-384 / SHA-384 over bytes 0x000..0x29F by the VEK.
    _verify_signature(parsed, vek)
    # (4) The VEK certifies exactly REPORTED_TCB and, for a VCEK, this CHIP_ID.
    _verify_vek_binding(parsed, vek, product)
    # (5) Claims in the vendor vocabulary; policy-relevant facts as flags.
    claims = _claims(parsed, product, product_name)
    return HardwareResult(
        claims=claims, flags=_flags(parsed, claims), report_data=parsed.report_data
    )


# --- KBS evidence -------------------------------------------------------------


_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def _decode_bytes(value: object, what: str, limit: int) -> bytes:
    """Base64 (standard or URL-safe) text, or a JSON list of byte values."""
    if isinstance(value, str):
        if len(value) > limit * 2:
            raise EvidenceFormatError(f"{what} is too large")
        text = value.strip()
        if "-" in text or "_" in text:  # URL-safe alphabet, padding optional
            text = text.translate(_URLSAFE_TO_STANDARD) + "=" * (-len(text) % 4)
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EvidenceFormatError(f"{what} is not base64") from exc
    if isinstance(value, list):
        if len(value) > limit:
            raise EvidenceFormatError(f"{what} is too large")
        if not all(type(b) is int and 0 <= b <= 0xFF for b in value):
            raise EvidenceFormatError(f"{what} is not a list of byte values")
        return bytes(value)
    raise EvidenceFormatError(f"{what} must be base64 text or a list of bytes")


def _decode_cert(value: object, what: str, limit: int) -> bytes:
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii", "replace")
    return _decode_bytes(value, what, limit)


def _evidence_object(evidence: object) -> Mapping[str, Any]:
    if isinstance(evidence, str):
        try:
            evidence = json.loads(evidence)
        except ValueError as exc:
            raise EvidenceFormatError("SNP evidence is not JSON") from exc
    if not isinstance(evidence, Mapping):
        raise EvidenceFormatError("SNP evidence must be a JSON object")
    return evidence


# Trustee's attester sends the report as the serde form of virtee/sev's
# AttestationReport: the ABI fields in layout order, integers little-endian,
# byte arrays as lists. Each entry is (name, kind): an int kind is a
# little-endian integer of that many bytes (0: a nested TCB_VERSION object), a
# str kind the length of a byte list. Names starting with "_" are reserved and
# default to zero when absent (a wrong default just fails the signature).
_SERDE_LAYOUT: tuple[tuple[str, int | str], ...] = (
    ("version", 4), ("guest_svn", 4), ("policy", 8), ("family_id", "16"), ("image_id", "16"),
    ("vmpl", 4), ("sig_algo", 4), ("current_tcb", 0), ("plat_info", 8),
    ("_author_key_en", 4), ("_reserved_0", 4), ("report_data", "64"), ("measurement", "48"),
    ("host_data", "32"), ("id_key_digest", "48"), ("author_key_digest", "48"),
    ("report_id", "32"), ("report_id_ma", "32"), ("reported_tcb", 0), ("_reserved_1", "24"),
    ("chip_id", "64"), ("committed_tcb", 0), ("current_build", 1), ("current_minor", 1),
    ("current_major", 1), ("_reserved_2", 1), ("committed_build", 1), ("committed_minor", 1),
    ("committed_major", 1), ("_reserved_3", 1), ("launch_tcb", 0), ("_reserved_4", "168"),
)  # fmt: skip


def _serde_int(value: object, size: int, what: str) -> bytes:
    if type(value) is not int or not 0 <= value < 1 << (8 * size):
        raise EvidenceFormatError(f"SNP attestation_report.{what} is not a {size}-byte integer")
    return value.to_bytes(size, "little")


def _serde_array(value: object, size: int, what: str) -> bytes:
    if not isinstance(value, list) or len(value) != size:
        raise EvidenceFormatError(f"SNP attestation_report.{what} is not {size} bytes")
    return b"".join(_serde_int(b, 1, what) for b in value)


def _serde_field(fields: Mapping[str, Any], name: str, size: int | str, what: str) -> bytes:
    if name not in fields:
        if name.startswith("_"):
            return bytes(size if isinstance(size, int) else int(size))
        raise EvidenceFormatError(f"SNP attestation_report lacks {what}")
    value = fields[name]
    if isinstance(size, str):
        return _serde_array(value, int(size), what)
    if size:
        return _serde_int(value, size, what)
    if not isinstance(value, Mapping):
        raise EvidenceFormatError(f"SNP attestation_report.{what} is not a TCB object")
    # Turin's TCB_VERSION leads with FMC and keeps 3 reserved bytes before microcode.
    parts: tuple[tuple[str, int | str], ...] = (
        (("fmc", 1), ("bootloader", 1), ("tee", 1), ("snp", 1), ("_reserved", "3"))
        if "fmc" in value
        else (("bootloader", 1), ("tee", 1), ("_reserved", "4"), ("snp", 1))
    )
    tcb = b"".join(_serde_field(value, n, z, f"{what}.{n}") for n, z in parts)
    return tcb + _serde_field(value, "microcode", 1, f"{what}.microcode")


def _report_from_fields(fields: Mapping[str, Any]) -> bytes:
    """The raw report rebuilt from Trustee's field object; the signature then
    decides whether it is the report the firmware signed."""
    body = b"".join(_serde_field(fields, n, z, n) for n, z in _SERDE_LAYOUT)
    signature = fields.get("signature")
    if not isinstance(signature, Mapping):
        raise EvidenceFormatError("SNP attestation_report lacks signature")
    parts = (("r", "72"), ("s", "72"), ("_reserved", "368"))
    return body + b"".join(_serde_field(signature, n, z, f"signature.{n}") for n, z in parts)


def _report_bytes(evidence: Mapping[str, Any], limit: int) -> bytes:
    for key in ("report", "attestation_report"):
        if key in evidence:
            value = evidence[key]
            if isinstance(value, Mapping):
                return _report_from_fields(value)
            return _decode_bytes(value, f"SNP evidence {key!r}", limit)
    raise EvidenceFormatError("SNP evidence has no 'report' or 'attestation_report'")


def _vek_bytes(evidence: Mapping[str, Any], ctx: VerifyContext) -> bytes:
    limit = ctx.max_evidence_bytes
    for key in ("vcek", "vlek"):
        if evidence.get(key) is not None:
            return _decode_cert(evidence[key], f"SNP evidence {key!r}", limit)
    chain = evidence.get("cert_chain")
    if chain is not None:
        if not isinstance(chain, list) or not all(isinstance(e, Mapping) for e in chain):
            raise EvidenceFormatError("SNP evidence 'cert_chain' must be a list of objects")
        veks = [e for e in chain if str(e.get("cert_type", "")).upper() in ("VCEK", "VLEK")]
        if len(veks) > 1:
            raise EvidenceFormatError("SNP evidence 'cert_chain' holds more than one VEK")
        if veks:
            return _decode_cert(veks[0].get("data"), "SNP cert_chain VEK", limit)
    for key in ("vcek", "vlek"):
        if key in ctx.collateral:
            return ctx.collateral[key]
    raise CollateralError("no VCEK/VLEK in the evidence or the collateral")


class SNPVerifier:
    """KBS verifier for ``sev-snp`` evidence.

    Accepts ``{"report": <base64 1184 bytes>, "vcek": <base64 DER | PEM>}`` and
    Trustee's form ``{"attestation_report": <base64 | byte list>, "cert_chain":
    [{"cert_type": "VCEK" | "VLEK", "data": <base64 | byte list>}, ...]}``.
    Without a VEK in the evidence, ``ctx.collateral["vcek"]`` (DER) is used.
    Supplied ASK/ARK entries are ignored: only the pinned roots count.
    """

    tee = "sev-snp"

    def verify(self, evidence: object, ctx: VerifyContext) -> VerifiedClaims:
        """Raises an EvidenceError subclass unless the evidence verifies and,
        when ``ctx.expect`` is set, REPORT_DATA binds the challenge."""
        fields = _evidence_object(evidence)
        report = _report_bytes(fields, ctx.max_evidence_bytes)
        vek = _vek_bytes(fields, ctx)
        result = verify_snp_report(report, vek, anchors=ctx.anchors, now=ctx.now)
        if ctx.expect is not None:
            verify_report_data(result.report_data, ctx.expect)
        return VerifiedClaims(
            tee=self.tee,
            claims=result.claims,
            flags=result.flags,
            evidence_digest=evidence_digest(report),
        )
