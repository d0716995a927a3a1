"""Converted models' levels of detail (the RENDERHUB_draw_levels extension a conversion writes into its .arrAsset):
mapped from the file into arrays that go to GL buffers as they are, no vertex touched in Python. Checked first:
a file in storage may come from anyone, not only from a conversion."""

from __future__ import annotations

import io
import json
import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from renderhub.render.gltf import ModelError, invalid
from renderhub.render.vertices import VERTEX

EXTENSION = "RENDERHUB_draw_levels"
LAYOUT = "position:3f,normal:3f,texcoord:2f,color:4u8"  # render/vertices.py's VERTEX, which the file must hold
COLORED = "vertexColors"  # a batch whose vertex colours are not all white
MAX_LEVELS = 16
MAX_BATCHES = 100_000
UNLIT = "KHR_materials_unlit"
_GLB_JSON, _GLB_BIN = 0x4E4F534A, 0x004E4942


def peek(path: Path) -> tuple[dict[str, Any], int] | None:
    """The glTF JSON of a binary glTF that carries levels of detail, and its length (read without the rest of the
    file); None for any other file."""
    try:
        with path.open("rb") as file:
            head = file.read(20)
            if len(head) < 20 or head[:4] != b"glTF":
                return None
            _magic, version, _total, json_length, json_type = struct.unpack("<4sIIII", head)
            if version != 2 or json_type != _GLB_JSON or json_length > 64 * 1024 * 1024:
                return None
            header = json.loads(file.read(json_length))
    except (OSError, ValueError, RecursionError):
        return None  # the full loader reports what is wrong with it
    if not isinstance(header, dict) or not isinstance(header.get("extensions"), dict):
        return None
    return (header, json_length) if EXTENSION in header["extensions"] else None


class Mapped:
    """The file's binary chunk, mapped read-only: the arrays a load makes are views of it."""

    def __init__(self, path: Path, header_bytes: int) -> None:
        with path.open("rb") as file:
            self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
        start = 20 + header_bytes + (-header_bytes % 4)
        if start + 8 > len(self._map):
            raise invalid("the GLB has no binary chunk")
        length, kind = struct.unpack_from("<II", self._map, start)
        if kind != _GLB_BIN or start + 8 + length > len(self._map):
            raise invalid("the GLB's binary chunk is missing or cut short")
        self.start, self.length = start + 8, length

    def view(self, header: dict[str, Any], index: object, what: str) -> tuple[int, int]:
        """(offset in the file, length) of a bufferView of the binary chunk."""
        views = header.get("bufferViews")
        if not isinstance(views, list) or not isinstance(index, int) or not 0 <= index < len(views):
            raise invalid(f"{what} refers to bufferView {index!r}, which does not exist")
        view = views[index]
        offset, length = view.get("byteOffset", 0), view.get("byteLength")
        if view.get("buffer") != 0 or not all(isinstance(v, int) and v >= 0 for v in (offset, length)):
            raise invalid(f"{what}: bufferView {index} is not a range of the GLB's binary chunk")
        if offset + length > self.length:
            raise invalid(f"{what}: bufferView {index} runs past the end of the binary chunk")
        return self.start + offset, length

    def array(self, offset: int, dtype: np.dtype[Any], count: int) -> np.ndarray:
        return np.frombuffer(self._map, dtype, count, offset)

    def bytes(self, offset: int, length: int) -> bytes:
        return self._map[offset : offset + length]


def levels(header: dict[str, Any], mapped: Mapped) -> list[list[tuple[int | None, np.ndarray, np.ndarray, bool]]]:
    """Each level's batches as (material index, vertices, (m, 3) indices, vertex colours), full detail first; every
    index checked against its batch's vertices and every position finite, so nothing out of range reaches GL."""
    extension = header["extensions"][EXTENSION]
    if not isinstance(extension, dict) or extension.get("layout") != LAYOUT:
        raise ModelError("UnsupportedExtension", f"{EXTENSION}: a vertex layout this render server does not draw")
    chain = extension.get("levels")
    if not isinstance(chain, list) or not 0 < len(chain) <= MAX_LEVELS or not all(isinstance(v, dict) for v in chain):
        raise invalid(f"{EXTENSION}: 'levels' must be 1 to {MAX_LEVELS} objects")
    materials = header.get("materials", [])
    found = []
    for number, level in enumerate(chain):
        batches = level.get("batches")
        if not isinstance(batches, list) or len(batches) > MAX_BATCHES or not all(isinstance(b, dict) for b in batches):
            raise invalid(f"{EXTENSION}: level {number}'s 'batches' must be an array of objects")
        parts = []
        for batch in batches:
            what = f"{EXTENSION} level {number}"
            material = batch.get("material")
            if material is not None and (not isinstance(material, int) or not 0 <= material < len(materials)):
                raise invalid(f"{what} refers to material {material!r}, which does not exist")
            v_offset, v_length = mapped.view(header, batch.get("vertices"), what)
            i_offset, i_length = mapped.view(header, batch.get("indices"), what)
            if v_length % VERTEX.itemsize or i_length % 12 or v_offset % 4 or i_offset % 4:
                raise invalid(f"{what}: a batch's vertices or indices are not whole, aligned elements")
            vertices = mapped.array(v_offset, VERTEX, v_length // VERTEX.itemsize)
            indices = mapped.array(i_offset, np.dtype("<u4"), i_length // 4).reshape(-1, 3)
            if len(indices) and int(indices.max()) >= len(vertices):
                raise invalid(f"{what}: a batch's indices run past its {len(vertices):,} vertices")
            if not np.isfinite(vertices["p"]).all():
                raise invalid(f"{what}: a batch has non-finite positions")
            parts.append((material, vertices, indices, bool(batch.get(COLORED, False))))
        found.append(parts)
    return found


def material_fields(header: dict[str, Any], index: int, mapped: Mapped) -> dict[str, Any]:
    """A material's drawing fields from the glTF JSON; "image": the index of its base-colour image (None: none)."""
    material = header["materials"][index]
    if not isinstance(material, dict):
        raise invalid(f"material {index} is not an object")
    pbr = material.get("pbrMetallicRoughness", {})
    factor = pbr.get("baseColorFactor", [1.0, 1.0, 1.0, 1.0]) if isinstance(pbr, dict) else [1.0] * 4
    if not isinstance(factor, list) or len(factor) != 4 or not all(isinstance(c, int | float) for c in factor):
        raise invalid(f"material {index}: baseColorFactor must be 4 numbers")
    image = None
    texture_ref = pbr.get("baseColorTexture") if isinstance(pbr, dict) else None
    if isinstance(texture_ref, dict):
        image = _image_index(header, texture_ref.get("index"), mapped, f"material {index}")
    extensions = material.get("extensions")
    mode, cutoff = material.get("alphaMode"), material.get("alphaCutoff", 0.5)
    return {
        "name": str(material.get("name") or "material"),
        "base_color": tuple(float(c) for c in factor),
        "image": image,
        "double_sided": material.get("doubleSided") is True,
        "alpha_mode": mode if mode in ("MASK", "BLEND") else "OPAQUE",
        "alpha_cutoff": float(cutoff) if isinstance(cutoff, int | float) else 0.5,
        "unlit": isinstance(extensions, dict) and UNLIT in extensions,
    }


def _image_index(header: dict[str, Any], texture: object, mapped: Mapped, what: str) -> int:
    textures, images = header.get("textures", []), header.get("images", [])
    if not isinstance(texture, int) or not 0 <= texture < len(textures) or not isinstance(textures[texture], dict):
        raise invalid(f"{what} refers to texture {texture!r}, which does not exist")
    source = textures[texture].get("source")
    if not isinstance(source, int) or not 0 <= source < len(images) or not isinstance(images[source], dict):
        raise invalid(f"texture {texture} refers to image {source!r}, which does not exist")
    mapped.view(header, images[source].get("bufferView"), f"image {source}")
    return source


def image(header: dict[str, Any], source: int, mapped: Mapped) -> Image.Image:
    """An image embedded in the binary chunk (material_fields checked that it is), opened but not decoded."""
    offset, length = mapped.view(header, header["images"][source].get("bufferView"), f"image {source}")
    try:
        image = Image.open(io.BytesIO(mapped.bytes(offset, length)))
    except (OSError, ValueError) as exc:
        raise invalid(f"image {source} could not be read ({type(exc).__name__})") from None
    return image
