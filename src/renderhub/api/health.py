"""Liveness for operators and load balancers: the hub answers, its store is reachable, how many replicas run."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from renderhub.api.access import hub
from renderhub.api.responses import json_response

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Response:
    state = hub(request)
    await state.accounts.count()  # the store answers
    # How many replicas share the database (and so the rate limit), as of this one's last heartbeat.
    return json_response({"status": "ok", "replicas": state.replicas.count})
