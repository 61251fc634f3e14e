"""Collateral sources: the endorsements a verifier needs, as bytes.

    source = CachedCollateral(Path("/var/lib/broker/collateral"), max_age=timedelta(days=1))
    collateral = await source.fetch(CollateralRequest.for_snp(chip_id, reported_tcb, "Milan"))
    ctx = VerifyContext(now=now, anchors=anchors, collateral=collateral)

A source answers with the mapping ``VerifyContext.collateral`` expects:
``{"vcek": <DER>}`` for SEV-SNP, ``{"dcap": <QuoteCollateralV3 JSON bytes>}``
for TDX and SGX. Sources never verify signatures: the verifier does, with the
pinned roots. The cache only refuses to serve what it can tell is out of date.

Cache layout (hex keys in lower case)::

    <dir>/sev-snp/<product>/<chip_id>-<reported_tcb>.der
    <dir>/dcap/<tee>/<fmspc>-<ca>.json

The DCAP entries are kept per TEE because a TDX host has one FMSPC but two
different TCB Infos (``"id": "TDX"`` and ``"id": "SGX"``) under it.

``CollateralRequest`` lives in the pure core (``broker.evidence.collateral``,
beside ``collateral_request``, which derives one from evidence); it is
imported here for the callers of this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from broker.errors import BackendError, CollateralError
from broker.evidence.collateral import DCAP_TEES, SNP_PRODUCTS, CollateralRequest
from broker.evidence.dcap_collateral import MAX_COLLATERAL_SIZE, Collateral, parse_time
from broker.ports import Clock, CollateralSource

__all__ = [
    "DCAP_TEES",
    "SNP_PRODUCTS",
    "CachedCollateral",
    "CollateralRequest",
    "CollateralSource",
    "EvidenceSuppliedCollateral",
    "SystemClock",
    "check_dcap_fresh",
    "check_vcek",
    "write_atomic",
]

MAX_VCEK_SIZE = 16 * 1024


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class EvidenceSuppliedCollateral:
    """For guests whose evidence carries its own VCEK or PCK chain and collateral."""

    async def fetch(self, req: CollateralRequest) -> Mapping[str, bytes]:
        return {}


# --- Checks shared by the cache and the online source ---------------------------


def check_vcek(der: bytes) -> None:
    """A DER certificate of sane size; the verifier checks what it says."""
    if not 0 < len(der) <= MAX_VCEK_SIZE:
        raise CollateralError(f"VCEK of {len(der)} bytes is out of range")
    with warnings.catch_warnings():
        # AMD issues VCEKs with serial number 0, which cryptography warns about.
        warnings.simplefilter("ignore")
        try:
            x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise CollateralError("VCEK is not a DER certificate") from exc


def check_dcap_fresh(raw: bytes, *, now: datetime) -> None:
    """Refuses QuoteCollateralV3 JSON of which any part is past its nextUpdate.

    Stale collateral is an error, never a warning: a verifier fed stale TCB
    levels or CRLs would miss a revocation.
    """
    doc = Collateral.from_json(raw)
    for what, text in (("TCB Info", doc.tcb_info), ("QE Identity", doc.qe_identity)):
        next_update = parse_time(_json_field(text, "nextUpdate", what), what)
        if now > next_update:
            raise CollateralError(f"{what} is stale: nextUpdate {next_update.isoformat()}")
    for what, der in (("root CA CRL", doc.root_ca_crl), ("PCK CRL", doc.pck_crl)):
        try:
            crl_next = x509.load_der_x509_crl(der).next_update_utc
        except ValueError as exc:
            raise CollateralError(f"{what} is not DER") from exc
        if crl_next is None or now > crl_next:
            raise CollateralError(f"{what} is stale or has no nextUpdate")


def _json_field(text: str, name: str, what: str) -> object:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CollateralError(f"{what} is not JSON") from exc
    if not isinstance(doc, dict):
        raise CollateralError(f"{what} is not a JSON object")
    return doc.get(name)


# --- The file cache ---------------------------------------------------------------


class CachedCollateral:
    """Collateral files under ``directory``, filled from ``upstream`` on a miss.

    SEV-SNP VCEKs do not age: a VCEK names one chip at one TCB and the
    verifier checks its validity period. DCAP collateral older than
    ``max_age`` (by file time) or past a nextUpdate is stale: it is fetched
    again when ``upstream`` is set, and otherwise refused. Answers from
    ``upstream`` are checked the same way before they are written, atomically
    (temporary file, fsync, rename), so a reader never sees half a file.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_age: timedelta,
        upstream: CollateralSource | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._dir = Path(directory)
        self._max_age = max_age
        self._upstream = upstream
        self._clock: Clock = clock or SystemClock()

    async def fetch(self, req: CollateralRequest) -> Mapping[str, bytes]:
        path, name = self._entry(req)
        now = self._clock.now()
        try:
            cached = await asyncio.to_thread(_read_entry, path, now)
        except FileNotFoundError:
            cached = None
        except OSError as exc:
            raise BackendError(
                f"cannot read collateral cache entry {req.key}: {exc.strerror}"
            ) from None
        if cached is not None:
            data, age = cached
            try:
                self._check(req, data, now=now, age=age)
            except CollateralError:
                if self._upstream is None:
                    raise
            else:
                return {name: data}
        if self._upstream is None:
            raise CollateralError(f"no cached {req.tee} collateral for {req.key}")
        return {name: await self._refresh(self._upstream, req, path, name, now)}

    async def _refresh(
        self,
        upstream: CollateralSource,
        req: CollateralRequest,
        path: Path,
        name: str,
        now: datetime,
    ) -> bytes:
        answer = await upstream.fetch(req)
        data = answer.get(name)
        if data is None:
            raise CollateralError(f"upstream has no {name!r} collateral for {req.key}")
        self._check(req, data, now=now, age=timedelta(0))
        try:
            await asyncio.to_thread(write_atomic, path, data, now)
        except OSError as exc:
            raise BackendError(
                f"cannot write collateral cache entry {req.key}: {exc.strerror}", retryable=False
            ) from None
        return data

    def _entry(self, req: CollateralRequest) -> tuple[Path, str]:
        if req.tee == "sev-snp":
            path, name = self._dir / "sev-snp" / req.product / f"{req.key}.der", "vcek"
        else:
            path, name = self._dir / "dcap" / req.tee / f"{req.key}.json", "dcap"
        # Belt and braces: CollateralRequest already admits only hex keys.
        if not path.resolve().is_relative_to(self._dir.resolve()):
            raise CollateralError("collateral cache entry escapes the cache directory")
        return path, name

    def _check(self, req: CollateralRequest, data: bytes, *, now: datetime, age: timedelta) -> None:
        if req.tee == "sev-snp":
            check_vcek(data)
            return
        if age > self._max_age:
            raise CollateralError(
                f"cached {req.tee} collateral for {req.key} is older than max_age"
            )
        check_dcap_fresh(data, now=now)


def _read_entry(path: Path, now: datetime) -> tuple[bytes, timedelta]:
    # One byte past the limit is enough for the size checks in _check to refuse it.
    with path.open("rb") as f:
        stat = os.fstat(f.fileno())
        data = f.read(MAX_COLLATERAL_SIZE + 1)
    modified = datetime.fromtimestamp(stat.st_mtime, UTC)
    return data, now - modified


def write_atomic(path: Path, data: bytes, mtime: datetime) -> None:
    """Writes ``data`` to ``path`` via a temporary file and rename; on any
    failure the temporary file is removed and ``path`` is left as it was.
    The file time is set to ``mtime`` so that ages follow the injected clock."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        stamp = mtime.timestamp()
        os.utime(tmp, (stamp, stamp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
