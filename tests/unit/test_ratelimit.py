"""Rate limits (common.web.ratelimit): buckets that burst and refill, one per caller."""

import pytest

from common.web.ratelimit import RateLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_bursts_then_refills() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, capacity=3, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock.now = 0.5
    assert bucket.take() == 0.0
    clock.now = 100.0  # refills only up to capacity
    assert [bucket.take() for _ in range(4)][-1] > 0


def test_rate_limiter_keeps_one_bucket_per_caller() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.1, capacity=1, clock=clock)
    assert limiter.retry_after("a") == 0
    assert limiter.retry_after("a") == 10
    assert limiter.retry_after("b") == 0


def test_idle_buckets_are_dropped_and_come_back_full() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, capacity=2, clock=clock)
    for n in range(1000):
        limiter.retry_after(f"ip:10.0.{n // 256}.{n % 256}")
    assert limiter.retry_after("busy") == 0 and limiter.retry_after("busy") == 0
    assert limiter.retry_after("busy") == 1
    clock.now = 2.5  # every bucket has refilled: all of them are swept
    assert limiter.retry_after("busy") == 0
    assert set(limiter.buckets) == {"busy"}
