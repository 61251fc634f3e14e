"""Broker side: wrap a released secret to the enclave's ephemeral public key.

The algorithm follows from the ``tee-pubkey`` JWK (see ``keys.jwk``)::

    ctx = WrapContext(resource="default/kbs/key", version=3, jti=token_jti)
    wrapped = wrap(tee_pubkey, secret, context=ctx, allowed=policy_algs)
    response["wrapped"] = wrapped.envelope      # flattened JWE JSON

Every envelope binds ``ctx``: JOSE algorithms carry ``res``/``ver``/``jti`` in
the authenticated protected header, HPKE also derives its keys with
``ctx.info()``, and sealed boxes prefix the plaintext with ``ctx.info()``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import x25519
from joserfc import jwe
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, RSAKey
from nacl.exceptions import CryptoError
from nacl.public import PublicKey as NaClPublicKey
from nacl.public import SealedBox

from broker.errors import KeyManagementError, UnsupportedKey
from broker.keys import _hpke
from broker.keys._b64 import b64url_encode
from broker.keys._jose import registry_for
from broker.keys.algorithms import (
    ALGORITHM_STRENGTH,
    ALL_ALGORITHMS,
    CONTENT_ENCRYPTION,
    DEFAULT_ALLOWED,
    ECDH_ES_A256KW,
    HPKE_MLKEM768_X25519,
    HPKE_X25519,
    NACL_SEALEDBOX,
    RSA_OAEP_256,
    WrapContext,
    algorithms_at_least,
)
from broker.keys.envelope import MAX_PLAINTEXT_BYTES, encode_protected
from broker.keys.jwk import RecipientKey, parse_public_jwk

__all__ = [
    "ALGORITHM_STRENGTH",
    "ALL_ALGORITHMS",
    "DEFAULT_ALLOWED",
    "ECDH_ES_A256KW",
    "HPKE_MLKEM768_X25519",
    "HPKE_X25519",
    "NACL_SEALEDBOX",
    "RSA_OAEP_256",
    "WrapContext",
    "WrappedKey",
    "algorithm_for",
    "algorithms_at_least",
    "recipient_for",
    "wrap",
]


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """The algorithm used and the flattened JWE JSON object to send to the enclave."""

    alg: str
    envelope: dict[str, Any]


def recipient_for(
    jwk: Mapping[str, Any], *, allowed: Collection[str] = DEFAULT_ALLOWED
) -> RecipientKey:
    """``jwk`` validated, with the wrapping algorithm it selects and its thumbprint
    (parsed once per key: an enclave's key serves its attestation and every release).

    Raises:
        UnsupportedKey: the JWK is malformed, private, of an unsupported type,
            or selects an algorithm outside ``allowed``.
    """
    return _recipient(jwk, allowed)


def algorithm_for(jwk: Mapping[str, Any], *, allowed: Collection[str] = DEFAULT_ALLOWED) -> str:
    """The wrapping algorithm ``jwk`` selects, if ``allowed`` permits it.

    Raises:
        UnsupportedKey: as ``recipient_for``.
    """
    return _recipient(jwk, allowed).alg


def wrap(
    jwk: Mapping[str, Any],
    plaintext: bytes,
    *,
    context: WrapContext,
    allowed: Collection[str] = DEFAULT_ALLOWED,
) -> WrappedKey:
    """Encrypt ``plaintext`` to ``jwk``, bound to ``context``.

    Raises:
        UnsupportedKey: as ``algorithm_for``, or the key is rejected by its KEM
            (for example a low-order X25519 point).
        KeyManagementError: ``plaintext`` is not bytes or exceeds 1 MiB.
    """
    # (1) Validate the key and the policy before touching the secret.
    recipient = _recipient(jwk, allowed)
    if not _is_small_bytes(plaintext):
        raise KeyManagementError("plaintext must be at most 1 MiB of bytes")
    # (2) The authenticated header names the key and the release it belongs to.
    header: dict[str, Any] = {
        "alg": recipient.alg,
        "kid": recipient.thumbprint,
        "res": context.resource,
        "ver": context.version,
        "jti": context.jti,
    }
    # (3) Encrypt with the algorithm's layout.
    try:
        envelope = _WRAPPERS[recipient.alg](recipient, header, plaintext, context)
    except (ValueError, CryptoError, JoseError):
        # The KEM refused the public value (e.g. an all-zero X25519 shared secret).
        raise UnsupportedKey("tee-pubkey was rejected during key agreement") from None
    return WrappedKey(alg=recipient.alg, envelope=envelope)


def _is_small_bytes(value: object) -> bool:
    return isinstance(value, bytes) and len(value) <= MAX_PLAINTEXT_BYTES


def _recipient(jwk: Mapping[str, Any], allowed: Collection[str]) -> RecipientKey:
    recipient = parse_public_jwk(jwk)
    if recipient.alg not in allowed:
        raise UnsupportedKey(f"wrapping algorithm {recipient.alg} is not allowed here")
    return recipient


def _wrap_jose(
    recipient: RecipientKey, header: dict[str, Any], plaintext: bytes, _: WrapContext
) -> dict[str, Any]:
    key = _jose_key(recipient.alg, tuple(sorted(recipient.jwk.items())))
    obj = jwe.FlattenedJSONEncryption({**header, "enc": CONTENT_ENCRYPTION}, plaintext)
    obj.add_recipient({}, key)
    out = dict(jwe.encrypt_json(obj, None, registry=registry_for(recipient.alg)))
    # RSA-OAEP has no per-recipient header; an empty one would only be noise.
    if not out.get("header"):
        out.pop("header", None)
    return out


@functools.lru_cache(maxsize=1024)
def _jose_key(alg: str, members: tuple[tuple[str, Any], ...]) -> ECKey | RSAKey:
    # A token's releases all wrap to one key: import it once (the object is
    # only read by the encryption).
    return (ECKey if alg == ECDH_ES_A256KW else RSAKey).import_key(dict(members))


def _wrap_hpke(
    recipient: RecipientKey, header: dict[str, Any], plaintext: bytes, context: WrapContext
) -> dict[str, Any]:
    # draft-ietf-jose-hpke-encrypt section 5 (Integrated Encryption): no "enc",
    # encrypted_key = HPKE enc, empty iv/tag (omitted), aad = ASCII(protected).
    protected = encode_protected(header)
    key = recipient.key
    assert isinstance(key, _hpke.PublicKey)
    enc, ciphertext = _hpke.seal(
        recipient.alg, key, plaintext, info=context.info(), aad=protected.encode("ascii")
    )
    return {
        "protected": protected,
        "encrypted_key": b64url_encode(enc),
        "ciphertext": b64url_encode(ciphertext),
    }


def _wrap_sealedbox(
    recipient: RecipientKey, header: dict[str, Any], plaintext: bytes, context: WrapContext
) -> dict[str, Any]:
    # A sealed box has no associated data, so the context travels inside it.
    key = recipient.key
    assert isinstance(key, x25519.X25519PublicKey)
    box = SealedBox(NaClPublicKey(key.public_bytes_raw()))
    sealed = bytes(box.encrypt(context.info() + b"\x00" + plaintext))
    return {"protected": encode_protected(header), "ciphertext": b64url_encode(sealed)}


_Wrapper = Callable[[RecipientKey, dict[str, Any], bytes, WrapContext], dict[str, Any]]
_WRAPPERS: Final[dict[str, _Wrapper]] = {
    ECDH_ES_A256KW: _wrap_jose,
    RSA_OAEP_256: _wrap_jose,
    HPKE_X25519: _wrap_hpke,
    HPKE_MLKEM768_X25519: _wrap_hpke,
    NACL_SEALEDBOX: _wrap_sealedbox,
}
