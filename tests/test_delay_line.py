"""The delay line the region tests stand on: a far host's round trip is twice the delay, and only through it."""

from __future__ import annotations

import socket
import statistics
import subprocess
import sys
import time

import pytest

from tests.delay_line import far_host
from tests.netns import unavailable

pytestmark = [pytest.mark.integration, pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))]

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7007))
print("listening", flush=True)
while True:
    data, sender = s.recvfrom(2048)
    s.sendto(data, sender)
"""


def round_trips(address: str, count: int = 20) -> list[float]:
    """Milliseconds for each of `count` UDP datagrams to the echo at `address` and back."""
    times = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(2)
        for n in range(count):
            started = time.perf_counter()
            udp.sendto(str(n).encode(), (address, 7007))
            assert udp.recvfrom(2048)[0] == str(n).encode()
            times.append((time.perf_counter() - started) * 1000)
    return times


@pytest.mark.parametrize("delay_ms", [10, 40])
def test_a_far_host_is_twice_the_delay_away(delay_ms: int) -> None:
    with far_host(delay_ms / 1000) as far:
        echo = subprocess.Popen(
            far.command([sys.executable, "-c", ECHO, far.peer_address]), stdout=subprocess.PIPE, text=True
        )
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == "listening"
            rtt = statistics.median(round_trips(far.peer_address))
            assert 2 * delay_ms <= rtt <= 2 * delay_ms * 1.2 + 2, f"{rtt:.1f} ms round trip for {delay_ms} ms each way"
            # The far host reaches nothing but the line: no other interface, no other route.
            links = subprocess.run(far.command(["ip", "-o", "link"]), capture_output=True, text=True).stdout
            assert sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines()) == sorted(
                ["lo", f"rh{far.namespace.split('-')[2]}0f"]
            )
        finally:
            echo.kill()
            echo.wait()
            if echo.stdout is not None:
                echo.stdout.close()
    gone = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert far.namespace not in gone
