"""JWK parsing, validation and RFC 7638 thumbprints."""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import UnsupportedKey
from broker.keys._b64 import b64url_decode
from broker.keys.algorithms import (
    ECDH_ES_A256KW,
    HPKE_MLKEM768_X25519,
    HPKE_X25519,
    NACL_SEALEDBOX,
    RSA_OAEP_256,
)
from broker.keys.jwk import PRIVATE_MEMBERS, parse_public_jwk, thumbprint
from broker.keys.unwrap import KEY_KINDS, ClientKeyPair

EXPECTED_ALG = {
    "p256": ECDH_ES_A256KW,
    "p521": ECDH_ES_A256KW,
    "rsa": RSA_OAEP_256,
    "x25519": HPKE_X25519,
    "mlkem768x25519": HPKE_MLKEM768_X25519,
    "sealedbox": NACL_SEALEDBOX,
}
PAIRS: dict[str, ClientKeyPair] = {k: ClientKeyPair.generate(k) for k in KEY_KINDS}

# RFC 7638 section 3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWK"
    "RXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMi"
    "cAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcR"
    "wr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_JWK = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(kind: str, **changes: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = PAIRS[kind].public_jwk()
    jwk.update(changes)
    return {k: v for k, v in jwk.items() if v is not None}


def test_rfc7638_example_thumbprint() -> None:
    """The RFC 7638 section 3.1 example key has the published thumbprint."""
    assert thumbprint(RFC7638_JWK) == RFC7638_THUMBPRINT


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_generated_keys_parse_to_their_algorithm(kind: str) -> None:
    """Every client key kind's public JWK selects the documented algorithm."""
    key = parse_public_jwk(PAIRS[kind].public_jwk())
    assert key.alg == EXPECTED_ALG[kind]
    assert key.thumbprint == PAIRS[kind].thumbprint()


def test_x25519_without_alg_means_hpke() -> None:
    """A bare X25519 OKP key (no alg) selects HPKE-3."""
    assert parse_public_jwk(_jwk("x25519", alg=None)).alg == HPKE_X25519


def test_ec_and_rsa_without_alg_are_accepted() -> None:
    """EC and RSA keys need no alg member."""
    assert parse_public_jwk(_jwk("p256", alg=None)).alg == ECDH_ES_A256KW
    assert parse_public_jwk(_jwk("rsa", alg=None)).alg == RSA_OAEP_256


def test_thumbprint_ignores_optional_members() -> None:
    """kid, use and alg do not change the thumbprint (RFC 7638 section 3.2)."""
    plain = parse_public_jwk(_jwk("p256", alg=None))
    decorated = parse_public_jwk(_jwk("p256", kid="k1", use="enc"))
    assert plain.thumbprint == decorated.thumbprint


@pytest.mark.parametrize("member", sorted(PRIVATE_MEMBERS))
@pytest.mark.parametrize("kind", KEY_KINDS)
def test_private_members_are_refused(kind: str, member: str) -> None:
    """A JWK carrying any private member is refused, whatever its type."""
    with pytest.raises(UnsupportedKey, match="private"):
        parse_public_jwk(_jwk(kind, **{member: "AAAA"}))


@pytest.mark.parametrize(
    ("jwk", "message"),
    [
        ({"kty": "oct", "k": "AAAA"}, "private"),
        ({"kty": "oct"}, "symmetric"),
        ({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}, "P-384"),
        ({"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"}, "curve"),
        ({"kty": "OKP", "crv": "Ed25519", "x": _b64(bytes(32))}, "X25519 only"),
        ({"kty": "OKP", "crv": "X448", "x": _b64(bytes(56))}, "X25519 only"),
        ({"kty": "AKP", "alg": "ML-DSA-65", "pub": "AA"}, "HPKE-10"),
        ({"kty": "AKP", "alg": "HPKE-10", "pub": _b64(bytes(100))}, "1216"),
        ({"kty": "XYZ"}, "kty"),
        ({}, "kty"),
    ],
)
def test_unsupported_shapes(jwk: dict[str, Any], message: str) -> None:
    """Unsupported key types and curves raise UnsupportedKey with a clear message."""
    with pytest.raises(UnsupportedKey, match=message):
        parse_public_jwk(jwk)


def test_short_rsa_refused() -> None:
    """An RSA modulus under 2048 bits is refused."""
    n = (1 << 1023) | 1
    with pytest.raises(UnsupportedKey, match="1024 bits"):
        parse_public_jwk({"kty": "RSA", "n": _b64(n.to_bytes(128, "big")), "e": "AQAB"})


def test_rsa_leading_zero_refused() -> None:
    """A non-minimal RSA modulus encoding is refused."""
    jwk = _jwk("rsa")
    jwk["n"] = _b64(b"\x00" + b64url_decode(jwk["n"]))
    with pytest.raises(UnsupportedKey, match="minimal"):
        parse_public_jwk(jwk)


def test_ec_off_curve_refused() -> None:
    """An EC point that is not on the curve is refused."""
    jwk = _jwk("p256")
    jwk["y"] = _b64((1).to_bytes(32, "big"))
    with pytest.raises(UnsupportedKey, match="not on the curve"):
        parse_public_jwk(jwk)


@pytest.mark.parametrize("kind", ["p256", "p521"])
def test_ec_short_coordinate_refused(kind: str) -> None:
    """EC coordinates shorter than the field size are refused."""
    jwk = _jwk(kind)
    jwk["x"] = jwk["x"][4:]
    with pytest.raises(UnsupportedKey):
        parse_public_jwk(jwk)


@pytest.mark.parametrize("bad", ["AAA=", "AA+A", "A", "AB", " AAA", "AAAA\n"])
def test_non_canonical_base64_refused(bad: str) -> None:
    """Padding, foreign characters and non-canonical tails are not base64url."""
    with pytest.raises(UnsupportedKey):
        parse_public_jwk({"kty": "OKP", "crv": "X25519", "x": bad})


def test_use_sig_refused() -> None:
    """A key marked for signatures is refused."""
    with pytest.raises(UnsupportedKey, match="use"):
        parse_public_jwk(_jwk("x25519", use="sig"))


@pytest.mark.parametrize(
    ("kind", "alg"), [("p256", "RSA-OAEP-256"), ("rsa", "RS256"), ("x25519", "ECDH-ES")]
)
def test_alg_that_does_not_fit_refused(kind: str, alg: str) -> None:
    """An alg member naming another algorithm than the key type's is refused."""
    with pytest.raises(UnsupportedKey, match="alg"):
        parse_public_jwk(_jwk(kind, alg=alg))


@pytest.mark.parametrize("value", [None, [], "jwk", 3, b"{}"])
def test_non_object_refused(value: Any) -> None:
    """Anything but a JSON object is refused."""
    with pytest.raises(UnsupportedKey):
        parse_public_jwk(value)


def test_error_message_does_not_echo_long_values() -> None:
    """Error messages truncate attacker-chosen values."""
    with pytest.raises(UnsupportedKey) as info:
        parse_public_jwk({"kty": "Z" * 10_000})
    assert len(str(info.value)) < 100


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
_members = st.sampled_from(["kty", "crv", "x", "y", "n", "e", "alg", "pub", "use", "kid"])


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_members | st.text(max_size=5), _json, max_size=8))
def test_arbitrary_objects_raise_only_unsupported_key(jwk: dict[str, Any]) -> None:
    """Arbitrary JSON objects either parse or raise UnsupportedKey, nothing else."""
    with contextlib.suppress(UnsupportedKey):
        parse_public_jwk(jwk)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(KEY_KINDS),
    st.sampled_from(["kty", "crv", "x", "y", "n", "e", "alg", "pub"]),
    _json | st.text(alphabet="ABCDEFabcdef0123456789-_=", max_size=200),
)
def test_mutated_real_keys_raise_only_unsupported_key(kind: str, member: str, value: Any) -> None:
    """Real public JWKs with one member replaced never raise anything but UnsupportedKey."""
    jwk = _jwk(kind)
    jwk[member] = value
    try:
        key = parse_public_jwk(jwk)
    except UnsupportedKey:
        return
    assert key.alg in EXPECTED_ALG.values()
