"""Which network addresses a fetch on a user's behalf refuses unless the operator allows them (no SSRF)."""

from __future__ import annotations

import ipaddress


def forbidden(address: str) -> bool:
    """Loopback, link-local, private and multicast addresses (an IPv4 address mapped into IPv6 as itself)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast
