"""Attestation result tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest
from joserfc import jws

from broker.errors import TokenInvalid
from broker.tokens import TokenKey, TokenVerifier, issue, verify

NOW = datetime(2026, 11, 28, 12, tzinfo=UTC)


def _issue(key: TokenKey, now: datetime = NOW, ttl: int = 300) -> str:
    token, _ = issue(
        key,
        issuer="b",
        tee="sample",
        claims={"svn": 1},
        flags={"debug": False},
        tee_pubkey={"kty": "EC"},
        policy_digest="sha256:p",
        evidence_digest="sha256:e",
        now=now,
        ttl_seconds=ttl,
    )
    return token


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_roundtrip() -> None:
    """A token verifies under its key and carries the claims."""
    key = TokenKey.generate()
    info = verify(key, _issue(key), issuer="b", now=NOW)
    assert info.tee == "sample" and info.claims == {"svn": 1} and info.policy_digest == "sha256:p"


def test_ear_shape() -> None:
    """The payload has the EAR profile and a submodule with the appraisal policy id."""
    key = TokenKey.generate()
    payload = json.loads(base64.urlsafe_b64decode(_issue(key).split(".")[1] + "=="))
    assert payload["eat_profile"] == "tag:github.com,2023:veraison/ear"
    assert payload["submods"]["cpu0"]["ear.appraisal-policy-id"] == "sha256:p"


def test_expired() -> None:
    """An expired token is refused."""
    key = TokenKey.generate()
    with pytest.raises(TokenInvalid, match="expired"):
        verify(key, _issue(key), issuer="b", now=NOW + timedelta(seconds=301))


def test_other_broker_key() -> None:
    """A token from another broker's key is refused."""
    with pytest.raises(TokenInvalid):
        verify(TokenKey.generate(), _issue(TokenKey.generate()), issuer="b", now=NOW)


def test_other_issuer() -> None:
    """A token with another issuer is refused."""
    key = TokenKey.generate()
    with pytest.raises(TokenInvalid):
        verify(key, _issue(key), issuer="other", now=NOW)


def test_alg_none() -> None:
    """An unsigned token (alg: none) is refused."""
    key = TokenKey.generate()
    payload = _issue(key).split(".")[1]
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    with pytest.raises(TokenInvalid):
        verify(key, forged, issuer="b", now=NOW)


def test_hs256_with_public_key() -> None:
    """An HS256 token keyed with the broker's public key is refused."""
    key = TokenKey.generate()
    claims = json.loads(base64.urlsafe_b64decode(_issue(key).split(".")[1] + "=="))
    public_pem = key.key.as_pem(private=False)
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(TokenInvalid):
        verify(key, forged, issuer="b", now=NOW)


@pytest.mark.parametrize("garbage", ["", "a.b.c", "x" * 70000, "....", "eyJ.eyJ.sig"])
def test_garbage(garbage: str) -> None:
    """Garbage tokens are refused with TokenInvalid."""
    with pytest.raises(TokenInvalid):
        verify(TokenKey.generate(), garbage, issuer="b", now=NOW)


@pytest.mark.parametrize("payload", [b"[1, 2]", b'"text"', b"7", b"null", b"{not json", b"\xff"])
def test_a_signed_payload_that_is_not_a_claims_object_is_refused(payload: bytes) -> None:
    """Signed by the broker's own key, yet not a JSON object: TokenInvalid, never a crash."""
    key = TokenKey.generate()
    token = jws.serialize_compact({"alg": "ES256", "typ": "JWT"}, payload, key.key)
    with pytest.raises(TokenInvalid):
        verify(key, token, issuer="b", now=NOW)


def test_key_pem_roundtrip() -> None:
    """The token key survives a PEM round trip with the same kid."""
    key = TokenKey.generate()
    assert TokenKey.from_pem(key.to_pem()).kid == key.kid
    assert "d" not in key.public_jwk()


def test_verifier_checks_lifetime_of_remembered_tokens() -> None:
    """A token verified once is remembered, but its expiry still applies at every use."""
    key = TokenKey.generate()
    verifier = TokenVerifier(key, issuer="b", maxsize=2)
    token = _issue(key)
    assert verifier.verify(token, now=NOW).tee == "sample"
    assert verifier.verify(token, now=NOW + timedelta(seconds=10)).tee == "sample"
    with pytest.raises(TokenInvalid, match="expired"):
        verifier.verify(token, now=NOW + timedelta(seconds=301))
    with pytest.raises(TokenInvalid):
        verifier.verify(token[:-4] + "AAAA", now=NOW)
    with pytest.raises(TokenInvalid):
        TokenVerifier(TokenKey.generate(), issuer="b").verify(token, now=NOW)


def test_a_remembered_issued_token_reads_back_as_verify_reads_it() -> None:
    """remember_issued caches exactly the claims a signature check would give."""
    key = TokenKey.generate()
    token, _ = issue(
        key,
        issuer="b",
        tee="sev-snp",
        claims={"vmpl": 0, "measurement": "ab", "big": 2**60, "nested": {"x": [1, 2]}},
        flags={"debug": False},
        tee_pubkey={"kty": "EC", "crv": "P-256", "x": "x", "y": "y"},
        policy_digest="p",
        evidence_digest="e",
        now=datetime(2030, 1, 1, tzinfo=UTC),
        ttl_seconds=300,
    )
    now = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)
    remembered = TokenVerifier(key, issuer="b")
    remembered.remember_issued(token)
    assert remembered.verify(token, now=now) == verify(key, token, issuer="b", now=now)
    with pytest.raises(TokenInvalid, match="expired"):
        remembered.verify(token, now=now + timedelta(hours=1))
