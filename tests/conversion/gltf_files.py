"""Small glTF files written by hand for the conversion tests, and a reader for the GLBs the converter writes."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

# A unit quad in the XY plane facing +Z, wound counter-clockwise seen from +Z.
QUAD = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float32)
QUAD_INDICES = np.array([0, 1, 2, 0, 2, 3], np.uint16)


class Builder:
    """Accumulates accessors in one data-URI buffer; `document()` returns the glTF JSON."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def accessor(self, values: np.ndarray, kind: str, *, normalized: bool = False, target: int | None = None) -> int:
        component = {np.float32: 5126, np.uint16: 5123, np.uint32: 5125, np.int16: 5122, np.uint8: 5121, np.int8: 5120}
        while len(self.data) % 4:
            self.data.append(0)
        raw = np.ascontiguousarray(values).tobytes()
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if target:
            view["target"] = target
        self.views.append(view)
        self.data += raw
        entry: dict[str, Any] = {
            "bufferView": len(self.views) - 1,
            "componentType": component[values.dtype.type],
            "count": len(values),
            "type": kind,
        }
        if normalized:
            entry["normalized"] = True
        if kind == "VEC3" and values.dtype == np.float32:
            entry["min"], entry["max"] = values.min(0).tolist(), values.max(0).tolist()
        self.accessors.append(entry)
        return len(self.accessors) - 1

    def quad_primitive(self, material: int | None = None, **attributes: np.ndarray) -> dict[str, Any]:
        primitive: dict[str, Any] = {
            "attributes": {"POSITION": self.accessor(QUAD, "VEC3")},
            "indices": self.accessor(QUAD_INDICES, "SCALAR"),
        }
        for name, values in attributes.items():
            primitive["attributes"][name] = self.accessor(values, {2: "VEC2", 3: "VEC3", 4: "VEC4"}[values.shape[1]])
        if material is not None:
            primitive["material"] = material
        return primitive

    def document(self, **extra: Any) -> dict[str, Any]:
        uri = "data:application/octet-stream;base64," + base64.b64encode(bytes(self.data)).decode()
        header: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": "renderhub tests"},
            "accessors": self.accessors,
            "bufferViews": self.views,
            "buffers": [{"byteLength": len(self.data), "uri": uri}],
        }
        header.update(extra)
        return header


def quad_gltf(path: Path, *, nodes: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    """A glTF of one quad mesh (with normals) shown by `nodes` (default: one plain node); extra keys replace."""
    builder = Builder()
    normals = np.tile(np.float32([0, 0, 1]), (4, 1))
    uv = QUAD[:, :2].copy()
    mesh = {"name": "quad", "primitives": [builder.quad_primitive(0, NORMAL=normals, TEXCOORD_0=uv)]}
    nodes = nodes or [{"name": "quad", "mesh": 0}]
    header = builder.document(
        scene=0,
        scenes=[{"nodes": [i for i, n in enumerate(nodes) if not n.pop("child", False)]}],
        nodes=nodes,
        meshes=[mesh],
        materials=[{"name": "paint", "pbrMetallicRoughness": {"baseColorFactor": [0.5, 0.5, 0.5, 1.0]}}],
    )
    header.update(extra)
    path.write_text(json.dumps(header))
    return path


def read_glb(path: Path) -> tuple[dict[str, Any], bytes]:
    data = path.read_bytes()
    assert data[:4] == b"glTF" and struct.unpack_from("<I", data, 4)[0] == 2
    (length,) = struct.unpack_from("<I", data, 12)
    header = json.loads(data[20 : 20 + length])
    rest = 20 + length
    (size,) = struct.unpack_from("<I", data, rest)
    return header, data[rest + 8 : rest + 8 + size]


def accessor(header: dict[str, Any], binary: bytes, index: int) -> np.ndarray:
    """A tightly packed accessor of the converter's output (it writes no strides)."""
    item = header["accessors"][index]
    view = header["bufferViews"][item["bufferView"]]
    dtype = {5126: np.float32, 5123: np.uint16, 5125: np.uint32, 5121: np.uint8}[item["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[item["type"]]
    values = np.frombuffer(binary, dtype, item["count"] * width, view["byteOffset"] + item.get("byteOffset", 0))
    return values.reshape(item["count"], width)
