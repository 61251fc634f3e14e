"""AWS Nitro Enclaves evidence from the Nitro Secure Module (``/dev/nsm``).

    provider = NitroNSMProvider()
    evidence = await provider.evidence(report_data)   # {"attestation_document": <base64>}

The NSM driver takes one ioctl, ``NSM_IOCTL_REQUEST = _IOWR(0x0A, 0, struct
nsm_message)``, whose argument points at a CBOR request and a response buffer
(``aws-nitro-enclaves-nsm-api``, ``nsm-driver``)::

    struct iovec { void *iov_base; size_t iov_len; };
    struct nsm_message { struct iovec request; struct iovec response; };

The driver sets ``response.iov_len`` to the length it wrote. The request is
the serde form of ``Request::Attestation``::

    {"Attestation": {"user_data": bytes|null, "nonce": bytes|null, "public_key": bytes|null}}

and the answer ``{"Attestation": {"document": bytes}}`` or ``{"Error": "<code>"}``.

Binding (see ``broker.evidence.nitro``): the broker requires ``user_data``
to be the SHA-384 runtime digest, which is REPORT_DATA without its zero
padding; it covers both the challenge nonce and the tee-pubkey. The NSM
``nonce`` field is left empty: the provider is given the digest, not the
nonce, and the digest already binds it.
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

import cbor2

from broker.client.hw_common import EvidenceProviderError, b64, check_report_data
from broker.errors import MalformedRequest

__all__ = [
    "NSM_DEVICE",
    "NSM_IOCTL_REQUEST",
    "IoVec",
    "NitroNSMProvider",
    "NsmMessage",
    "attestation_request",
    "parse_attestation_response",
]

NSM_DEVICE = Path("/dev/nsm")
NSM_REQUEST_MAX_SIZE = 0x1000
NSM_RESPONSE_MAX_SIZE = 0x3000
RUNTIME_DIGEST_SIZE = 48  # SHA-384
MAX_PUBLIC_KEY = 1024  # the attestation document's field limit


class IoVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class NsmMessage(ctypes.Structure):
    _fields_ = (("request", IoVec), ("response", IoVec))


NSM_IOCTL_REQUEST = (3 << 30) | (ctypes.sizeof(NsmMessage) << 16) | (0x0A << 8) | 0x00

# The system call, a seam for tests (there is no NSM outside an enclave).
_ioctl: Callable[[int, int, Any, bool], int] = fcntl.ioctl


def attestation_request(
    report_data: bytes, *, public_key: bytes | None = None, nonce: bytes | None = None
) -> bytes:
    """The CBOR Attestation request binding ``report_data``'s runtime digest.

    Raises:
        MalformedRequest: ``report_data`` is not a 48-byte digest zero padded to
            64 bytes, or an optional field is too long.
    """
    data = check_report_data(report_data)
    if any(data[RUNTIME_DIGEST_SIZE:]):
        raise MalformedRequest("Nitro report_data must be a SHA-384 digest padded with zeros")
    for name, value in (("public_key", public_key), ("nonce", nonce)):
        if value is not None and len(value) > MAX_PUBLIC_KEY:
            raise MalformedRequest(f"Nitro {name} exceeds {MAX_PUBLIC_KEY} bytes")
    body = {
        "user_data": data[:RUNTIME_DIGEST_SIZE],
        "nonce": nonce,
        "public_key": public_key,
    }
    encoded: bytes = cbor2.dumps({"Attestation": body})
    return encoded


def parse_attestation_response(raw: bytes) -> bytes:
    """The attestation document out of the NSM answer; raises EvidenceProviderError."""
    try:
        answer = cbor2.loads(raw)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError):
        raise EvidenceProviderError("NSM answered with malformed CBOR") from None
    if isinstance(answer, dict) and "Error" in answer:
        raise EvidenceProviderError(f"NSM refused the request: {str(answer['Error'])[:64]}")
    body = answer.get("Attestation") if isinstance(answer, dict) else None
    document = body.get("document") if isinstance(body, dict) else None
    if not isinstance(document, bytes) or not document:
        raise EvidenceProviderError("NSM answer carries no attestation document")
    return document


class NitroNSMProvider:
    """``nitro`` evidence from the NSM device. ``public_key`` optionally goes
    into the document's ``public_key`` field (not used by the KBS binding)."""

    tee = "nitro"

    def __init__(self, device: Path = NSM_DEVICE, *, public_key: bytes | None = None) -> None:
        self._device = Path(device)
        self._public_key = public_key

    async def evidence(self, report_data: bytes) -> Any:
        """Raises MalformedRequest or EvidenceProviderError."""
        request = attestation_request(report_data, public_key=self._public_key)
        document = await asyncio.to_thread(self._call, request)
        return {"attestation_document": b64(document)}

    def _call(self, request: bytes) -> bytes:
        if len(request) > NSM_REQUEST_MAX_SIZE:
            raise MalformedRequest("NSM request too large")
        try:
            fd = os.open(self._device, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise EvidenceProviderError(
                f"no Nitro Secure Module at {self._device} (not inside a Nitro enclave)"
            ) from None
        except OSError as exc:
            raise EvidenceProviderError(f"cannot open {self._device}: {exc.strerror}") from None
        try:
            req_buf = ctypes.create_string_buffer(request, len(request))
            resp_buf = ctypes.create_string_buffer(NSM_RESPONSE_MAX_SIZE)
            message = NsmMessage(
                request=IoVec(ctypes.addressof(req_buf), len(request)),
                response=IoVec(ctypes.addressof(resp_buf), NSM_RESPONSE_MAX_SIZE),
            )
            try:
                _ioctl(fd, NSM_IOCTL_REQUEST, message, True)
            except OSError as exc:
                name = errno.errorcode.get(exc.errno or 0, "error")
                raise EvidenceProviderError(f"NSM request failed: {name}") from None
        finally:
            os.close(fd)
        length = int(message.response.iov_len)
        if not 0 < length <= NSM_RESPONSE_MAX_SIZE:
            raise EvidenceProviderError(f"NSM answered with {length} bytes")
        return parse_attestation_response(resp_buf.raw[:length])
