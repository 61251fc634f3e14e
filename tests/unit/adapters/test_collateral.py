"""Collateral sources: request keys, the file cache, and the online source on a local stub."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import ClientSession, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from broker.adapters.collateral import (
    CachedCollateral,
    EvidenceSuppliedCollateral,
    check_dcap_fresh,
)
from broker.adapters.collateral_online import OnlineCollateral
from broker.adapters.collateral_pcs import crl_der, raw_members, signed_member
from broker.errors import BackendError, CollateralError
from broker.evidence.collateral import CollateralRequest
from broker.evidence.dcap import verify_quote
from broker.evidence.model import TrustAnchors
from tests.fakes import FakeClock
from tests.vectors import expected, parse_time, read_bytes, requires_evidence

NOW = datetime(2025, 7, 4, 10, 0, tzinfo=UTC)
CHIP_ID = bytes(range(64))
MILAN_TCB = bytes([3, 0, 0, 0, 0, 0, 8, 115])  # bootloader 3, tee 0, snp 8, microcode 115
TURIN_TCB = bytes([1, 2, 3, 4, 0, 0, 0, 71])  # fmc 1, bootloader 2, tee 3, snp 4, microcode 71
FMSPC = bytes.fromhex("00806f050000")


# --- Test material, generated here --------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert_der(cn: str = "test VCEK") -> bytes:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=365))
        .sign(key, hashes.SHA384())
    )
    return cert.public_bytes(Encoding.DER)


def make_crl_der(next_update: datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(_name("test CA"))
        .last_update(NOW - timedelta(days=1))
        .next_update(next_update)
        .sign(key, hashes.SHA256())
    )
    return crl.public_bytes(Encoding.DER)


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_dcap_json(*, next_update: datetime = NOW + timedelta(days=30)) -> bytes:
    """Structurally valid QuoteCollateralV3 JSON (not Intel-signed)."""
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    dates = {"issueDate": _iso(NOW - timedelta(days=1)), "nextUpdate": _iso(next_update)}
    return json.dumps(
        {
            "pck_crl_issuer_chain": pem,
            "root_ca_crl": make_crl_der(NOW + timedelta(days=60)).hex(),
            "pck_crl": make_crl_der(NOW + timedelta(days=60)).hex(),
            "tcb_info_issuer_chain": pem,
            "tcb_info": json.dumps({"id": "TDX", "version": 3, **dates}),
            "tcb_info_signature": "00" * 64,
            "qe_identity_issuer_chain": pem,
            "qe_identity": json.dumps({"id": "TD_QE", "version": 2, **dates}),
            "qe_identity_signature": "00" * 64,
        }
    ).encode()


def snp_request(product: str = "Milan", tcb: bytes = MILAN_TCB) -> CollateralRequest:
    return CollateralRequest.for_snp(CHIP_ID, tcb, product)


def dcap_request(tee: str = "tdx") -> CollateralRequest:
    return CollateralRequest.for_dcap(tee, FMSPC, "processor")


class RecordingSource:
    """An upstream that answers from a dict and counts its calls."""

    def __init__(self, answer: Mapping[str, bytes] | Exception) -> None:
        self.answer = answer
        self.calls: list[CollateralRequest] = []

    async def fetch(self, req: CollateralRequest) -> Mapping[str, bytes]:
        self.calls.append(req)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def snp_path(root: Path, req: CollateralRequest) -> Path:
    return root / "sev-snp" / req.product / f"{req.chip_id}-{req.reported_tcb}.der"


def dcap_path(root: Path, req: CollateralRequest) -> Path:
    return root / "dcap" / req.tee / f"{req.fmspc}-{req.ca}.json"


def put(path: Path, data: bytes, *, mtime: datetime = NOW) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime.timestamp(), mtime.timestamp()))


def cache(tmp_path: Path, upstream: Any = None, max_age: timedelta = timedelta(days=1)) -> Any:
    return CachedCollateral(tmp_path, max_age=max_age, upstream=upstream, clock=FakeClock(NOW))


# --- CollateralRequest ------------------------------------------------------------------


def test_request_keys_are_normalised_hex() -> None:
    """Hex keys are lower-cased; the entry key joins them."""
    req = CollateralRequest("sev-snp", chip_id="AB" * 64, reported_tcb="0A" * 8, product="Genoa")
    assert req.chip_id == "ab" * 64
    assert req.key == f"{'ab' * 64}-{'0a' * 8}"
    assert dcap_request().key == "00806f050000-processor"


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "tee": "sev-snp",
            "chip_id": "../" * 42 + "aa",
            "reported_tcb": "00" * 8,
            "product": "Milan",
        },
        {"tee": "sev-snp", "chip_id": "00" * 64, "reported_tcb": "../../etc/", "product": "Milan"},
        {"tee": "sev-snp", "chip_id": "00" * 64, "reported_tcb": "00" * 8, "product": "../x"},
        {"tee": "sev-snp", "chip_id": "00" * 63, "reported_tcb": "00" * 8, "product": "Milan"},
        {"tee": "tdx", "fmspc": "../../etc", "ca": "processor"},
        {"tee": "tdx", "fmspc": "00806f05000g", "ca": "processor"},
        {"tee": "sgx", "fmspc": "00806f050000", "ca": "../platform"},
        {"tee": "tdx", "fmspc": "00806f050000", "ca": "processor", "product": "Milan"},
        {"tee": "../sev-snp", "fmspc": "00806f050000", "ca": "processor"},
    ],
)
def test_request_refuses_path_traversal_and_malformed_keys(kwargs: dict[str, str]) -> None:
    """Keys that are not exact-length hex (or a known name) never reach a path or URL."""
    with pytest.raises(CollateralError):
        CollateralRequest(**kwargs)


async def test_evidence_supplied_source_returns_nothing() -> None:
    """The evidence-supplied source leaves the verifier to the evidence's own VCEK/PCK chain."""
    assert await EvidenceSuppliedCollateral().fetch(snp_request()) == {}


# --- CachedCollateral -------------------------------------------------------------------


async def test_cache_hit_serves_file_without_upstream(tmp_path: Path) -> None:
    """A cached VCEK and fresh DCAP collateral are served from disk."""
    vcek, dcap = make_cert_der(), make_dcap_json()
    put(snp_path(tmp_path, snp_request()), vcek)
    put(dcap_path(tmp_path, dcap_request()), dcap)
    upstream = RecordingSource(BackendError("must not be called"))
    source = cache(tmp_path, upstream)
    assert await source.fetch(snp_request()) == {"vcek": vcek}
    assert await source.fetch(dcap_request()) == {"dcap": dcap}
    assert upstream.calls == []


async def test_cache_miss_without_upstream_is_collateral_error(tmp_path: Path) -> None:
    """No file and no upstream: the collateral is missing."""
    with pytest.raises(CollateralError, match="no cached"):
        await cache(tmp_path).fetch(snp_request())


async def test_cache_miss_asks_upstream_and_writes(tmp_path: Path) -> None:
    """A miss goes upstream once; the answer is written and then served from disk."""
    vcek = make_cert_der()
    upstream = RecordingSource({"vcek": vcek})
    source = cache(tmp_path, upstream)
    assert await source.fetch(snp_request()) == {"vcek": vcek}
    assert snp_path(tmp_path, snp_request()).read_bytes() == vcek
    assert await source.fetch(snp_request()) == {"vcek": vcek}
    assert len(upstream.calls) == 1
    assert [p.name for p in snp_path(tmp_path, snp_request()).parent.iterdir()] == [
        snp_path(tmp_path, snp_request()).name
    ]


async def test_tdx_and_sgx_entries_do_not_collide(tmp_path: Path) -> None:
    """One FMSPC has separate TDX and SGX collateral."""
    tdx, sgx = make_dcap_json(), make_dcap_json(next_update=NOW + timedelta(days=9))
    source = cache(tmp_path, RecordingSource({"dcap": tdx}))
    await source.fetch(dcap_request("tdx"))
    source = cache(tmp_path, RecordingSource({"dcap": sgx}))
    assert await source.fetch(dcap_request("sgx")) == {"dcap": sgx}
    assert dcap_path(tmp_path, dcap_request("tdx")).read_bytes() == tdx


async def test_stale_dcap_next_update_is_collateral_error(tmp_path: Path) -> None:
    """Cached DCAP collateral past its tcbInfo nextUpdate is refused, not served."""
    put(dcap_path(tmp_path, dcap_request()), make_dcap_json(next_update=NOW - timedelta(hours=1)))
    with pytest.raises(CollateralError, match="stale"):
        await cache(tmp_path).fetch(dcap_request())


async def test_stale_dcap_file_age_is_collateral_error(tmp_path: Path) -> None:
    """Cached DCAP collateral older than max_age is refused even if nextUpdate is ahead."""
    put(dcap_path(tmp_path, dcap_request()), make_dcap_json(), mtime=NOW - timedelta(days=2))
    with pytest.raises(CollateralError, match="max_age"):
        await cache(tmp_path, max_age=timedelta(days=1)).fetch(dcap_request())


async def test_stale_crl_is_collateral_error() -> None:
    """A CRL past its nextUpdate makes the whole collateral stale."""
    doc = json.loads(make_dcap_json())
    doc["pck_crl"] = make_crl_der(NOW - timedelta(minutes=1)).hex()
    with pytest.raises(CollateralError, match="PCK CRL is stale"):
        check_dcap_fresh(json.dumps(doc).encode(), now=NOW)


async def test_stale_dcap_is_refreshed_from_upstream(tmp_path: Path) -> None:
    """With an upstream, stale collateral is replaced by a fresh answer."""
    path = dcap_path(tmp_path, dcap_request())
    put(path, make_dcap_json(), mtime=NOW - timedelta(days=3))
    fresh = make_dcap_json(next_update=NOW + timedelta(days=5))
    assert await cache(tmp_path, RecordingSource({"dcap": fresh})).fetch(dcap_request()) == {
        "dcap": fresh
    }
    assert path.read_bytes() == fresh
    assert datetime.fromtimestamp(path.stat().st_mtime, UTC) == NOW


async def test_stale_upstream_answer_is_refused_and_not_written(tmp_path: Path) -> None:
    """An upstream answer that is already stale is an error and never cached."""
    stale = make_dcap_json(next_update=NOW - timedelta(seconds=1))
    with pytest.raises(CollateralError, match="stale"):
        await cache(tmp_path, RecordingSource({"dcap": stale})).fetch(dcap_request())
    assert not dcap_path(tmp_path, dcap_request()).exists()


async def test_upstream_without_the_document_is_collateral_error(tmp_path: Path) -> None:
    """An upstream that answers with the wrong key does not satisfy the request."""
    with pytest.raises(CollateralError, match="no 'vcek'"):
        await cache(tmp_path, RecordingSource({"dcap": b"{}"})).fetch(snp_request())


async def test_upstream_errors_propagate_unchanged(tmp_path: Path) -> None:
    """BackendError from upstream reaches the caller; nothing is written."""
    with pytest.raises(BackendError):
        await cache(tmp_path, RecordingSource(BackendError("down"))).fetch(snp_request())
    assert not (tmp_path / "sev-snp").exists()


async def test_malformed_cached_vcek_is_collateral_error(tmp_path: Path) -> None:
    """A cache file that is not a certificate is refused."""
    put(snp_path(tmp_path, snp_request()), b"not a certificate")
    with pytest.raises(CollateralError, match="not a DER certificate"):
        await cache(tmp_path).fetch(snp_request())


async def test_atomic_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while writing leaves neither the entry nor a temporary file."""

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(BackendError, match="No space left"):
        await cache(tmp_path, RecordingSource({"vcek": make_cert_der()})).fetch(snp_request())
    folder = snp_path(tmp_path, snp_request()).parent
    assert list(folder.iterdir()) == []


async def test_atomic_write_keeps_old_entry_when_rename_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename fails, the previous entry is intact and no temporary file remains."""
    path = dcap_path(tmp_path, dcap_request())
    old = make_dcap_json()
    put(path, old, mtime=NOW - timedelta(days=3))

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(BackendError):
        await cache(tmp_path, RecordingSource({"dcap": make_dcap_json()})).fetch(dcap_request())
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == [path.name]


# --- OnlineCollateral against a local stub ------------------------------------------------


class Stub:
    """A canned-answer HTTP server on 127.0.0.1 that records what it was asked."""

    def __init__(self) -> None:
        self.routes: dict[str, Any] = {}
        self.hits: list[web.Request] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(request)
        answer = self.routes.get(request.path)
        if answer is None:
            return web.Response(status=404)
        if callable(answer):
            result: web.StreamResponse = await answer(request)
            return result
        status, headers, body = answer
        return web.Response(status=status, headers=headers, body=body)


@pytest.fixture
async def stub(aiohttp_server: Any) -> tuple[Stub, str]:
    state = Stub()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", state.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    return state, str(server.make_url("")).rstrip("/")


def online(base: str, **kwargs: Any) -> OnlineCollateral:
    options: dict[str, Any] = {
        "amd_kds_url": base + "/kds",
        "intel_pcs_url": base + "/pcs",
        "intel_root_crl_url": base + "/root.crl",
        "timeout": 2.0,
        "attempts": 3,
        "backoff": 0.0,
        **kwargs,
    }
    return OnlineCollateral(ClientSession, **options)


async def test_online_vcek_query_names_chip_and_tcb(stub: tuple[Stub, str]) -> None:
    """The KDS request carries the product, the hwID and each SPL of REPORTED_TCB."""
    state, base = stub
    vcek = make_cert_der()
    state.routes[f"/kds/vcek/v1/Milan/{CHIP_ID.hex()}"] = (200, {}, vcek)
    async with online(base) as source:
        assert await source.fetch(snp_request()) == {"vcek": vcek}
    assert dict(state.hits[0].query) == {
        "blSPL": "3",
        "teeSPL": "0",
        "snpSPL": "8",
        "ucodeSPL": "115",
    }


async def test_online_turin_vcek_uses_short_hwid_and_fmc(stub: tuple[Stub, str]) -> None:
    """Turin VCEKs are keyed by the first 8 CHIP_ID bytes and include fmcSPL."""
    state, base = stub
    state.routes[f"/kds/vcek/v1/Turin/{CHIP_ID[:8].hex()}"] = (200, {}, make_cert_der())
    async with online(base) as source:
        await source.fetch(snp_request("Turin", TURIN_TCB))
    assert dict(state.hits[0].query) == {
        "blSPL": "2",
        "teeSPL": "3",
        "snpSPL": "4",
        "ucodeSPL": "71",
        "fmcSPL": "1",
    }


async def test_online_500_is_backend_error_after_bounded_retries(stub: tuple[Stub, str]) -> None:
    """A failing upstream is tried exactly `attempts` times, then BackendError."""
    state, base = stub
    state.routes[f"/kds/vcek/v1/Milan/{CHIP_ID.hex()}"] = (500, {}, b"")
    async with online(base, attempts=3) as source:
        with pytest.raises(BackendError, match="after 3 attempts"):
            await source.fetch(snp_request())
    assert len(state.hits) == 3


async def test_online_429_then_success_is_retried(stub: tuple[Stub, str]) -> None:
    """Rate limiting is transient: the next attempt's answer is used."""
    state, base = stub
    vcek = make_cert_der()
    answers = [web.Response(status=429), web.Response(body=vcek)]

    async def flaky(request: web.Request) -> web.Response:
        return answers.pop(0)

    state.routes[f"/kds/vcek/v1/Milan/{CHIP_ID.hex()}"] = flaky
    async with online(base) as source:
        assert await source.fetch(snp_request()) == {"vcek": vcek}
    assert len(state.hits) == 2


async def test_online_404_is_collateral_error_without_retry(stub: tuple[Stub, str]) -> None:
    """Unknown chip or FMSPC: CollateralError at once, no retries."""
    state, base = stub
    async with online(base) as source:
        with pytest.raises(CollateralError, match="HTTP 404"):
            await source.fetch(snp_request())
        with pytest.raises(CollateralError, match="HTTP 404"):
            await source.fetch(dcap_request())
    assert len(state.hits) == 2


async def test_online_redirect_is_not_followed(stub: tuple[Stub, str]) -> None:
    """A redirect is a BackendError; the client does not follow it."""
    state, base = stub
    state.routes[f"/kds/vcek/v1/Milan/{CHIP_ID.hex()}"] = (302, {"Location": "/elsewhere"}, b"")
    async with online(base) as source:
        with pytest.raises(BackendError, match="HTTP 302"):
            await source.fetch(snp_request())
    assert [r.path for r in state.hits] == [f"/kds/vcek/v1/Milan/{CHIP_ID.hex()}"]


async def test_online_timeout_is_backend_error(stub: tuple[Stub, str]) -> None:
    """A hanging upstream hits the explicit timeout on every attempt."""
    state, base = stub

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()

    state.routes[f"/kds/vcek/v1/Milan/{CHIP_ID.hex()}"] = hang
    async with online(base, timeout=0.2, attempts=2) as source:
        with pytest.raises(BackendError, match="after 2 attempts"):
            await source.fetch(snp_request())
    assert len(state.hits) == 2


async def test_online_oversized_answer_is_refused(stub: tuple[Stub, str]) -> None:
    """Answers above the byte limit are refused, not buffered."""
    state, base = stub
    state.routes[f"/kds/vcek/v1/Milan/{CHIP_ID.hex()}"] = (200, {}, b"\x30" * 5000)
    async with online(base, max_response_bytes=4096) as source:
        with pytest.raises(CollateralError, match="larger than"):
            await source.fetch(snp_request())


async def test_online_non_certificate_vcek_is_collateral_error(stub: tuple[Stub, str]) -> None:
    """A 200 answer that is not a certificate is not passed on."""
    state, base = stub
    state.routes[f"/kds/vcek/v1/Milan/{CHIP_ID.hex()}"] = (200, {}, b"<html>maintenance</html>")
    async with online(base) as source:
        with pytest.raises(CollateralError, match="not a DER certificate"):
            await source.fetch(snp_request())


def _pcs_routes(vector: dict[str, str], tee: str, fmspc: str) -> dict[str, Any]:
    """PCS v4 answers rebuilt from a vector's collateral parts (served, not stored)."""

    def chain_header(name: str, pem: str) -> dict[str, str]:
        return {name: quote(pem, safe="")}

    tcb_body = f'{{"tcbInfo":{vector["tcb_info"]},"signature":"{vector["tcb_info_signature"]}"}}'
    qe_body = (
        f'{{"enclaveIdentity":{vector["qe_identity"]},'
        f'"signature":"{vector["qe_identity_signature"]}"}}'
    )
    return {
        f"/pcs/{tee}/certification/v4/tcb": (
            200,
            chain_header("TCB-Info-Issuer-Chain", vector["tcb_info_issuer_chain"]),
            tcb_body.encode(),
        ),
        f"/pcs/{tee}/certification/v4/qe/identity": (
            200,
            chain_header("SGX-Enclave-Identity-Issuer-Chain", vector["qe_identity_issuer_chain"]),
            qe_body.encode(),
        ),
        "/pcs/sgx/certification/v4/pckcrl": (
            200,
            chain_header("SGX-PCK-CRL-Issuer-Chain", vector["pck_crl_issuer_chain"]),
            bytes.fromhex(vector["pck_crl"]),
        ),
        # PCCS-style hex text: the adapter must accept it as well as DER.
        "/root.crl": (200, {}, vector["root_ca_crl"].encode()),
    }


@requires_evidence
async def test_online_dcap_assembles_collateral_the_verifier_accepts(
    stub: tuple[Stub, str],
) -> None:
    """PCS answers built from real Intel-signed parts assemble into collateral that verifies."""
    state, base = stub
    vector_id = "dcapqvl-tdx-uptodate"
    parts = json.loads(read_bytes("tdx", f"{vector_id}.collateral.json"))
    quote = read_bytes("tdx", f"{vector_id}.quote.bin")
    state.routes.update(_pcs_routes(parts, "tdx", "00806f050000"))
    async with online(base) as source:
        answer = await source.fetch(dcap_request("tdx"))
    assembled = json.loads(answer["dcap"])
    assert assembled == parts  # tcb_info and qe_identity byte for byte
    tcb_hit = next(r for r in state.hits if r.path.endswith("/tcb"))
    assert tcb_hit.query["fmspc"] == "00806F050000"
    crl_hit = next(r for r in state.hits if r.path.endswith("/pckcrl"))
    assert dict(crl_hit.query) == {"ca": "processor", "encoding": "der"}
    anchors = TrustAnchors({"intel-sgx-root-ca": read_bytes("roots", "intel-sgx-root-ca.pem")})
    now = parse_time(expected("tdx", vector_id)["verification_time"])
    result = verify_quote(quote, answer["dcap"], anchors=anchors, now=now, tee="tdx")
    assert result.claims["tcb_status"] == "UpToDate"


async def test_online_dcap_missing_issuer_header_is_collateral_error(
    stub: tuple[Stub, str],
) -> None:
    """An answer without its issuer chain header cannot make collateral."""
    state, base = stub
    body = b'{"tcbInfo":{"id":"TDX"},"signature":"00"}'
    state.routes["/pcs/tdx/certification/v4/tcb"] = (200, {}, body)
    state.routes["/pcs/tdx/certification/v4/qe/identity"] = (200, {}, body)
    state.routes["/pcs/sgx/certification/v4/pckcrl"] = (200, {}, make_crl_der(NOW))
    state.routes["/root.crl"] = (200, {}, make_crl_der(NOW))
    async with online(base) as source:
        with pytest.raises(CollateralError):
            await source.fetch(dcap_request("tdx"))


# --- raw_members ----------------------------------------------------------------------------


@given(st.text(max_size=200))
def test_raw_members_raises_only_collateral_error(text: str) -> None:
    """Arbitrary text either splits into members or raises CollateralError."""
    with contextlib.suppress(CollateralError):
        raw_members(text)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=8), _JSON, max_size=5), st.sampled_from([None, 1]))
def test_raw_members_returns_exact_member_text(doc: dict[str, Any], indent: int | None) -> None:
    """Each member's text is the exact source slice and decodes to the member's value."""
    text = json.dumps(doc, indent=indent)
    members = raw_members(text)
    assert {k: json.loads(v) for k, v in members.items()} == doc
    assert all(v in text for v in members.values())


@given(st.binary(max_size=300))
def test_pcs_answer_parsers_raise_only_collateral_error(data: bytes) -> None:
    """Arbitrary PCS bodies yield a part or CollateralError, never another exception."""
    with contextlib.suppress(CollateralError):
        signed_member(data, "tcbInfo", "TCB Info")
    with contextlib.suppress(CollateralError):
        crl_der(data, "PCK CRL")


async def test_oversized_cache_entry_is_refused(tmp_path: Path) -> None:
    """A cache file above the size limit is not served."""
    put(dcap_path(tmp_path, dcap_request()), b" " * (600 * 1024))
    with pytest.raises(CollateralError, match="too large"):
        await cache(tmp_path).fetch(dcap_request())
