"""Round trips to each region, as ARR's latency page measured them: several requests over one open connection,
the median of their times (the connection's own set-up, TCP and TLS, is not one of them)."""

from __future__ import annotations

import asyncio
import ssl
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

SAMPLES = 10
TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class RoundTrip:
    """One region's measurement: its median in milliseconds, or why there is none."""

    name: str
    endpoint: str
    probe_url: str
    samples_ms: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.samples_ms) if self.samples_ms else None

    def to_json(self) -> dict[str, Any]:
        median = self.median_ms
        return {
            "name": self.name,
            "endpoint": self.endpoint,
            "probeUrl": self.probe_url,
            "roundTripMs": None if median is None else round(median, 2),
            "samplesMs": [round(s, 2) for s in self.samples_ms],
            "error": self.error,
        }


async def _measure(region: dict[str, str], trust: ssl.SSLContext | bool, samples: int) -> RoundTrip:
    name, endpoint, url = region["name"], region["endpoint"], region["probeUrl"]
    times: list[float] = []
    try:
        async with httpx.AsyncClient(verify=trust, timeout=TIMEOUT_SECONDS) as client:
            (await client.get(url)).raise_for_status()  # opens the connection: not a sample
            for _ in range(samples):
                started = time.perf_counter()
                response = await client.get(url)
                took = time.perf_counter() - started
                response.raise_for_status()
                times.append(took * 1000)
    except httpx.HTTPError as exc:
        return RoundTrip(name, endpoint, url, error=str(exc) or type(exc).__name__)
    return RoundTrip(name, endpoint, url, times)


def nearest_first(
    regions: list[dict[str, str]], trust: ssl.SSLContext | bool, samples: int = SAMPLES
) -> list[RoundTrip]:
    """Every region measured (side by side: each over a connection of its own), nearest first, the unreachable
    ones last."""

    async def main() -> list[RoundTrip]:
        return list(await asyncio.gather(*(_measure(region, trust, samples) for region in regions)))

    found = asyncio.run(main())
    return sorted(found, key=lambda r: (r.median_ms is None, r.median_ms or 0.0, r.name))
