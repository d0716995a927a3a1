"""The glTF document, checked before anything is decoded: version, references, bounds and a size estimate."""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from renderhub.render.errors import RenderError

# Required extensions whose absence only changes the look; anything else required means we would draw it wrongly.
_SPEC_GLOSS = "KHR_materials_pbrSpecularGlossiness"
SUPPORTED_REQUIRED = {_SPEC_GLOSS, "KHR_materials_unlit", "KHR_materials_emissive_strength"}
POINTS, TRIANGLES, TRIANGLE_STRIP = 0, 4, 5
COMPONENT_TYPES = {5120: "<i1", 5121: "<u1", 5122: "<i2", 5123: "<u2", 5125: "<u4", 5126: "<f4"}  # numpy's names
_COMPONENT_BYTES = {5120: 1, 5121: 1, 5122: 2, 5123: 2, 5125: 4, 5126: 4}
TYPE_COMPONENTS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_MODE_NAMES = {1: "lines", 2: "line loops", 3: "line strips", 6: "triangle fans"}


class ModelError(RenderError):
    """A model we refuse; `code` is stable (clients and tests match on it), `message` is for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def invalid(message: str) -> ModelError:
    return ModelError("InvalidModel", message)


def read_header(path: Path, data: bytes) -> tuple[dict[str, Any], bytes | None]:
    """The glTF JSON and the GLB binary chunk; the version is checked here, before any library sees the file."""
    binary = None
    if data[:4] == b"glTF":
        if len(data) < 20:
            raise invalid("truncated GLB header")
        version, _length, json_length, json_type = struct.unpack_from("<IIII", data, 4)
        if version == 1:
            raise ModelError("UnsupportedVersion", "glTF 1.0 is not supported; convert to glTF 2.0")
        if version != 2:
            raise ModelError("UnsupportedVersion", f"GLB version {version} is not supported; use glTF 2.0")
        if json_type != 0x4E4F534A or 20 + json_length > len(data):
            raise invalid("GLB's first chunk is not a complete JSON chunk")
        text = data[20 : 20 + json_length]
        rest = 20 + json_length + (-json_length % 4)
        if rest + 8 <= len(data):
            bin_length, bin_type = struct.unpack_from("<II", data, rest)
            if bin_type == 0x004E4942:
                binary = data[rest + 8 : rest + 8 + bin_length]
    else:
        text = data
    try:
        header = json.loads(text.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid("the file is neither binary glTF (GLB) nor glTF JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("asset"), dict):
        raise invalid("not a glTF file: no 'asset' object")
    version = str(header["asset"].get("version", ""))
    if version.split(".")[0] == "1":
        raise ModelError("UnsupportedVersion", "glTF 1.0 is not supported; convert to glTF 2.0")
    if version.split(".")[0] != "2":
        raise ModelError("UnsupportedVersion", f"glTF version {version!r} is not supported; use glTF 2.0")
    return header, binary


def _items(header: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = header.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise invalid(f"'{key}' must be an array of objects")
    return items


def _index(value: object, count: int | None, what: str) -> int:
    """A valid index into `count` things, or any non-negative integer when `count` is None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or (count is not None and value >= count):
        wrong = (
            "refers to {!r}, which does not exist" if count is not None else "must be a non-negative integer, not {!r}"
        )
        raise invalid(f"{what} {wrong.format(value)}")
    return value


def _uints(item: dict[str, Any], what: str, **defaults: int | None) -> list[int]:
    return [_index(item.get(key, default), None, f"{what} {key}") for key, default in defaults.items()]


def _numbers(value: object, count: int, what: str) -> None:
    if not isinstance(value, list) or len(value) != count:
        raise invalid(f"{what} must be {count} numbers")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise invalid(f"{what} must be {count} finite numbers")


def _resource_size(folder: Path, uri: object, what: str) -> int:
    """Bytes of an external file a model refers to; only files beside the model, never elsewhere on this machine."""
    if not isinstance(uri, str):
        raise invalid(f"{what} has no usable uri")
    if uri.startswith("data:"):
        return 0
    if "://" in uri:
        raise invalid(f"{what} refers to {uri!r}: only files uploaded with the model are read")
    target = (folder / unquote(uri)).resolve()
    if not target.is_relative_to(folder.resolve()):
        raise invalid(f"{what} refers to {uri!r}, outside the model's folder")
    if not target.is_file():
        raise invalid(f"{what} refers to {uri!r}, which is missing")
    return target.stat().st_size


def _walk(header: dict[str, Any]) -> Iterator[int]:
    """Node indices of the default scene, each once; refuses cycles and shared nodes (a glTF scene is a tree)."""
    nodes, scenes = _items(header, "nodes"), _items(header, "scenes")
    if not scenes:
        return
    scene = scenes[_index(header.get("scene", 0), len(scenes), "'scene'")]
    roots = scene.get("nodes", [])
    if not isinstance(roots, list):
        raise invalid("a scene's 'nodes' must be an array")
    seen: set[int] = set()
    stack = [_index(r, len(nodes), "a scene") for r in roots]
    while stack:
        n = stack.pop()
        if n in seen:
            raise invalid(f"node {n} appears twice in the hierarchy (a cycle or a shared node)")
        seen.add(n)
        children = nodes[n].get("children", [])
        if not isinstance(children, list):
            raise invalid(f"node {n}: 'children' must be an array")
        stack.extend(_index(c, len(nodes), f"node {n}") for c in children)
        yield n


def _sparse(sparse: object, count: int, size: int, views: list[dict[str, Any]], i: int) -> None:
    """A sparse accessor's substitutions: no more than its elements, each array inside its bufferView."""
    if not isinstance(sparse, dict):
        raise invalid(f"accessor {i}: 'sparse' must be an object")
    (substituted,) = _uints(sparse, f"accessor {i} sparse", count=None)
    if substituted > count:
        raise invalid(f"accessor {i} substitutes {substituted:,} of its {count:,} elements")
    for part in ("indices", "values"):
        item = sparse.get(part)
        if not isinstance(item, dict):
            raise invalid(f"accessor {i}: sparse '{part}' must be an object")
        view = views[_index(item.get("bufferView"), len(views), f"accessor {i} sparse {part}")]
        (offset,) = _uints(item, f"accessor {i} sparse {part}", byteOffset=0)
        each = _COMPONENT_BYTES.get(item.get("componentType"), 4) if part == "indices" else size  # type: ignore[arg-type]
        if offset + substituted * each > view["byteLength"]:
            raise invalid(f"accessor {i}: sparse {part} run past the end of their bufferView")


@dataclass
class Estimate:
    triangles: int = 0
    vertices: int = 0
    points: int = 0
    skipped: int = 0
    data_bytes: int = 0
    skipped_modes: set[str] = field(default_factory=set)


def check_header(header: dict[str, Any], binary: bytes | None, folder: Path) -> Estimate:
    """Validate what the loader relies on and estimate the model's size, all from the JSON: cheap and bounded."""
    required = header.get("extensionsRequired", [])
    if not isinstance(required, list):
        raise invalid("'extensionsRequired' must be an array")
    if unsupported := sorted(str(e) for e in required if e not in SUPPORTED_REQUIRED):
        raise ModelError("UnsupportedExtension", f"the model requires {', '.join(unsupported)}, which is not supported")
    order = list(_walk(header))  # the scene graph first: its errors explain a file better than missing data does
    estimate = Estimate()
    buffers, views, accessors = _items(header, "buffers"), _items(header, "bufferViews"), _items(header, "accessors")
    buffer_sizes = []
    for i, b in enumerate(buffers):
        (length,) = _uints(b, f"buffer {i}", byteLength=None)
        if "uri" in b:
            size = _resource_size(folder, b["uri"], f"buffer {i}")
            estimate.data_bytes += size
            if size and size < length:
                raise invalid(f"buffer {i} is {size} bytes, shorter than its byteLength {length}")
        elif i != 0 or binary is None or len(binary) < length:
            raise invalid(f"buffer {i} has no uri and no matching GLB binary chunk")
        buffer_sizes.append(length)
    for i, v in enumerate(views):
        buffer = _index(v.get("buffer"), len(buffers), f"bufferView {i}")
        offset, length = _uints(v, f"bufferView {i}", byteOffset=0, byteLength=None)
        if offset + length > buffer_sizes[buffer]:
            raise invalid(f"bufferView {i} runs past the end of buffer {buffer}")
    counts: list[int] = []
    for i, a in enumerate(accessors):
        count, offset = _uints(a, f"accessor {i}", count=None, byteOffset=0)
        size = _COMPONENT_BYTES.get(a.get("componentType"), 0) * TYPE_COMPONENTS.get(a.get("type"), 0)  # type: ignore[arg-type]
        if not size:
            raise invalid(f"accessor {i} has an invalid type or componentType")
        if "bufferView" in a:
            view = views[_index(a["bufferView"], len(views), f"accessor {i}")]
            stride = view.get("byteStride", size)
            # A stride under the element size overlaps elements: count x size bytes decoded from far fewer in the file.
            if (
                isinstance(stride, bool)
                or not isinstance(stride, int)
                or stride < size
                or ("byteStride" in view and (stride > 252 or stride % 4))  # the spec's bounds for a given stride
            ):
                raise invalid(f"accessor {i}: its bufferView's byteStride {stride!r} does not fit {size}-byte elements")
            if count and offset + stride * (count - 1) + size > view["byteLength"]:
                raise invalid(f"accessor {i} runs past the end of its bufferView ({count:,} elements)")
        else:
            estimate.data_bytes += count * size  # decoded as zeros (or sparse values) in memory: count it
        if "sparse" in a:
            _sparse(a["sparse"], count, size, views, i)
        counts.append(count)
    for i, image in enumerate(_items(header, "images")):
        if "uri" in image:
            estimate.data_bytes += _resource_size(folder, image["uri"], f"image {i}")
        else:
            _index(image.get("bufferView"), len(views), f"image {i}")
    textures, images = _items(header, "textures"), _items(header, "images")
    for i, t in enumerate(textures):
        if "source" in t:
            _index(t["source"], len(images), f"texture {i}")
    for i, m in enumerate(_items(header, "materials")):
        pbr = m.get("pbrMetallicRoughness", {})
        if not isinstance(pbr, dict):
            raise invalid(f"material {i}: 'pbrMetallicRoughness' must be an object")
        if "baseColorFactor" in pbr:
            _numbers(pbr["baseColorFactor"], 4, f"material {i} baseColorFactor")
        if "baseColorTexture" in pbr:
            texture = pbr["baseColorTexture"]
            _index(texture.get("index") if isinstance(texture, dict) else None, len(textures), f"material {i}")
    materials, meshes = len(_items(header, "materials")), _items(header, "meshes")
    per_mesh: list[tuple[int, int, int]] = []
    for i, mesh in enumerate(meshes):
        primitives = mesh.get("primitives")
        if not isinstance(primitives, list) or not all(isinstance(p, dict) for p in primitives):
            raise invalid(f"mesh {i}: 'primitives' must be an array of objects")
        triangles = vertices = points = 0
        for p in primitives:
            attributes, mode = p.get("attributes"), p.get("mode", TRIANGLES)
            if not isinstance(attributes, dict) or mode not in range(7):
                raise invalid(f"mesh {i}: a primitive has no attributes or an invalid mode")
            sizes = {counts[_index(a, len(accessors), f"mesh {i} {name}")] for name, a in attributes.items()}
            vertex_count = counts[_index(attributes.get("POSITION"), len(accessors), f"mesh {i} POSITION")]
            if "material" in p:
                _index(p["material"], materials, f"mesh {i}")
            if mode not in (POINTS, TRIANGLES, TRIANGLE_STRIP):
                estimate.skipped += 1
                estimate.skipped_modes.add(_MODE_NAMES[mode])
                continue
            if len(sizes) != 1:
                raise invalid(f"mesh {i}: a primitive's attributes have different counts {sorted(sizes)}")
            n = counts[_index(p["indices"], len(accessors), f"mesh {i} indices")] if "indices" in p else vertex_count
            if mode == POINTS:
                points += n
                continue
            if mode == TRIANGLES and n % 3:
                raise invalid(f"mesh {i}: {n} triangle corners is not a multiple of 3")
            triangles += n // 3 if mode == TRIANGLES else max(n - 2, 0)
            vertices += vertex_count
        per_mesh.append((triangles, vertices, points))
    nodes = _items(header, "nodes")
    for n in order:
        node = nodes[n]
        for key, count in (("matrix", 16), ("translation", 3), ("rotation", 4), ("scale", 3)):
            if key in node:
                _numbers(node[key], count, f"node {n} {key}")
        if "mesh" in node:
            triangles, vertices, points = per_mesh[_index(node["mesh"], len(meshes), f"node {n}")]
            estimate.triangles += triangles
            estimate.vertices += vertices
            estimate.points += points
    return estimate


def view_bytes(header: dict[str, Any], binary: bytes | None, folder: Path, view: dict[str, Any]) -> bytes | memoryview:
    """A bufferView's bytes (check_header made sure they exist); the GLB chunk's are a view, never a copy."""
    buffer = header["buffers"][view["buffer"]]
    start, length = view.get("byteOffset", 0), view["byteLength"]
    uri = buffer.get("uri")
    if uri is None:
        return memoryview(binary or b"")[start : start + length]
    if uri.startswith("data:"):
        return base64.b64decode(uri.partition(",")[2])[start : start + length]
    with (folder / unquote(uri)).open("rb") as f:  # check_header made sure it lies in the model's folder
        f.seek(start)
        return f.read(length)


def without_specular_glossiness(header: dict[str, Any]) -> bool:
    """Map KHR_materials_pbrSpecularGlossiness to a plain base colour; trimesh's own conversion greys textures out."""
    changed = False
    for material in _items(header, "materials"):
        extensions = material.get("extensions")
        extension = extensions.pop(_SPEC_GLOSS, None) if isinstance(extensions, dict) else None
        if not isinstance(extension, dict):
            continue
        changed = True
        if "pbrMetallicRoughness" in material:
            continue  # the file's own fallback for viewers without the extension: use it
        pbr = material["pbrMetallicRoughness"] = {"metallicFactor": 0.0}
        if "diffuseFactor" in extension:
            pbr["baseColorFactor"] = extension["diffuseFactor"]
        if "diffuseTexture" in extension:
            pbr["baseColorTexture"] = extension["diffuseTexture"]
    return changed


def encode(header: dict[str, Any], binary: bytes | None, glb: bool) -> bytes:
    text = json.dumps(header).encode()
    if not glb:
        return text
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text
    if binary is not None:
        binary += b"\0" * (-len(binary) % 4)
        chunks += struct.pack("<II", len(binary), 0x004E4942) + binary
    return b"glTF" + struct.pack("<II", 2, 12 + len(chunks)) + chunks
