"""Attestation evidence verification: one verifier per TEE, registered here.

    verifier = get_verifier("sev-snp")
    claims = verifier.verify(evidence_json, VerifyContext(now=now, anchors=anchors, expect=exp))

Every TEE the broker knows is listed in ``_REGISTRY`` (the one place where
verifiers are registered); the KBS names Trustee guests send are aliases.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib import resources
from pathlib import Path

from broker.errors import UnsupportedTEE
from broker.evidence.model import TrustAnchors, VerifiedClaims, Verifier, VerifyContext

__all__ = [
    "TrustAnchors",
    "VerifiedClaims",
    "Verifier",
    "VerifyContext",
    "canonical_tee",
    "get_verifier",
    "known_tees",
    "pinned_anchors",
]

_REGISTRY: dict[str, str] = {
    "sample": "broker.evidence.sample:SampleVerifier",
    "sev-snp": "broker.evidence.snp:SNPVerifier",
    "tdx": "broker.evidence.tdx:TDXVerifier",
    "sgx": "broker.evidence.sgx:SGXVerifier",
    "nitro": "broker.evidence.nitro:NitroVerifier",
    "az-snp-vtpm": "broker.evidence.azure:AzureSNPVTPMVerifier",
    "az-tdx-vtpm": "broker.evidence.azure:AzureTDXVTPMVerifier",
}

# Names Trustee's guest components put in the auth request's "tee" field.
_ALIASES: dict[str, str] = {
    "snp": "sev-snp",
    "azsnpvtpm": "az-snp-vtpm",
    "aztdxvtpm": "az-tdx-vtpm",
}


def known_tees() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def canonical_tee(name: str) -> str:
    """The broker's name for a TEE, or UnsupportedTEE."""
    tee = _ALIASES.get(name, name)
    if tee not in _REGISTRY:
        raise UnsupportedTEE(f"unknown tee {name[:32]!r}")
    return tee


@cache
def get_verifier(tee: str) -> Verifier:
    """The registered verifier for a canonical TEE name."""
    target = _REGISTRY.get(tee)
    if target is None:
        raise UnsupportedTEE(f"unknown tee {tee[:32]!r}")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UnsupportedTEE(f"no verifier available for tee {tee!r}") from exc
    verifier: Verifier = getattr(module, attr)()
    return verifier


@cache
def pinned_anchors() -> TrustAnchors:
    """The vendor roots shipped with the broker (see roots/README.md)."""
    folder = resources.files("broker.evidence") / "roots"
    pem = {
        entry.name.removesuffix(".pem"): entry.read_bytes()
        for entry in folder.iterdir()
        if entry.name.endswith(".pem")
    }
    return TrustAnchors(pem=pem)


def anchors_from_dir(path: str) -> TrustAnchors:
    """Roots from an operator-supplied folder of ``<name>.pem`` files."""
    return TrustAnchors(pem={p.stem: p.read_bytes() for p in sorted(Path(path).glob("*.pem"))})
