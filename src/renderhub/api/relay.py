"""Signalling relay, outside the ARR API: a browser talks to one origin (the hub), media flows directly."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Request
from starlette.responses import Response

from renderhub.api.access import authenticate, hub
from renderhub.api.responses import error_response, json_response
from renderhub.api.schemas import check_session_id
from renderhub.errors import Conflict, RenderHubError
from renderhub.models import SessionStatus

router = APIRouter()


class RenderServerUnreachable(RenderHubError):
    status = 502
    code = "RenderServerUnreachable"


@router.get("/render/ice-servers")
async def ice_servers(request: Request) -> Response:
    """The STUN/TURN servers clients should use, as the render servers do (TURN credentials: token only)."""
    await authenticate(request, None)  # any account's token: the list is the same for all
    return json_response({"iceServers": hub(request).ice_servers})


async def _render_server(request: Request, account_id: str, session_id: str) -> str:
    """The base URL of a Ready session's render server, once the caller may reach it."""
    await authenticate(request, account_id)
    session = await hub(request).manager.get(account_id.lower(), check_session_id(session_id))
    if session.status is not SessionStatus.READY:
        raise Conflict(f"The session is {session.status}; a client can connect only while it is Ready.")
    return f"https://{session.hostname}:{session.handshake_port}"


@router.post("/render/{account_id}/{session_id}/offer")
async def relay_offer(request: Request, account_id: str, session_id: str) -> Response:
    """Forward a WebRTC offer to the session's render server and its answer back, unchanged."""
    url = await _render_server(request, account_id, session_id) + "/offer"
    try:
        answer = await hub(request).relay.post(
            url,
            content=await request.body(),
            headers={"Authorization": request.headers["authorization"], "Content-Type": "application/json"},
        )
    except httpx.HTTPError as exc:
        return error_response(RenderServerUnreachable(f"The render server did not answer: {type(exc).__name__}."))
    return Response(answer.content, status_code=answer.status_code, media_type="application/json; charset=utf-8")


@router.get("/render/{account_id}/{session_id}/reference")
async def relay_reference(request: Request, account_id: str, session_id: str) -> Response:
    """Forward a request for a frame's lossless reference (PNG) to the session's render server."""
    url = await _render_server(request, account_id, session_id) + "/reference"
    try:
        answer = await hub(request).relay.get(
            url, params=request.query_params, headers={"Authorization": request.headers["authorization"]}
        )
    except httpx.HTTPError as exc:
        return error_response(RenderServerUnreachable(f"The render server did not answer: {type(exc).__name__}."))
    kind = answer.headers.get("content-type", "application/json")
    return Response(
        answer.content, status_code=answer.status_code, media_type=kind, headers={"Cache-Control": "no-store"}
    )
