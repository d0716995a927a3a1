"""The hub's connection limits: a deadline and size caps on request heads, connections per client address."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from typing import Any, ClassVar

import httptools
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("renderhub.api")

HEAD_TIMEOUT_SECONDS = 5.0  # from the connection (or the last answer) to a complete request head
HANDSHAKE_TIMEOUT_SECONDS = 5.0  # the TLS handshake, before a request head can even start
# A TLS close waits for the peer's close_notify; one that is reading answers within a round trip. Shorter than the
# graceful stop's wait, so a connection closed when the stop begins is gone before the event loop closes.
TLS_CLOSE_TIMEOUT_SECONDS = 2.0
MAX_HEAD_BYTES = 16 * 1024  # request line and headers together
MAX_HEADER_LINES = 100
LINGER_SECONDS = 1.0  # after a 431: read and drop what the client still sends, so it can read the answer
REFUSAL_LOG_SECONDS = 10.0  # a refused flood gets a line now and then, not one per connection


class HubLoop(uvloop.Loop):
    """uvloop whose TLS listeners give a handshake and a close seconds, not asyncio's minute and half minute
    (uvicorn has no such settings)."""

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", HANDSHAKE_TIMEOUT_SECONDS)
            kwargs.setdefault("ssl_shutdown_timeout", TLS_CLOSE_TIMEOUT_SECONDS)
        return await super().create_server(*args, **kwargs)  # type: ignore[return-value]


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline and a size cap on each request head, and a cap on the
    connections one client address holds. Costs a request two timer calls and a few counter updates."""

    max_per_address: ClassVar[int] = 64
    open_by_address: ClassVar[Counter[str]] = Counter()
    last_refusal_log: ClassVar[float] = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address: str | None = None  # set once counted
        self.refused = False
        self.answered_431 = False
        self.awaiting_head = True
        self.head_bytes = 0
        self.head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else None
        if address is not None:
            if self.open_by_address[address] >= self.max_per_address:
                self.refused = True
                self._log_refusal(address)
                transport.abort()
                return
            self.open_by_address[address] += 1
            self.address = address
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self._release()
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.answered_431:
            return  # lingering: what the client still sends is dropped until the connection closes
        if self.awaiting_head:
            self.head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadTooLarge):
                self._answer_431()
            else:
                self._invalid()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            self._invalid()
            return
        # A head arriving in pieces is refused as soon as it is too long, before the parser holds all of it.
        if self.awaiting_head and self.head_bytes > MAX_HEAD_BYTES:
            self._answer_431()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self.awaiting_head = False
        # The bytes counted may include the body's first part: measure the head itself only then.
        if len(self.headers) > MAX_HEADER_LINES or (
            self.head_bytes > MAX_HEAD_BYTES and self._head_size() > MAX_HEAD_BYTES
        ):
            raise _HeadTooLarge
        self.head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.awaiting_head = True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Ready for the next head; a body the answer did not wait for (a 413) must also be through by then.
        if not self.transport.is_closing() and self.cycle.response_complete:
            self._arm_head_timer()

    def shutdown(self) -> None:
        # The hub is stopping. An idle connection is cut rather than closed: a TLS close waits for the peer's
        # close_notify, which a pooled client that is not reading never sends, and a connection still open
        # when the event loop closes makes the hub's exit fail (EBUSY) after the whole graceful wait.
        if self.cycle is None or self.cycle.response_complete:
            self._cancel_head_timer()
            self.transport.abort()
        else:
            super().shutdown()  # an answer is being written: it ends, then the connection closes

    def handle_websocket_upgrade(self) -> None:
        self._release()  # the connection is the WebSocket protocol's from here on
        self._cancel_head_timer()
        super().handle_websocket_upgrade()

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _arm_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(HEAD_TIMEOUT_SECONDS, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        # abort, not close: a TLS close waits for the peer's close_notify, which a slowloris never sends
        self.transport.abort()

    def _release(self) -> None:
        if self.address is not None:
            self.open_by_address[self.address] -= 1
            if self.open_by_address[self.address] <= 0:
                del self.open_by_address[self.address]
            self.address = None

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _answer_431(self) -> None:
        self._cancel_head_timer()
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.abort()  # an answer is still being written on this connection: no room for ours
            return
        self.answered_431 = True
        body = json.dumps(
            {
                "error": {
                    "code": "RequestHeaderFieldsTooLarge",
                    "message": f"The request head is over {MAX_HEAD_BYTES} bytes or {MAX_HEADER_LINES} header lines.",
                }
            }
        ).encode()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]:
            head.append(name + b": " + value + b"\r\n")
        self.transport.write(b"".join(head) + b"\r\n" + body)
        self.head_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _log_refusal(self, address: str) -> None:
        now = time.monotonic()
        if now - GuardedHttp.last_refusal_log >= REFUSAL_LOG_SECONDS:
            GuardedHttp.last_refusal_log = now
            log.warning(
                "refused a connection from %s: it holds %d already (--max-connections-per-address)",
                address,
                self.max_per_address,
            )


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head that is over the caps."""


def guarded_http(max_per_address: int) -> type[GuardedHttp]:
    """The protocol class for one server: its own count of connections per address."""
    return type(
        "GuardedHttp",
        (GuardedHttp,),
        {"max_per_address": max_per_address, "open_by_address": Counter()},
    )
