"""Reading glTF 2.0 into the model: the render server's checks first, then accessors decoded as the spec says.

Decoded here rather than by trimesh, which ignores `normalized` on quantized accessors (wrong geometry) and
cannot read meshopt: what cannot be decoded correctly is refused with the reason.
"""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from renderhub.conversion import textures
from renderhub.conversion.errors import ConversionFailed, bad_input
from renderhub.conversion.model import LINES, POINTS, TRIANGLES, Image, Mesh, Model, Node, Primitive, trs_matrix
from renderhub.render.gltf import ModelError, check_header, read_header

_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
# Attributes kept, with their widths; the rest (joints, weights, application-specific ones) are not drawn.
_KEPT = {"POSITION": 3, "NORMAL": 3, "TANGENT": 4, "TEXCOORD_0": 2, "TEXCOORD_1": 2, "COLOR_0": 4, "COLOR_1": 4}
_COMPRESSION = {
    "KHR_draco_mesh_compression": "Draco",
    "EXT_meshopt_compression": "meshopt",
    "KHR_meshopt_compression": "meshopt",
}
# Required extensions that are decoded here or only change the look: the model still converts.
_UNDERSTOOD = {"KHR_mesh_quantization", "KHR_texture_transform", "EXT_texture_webp", "KHR_materials_unlit"}

Warn = Callable[[str, str, str], None]  # (texture, material, reason)


def _fail(name: str, message: str) -> ConversionFailed:
    return bad_input(f"{name}: {message}")


def _compressed(name: str, extension: str) -> ConversionFailed:
    kind = _COMPRESSION[extension]
    return _fail(name, f"it is compressed with {kind} ({extension}), which this converter does not decode; export it "
                 "without mesh compression")  # fmt: skip


class _Document:
    """One glTF file's JSON and binary data, with decoded accessors cached."""

    def __init__(self, header: dict[str, Any], binary: bytes | None, folder: Path, name: str) -> None:
        self.header, self.binary, self.folder, self.name = header, binary, folder, name
        self._buffers: dict[int, bytes] = {}
        self._accessors: dict[int, np.ndarray] = {}

    def items(self, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.header.get(key, [])
        return items

    def buffer(self, index: int) -> bytes:
        if index not in self._buffers:
            self._buffers[index] = self._load_buffer(index)
        return self._buffers[index]

    def _load_buffer(self, index: int) -> bytes:
        buffer = self.items("buffers")[index]
        for extension in _COMPRESSION:
            if isinstance(buffer.get("extensions"), dict) and extension in buffer["extensions"]:
                raise _compressed(self.name, extension)  # a fallback buffer: no data without the decoder
        uri = buffer.get("uri")
        if uri is None:
            assert self.binary is not None  # check_header refused a buffer with neither
            return self.binary
        if uri.startswith("data:"):
            return _data_uri(uri, f"{self.name}: buffer {index}")
        path = (self.folder / unquote(uri)).resolve()  # check_header kept it inside the folder
        with path.open("rb") as f:
            return f.read(int(buffer["byteLength"]))

    def view(self, index: int) -> memoryview:
        view = self.items("bufferViews")[index]
        if isinstance(view.get("extensions"), dict):
            for extension in _COMPRESSION:
                if extension in view["extensions"]:
                    raise _compressed(self.name, extension)
        data = memoryview(self.buffer(view["buffer"]))
        offset = view.get("byteOffset", 0)
        return data[offset : offset + view["byteLength"]]

    def accessor(self, index: int) -> np.ndarray:
        """Accessor `index` as an (count, width) array of its own component type (not yet normalized)."""
        if index not in self._accessors:
            self._accessors[index] = self._decode(index)
        return self._accessors[index]

    def _decode(self, index: int) -> np.ndarray:
        accessor = self.items("accessors")[index]
        dtype = np.dtype(_DTYPES[accessor["componentType"]]).newbyteorder("<")
        width, count = _WIDTH[accessor["type"]], accessor["count"]
        if "bufferView" in accessor:
            view_json = self.items("bufferViews")[accessor["bufferView"]]
            element = dtype.itemsize * width
            stride = view_json.get("byteStride", element)
            data = self.view(accessor["bufferView"])
            offset = accessor.get("byteOffset", 0)
            if count and offset + stride * (count - 1) + element > len(data):  # check_header's rule, kept here too
                raise _fail(self.name, f"accessor {index} runs past the end of its bufferView")
            strided = np.ndarray((count, width), dtype, buffer=data, offset=offset, strides=(stride, dtype.itemsize))
            values = strided.copy()
        else:
            # All zeros (or sparse values) from nothing in the file: bounded by the file's own data, so a few bytes
            # of JSON cannot ask for gigabytes.
            budget = 16 * sum(int(b.get("byteLength", 0)) for b in self.items("buffers")) + (1 << 20)
            if count * width * dtype.itemsize > budget:
                raise _fail(self.name, f"accessor {index} asks for {count:,} elements with no data behind them")
            values = np.zeros((count, width), dtype)
        if "sparse" in accessor:
            sparse = accessor["sparse"]
            substituted = sparse["count"]
            where_json, what_json = sparse["indices"], sparse["values"]
            where_type = np.dtype(_DTYPES[where_json.get("componentType", 5125)]).newbyteorder("<")
            where = np.frombuffer(
                self.view(where_json["bufferView"]), where_type, substituted, where_json.get("byteOffset", 0)
            )
            what = np.frombuffer(
                self.view(what_json["bufferView"]), dtype, substituted * width, what_json.get("byteOffset", 0)
            )
            if len(where) and (where.dtype.kind != "u" or int(where.max()) >= count):
                raise _fail(self.name, f"accessor {index}: sparse indices outside its {count} elements")
            values[where.astype(np.int64)] = what.reshape(substituted, width)
        return values

    def floats(self, index: int) -> np.ndarray:
        """Accessor `index` as float32, integer components normalized when the accessor says so."""
        values = self.accessor(index)
        if values.dtype == np.float32:
            return values
        if self.items("accessors")[index].get("normalized", False):
            # The spec's decoding: unsigned c / max, signed max(c / max, -1).
            top = float(np.iinfo(values.dtype).max)
            normalized: np.ndarray = np.maximum(values.astype(np.float32) / np.float32(top), np.float32(-1.0))
            return normalized
        return values.astype(np.float32)


def _data_uri(uri: str, what: str) -> bytes:
    meta, _, payload = uri.partition(",")
    try:
        return base64.b64decode(payload, validate=True) if meta.endswith(";base64") else unquote(payload).encode()
    except (binascii.Error, ValueError):
        raise bad_input(f"{what} is a data URI that is not valid base64") from None


def read(data: bytes, name: str, folder: Path, *, texture_dir: Path, root: Path, warn: Warn) -> tuple[Model, str, str]:
    """The model in a glTF or GLB file, its glTF version and generator; missing textures go to `warn`.

    `folder` holds the file's buffers; textures are looked up with ARR's suffix rule from `texture_dir` inside
    `root` (the two differ for assimp's output, written to a scratch folder).
    """
    try:
        header, binary = read_header(Path(name), data)
    except ModelError as e:
        raise _fail(name, e.message) from None
    _check_extensions(header, name)
    checked = dict(header)
    checked["extensionsRequired"] = []  # decided above, with the understood ones allowed
    images = header.get("images", [])
    if isinstance(images, list):  # image files are looked up below with the suffix rule, and may be missing
        checked["images"] = [{"uri": "data:,"} if isinstance(i, dict) and "uri" in i else i for i in images]
    try:
        check_header(checked, binary, folder)
    except ModelError as e:
        raise _fail(name, e.message) from None
    document = _Document(header, binary, folder, name)
    model = Model(nodes=[], roots=[], meshes=[])
    _images(document, model, texture_dir, root, warn)
    _scene(document, model)
    asset = header["asset"]
    return model, str(asset.get("version", "")), str(asset.get("generator", ""))


def _check_extensions(header: dict[str, Any], name: str) -> None:
    required = header.get("extensionsRequired", [])
    if not isinstance(required, list):
        raise _fail(name, "'extensionsRequired' must be an array")
    for extension in required:
        if extension in _COMPRESSION:
            raise _compressed(name, extension)
        if extension not in _UNDERSTOOD and not str(extension).startswith("KHR_materials_"):
            raise _fail(name, f"it requires the glTF extension {extension}, which this converter does not support")


def _image_label(document: _Document, image: dict[str, Any]) -> str:
    if "uri" in image and not str(image["uri"]).startswith("data:"):
        return str(image["uri"])
    return str(image.get("name") or f"embedded image in {document.name}")


def _image_bytes(document: _Document, image: dict[str, Any], texture_dir: Path, root: Path) -> bytes | None:
    """An image's bytes; None when its file is missing, TextureError when it cannot be used."""
    if "uri" not in image:
        return bytes(document.view(image["bufferView"]))
    uri = str(image["uri"])
    if uri.startswith("data:"):
        return _data_uri(uri, f"{document.name}: an image")
    found = textures.find_texture(uri, texture_dir, root)
    if found is None:
        return None
    size = found.stat().st_size
    if size > textures.MAX_TEXTURE_BYTES:
        raise textures.TextureError(f"{size:,} bytes is more than {textures.MAX_TEXTURE_BYTES:,}")
    return found.read_bytes()


def _images(document: _Document, model: Model, texture_dir: Path, root: Path, warn: Warn) -> None:
    """Images resolved and converted; textures whose image is missing or unusable are dropped, with a warning
    for each material that used them."""
    kept: dict[int, int] = {}  # image index -> index in model.images
    problems: dict[int, tuple[str, str]] = {}  # image index -> (name, reason)
    for i, image in enumerate(document.items("images")):
        label = _image_label(document, image)
        try:
            data = _image_bytes(document, image, texture_dir, root)
            if data is None:
                problems[i] = (label, "missing")
                continue
            prepared, mime = textures.prepare(data, label)
        except textures.TextureError as e:
            problems[i] = (label, str(e))
            continue
        kept[i] = len(model.images)
        model.images.append(Image(prepared, mime, image.get("name")))
    texture_map: dict[int, int] = {}
    dropped: dict[int, tuple[str, str]] = {}
    for t, texture in enumerate(document.items("textures")):
        source = _texture_source(texture)
        if source is None:
            dropped[t] = (f"texture {t}", "it has no image this converter can read (KTX2 or none)")
            continue
        if source not in kept:
            dropped[t] = problems.get(source, (f"image {source}", "missing"))
            continue
        entry = {k: v for k, v in texture.items() if k not in ("source", "extensions")}
        entry["source"] = kept[source]
        texture_map[t] = len(model.textures)
        model.textures.append(entry)
    model.samplers = copy.deepcopy(document.items("samplers"))
    for m, material in enumerate(document.items("materials")):
        entry = copy.deepcopy(material)
        name = str(material.get("name") or f"material {m}")
        for lost, reason in _remap_textures(entry, texture_map, dropped):
            warn(lost, name, reason)
        model.materials.append(entry)


def _texture_source(texture: dict[str, Any]) -> int | None:
    if isinstance(texture.get("source"), int):
        return int(texture["source"])
    webp = (
        texture.get("extensions", {}).get("EXT_texture_webp") if isinstance(texture.get("extensions"), dict) else None
    )
    return int(webp["source"]) if isinstance(webp, dict) and isinstance(webp.get("source"), int) else None


def _remap_textures(
    item: dict[str, Any], texture_map: dict[int, int], dropped: dict[int, tuple[str, str]]
) -> list[tuple[str, str]]:
    """Point a material's texture references (any `...Texture` object, extensions included) at the kept textures;
    references to dropped ones are removed and returned as (texture, reason)."""
    lost = []
    for key in list(item):
        value = item[key]
        if isinstance(value, dict) and key.endswith("Texture") and isinstance(value.get("index"), int):
            if value["index"] in texture_map:
                value["index"] = texture_map[value["index"]]
            else:
                lost.append(dropped.get(value["index"], (f"texture {value['index']}", "missing")))
                del item[key]
        elif isinstance(value, dict):
            lost.extend(_remap_textures(value, texture_map, dropped))
    return lost


def _scene(document: _Document, model: Model) -> None:
    """The default scene's nodes (check_header walked it: a tree) and the meshes they use."""
    scenes, nodes = document.items("scenes"), document.items("nodes")
    if not scenes:
        return
    roots = scenes[document.header.get("scene", 0)].get("nodes", [])
    order: dict[int, int] = {}  # file node index -> model node index
    mesh_map: dict[int, int] = {}
    stack = list(reversed(roots))
    while stack:
        n = stack.pop()
        order[n] = len(model.nodes)
        node = nodes[n]
        if "matrix" in node:
            matrix = np.array(node["matrix"], np.float64).reshape(4, 4).T  # glTF stores columns
        else:
            matrix = trs_matrix(
                node.get("translation", (0, 0, 0)), node.get("rotation", (0, 0, 0, 1)), node.get("scale", (1, 1, 1))
            )
        mesh = node.get("mesh")
        if isinstance(mesh, int) and mesh not in mesh_map:
            mesh_map[mesh] = len(model.meshes)
            model.meshes.append(_mesh(document, mesh))
        extras = node.get("extras")
        model.nodes.append(
            Node(
                name=node.get("name"),
                matrix=matrix,
                mesh=mesh_map[mesh] if isinstance(mesh, int) else None,
                children=list(node.get("children", [])),
                extras=dict(extras) if isinstance(extras, dict) else {},
            )
        )
        stack.extend(reversed(node.get("children", [])))
    for node in model.nodes:
        node.children = [order[c] for c in node.children]
    model.roots = [order[r] for r in roots]


def _mesh(document: _Document, index: int) -> Mesh:
    mesh = document.items("meshes")[index]
    label = f"mesh {index}" + (f" ({mesh['name']!r})" if mesh.get("name") else "")
    primitives = [_primitive(document, p, label) for p in mesh["primitives"]]
    return Mesh(mesh.get("name"), [p for p in primitives if p is not None])


def _primitive(document: _Document, primitive: dict[str, Any], label: str) -> Primitive | None:
    name = document.name
    extensions = primitive.get("extensions")
    if isinstance(extensions, dict) and "KHR_draco_mesh_compression" in extensions:
        used = [*primitive["attributes"].values(), primitive.get("indices")]
        if any(isinstance(a, int) and "bufferView" not in document.items("accessors")[a] for a in used):
            raise _compressed(name, "KHR_draco_mesh_compression")
    attributes: dict[str, np.ndarray] = {}
    for key, width in _KEPT.items():
        if key not in primitive["attributes"]:
            continue
        accessor = primitive["attributes"][key]
        values = document.floats(accessor)
        if key.startswith("COLOR_") and values.shape[1] == 3:
            values = np.column_stack([values, np.ones(len(values), np.float32)])
        if key.startswith("TEXCOORD_") and values.shape[1] == 3:
            values = np.ascontiguousarray(values[:, :2])  # assimp writes UVW coordinates; w means nothing to glTF
        if values.shape[1] != width:
            raise _fail(name, f"{label}: {key} has {values.shape[1]} components, not {width}")
        attributes[key] = values
    count = len(attributes["POSITION"])
    if any(len(v) != count for v in attributes.values()):
        raise _fail(name, f"{label}: its attributes have different counts")
    if not np.isfinite(attributes["POSITION"]).all():
        raise _fail(name, f"{label} has non-finite (NaN or infinite) positions")
    for key in [k for k, v in attributes.items() if k != "POSITION" and not np.isfinite(v).all()]:
        del attributes[key]  # broken normals, texture coordinates or colours: the model still shows without them
    indices = None
    if "indices" in primitive:
        raw = document.accessor(primitive["indices"])
        if raw.dtype.kind != "u" or raw.shape[1] != 1:
            raise _fail(name, f"{label}: indices must be unsigned integers")
        indices = raw.ravel().astype(np.uint32)
        if len(indices) and int(indices.max()) >= count:
            raise _fail(name, f"{label} has indices outside its {count} vertices")
    mode, indices = _as_list(primitive.get("mode", TRIANGLES), indices, count)
    if (indices is not None and not len(indices)) or not count:
        return None
    return Primitive(mode, attributes, indices, primitive.get("material"))


def _as_list(mode: int, indices: np.ndarray | None, count: int) -> tuple[int, np.ndarray | None]:
    """Strips, fans and loops as plain lists of triangles or lines: what glb.py writes and our loader draws."""
    if mode in (POINTS, LINES, TRIANGLES):
        each = 2 if mode == LINES else 3
        if mode != POINTS and indices is None and count % each:
            indices = np.arange(count, dtype=np.uint32)
        if mode != POINTS and indices is not None:
            indices = indices[: len(indices) - len(indices) % each]  # a trailing incomplete line or triangle
        return mode, indices
    order = np.arange(count, dtype=np.uint32) if indices is None else indices
    n = len(order)
    if mode in (2, 3):  # line loop, line strip
        ends = np.arange(n if mode == 2 and n > 2 else max(n - 1, 0))
        return LINES, np.column_stack([order[ends], order[(ends + 1) % n]]).ravel() if n > 1 else order[:0]
    firsts = np.arange(max(n - 2, 0))
    if mode == 5:  # triangle strip: every other triangle is wound the other way
        odd = firsts % 2 == 1
        a = np.where(odd, order[firsts + 1], order[firsts])
        b = np.where(odd, order[firsts], order[firsts + 1])
        corners = np.column_stack([a, b, order[firsts + 2]])
    else:  # triangle fan
        corners = np.column_stack([np.full(len(firsts), order[0] if n else 0), order[firsts + 1], order[firsts + 2]])
    return TRIANGLES, corners.astype(np.uint32).ravel()
