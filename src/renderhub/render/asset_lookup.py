"""Finding a model, or a file it references, by name inside the asset roots (stdlib only: the hub serves them too)."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from renderhub.render.gltf import ModelError

# .arrAsset: what the conversion service writes, a binary glTF (GLB) under ARR's name.
MODEL_SUFFIXES = (".glb", ".gltf", ".arrAsset")
_MODEL_SUFFIXES_LOWER = {suffix.lower() for suffix in MODEL_SUFFIXES}
# Azure's container names, which the hub's own storage keeps too: 3 to 63 lowercase letters, digits and hyphens.
CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}")


def _inside(root: Path, name: str) -> Path | None:
    """root/name if it stays inside root once symlinks and '..' are resolved."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts or "\\" in name or "\0" in name:
        return None
    candidate = (root / relative).resolve()
    return candidate if candidate.is_relative_to(root.resolve()) and candidate.is_file() else None


def find_named(name: str, roots: list[Path]) -> Path:
    """A model by name in the asset roots; names that try to leave the roots are refused."""
    if not name or len(name) > 512:
        raise ModelError("InvalidModelName", "A model name must be 1 to 512 characters.")
    for root in roots:
        for candidate in (name, *(name + suffix for suffix in MODEL_SUFFIXES)):
            found = _inside(root, candidate)
            if found is not None and found.suffix.lower() in _MODEL_SUFFIXES_LOWER:
                return found
    raise ModelError("ModelNotFound", f"No model named '{name[:128]}' in the asset directory.")


MAX_LISTED = 500  # named models a listing shows; an asset directory is the operator's, not a storage account


def named_models(roots: list[Path]) -> tuple[list[dict[str, object]], bool]:
    """The models in the asset roots, by the names a client loads them with (path and suffix), sorted; and
    whether there were more than MAX_LISTED."""
    found: dict[str, int] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() not in _MODEL_SUFFIXES_LOWER or not path.is_file():
                continue
            name = path.relative_to(root).as_posix()
            if _inside(root, name) is not None and name not in found:  # a link out of the root is no model of it
                found[name] = path.stat().st_size
            if len(found) > MAX_LISTED:
                break
    names = sorted(found)
    return [{"name": name, "bytes": found[name]} for name in names[:MAX_LISTED]], len(names) > MAX_LISTED


def find_referenced(name: str, roots: list[Path]) -> Path | None:
    """Any file inside the asset roots (a .gltf's buffers and images), or None."""
    if not name or len(name) > 512:
        return None
    return next((found for root in roots if (found := _inside(root, name)) is not None), None)
