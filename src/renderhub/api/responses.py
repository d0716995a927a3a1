"""Response rendering: ARR's JSON content type, error bodies, and the headers every response carries."""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from renderhub.api.schemas import error_json
from renderhub.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    RenderHubError,
    TooManyRequests,
    Unauthorized,
)

log = logging.getLogger("renderhub.api")

JSON = "application/json; charset=utf-8"
SUPPORTED_VERSIONS = b"2021-01-01-preview, 2021-01-01"


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def error_response(error: RenderHubError) -> Response:
    headers = {}
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    if isinstance(error, TooManyRequests):
        headers["Retry-After"] = str(error.retry_after)
    return json_response(error_json(error), error.status, headers)


async def on_renderhub_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RenderHubError)
    return error_response(exc)


async def on_http_error(_: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no such route or method), in ARR's shape."""
    assert isinstance(exc, StarletteHTTPException)
    error: RenderHubError
    if exc.status_code == 404:
        error = NotFound("No such resource.")
    elif exc.status_code == 405:
        error = MethodNotAllowed("This method is not allowed on this resource.")
    else:
        error = BadRequest(str(exc.detail))
        error.status = exc.status_code
    return error_response(error)


async def on_client_gone(request: Request, _: Exception) -> Response:
    """A client that hung up before its body was read: a line, not a traceback (nobody reads the answer)."""
    client = request.client.host if request.client else "a client"
    log.info("%s disconnected before its request body was read: %s %s", client, request.method, request.url.path)
    return Response(status_code=400)


async def on_unexpected(_: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return error_response(RenderHubError("An internal server error occurred."))


def correlation_vector() -> bytes:
    """A new MS-CV: 22 base64 characters and a `.0` suffix, as ARR sent."""
    return base64.b64encode(os.urandom(16))[:22] + b".0"


class ArrHeaders:
    """Adds MS-CV and api-supported-versions to every response (a plain ASGI middleware: cheap)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"ms-cv", correlation_vector()),
                    (b"api-supported-versions", SUPPORTED_VERSIONS),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
