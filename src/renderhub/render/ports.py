"""The render server's ports: bound by the server itself in ARR's range, and reported to its backend in a file."""

from __future__ import annotations

import json
import os
import random
import socket
from collections.abc import Sequence
from pathlib import Path

from renderhub.render.errors import RenderError

PORT_RANGE = (49152, 65534)  # the range ARR's swagger gives for handshakePort and arrInspectorPort
ATTEMPTS = 200  # random ports tried per socket before giving up


class NoFreePort(RenderError):
    """No port could be bound."""

    code = "NoFreePort"


def bind_ports(host: str, wanted: Sequence[int], attempts: int = ATTEMPTS) -> list[socket.socket]:
    """A bound socket for each wanted port (0: a free one in ARR's range), not listening yet: the port is this
    server's from now on, and a client connecting early is refused at once rather than left waiting."""
    bound: list[socket.socket] = []
    try:
        for port in wanted:
            bound.append(_bind(host, port, attempts))
    except NoFreePort:
        for sock in bound:
            sock.close()
        raise
    return bound


def _bind(host: str, port: int, attempts: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # No SO_REUSEADDR: with it, two servers could bind one port until the first listens.
    candidates = [port] if port else [random.randint(*PORT_RANGE) for _ in range(attempts)]
    for candidate in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.bind((host, candidate))
        except OSError:
            sock.close()
            continue
        return sock
    if port:
        raise NoFreePort(f"port {port} on {host} is in use")
    raise NoFreePort(f"no free port in {PORT_RANGE[0]}-{PORT_RANGE[1]} on {host} after {attempts} tries")


def write_ports(path: Path, handshake_port: int, inspector_port: int) -> None:
    """Tell the backend the ports (written whole, then renamed into place: a reader never sees half)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps({"handshake_port": handshake_port, "inspector_port": inspector_port}))
    os.replace(partial, path)


def read_ports(path: Path) -> tuple[int, int] | None:
    """The ports a server wrote, or None while it has not."""
    try:
        ports = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return int(ports["handshake_port"]), int(ports["inspector_port"])
