"""Intel DCAP quote layout: v3 (SGX), v4 (SGX or TDX) and v5 (typed body).

    quote = DCAPQuote.from_bytes(raw)
    quote.report_claims()   # {"mr_td": ..., "rtmr0": ...} or {"mr_enclave": ...}

Layout per the Intel SGX/TDX DCAP Quote Generation Library API (appendix
"Quote format"): a 48-byte header, the report body (v5: preceded by a 2-byte
body type and a 4-byte body size), a 4-byte signature-data length and the
ECDSA-P256 signature data. Every buffer may carry trailing zero padding (GCP
hands out 8000-byte buffers); anything else after the signature data is
rejected so that no byte of an accepted quote goes unchecked.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from broker.errors import EvidenceFormatError

HEADER_SIZE = 48
SGX_REPORT_SIZE = 384
TD10_REPORT_SIZE = 584
TD15_REPORT_SIZE = 648
TEE_TYPE_SGX = 0x00000000
TEE_TYPE_TDX = 0x00000081
ATT_KEY_ECDSA_P256 = 2
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
CERT_TYPE_PCK_CHAIN = 5
CERT_TYPE_QE_REPORT = 6
# A PEM chain of three P-256 certificates is about 3.7 kB; the cap only
# bounds work on hostile input.
MAX_QUOTE_SIZE = 64 * 1024
MAX_CERT_DATA_SIZE = 16 * 1024

_V5_BODY_SIZES = {1: SGX_REPORT_SIZE, 2: TD10_REPORT_SIZE, 3: TD15_REPORT_SIZE}

# TD_ATTRIBUTES (Intel TDX module ABI, table "TD_ATTRIBUTES"), little-endian u64.
TD_ATTR_DEBUG = 1 << 0
TD_ATTR_SEPT_VE_DISABLE = 1 << 28
# SGX ATTRIBUTES.FLAGS (Intel SDM vol. 3D, SECS), little-endian u64.
SGX_ATTR_DEBUG = 1 << 1


@dataclass(frozen=True, slots=True)
class _Reader:
    data: bytes

    def take(self, offset: int, size: int, what: str) -> bytes:
        if size < 0 or offset + size > len(self.data):
            raise EvidenceFormatError(
                f"quote truncated at offset {offset}: {what} needs {size} bytes"
            )
        return self.data[offset : offset + size]

    def u16(self, offset: int, what: str) -> int:
        value: int = struct.unpack("<H", self.take(offset, 2, what))[0]
        return value

    def u32(self, offset: int, what: str) -> int:
        value: int = struct.unpack("<I", self.take(offset, 4, what))[0]
        return value


@dataclass(frozen=True, slots=True)
class QESignatureData:
    """The ECDSA quote signature data: attestation key, QE report, PCK chain."""

    signature: bytes  # raw r || s over header and body
    attestation_key: bytes  # raw x || y, P-256
    qe_report: bytes  # SGX report body of the Quoting Enclave
    qe_report_signature: bytes  # raw r || s by the PCK key
    qe_auth_data: bytes
    pck_chain_pem: bytes  # certification data type 5, exactly as sent


@dataclass(frozen=True, slots=True)
class DCAPQuote:
    """A structurally valid DCAP quote; nothing in it is verified yet."""

    version: int
    tee_type: int
    body_type: int  # 1 SGX, 2 TD report 1.0, 3 TD report 1.5 (v5 numbering)
    header: bytes
    body: bytes
    signed: bytes  # the bytes the attestation key signed
    sig: QESignatureData

    @property
    def is_tdx(self) -> bool:
        return self.tee_type == TEE_TYPE_TDX

    @property
    def qe_svn(self) -> int:
        value: int = struct.unpack_from("<H", self.header, 8)[0]
        return value

    @property
    def report_data(self) -> bytes:
        offset = 520 if self.is_tdx else 320
        return self.body[offset : offset + 64]

    @property
    def tee_tcb_svn(self) -> bytes:
        return self.body[0:16]

    @property
    def tee_tcb_svn2(self) -> bytes | None:
        return self.body[584:600] if self.body_type == 3 else None

    @property
    def mr_signer_seam(self) -> bytes:
        return self.body[64:112]

    @property
    def seam_attributes(self) -> bytes:
        return self.body[112:120]

    @property
    def td_attributes(self) -> int:
        value: int = struct.unpack_from("<Q", self.body, 120)[0]
        return value

    @property
    def sept_ve_disable(self) -> bool:
        return self.is_tdx and bool(self.td_attributes & TD_ATTR_SEPT_VE_DISABLE)

    @property
    def mr_servicetd_set(self) -> bool:
        return self.body_type == 3 and any(self.body[600:648])

    @property
    def debug(self) -> bool:
        if self.is_tdx:
            return bool(self.td_attributes & TD_ATTR_DEBUG)
        flags: int = struct.unpack_from("<Q", self.body, 48)[0]
        return bool(flags & SGX_ATTR_DEBUG)

    @classmethod
    def from_bytes(cls, data: bytes) -> DCAPQuote:
        """Parses a quote buffer. Raises EvidenceFormatError naming the offset."""
        if len(data) > MAX_QUOTE_SIZE:
            raise EvidenceFormatError(f"quote of {len(data)} bytes exceeds {MAX_QUOTE_SIZE}")
        r = _Reader(bytes(data))
        header = r.take(0, HEADER_SIZE, "header")
        version = r.u16(0, "version")
        tee_type = r.u32(4, "tee type")
        _check_header(r, version, tee_type)
        if version == 5:
            body_type = r.u16(HEADER_SIZE, "body type")
            body_size = r.u32(HEADER_SIZE + 2, "body size")
            expected = _V5_BODY_SIZES.get(body_type)
            if expected is None:
                raise EvidenceFormatError(f"unsupported v5 body type {body_type} at offset 48")
            if body_size != expected:
                raise EvidenceFormatError(f"v5 body size {body_size} at offset 50 != {expected}")
            if (body_type == 1) != (tee_type == TEE_TYPE_SGX):
                raise EvidenceFormatError("v5 body type does not match the tee type at offset 4")
            body_offset = HEADER_SIZE + 6
        else:
            body_type = 2 if tee_type == TEE_TYPE_TDX else 1
            body_size = _V5_BODY_SIZES[body_type]
            body_offset = HEADER_SIZE
        body = r.take(body_offset, body_size, "report body")
        sig_len_offset = body_offset + body_size
        sig_len = r.u32(sig_len_offset, "signature data length")
        sig_offset = sig_len_offset + 4
        sig_data = r.take(sig_offset, sig_len, "signature data")
        trailer = data[sig_offset + sig_len :]
        if trailer.strip(b"\0"):
            raise EvidenceFormatError(
                f"non-zero bytes after the signature data at offset {sig_offset + sig_len}"
            )
        sig = _parse_signature_data(_Reader(sig_data), sig_offset, version)
        return cls(
            version=version,
            tee_type=tee_type,
            body_type=body_type,
            header=header,
            body=body,
            signed=bytes(data[:sig_len_offset]),
            sig=sig,
        )

    def report_claims(self) -> dict[str, Any]:
        """The report body fields, named as in the vectors' ``claims``."""
        return _td_claims(self) if self.is_tdx else _sgx_claims(self)


def _check_header(r: _Reader, version: int, tee_type: int) -> None:
    if version not in (3, 4, 5):
        raise EvidenceFormatError(f"unsupported quote version {version} at offset 0")
    if r.u16(2, "attestation key type") != ATT_KEY_ECDSA_P256:
        raise EvidenceFormatError("attestation key type at offset 2 is not ECDSA-P256")
    if tee_type not in (TEE_TYPE_SGX, TEE_TYPE_TDX):
        raise EvidenceFormatError(f"unknown tee type {tee_type:#x} at offset 4")
    if version == 3 and tee_type != TEE_TYPE_SGX:
        raise EvidenceFormatError("a v3 quote must be an SGX quote (offset 4)")
    if r.take(12, 16, "QE vendor id") != INTEL_QE_VENDOR_ID:
        raise EvidenceFormatError("QE vendor id at offset 12 is not Intel's")


def _parse_signature_data(r: _Reader, base: int, version: int) -> QESignatureData:
    """Walks the signature data; ``base`` only makes offsets absolute in errors."""
    try:
        signature = r.take(0, 64, "quote signature")
        attestation_key = r.take(64, 64, "attestation key")
        pos = 128
        if version >= 4:
            # v4/v5 wrap the QE report in certification data of type 6.
            outer_type = r.u16(pos, "certification data type")
            outer_size = r.u32(pos + 2, "certification data size")
            if outer_type != CERT_TYPE_QE_REPORT:
                raise EvidenceFormatError(f"certification data type {outer_type} is not 6")
            pos += 6
            end = pos + outer_size
            if end != len(r.data):
                raise EvidenceFormatError("certification data size does not fill the signature")
        qe_report = r.take(pos, SGX_REPORT_SIZE, "QE report")
        qe_report_signature = r.take(pos + 384, 64, "QE report signature")
        auth_len = r.u16(pos + 448, "QE auth data size")
        qe_auth_data = r.take(pos + 450, auth_len, "QE auth data")
        pos += 450 + auth_len
        cert_type = r.u16(pos, "PCK certification data type")
        cert_size = r.u32(pos + 2, "PCK certification data size")
        if cert_type != CERT_TYPE_PCK_CHAIN:
            raise EvidenceFormatError(f"PCK certification data type {cert_type} is not 5")
        if cert_size > MAX_CERT_DATA_SIZE:
            raise EvidenceFormatError(f"PCK certification data of {cert_size} bytes is too large")
        pck_chain_pem = r.take(pos + 6, cert_size, "PCK certificate chain")
        if pos + 6 + cert_size != len(r.data):
            raise EvidenceFormatError("PCK certification data does not end the signature data")
    except EvidenceFormatError as exc:
        raise EvidenceFormatError(f"signature data (offset {base}): {exc.message}") from None
    return QESignatureData(
        signature=signature,
        attestation_key=attestation_key,
        qe_report=qe_report,
        qe_report_signature=qe_report_signature,
        qe_auth_data=qe_auth_data,
        pck_chain_pem=pck_chain_pem,
    )


_TD10_FIELDS = (
    ("tee_tcb_svn", 0, 16),
    ("mr_seam", 16, 48),
    ("mr_signer_seam", 64, 48),
    ("seam_attributes", 112, 8),
    ("td_attributes", 120, 8),
    ("xfam", 128, 8),
    ("mr_td", 136, 48),
    ("mr_config_id", 184, 48),
    ("mr_owner", 232, 48),
    ("mr_owner_config", 280, 48),
    ("rtmr0", 328, 48),
    ("rtmr1", 376, 48),
    ("rtmr2", 424, 48),
    ("rtmr3", 472, 48),
    ("report_data", 520, 64),
)
_TD15_FIELDS = (("tee_tcb_svn2", 584, 16), ("mr_servicetd", 600, 48))


def _td_claims(quote: DCAPQuote) -> dict[str, Any]:
    fields = _TD10_FIELDS + (_TD15_FIELDS if quote.body_type == 3 else ())
    claims: dict[str, Any] = {
        name: quote.body[off : off + size].hex() for name, off, size in fields
    }
    claims["debug"] = quote.debug
    claims["sept_ve_disable"] = quote.sept_ve_disable
    return claims


def _sgx_claims(quote: DCAPQuote) -> dict[str, Any]:
    body = quote.body
    return {
        "cpu_svn": body[0:16].hex(),
        "misc_select": struct.unpack_from("<I", body, 16)[0],
        "attributes": body[48:64].hex(),
        "mr_enclave": body[64:96].hex(),
        "mr_signer": body[128:160].hex(),
        "isv_prod_id": struct.unpack_from("<H", body, 256)[0],
        "isv_svn": struct.unpack_from("<H", body, 258)[0],
        "report_data": body[320:384].hex(),
        "debug": quote.debug,
    }


@dataclass(frozen=True, slots=True)
class EnclaveReport:
    """The fields of an SGX report body the QE identity check needs."""

    misc_select: int
    attributes: bytes
    mr_signer: bytes
    isv_prod_id: int
    isv_svn: int
    report_data: bytes

    @classmethod
    def from_bytes(cls, body: bytes) -> EnclaveReport:
        return cls(
            misc_select=struct.unpack_from("<I", body, 16)[0],
            attributes=body[48:64],
            mr_signer=body[128:160],
            isv_prod_id=struct.unpack_from("<H", body, 256)[0],
            isv_svn=struct.unpack_from("<H", body, 258)[0],
            report_data=body[320:384],
        )
