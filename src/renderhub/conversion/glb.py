"""Writing the model as one binary glTF 2.0 file: the `.arrAsset` render servers load."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

from renderhub.conversion.draw_levels import DrawBatch, extension
from renderhub.conversion.errors import bad_input
from renderhub.conversion.model import Model, Primitive
from renderhub.render.draw_levels import EXTENSION

_FLOAT, _UBYTE, _USHORT, _UINT = 5126, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_TYPES = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}
_MAX_GLB = (1 << 32) - 1  # GLB's lengths are 32-bit
Part = bytes | memoryview  # the arrays' own memory: a large model is never copied into one string


class _Writer:
    """Accumulates the binary chunk: bufferViews and accessors, each view 4-byte aligned."""

    def __init__(self) -> None:
        self.parts: list[Part] = []
        self.size = 0
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, data: Part, target: int | None = None) -> int:
        length = data.nbytes if isinstance(data, memoryview) else len(data)
        entry: dict[str, Any] = {"buffer": 0, "byteOffset": self.size, "byteLength": length}
        if target is not None:
            entry["target"] = target
        self.views.append(entry)
        self.parts.append(data)
        self.size += length
        if self.size % 4:
            self.parts.append(b"\0" * (-self.size % 4))
            self.size += -self.size % 4
        if self.size > _MAX_GLB:
            raise bad_input(f"the converted model would pass the binary glTF limit of {_MAX_GLB:,} bytes")
        return len(self.views) - 1

    def accessor(self, values: np.ndarray, *, indices: bool = False, bounds: bool = False) -> int:
        if indices:
            kind = _USHORT if values.max(initial=0) < 65535 else _UINT  # 65535 itself is a restart value
            values = values.astype(np.uint16 if kind == _USHORT else np.uint32)
            width = 1
        else:
            kind = _FLOAT if values.dtype == np.float32 else _UBYTE
            width = values.shape[1]
        data = np.ascontiguousarray(values, values.dtype.newbyteorder("<"))  # a copy only on big-endian machines
        entry: dict[str, Any] = {
            "bufferView": self.view(data.data.cast("B"), _ELEMENT_ARRAY_BUFFER if indices else _ARRAY_BUFFER),
            "componentType": kind,
            "count": len(values),
            "type": _TYPES[width],
        }
        if kind == _UBYTE:
            entry["normalized"] = True
        if bounds and len(values):
            entry["min"] = [float(v) for v in values.min(0)]
            entry["max"] = [float(v) for v in values.max(0)]
        self.accessors.append(entry)
        return len(self.accessors) - 1


def _primitive(writer: _Writer, primitive: Primitive) -> dict[str, Any]:
    attributes = {
        name: writer.accessor(values, bounds=name == "POSITION") for name, values in primitive.attributes.items()
    }
    entry: dict[str, Any] = {"attributes": attributes, "mode": primitive.mode}
    if primitive.indices is not None:
        entry["indices"] = writer.accessor(primitive.indices, indices=True)
    if primitive.material is not None:
        entry["material"] = primitive.material
    return entry


def _node(model: Model, index: int) -> dict[str, Any]:
    node = model.nodes[index]
    entry: dict[str, Any] = {}
    if node.name:
        entry["name"] = node.name
    if not np.array_equal(node.matrix, np.eye(4)):
        entry["matrix"] = [float(v) for v in node.matrix.T.ravel()]  # glTF stores columns
    if node.mesh is not None:
        entry["mesh"] = node.mesh
    if node.children:
        entry["children"] = node.children
    if node.extras:
        entry["extras"] = node.extras
    return entry


def document(
    model: Model, generator: str, levels: list[list[DrawBatch]] | None = None
) -> tuple[dict[str, Any], list[Part]]:
    """The glTF JSON and its binary chunk, in parts (a large model is never copied into one string); with `levels`,
    the render servers' levels of detail in the RENDERHUB_draw_levels extension too."""
    writer = _Writer()
    meshes = []
    for mesh in model.meshes:
        entry: dict[str, Any] = {"primitives": [_primitive(writer, p) for p in mesh.primitives]}
        if mesh.name:
            entry["name"] = mesh.name
        meshes.append(entry)
    images = []
    for image in model.images:
        item: dict[str, Any] = {"bufferView": writer.view(image.data), "mimeType": image.mime}
        if image.name:
            item["name"] = image.name
        images.append(item)
    header: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": generator},
        "scene": 0,
        "scenes": [{"nodes": model.roots}],
        "nodes": [_node(model, i) for i in range(len(model.nodes))],
        "meshes": meshes,
        "accessors": writer.accessors,
        "bufferViews": writer.views,
        "buffers": [{"byteLength": writer.size}],
    }
    for key, items in (
        ("materials", model.materials),
        ("textures", model.textures),
        ("samplers", model.samplers),
        ("images", images),
    ):
        if items:
            header[key] = items
    if levels:
        header["extensions"] = {EXTENSION: extension(levels, writer.view)}
    if used := sorted(_extensions(header)):
        header["extensionsUsed"] = used
    return header, writer.parts


def _extensions(item: object) -> set[str]:
    """Every extension named anywhere in the document (material and texture extensions are kept as they were)."""
    found: set[str] = set()
    if isinstance(item, dict):
        for key, value in item.items():
            if key == "extensions" and isinstance(value, dict):
                found.update(value)
            if key != "extras":
                found |= _extensions(value)
    elif isinstance(item, list):
        for value in item:
            found |= _extensions(value)
    return found


def encode(header: dict[str, Any], binary: list[Part]) -> list[Part]:
    """A GLB, in parts: 12-byte header, a JSON chunk padded with spaces, the binary chunk (4-byte aligned)."""
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 4)
    size = sum(part.nbytes if isinstance(part, memoryview) else len(part) for part in binary)
    total = 12 + 8 + len(text) + 8 + size
    if total > _MAX_GLB:
        raise bad_input(f"the converted model would pass the binary glTF limit of {_MAX_GLB:,} bytes")
    head = b"glTF" + struct.pack("<IIII", 2, total, len(text), 0x4E4F534A)
    return [head, text, struct.pack("<II", size, 0x004E4942), *binary]
