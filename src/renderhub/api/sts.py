"""The Mixed Reality STS token endpoint: an account key in, a bearer token out."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from renderhub.api.access import hub
from renderhub.api.responses import json_response
from renderhub.auth import matching_slot
from renderhub.errors import BadRequest, TooManyRequests

router = APIRouter()
log = logging.getLogger(__name__)
STS_VERSIONS = (None, "2019-02-28-preview")


def _unauthorized() -> Response:
    # ARR's STS answered 401 with no body.
    return Response(status_code=401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _too_many(retry_after: int) -> Response:
    # No body, like the 401: the Azure SDK's STS client waits Retry-After and asks again.
    return Response(status_code=429, headers={"Retry-After": str(retry_after)})


def _printable(text: str) -> str:
    """An id or address from the request as it may go in a log line (no forged lines, no megabytes)."""
    text = text[:64]
    return text if text.isprintable() else repr(text)


async def get_token(request: Request, account_id: str) -> Response:
    version = request.query_params.get("api-version")
    if version not in STS_VERSIONS:
        raise BadRequest(f"The api-version '{version[:64]}' is not supported; use 2019-02-28-preview.")
    h = hub(request)
    address = request.client.host if request.client else "unknown"
    refusal = h.key_guesses.refusal(account_id, address)
    if refusal is not None:  # before the key is looked at: a right key is refused too, so nothing is learnt
        if refusal.first:
            log.warning(
                "STS: refusing account %s from %s for %d s: too many failed key checks",
                _printable(account_id), _printable(address), refusal.retry_after,
            )  # fmt: skip
        return _too_many(refusal.retry_after)
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    claimed_account, _, key = credential.strip().partition(":")
    account = None
    if scheme.lower() == "bearer" and claimed_account.lower() == account_id.lower() and key:
        account = await h.accounts.current(account_id.lower())
    slot = matching_slot(account, key) if account else None
    if account is None or slot is None:
        failure = h.key_guesses.failed(account_id, address)
        # Never the key nor the header: the account id and the address are what an operator needs.
        log.info(
            "STS: failed key check for account %s from %s (%d from this address for it, %d from this address, "
            "%d for the account in this window)",
            _printable(account_id), _printable(address), failure.by_caller, failure.by_address, failure.by_account,
        )  # fmt: skip
        return _unauthorized()
    h.key_guesses.succeeded(account_id, address)
    try:
        h.limiter.check("sts:" + account.id)
    except TooManyRequests as exc:
        return _too_many(exc.retry_after)
    token = h.tokens.issue(account, slot, h.clock.now())
    return json_response({"AccessToken": token}, headers={"Cache-Control": "no-store,no-cache"})


# Left out of FastAPI's document: api/openapi.py documents the two spellings once, as the swagger's GetToken.
for path in ("/Accounts/{account_id}/token", "/accounts/{account_id}/token"):
    router.add_api_route(path, get_token, methods=["GET"], include_in_schema=False)
