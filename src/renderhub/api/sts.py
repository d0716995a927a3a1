"""The Mixed Reality STS token endpoint: an account key in, a bearer token out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from renderhub.api.access import hub
from renderhub.api.responses import json_response
from renderhub.auth import matching_slot
from renderhub.errors import BadRequest, TooManyRequests

router = APIRouter()
STS_VERSIONS = (None, "2019-02-28-preview")


def _unauthorized() -> Response:
    # ARR's STS answered 401 with no body.
    return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def get_token(request: Request, account_id: str) -> Response:
    version = request.query_params.get("api-version")
    if version not in STS_VERSIONS:
        raise BadRequest(f"The api-version '{version[:64]}' is not supported; use 2019-02-28-preview.")
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    claimed_account, _, key = credential.strip().partition(":")
    if scheme.lower() != "bearer" or claimed_account.lower() != account_id.lower() or not key:
        return _unauthorized()
    h = hub(request)
    account = await h.accounts.current(account_id.lower())
    slot = matching_slot(account, key) if account else None
    if account is None or slot is None:
        return _unauthorized()
    try:
        h.limiter.check("sts:" + account.id)
    except TooManyRequests as exc:
        return Response(status_code=429, headers={"Retry-After": str(exc.retry_after)})
    token = h.tokens.issue(account, slot, h.clock.now())
    return json_response({"AccessToken": token}, headers={"Cache-Control": "no-store,no-cache"})


# Left out of FastAPI's document: api/openapi.py documents the two spellings once, as the swagger's GetToken.
for path in ("/Accounts/{account_id}/token", "/accounts/{account_id}/token"):
    router.add_api_route(path, get_token, methods=["GET"], include_in_schema=False)
