"""The browser viewer: the static files of renderhub/web, served by the hub at /viewer/."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PAGE = "viewer.html"

# The page loads nothing from anywhere but the hub; WebRTC media is not governed by CSP, so it still flows.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (ETag makes that cheap): the page's modules must never mix two versions.
    "Cache-Control": "no-cache",
}


class ViewerFiles(StaticFiles):
    """StaticFiles with the viewer's headers on every file it serves."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        return response


router = APIRouter()


@router.get("/viewer", include_in_schema=False)
async def viewer_redirect() -> Response:
    # Relative, so it also works behind a proxy that adds a path prefix; the page's own URLs are relative too.
    return RedirectResponse("viewer/", status_code=308)


@router.get("/viewer/", include_in_schema=False)
async def viewer_page() -> Response:
    return FileResponse(WEB_DIR / PAGE, media_type="text/html; charset=utf-8", headers=HEADERS)


router.mount("/viewer", ViewerFiles(directory=WEB_DIR, html=True), name="viewer")
