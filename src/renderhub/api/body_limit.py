"""Request bodies over a small limit answer 413, counted as they stream in: Content-Length is not trusted alone."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from renderhub.api.responses import error_response
from renderhub.errors import RenderHubError
from renderhub.render.http import MAX_BODY_BYTES as RENDER_SERVER_MAX_BODY_BYTES

BODY_LIMIT_BYTES = 64 * 1024  # an ARR session body is a few hundred bytes
OFFER_LIMIT_BYTES = RENDER_SERVER_MAX_BODY_BYTES  # offers carry SDP of a few KiB; the render server takes this much
BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})  # what routes never read: no work on the hot path


class ContentTooLarge(RenderHubError):
    status = 413
    code = "ContentTooLarge"


class BodyLimit:
    """A pure ASGI middleware: a body over the limit stops being read and answers 413 in ARR's shape."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int = BODY_LIMIT_BYTES,
        offer_limit: int = OFFER_LIMIT_BYTES,
        upload_limit: int = BODY_LIMIT_BYTES,
    ) -> None:
        self.app = app
        self.limit = limit
        self.offer_limit = offer_limit
        self.upload_limit = upload_limit  # models uploaded to the hub's own storage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in BODILESS:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith("/render/") and path.endswith("/offer"):
            limit = self.offer_limit
        elif path.startswith("/accounts/") and "/storage/" in path:
            limit = self.upload_limit
        else:
            limit = self.limit
        for name, value in scope["headers"]:
            # Declared too large: answered before a byte of it is read (the server drops what still comes).
            if name == b"content-length" and value.isdigit() and (len(value) > 18 or int(value) > limit):
                await error_response(_too_large(limit))(scope, receive, send)
                return
        received = 0
        exceeded = started = answered = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _too_large(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started, answered
            if exceeded and not started:
                # Whatever the app made of the error (FastAPI turns it into a 400), the answer is this 413.
                started = answered = True
                await error_response(_too_large(limit))(scope, receive, send)
            if answered:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except ContentTooLarge:
            if started:
                if answered:
                    return
                raise
            await error_response(_too_large(limit))(scope, receive, send)


def _too_large(limit: int) -> ContentTooLarge:
    size = f"{limit // 1024} KiB" if limit % 1024 == 0 else f"{limit} bytes"
    return ContentTooLarge(f"The request body is over the {size} this endpoint accepts.")
