"""SEV-SNP evidence through the ``/dev/sev-guest`` SNP_GET_EXT_REPORT ioctl.

    provider = SevGuestProvider()
    evidence = await provider.evidence(report_data)   # {"report": ..., "vcek": ...}

For kernels without configfs-tsm. Structures from the Linux uapi header
``include/uapi/linux/sev-guest.h``::

    struct snp_report_req {            /* 96 bytes */
        __u8  user_data[64];           /* REPORT_DATA */
        __u32 vmpl;
        __u8  rsvd[28];
    };
    struct snp_ext_report_req {        /* 112 bytes with tail padding */
        struct snp_report_req data;
        __u64 certs_address;           /* page-multiple buffer for the cert table */
        __u32 certs_len;               /* in: buffer size; out: size needed */
    };
    struct snp_report_resp {
        __u8 data[4000];               /* MSG_REPORT_RSP: status, report_size, 24
                                          reserved bytes, then the report */
    };
    struct snp_guest_request_ioctl {   /* 32 bytes */
        __u8  msg_version;             /* 1 */
        __u64 req_data;                /* address of the request */
        __u64 resp_data;               /* address of the response */
        union { __u64 exitinfo2;       /* low 32 bits firmware error, */
                struct { __u32 fw_error; __u32 vmm_error; }; };  /* high 32 VMM error */
    };
    #define SNP_GET_EXT_REPORT _IOWR('S', 0x2, struct snp_guest_request_ioctl)

When the certificate buffer is too small the ioctl fails with EIO, the VMM
error is SNP_GUEST_VMM_ERR_INVALID_LEN (1), and ``certs_len`` holds the size
needed: the request is repeated once with a buffer of that size.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker.client.hw_common import (
    SNP_REPORT_SIZE,
    EvidenceProviderError,
    check_report_data,
    snp_evidence,
)

__all__ = [
    "SEV_GUEST_DEVICE",
    "SNP_GET_EXT_REPORT",
    "SevGuestProvider",
    "SnpExtReportReq",
    "SnpGuestRequestIoctl",
    "SnpReportReq",
    "SnpReportResp",
]

SEV_GUEST_DEVICE = Path("/dev/sev-guest")
PAGE_SIZE = 4096
SEV_FW_BLOB_MAX_SIZE = 0x4000  # the kernel's cap on certs_len; one try fits every host seen
MAX_CERTS_LEN = 1 << 20  # bounds what a hostile host may ask us to allocate
MSG_VERSION = 1
SNP_GUEST_VMM_ERR_INVALID_LEN = 1
SNP_GUEST_VMM_ERR_BUSY = 2
_RESP_HEADER = 0x20  # status (u32), report_size (u32), 24 reserved bytes
_MAX_VMPL = 3


class SnpReportReq(ctypes.Structure):
    _fields_ = (
        ("user_data", ctypes.c_uint8 * 64),
        ("vmpl", ctypes.c_uint32),
        ("rsvd", ctypes.c_uint8 * 28),
    )


class SnpExtReportReq(ctypes.Structure):
    _fields_ = (
        ("data", SnpReportReq),
        ("certs_address", ctypes.c_uint64),
        ("certs_len", ctypes.c_uint32),
    )


class SnpReportResp(ctypes.Structure):
    _fields_ = (("data", ctypes.c_uint8 * 4000),)


class SnpGuestRequestIoctl(ctypes.Structure):
    _fields_ = (
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    )


def _iowr(kind: int, number: int, size: int) -> int:
    """Linux ``_IOWR``: direction read|write (3) << 30, size << 16, type << 8, nr."""
    return (3 << 30) | (size << 16) | (kind << 8) | number


SNP_GET_EXT_REPORT = _iowr(ord("S"), 0x2, ctypes.sizeof(SnpGuestRequestIoctl))

# The system call, a seam for tests (there is no SNP firmware in CI).
_ioctl: Callable[[int, int, Any, bool], int] = fcntl.ioctl


def build_request(
    report_data: bytes, vmpl: int, certs: ctypes.Array[ctypes.c_char]
) -> SnpExtReportReq:
    """The extended report request for ``report_data`` at ``vmpl``."""
    req = SnpExtReportReq()
    ctypes.memmove(req.data.user_data, report_data, len(report_data))
    req.data.vmpl = vmpl
    req.certs_address = ctypes.addressof(certs)
    req.certs_len = len(certs)
    return req


def parse_response(resp: SnpReportResp) -> bytes:
    """The report out of MSG_REPORT_RSP; raises EvidenceProviderError."""
    raw = bytes(resp.data)
    status = int.from_bytes(raw[0:4], "little")
    size = int.from_bytes(raw[4:8], "little")
    if status != 0:
        raise EvidenceProviderError(f"SNP firmware refused the report request: status 0x{status:x}")
    if size != SNP_REPORT_SIZE:
        raise EvidenceProviderError(f"SNP firmware returned a report of {size} bytes")
    return raw[_RESP_HEADER : _RESP_HEADER + SNP_REPORT_SIZE]


class SevGuestProvider:
    """``sev-snp`` evidence from the sev-guest driver at VMPL ``vmpl``."""

    tee = "sev-snp"

    def __init__(self, device: Path = SEV_GUEST_DEVICE, *, vmpl: int = 0) -> None:
        if not 0 <= vmpl <= _MAX_VMPL:
            raise ValueError("vmpl must be 0 to 3")
        self._device = Path(device)
        self._vmpl = vmpl

    async def evidence(self, report_data: bytes) -> Any:
        """Raises MalformedRequest or EvidenceProviderError."""
        data = check_report_data(report_data)
        report, table = await asyncio.to_thread(self._request, data)
        return snp_evidence(report, table)

    def _open(self) -> int:
        try:
            return os.open(self._device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise EvidenceProviderError(
                f"no SEV-SNP guest device at {self._device} (not an SNP guest, or no driver)"
            ) from None
        except OSError as exc:
            raise EvidenceProviderError(f"cannot open {self._device}: {exc.strerror}") from None

    def _request(self, report_data: bytes) -> tuple[bytes, bytes | None]:
        fd = self._open()
        try:
            certs_len = SEV_FW_BLOB_MAX_SIZE
            for _ in range(2):
                certs = ctypes.create_string_buffer(certs_len)
                req = build_request(report_data, self._vmpl, certs)
                resp = SnpReportResp()
                guest = SnpGuestRequestIoctl(
                    msg_version=MSG_VERSION,
                    req_data=ctypes.addressof(req),
                    resp_data=ctypes.addressof(resp),
                )
                try:
                    _ioctl(fd, SNP_GET_EXT_REPORT, guest, True)
                except OSError as exc:
                    needed = self._needed_certs_len(exc, guest, req)
                    if needed is None:
                        raise _ioctl_error(exc, guest) from None
                    certs_len = needed
                    continue
                # The table ends itself (all-zero entry); an untouched buffer is empty.
                return parse_response(resp), certs.raw
        finally:
            os.close(fd)
        raise EvidenceProviderError("the host kept asking for a larger certificate buffer")

    @staticmethod
    def _needed_certs_len(
        exc: OSError, guest: SnpGuestRequestIoctl, req: SnpExtReportReq
    ) -> int | None:
        if exc.errno != errno.EIO or int(guest.exitinfo2) >> 32 != SNP_GUEST_VMM_ERR_INVALID_LEN:
            return None
        needed = int(req.certs_len)
        if not 0 < needed <= MAX_CERTS_LEN:
            raise EvidenceProviderError(f"host asks for a {needed}-byte certificate buffer")
        return -(-needed // PAGE_SIZE) * PAGE_SIZE


def _ioctl_error(exc: OSError, guest: SnpGuestRequestIoctl) -> EvidenceProviderError:
    info = int(guest.exitinfo2)
    return EvidenceProviderError(
        f"SNP_GET_EXT_REPORT failed: {errno.errorcode.get(exc.errno or 0, 'error')}, "
        f"firmware error 0x{info & 0xFFFFFFFF:x}, VMM error 0x{info >> 32:x}"
    )
