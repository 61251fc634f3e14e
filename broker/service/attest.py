"""KBS ``attest``: verify evidence bound to the session's challenge, issue a token.

Steps: (1) the session exists and its nonce is unexpired; (2) the runtime
nonce is the session's; (3) the nonce is consumed (single use, before any
verification, so a failed attempt cannot be retried with the same nonce);
(4) the tee-pubkey is a key we can wrap to; (5) collateral the evidence does
not carry (a VCEK, DCAP collateral) comes from the CollateralSource; (6) the
TEE's verifier checks the evidence and its binding to SHA-384(JCS(runtime
data)); (7) a token is
issued and the decision is audited before it is returned.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.errors import BrokerError, FreshnessError, NonceExpired, SessionMissing
from broker.evidence import TrustAnchors, get_verifier
from broker.evidence.binding import expectation_for
from broker.evidence.collateral import collateral_request
from broker.evidence.model import VerifyContext
from broker.keys.wrap import recipient_for
from broker.ports import AuditSink, Clock, CollateralSource, SessionStore
from broker.service.auditing import event, record
from broker.service.context import RequestContext
from broker.service.policies import PolicyHolder
from broker.tokens import TokenKey, TokenVerifier, issue


@dataclass(frozen=True, slots=True)
class AttestInput:
    nonce: str
    tee_pubkey: Mapping[str, Any]
    primary_evidence: object
    additional_evidence: str


@dataclass(frozen=True, slots=True)
class Attested:
    """The attestation result token issued, for which TEE, and its id."""

    token: str
    tee: str
    jti: str


@dataclass(frozen=True, slots=True)
class AttestLimits:
    token_ttl: int
    max_evidence_bytes: int
    max_age_seconds: int
    allowed_wrap_algs: frozenset[str]


class AttestService:
    def __init__(
        self,
        sessions: SessionStore,
        audit: AuditSink,
        clock: Clock,
        policies: PolicyHolder,
        token_key: TokenKey,
        anchors: TrustAnchors,
        collateral: CollateralSource,
        *,
        issuer: str,
        limits: AttestLimits,
        tokens: TokenVerifier | None = None,
        verify_inline: bool = False,
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self._clock = clock
        self._policies = policies
        self._token_key = token_key
        self._anchors = anchors
        self._collateral = collateral
        self._issuer = issuer
        self._limits = limits
        self._tokens = tokens
        self._verify_inline = verify_inline

    async def attest(
        self, session_id: str | None, req: AttestInput, ctx: RequestContext
    ) -> Attested:
        now = self._clock.now()
        if not session_id:
            raise SessionMissing("no kbs-session-id cookie: call auth first")
        session = await self._sessions.get_session(session_id)
        if session is None:
            raise SessionMissing("unknown or expired session: call auth again")
        tee = session.tee
        try:
            if now.timestamp() > session.expires_at:
                raise NonceExpired("the challenge nonce has expired: call auth again")
            if not hmac.compare_digest(req.nonce.encode(), session.nonce.encode()):
                raise FreshnessError("runtime-data nonce is not this session's challenge")
            await self._sessions.consume_session(session.id)
            recipient = recipient_for(req.tee_pubkey, allowed=self._limits.allowed_wrap_algs)
            expect = expectation_for(req.nonce, dict(req.tee_pubkey), req.additional_evidence)
            needed = collateral_request(
                tee, req.primary_evidence, max_evidence_bytes=self._limits.max_evidence_bytes
            )
            collateral = await self._collateral.fetch(needed) if needed is not None else {}
            context = VerifyContext(
                now=now,
                anchors=self._anchors,
                expect=expect,
                collateral=collateral,
                max_evidence_bytes=self._limits.max_evidence_bytes,
                max_age_seconds=self._limits.max_age_seconds,
            )
            verifier = get_verifier(tee)
            if self._verify_inline:
                # One worker process per core: the other cores run the other workers,
                # and a thread hop would cost more than the core it frees.
                verified = verifier.verify(req.primary_evidence, context)
            else:
                # On a worker thread: the signature checks (most of a verification)
                # release the GIL, so the event loop serves other requests meanwhile
                # and a second core does the cryptography.
                verified = await asyncio.to_thread(verifier.verify, req.primary_evidence, context)
        except BrokerError as exc:
            await record(
                self._audit,
                event(
                    "kbs.attest",
                    ctx,
                    now,
                    decision="deny",
                    tee=tee,
                    error_code=exc.code,
                    detail=exc.message[:200],
                ),
            )
            raise
        policy_digest = self._policies.current.digest
        token, info = issue(
            self._token_key,
            issuer=self._issuer,
            tee=tee,
            claims=verified.claims,
            flags=verified.flags,
            tee_pubkey=dict(req.tee_pubkey),
            policy_digest=policy_digest,
            evidence_digest=verified.evidence_digest,
            now=now,
            ttl_seconds=self._limits.token_ttl,
            wrap_alg=recipient.alg,
        )
        if self._tokens is not None:
            # The enclave fetches its keys at once: spare the first fetch a signature check.
            self._tokens.remember_issued(token)
        await self._sessions.set_session_token(session.id, token)
        await record(
            self._audit,
            event(
                "kbs.attest",
                ctx,
                now,
                decision="allow",
                tee=tee,
                evidence_digest=verified.evidence_digest,
                claims=verified.to_dict(),
                policy_digest=policy_digest,
                wrap_alg=recipient.alg,
                pubkey_thumbprint=recipient.thumbprint,
                detail=f"token {info.jti}",
            ),
        )
        return Attested(token, tee, info.jti)
