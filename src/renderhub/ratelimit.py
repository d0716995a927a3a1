"""Per-account request rate limiting: a token bucket per account, in this hub's memory."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from renderhub.errors import TooManyRequests


class RateLimiter:
    """Allows `burst` requests at once and `per_second` sustained; a rate of 0 turns it off."""

    def __init__(self, per_second: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.burst = burst
        self._monotonic = monotonic
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def check(self, key: str) -> None:
        """Take one token for `key`, or raise TooManyRequests with the seconds until one is back."""
        if self.per_second <= 0:
            return
        now = self._monotonic()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            retry_after = max(1, math.ceil((1.0 - tokens) / self.per_second))
            raise TooManyRequests(
                f"Too many requests for this account; retry after {retry_after} seconds.",
                retry_after=retry_after,
            )
        self._buckets[key] = (tokens - 1.0, now)
