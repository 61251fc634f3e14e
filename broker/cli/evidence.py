"""``broker evidence``: check attestation evidence offline, one TEE at a time.

Usage::

    broker evidence verify sev-snp REPORT --vcek CERT [--at TIME]
    broker evidence verify tdx QUOTE --collateral FILE [--at TIME]
    broker evidence verify sgx QUOTE --collateral FILE [--at TIME]
    broker evidence verify nitro DOCUMENT [--at TIME]
    broker evidence verify az-snp-vtpm EVIDENCE.json [--vcek CERT] [--at TIME]
    broker evidence verify az-tdx-vtpm EVIDENCE.json --collateral FILE [--at TIME]

Every command also takes ``--roots DIR`` (a folder of ``<name>.pem`` roots in
place of the pinned ones). ``--at`` is an RFC 3339 time with an offset; the
default is now (UTC).

Output is one JSON object on stdout: ``{"verified": true, "tee", "claims",
"flags"}`` with exit 0, or ``{"verified": false, "error": {"code",
"message"}}`` with exit 1 when the evidence or an input is rejected. An
unexpected failure is reported the same way with code ``InternalError`` and
exit 2. There is no challenge here, so no nonce binding is checked: the
output says what the hardware signed, not that it is fresh.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from broker.errors import BrokerError, EvidenceFormatError, MalformedRequest, RequestError
from broker.evidence import TrustAnchors, anchors_from_dir, pinned_anchors

__all__ = ["InputUnreadable", "evidence"]

# The largest input file read: evidence, certificates and collateral are all
# far below this (the KBS limit on evidence is 512 KiB).
MAX_INPUT_BYTES = 1 << 20

EXIT_REJECTED = 1
EXIT_INTERNAL = 2


class InputUnreadable(RequestError):
    """A file named on the command line cannot be read."""

    code = "InputUnreadable"


@dataclass(frozen=True, slots=True)
class _Outcome:
    claims: Mapping[str, Any]
    flags: Mapping[str, bool]


# A check receives the verification time and the roots, and raises unless the
# evidence verifies; the verifier module is imported inside it, so start-up
# only pays for the TEE that was asked for.
_Check = Callable[[datetime, TrustAnchors], _Outcome]
_F = TypeVar("_F", bound=Callable[..., Any])


def _read(path: str, what: str) -> bytes:
    try:
        with Path(path).open("rb") as fh:
            data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InputUnreadable(f"cannot read {what} {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise EvidenceFormatError(f"{what} {path!r} is larger than {MAX_INPUT_BYTES} bytes")
    return data


def _parse_time(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise MalformedRequest(f"--at {text[:40]!r} is not an RFC 3339 time") from None
    if when.tzinfo is None:
        raise MalformedRequest(f"--at {text[:40]!r} has no UTC offset (append Z or +00:00)")
    return when.astimezone(UTC)


def _anchors(roots: str | None) -> TrustAnchors:
    if roots is None:
        return pinned_anchors()
    folder = Path(roots)
    if not folder.is_dir():
        raise InputUnreadable(f"--roots {roots!r} is not a folder")
    try:
        anchors = anchors_from_dir(roots)
    except OSError as exc:
        raise InputUnreadable(f"cannot read --roots {roots!r}: {exc.strerror or exc}") from None
    if not anchors.pem:
        raise InputUnreadable(f"--roots {roots!r} holds no <name>.pem file")
    return anchors


def _emit(document: Mapping[str, Any]) -> None:
    click.echo(json.dumps(document, separators=(",", ":")))


def _failure(code: str, message: str) -> dict[str, Any]:
    return {"verified": False, "error": {"code": code, "message": message}}


def _run(tee: str, at: str | None, roots: str | None, check: _Check) -> None:
    """Runs ``check`` and prints the verdict; the one place errors are mapped."""
    try:
        outcome = check(_parse_time(at), _anchors(roots))
        text = json.dumps(
            {
                "verified": True,
                "tee": tee,
                "claims": dict(outcome.claims),
                "flags": dict(outcome.flags),
            },
            separators=(",", ":"),
        )
    except BrokerError as exc:
        _emit(_failure(exc.code, exc.message))
        raise SystemExit(EXIT_REJECTED) from None
    except Exception as exc:  # noqa: BLE001 - the output is always JSON, never a traceback
        _emit(_failure("InternalError", f"unexpected {type(exc).__name__} during verification"))
        raise SystemExit(EXIT_INTERNAL) from None
    click.echo(text)


def _common(command: _F) -> _F:
    command = click.option(
        "--roots",
        metavar="DIR",
        default=None,
        help="Folder of <name>.pem vendor roots to use instead of the pinned ones.",
    )(command)
    command = click.option(
        "--at",
        metavar="TIME",
        default=None,
        help="Verification time, RFC 3339 with offset (default: now, UTC).",
    )(command)
    return command


def _collateral_option(command: _F) -> _F:
    return click.option(
        "--collateral",
        metavar="FILE",
        required=True,
        help="DCAP collateral (QuoteCollateralV3 JSON) valid at --at.",
    )(command)


@click.group("evidence")
def evidence() -> None:
    """Inspect and verify attestation evidence offline."""


@evidence.group("verify")
def verify() -> None:
    """Verify evidence against the vendor roots at a given time; print JSON.

    Exit 0: verified (read "flags" before trusting it: debug, TCB status ...).
    Exit 1: rejected, or an input could not be read. Exit 2: internal error.
    """


@verify.command("sev-snp")
@click.argument("report", metavar="REPORT")
@click.option(
    "--vcek",
    metavar="CERT",
    required=True,
    help="VCEK or VLEK certificate of the report's chip (DER or PEM).",
)
@_common
def sev_snp(report: str, vcek: str, at: str | None, roots: str | None) -> None:
    """Verify a raw 1184-byte SEV-SNP ATTESTATION_REPORT signed by the VCEK/VLEK CERT."""

    def check(now: datetime, anchors: TrustAnchors) -> _Outcome:
        from broker.evidence.snp import verify_snp_report  # noqa: PLC0415 - see _Check

        raw, vek = _read(report, "REPORT"), _read(vcek, "--vcek")
        result = verify_snp_report(raw, vek, anchors=anchors, now=now)
        return _Outcome(result.claims, result.flags)

    _run("sev-snp", at, roots, check)


def _dcap(tee: Literal["tdx", "sgx"], quote: str, collateral: str) -> _Check:
    def check(now: datetime, anchors: TrustAnchors) -> _Outcome:
        from broker.evidence.dcap import verify_quote  # noqa: PLC0415 - see _Check

        raw, coll = _read(quote, "QUOTE"), _read(collateral, "--collateral")
        result = verify_quote(raw, coll, anchors=anchors, now=now, tee=tee)
        return _Outcome(result.claims, result.flags)

    return check


@verify.command("tdx")
@click.argument("quote", metavar="QUOTE")
@_collateral_option
@_common
def tdx(quote: str, collateral: str, at: str | None, roots: str | None) -> None:
    """Verify a raw Intel TDX DCAP quote (v4/v5) with its collateral."""
    _run("tdx", at, roots, _dcap("tdx", quote, collateral))


@verify.command("sgx")
@click.argument("quote", metavar="QUOTE")
@_collateral_option
@_common
def sgx(quote: str, collateral: str, at: str | None, roots: str | None) -> None:
    """Verify a raw Intel SGX DCAP quote (v3/v4) with its collateral."""
    _run("sgx", at, roots, _dcap("sgx", quote, collateral))


@verify.command("nitro")
@click.argument("document", metavar="DOCUMENT")
@_common
def nitro(document: str, at: str | None, roots: str | None) -> None:
    """Verify a raw (CBOR) AWS Nitro Enclaves attestation document."""

    def check(now: datetime, anchors: TrustAnchors) -> _Outcome:
        from broker.evidence.nitro import verify_nitro_document  # noqa: PLC0415 - see _Check

        result = verify_nitro_document(_read(document, "DOCUMENT"), anchors=anchors, now=now)
        return _Outcome(result.claims, result.flags)

    _run("nitro", at, roots, check)


@verify.command("az-snp-vtpm")
@click.argument("evidence_file", metavar="EVIDENCE.json")
@click.option(
    "--vcek",
    metavar="CERT",
    default=None,
    help="VCEK (DER or PEM) for evidence that carries none.",
)
@_common
def az_snp_vtpm(evidence_file: str, vcek: str | None, at: str | None, roots: str | None) -> None:
    """Verify Azure SNP vTPM evidence JSON (HCL report, TPM quote, VCEK)."""

    def check(now: datetime, anchors: TrustAnchors) -> _Outcome:
        from broker.evidence.azure import verify_az_snp_vtpm  # noqa: PLC0415 - see _Check

        raw = _read(evidence_file, "EVIDENCE.json")
        vek = None if vcek is None else _read(vcek, "--vcek")
        result = verify_az_snp_vtpm(raw, anchors=anchors, now=now, vcek_der=vek)
        return _Outcome(result.claims, result.flags)

    _run("az-snp-vtpm", at, roots, check)


@verify.command("az-tdx-vtpm")
@click.argument("evidence_file", metavar="EVIDENCE.json")
@_collateral_option
@_common
def az_tdx_vtpm(evidence_file: str, collateral: str, at: str | None, roots: str | None) -> None:
    """Verify Azure TDX vTPM evidence JSON; --collateral is for its td_quote."""

    def check(now: datetime, anchors: TrustAnchors) -> _Outcome:
        from broker.evidence.azure import verify_az_tdx_vtpm  # noqa: PLC0415 - see _Check

        raw, coll = _read(evidence_file, "EVIDENCE.json"), _read(collateral, "--collateral")
        result = verify_az_tdx_vtpm(raw, coll, anchors=anchors, now=now)
        return _Outcome(result.claims, result.flags)

    _run("az-tdx-vtpm", at, roots, check)
