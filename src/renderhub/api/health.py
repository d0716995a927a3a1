"""Liveness for operators and load balancers: the hub answers and its store is reachable."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from renderhub.api.access import hub
from renderhub.api.responses import json_response

router = APIRouter()


@router.get("/health")
async def health(request: Request) -> Response:
    await hub(request).repo.count_accounts()
    return json_response({"status": "ok"})
