"""The hub's named models: their list for the viewer, their files for render servers on other nodes of a cluster
(outside the ARR API)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from renderhub.api.access import authenticate, hub
from renderhub.errors import NotFound
from renderhub.render.asset_lookup import find_named, find_referenced, named_models
from renderhub.render.gltf import ModelError

router = APIRouter()


@router.get("/render/assets")
async def assets(request: Request) -> Response:
    """The named models a session can load by name (besides `sample`), for the viewer's picker."""
    await authenticate(request, None)
    models, truncated = named_models(hub(request).asset_roots)
    return JSONResponse({"models": models, "truncated": truncated}, headers={"Cache-Control": "no-store"})


@router.get("/render/assets/{name:path}")
async def asset(request: Request, name: str) -> Response:
    """A model by the name a client asked for (redirected to its file name, so a .gltf's buffers and
    images resolve beside it), or a file a model references. Any account's token opens it."""
    await authenticate(request, None)
    roots = hub(request).asset_roots
    try:
        model = find_named(name, roots)
    except ModelError:
        referenced = find_referenced(name, roots)
        if referenced is None:
            raise NotFound(f"No model or model file named '{name[:128]}' in the asset directory.") from None
        return FileResponse(referenced)
    root = next(r for r in roots if model.is_relative_to(r.resolve()))
    relative = model.relative_to(root.resolve()).as_posix()
    if relative != name:
        return RedirectResponse(f"/render/assets/{quote(relative)}", status_code=307)
    return FileResponse(model)
