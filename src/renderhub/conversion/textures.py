"""Textures: found by ARR's suffix rule, decoded to check them, and embedded as PNG or JPEG."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from PIL import Image

MAX_TEXTURE_SIZE = 16_384  # ARR's limit on either side of a texture
RENDER_TEXTURE_SIZE = 8192  # render servers refuse larger textures (render/model_limits.py): these are downscaled
MAX_TEXTURE_BYTES = 1 << 30
_DRIVE = re.compile(r"^[A-Za-z]:$")
_KEPT = {"PNG": "image/png", "JPEG": "image/jpeg"}  # glTF's own image types: embedded as they are


class TextureError(Exception):
    """Why a texture found could not be used (the conversion goes on without it, with a warning)."""


def _parts(reference: str) -> list[str]:
    """A stored path's components, whatever its separators; drive letters and '.' dropped."""
    parts = [p for p in re.split(r"[\\/]+", reference) if p not in ("", ".")]
    if parts and _DRIVE.match(parts[0]):
        parts = parts[1:]
    return parts


def _child(folder: Path, name: str) -> Path | None:
    """folder/name, or the one entry whose name differs only in case (ARR read its inputs on Windows)."""
    exact = folder / name
    if exact.exists() or name == "..":
        return exact
    try:
        matches = [entry for entry in folder.iterdir() if entry.name.lower() == name.lower()]
    except OSError:
        return None
    return matches[0] if len(matches) == 1 else None


def find_texture(reference: str, model_dir: Path, root: Path) -> Path | None:
    """The longest suffix of `reference` that names a file relative to the model's folder, inside `root`.

    ARR's rule: `..\\Textures\\X\\t.png` tries `<dir>/../Textures/X/t.png`, `<dir>/Textures/X/t.png`,
    `<dir>/X/t.png` and `<dir>/t.png`. Absolute paths are treated the same way. Nothing outside `root` (the
    downloaded input) is ever read, whatever the '..' and symbolic links say.
    """
    if reference.startswith("data:") or "\0" in reference:
        return None
    parts = _parts(unquote(reference) if "%" in reference else reference)
    top = root.resolve()
    for start in range(len(parts)):
        candidate: Path | None = model_dir
        for part in parts[start:]:
            candidate = _child(candidate, part) if candidate is not None else None
        if candidate is None:
            continue
        resolved = candidate.resolve()
        if resolved.is_relative_to(top) and resolved.is_file():
            return resolved
    return None


def prepare(data: bytes, name: str) -> tuple[bytes, str]:
    """(bytes, MIME type) to embed: PNG and JPEG as they are, anything Pillow reads (TGA, BMP, DDS...) as PNG.

    Every image is decoded once here, so that a broken one is a warning now rather than a failed load later.
    """
    if len(data) > MAX_TEXTURE_BYTES:
        raise TextureError(f"{len(data):,} bytes is more than {MAX_TEXTURE_BYTES:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's decompression-bomb warning: the size is checked below
            image: Image.Image = Image.open(io.BytesIO(data), formats=None)
            width, height = image.size
            if max(width, height) > MAX_TEXTURE_SIZE or min(width, height) < 1:
                raise TextureError(f"{width}x{height} pixels is outside 1 to {MAX_TEXTURE_SIZE} on a side")
            kind = image.format or ""
            if kind == "TGA" or PurePosixPath(name.lower()).suffix == ".tga":
                kind = "TGA"  # Pillow's TGA has no magic number: only ever re-encoded
            image.load()
            if kind in _KEPT and max(width, height) <= RENDER_TEXTURE_SIZE:
                return data, _KEPT[kind]
            image.thumbnail((RENDER_TEXTURE_SIZE, RENDER_TEXTURE_SIZE))
            if image.mode not in ("RGB", "RGBA", "L", "LA"):
                image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
            out = io.BytesIO()
            if kind == "JPEG" and image.mode in ("RGB", "L"):
                image.save(out, "JPEG", quality=92)
                return out.getvalue(), "image/jpeg"
            image.save(out, "PNG")
            return out.getvalue(), "image/png"
    except TextureError:
        raise
    except (OSError, ValueError, SyntaxError, MemoryError, Image.DecompressionBombError, EOFError) as e:
        raise TextureError(f"it could not be decoded ({type(e).__name__}: {str(e)[:120]})") from None
