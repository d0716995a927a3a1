"""ARR's conversion operations: not offered yet, said clearly in ARR's error shape."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from renderhub.api.access import authorize
from renderhub.errors import NotImplementedYet

router = APIRouter()


async def _not_available(request: Request, account_id: str) -> Response:
    await authorize(request, account_id)
    raise NotImplementedYet(
        "Asset conversions are not available in RenderHub yet: load glTF (.gltf/.glb) models directly."
    )


router.add_api_route("/accounts/{account_id}/conversions/{conversion_id}", _not_available, methods=["PUT", "GET"])
router.add_api_route("/accounts/{account_id}/conversions", _not_available, methods=["GET"])
