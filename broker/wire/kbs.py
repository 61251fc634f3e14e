"""KBS protocol 0.4.0 messages (strict msgspec structs at the wire boundary)."""

from __future__ import annotations

from typing import Any

import msgspec

from broker.errors import MalformedRequest, UnsupportedVersion

SUPPORTED_MAJOR_MINOR = ("0", "4")


class AuthRequest(msgspec.Struct, forbid_unknown_fields=True):
    version: str
    tee: str
    extra_params: Any = msgspec.field(default="", name="extra-params")


class Challenge(msgspec.Struct):
    nonce: str
    extra_params: Any = msgspec.field(default="", name="extra-params")


class RuntimeData(msgspec.Struct, forbid_unknown_fields=True):
    nonce: str
    tee_pubkey: dict[str, Any] = msgspec.field(name="tee-pubkey")


class TeeEvidence(msgspec.Struct, forbid_unknown_fields=True):
    primary_evidence: Any
    additional_evidence: str = ""


class AttestRequest(msgspec.Struct, forbid_unknown_fields=True):
    runtime_data: RuntimeData = msgspec.field(name="runtime-data")
    tee_evidence: TeeEvidence = msgspec.field(name="tee-evidence")
    init_data: Any = msgspec.field(default=None, name="init-data")


class AttestResponse(msgspec.Struct):
    token: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    type: str
    detail: str
    request_id: str
    reasons: list[str] | None = None


def decode(body: bytes, kind: type[msgspec.Struct]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise MalformedRequest(f"invalid {kind.__name__}: {exc}") from None
    # msgspec raises UnicodeDecodeError, not DecodeError, for invalid UTF-8 in an object key.
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise MalformedRequest("request body is not valid JSON") from None


def check_version(version: str) -> None:
    parts = version.split(".")
    if (
        len(parts) != 3
        or tuple(parts[:2]) != SUPPORTED_MAJOR_MINOR
        or not all(p.isdigit() for p in parts)
    ):
        raise UnsupportedVersion(
            f"protocol version {version[:20]!r} not supported (this broker speaks 0.4.x)"
        )
