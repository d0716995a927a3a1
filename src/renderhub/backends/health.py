"""The render server's health check, as every backend asks it: GET /health on its handshake port."""

from __future__ import annotations

import asyncio
import ssl

PROBE_TIMEOUT = 0.5


async def answers(host: str, port: int, trust: ssl.SSLContext) -> bool:
    """Whether the render server answers its health check on this port (HTTPS, our CA's certificate)."""
    try:
        connecting = asyncio.open_connection(host, port, ssl=trust, server_hostname=host)
        reader, writer = await asyncio.wait_for(connecting, PROBE_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError):
        return False
    try:
        writer.write(b"GET /health HTTP/1.0\r\nHost: renderhub\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), PROBE_TIMEOUT)
        return status_line.split()[1:2] == [b"200"]
    except (OSError, TimeoutError, IndexError):
        return False
    finally:
        writer.close()
