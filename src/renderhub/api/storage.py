"""The hub's own storage, per account: upload (a file, or a .zip unpacked), list, download and delete blobs in
containers at `/accounts/{account}/storage/{container}`, the URIs conversions name as linked storage."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from renderhub.api.access import authorize, hub
from renderhub.api.responses import json_response
from renderhub.datadir import private_dir
from renderhub.errors import BadRequest, NotFound
from renderhub.render.asset_lookup import CONTAINER

STORAGE = "/accounts/{account_id}/storage/{container}"
BLOB = STORAGE + "/{blob:path}"
MAX_ZIP_MEMBERS = 10_000


def _container_folder(request: Request, account_id: str) -> Path:
    container: str = request.path_params["container"]
    if not CONTAINER.fullmatch(container):
        raise BadRequest(
            "A container name is 3 to 63 lowercase letters, digits and single hyphens.", target="container"
        )
    root: Path = hub(request).storage_root
    return root / account_id.lower() / container


def blob_path(name: str) -> PurePosixPath:
    """A blob name as a relative path: no empty, '.' or '..' segments, no backslashes or NULs."""
    path = PurePosixPath(name)
    if (
        not name
        or len(name) > 1024
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or any(part in ("", ".", "..") for part in name.split("/"))
    ):
        raise BadRequest("A blob name is a relative path of plain folder and file names.", target="blob")
    return path


async def upload(request: Request) -> Response:
    """PUT a blob: the body streams to disk (the hub's upload limit applies), then takes the name whole. With
    `?extract=zip` the body is a .zip whose files land under the name as a folder (a model with its textures)."""
    account_id = request.path_params["account_id"]
    await authorize(request, account_id)
    folder = _container_folder(request, account_id)
    name = blob_path(request.path_params["blob"])
    extract = request.query_params.get("extract")
    if extract not in (None, "zip"):
        raise BadRequest("The extract parameter takes one value: zip.", target="extract")
    private_dir(folder)
    partial = folder / f".upload-{uuid.uuid4().hex}"
    try:
        with partial.open("wb") as file:
            async for chunk in request.stream():
                file.write(chunk)
        if extract == "zip":
            names = await asyncio.to_thread(_unzip, partial, folder / name, hub(request).upload_limit)
        else:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
            names = [name.as_posix()]
    finally:
        partial.unlink(missing_ok=True)
    return json_response({"blobs": names}, 201)


def _unzip(archive: Path, into: Path, limit: int) -> list[str]:
    """The archive's files under `into`, refusing names that leave it and archives that unpack past the limit."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if len(members) > MAX_ZIP_MEMBERS or sum(m.file_size for m in members) > limit:
                raise BadRequest(f"The .zip unpacks to more than {limit // 2**20} MiB or {MAX_ZIP_MEMBERS} files.")
            names = []
            for member in members:
                relative = blob_path(member.filename.replace("\\", "/"))
                target = into / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                # zipfile stops each member at its declared size (and checks its CRC): the sum above holds.
                with zipped.open(member) as source, target.open("wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                names.append((PurePosixPath(into.name) / relative).as_posix())
            return names
    except (zipfile.BadZipFile, EOFError) as exc:
        raise BadRequest("The body is not a readable .zip archive.") from exc


async def listing(request: Request) -> Response:
    """The container's blobs (under ?prefix=), with their sizes."""
    account_id = request.path_params["account_id"]
    await authorize(request, account_id)
    folder = _container_folder(request, account_id)
    prefix = request.query_params.get("prefix", "")
    blobs = []
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            name = path.relative_to(folder).as_posix()
            if path.is_file() and not path.name.startswith(".upload-") and name.startswith(prefix):
                blobs.append({"name": name, "size": path.stat().st_size})
    return json_response({"blobs": blobs})


def _inside(folder: Path, name: str) -> Path:
    """The blob's path, which stays inside its container once links are resolved (uploads never make links)."""
    path = folder / blob_path(name)
    if not path.resolve().is_relative_to(folder.resolve()):
        raise NotFound("No such blob in this container.", target="blob")
    return path


async def download(request: Request) -> Response:
    account_id = request.path_params["account_id"]
    await authorize(request, account_id)
    path = _inside(_container_folder(request, account_id), request.path_params["blob"])
    if not path.is_file():
        raise NotFound("No such blob in this container.", target="blob")
    return FileResponse(path)


async def delete(request: Request) -> Response:
    """DELETE a blob, or a folder and all it holds (a converted model with its files)."""
    account_id = request.path_params["account_id"]
    await authorize(request, account_id)
    path = _inside(_container_folder(request, account_id), request.path_params["blob"])
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_file():
        path.unlink()
    else:
        raise NotFound("No such blob or folder in this container.", target="blob")
    return Response(status_code=204)


routes = [
    Route(BLOB, download, methods=["GET"]),
    Route(BLOB, upload, methods=["PUT"]),
    Route(BLOB, delete, methods=["DELETE"]),
    Route(STORAGE, listing, methods=["GET"]),
]
