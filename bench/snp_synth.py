"""Synthetic AMD SEV-SNP evidence for benchmarks: a TEST chain and reports it signs.

    BENCHMARK AND TEST USE ONLY. The ARK, ASK and VCEK made here are generated
    on the fly by this module; their private keys live in this process. A broker
    that trusts the roots folder written by ``write_roots`` accepts SEV-SNP
    evidence from anyone who runs this code. Such a folder is only ever created
    in a temporary directory, handed to a broker child process started by the
    benchmarks, and deleted with it. Never point ``evidence.roots_dir`` of a real
    deployment at it, and never copy these certificates anywhere.

    amd = TestAMD.generate(now)                       # test ARK -> ASK (RSA-4096, PSS)
    chip = amd.chip(now)                              # a test VCEK (P-384) for one chip
    roots = write_roots(amd, folder)                  # amd-milan-ark.pem, ... for the broker
    report = chip.sign_report(report_data)            # a signed 1184-byte ATTESTATION_REPORT
    evidence = await SyntheticSNPProvider(chip).evidence(report_data)

The chain mirrors AMD's (publication 57230, "VCEK Certificate and KDS Interface
Specification"): ARK and ASK are RSA-4096 signing with RSASSA-PSS, SHA-384, salt
48; the VCEK is ECDSA P-384 carrying the productName, the four TCB SPLs and the
hwID extensions the verifier checks. Reports follow the ABI spec (publication
56860, Table "ATTESTATION_REPORT Structure"), version 2 or 3, Milan.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from broker.evidence import pinned_anchors

__all__ = [
    "BENCH_MEASUREMENT",
    "TEST_ROOTS_MARKER",
    "SyntheticSNPProvider",
    "TestAMD",
    "TestChip",
    "write_roots",
]

# The launch digest every synthetic guest reports; the benchmark policy allows it.
BENCH_MEASUREMENT = bytes.fromhex("be" * 48)
# Written into every roots folder this module fills, so that no one mistakes it.
TEST_ROOTS_MARKER = "BENCHMARK-ONLY-TEST-ROOTS.txt"

_AMD_OID = "1.3.6.1.4.1.3704.1"
_PRODUCT = b"Milan-B0"
_RSA_BITS = 4096
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
# Milan TCB_VERSION: bootloader, TEE, SNP, microcode (ABI spec, "TCB_VERSION Structure").
_TCB = (3, 0, 8, 115)

# ATTESTATION_REPORT offsets used here (ABI spec, "ATTESTATION_REPORT Structure").
_REPORT_SIZE, _SIGNED_END = 0x4A0, 0x2A0
_VERSION, _GUEST_SVN, _POLICY, _VMPL, _SIG_ALGO = 0x000, 0x004, 0x008, 0x030, 0x034
_CURRENT_TCB, _PLATFORM_INFO, _KEY_INFO, _REPORT_DATA = 0x038, 0x040, 0x048, 0x050
_MEASUREMENT, _REPORT_ID, _REPORTED_TCB, _CPUID_FAM_ID = 0x090, 0x140, 0x180, 0x188
_CHIP_ID, _COMMITTED_TCB, _CURRENT_BUILD, _COMMITTED_BUILD = 0x1A0, 0x1E0, 0x1E8, 0x1EC
_LAUNCH_TCB, _SIG_R, _SIG_S = 0x1F0, 0x2A0, 0x2E8
# Guest policy: bit 17 is reserved-must-be-one, bit 16 allows SMT; debug (19) stays off.
_GUEST_POLICY = (1 << 17) | (1 << 16)
_MILAN_FAMILY, _MILAN_MODEL, _MILAN_STEPPING = 0x19, 0x01, 0x01
_FIRMWARE = (1, 55, 21)  # major, minor, build


def _name(common_name: str) -> x509.Name:
    # The organisation says what these are wherever the certificate ends up printed.
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "BENCHMARK ONLY - not AMD"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _amd_ext(suffix: str, der: bytes) -> x509.UnrecognizedExtension:
    return x509.UnrecognizedExtension(x509.ObjectIdentifier(f"{_AMD_OID}.{suffix}"), der)


def _der_small_int(value: int) -> bytes:
    # Each SPL is one byte; a leading zero keeps values >= 0x80 non-negative.
    body = bytes([value]) if value < 0x80 else bytes([0, value])
    return bytes([0x02, len(body)]) + body


def _milan_tcb(tcb: tuple[int, int, int, int]) -> bytes:
    bootloader, tee, snp, microcode = tcb
    return bytes([bootloader, tee, 0, 0, 0, 0, snp, microcode])


def _put(report: bytearray, offset: int, value: bytes) -> None:
    report[offset : offset + len(value)] = value


@dataclass(frozen=True, slots=True)
class TestChip:
    """One synthetic chip: its VCEK (certified by the test ASK) and signing key."""

    vcek_der: bytes
    chip_id: bytes
    tcb: tuple[int, int, int, int]
    key: ec.EllipticCurvePrivateKey = field(repr=False)

    def sign_report(
        self, report_data: bytes, *, version: int = 3, report_id: bytes | None = None
    ) -> bytes:
        """A 1184-byte ATTESTATION_REPORT carrying ``report_data``, signed by the VCEK.

        ``report_id`` defaults to fresh random bytes: each report stands for
        another guest, and no two reports are byte-equal.
        """
        if version not in (2, 3):
            raise ValueError("synthetic reports are version 2 or 3")
        if len(report_data) != 64:
            raise ValueError("REPORT_DATA is 64 bytes")
        report = bytearray(_REPORT_SIZE)
        tcb = _milan_tcb(self.tcb)
        _put(report, _VERSION, version.to_bytes(4, "little"))
        _put(report, _GUEST_SVN, (1).to_bytes(4, "little"))
        _put(report, _POLICY, _GUEST_POLICY.to_bytes(8, "little"))
        _put(report, _VMPL, (0).to_bytes(4, "little"))
        _put(report, _SIG_ALGO, (1).to_bytes(4, "little"))  # ECDSA P-384 with SHA-384
        _put(report, _PLATFORM_INFO, (1).to_bytes(8, "little"))  # SMT enabled
        _put(report, _KEY_INFO, (0).to_bytes(4, "little"))  # signed by the VCEK
        _put(report, _REPORT_DATA, report_data)
        _put(report, _MEASUREMENT, BENCH_MEASUREMENT)
        _put(report, _REPORT_ID, report_id if report_id is not None else os.urandom(32))
        for offset in (_CURRENT_TCB, _REPORTED_TCB, _COMMITTED_TCB, _LAUNCH_TCB):
            _put(report, offset, tcb)
        if version >= 3:  # CPUID fields exist from version 3 on; reserved (zero) before
            _put(report, _CPUID_FAM_ID, bytes([_MILAN_FAMILY, _MILAN_MODEL, _MILAN_STEPPING]))
        _put(report, _CHIP_ID, self.chip_id)
        major, minor, build = _FIRMWARE
        _put(report, _CURRENT_BUILD, bytes([build, minor, major]))
        _put(report, _COMMITTED_BUILD, bytes([build, minor, major]))
        signature = self.key.sign(bytes(report[:_SIGNED_END]), ec.ECDSA(hashes.SHA384()))
        r, s = decode_dss_signature(signature)
        # r and s are little-endian in 72-byte fields, zero above the 48-byte value.
        _put(report, _SIG_R, r.to_bytes(72, "little"))
        _put(report, _SIG_S, s.to_bytes(72, "little"))
        return bytes(report)

    def evidence(self, report_data: bytes) -> dict[str, str]:
        """The KBS ``primary_evidence`` for ``sev-snp``: report and VCEK, base64."""
        report = self.sign_report(report_data)
        return {
            "report": base64.b64encode(report).decode(),
            "vcek": base64.b64encode(self.vcek_der).decode(),
        }


@dataclass(frozen=True, slots=True)
class TestAMD:
    """A test ARK (self-signed) and ASK (signed by the ARK), both RSA-4096 PSS.

    Benchmark and test use only: see the module docstring.
    """

    ark_pem: bytes
    ask_pem: bytes
    ask_key: rsa.RSAPrivateKey = field(repr=False)

    @classmethod
    def generate(cls, now: datetime) -> TestAMD:
        ark_key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
        ask_key = rsa.generate_private_key(public_exponent=65537, key_size=_RSA_BITS)
        start, end = now - timedelta(days=1), now + timedelta(days=365)
        ark_name, ask_name = _name("TEST ARK-Milan"), _name("TEST SEV-Milan")

        def ca(subject: x509.Name, key: rsa.RSAPrivateKey, path_length: int) -> x509.Certificate:
            return (
                x509.CertificateBuilder()
                .subject_name(subject)
                .issuer_name(ark_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
                .add_extension(_ca_usage(), critical=True)
                .sign(ark_key, hashes.SHA384(), rsa_padding=_PSS)
            )

        pem = serialization.Encoding.PEM
        return cls(
            ark_pem=ca(ark_name, ark_key, 1).public_bytes(pem),
            ask_pem=ca(ask_name, ask_key, 0).public_bytes(pem),
            ask_key=ask_key,
        )

    def chip(
        self,
        now: datetime,
        *,
        tcb: tuple[int, int, int, int] = _TCB,
        chip_id: bytes | None = None,
    ) -> TestChip:
        """A VCEK for one chip (random CHIP_ID unless given) certifying ``tcb``."""
        chip_id = chip_id if chip_id is not None else os.urandom(64)
        key = ec.generate_private_key(ec.SECP384R1())
        names = ("1", "2", "3", "8")  # bootloader, TEE, SNP, microcode SPL extensions
        extensions = [
            _amd_ext("2", bytes([0x16, len(_PRODUCT)]) + _PRODUCT),  # productName, IA5String
            *(_amd_ext(f"3.{n}", _der_small_int(v)) for n, v in zip(names, tcb, strict=True)),
            _amd_ext("4", chip_id),  # hwID: the raw CHIP_ID, as KDS serves it for Milan
        ]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("TEST SEV-VCEK"))
            .issuer_name(_name("TEST SEV-Milan"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
        )
        for ext in extensions:
            builder = builder.add_extension(ext, critical=False)
        vcek = builder.sign(self.ask_key, hashes.SHA384(), rsa_padding=_PSS)
        return TestChip(
            vcek_der=vcek.public_bytes(serialization.Encoding.DER),
            chip_id=chip_id,
            tcb=tcb,
            key=key,
        )


def write_roots(amd: TestAMD, folder: Path) -> Path:
    """Fills ``folder`` as an ``evidence.roots_dir``: every pinned root, Milan's replaced.

    The other vendors' roots are the real pinned ones, so the folder is complete;
    only ``amd-milan-ark.pem`` and ``amd-milan-ask.pem`` are the test chain's.
    BENCHMARK AND TEST USE ONLY: a broker trusting this folder trusts this module.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, pem in pinned_anchors().pem.items():
        (folder / f"{name}.pem").write_bytes(pem)
    (folder / "amd-milan-ark.pem").write_bytes(amd.ark_pem)
    (folder / "amd-milan-ask.pem").write_bytes(amd.ask_pem)
    (folder / TEST_ROOTS_MARKER).write_text(
        "The AMD Milan ARK/ASK in this folder are TEST certificates generated by\n"
        "bench/snp_synth.py for a benchmark run. Whoever runs that code can forge\n"
        "SEV-SNP evidence these roots accept. Never use this folder outside a benchmark.\n"
    )
    return folder


class SyntheticSNPProvider:
    """Evidence provider for the broker client: SNP reports signed by a test VCEK.

    Every call signs a new report for the REPORT_DATA it is given (the KBS
    binding of a fresh nonce), so each verification does real signature work.
    Benchmark and test use only.
    """

    tee = "sev-snp"

    def __init__(self, chip: TestChip) -> None:
        self._chip = chip

    async def evidence(self, report_data: bytes) -> dict[str, str]:
        return self._chip.evidence(report_data)
