"""joserfc registries that accept exactly one key-management algorithm plus A256GCM.

Pinning the registry per algorithm means neither side can be talked into
another ``alg``, ``enc`` or a ``zip`` header; the three context members are
declared so joserfc's strict header check type-checks rather than rejects them.
"""

from __future__ import annotations

from typing import Final

from joserfc.jwe import JWERegistry
from joserfc.registry import HeaderParameter

from broker.keys.algorithms import CONTENT_ENCRYPTION, ECDH_ES_A256KW, RSA_OAEP_256

_CONTEXT_HEADERS: Final = {
    "res": HeaderParameter("Resource id the key was released for", "str", required=True),
    "ver": HeaderParameter("Resource version", "int", required=True),
    "jti": HeaderParameter("Attestation token id", "str", required=True),
}
_REGISTRIES: Final = {
    alg: JWERegistry(header_registry=dict(_CONTEXT_HEADERS), algorithms=[alg, CONTENT_ENCRYPTION])
    for alg in (ECDH_ES_A256KW, RSA_OAEP_256)
}


def registry_for(alg: str) -> JWERegistry:
    """The registry pinned to ``alg`` (one of the two JOSE algorithms)."""
    return _REGISTRIES[alg]
