"""Per-account request rate limiting: a token bucket per account in each replica's memory, sized to its share."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from renderhub.errors import TooManyRequests

MAX_KEYS = 100_000


class RateLimiter:
    """Allows `burst` requests at once and `per_second` sustained, split evenly between `replicas()` hub
    replicas (so the limit holds when a load balancer spreads requests); a rate of 0 turns it off."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,
        replicas: Callable[[], int] = lambda: 1,
        subject: str = "this account",
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self.subject = subject  # what a key stands for, in the 429's message
        self._monotonic = monotonic
        self._replicas = replicas
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def check(self, key: str) -> None:
        """Take one token for `key`, or raise TooManyRequests with the seconds until one is back."""
        if self.per_second <= 0:
            return
        share = max(1, self._replicas())
        per_second, burst = self.per_second / share, max(1.0, self.burst / share)
        now = self._monotonic()
        tokens, at = self._buckets.get(key, (burst, now))
        tokens = min(burst, tokens + (now - at) * per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry_after = max(1, math.ceil((1.0 - tokens) / per_second))
            raise TooManyRequests(
                f"Too many requests for {self.subject}; retry after {retry_after} seconds.",
                retry_after=retry_after,
            )
        if len(self._buckets) >= MAX_KEYS and key not in self._buckets:
            self._buckets.clear()  # a flood from many addresses must not grow memory: forgetting refills buckets
        self._buckets[key] = (tokens - 1.0, now)
