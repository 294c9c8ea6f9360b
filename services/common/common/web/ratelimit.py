"""Per-key token buckets: plain logic with an injectable clock."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    capacity: int
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    updated: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.capacity)
        self.updated = self.clock()

    def take(self) -> float:
        """Take one token; return 0 on success, else the seconds until one is available."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """One bucket per caller. A bucket idle long enough to be full again is the same as a
    new one, so such buckets are dropped (swept at most once per refill time): the per-IP
    buckets of anonymous reads do not grow without bound."""

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.capacity, self.clock = rate, capacity, clock
        self.buckets: dict[str, TokenBucket] = {}
        self.refill_seconds = capacity / rate
        self._swept = clock()

    def retry_after(self, caller: str) -> int:
        """0 when the caller may proceed, else whole seconds to wait (at least 1)."""
        now = self.clock()
        if now - self._swept >= self.refill_seconds:
            self._sweep(now)
        bucket = self.buckets.get(caller)
        if bucket is None:
            bucket = self.buckets[caller] = TokenBucket(self.rate, self.capacity, self.clock)
        wait = bucket.take()
        return 0 if wait == 0 else max(1, math.ceil(wait))

    def _sweep(self, now: float) -> None:
        self._swept = now
        idle = [c for c, b in self.buckets.items() if now - b.updated >= self.refill_seconds]
        for caller in idle:
            del self.buckets[caller]
