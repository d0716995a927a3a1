"""Which of an offer's ICE candidates the render server may send connectivity checks to."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

MAX_REMOTE_CANDIDATES = 10  # distinct addresses; a browser offers a handful (host, server-reflexive, relay)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Addresses a client far away cannot have: a candidate there makes the server send STUN into its own networks
# (loopback, the link, the LAN, the carrier's NAT, the benchmark range that tests/render/test_lan.py uses between
# namespaces). Each is allowed only where the server has an address in that same range: the client is then
# plausibly on its machine or network.
GUARDED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "127.0.0.0/8", "::1/128",  # loopback
        "169.254.0.0/16", "fe80::/10",  # link-local
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15", "fc00::/7",
    )
)  # fmt: skip
# Never a peer: the unspecified address reaches this host itself, and multicast or broadcast reach everyone.
NEVER = tuple(ipaddress.ip_network(n) for n in ("0.0.0.0/8", "::/128", "224.0.0.0/4", "255.255.255.255/32", "ff00::/8"))


@dataclass(frozen=True)
class Filtered:
    """The offer's SDP with only the candidates kept, and how many there were."""

    sdp: str
    offered: int
    dropped: int


def _address(host: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 on the wire
    return address


def _range(address: IPAddress) -> Network | None:
    return next((net for net in GUARDED if address.version == net.version and address in net), None)


def allowed(host: str, own: Iterable[str]) -> bool:
    """Whether the server may check a candidate at `host`, given its own addresses `own`."""
    if host.lower().endswith(".local"):
        return True  # an mDNS name (browsers hide host addresses behind them): resolved on the server's own link
    address = _address(host)
    if address is None or any(address.version == net.version and address in net for net in NEVER):
        return False
    guarded = _range(address)
    if guarded is None:
        return True
    return any((mine := _address(a)) is not None and _range(mine) == guarded for a in own)


def filter_candidates(sdp: str, own: Iterable[str], limit: int = MAX_REMOTE_CANDIDATES) -> Filtered:
    """Keep the offer's UDP candidates the server may check, up to `limit` distinct addresses (a candidate
    repeated in several media sections counts once); drop the rest (TCP ones too: the server's ICE is UDP only)."""
    own = list(own)
    kept: set[tuple[str, str]] = set()
    lines, offered, dropped = [], 0, 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            offered += 1
            bits = line.split()  # foundation component transport priority address port "typ" type ...
            well_formed = len(bits) >= 8 and bits[2].lower() == "udp"
            host = bits[4] if well_formed else ""
            key = (str(_address(host) or host.lower()), bits[5] if well_formed else "")
            if not well_formed or not allowed(host, own) or (key not in kept and len(kept) >= limit):
                dropped += 1
                continue
            kept.add(key)
        lines.append(line)
    if not dropped:
        return Filtered(sdp, offered, 0)
    return Filtered("\r\n".join(lines) + "\r\n", offered, dropped)
