"""Test helper: a host far away, as a network namespace behind a delay line, for tests of regions and latency.

This kernel has no netem qdisc (`tc qdisc add ... netem` answers "Specified qdisc kind is unknown"), so the
delay is built: a TUN device on each side (one here, one in the namespace) and a forwarder process holding every
packet `delay` seconds before it passes it to the other side. The only path to the namespace is the line (no
veth, no default route out of it), so nothing reaches it undelayed. Addresses come from 198.18.0.0/15, as
tests/netns.py's; `python -m tests.delay_line` is the forwarder.
"""

from __future__ import annotations

import ctypes
import fcntl
import heapq
import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.netns import free_subnet, ip, remove_stale

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
CLONE_NEWNET = 0x40000000
READY = "ready"


@dataclass(frozen=True)
class FarHost:
    """The far host: namespace `namespace` at `peer_address`, reached from here (`host_address`) through a line
    that delays each packet `delay` seconds each way."""

    namespace: str
    host_address: str
    peer_address: str
    delay: float

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` as run on the far host."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@contextmanager
def far_host(delay: float, tag: str = "rh", index: int = 0) -> Iterator[FarHost]:
    """A far host `delay` seconds away each way (index: several at once); all of it is gone afterwards."""
    remove_stale(tag, "far")
    pid = os.getpid()
    subnet = free_subnet(pid + 97 * (index + 1))
    host, peer = (str(subnet.network_address + n) for n in (1, 2))
    far = FarHost(f"{tag}-far-{pid}-{index}", host, peer, delay)
    # Interface names have at most 15 characters: "rh" + pid (up to 7 digits) + index + "n"/"f".
    near_link, far_link = f"{tag}{pid}{index}n", f"{tag}{pid}{index}f"
    forwarder: subprocess.Popen[str] | None = None
    try:
        ip("netns", "add", far.namespace)
        ip("-n", far.namespace, "link", "set", "lo", "up")
        forwarder = subprocess.Popen(
            [sys.executable, "-m", "tests.delay_line", far.namespace, near_link, far_link, host, peer, str(delay)],
            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
        )  # fmt: skip
        assert forwarder.stdout is not None
        if forwarder.stdout.readline().strip() != READY:
            raise AssertionError(f"the delay line to {far.namespace} did not start")
        yield far
    finally:
        if forwarder is not None:
            forwarder.terminate()
            forwarder.wait(10)
            if forwarder.stdout is not None:
                forwarder.stdout.close()
        # The TUN devices go with the forwarder's descriptors; the namespace goes here.
        subprocess.run(["ip", "netns", "del", far.namespace], capture_output=True, timeout=30)


ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7007))
print("listening", flush=True)
while True:
    data, sender = s.recvfrom(2048)
    s.sendto(data, sender)
"""


def udp_round_trips(far: FarHost, count: int = 20) -> list[float]:
    """Milliseconds for each of `count` UDP datagrams to an echo on the far host and back: the line itself."""
    echo = subprocess.Popen(far.command([sys.executable, "-c", ECHO, far.peer_address]), stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        assert echo.stdout is not None and echo.stdout.readline().strip() == "listening"
        times = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(2)
            for n in range(count):
                started = time.perf_counter()
                udp.sendto(str(n).encode(), (far.peer_address, 7007))
                assert udp.recvfrom(2048)[0] == str(n).encode()
                times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        echo.kill()
        echo.wait()
        if echo.stdout is not None:
            echo.stdout.close()


# The forwarder


def _tun(name: str) -> int:
    """A new TUN device `name` in this thread's network namespace, without packet information headers."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def _setns(fd: int) -> None:
    """Move this thread into the network namespace `fd` refers to (Python 3.11 has no os.setns)."""
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def forward(namespace: str, near_link: str, far_link: str, host: str, peer: str, delay: float) -> None:
    """Make both ends of the line, address them point-to-point, then pass packets each way `delay` late."""
    near = _tun(near_link)
    home, there = os.open("/proc/thread-self/ns/net", os.O_RDONLY), os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    _setns(there)
    far = _tun(far_link)  # a TUN device stays in the namespace it was made in, whoever holds its descriptor
    _setns(home)
    os.close(home)
    os.close(there)
    ip("addr", "add", host, "peer", peer, "dev", near_link)
    ip("link", "set", near_link, "up")
    ip("-n", namespace, "addr", "add", peer, "peer", host, "dev", far_link)
    ip("-n", namespace, "link", "set", far_link, "up")
    ip("-n", namespace, "route", "add", "default", "dev", far_link)  # the far host reaches everything by the line
    print(READY, flush=True)
    other = {near: far, far: near}
    queue: list[tuple[float, int, int, bytes]] = []  # (due, order, to, packet)
    order = 0
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        readable, _, _ = select.select([near, far], [], [], timeout)
        now = time.monotonic()
        for fd in readable:
            while True:
                try:
                    packet = os.read(fd, 65536)
                except BlockingIOError:
                    break
                heapq.heappush(queue, (now + delay, order, other[fd], packet))
                order += 1
        while queue and queue[0][0] <= time.monotonic():
            _, _, to, packet = heapq.heappop(queue)
            try:
                os.write(to, packet)
            except OSError:
                pass  # a full queue drops the packet, as a congested link would


if __name__ == "__main__":
    forward(*sys.argv[1:6], float(sys.argv[6]))
