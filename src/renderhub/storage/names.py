"""Blob names as conversions use them: folders that end in '/', files that stay inside their folder."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import PurePosixPath

from renderhub.storage.errors import PROCESS_FAILED, StorageFailed

_SEPARATORS = re.compile(r"[\\/]")


def folder(prefix: str | None) -> str:
    """'Input', 'Input/' and '/Input/' all name the folder 'Input/'; '' or None the whole container ('')."""
    stripped = (prefix or "").strip("/")
    return f"{stripped}/" if stripped else ""


def relative(name: str, start: str) -> PurePosixPath:
    """A blob's name below the folder `start`, refused when it would land outside it once on disk."""
    rest = name[len(start) :]
    # Backslashes count as separators too: Azure turns them into '/', and a Windows-made path may carry them.
    parts = _SEPARATORS.split(rest)
    if not name.startswith(start) or not rest or rest[0] in "/\\" or ".." in parts or "\0" in rest:
        raise StorageFailed(PROCESS_FAILED, f"The input blob '{name[:256]}' names a file outside the input folder.")
    return PurePosixPath(rest)


def layout(blobs: Iterable[tuple[str, int]], start: str) -> list[tuple[str, PurePosixPath]]:
    """Which blobs (name, size) under `start` become which files: each name relative to the folder. Empty folder
    markers ('Input/Textures/' or an empty 'Input/Textures' beside 'Input/Textures/x.png') are left out; a name that
    is both a file with content and a folder is refused."""
    kept: list[tuple[str, PurePosixPath, int]] = []
    for name, size in blobs:
        if name == start or (name.endswith("/") and size == 0):
            continue
        if name.endswith("/"):
            raise StorageFailed(PROCESS_FAILED, f"The input blob '{name[:256]}' has content but a folder's name.")
        kept.append((name, relative(name, start), size))
    folders = {str(parent) for _, path, _ in kept for parent in path.parents}
    files: list[tuple[str, PurePosixPath]] = []
    for name, path, size in kept:
        if str(path) in folders:
            if size == 0:
                continue
            raise StorageFailed(PROCESS_FAILED, f"The input blob '{name[:256]}' is both a file and a folder.")
        files.append((name, path))
    return files
