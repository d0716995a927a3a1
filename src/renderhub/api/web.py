"""The browser viewer: the static files of renderhub/web, served by the hub at /viewer/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PAGE = "viewer.html"

# An origin as a CSP source: anything else (a space, a quote, a ";") would change the policy, so it is left out.
CSP_ORIGIN = re.compile(r"https?://([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?")

HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Revalidate every time (ETag makes that cheap): the page's modules must never mix two versions.
    "Cache-Control": "no-cache",
}


def content_security_policy(origins: Iterable[str] = ()) -> str:
    """The page loads nothing from anywhere but the hub, and calls only the hubs of the deployment's regions (their
    session API and render relay, `origins`). WebRTC media is not governed by CSP, so it still flows."""
    connect = " ".join(["'self'", *sorted(o for o in set(origins) if CSP_ORIGIN.fullmatch(o))])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"media-src 'self' blob:; connect-src {connect}; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def viewer_headers(scope: Scope) -> dict[str, str]:
    """The headers of every viewer file, with the region directory as this hub holds it now."""
    # The lifespan's hub, read as RegionCors reads it: an app served without its lifespan has no directory.
    state = getattr(scope["app"].state, "hub", None) if "app" in scope else None
    origins: Iterable[str] = state.regions.origins if state is not None else ()
    return {"Content-Security-Policy": content_security_policy(origins), **HEADERS}


class ViewerFiles(StaticFiles):
    """StaticFiles with the viewer's headers on every file it serves."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(viewer_headers(scope))
        return response


router = APIRouter()


@router.get("/viewer", include_in_schema=False)
async def viewer_redirect() -> Response:
    # Relative, so it also works behind a proxy that adds a path prefix; the page's own URLs are relative too.
    return RedirectResponse("viewer/", status_code=308)


@router.get("/viewer/", include_in_schema=False)
async def viewer_page(request: Request) -> Response:
    headers = viewer_headers(request.scope)
    return FileResponse(WEB_DIR / PAGE, media_type="text/html; charset=utf-8", headers=headers)


router.mount("/viewer", ViewerFiles(directory=WEB_DIR, html=True), name="viewer")
