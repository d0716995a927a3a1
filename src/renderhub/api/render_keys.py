"""Outside the ARR API: render servers ask whether their clients' tokens still hold (render/revocation.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from renderhub.api.access import hub, verified_claims
from renderhub.api.responses import json_response
from renderhub.errors import Unauthorized

router = APIRouter()


@router.get("/render/keys", include_in_schema=False)
async def key_serials(request: Request) -> Response:
    """The current key serials of the token's account; 401 once the token is revoked. Not rate limited: each
    render server asks at most twice a second, and a client's own requests must not be refused for it."""
    claims = await verified_claims(request, None)
    account = await hub(request).accounts.recent(claims.account_id)
    if account is None:  # deleted between the two reads
        raise Unauthorized("The access token has been revoked.")
    return json_response(
        {"accountId": account.id, "keySerials": {"1": account.primary_serial, "2": account.secondary_serial}},
        headers={"Cache-Control": "no-store"},
    )
