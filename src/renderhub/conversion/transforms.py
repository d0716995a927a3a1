"""The conversion settings applied to the model: colour space, axes and scale, scene graph, materials, streams."""

from __future__ import annotations

import fnmatch
import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from renderhub.conversion.model import POINTS, TRIANGLES, Matrix, Mesh, Model, Node, Primitive
from renderhub.conversion.settings import Settings

_AXIS_VECTORS = {"+x": (0, 1.0), "-x": (0, -1.0), "+y": (1, 1.0), "-y": (1, -1.0), "+z": (2, 1.0), "-z": (2, -1.0)}
_STREAMS = {  # vertex-format setting -> the glTF attribute it governs
    "normal": "NORMAL",
    "tangent": "TANGENT",
    "color0": "COLOR_0",
    "color1": "COLOR_1",
    "texcoord0": "TEXCOORD_0",
    "texcoord1": "TEXCOORD_1",
}
METADATA_TYPES = (bool, int, float, str)  # ARR keeps metadata of these types only
DEFAULT_MATERIAL = {
    "name": "default",
    "pbrMetallicRoughness": {"baseColorFactor": [0.8, 0.8, 0.8, 1.0], "metallicFactor": 0.0},
}


def weld(model: Model) -> None:
    """Merge vertices identical in every attribute (assimp's export writes three per triangle); points stay."""
    for mesh in model.meshes:
        for primitive in mesh.primitives:
            if primitive.mode != POINTS:
                _weld(primitive)


def _weld(primitive: Primitive) -> None:
    count = primitive.vertices
    if not count:
        return
    columns = [np.ascontiguousarray(v).view(np.uint8).reshape(count, -1) for v in primitive.attributes.values()]
    rows = np.ascontiguousarray(np.hstack(columns))
    keys = rows.view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)  # the vertices keep their first-seen order
    new_position = np.empty(len(order), np.uint32)
    new_position[order] = np.arange(len(order), dtype=np.uint32)
    old = np.arange(count, dtype=np.uint32) if primitive.indices is None else primitive.indices
    primitive.indices = new_position[inverse.ravel()][old]
    primitive.attributes = {name: values[first[order]] for name, values in primitive.attributes.items()}


def srgb_to_linear(values: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """The sRGB transfer function undone (IEC 61966-2-1)."""
    values = np.clip(values, 0.0, 1.0)
    linear: NDArray[np.float32] = np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4).astype(
        np.float32
    )
    return linear


_LINEAR_BYTES = np.round(srgb_to_linear(np.arange(256, dtype=np.float32) / 255) * 255).astype(np.uint8)


def gamma_to_linear_vertex(model: Model) -> None:
    for mesh in model.meshes:
        for primitive in mesh.primitives:
            for name in ("COLOR_0", "COLOR_1"):
                colors = primitive.attributes.get(name)
                if colors is None:
                    continue
                converted = colors.copy()
                if colors.dtype == np.uint8:
                    converted[:, :3] = _LINEAR_BYTES[colors[:, :3]]
                else:
                    converted[:, :3] = srgb_to_linear(colors[:, :3])
                primitive.attributes[name] = converted


def gamma_to_linear_material(model: Model) -> None:
    """Material colour factors from sRGB to linear; alpha and textures (sRGB by definition in glTF) unchanged."""
    for material in model.materials:
        pbr = material.get("pbrMetallicRoughness")
        if isinstance(pbr, dict):
            _convert_factor(pbr, "baseColorFactor")
        _convert_factor(material, "emissiveFactor")
        gloss = material.get("extensions", {}).get("KHR_materials_pbrSpecularGlossiness")
        if isinstance(gloss, dict):
            _convert_factor(gloss, "diffuseFactor")
            _convert_factor(gloss, "specularFactor")


def _convert_factor(item: dict[str, Any], key: str) -> None:
    factor = item.get(key)
    if isinstance(factor, list) and len(factor) >= 3:
        rgb = srgb_to_linear(np.array(factor[:3], np.float32))
        item[key] = [round(float(c), 7) for c in rgb] + factor[3:]


def axis_matrix(axis: tuple[str, str, str]) -> NDArray[np.float64]:
    """Row i picks the input axis that becomes output axis i: ["+x", "+z", "-y"] turns Z-up into Y-up."""
    matrix = np.zeros((3, 3))
    for row, name in enumerate(axis):
        column, sign = _AXIS_VECTORS.get(name, (row, 1.0))  # "default": the file's own axis
        matrix[row, column] = sign
    return matrix


def reorient(model: Model, axis: tuple[str, str, str], scaling: float) -> None:
    """Axes and uniform scale on every vertex and node translation (as ARR: node matrices keep no extra scale).

    Each node's matrix M becomes C M C^-1 for C = scaling x axes, and each vertex v becomes C v: every world
    position p becomes C p, with the scene graph intact.
    """
    turn = axis_matrix(axis)
    if scaling == 1.0 and np.array_equal(turn, np.eye(3)):
        return
    conjugate, inverse = np.eye(4), np.eye(4)
    conjugate[:3, :3] = turn * scaling
    inverse[:3, :3] = turn.T / scaling
    for node in model.nodes:
        node.matrix = conjugate @ node.matrix @ inverse
    mirrored = np.linalg.det(turn) < 0
    for mesh in model.meshes:
        for primitive in mesh.primitives:
            _move(primitive, turn * scaling, turn, mirrored)


def _move(primitive: Primitive, linear: Matrix, turn: Matrix, mirrored: bool) -> None:
    """Vertices through `linear` (normals and tangents through the rotation `turn`); a mirror reverses winding."""
    attributes = primitive.attributes
    attributes["POSITION"] = (attributes["POSITION"] @ linear.T).astype(np.float32)
    if "NORMAL" in attributes:
        attributes["NORMAL"] = (attributes["NORMAL"] @ turn.T).astype(np.float32)
    if "TANGENT" in attributes:
        tangents = attributes["TANGENT"].copy()
        tangents[:, :3] = tangents[:, :3] @ turn.T
        if mirrored:
            tangents[:, 3] = -tangents[:, 3]
        attributes["TANGENT"] = tangents
    if mirrored and primitive.mode == TRIANGLES:
        corners = np.arange(primitive.vertices, dtype=np.uint32) if primitive.indices is None else primitive.indices
        primitive.indices = np.ascontiguousarray(corners.reshape(-1, 3)[:, ::-1]).ravel()


def collapse(model: Model, name: str) -> None:
    """sceneGraphMode none: one node, one mesh; parts sharing a material and layout are merged into one.

    Vertices are baked relative to the scene's centre, which becomes the node's translation: far-off models keep
    the precision float32 positions would lose.
    """
    bounds = model.bounds()
    centre = np.zeros(3) if bounds is None else (bounds[0] + bounds[1]) / 2
    groups: dict[tuple[Any, ...], list[Primitive]] = {}
    for world, mesh in model.instances():
        relative = world.copy()
        relative[:3, 3] -= centre
        for primitive in mesh.primitives:
            baked = _baked(primitive, relative)
            layout = tuple((k, v.dtype.str, v.shape[1]) for k, v in sorted(baked.attributes.items()))
            groups.setdefault((baked.material, baked.mode, layout), []).append(baked)
    primitives = [_merged(parts) for parts in groups.values()]
    translation = np.eye(4)
    translation[:3, 3] = centre
    model.meshes = [Mesh(name, primitives)] if primitives else []
    model.nodes = [Node(name=name, matrix=translation, mesh=0 if primitives else None)]
    model.roots = [0]


def _baked(primitive: Primitive, world: Matrix) -> Primitive:
    linear = world[:3, :3]
    attributes = dict(primitive.attributes)
    attributes["POSITION"] = (attributes["POSITION"] @ linear.T + world[:3, 3]).astype(np.float32)
    determinant = np.linalg.det(linear)
    if "NORMAL" in attributes and abs(determinant) > 1e-30:
        normals = attributes["NORMAL"] @ np.linalg.inv(linear)  # the inverse transpose, on rows
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        attributes["NORMAL"] = (normals / np.where(lengths > 0, lengths, 1)).astype(np.float32)
    if "TANGENT" in attributes:
        tangents = attributes["TANGENT"].copy()
        tangents[:, :3] = tangents[:, :3] @ linear.T
        lengths = np.linalg.norm(tangents[:, :3], axis=1, keepdims=True)
        tangents[:, :3] /= np.where(lengths > 0, lengths, 1)
        attributes["TANGENT"] = tangents.astype(np.float32)
    indices = primitive.indices
    if determinant < 0 and primitive.mode == TRIANGLES:
        corners = np.arange(primitive.vertices, dtype=np.uint32) if indices is None else indices
        indices = np.ascontiguousarray(corners.reshape(-1, 3)[:, ::-1]).ravel()
    return Primitive(primitive.mode, attributes, indices, primitive.material)


def _merged(parts: list[Primitive]) -> Primitive:
    if len(parts) == 1:
        return parts[0]
    indexed = any(p.indices is not None for p in parts)
    indices, offset = [], 0
    for part in parts:
        if indexed:
            own = np.arange(part.vertices, dtype=np.uint32) if part.indices is None else part.indices
            indices.append(own + np.uint32(offset))
        offset += part.vertices
    attributes = {k: np.concatenate([p.attributes[k] for p in parts]) for k in parts[0].attributes}
    return Primitive(parts[0].mode, attributes, np.concatenate(indices) if indexed else None, parts[0].material)


def recenter(model: Model) -> NDArray[np.float64]:
    """Move the scene's bounding box centre to the origin; the offset that moves it back (ARR's recenteringOffset)."""
    bounds = model.bounds()
    if bounds is None:
        return np.zeros(3)
    centre: NDArray[np.float64] = (bounds[0] + bounds[1]) / 2
    for root in model.roots:
        model.nodes[root].matrix = model.nodes[root].matrix.copy()
        model.nodes[root].matrix[:3, 3] -= centre
    return centre


def keep_metadata(model: Model, patterns: tuple[str, ...]) -> None:
    """Node metadata (glTF extras) kept only for keys the settings name: exact, or `ABC*` for a prefix."""
    for node in model.nodes:
        node.extras = {
            key: value
            for key, value in node.extras.items()
            if isinstance(value, METADATA_TYPES) and any(_matches(key, p) for p in patterns)
        }


def _matches(key: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return key.startswith(pattern[:-1])
    return key == pattern or (any(c in pattern for c in "?[") and fnmatch.fnmatchcase(key, pattern))


def materials(model: Model, settings: Settings) -> None:
    """Sidedness, unlit materials, de-duplication; materials, textures and images nobody uses are dropped."""
    if settings.opaque_material_default_sidedness == "DoubleSided":
        missing = [p for m in model.meshes for p in m.primitives if p.material is None and p.mode != POINTS]
        if missing:
            for primitive in missing:
                primitive.material = len(model.materials)
            model.materials.append(json.loads(json.dumps(DEFAULT_MATERIAL)))
        for material in model.materials:
            if material.get("alphaMode", "OPAQUE") == "OPAQUE":
                material["doubleSided"] = True
    if settings.unlit_materials:
        for material in model.materials:
            material.setdefault("extensions", {})["KHR_materials_unlit"] = {}
    merged = list(range(len(model.materials)))
    if settings.deduplicate_materials:
        first: dict[str, int] = {}
        for i, material in enumerate(model.materials):
            key = json.dumps({k: v for k, v in material.items() if k != "name"}, sort_keys=True)
            merged[i] = first.setdefault(key, i)
    _prune(model, merged)


def _prune(model: Model, merged: list[int]) -> None:
    primitives = [p for m in model.meshes for p in m.primitives]
    used = sorted({merged[p.material] for p in primitives if p.material is not None})
    new_index = {old: new for new, old in enumerate(used)}
    for primitive in primitives:
        if primitive.material is not None:
            primitive.material = new_index[merged[primitive.material]]
    model.materials = [model.materials[i] for i in used]
    texture_map = _compact(len(model.textures), _texture_refs(model.materials))
    for material in model.materials:
        _renumber(material, texture_map)
    model.textures = [t for i, t in enumerate(model.textures) if i in texture_map]
    image_map = _compact(len(model.images), {t["source"] for t in model.textures})
    model.images = [image for i, image in enumerate(model.images) if i in image_map]
    sampler_map = _compact(len(model.samplers), {t["sampler"] for t in model.textures if "sampler" in t})
    model.samplers = [s for i, s in enumerate(model.samplers) if i in sampler_map]
    for texture in model.textures:
        texture["source"] = image_map[texture["source"]]
        if "sampler" in texture:
            texture["sampler"] = sampler_map[texture["sampler"]]


def _compact(count: int, used: set[int]) -> dict[int, int]:
    return {old: new for new, old in enumerate(i for i in range(count) if i in used)}


def _texture_refs(item: object) -> set[int]:
    found: set[int] = set()
    if isinstance(item, dict):
        for key, value in item.items():
            if key.endswith("Texture") and isinstance(value, dict) and isinstance(value.get("index"), int):
                found.add(value["index"])
            else:
                found |= _texture_refs(value)
    elif isinstance(item, list):
        for value in item:
            found |= _texture_refs(value)
    return found


def _renumber(item: dict[str, Any], texture_map: dict[int, int]) -> None:
    for key, value in item.items():
        if key.endswith("Texture") and isinstance(value, dict) and isinstance(value.get("index"), int):
            value["index"] = texture_map[value["index"]]
        elif isinstance(value, dict):
            _renumber(value, texture_map)


def vertex_streams(model: Model, formats: dict[str, str] | Any) -> None:
    """Streams set to NONE are left out of the output; the other formats do not change what our renderer draws."""
    dropped = [attribute for stream, attribute in _STREAMS.items() if formats.get(stream) == "NONE"]
    for mesh in model.meshes:
        for primitive in mesh.primitives:
            for attribute in dropped:
                primitive.attributes.pop(attribute, None)
