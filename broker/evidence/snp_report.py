"""The SEV-SNP ATTESTATION_REPORT: byte layout, parsing and TCB decoding.

    report = SNPReport.from_bytes(raw)          # parsed, not verified
    tcb = decode_tcb(report.reported_tcb, Product.MILAN)

Layout and semantics follow the AMD "SEV Secure Nested Paging Firmware ABI
Specification" (publication 56860): Table "ATTESTATION_REPORT Structure",
Table "TCB_VERSION Structure" and Table "Guest Policy Structure".
Verification lives in ``broker.evidence.snp``.
"""

from __future__ import annotations

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
        if signing_key not in (SIGNING_VCEK, SIGNING_VLEK, SIGNING_NONE):
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
