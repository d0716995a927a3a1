"""The per-account rate limit: a burst, then a sustained rate, with an honest Retry-After."""

from __future__ import annotations

import pytest

from renderhub.errors import TooManyRequests
from renderhub.ratelimit import RateLimiter


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_limited_then_refilled() -> None:
    ticks = Ticks()
    limiter = RateLimiter(per_second=0.5, burst=3, monotonic=ticks)
    for _ in range(3):
        limiter.check("a")
    with pytest.raises(TooManyRequests) as raised:
        limiter.check("a")
    assert raised.value.retry_after == 2  # one token takes 2 s at 0.5/s
    limiter.check("b")  # accounts do not share a bucket
    ticks.now += 2
    limiter.check("a")


def test_zero_rate_means_unlimited() -> None:
    limiter = RateLimiter(per_second=0, burst=0)
    for _ in range(1000):
        limiter.check("a")
