"""Client-side key generation and unwrap: round trips, context binding, tamper resistance."""

from __future__ import annotations

import ast
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import BrokerError, UnwrapError
from broker.keys.unwrap import KEY_KINDS, ClientKeyPair, WrapContext, unwrap
from broker.keys.wrap import wrap

CTX = WrapContext(resource="default/kbs/key", version=3, jti="token-1")
PAIRS: dict[str, ClientKeyPair] = {k: ClientKeyPair.generate(k) for k in KEY_KINDS}
OTHER_PAIRS: dict[str, ClientKeyPair] = {
    kind: ClientKeyPair.generate(kind) for kind in KEY_KINDS if kind != "rsa"
}
FAST_KINDS = ["p256", "x25519", "mlkem768x25519", "sealedbox"]
SECRET = b"\x00top secret\xff" * 3
UNWRAP_PY = Path(__file__).resolve().parents[3] / "broker" / "keys" / "unwrap.py"


def _wrapped(kind: str, plaintext: bytes = SECRET, ctx: WrapContext = CTX) -> dict[str, Any]:
    return wrap(PAIRS[kind].public_jwk(), plaintext, context=ctx).envelope


def _relabel(envelope: dict[str, Any], **changes: Any) -> dict[str, Any]:
    text = envelope["protected"]
    header = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    header.update(changes)
    raw = json.dumps(header, separators=(",", ":")).encode()
    return {**envelope, "protected": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}


def _fails(envelope: Any, pair: ClientKeyPair, ctx: WrapContext = CTX) -> None:
    with pytest.raises(UnwrapError) as info:
        unwrap(envelope, pair, context=ctx)
    assert str(info.value) == "could not unwrap the released key"


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_round_trip(kind: str) -> None:
    """What the broker wraps to a fresh client key, the client unwraps."""
    assert unwrap(_wrapped(kind), PAIRS[kind], context=CTX) == SECRET


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_empty_plaintext_round_trip(kind: str) -> None:
    """An empty secret survives every layout."""
    assert unwrap(_wrapped(kind, b""), PAIRS[kind], context=CTX) == b""


@settings(max_examples=25, deadline=None)
@given(
    st.sampled_from(FAST_KINDS),
    st.binary(max_size=2048),
    st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    st.integers(min_value=0, max_value=2**63 - 1),
)
def test_round_trip_property(kind: str, plaintext: bytes, resource: str, version: int) -> None:
    """Any plaintext and any valid context round-trips."""
    try:
        ctx = WrapContext(resource=resource, version=version, jti="j")
    except BrokerError:
        return  # contexts the constructor refuses are covered in test_wrap
    envelope = wrap(PAIRS[kind].public_jwk(), plaintext, context=ctx).envelope
    assert unwrap(envelope, PAIRS[kind], context=ctx) == plaintext


@pytest.mark.parametrize("kind", KEY_KINDS)
@pytest.mark.parametrize(
    "other",
    [
        WrapContext(resource="default/kbs/other", version=3, jti="token-1"),
        WrapContext(resource="default/kbs/key", version=4, jti="token-1"),
        WrapContext(resource="default/kbs/key", version=3, jti="token-2"),
    ],
    ids=["resource", "version", "jti"],
)
def test_wrong_context_fails(kind: str, other: WrapContext) -> None:
    """An envelope opened under another resource, version or jti fails."""
    _fails(_wrapped(kind), PAIRS[kind], other)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_relabelled_envelope_fails(kind: str) -> None:
    """Rewriting the header to another context does not move the key there."""
    other = WrapContext(resource="default/kbs/other", version=3, jti="token-1")
    _fails(_relabel(_wrapped(kind), res=other.resource), PAIRS[kind], other)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_tampered_members_fail(kind: str) -> None:
    """Flipping a character in any base64url member makes unwrap fail."""
    envelope = _wrapped(kind)
    for name, value in envelope.items():
        if not isinstance(value, str):
            continue
        for pos in (0, len(value) // 2, len(value) - 1):
            flipped = "A" if value[pos] != "A" else "B"
            _fails({**envelope, name: value[:pos] + flipped + value[pos + 1 :]}, PAIRS[kind])


def test_tampered_epk_fails() -> None:
    """Replacing the ECDH-ES ephemeral key makes unwrap fail."""
    envelope = _wrapped("p256")
    epk = _wrapped("p256")["header"]["epk"]
    _fails({**envelope, "header": {"epk": epk}}, PAIRS["p256"])


@pytest.mark.parametrize("kind", sorted(OTHER_PAIRS))
def test_other_key_of_same_kind_fails(kind: str) -> None:
    """A key pair of the same kind but not the recipient cannot unwrap."""
    _fails(_wrapped(kind), OTHER_PAIRS[kind])


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_envelope_for_another_kind_fails(kind: str) -> None:
    """An envelope made for another key kind is refused."""
    other = "x25519" if kind != "x25519" else "sealedbox"
    _fails(_wrapped(other), PAIRS[kind])


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_kid_mismatch_fails(kind: str) -> None:
    """A header naming another key id is refused."""
    _fails(_relabel(_wrapped(kind), kid="someone-else"), PAIRS[kind])


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_unknown_or_missing_members_fail(kind: str) -> None:
    """Extra members (e.g. aad) and missing members are refused."""
    envelope = _wrapped(kind)
    _fails({**envelope, "aad": "AAAA"}, PAIRS[kind])
    _fails({k: v for k, v in envelope.items() if k != "ciphertext"}, PAIRS[kind])


def test_jose_alg_downgrade_fails() -> None:
    """A JOSE envelope relabelled with another enc or a zip header is refused."""
    envelope = _wrapped("p256")
    _fails(_relabel(envelope, enc="A128GCM"), PAIRS["p256"])
    _fails(_relabel(envelope, zip="DEF"), PAIRS["p256"])


@pytest.mark.parametrize("value", [None, "", [], {}, {"protected": 1}, {"protected": "!!"}])
def test_garbage_fails_opaquely(value: Any) -> None:
    """Non-envelopes raise the same opaque UnwrapError."""
    _fails(value, PAIRS["x25519"])


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(FAST_KINDS),
    st.sampled_from(["protected", "encrypted_key", "ciphertext", "iv", "tag", "header", "aad"]),
    st.none()
    | st.integers()
    | st.text(max_size=64)
    | st.dictionaries(st.text(max_size=4), st.text(max_size=4)),
)
def test_mutated_envelopes_raise_only_unwrap_error(kind: str, member: str, value: Any) -> None:
    """Real envelopes with one member replaced never decrypt and never raise another type."""
    envelope = {**_wrapped(kind), member: value}
    with pytest.raises(UnwrapError):
        unwrap(envelope, PAIRS[kind], context=CTX)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_public_jwk_has_no_private_material(kind: str) -> None:
    """The published JWK names its algorithm and holds no private members."""
    jwk = PAIRS[kind].public_jwk()
    assert jwk["alg"] == PAIRS[kind].algorithm
    assert not {"d", "p", "q", "dp", "dq", "qi", "priv", "k"} & set(jwk)


@pytest.mark.parametrize("kind", KEY_KINDS)
def test_repr_hides_private_key(kind: str) -> None:
    """repr() shows the kind and algorithm, never key material."""
    text = repr(PAIRS[kind])
    assert "private" not in text
    assert text == f"ClientKeyPair(kind={kind!r}, algorithm={PAIRS[kind].algorithm!r})"


def test_unknown_kind_refused() -> None:
    """generate() refuses kinds it does not know."""
    with pytest.raises(ValueError, match="unknown key kind"):
        ClientKeyPair.generate("p384")  # type: ignore[arg-type]


def test_client_module_imports_nothing_server_only() -> None:
    """keys.unwrap imports neither keys.wrap nor service, adapters or api."""
    tree = ast.parse(UNWRAP_PY.read_text())
    modules = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    forbidden = ("broker.keys.wrap", "broker.service", "broker.adapters", "broker.api")
    assert not [m for m in modules if m.startswith(forbidden)]
