"""The region directory, the latency probe, and CORS for the viewer pages of every region's hub."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from renderhub.api.access import hub
from renderhub.api.responses import JSON, json_response

router = APIRouter()

# A browser may send these on a cross-origin call to another region's hub (the viewer's session and relay calls).
ALLOWED_METHODS = ("GET", "PUT", "PATCH", "POST", "DELETE")
ALLOWED_HEADERS = {"authorization", "content-type", "ms-cv"}
EXPOSED_HEADERS = "MS-CV, Retry-After, WWW-Authenticate"
PREFLIGHT_MAX_AGE = "600"


@router.get("/regions", tags=["regions"])
async def list_regions(request: Request) -> Response:
    """Every region of this deployment: its name, the endpoint its sessions are created at, and the URL that
    measures the round trip to it. No token: it is what a client reads before it knows where to go."""
    directory = hub(request).regions
    return json_response(
        {
            "region": directory.own.name,
            "regions": [{"name": r.name, "endpoint": r.endpoint, "probeUrl": r.probe_url} for r in directory.regions],
        }
    )


@router.get("/probe", tags=["regions"])
async def probe(request: Request) -> Response:
    """An answer as fast as the hub can give one, for latency tests: no token, no database, a rate limit per
    client address (a probe is a few requests a second, not a load test)."""
    h = hub(request)
    h.probe_limiter.check(request.client.host if request.client else "")
    body = json.dumps({"region": h.regions.own.name}).encode()
    return Response(body, media_type=JSON, headers={"Cache-Control": "no-store"})


class RegionCors:
    """CORS for the origins of the directory's regions: the viewer served by one region's hub creates and
    connects to sessions at another's, with its token. Other origins get no CORS headers (the browser refuses)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        # The directory is the lifespan's (Starlette puts the app in the scope before its middleware).
        state = getattr(scope["app"].state, "hub", None) if origin else None
        if origin is None or state is None or origin not in state.regions.origins:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await self._preflight(origin, headers, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", origin.encode()),
                    (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, origin: str, headers: Headers, send: Send) -> None:
        asked = {h.strip().lower() for h in headers.get("access-control-request-headers", "").split(",") if h.strip()}
        allowed = not (asked - ALLOWED_HEADERS) and headers["access-control-request-method"] in ALLOWED_METHODS
        methods = ", ".join(ALLOWED_METHODS)
        response = Response(status_code=204 if allowed else 403)
        if allowed:
            response.headers.update(
                {
                    "Access-Control-Allow-Origin": origin,
                    "Access-Control-Allow-Methods": methods,
                    "Access-Control-Allow-Headers": ", ".join(sorted(ALLOWED_HEADERS)),
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                }
            )
        response.headers["Vary"] = "Origin"
        await response({"type": "http"}, _nothing, send)


async def _nothing() -> Message:
    return {"type": "http.disconnect"}
