"""The render server's health check, as every backend asks it: GET /health on its handshake port."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from typing import Any

from renderhub.errors import BackendError

PROBE_TIMEOUT = 0.5


async def health(host: str, port: int, trust: ssl.SSLContext) -> dict[str, Any] | None:
    """The render server's health answer (HTTPS, our CA's certificate); None when it does not answer."""
    try:
        connecting = asyncio.open_connection(host, port, ssl=trust, server_hostname=host)
        reader, writer = await asyncio.wait_for(connecting, PROBE_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError):
        return None
    try:
        writer.write(b"GET /health HTTP/1.0\r\nHost: renderhub\r\n\r\n")
        response = await asyncio.wait_for(_read_response(reader), PROBE_TIMEOUT)
        head, _, body = response.partition(b"\r\n\r\n")
        if head.split()[1:2] != [b"200"]:
            return None
        answer = json.loads(body)
        return answer if isinstance(answer, dict) else None
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader, limit: int = 64 * 1024) -> bytes:
    """The answer, a few hundred bytes: to its Content-Length when it has one. The server's close comes about 40 ms
    after its answer (its TLS close_notify waits for our delayed ACK: measured), which a pooled server's
    assignment and every start would wait out; without a length, until the close."""
    response = b""
    while len(response) < limit and (chunk := await reader.read(limit)):
        response += chunk
        head, found, body = response.partition(b"\r\n\r\n")
        if found and (length := _content_length(head)) is not None and len(body) >= length:
            break
    return response


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


async def answers(host: str, port: int, trust: ssl.SSLContext) -> bool:
    """Whether the render server answers its health check on this port."""
    return await health(host, port, trust) is not None


async def until_assigned(
    host: str, port: int, trust: ssl.SSLContext, session_id: str, timeout: float, alive: Callable[[], bool]
) -> None:
    """Wait until a pooled render server's health names its new session: from then on it takes the account's
    tokens. BackendError when it dies or does not take it within `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (served := await health(host, port, trust)) is None or served.get("sessionId") != session_id:
        if not alive() or asyncio.get_running_loop().time() > deadline:
            raise BackendError("RenderServerExited", "The pooled render server did not take its session.")
        await asyncio.sleep(0.01)
