"""ARR's three conversion operations: thin handlers that parse, call the conversion manager, render."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from renderhub.api.access import authorize, hub
from renderhub.api.conversion_schemas import check_conversion_id, conversion_json, parse_conversion
from renderhub.api.responses import json_response
from renderhub.api.schemas import check_skip_token

CONVERSIONS = "/accounts/{account_id}/conversions"
CONVERSION = CONVERSIONS + "/{conversion_id}"
# As the real service answered a GET: a poller must never be handed a cached status.
NO_STORE = {"Cache-Control": "no-store,no-cache", "Pragma": "no-cache"}


async def create_conversion(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await authorize(request, account_id)
    conversion_id = check_conversion_id(request.path_params["conversion_id"])
    settings = parse_conversion(await request.body())
    conversion, created = await hub(request).conversions.create(account_id.lower(), conversion_id, settings)
    return json_response(conversion_json(conversion), 201 if created else 200)


async def get_conversion(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await authorize(request, account_id)
    conversion_id = check_conversion_id(request.path_params["conversion_id"])
    conversion = await hub(request).conversions.get(account_id.lower(), conversion_id)
    return json_response(conversion_json(conversion), headers=NO_STORE)


async def list_conversions(request: Request) -> Response:
    """Every conversion of the account, oldest first, a page at a time; `@nextLink` null on the last page."""
    account_id = request.path_params["account_id"]
    version = await authorize(request, account_id)
    skip = check_skip_token(request.query_params.get("skipToken", "0"))
    page, next_seq = await hub(request).conversions.list_page(account_id.lower(), skip)
    link = None
    if next_seq is not None:
        # The SDK follows @nextLink verbatim, so it must be a whole URL with the api-version.
        query = urlencode({"api-version": version, "skipToken": next_seq})
        link = f"{str(request.base_url).rstrip('/')}{request.url.path}?{query}"
    return json_response({"conversions": [conversion_json(c) for c in page], "@nextLink": link}, headers=NO_STORE)


routes = [
    Route(CONVERSION, get_conversion, methods=["GET"]),
    Route(CONVERSION, create_conversion, methods=["PUT"]),
    Route(CONVERSIONS, list_conversions, methods=["GET"]),
]
