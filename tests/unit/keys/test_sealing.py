"""Values at rest under the root key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.errors import KeyManagementError
from broker.keys.material import SecretBytes
from broker.keys.sealing import RootKey, seal, unseal


def test_roundtrip() -> None:
    """A sealed value opens with the same root key, resource and version."""
    root = RootKey.generate()
    sealed = seal(root, SecretBytes(b"secret"), resource="a/b/c", version=1)
    assert unseal(root, sealed, resource="a/b/c", version=1).reveal() == b"secret"
    assert b"secret" not in sealed


@pytest.mark.parametrize(("resource", "version"), [("a/b/d", 1), ("a/b/c", 2)])
def test_bound_to_resource_and_version(resource: str, version: int) -> None:
    """A sealed row copied to another resource or version fails to open."""
    root = RootKey.generate()
    sealed = seal(root, SecretBytes(b"secret"), resource="a/b/c", version=1)
    with pytest.raises(KeyManagementError):
        unseal(root, sealed, resource=resource, version=version)


def test_other_root_key_refused() -> None:
    """A value sealed under another root key is refused without detail."""
    sealed = seal(RootKey.generate(), SecretBytes(b"x"), resource="a/b/c", version=1)
    with pytest.raises(KeyManagementError):
        unseal(RootKey.generate(), sealed, resource="a/b/c", version=1)


def test_repr_never_shows_material() -> None:
    """Root keys and secrets print redacted."""
    root = RootKey.generate()
    assert root.material.reveal().hex() not in repr(root)
    assert "abc" not in repr(SecretBytes(b"abc")) and "abc" not in str(SecretBytes(b"abc"))


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=300))
def test_any_tamper_detected(data: bytes, pos: int) -> None:
    """Flipping any byte of a sealed value makes it fail to open."""
    root = RootKey.from_bytes(b"k" * 32)
    sealed = bytearray(seal(root, SecretBytes(data or b"\0"), resource="a/b/c", version=1))
    sealed[pos % len(sealed)] ^= 1
    with pytest.raises(KeyManagementError):
        unseal(root, bytes(sealed), resource="a/b/c", version=1)
