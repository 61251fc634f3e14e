"""Simulated enclaves behind a client-side load balancer over several broker replicas,
and the check of their shared audit log against the receipts the enclaves received.

An enclave does auth on one replica, attest on the next and its 3 resources on
the one after, in a rotation that starts at its index (the load stays even).
Like a client behind a load balancer, it moves a step to the next live replica
after a connection error or a 5xx (that replica is then dead for this enclave),
starts again from auth when an attest is answered 409 (nonce consumed, maybe by
a replica that died before answering) or 401 (session gone), and retries a 429
after its Retry-After. Every loop is bounded. The receipts received and the
resource requests that may have reached a replica in vain are kept for
``check_log``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import rfc8785

from bench.common import Result
from bench.loader import SESSION_COOKIE, Attested, LoadError
from bench.snp_synth import SyntheticSNPProvider
from bench.storm_load import (
    MAX_RETRIES,
    RESOURCES,
    RETRY_JITTER,
    StormStats,
    attest_request,
    auth_request,
    run_timed,
)
from broker.audit.audit_key import trusted_keys
from broker.audit.merkle import leaf_hash
from broker.audit.receipt import decode_receipt_header, verify_receipt
from broker.audit.verify_export import verify_export
from broker.errors import BrokerError
from broker.keys.algorithms import WrapContext
from broker.keys.unwrap import unwrap

AUTH, ATTEST, RESOURCE = 0, 1, 2  # the step's offset in the enclave's rotation
MAX_RESTARTS = 5
# A killed replica shows up as one of these (refused, reset, or a body cut short).
_DROPPED = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)


@dataclass(frozen=True, slots=True)
class Received:
    """A release receipt (``X-Audit-Receipt``) and the replica that answered it."""

    url: str
    header: str


@dataclass(frozen=True, slots=True)
class Lost:
    """A resource request that dropped or got a 5xx: released or not, the client cannot tell."""

    url: str
    jti: str
    resource: str
    why: str  # the exception's class name, or "HTTP 5xx"


@dataclass(slots=True)
class Tally:
    """What the enclaves saw, summed over the phase."""

    refusals: int = 0
    failovers: int = 0
    # Why each fail-over happened: the exception's class name, or "HTTP 5xx".
    causes: Counter[str] = field(default_factory=Counter)
    restarts: int = 0
    receipts: list[Received] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)


@dataclass(slots=True)
class Answer:
    url: str
    status: int
    body: bytes
    cookie: str | None
    receipt: str | None
    key_version: int


class Route:
    """One enclave's rotation over the replicas and the ones it saw fail."""

    def __init__(self, urls: Sequence[str], first: int) -> None:
        self._urls = list(urls)
        self._first = first
        self.dead: set[str] = set()

    def pick(self, step: int) -> str:
        count = len(self._urls)
        for offset in range(count):
            url = self._urls[(self._first + step + offset) % count]
            if url not in self.dead:
                return url
        raise LoadError("every replica failed for this enclave")


async def _send(
    http: aiohttp.ClientSession,
    route: Route,
    step: int,
    tally: Tally,
    method: str,
    path: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    dropped: list[tuple[str, str]] | None = None,
) -> Answer:
    """One step, failed over past dead replicas and retried past 429s; any other answer.

    ``dropped`` gets (replica, why) for each try that may have reached a replica
    in vain: a connection lost mid-request, or a 5xx.
    """
    refused = 0
    dropped = dropped if dropped is not None else []
    while True:
        url = route.pick(step)
        try:
            async with http.request(method, url + path, json=body, headers=headers) as resp:
                data = await resp.read()
                cookie = resp.cookies.get(SESSION_COOKIE)
                answer = Answer(
                    url=url,
                    status=resp.status,
                    body=data,
                    cookie=None if cookie is None else cookie.value,
                    receipt=resp.headers.get("X-Audit-Receipt"),
                    key_version=int(resp.headers.get("X-Key-Version", "-1")),
                )
                wait = float(resp.headers.get("Retry-After", "1"))
        except _DROPPED as exc:
            route.dead.add(url)
            tally.failovers += 1
            tally.causes[type(exc).__name__] += 1
            # Even a refused connect may follow a try that reached the replica: aiohttp
            # resends an idempotent GET once, on a new connection, when a reused one
            # drops, and reports only the second failure.
            dropped.append((url, type(exc).__name__))
            continue
        if answer.status >= 500:
            route.dead.add(url)
            tally.failovers += 1
            tally.causes[f"HTTP {answer.status}"] += 1
            dropped.append((url, f"HTTP {answer.status}"))
        elif answer.status == 429:
            refused += 1
            tally.refusals += 1
            if refused > MAX_RETRIES:
                raise LoadError(f"{path}: still refused (429) after {MAX_RETRIES} retries")
            await asyncio.sleep(wait * (1 + RETRY_JITTER * random.random()))
        else:
            return answer


def _json(answer: Answer, what: str) -> Any:
    if answer.status != 200:
        raise LoadError(f"{what}: HTTP {answer.status} from {answer.url} {answer.body[:200]!r}")
    return json.loads(answer.body)


def _jti(token: str) -> str:
    payload = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


async def _attest(
    http: aiohttp.ClientSession, route: Route, provider: SyntheticSNPProvider, tally: Tally
) -> Attested | None:
    """auth + attest; None when the attest must start over from auth (409 or 401)."""
    request = auth_request(provider)
    auth = await _send(http, route, AUTH, tally, "POST", "/kbs/v0/auth", body=request)
    nonce = str(_json(auth, "auth")["nonce"])
    if auth.cookie is None:
        raise LoadError("auth: no session cookie")
    body, keypair = await attest_request(provider, nonce)
    headers = {"Cookie": f"{SESSION_COOKIE}={auth.cookie}"}
    answer = await _send(
        http, route, ATTEST, tally, "POST", "/kbs/v0/attest", body=body, headers=headers
    )
    if answer.status in (401, 409):
        return None
    token = str(_json(answer, "attest")["token"])
    return Attested(token=token, jti=_jti(token), keypair=keypair)


async def _fetch(
    http: aiohttp.ClientSession,
    route: Route,
    who: Attested,
    resource: str,
    tally: Tally,
    *,
    check: bool,
) -> None:
    headers = {"Authorization": f"Bearer {who.token}"}
    path = f"/kbs/v0/resource/{resource}"
    dropped: list[tuple[str, str]] = []
    try:
        answer = await _send(
            http, route, RESOURCE, tally, "GET", path, headers=headers, dropped=dropped
        )
    finally:
        tally.lost.extend(Lost(url, who.jti, resource, why) for url, why in dropped)
    envelope = _json(answer, "resource")
    if not isinstance(envelope, dict) or "ciphertext" not in envelope:
        raise LoadError("resource: response is not a wrapped key")
    if answer.receipt is None:
        raise LoadError(f"resource: no X-Audit-Receipt from {answer.url}")
    tally.receipts.append(Received(answer.url, answer.receipt))
    if check:
        context = WrapContext(resource=resource, version=answer.key_version, jti=who.jti)
        if len(unwrap(envelope, who.keypair, context=context)) != 32:
            raise LoadError("resource: unwrapped key is not 32 bytes")


async def enclave(
    http: aiohttp.ClientSession,
    urls: Sequence[str],
    index: int,
    provider: SyntheticSNPProvider,
    tally: Tally,
    *,
    check: bool = False,
) -> None:
    """One enclave boot across the replicas (``check``: unwrap its first key)."""
    route = Route(urls, index)
    for attempt in range(MAX_RESTARTS + 1):
        if attempt:
            tally.restarts += 1
        who = await _attest(http, route, provider, tally)
        if who is None:
            continue
        for n, resource in enumerate(RESOURCES):
            await _fetch(http, route, who, resource, tally, check=check and n == 0)
        return
    raise LoadError(f"attest: nonce or session lost {MAX_RESTARTS + 1} times")


@dataclass(slots=True)
class Storm:
    """The phase's stats and tally, and when the kill happened (None: it did not)."""

    timed: StormStats
    tally: Tally
    killed_at: float | None


async def boot_storm(
    http: aiohttp.ClientSession,
    urls: Sequence[str],
    provider: SyntheticSNPProvider,
    *,
    count: int,
    concurrency: int,
    seconds: float,
    kill_after: int,
    kill: Callable[[], Awaitable[None]],
) -> Storm:
    """``count`` enclaves; ``kill()`` runs once ``kill_after`` of them have finished.

    Finished means succeeded or gave up: the kill comes at the same point of the
    storm whatever the error count.
    """
    tally = Tally()
    finished = 0
    killer: asyncio.Task[None] | None = None
    killed_at: float | None = None
    start = time.perf_counter()

    async def killing() -> None:
        nonlocal killed_at
        killed_at = time.perf_counter() - start
        await kill()

    async def job(index: int) -> None:
        nonlocal finished, killer
        try:
            await enclave(http, urls, index, provider, tally, check=index == 0)
        finally:
            finished += 1
            if finished >= kill_after and killer is None:
                killer = asyncio.create_task(killing())

    timed = await run_timed(job, count=count, concurrency=concurrency, seconds=seconds)
    if killer is not None:
        await killer
    return Storm(timed=timed, tally=tally, killed_at=killed_at)


@dataclass(frozen=True, slots=True)
class Export:
    """A full JSONL export, the checkpoint it matches and the published verifier keys."""

    lines: list[bytes]
    note: str
    verifier_keys: list[str]


def _receipt_problems(
    received: Sequence[Received], releases: dict[int, dict[str, Any]], keys: Any
) -> tuple[set[int], list[str]]:
    """The seqs the receipts name, and what is wrong with them (signature, record, hash)."""
    answered: set[int] = set()
    problems: list[str] = []
    for got in received:
        try:
            receipt = decode_receipt_header(got.header)
            verify_receipt(receipt, keys)
        except BrokerError as exc:
            problems.append(f"receipt from {got.url}: {exc}")
            continue
        if receipt.seq in answered:
            problems.append(f"two receipts name record {receipt.seq}")
        answered.add(receipt.seq)
        record = releases.get(receipt.seq)
        if record is None:
            problems.append(f"receipt from {got.url} names record {receipt.seq}: no release")
            continue
        canonical = {k: v for k, v in record.items() if k != "hash"}
        if leaf_hash(rfc8785.dumps(canonical)) != receipt.leaf_hash:
            problems.append(f"receipt for record {receipt.seq}: leaf hash differs from the log's")
    return answered, problems


IN_FLIGHT = "in flight on the killed replica"


def _unanswered(
    unanswered: Sequence[dict[str, Any]], lost: Sequence[Lost], killed_url: str
) -> Counter[str]:
    """Why each release recorded but never answered went unanswered, as far as the client saw.

    A release names its token (``detail``: "token <jti>") and resource; the
    client's lost requests are matched on both.
    """
    seen = {(x.jti, x.resource): x for x in lost}
    why: Counter[str] = Counter({IN_FLIGHT: 0})
    for record in unanswered:
        jti = str(record.get("detail") or "").removeprefix("token ")
        request = seen.get((jti, str(record.get("resource"))))
        if request is None:
            why["UNEXPLAINED (no failed request for its token and resource)"] += 1
        elif request.url == killed_url and not request.why.startswith("HTTP"):
            why[IN_FLIGHT] += 1
        else:
            why[f"{request.why} ({request.url})"] += 1
    return why


def check_log(export: Export, tally: Tally, killed_url: str, result: Result) -> None:
    """The log against the receipts received; notes what holds, errors what does not."""
    keys = trusted_keys(export.verifier_keys)
    try:
        verified = verify_export(export.lines, [export.note], keys)
    except BrokerError as exc:
        result.errors.append(f"audit export does not verify: {exc}")
        return
    records = [json.loads(line) for line in export.lines]
    releases = {
        int(r["seq"]): r
        for r in records
        if r["event"] == "resource.released" and r.get("decision") == "allow"
    }
    doubled = sum(n - 1 for n in Counter(r["request_id"] for r in releases.values()).values())
    if doubled:
        result.errors.append(f"audit log: {doubled} releases recorded twice (same request_id)")
    answered, problems = _receipt_problems(tally.receipts, releases, keys)
    result.errors.extend(f"audit log: {p}" for p in problems[:5])
    if len(problems) > 5:
        result.errors.append(f"audit log: {len(problems) - 5} more receipt problems")
    if len(tally.receipts) > len(releases):
        result.errors.append(
            f"audit log: {len(tally.receipts):,} receipts received > {len(releases):,} releases"
        )
    unanswered = [r for seq, r in releases.items() if seq not in answered]
    why = _unanswered(unanswered, tally.lost, killed_url)
    result.notes.append(
        f"audit log: export of {verified.count:,} records verifies against its checkpoint; "
        f"{len(releases):,} releases recorded, {len(tally.receipts):,} receipts received, "
        f"{len(tally.receipts) - len(problems):,} signed and matching their record's leaf hash"
    )
    dropped_on_killed = sum(1 for x in tally.lost if x.url == killed_url)
    result.notes.append(
        f"in flight when killed: {why[IN_FLIGHT]} released but unanswered (their request to "
        f"the killed replica failed; {dropped_on_killed} resource requests to it failed, "
        "refused or cut off)"
    )
    others = {k: n for k, n in why.items() if k != IN_FLIGHT}
    if others:
        result.notes.append(
            "other releases recorded but unanswered: "
            + ", ".join(f"{n} {k}" for k, n in sorted(others.items()))
        )
    result.extra["audit"] = {
        "records": verified.count,
        "releases": len(releases),
        "receipts": len(tally.receipts),
        "unanswered": len(unanswered),
        "unanswered_why": dict(why),
        "lost_requests": len(tally.lost),
        "receipt_problems": len(problems),
        "unanswered_records": unanswered[:20],
        "lost": [(x.url, x.jti, x.resource, x.why) for x in tally.lost[:20]],
    }
