"""Attestation result tokens: EAR-shaped JWTs signed ES256 by the broker.

Pure: the signing key and ``now`` are parameters. Only ES256 under the
broker's own key verifies; ``alg: none``, HMAC tokens made with the public
key, another broker's key and expired tokens raise TokenInvalid.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from broker import __version__
from broker.errors import TokenInvalid
from broker.keys._b64 import b64url_decode

ALG = "ES256"
EAR_PROFILE = "tag:github.com,2023:veraison/ear"
_MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class TokenKey:
    """The broker's ES256 token key (private part never printed)."""

    key: ECKey = field(repr=False)
    # Named in every token header: a thumbprint costs a JSON encoding and a hash.
    _kid: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_kid", self.key.thumbprint())

    @classmethod
    def generate(cls) -> TokenKey:
        return cls(ECKey.generate_key("P-256"))

    @classmethod
    def from_pem(cls, pem: bytes) -> TokenKey:
        key = ECKey.import_key(pem)
        if key.curve_name != "P-256" or not key.is_private:
            raise TokenInvalid("token key must be a private P-256 key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self.key.as_pem(private=True)

    @property
    def kid(self) -> str:
        return self._kid

    def public_jwk(self) -> dict[str, Any]:
        return {**self.key.as_dict(private=False), "kid": self.kid, "alg": ALG, "use": "sig"}


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says about the attester."""

    jti: str
    tee: str
    claims: Mapping[str, Any]
    flags: Mapping[str, bool]
    tee_pubkey: Mapping[str, Any]
    policy_digest: str
    evidence_digest: str
    issued_at: int
    expires_at: int


def issue(
    key: TokenKey,
    *,
    issuer: str,
    tee: str,
    claims: Mapping[str, Any],
    flags: Mapping[str, bool],
    tee_pubkey: Mapping[str, Any],
    policy_digest: str,
    evidence_digest: str,
    now: datetime,
    ttl_seconds: int,
    wrap_alg: str = "",
) -> tuple[str, TokenClaims]:
    iat = int(now.timestamp())
    info = TokenClaims(
        jti=secrets.token_urlsafe(16),
        tee=tee,
        claims=claims,
        flags=flags,
        tee_pubkey=tee_pubkey,
        policy_digest=policy_digest,
        evidence_digest=evidence_digest,
        issued_at=iat,
        expires_at=iat + ttl_seconds,
    )
    payload = {
        "iss": issuer,
        "iat": iat,
        "exp": info.expires_at,
        "jti": info.jti,
        "eat_profile": EAR_PROFILE,
        "ear.verifier-id": {"developer": "attested-broker", "build": __version__},
        "submods": {
            "cpu0": {
                "ear.status": "affirming",
                "ear.appraisal-policy-id": policy_digest,
                "ear.veraison.annotated-evidence": {"tee": tee, "claims": dict(claims)},
                "ear.veraison.policy-claims": {"flags": dict(flags)},
                "ear.veraison.key-attestation": {"akpub": dict(tee_pubkey), "alg": wrap_alg},
            }
        },
        "tee": tee,
        "tee-pubkey": dict(tee_pubkey),
        "wrap_alg": wrap_alg,
        "evidence_digest": evidence_digest,
        "policy_digest": policy_digest,
    }
    # msgspec writes the claims (the evidence claims appear twice) in a tenth of
    # the time the JWT layer's json.dumps takes; the JWS layer signs the bytes.
    token = jws.serialize_compact(
        {"alg": ALG, "kid": key.kid, "typ": "JWT"}, msgspec.json.encode(payload), key.key
    )
    return token, info


def verify(key: TokenKey, token: str, *, issuer: str, now: datetime) -> TokenClaims:
    """Raises TokenInvalid for any token this broker did not issue or that has expired."""
    if len(token) > _MAX_TOKEN_BYTES:
        raise TokenInvalid("token too large")
    try:
        # The JWS layer checks the signature; msgspec reads the payload it signed
        # (the JWT layer would parse it again with the json module, at twice the cost).
        signed = jws.deserialize_compact(token, key.key, algorithms=[ALG])
        header = signed.headers()
        payload = msgspec.json.decode(signed.payload)
    except (JoseError, ValueError, TypeError, KeyError, msgspec.DecodeError):
        raise TokenInvalid("token signature or format invalid") from None
    if header.get("alg") != ALG:
        raise TokenInvalid("token algorithm not accepted")
    if not isinstance(payload, dict):
        raise TokenInvalid("token claims malformed")
    info = _claims_of(payload, issuer)
    _check_time(info, now)
    return info


def _claims_of(payload: Mapping[str, Any], issuer: str) -> TokenClaims:
    """The claims of a token's payload (its signature already checked or just made).

    Raises:
        TokenInvalid: the payload is malformed or names another issuer.
    """
    try:
        exp, iat = int(payload["exp"]), int(payload["iat"])
        sub = payload["submods"]["cpu0"]
        info = TokenClaims(
            jti=str(payload["jti"]),
            tee=str(payload["tee"]),
            claims=sub["ear.veraison.annotated-evidence"]["claims"],
            flags=sub["ear.veraison.policy-claims"]["flags"],
            tee_pubkey=payload["tee-pubkey"],
            policy_digest=str(payload["policy_digest"]),
            evidence_digest=str(payload["evidence_digest"]),
            issued_at=iat,
            expires_at=exp,
        )
    except (KeyError, TypeError, ValueError):
        raise TokenInvalid("token claims malformed") from None
    if payload.get("iss") != issuer:
        raise TokenInvalid("token issued by another broker")
    return info


def _check_time(info: TokenClaims, now: datetime) -> None:
    ts = now.timestamp()
    if ts >= info.expires_at:
        raise TokenInvalid("token expired")
    if info.issued_at > ts + 60:
        raise TokenInvalid("token issued in the future")


class TokenVerifier:
    """``verify`` for one broker key and issuer, remembering tokens that verified.

    An enclave presents the same token for every resource it fetches: its
    signature is checked once, its lifetime at every use. Only tokens that
    verified are remembered (a forged or altered token is a different string).
    """

    def __init__(self, key: TokenKey, *, issuer: str, maxsize: int = 4096) -> None:
        self._key = key
        self._issuer = issuer
        self._maxsize = maxsize
        self._seen: OrderedDict[str, TokenClaims] = OrderedDict()

    def remember_issued(self, token: str) -> None:
        """Remember a token ``issue`` made with this verifier's key a moment ago.

        Its claims are read back from its own payload, exactly as ``verify``
        reads them, so the enclave's first fetch does not check a signature this
        process just made. Never pass a token that came from outside.
        """
        payload = msgspec.json.decode(b64url_decode(token.split(".")[1]))
        self._store(token, _claims_of(payload, self._issuer))

    def verify(self, token: str, *, now: datetime) -> TokenClaims:
        """Raises TokenInvalid, as ``verify`` does."""
        info = self._seen.get(token)
        if info is None:
            info = verify(self._key, token, issuer=self._issuer, now=now)
            self._store(token, info)
        else:
            self._seen.move_to_end(token)
            _check_time(info, now)
        return info

    def _store(self, token: str, info: TokenClaims) -> None:
        self._seen[token] = info
        if len(self._seen) > self._maxsize:
            self._seen.popitem(last=False)
