"""The SEV-SNP ATTESTATION_REPORT: byte layout, parsing and TCB decoding.

    report = SNPReport.from_bytes(raw)          # parsed, not verified
    tcb = decode_tcb(report.reported_tcb, Product.MILAN)

Layout and semantics follow the AMD "SEV Secure Nested Paging Firmware ABI
Specification" (publication 56860): Table "ATTESTATION_REPORT Structure",
Table "TCB_VERSION Structure" and Table "Guest Policy Structure".
Verification lives in ``broker.evidence.snp``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import StrEnum

from broker.errors import EvidenceFormatError

__all__ = [
    "FAMILY",
    "HWID_LEN",
    "POLICY_DEBUG",
    "POLICY_MIGRATE_MA",
    "POLICY_SINGLE_SOCKET",
    "POLICY_SMT",
    "REPORT_SIZE",
    "SIGNED_END",
    "SIGNING_NONE",
    "SIGNING_VCEK",
    "SIGNING_VLEK",
    "SUPPORTED_VERSIONS",
    "Product",
    "SNPReport",
    "TCBVersion",
    "decode_tcb",
    "tcb_fields",
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
# The unsigned bytes that must be zero: above r's and s's 48-byte values, and
# the reserved tail. Compared against zeros in one go (``any`` walks byte by byte).
_UNSIGNED_ZERO = ((_SIG_R + _P384_BYTES, _SIG_S), (_SIG_S + _P384_BYTES, REPORT_SIZE))
_ZEROS = bytes(REPORT_SIZE)


def _struct_at(fields: tuple[tuple[int, str], ...]) -> struct.Struct:
    """One little-endian Struct reading ``(offset, code)`` fields in offset order,
    the gaps between them skipped, so the offsets above stay the only layout."""
    fmt, pos = "<", 0
    for offset, code in fields:
        if offset < pos:
            raise ValueError(f"report field at 0x{offset:03X} overlaps the one before")
        fmt += f"{offset - pos}x{code}" if offset > pos else code
        pos = offset + struct.calcsize("<" + code)
    return struct.Struct(fmt + f"{REPORT_SIZE - pos}x")


# Every field from_bytes reads, in the order it unpacks them (one call instead
# of a slice or int conversion per field).
_LAYOUT = _struct_at(
    (
        (_VERSION, "I"), (_GUEST_SVN, "I"), (_POLICY, "Q"), (_FAMILY_ID, "16s"),
        (_IMAGE_ID, "16s"), (_VMPL, "I"), (_SIGNATURE_ALGO, "I"), (_CURRENT_TCB, "8s"),
        (_PLATFORM_INFO, "Q"), (_KEY_INFO, "I"), (_REPORT_DATA, "64s"), (_MEASUREMENT, "48s"),
        (_HOST_DATA, "32s"), (_ID_KEY_DIGEST, "48s"), (_AUTHOR_KEY_DIGEST, "48s"),
        (_REPORT_ID, "32s"), (_REPORT_ID_MA, "32s"), (_REPORTED_TCB, "8s"),
        (_CPUID_FAM_ID, "B"), (_CPUID_MOD_ID, "B"), (_CPUID_STEP, "B"), (_CHIP_ID, "64s"),
        (_COMMITTED_TCB, "8s"), (_CURRENT_BUILD, "B"), (_CURRENT_MINOR, "B"),
        (_CURRENT_MAJOR, "B"), (_COMMITTED_BUILD, "B"), (_COMMITTED_MINOR, "B"),
        (_COMMITTED_MAJOR, "B"), (_LAUNCH_TCB, "8s"), (_LAUNCH_MIT_VECTOR, "Q"),
        (_CURRENT_MIT_VECTOR, "Q"), (_SIG_R, f"{_SIG_FIELD}s"), (_SIG_S, f"{_SIG_FIELD}s"),
    )
)  # fmt: skip

# SIGNING_KEY (KEY_INFO bits 4:2).
SIGNING_VCEK, SIGNING_VLEK, SIGNING_NONE = 0, 1, 7

# Guest policy bits.
POLICY_SMT, POLICY_MIGRATE_MA, POLICY_DEBUG, POLICY_SINGLE_SOCKET = 16, 18, 19, 20


class Product(StrEnum):
    """SEV-SNP CPU generations, as named by the VEK ``productName`` extension."""

    MILAN = "Milan"
    GENOA = "Genoa"
    TURIN = "Turin"


# CPUID family of each product (reported from report version 3 on).
FAMILY = {Product.MILAN: 0x19, Product.GENOA: 0x19, Product.TURIN: 0x1A}
# The VCEK hwID is the whole CHIP_ID, except on Turin (8 bytes, zero padded).
HWID_LEN = {Product.MILAN: 64, Product.GENOA: 64, Product.TURIN: 8}


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
    """TCB_VERSION per product: Turin moved the fields (see ``tcb_fields``)."""
    return TCBVersion(**tcb_fields(raw, product))


def tcb_fields(raw: bytes, product: Product) -> dict[str, int]:
    """``decode_tcb(raw, product).to_dict()`` without the intermediate object
    (a verification decodes five TCBs; this is the one place the layout lives).

    Milan/Genoa: byte0 bootloader, byte1 TEE, byte6 SNP, byte7 microcode.
    Turin: byte0 FMC, byte1 bootloader, byte2 TEE, byte3 SNP, byte7 microcode.
    """
    if len(raw) != 8:
        raise EvidenceFormatError(f"TCB_VERSION is {len(raw)} bytes, must be 8")
    if product is Product.TURIN:
        return {
            "fmc": raw[0],
            "bootloader": raw[1],
            "tee": raw[2],
            "snp": raw[3],
            "microcode": raw[7],
        }
    return {"bootloader": raw[0], "tee": raw[1], "snp": raw[6], "microcode": raw[7]}


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
        (
            version, guest_svn, policy, family_id, image_id, vmpl, algo, current_tcb,
            platform_info, key_info, report_data, measurement, host_data, id_key_digest,
            author_key_digest, report_id, report_id_ma, reported_tcb, cpuid_fam_id,
            cpuid_mod_id, cpuid_step, chip_id, committed_tcb, current_build, current_minor,
            current_major, committed_build, committed_minor, committed_major, launch_tcb,
            launch_mit_vector, current_mit_vector, signature_r, signature_s,
        ) = _LAYOUT.unpack(data)  # fmt: skip
        if version not in SUPPORTED_VERSIONS:
            raise EvidenceFormatError(f"SNP report VERSION (0x000) {version} is not supported")
        if algo != _SIG_ALGO_ECDSA_P384_SHA384:
            raise EvidenceFormatError(f"SNP report SIGNATURE_ALGO (0x034) {algo} is unknown")
        if vmpl > _MAX_VMPL:
            raise EvidenceFormatError(f"SNP report VMPL (0x030) {vmpl} is not a guest VMPL")
        signing_key = (key_info >> 2) & 0x7
        if signing_key not in (SIGNING_VCEK, SIGNING_VLEK, SIGNING_NONE):
            raise EvidenceFormatError(f"SNP report SIGNING_KEY (0x048) {signing_key} is unknown")
        # Bytes past 0x29F are not signed: anything but a canonical r, s and
        # zero padding would let two byte strings carry one signed report.
        for offset, end in _UNSIGNED_ZERO:
            if data[offset:end] != _ZEROS[: end - offset]:
                raise EvidenceFormatError(f"SNP report signature area at 0x{offset:03X} not zero")
        return cls(
            version=version,
            guest_svn=guest_svn,
            policy=policy,
            family_id=family_id,
            image_id=image_id,
            vmpl=vmpl,
            signature_algo=algo,
            current_tcb=current_tcb,
            platform_info=platform_info,
            author_key_en=key_info & 0x1,
            mask_chip_key=(key_info >> 1) & 0x1,
            signing_key=signing_key,
            report_data=report_data,
            measurement=measurement,
            host_data=host_data,
            id_key_digest=id_key_digest,
            author_key_digest=author_key_digest,
            report_id=report_id,
            report_id_ma=report_id_ma,
            reported_tcb=reported_tcb,
            cpuid_fam_id=cpuid_fam_id,
            cpuid_mod_id=cpuid_mod_id,
            cpuid_step=cpuid_step,
            chip_id=chip_id,
            committed_tcb=committed_tcb,
            current_fw=(current_major, current_minor, current_build),
            committed_fw=(committed_major, committed_minor, committed_build),
            launch_tcb=launch_tcb,
            launch_mit_vector=launch_mit_vector,
            current_mit_vector=current_mit_vector,
            signature_r=int.from_bytes(signature_r, "little"),
            signature_s=int.from_bytes(signature_s, "little"),
            raw=data,
        )

    @property
    def signed_bytes(self) -> bytes:
        return self.raw[:SIGNED_END]

    def policy_bit(self, bit: int) -> bool:
        return bool(self.policy >> bit & 1)
