"""KBS ``resource``: re-authorize a token against policy, wrap, audit, release.

Steps: (1) the resource id is well formed; (2) the resource's metadata is read
(absence, retired versions and the minimum version are decided after policy,
so a denied caller cannot probe what exists); (3) the live policy set decides
for the requested version (default: current); (4) the value is unsealed
and wrapped to the token's tee-pubkey, bound to resource, version and token
id; (5) the release is audited and durable before anything is returned.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.audit.claims import FrozenClaims, freeze_claims
from broker.audit.receipt import Receipt
from broker.audit.record import AuditRecord, AuditRecordInvalid
from broker.errors import (
    AuditWriteError,
    BackendError,
    BrokerError,
    ReleaseDenied,
    ResourceNotFound,
)
from broker.keys.jwk import parse_public_jwk
from broker.keys.material import SecretBytes
from broker.keys.wrap import WrapContext, algorithm_for, wrap
from broker.policy.evaluate import evaluate
from broker.policy.model import ReleaseRequest
from broker.ports import (
    AuditSink,
    Clock,
    KEKService,
    KeyStore,
    ResourceInfo,
    SecretSource,
    StoredValue,
    parse_kv_ref,
)
from broker.service.auditing import event, record
from broker.service.context import RequestContext
from broker.service.policies import PolicyHolder
from broker.service.resources import parse_resource_id
from broker.tokens import TokenClaims

# Tokens whose audited claims are kept frozen: one enclave's token serves all its releases.
_ATTESTERS_CACHED = 4096


@dataclass(frozen=True, slots=True)
class Release:
    resource: str
    version: int
    alg: str
    envelope: dict[str, object]
    # Signed by the audit key for the durable "resource.released" record.
    receipt: Receipt | None = None


class ReleaseService:
    def __init__(
        self,
        store: KeyStore,
        kek: KEKService,
        audit: AuditSink,
        clock: Clock,
        policies: PolicyHolder,
        *,
        allowed_wrap_algs: frozenset[str],
        kv: SecretSource | None = None,
        receipts: Callable[[AuditRecord], Awaitable[Receipt]] | None = None,
    ) -> None:
        self._store = store
        self._kek = kek
        self._audit = audit
        self._clock = clock
        self._policies = policies
        self._allowed = allowed_wrap_algs
        self._kv = kv
        self._receipts = receipts
        self._attesters: OrderedDict[str, FrozenClaims] = OrderedDict()

    def _attester(self, token: TokenClaims) -> Mapping[str, Any]:
        """The token's claims and flags as its releases audit them, frozen once per token
        (a token's content is fixed by its signature, so its ``jti`` names it)."""
        frozen = self._attesters.get(token.jti)
        if frozen is None:
            try:
                frozen = freeze_claims({"claims": dict(token.claims), "flags": dict(token.flags)})
            except AuditRecordInvalid:
                # The event refuses them the same way, and the caller reports that.
                return {"claims": dict(token.claims), "flags": dict(token.flags)}
            self._attesters[token.jti] = frozen
            if len(self._attesters) > _ATTESTERS_CACHED:
                self._attesters.popitem(last=False)
        return frozen

    async def _value(self, stored: StoredValue) -> SecretBytes:
        info = stored.info
        if info.kind == "vault-kv":
            if self._kv is None:
                raise BackendError(f"{info.id} is kept in Vault, but no Vault is configured")
            ref = parse_kv_ref(info.source)
            return await self._kv.read(ref.path, field=ref.field, version=ref.version)
        return await self._kek.unseal(stored.sealed, resource=info.id, version=stored.version)

    async def release(
        self,
        token: TokenClaims,
        resource_path: str,
        ctx: RequestContext,
        *,
        version: int | None = None,
    ) -> Release:
        now = self._clock.now()
        policies = self._policies.current
        base = {
            "tee": token.tee,
            "policy_digest": policies.digest,
            "resource": resource_path[:400],
            "evidence_digest": token.evidence_digest,
            # Parsed (and cached) at attest already: one enclave key serves all its releases.
            "pubkey_thumbprint": parse_public_jwk(token.tee_pubkey).thumbprint,
        }
        # What the audit record says about the attester (plus shadow-policy outcomes).
        audited: Mapping[str, Any] = self._attester(token)
        try:
            resource = parse_resource_id(resource_path)
            alg = algorithm_for(token.tee_pubkey, allowed=self._allowed)
            info: ResourceInfo | None
            try:
                info = await self._store.info(resource)
            except ResourceNotFound:
                info = None
            wanted = version if version is not None else (info.current_version if info else 0)
            decision = evaluate(
                policies,
                tee=token.tee,
                claims=token.claims,
                flags=token.flags,
                request=ReleaseRequest(
                    resource=resource,
                    version=wanted,
                    is_current=info is not None and wanted == info.current_version,
                    wrap_alg=alg,
                ),
                now=now,
            )
            if decision.shadow:
                audited = {
                    "claims": dict(token.claims),
                    "flags": dict(token.flags),
                    "shadow": [result.to_dict() for result in decision.shadow],
                }
            if not decision.allow:
                raise ReleaseDenied("policy denied the release", decision.reason_ids)
            if info is None:
                raise ResourceNotFound(f"no resource {resource}")
            # Absence, retirement and the minimum version are decided after policy.
            stored = await self._store.get_version(resource, wanted)
            plaintext = await self._value(stored)
            wrapped = wrap(
                token.tee_pubkey,
                plaintext.reveal(),
                context=WrapContext(resource=resource, version=wanted, jti=token.jti),
                allowed=self._allowed,
            )
        except BrokerError as exc:
            reasons = exc.reasons if isinstance(exc, ReleaseDenied) else ()
            failed = isinstance(exc, BackendError)
            await record(
                self._audit,
                event(
                    "resource.failed" if failed else "resource.denied",
                    ctx,
                    now,
                    decision="error" if failed else "deny",
                    claims=audited,
                    reasons=reasons,
                    version=version,
                    error_code=exc.code,
                    detail=f"token {token.jti}",
                    **base,
                ),
            )
            raise
        # Durable before the response exists: AuditWriteError here releases nothing.
        committed = await record(
            self._audit,
            event(
                "resource.released",
                ctx,
                now,
                decision="allow",
                claims=audited,
                version=wanted,
                wrap_alg=wrapped.alg,
                reasons=(decision.matched_rule or "",),
                detail=f"token {token.jti}",
                **base,
            ),
        )
        receipt = None
        if self._receipts is not None:
            if committed is None:
                raise AuditWriteError("audit sink returned no record to issue a receipt for")
            receipt = await self._receipts(committed)
        return Release(resource, wanted, wrapped.alg, wrapped.envelope, receipt)
