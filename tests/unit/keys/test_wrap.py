"""Broker-side wrapping: algorithm choice, policy, envelope layout and context bytes."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from broker.errors import InvalidResourcePath, KeyManagementError, MalformedRequest, UnsupportedKey
from broker.keys.algorithms import algorithms_at_least
from broker.keys.unwrap import KEY_KINDS, ClientKeyPair
from broker.keys.wrap import (
    ALGORITHM_STRENGTH,
    ALL_ALGORITHMS,
    DEFAULT_ALLOWED,
    ECDH_ES_A256KW,
    HPKE_MLKEM768_X25519,
    HPKE_X25519,
    NACL_SEALEDBOX,
    RSA_OAEP_256,
    WrapContext,
    algorithm_for,
    wrap,
)

CTX = WrapContext(resource="default/kbs/key", version=3, jti="token-1")
PAIRS: dict[str, ClientKeyPair] = {k: ClientKeyPair.generate(k) for k in KEY_KINDS}
LAYOUT = {
    ECDH_ES_A256KW: {"protected", "encrypted_key", "header", "iv", "ciphertext", "tag"},
    RSA_OAEP_256: {"protected", "encrypted_key", "iv", "ciphertext", "tag"},
    HPKE_X25519: {"protected", "encrypted_key", "ciphertext"},
    HPKE_MLKEM768_X25519: {"protected", "encrypted_key", "ciphertext"},
    NACL_SEALEDBOX: {"protected", "ciphertext"},
}


def _header(envelope: dict[str, Any]) -> dict[str, Any]:
    text = envelope["protected"]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return data


def test_algorithm_sets() -> None:
    """ALL_ALGORITHMS lists the five names and DEFAULT_ALLOWED is all of them."""
    assert {
        ECDH_ES_A256KW,
        RSA_OAEP_256,
        HPKE_X25519,
        HPKE_MLKEM768_X25519,
        NACL_SEALEDBOX,
    } == ALL_ALGORITHMS
    assert DEFAULT_ALLOWED == ALL_ALGORITHMS
    assert set(ALGORITHM_STRENGTH) == ALL_ALGORITHMS


def test_pq_hybrid_is_strongest() -> None:
    """The PQ/T hybrid ranks strictly above every other algorithm."""
    top = ALGORITHM_STRENGTH[HPKE_MLKEM768_X25519]
    assert all(
        rank < top for alg, rank in ALGORITHM_STRENGTH.items() if alg != HPKE_MLKEM768_X25519
    )
    assert algorithms_at_least(HPKE_MLKEM768_X25519) == {HPKE_MLKEM768_X25519}
    assert algorithms_at_least(RSA_OAEP_256) == ALL_ALGORITHMS
    assert RSA_OAEP_256 not in algorithms_at_least(HPKE_X25519)


def test_algorithms_at_least_unknown() -> None:
    """An unknown minimum is refused rather than read as 'anything'."""
    with pytest.raises(UnsupportedKey):
        algorithms_at_least("A128KW")


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_envelope_layout(kind: str) -> None:
    """Each algorithm emits its documented flattened JWE members and bound header."""
    pair = PAIRS[kind]
    wrapped = wrap(pair.public_jwk(), b"secret", context=CTX)
    assert wrapped.alg == pair.algorithm == algorithm_for(pair.public_jwk())
    assert set(wrapped.envelope) == LAYOUT[wrapped.alg]
    header = _header(wrapped.envelope)
    assert header["alg"] == wrapped.alg
    assert header["kid"] == pair.thumbprint()
    assert (header["res"], header["ver"], header["jti"]) == ("default/kbs/key", 3, "token-1")
    if wrapped.alg in (ECDH_ES_A256KW, RSA_OAEP_256):
        assert header["enc"] == "A256GCM"
    else:
        assert "enc" not in header


def test_hpke_encrypted_key_is_the_encapsulated_key() -> None:
    """HPKE envelopes carry enc (32 bytes for X25519, 1120 for the hybrid) in encrypted_key."""
    for kind, size in (("x25519", 32), ("mlkem768x25519", 1120)):
        env = wrap(PAIRS[kind].public_jwk(), b"s", context=CTX).envelope
        enc = base64.urlsafe_b64decode(env["encrypted_key"] + "==")
        assert len(enc) == size


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_disallowed_algorithm_refused(kind: str) -> None:
    """A key whose algorithm is outside 'allowed' is refused by both entry points."""
    jwk = PAIRS[kind].public_jwk()
    allowed = ALL_ALGORITHMS - {PAIRS[kind].algorithm}
    with pytest.raises(UnsupportedKey, match="not allowed"):
        algorithm_for(jwk, allowed=allowed)
    with pytest.raises(UnsupportedKey, match="not allowed"):
        wrap(jwk, b"secret", context=CTX, allowed=allowed)


def test_empty_allowed_refuses_everything() -> None:
    """An empty allow-list fails closed."""
    with pytest.raises(UnsupportedKey):
        wrap(PAIRS["x25519"].public_jwk(), b"s", context=CTX, allowed=())


def test_private_jwk_refused() -> None:
    """A JWK with 'd' is refused before anything is encrypted."""
    jwk = {**PAIRS["p256"].public_jwk(), "d": "AAAA"}
    with pytest.raises(UnsupportedKey, match="private"):
        wrap(jwk, b"secret", context=CTX)


@pytest.mark.parametrize("kind", ["x25519", "sealedbox"])
def test_low_order_x25519_point_refused(kind: str) -> None:
    """An all-zero X25519 public value is rejected during key agreement."""
    jwk = {**PAIRS[kind].public_jwk(), "x": "A" * 43}
    with pytest.raises(UnsupportedKey):
        wrap(jwk, b"secret", context=CTX)


def test_oversized_plaintext_refused() -> None:
    """More than 1 MiB of plaintext is refused."""
    with pytest.raises(KeyManagementError):
        wrap(PAIRS["x25519"].public_jwk(), bytes((1 << 20) + 1), context=CTX)


def test_non_bytes_plaintext_refused() -> None:
    """Only bytes can be wrapped."""
    with pytest.raises(KeyManagementError):
        wrap(PAIRS["x25519"].public_jwk(), "secret", context=CTX)  # type: ignore[arg-type]


def test_context_info_bytes_are_exact() -> None:
    """WrapContext.info() is the documented byte string."""
    assert CTX.info() == b"attested-broker/v1 release\x00default/kbs/key\x003\x00token-1"
    utf8 = WrapContext(resource="r/\u00e9", version=0, jti="j")
    assert utf8.info() == b"attested-broker/v1 release\x00r/\xc3\xa9\x000\x00j"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"resource": ""}, InvalidResourcePath),
        ({"resource": "a\x00b"}, InvalidResourcePath),
        ({"resource": "x" * 1025}, InvalidResourcePath),
        ({"resource": "\ud800"}, InvalidResourcePath),
        ({"version": -1}, MalformedRequest),
        ({"version": True}, MalformedRequest),
        ({"version": 2**63}, MalformedRequest),
        ({"jti": ""}, MalformedRequest),
        ({"jti": "a\x00"}, MalformedRequest),
    ],
)
def test_context_validation(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """Contexts that would make info() ambiguous or unencodable are refused."""
    fields: dict[str, Any] = {"resource": "r", "version": 1, "jti": "j", **kwargs}
    with pytest.raises(error):
        WrapContext(**fields)
