"""A minimal HTTP/1.1 responder on asyncio streams: the render server's endpoints stay dependency-free."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_HEADER_BYTES = 16384
MAX_BODY_BYTES = 256 * 1024
REASONS = {
    200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip
# A render server has one client (and the hub's health checks): a few connections per address are plenty, and a
# cap on all of them keeps a crowd of addresses from taking every file descriptor the streams need.
MAX_CONNECTIONS_PER_ADDRESS = 16
MAX_CONNECTIONS = 128
HEAD_SECONDS = 5.0  # from accept to the end of the request head, the TLS handshake included
REQUEST_SECONDS = 15.0  # the whole request, its body included; and the answer's writing
CLOSE_SECONDS = 2.0  # for the client's TLS close_notify before the socket is dropped
# After a refusal, what the client is still sending is read and dropped (within these bounds) before the close:
# closing with unread data sends a TCP reset, which can destroy the answer before the client reads it.
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 << 20
# Every answer goes over TLS (the render server has no plain-HTTP port).
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Strict-Transport-Security": "max-age=31536000"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""  # after the "?", undecoded


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)  # beyond the ones every answer has

    @classmethod
    def error(cls, status: int, code: str, message: str) -> Response:
        """The hub's error shape, so clients handle render-server errors like ARR's."""
        return cls.json(status, {"error": {"code": code, "message": message}})

    @classmethod
    def json(cls, status: int, payload: Any) -> Response:
        return cls(status, json.dumps(payload).encode())

    @classmethod
    def html(cls, body: str, headers: Mapping[str, str] | None = None) -> Response:
        return cls(200, body.encode(), "text/html; charset=utf-8", headers or {})

    def encode(self) -> bytes:
        headers = {
            "Content-Type": self.content_type,
            "Content-Length": str(len(self.body)),
            "Cache-Control": "no-store",
            "Connection": "close",
            **SECURITY_HEADERS,
            **self.headers,
        }
        head = f"HTTP/1.1 {self.status} {REASONS.get(self.status, '')}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        return (head + "\r\n").encode("latin-1") + self.body


Handler = Callable[[Request], Awaitable[Response]]

MALFORMED = Response.error(400, "BadRequest", "Malformed HTTP request.")
HEAD_TOO_LARGE = Response.error(
    431, "RequestHeaderFieldsTooLarge", f"The request head is over {MAX_HEADER_BYTES} bytes."
)
BODY_TOO_LARGE = Response.error(413, "ContentTooLarge", f"The request body is over {MAX_BODY_BYTES} bytes.")


class ConnectionLimits:
    """The connections open now, per client address and in all: past a cap, a new one is dropped at once."""

    def __init__(self, per_address: int = MAX_CONNECTIONS_PER_ADDRESS, total: int = MAX_CONNECTIONS) -> None:
        self.per_address, self.total = per_address, total
        self.open: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        if self.open[address] >= self.per_address or self.open.total() >= self.total:
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


async def _read_head(reader: asyncio.StreamReader) -> bytes | Response:
    """The request head, or the answer that refuses it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:  # no end of the head within the reader's limit (64 KiB)
        return HEAD_TOO_LARGE
    except asyncio.IncompleteReadError:
        return MALFORMED
    return HEAD_TOO_LARGE if len(head) > MAX_HEADER_BYTES else head


async def _read_request(head: bytes, reader: asyncio.StreamReader) -> Request | Response:
    """The request with its body, or the answer that refuses it."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3:
        return MALFORMED
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0") or 0)
    except ValueError:
        return MALFORMED
    if length < 0:
        return MALFORMED
    if length > MAX_BODY_BYTES:
        return BODY_TOO_LARGE
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        return MALFORMED
    path, _, query = parts[1].partition("?")
    return Request(parts[0].upper(), path, headers, body, query)


async def _linger(reader: asyncio.StreamReader) -> None:
    """Read and drop what the client still sends, within bounds, so that closing does not reset the connection."""
    with contextlib.suppress(OSError):  # TimeoutError, ssl.SSLError and ConnectionError among them
        async with asyncio.timeout(LINGER_SECONDS):
            left = LINGER_BYTES
            while left > 0 and (chunk := await reader.read(min(left, 65536))):
                left -= len(chunk)


async def _close(writer: asyncio.StreamWriter, *, at_once: bool) -> None:
    if not at_once:
        writer.close()
        with contextlib.suppress(OSError):
            async with asyncio.timeout(CLOSE_SECONDS):
                await writer.wait_closed()
                return
    writer.transport.abort()  # a client that stalls gets no graceful TLS close: that could take 30 s more


def serve(
    handler: Handler, tls: ssl.SSLContext | None = None, limits: ConnectionLimits | None = None
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """Wrap a request handler as an asyncio connection callback (one request per connection), over TLS when
    given a context: the handshake happens here, so that its time counts against the head's deadline."""
    limits = limits or ConnectionLimits()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else ""
        if not limits.admit(address):
            writer.transport.abort()
            return
        at_once = True
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                async with asyncio.timeout(HEAD_SECONDS):
                    if tls is not None:
                        await writer.start_tls(tls)
                    head = await _read_head(reader)
                received = head if isinstance(head, Response) else await _read_request(head, reader)
            response = received if isinstance(received, Response) else await handler(received)
            async with asyncio.timeout(REQUEST_SECONDS):
                writer.write(response.encode())
                await writer.drain()
                if isinstance(received, Response):
                    await _linger(reader)
            at_once = False
        except OSError:  # TimeoutError, ssl.SSLError and ConnectionError among them: the connection is dropped
            pass
        finally:
            await _close(writer, at_once=at_once)
            limits.release(address)

    return on_connection
