"""Token buckets and the rate limiter, on a clock the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.api import limits
from broker.api.limits import ATTEST_PATH, AUTH_PATH, RateLimited, RateLimiter, TokenBucket
from broker.config import LimitsSettings


def _limiter(**kw: int) -> RateLimiter:
    base = {
        "auth_per_client_per_minute": 60,
        "attest_per_client_per_minute": 30,
        "global_per_second": 1000,
        "burst": 5,
    }
    return RateLimiter(LimitsSettings(**{**base, **kw}), now=0.0)


def test_burst_then_refill() -> None:
    """A client gets `burst` requests at once, then one per 60/rate seconds."""
    rl = _limiter()
    assert [rl.check(AUTH_PATH, "a", 0.0) for _ in range(5)] == [0.0] * 5
    wait = rl.check(AUTH_PATH, "a", 0.0)
    assert wait == pytest.approx(1.0)
    assert rl.check(AUTH_PATH, "a", 0.5) == pytest.approx(0.5)
    assert rl.check(AUTH_PATH, "a", 1.0) == 0.0


def test_clients_and_routes_are_separate() -> None:
    """One client's exhausted auth bucket leaves other clients and its attest bucket alone."""
    rl = _limiter()
    for _ in range(5):
        rl.check(AUTH_PATH, "a", 0.0)
    assert rl.check(AUTH_PATH, "a", 0.0) > 0
    assert rl.check(AUTH_PATH, "b", 0.0) == 0.0
    assert rl.check(ATTEST_PATH, "a", 0.0) == 0.0


def test_global_bucket_spans_clients() -> None:
    """Many clients together are held to global_per_second."""
    rl = _limiter(global_per_second=3, burst=3)
    admitted = [rl.check(AUTH_PATH, f"c{i}", 0.0) == 0.0 for i in range(10)]
    assert admitted.count(True) == 3
    assert rl.check(ATTEST_PATH, "new", 0.0) == pytest.approx(1 / 3)


def test_global_refusal_does_not_charge_the_client() -> None:
    """A request the global bucket refuses keeps the client's own tokens."""
    rl = _limiter(global_per_second=1, burst=2)
    rl.check(AUTH_PATH, "x", 0.0)
    rl.check(AUTH_PATH, "y", 0.0)
    for _ in range(5):
        assert rl.check(AUTH_PATH, "a", 0.0) > 0
    assert rl.check(AUTH_PATH, "a", 1.0) == 0.0
    assert rl.check(AUTH_PATH, "a", 2.0) == 0.0


def test_clock_stepping_back_mints_nothing() -> None:
    """A clock that goes backwards neither refills nor breaks the bucket."""
    bucket = TokenBucket.full(1.0, 1.0, now=100.0)
    assert bucket.wait(100.0) == 0.0
    bucket.take()
    assert bucket.wait(50.0) == pytest.approx(1.0)
    assert bucket.wait(101.0) == 0.0


def test_tracked_clients_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct addresses cannot grow the bucket table without bound."""
    monkeypatch.setattr(limits, "MAX_TRACKED_CLIENTS", 10)
    rl = _limiter()
    for i in range(100):
        rl.check(AUTH_PATH, f"10.0.0.{i}", float(i))
    assert rl.tracked_clients == 10


def test_retry_after_is_whole_seconds() -> None:
    """Retry-After rounds up to whole seconds and is at least 1."""
    assert RateLimited("x", retry_after=0.01).retry_after == 1
    assert RateLimited("x", retry_after=2.2).retry_after == 3
    assert RateLimited("x", retry_after=0).retry_after == 1
    assert RateLimited("x", retry_after=1).status == 429
    assert RateLimited("x", retry_after=1).code == "RateLimited"


@settings(max_examples=200, deadline=None)
@given(
    per_minute=st.integers(1, 600),
    burst=st.integers(1, 50),
    steps=st.lists(st.floats(0, 5, allow_nan=False), min_size=1, max_size=200),
)
def test_admitted_never_exceeds_burst_plus_rate(
    per_minute: int, burst: int, steps: list[float]
) -> None:
    """Over any request schedule, admissions stay within burst + rate x elapsed time."""
    rl = _limiter(auth_per_client_per_minute=per_minute, burst=burst, global_per_second=10**6)
    now = 0.0
    admitted = 0
    for step in steps:
        now += step
        if rl.check(AUTH_PATH, "a", now) == 0.0:
            admitted += 1
    assert admitted <= burst + now * per_minute / 60.0 + 1e-6
