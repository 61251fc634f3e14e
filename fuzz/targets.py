"""One harness per attacker-reachable parser: bytes in, a BrokerError or success out.

A harness passes when its target returns or raises a ``BrokerError``
subclass; any other exception escapes and is reported as a crash. Inputs
that the wire layer would never hand to the target (for example bytes that
are not JSON, for a target taking a decoded JSON value) are skipped, so
what the fuzzer finds is reachable from a request.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import msgspec

from broker.errors import BrokerError
from broker.evidence.azure import verify_az_snp_vtpm, verify_az_tdx_vtpm
from broker.evidence.dcap import verify_quote
from broker.evidence.model import VerifyContext
from broker.evidence.nitro import verify_nitro_document
from broker.evidence.sample import SampleVerifier
from broker.evidence.snp import REPORT_SIZE, verify_snp_report
from broker.keys.algorithms import WrapContext
from broker.keys.unwrap import KEY_KINDS, ClientKeyPair, unwrap
from broker.keys.wrap import wrap
from broker.tokens import TokenKey, issue, verify
from broker.wire import kbs
from fuzz import _seeds

CONTEXT = WrapContext(resource="default/fuzz/key", version=1, jti="fuzz-jti")
ISSUER = "broker-fuzz"
TOKEN_NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]


def _json(data: bytes) -> Any:
    """The decoded JSON value, or ``_SKIP`` when the request parser would refuse it."""
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _SKIP


_SKIP = object()


# -- evidence ----------------------------------------------------------------------------------


def _snp(data: bytes) -> None:
    # Layout: the report (its fixed size) followed by the VEK certificate (DER).
    report, vek = data[:REPORT_SIZE], data[REPORT_SIZE:]
    verify_snp_report(report, vek, anchors=_seeds.anchors(), now=_seeds.FALLBACK_NOW)


def _snp_seeds() -> list[bytes]:
    reports = _seeds.files("sev-snp", "*.report.bin")
    veks = _seeds.files("sev-snp", "*.der")
    return [r + v for r in reports[:3] for v in veks[:3]]


@cache
def _dcap_collateral(tee: str) -> tuple[bytes, datetime]:
    vector = {"tdx": "dcapqvl-tdx-uptodate", "sgx": "dcapqvl-sgx-config-swhardening"}[tee]
    raw = _seeds.read(tee, f"{vector}.collateral.json") or b"{}"
    return raw, _seeds.verification_time(tee, vector)


def _dcap(data: bytes) -> None:
    # First byte: which TEE's quote (and collateral) this is; the rest is the quote.
    if not data:
        return
    tee = "tdx" if data[0] & 1 else "sgx"
    collateral, now = _dcap_collateral(tee)
    verify_quote(data[1:], collateral, anchors=_seeds.anchors(), now=now, tee=tee)


def _dcap_seeds() -> list[bytes]:
    return [b"\x01" + q for q in _seeds.files("tdx", "*.quote.bin")] + [
        b"\x00" + q for q in _seeds.files("sgx", "*.quote.bin")
    ]


def _dcap_collateral_target(data: bytes) -> None:
    # A real quote with fuzzed collateral: the collateral JSON is parsed and checked.
    quote = _seeds.read("tdx", "dcapqvl-tdx-uptodate.quote.bin") or b""
    _, now = _dcap_collateral("tdx")
    verify_quote(quote, data, anchors=_seeds.anchors(), now=now, tee="tdx")


def _dcap_collateral_seeds() -> list[bytes]:
    return _seeds.files("tdx", "*.collateral.json")


def _nitro(data: bytes) -> None:
    now = _seeds.verification_time("nitro", "polygon-claim")
    verify_nitro_document(data, anchors=_seeds.anchors(), now=now, max_age_seconds=None)


def _azure(data: bytes) -> None:
    # First byte: SNP or TDX flavour; the rest is the evidence JSON text.
    if not data:
        return
    if data[0] & 1:
        collateral = _seeds.read("azure-vtpm", "az-tdx-vtpm.collateral.json") or b"{}"
        now = _seeds.verification_time("azure-vtpm", "az-tdx-vtpm")
        verify_az_tdx_vtpm(data[1:], collateral, anchors=_seeds.anchors(), now=now)
    else:
        verify_az_snp_vtpm(data[1:], anchors=_seeds.anchors(), now=_seeds.FALLBACK_NOW)


def _azure_seeds() -> list[bytes]:
    tdx = _seeds.read("azure-vtpm", "az-tdx-vtpm.evidence.json")
    snp = [e for e in _seeds.files("azure-vtpm", "az-snp-vtpm-*.evidence.json")]
    return ([b"\x01" + tdx] if tdx else []) + [b"\x00" + e for e in snp]


def _sample(data: bytes) -> None:
    evidence = _json(data)
    if evidence is _SKIP:
        return
    ctx = VerifyContext(now=_seeds.FALLBACK_NOW, anchors=_seeds.anchors())
    SampleVerifier().verify(evidence, ctx)


def _sample_seeds() -> list[bytes]:
    report_data = base64.b64encode(bytes(48)).decode()
    return [
        msgspec.json.encode({"svn": "1", "report_data": report_data}),
        msgspec.json.encode({"svn": 2, "report_data": report_data, "measurement": "ab"}),
        msgspec.json.encode({"svn": "1", "report_data": "", "debug": True}),
    ]


# -- keys and tokens ---------------------------------------------------------------------------


@cache
def _keypairs() -> dict[str, ClientKeyPair]:
    return {kind: ClientKeyPair.generate(kind) for kind in KEY_KINDS}


def _unwrap(data: bytes) -> None:
    # First byte: which key pair (one per kind); the rest is the envelope JSON.
    if not data:
        return
    envelope = _json(data[1:])
    if not isinstance(envelope, dict):
        return
    pairs = list(_keypairs().values())
    unwrap(envelope, pairs[data[0] % len(pairs)], context=CONTEXT)


def _unwrap_seeds() -> list[bytes]:
    out = []
    for index, pair in enumerate(_keypairs().values()):
        wrapped = wrap(pair.public_jwk(), b"k" * 32, context=CONTEXT)
        out.append(bytes([index]) + msgspec.json.encode(wrapped.envelope))
    return out


def _wrap(data: bytes) -> None:
    # The tee-pubkey JWK comes from the attester: any JSON object it sends.
    jwk = _json(data)
    if isinstance(jwk, dict):
        wrap(jwk, b"k" * 32, context=CONTEXT)


def _wrap_seeds() -> list[bytes]:
    return [msgspec.json.encode(p.public_jwk()) for p in _keypairs().values()]


@cache
def _token_key() -> TokenKey:
    return TokenKey.generate()


def _jwt(data: bytes) -> None:
    verify(_token_key(), data.decode("latin-1"), issuer=ISSUER, now=TOKEN_NOW)


def _jwt_seeds() -> list[bytes]:
    token, _ = issue(
        _token_key(),
        issuer=ISSUER,
        tee="sample",
        claims={"svn": 1},
        flags={"debug": False},
        tee_pubkey=_keypairs()["p256"].public_jwk(),
        policy_digest="sha256:00",
        evidence_digest="sha256:00",
        now=TOKEN_NOW,
        ttl_seconds=300,
    )
    return [token.encode(), b"eyJhbGciOiJub25lIn0.e30."]


# -- KBS wire ----------------------------------------------------------------------------------

_WIRE_KINDS: tuple[type[msgspec.Struct], ...] = (kbs.AuthRequest, kbs.AttestRequest)


def _kbs_wire(data: bytes) -> None:
    # First byte: which request body; the rest is what the client sent.
    if not data:
        return
    kind = _WIRE_KINDS[data[0] % len(_WIRE_KINDS)]
    request = kbs.decode(data[1:], kind)
    if isinstance(request, kbs.AuthRequest):
        kbs.check_version(request.version)


def _kbs_wire_seeds() -> list[bytes]:
    attest = {
        "runtime-data": {"nonce": "bm9uY2U=", "tee-pubkey": {"kty": "EC"}},
        "tee-evidence": {"primary_evidence": {"svn": "1"}, "additional_evidence": ""},
    }
    return [
        b"\x00" + msgspec.json.encode({"version": "0.4.0", "tee": "sample"}),
        b"\x01" + msgspec.json.encode(attest),
    ]


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("snp", _snp, _snp_seeds),
        Target("dcap", _dcap, _dcap_seeds),
        Target("dcap-collateral", _dcap_collateral_target, _dcap_collateral_seeds),
        Target("nitro", _nitro, lambda: _seeds.files("nitro", "*.cbor")),
        Target("azure-vtpm", _azure, _azure_seeds),
        Target("sample", _sample, _sample_seeds),
        Target("unwrap", _unwrap, _unwrap_seeds),
        Target("wrap", _wrap, _wrap_seeds),
        Target("jwt", _jwt, _jwt_seeds),
        Target("kbs-wire", _kbs_wire, _kbs_wire_seeds),
    )
}


def one_input(target: Target) -> Callable[[bytes], None]:
    """The libFuzzer entry point: BrokerError is a pass, anything else a crash."""

    def test_one_input(data: bytes) -> None:
        try:
            target.run(data)
        except BrokerError:
            return

    return test_one_input
