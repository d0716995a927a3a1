"""Test helper: a second host on a private LAN, as a Linux network namespace joined to this one by a veth pair.

Addresses come from the benchmarking range 198.18.0.0/15 (RFC 2544), one free /24 per LAN; the namespace
has only its loopback and its end of the link, with no default route, so nothing it sends leaves the machine.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

BENCHMARK_RANGE = ipaddress.ip_network("198.18.0.0/15")


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can): they need root and iproute2's `ip`."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs the tests as root)"
    if shutil.which("ip") is None:
        return "no `ip` command: install Debian's iproute2"
    return None


def ip(*args: str) -> str:
    """Run `ip ARGS`; its stdout, or an AssertionError carrying its stderr."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"`ip {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def _ip_json(*args: str) -> list[dict[str, Any]]:
    return list(json.loads(ip("-j", *args) or "[]"))


def free_subnet(seed: int) -> ipaddress.IPv4Network:
    """A /24 of the benchmarking range that no interface of this host uses yet (concurrent runs pick apart)."""
    used = [
        ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}").network
        for link in _ip_json("-4", "addr", "show")
        for a in link.get("addr_info", [])
    ]
    subnets = list(BENCHMARK_RANGE.subnets(new_prefix=24))
    for step in range(len(subnets)):
        subnet = subnets[(seed + step) % len(subnets)]
        assert isinstance(subnet, ipaddress.IPv4Network)
        if not any(subnet.overlaps(other) for other in used):
            return subnet
    raise AssertionError("no free /24 left in 198.18.0.0/15")


@dataclass(frozen=True)
class Lan:
    """This host (`host_address` on `host_link`) and a peer host: the namespace, `peer_address` on `peer_link`."""

    namespace: str
    host_link: str
    peer_link: str
    subnet: ipaddress.IPv4Network
    host_address: str
    peer_address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` as run on the peer host."""
        return ["ip", "netns", "exec", self.namespace, *argv]

    def links(self) -> dict[str, dict[str, Any]]:
        """The peer's network interfaces by name, with their counters (`stats64`)."""
        return {link["ifname"]: link for link in _ip_json("-n", self.namespace, "-s", "link", "show")}

    def routes(self) -> list[dict[str, Any]]:
        """Every IPv4 and IPv6 route of the peer, local and main tables included."""
        return [
            route
            for family in ("-4", "-6")
            for route in _ip_json("-n", self.namespace, family, "route", "show", "table", "all")
        ]

    def received(self) -> dict[str, int]:
        """What the peer has received so far: packets per interface, and UDP datagrams delivered to its sockets."""
        counts = {name: int(link["stats64"]["rx"]["packets"]) for name, link in self.links().items()}
        snmp = subprocess.run(self.command(["cat", "/proc/net/snmp"]), capture_output=True, text=True, timeout=30)
        header, values = (line.split() for line in snmp.stdout.splitlines() if line.startswith("Udp:"))
        counts["udp"] = int(dict(zip(header, values, strict=True))["InDatagrams"])
        return counts


def remove_stale(tag: str, kind: str = "lan") -> None:
    """Namespaces of a `kind` a killed test run left behind (their pid is gone): they would hold on to a /24."""
    for entry in _ip_json("netns", "list"):
        name = str(entry["name"])
        parts = name.split("-")
        pid = parts[2] if len(parts) >= 3 and parts[:2] == [tag, kind] else ""
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


@contextmanager
def lan(tag: str = "rh") -> Iterator[Lan]:
    """A peer host on a fresh /24 of 198.18.0.0/15; the namespace and both link ends are gone afterwards."""
    remove_stale(tag)
    pid = os.getpid()
    subnet = free_subnet(pid)
    host_address, peer_address = (str(subnet.network_address + n) for n in (1, 2))
    # Interface names have at most 15 characters: "rh" + pid (up to 7 digits) + "h"/"p".
    network = Lan(f"{tag}-lan-{pid}", f"{tag}{pid}h", f"{tag}{pid}p", subnet, host_address, peer_address)
    try:
        ip("netns", "add", network.namespace)
        ip("link", "add", network.host_link, "type", "veth", "peer", "name", network.peer_link,
           "netns", network.namespace)  # fmt: skip
        ip("addr", "add", f"{host_address}/{subnet.prefixlen}", "dev", network.host_link)
        ip("link", "set", network.host_link, "up")
        ip("-n", network.namespace, "addr", "add", f"{peer_address}/{subnet.prefixlen}", "dev", network.peer_link)
        ip("-n", network.namespace, "link", "set", network.peer_link, "up")
        ip("-n", network.namespace, "link", "set", "lo", "up")
        yield network
    finally:
        # Deleting one end of a veth pair deletes both, at once; a namespace's own links go asynchronously.
        for args in (("link", "del", network.host_link), ("netns", "del", network.namespace)):
            subprocess.run(["ip", *args], capture_output=True, timeout=30)
