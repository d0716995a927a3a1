"""The delay line the region tests stand on: a far host's round trip is twice the delay, and only through it."""

from __future__ import annotations

import statistics
import subprocess

import pytest

from tests.delay_line import far_host, udp_round_trips
from tests.netns import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]


@pytest.mark.parametrize("delay_ms", [10, 40])
def test_a_far_host_is_twice_the_delay_away(delay_ms: int) -> None:
    with far_host(delay_ms / 1000) as far:
        rtt = statistics.median(udp_round_trips(far))
        assert 2 * delay_ms <= rtt <= 2 * delay_ms * 1.2 + 2, f"{rtt:.1f} ms round trip for {delay_ms} ms each way"
        # The far host reaches nothing but the line: no other interface, no other route.
        links = subprocess.run(far.command(["ip", "-o", "link"]), capture_output=True, text=True).stdout
        assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) == sorted(
            ["lo", f"rh{far.namespace.split('-')[2]}0f"]
        )
    gone = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert far.namespace not in gone
