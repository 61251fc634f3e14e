"""Evidence providers backed by real TEE hardware, registered by name.

    provider = HARDWARE_PROVIDERS["tdx"]()
    released = await client.get_resource("default/key/demo", provider)

Each provider implements ``broker.client.providers.EvidenceProvider`` and
returns exactly the ``primary_evidence`` form the broker's verifier for its
TEE accepts:

- ``sev-snp``: configfs-tsm if present, else /dev/sev-guest;
  ``{"report": b64, "vcek"|"vlek": b64 DER}`` (the VEK when the host supplies one)
- ``sev-snp-tsm``: configfs-tsm only; same form
- ``sev-snp-ioctl``: /dev/sev-guest SNP_GET_EXT_REPORT only; same form
- ``tdx``: configfs-tsm; ``{"quote": b64}``
- ``nitro``: /dev/nsm Attestation request; ``{"attestation_document": b64}``

All of them fail with ``EvidenceProviderError`` (code
``EvidenceProviderUnavailable``) when the hardware is absent or refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from broker.client.hw_common import EvidenceProviderError, parse_cert_table
from broker.client.hw_nsm import NitroNSMProvider
from broker.client.hw_sev_guest import SevGuestProvider
from broker.client.hw_tsm import TSM_REPORT_ROOT, ConfigfsTSMProvider
from broker.client.providers import EvidenceProvider

__all__ = [
    "HARDWARE_PROVIDERS",
    "ConfigfsTSMProvider",
    "EvidenceProviderError",
    "NitroNSMProvider",
    "SevGuestProvider",
    "parse_cert_table",
    "snp_provider",
]


def snp_provider() -> EvidenceProvider:
    """configfs-tsm where the kernel offers it (6.7+), else the sev-guest ioctl."""
    if TSM_REPORT_ROOT.is_dir():
        return ConfigfsTSMProvider("sev-snp")
    return SevGuestProvider()


def _tsm_snp() -> EvidenceProvider:
    return ConfigfsTSMProvider("sev-snp")


def _tsm_tdx() -> EvidenceProvider:
    return ConfigfsTSMProvider("tdx")


HARDWARE_PROVIDERS: Mapping[str, Callable[[], EvidenceProvider]] = MappingProxyType(
    {
        "sev-snp": snp_provider,
        "sev-snp-tsm": _tsm_snp,
        "sev-snp-ioctl": SevGuestProvider,
        "tdx": _tsm_tdx,
        "nitro": NitroNSMProvider,
    }
)
