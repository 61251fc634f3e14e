"""Rate limits on auth/attest and a bound on concurrent verification work.

``/kbs/v0/auth`` and ``/kbs/v0/attest`` are the routes an unauthenticated
client can make the broker work on (a session row, a nonce, collateral
fetches, signature checks). Each is limited per client address with a token
bucket, and both share one global bucket, so neither one noisy client nor
many of them can take the broker's capacity. A refused request costs a dict
lookup: it is answered 429 with ``Retry-After`` before its body is read.

Requests that pass the rate limits then take a slot of a semaphore per route
(``verify_concurrency`` for attest, ``auth_concurrency`` for auth); the rest
wait up to ``queue_seconds`` and are refused with 429 too. The slots bound
the work in progress, and so the queue on the store, where a readiness probe
waits as well. The session's nonce is consumed only inside the handler, so a
client refused here retries with the same session.

Everything else (health, readiness, metrics, releases with a token, admin)
passes untouched: a flood on attest must not make a readiness probe fail.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from broker.api.errors import error_response
from broker.api.keys import REQUEST_ID
from broker.api.middleware import client_address
from broker.config import LimitsSettings
from broker.errors import BrokerError

__all__ = [
    "ATTEST_PATH",
    "AUTH_PATH",
    "RateLimited",
    "RateLimiter",
    "TokenBucket",
    "rate_limits",
]

AUTH_PATH = "/kbs/v0/auth"
ATTEST_PATH = "/kbs/v0/attest"
# Buckets kept for this many distinct clients; the least recently seen go first. An
# evicted client only gets a full bucket back, and the global bucket still holds.
MAX_TRACKED_CLIENTS = 50_000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RateLimited(BrokerError):
    """Too many requests; ``retry_after`` is whole seconds (at least 1)."""

    code = "RateLimited"
    status = 429

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


@dataclass(slots=True)
class TokenBucket:
    """``capacity`` tokens, refilled at ``rate`` per second; time is a parameter."""

    rate: float
    capacity: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, capacity: float, now: float) -> TokenBucket:
        return cls(rate=rate, capacity=capacity, tokens=capacity, updated=now)

    def _refill(self, now: float) -> None:
        # A clock that steps back must not mint tokens or push the bucket into the future.
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def wait(self, now: float) -> float:
        """Seconds until one token is available (0.0: available now); takes nothing."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        """Takes one token; call after ``wait`` returned 0.0 at the same ``now``."""
        self.tokens -= 1.0


class RateLimiter:
    """Per-client buckets per route plus one global bucket; not thread-safe (one loop)."""

    def __init__(self, limits: LimitsSettings, *, now: float) -> None:
        self._per_minute = {
            AUTH_PATH: limits.auth_per_client_per_minute,
            ATTEST_PATH: limits.attest_per_client_per_minute,
        }
        self._burst = float(limits.burst)
        global_rate = float(limits.global_per_second)
        self._global = TokenBucket.full(global_rate, max(global_rate, self._burst), now)
        self._clients: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()

    def check(self, route: str, client: str, now: float) -> float:
        """Admits (returns 0.0, one token taken from each bucket) or returns the wait.

        Both buckets are checked before either is charged, so a request the global
        bucket refuses does not also use up the client's allowance.
        """
        key = (route, client)
        bucket = self._clients.get(key)
        if bucket is None:
            bucket = TokenBucket.full(self._per_minute[route] / 60.0, self._burst, now)
            self._clients[key] = bucket
            if len(self._clients) > MAX_TRACKED_CLIENTS:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(key)
        wait = max(bucket.wait(now), self._global.wait(now))
        if wait == 0.0:
            bucket.take()
            self._global.take()
        return wait

    @property
    def tracked_clients(self) -> int:
        return len(self._clients)


def rate_limits(
    limits: LimitsSettings, *, clock: Callable[[], float] = time.monotonic
) -> Middleware:
    """The middleware; register it after ``request_context`` (it needs the request id).

    ``clock`` is monotonic seconds (a parameter so tests can move time).
    """
    limiter = RateLimiter(limits, now=clock())
    # Created outside a running loop: asyncio.Semaphore binds its loop on first use.
    slots = {
        AUTH_PATH: asyncio.Semaphore(limits.auth_concurrency),
        ATTEST_PATH: asyncio.Semaphore(limits.verify_concurrency),
    }
    queue_seconds = limits.queue_seconds

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path not in (AUTH_PATH, ATTEST_PATH):
            return await handler(request)
        wait = limiter.check(path, client_address(request), clock())
        if wait > 0.0:
            return _refused(
                request, RateLimited("too many requests: retry later", retry_after=wait)
            )
        slot = slots[path]
        if not await _acquire(slot, queue_seconds):
            return _refused(request, RateLimited("the broker is busy: retry later", retry_after=1))
        try:
            return await handler(request)
        finally:
            slot.release()

    return limit


async def _acquire(slots: asyncio.Semaphore, wait_seconds: float) -> bool:
    if not slots.locked():
        # Free slot: take it without a wait_for task, which a zero timeout would cancel.
        await slots.acquire()
        return True
    try:
        # A timeout scope, not wait_for: no extra task per queued request.
        async with asyncio.timeout(wait_seconds):
            await slots.acquire()
    except TimeoutError:
        return False
    return True


def _refused(request: web.Request, exc: RateLimited) -> web.Response:
    response = error_response(exc, request[REQUEST_ID])
    response.headers["Retry-After"] = str(exc.retry_after)
    return response
