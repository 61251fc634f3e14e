"""``verify``: verifications per second per TEE on the real vectors, against signature floors.

Each vector is verified through the registry, exactly as the KBS path does it
(``get_verifier(tee).verify(evidence, VerifyContext(...))``), at the vector's
``verification_time``. The floor is the raw signature verify the TEE's
evidence is built on; the ratio says how many of those one verification costs.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2
import dcap_qvl  # type: ignore[import-untyped,unused-ignore]
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bench import floors
from bench.common import Budget, Result, compare, evidence_dir
from broker.evidence import get_verifier, pinned_anchors
from broker.evidence.model import VerifyContext

TEE_DIRS = ("sev-snp", "tdx", "sgx", "nitro", "azure-vtpm")
# Signatures our own DCAP verifier checks per quote (broker/evidence/dcap*.py):
# PCK chain 2, QE report 1, quote 1, root CA CRL 1, TCB Info chain+CRL+signature 3,
# QE Identity 3, PCK CRL issuer chain 1, intermediate-CA and PCK revocation CRLs 2.
DCAP_OWN_SIGNATURES = 14
# SNP: ARK self-signature, ASK (or ASVK) <- ARK, VEK <- ASK, all RSA-4096 PSS.
SNP_CHAIN_SIGNATURES = 3

COLUMNS = [
    "tee",
    "vectors",
    "verif/s",
    "ms/verif",
    "floor op",
    "floor ops/s",
    "ratio",
    "sigs assumed",
    "sig work %",
    "dcap-qvl %",
]


@dataclass(frozen=True, slots=True)
class Vector:
    tee: str
    vid: str
    evidence: Any
    ctx: VerifyContext
    # Raw signature verifies by primitive name, as the verifier's code performs them.
    signatures: dict[str, int]
    dcap: tuple[bytes, bytes] | None  # (quote, collateral) for the dcap-qvl share


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _read(root: Path, tee_dir: str, name: str) -> bytes:
    return (root / tee_dir / name).read_bytes()


def kbs_evidence(
    root: Path, tee_dir: str, files: dict[str, str]
) -> tuple[str, Any, dict[str, bytes]]:
    """(tee, primary_evidence JSON, collateral) as a guest and the broker would hand them over."""
    if tee_dir == "sev-snp":
        vek = files.get("vcek") or files["vlek"]
        report, cert = _read(root, tee_dir, files["report"]), _read(root, tee_dir, vek)
        return "sev-snp", {"report": _b64(report), "vcek": _b64(cert)}, {}
    if tee_dir in ("tdx", "sgx"):
        return (
            tee_dir,
            {"quote": _b64(_read(root, tee_dir, files["quote"]))},
            {"dcap": _read(root, tee_dir, files["collateral"])},
        )
    if tee_dir == "nitro":
        document = _read(root, tee_dir, files["document"])
        return "nitro", {"attestation_document": _b64(document)}, {}
    evidence = json.loads(_read(root, tee_dir, files["evidence"]))
    if "collateral" in files:
        return "az-tdx-vtpm", evidence, {"dcap": _read(root, tee_dir, files["collateral"])}
    return "az-snp-vtpm", evidence, {}


def _nitro_cabundle_len(document_b64: str) -> int:
    cose = cbor2.loads(base64.b64decode(document_b64))
    if isinstance(cose, cbor2.CBORTag):
        cose = cose.value
    return len(cbor2.loads(cose[2])["cabundle"])


def _signatures(tee: str, evidence: Any) -> dict[str, int]:
    snp = {"P-384": 1, "RSA-4096-PSS": SNP_CHAIN_SIGNATURES}
    if tee == "sev-snp":
        return snp
    if tee == "nitro":
        # root self-signature + one per cabundle link down to the leaf + the COSE_Sign1.
        return {"P-384": _nitro_cabundle_len(evidence["attestation_document"]) + 2}
    if tee in ("tdx", "sgx"):
        return {"P-256": DCAP_OWN_SIGNATURES}
    if tee == "az-snp-vtpm":
        return {**snp, "RSA-2048-PKCS1": 1}
    return {"P-256": DCAP_OWN_SIGNATURES, "RSA-2048-PKCS1": 1}


def _dcap_inputs(
    tee: str, evidence: Any, collateral: dict[str, bytes]
) -> tuple[bytes, bytes] | None:
    if tee in ("tdx", "sgx"):
        return base64.b64decode(evidence["quote"]), collateral["dcap"]
    if tee == "az-tdx-vtpm":
        quote = evidence["td_quote"] if isinstance(evidence, dict) else None
        if isinstance(quote, str):
            return base64.urlsafe_b64decode(quote + "=" * (-len(quote) % 4)), collateral["dcap"]
    return None


def load_vectors(root: Path, result: Result) -> dict[str, list[Vector]]:
    """Every positive vector that verifies once, grouped by canonical TEE name."""
    anchors = pinned_anchors()
    groups: dict[str, list[Vector]] = {}
    for tee_dir in TEE_DIRS:
        folder = root / tee_dir
        if not folder.is_dir():
            result.notes.append(f"{tee_dir}: no vectors at {folder}, skipped")
            continue
        for path in sorted(folder.glob("*.expected.json")):
            vid = path.name.removesuffix(".expected.json")
            data = json.loads(path.read_text())
            now = datetime.fromisoformat(data["verification_time"].replace("Z", "+00:00"))
            tee, evidence, collateral = kbs_evidence(root, tee_dir, data["files"])
            # Nitro documents are years old: their age is not what is measured here.
            ctx = VerifyContext(
                now=now, anchors=anchors, collateral=collateral, max_age_seconds=10**10
            )
            try:
                get_verifier(tee).verify(evidence, ctx)
            except Exception as exc:  # noqa: BLE001 - reported, and the vector is left out
                result.errors.append(f"{tee}/{vid} did not verify: {type(exc).__name__}: {exc}")
                continue
            groups.setdefault(tee, []).append(
                Vector(
                    tee=tee,
                    vid=vid,
                    evidence=evidence,
                    ctx=ctx,
                    signatures=_signatures(tee, evidence),
                    dcap=_dcap_inputs(tee, evidence, collateral),
                )
            )
    return groups


def _round_robin(vectors: list[Vector]) -> Callable[[], object]:
    cycle = itertools.cycle(vectors)

    def op() -> object:
        vector = next(cycle)
        return get_verifier(vector.tee).verify(vector.evidence, vector.ctx)

    return op


def _dcap_qvl_only(vectors: list[Vector]) -> Callable[[], object] | None:
    """dcap-qvl alone on the same quotes: the second opinion's share of a verification."""
    root = x509.load_pem_x509_certificate(pinned_anchors().get("intel-sgx-root-ca"))
    root_der = root.public_bytes(Encoding.DER)
    inputs = [
        (v.dcap[0], v.dcap[1], int(v.ctx.now.timestamp())) for v in vectors if v.dcap is not None
    ]
    if not inputs:
        return None
    cycle = itertools.cycle(inputs)

    def op() -> object:
        quote, collateral, ts = next(cycle)
        try:
            parsed = dcap_qvl.QuoteCollateralV3.from_json(collateral.decode())
            return dcap_qvl.verify_with_root_ca(quote, parsed, root_der, ts)
        except (ValueError, RuntimeError, TypeError):
            # Quotes dcap-qvl refuses (debug, no TCB match) cost what they cost.
            return None

    return op


_PRIMITIVES: dict[str, Callable[[], floors.Op]] = {
    "P-384": floors.p384_verify,
    "P-256": floors.p256_verify,
    "RSA-2048-PKCS1": floors.rsa2048_pkcs1_verify,
    "RSA-4096-PSS": floors.rsa4096_pss_verify,
}
# The floor a TEE's ratio is quoted against (the vTPM ones: AK verify + the hardware floor).
_FLOOR_OF: dict[str, tuple[str, ...]] = {
    "sev-snp": ("P-384",),
    "nitro": ("P-384",),
    "tdx": ("P-256",),
    "sgx": ("P-256",),
    "az-snp-vtpm": ("RSA-2048-PKCS1", "P-384"),
    "az-tdx-vtpm": ("RSA-2048-PKCS1", "P-256"),
}


def _mean_signatures(vectors: list[Vector]) -> dict[str, float]:
    names = sorted({name for v in vectors for name in v.signatures})
    return {n: sum(v.signatures.get(n, 0) for v in vectors) / len(vectors) for n in names}


def _bench_tee(tee: str, vectors: list[Vector], budget: Budget) -> dict[str, Any]:
    sigs = _mean_signatures(vectors)
    primitive_names = sorted(set(sigs) | set(_FLOOR_OF[tee]))
    ops = {name: _PRIMITIVES[name]() for name in primitive_names}
    qvl = _dcap_qvl_only(vectors)
    sides = [_round_robin(vectors), *ops.values(), *([qvl] if qvl else [])]
    rates = compare(sides, budget)
    verify_rate, primitive_rates = rates[0], dict(zip(primitive_names, rates[1:], strict=False))
    floor_cost = sum(primitive_rates[n].seconds_per_op for n in _FLOOR_OF[tee])
    model_cost = sum(count * primitive_rates[n].seconds_per_op for n, count in sigs.items())
    verify_cost = verify_rate.seconds_per_op
    return {
        "tee": tee,
        "vectors": len(vectors),
        "verif/s": verify_rate.ops_per_s,
        "ms/verif": verify_cost * 1e3,
        "floor op": " + ".join(_FLOOR_OF[tee]),
        "floor ops/s": 1 / floor_cost,
        "ratio": verify_cost / floor_cost,
        "sigs assumed": " + ".join(f"{count:g}x{name}" for name, count in sigs.items()),
        "sig work %": 100 * model_cost / verify_cost,
        "dcap-qvl %": 100 * rates[-1].seconds_per_op / verify_cost if qvl else None,
        "primitive ops/s": {n: r.ops_per_s for n, r in primitive_rates.items()},
        "rounds verif/s": list(verify_rate.rounds),
        "vector ids": [v.vid for v in vectors],
    }


def run(budget: Budget) -> Result:
    result = Result(
        name="verify",
        title="evidence verifications/s per TEE vs the raw signature floor",
        columns=COLUMNS,
    )
    root = evidence_dir()
    if not (root / "MANIFEST.md").is_file():
        result.notes.append(
            f"real evidence vectors not found at {root} (set BROKER_EVIDENCE_DIR): verify skipped"
        )
        return result
    groups = load_vectors(root, result)
    for tee in ("sev-snp", "nitro", "tdx", "sgx", "az-snp-vtpm", "az-tdx-vtpm"):
        if tee not in groups:
            result.notes.append(f"{tee}: no verifiable vectors, skipped")
            continue
        result.rows.append(_bench_tee(tee, groups[tee], budget))
    result.notes.append(
        "ratio = verify cost / floor cost (how many floor ops one verification costs); "
        "sig work % = share of a verification spent in the assumed signature verifies"
    )
    result.notes.append(
        f"DCAP assumes {DCAP_OWN_SIGNATURES} P-256 verifies by the broker's own verifier; "
        "the dcap-qvl second opinion (Rust) repeats the checks and is shown as dcap-qvl %"
    )
    return result
