"""Loading a glTF 2.0 model into draw-ready batches, refusing broken, unsupported or oversized models cleanly."""

from __future__ import annotations

import gc
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from renderhub.render import compat
from renderhub.render.draw_levels import Mapped, image, levels, material_fields, peek
from renderhub.render.gltf import ModelError, check_header, encode, invalid, read_header, without_specular_glossiness
from renderhub.render.model_limits import (
    INDEX_BYTES,
    MAX_TEXTURE_PIXELS,
    MAX_TEXTURE_SIZE,
    VERTEX_BYTES,
    check_load,
    drawn_bytes,
    out_of_memory,
)
from renderhub.render.vertices import unit_vectors, vertex_normals

log = logging.getLogger(__name__)

STANDARD_MAX_PRIMITIVES = 20_000_000  # ARR's limit for Standard sessions
UNLIT = "KHR_materials_unlit"

FloatArray = NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Material:
    name: str
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # linear RGBA factor
    texture: NDArray[np.uint8] | None = None  # (h, w, 4) sRGB, row 0 = glTF's v=0 (the top of the image)
    double_sided: bool = False
    alpha_mode: str = "OPAQUE"  # OPAQUE, MASK or BLEND
    alpha_cutoff: float = 0.5
    unlit: bool = False  # KHR_materials_unlit: the base colour as it is, without lighting


DEFAULT_MATERIAL = Material("default", base_color=(0.8, 0.8, 0.8, 1.0))  # for triangles that name none


@dataclass(frozen=True, eq=False)
class Batch:
    """Everything drawn with one material: one draw call."""

    material: Material
    positions: FloatArray  # (n, 3) world space
    normals: FloatArray  # (n, 3) unit
    texcoords: FloatArray  # (n, 2) glTF convention: (0, 0) is the image's top-left
    colors: NDArray[np.uint8]  # (n, 4) vertex colour (COLOR_0), white when absent
    indices: NDArray[np.uint32]  # (m, 3) counter-clockwise front faces

    @property
    def triangles(self) -> int:
        return len(self.indices)


@dataclass(frozen=True, eq=False)
class PackedBatch:
    """Everything drawn with one material, already in the GL buffers' layout: a converted model's batches, at each
    of its levels of detail, as views of the file."""

    material: Material
    vertices: NDArray[np.void]  # render/vertices.py's VERTEX
    indices: NDArray[np.uint32]  # (m, 3) counter-clockwise front faces
    colored: bool  # whether any vertex colour is not white

    @property
    def triangles(self) -> int:
        return len(self.indices)


@dataclass(frozen=True, eq=False)
class PointBatch:
    """Points drawn with one material, unlit (points have no normals): one draw call."""

    material: Material
    origin: NDArray[np.float64]  # (3,) where positions are relative to: float32 keeps survey coordinates' detail
    positions: FloatArray  # (n, 3) world space minus origin
    colors: NDArray[np.uint8] | None  # (n, 4) COLOR_0; None without one (the material's colour alone)
    spacing: float = 0.0  # typical distance between neighbouring points (world units): the size points are drawn

    @property
    def points(self) -> int:
        return len(self.positions)

    @property
    def bounds(self) -> NDArray[np.float64]:
        low, high = self.positions.min(0).astype(np.float64), self.positions.max(0).astype(np.float64)
        return np.array([low + self.origin, high + self.origin])


@dataclass(frozen=True, eq=False)
class Scene:
    batches: tuple[Batch | PackedBatch, ...]  # full detail
    bounds: NDArray[np.float64]  # [[min x, y, z], [max x, y, z]]
    skipped_primitives: int = 0  # lines and fans, which the renderer does not draw
    textures: int = 0
    clouds: tuple[PointBatch, ...] = ()
    coarser: tuple[tuple[PackedBatch, ...], ...] = ()  # levels of detail below full, each about a quarter the last

    @property
    def triangles(self) -> int:
        return sum(b.triangles for b in self.batches)

    @property
    def level_primitives(self) -> list[int]:
        """Primitives (triangles and points) drawn at each level of detail, full detail (level 0) first."""
        return [self.triangles + self.points, *(sum(b.triangles for b in level) for level in self.coarser)]

    @property
    def points(self) -> int:
        return sum(c.points for c in self.clouds)

    @property
    def draw_calls(self) -> int:
        return len(self.batches) + len(self.clouds)

    @property
    def gpu_bytes(self) -> int:
        textures = {
            id(b.material.texture): b.material.texture.nbytes for b in self.batches if b.material.texture is not None
        }
        vertices = sum(len(b.vertices if isinstance(b, PackedBatch) else b.positions) for b in self.batches)
        vertices += sum(len(b.vertices) for level in self.coarser for b in level)
        indices = self.triangles + sum(b.triangles for level in self.coarser for b in level)
        mipmapped = sum(textures.values()) * 4 // 3  # mipmaps: a third more
        points = sum(c.positions.nbytes + (0 if c.colors is None else c.colors.nbytes) for c in self.clouds)
        return vertices * VERTEX_BYTES + indices * INDEX_BYTES + mipmapped + points


def _limits(triangles: int, points: int, gpu_bytes: int, max_primitives: int | None, max_bytes: int) -> None:
    """ARR's primitive limit counts a point as one primitive, as it does a triangle: their sum is bounded."""
    if max_primitives is not None and triangles + points > max_primitives:
        parts = [f"{triangles:,} triangles"] if triangles or not points else []
        parts += [f"{points:,} points"] if points else []
        message = f"the model has {' and '.join(parts)}; this session allows {max_primitives:,}"
        raise ModelError("TooManyPrimitives", message + (" primitives (a point counts as one)" if points else ""))
    if gpu_bytes > max_bytes:
        raise ModelError("ModelTooLarge", f"the model needs about {gpu_bytes:,} bytes of memory; limit {max_bytes:,}")


def texture_pixels(image: Any, max_bytes: int) -> NDArray[np.uint8]:
    width, height = image.size  # read from the image header: nothing is decoded yet
    if width * height > MAX_TEXTURE_PIXELS or width * height * 4 > max_bytes:  # check_load refused these already
        raise ModelError("ModelTooLarge", f"a {width}x{height} texture exceeds the memory limit")
    image = image.convert("RGBA")
    if max(width, height) > MAX_TEXTURE_SIZE:
        image.thumbnail((MAX_TEXTURE_SIZE, MAX_TEXTURE_SIZE))
    return np.asarray(image, dtype=np.uint8).copy()


def _material(source: Any, textures: dict[int, NDArray[np.uint8]], max_bytes: int, unlit: set[int]) -> Material:
    name = str(getattr(source, "name", None) or "")
    index, _, untagged = name.partition(":")
    if unlit:  # the names were tagged with each material's index: trimesh keeps no extensions to tell unlit ones
        name = untagged
    factor = getattr(source, "baseColorFactor", None)
    rgba = [1.0] * 4 if factor is None else [float(c) / 255 for c in np.asarray(factor).ravel()[:4]] + [1.0]
    image = getattr(source, "baseColorTexture", None)
    if image is not None and id(image) not in textures:
        textures[id(image)] = texture_pixels(image, max_bytes)
    mode, cutoff = getattr(source, "alphaMode", None), getattr(source, "alphaCutoff", None)
    return Material(
        name=name or "material",
        base_color=(rgba[0], rgba[1], rgba[2], rgba[3]),
        texture=None if image is None else textures[id(image)],
        double_sided=bool(getattr(source, "doubleSided", False)),
        alpha_mode=mode if mode in ("MASK", "BLEND") else "OPAQUE",
        alpha_cutoff=0.5 if cutoff is None else float(cutoff),
        unlit=bool(unlit) and index.isdigit() and int(index) in unlit,
    )


def _unlit(header: dict[str, Any]) -> set[int]:
    """Indices of the materials with KHR_materials_unlit."""
    materials = header.get("materials", [])
    return {i for i, m in enumerate(materials) if isinstance(m.get("extensions"), dict) and UNLIT in m["extensions"]}


def _tag_materials(header: dict[str, Any]) -> None:
    """Each material's name prefixed with its index, which trimesh carries through to the meshes that use it."""
    for i, material in enumerate(header.get("materials", [])):
        material["name"] = f"{i}:{material.get('name') or ''}"


def _parts(scene: Any, max_bytes: int, unlit: set[int]) -> Iterator[tuple[Material | None, dict[str, np.ndarray]]]:
    """Each mesh instance with its node transform baked, checked for what trimesh does not check.

    Every array leaves here in the type the GPU takes (float32, uint8): float64 copies of a 20 M-triangle model
    cost gigabytes that the render worker's memory limit does not have.
    """
    textures: dict[int, NDArray[np.uint8]] = {}
    materials: dict[int, Material] = {}
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        mesh = scene.geometry[name]
        if len(getattr(mesh, "faces", ())) == 0:
            continue  # points (read by point_clouds.py) and lines (counted as skipped)
        vertices = np.asarray(mesh.vertices)
        faces = np.asarray(mesh.faces)
        if faces.min() < 0 or faces.max() >= len(vertices):
            raise invalid(f"mesh {name!r} has indices outside its {len(vertices)} vertices")
        if not np.isfinite(vertices).all() or not np.isfinite(transform).all():
            raise invalid(f"mesh {name!r} has non-finite (NaN or infinite) positions")
        linear = transform[:3, :3]
        if abs(np.linalg.det(linear)) < 1e-30:
            continue  # a zero scale hides the instance, as glTF viewers do
        moved = not np.array_equal(transform, np.eye(4))
        positions = (vertices @ linear.T + transform[:3, 3]) if moved else vertices
        positions = positions.astype(np.float32)
        local = vertices.astype(np.float32) if moved else positions

        def computed(vertices: NDArray[np.float32] = local, faces: NDArray[np.int64] = faces) -> NDArray[np.float32]:
            return vertex_normals(vertices, faces)

        # Only the normals the file gave: asking trimesh for normals would compute them itself.
        given = compat.loaded_vertex_normals(mesh)
        usable = given is not None and len(given) == len(vertices)
        normals = (
            unit_vectors(np.asarray(given, np.float32), computed) if usable else unit_vectors(computed(), computed)
        )
        if moved:
            normals = unit_vectors(normals @ np.linalg.inv(linear).astype(np.float32))  # the inverse transpose, on rows
        if np.linalg.det(linear) < 0:
            faces = faces[:, ::-1]  # a mirroring transform turns the winding inside out
        visual, material = mesh.visual, None
        if getattr(visual, "material", None) is not None:
            if id(visual.material) not in materials:
                materials[id(visual.material)] = _material(visual.material, textures, max_bytes, unlit)
            material = materials[id(visual.material)]
        uv = getattr(visual, "uv", None)
        texcoords = np.zeros((len(vertices), 2), np.float32)
        texcoords[:, 1] = 1.0  # without texture coordinates every vertex samples glTF's (0, 1), as it always did
        if uv is not None and len(uv) == len(vertices):
            texcoords[:, 0], texcoords[:, 1] = uv[:, 0], 1.0 - np.asarray(uv[:, 1])  # trimesh flips v; flip it back
        attributes = getattr(visual, "vertex_attributes", None)
        colors = attributes.get("color") if attributes is not None else None
        if colors is None and getattr(visual, "kind", None) == "vertex":
            colors = visual.vertex_colors
        yield material, {"p": positions, "n": normals, "t": texcoords, "f": faces, "c": _colors(colors, len(vertices))}


def _colors(colors: Any, count: int) -> NDArray[np.uint8]:
    colors = None if colors is None else np.asarray(colors)
    if colors is None or colors.ndim != 2 or len(colors) != count or colors.shape[1] not in (3, 4):
        return np.full((count, 4), 255, np.uint8)
    if colors.dtype.kind == "f":
        colors = np.clip(colors * 255 + 0.5, 0, 255)
    colors = colors.astype(np.uint8)
    return colors if colors.shape[1] == 4 else np.column_stack([colors, np.full(count, 255, np.uint8)])


def _batches(scene: Any, max_bytes: int, unlit: set[int]) -> list[Batch]:
    """Instances grouped by material: one draw call per material however many nodes share it."""
    groups: dict[int, tuple[Material, list[dict[str, np.ndarray]]]] = {}
    default = DEFAULT_MATERIAL
    for material, part in _parts(scene, max_bytes, unlit):
        part["f"] = part["f"].astype(np.uint32)  # the GPU's index type, at half the size of trimesh's int64
        groups.setdefault(id(material or default), (material or default, []))[1].append(part)
    batches = []
    for material, parts in groups.values():
        if len(parts) == 1:
            joined = parts.pop()  # nothing to join: no copy
        else:
            offsets = np.cumsum([0] + [len(p["p"]) for p in parts[:-1]]).astype(np.uint32)
            for part, offset in zip(parts, offsets, strict=True):
                part["f"] += offset
            joined = {k: np.concatenate([p.pop(k) for p in parts]) for k in "pntcf"}
            parts.clear()
        if not np.isfinite(joined["p"]).all():  # finite in float64 but beyond float32, as the GPU takes them
            raise invalid("positions are too large for single precision")
        batches.append(Batch(material, joined["p"], joined["n"], joined["t"], joined["c"], joined["f"]))
    return batches


def load_scene(path: Path, *, max_primitives: int | None, max_bytes: int) -> Scene:
    """Load a .glb or .gltf into batches ready to upload, or raise ModelError; never hangs or crashes on bad input."""
    try:
        levels = peek(path)
        if levels is not None:
            return _load_levels(path, *levels, max_primitives, max_bytes)
        return _load(path, max_primitives, max_bytes)
    except ModelError:
        raise
    except (MemoryError, Image.DecompressionBombError):
        raise out_of_memory() from None
    except Exception as e:  # trimesh's failures on bad files are asserts, KeyErrors, IndexErrors, RecursionErrors...
        log.info("a model could not be read: %s: %s", type(e).__name__, str(e)[:300])  # details for the operator
        raise invalid("the model's data is inconsistent or damaged, and could not be read") from None
    finally:
        gc.collect()  # trimesh's objects hold cycles: give a failed or finished load's memory back before the next


def _load_levels(
    path: Path, header: dict[str, Any], json_length: int, max_primitives: int | None, max_bytes: int
) -> Scene:
    """A converted model's levels of detail, mapped from the file: no vertex passes through Python."""
    mapped = Mapped(path, json_length)
    chain = levels(header, mapped)
    triangles = sum(len(indices) for _, _, indices, _ in chain[0])
    drawn = sum(vertices.nbytes + indices.nbytes for level in chain for _, vertices, indices, _ in level)
    _limits(triangles, 0, drawn, max_primitives, max_bytes)  # before any texture is decoded
    materials: dict[int | None, Material] = {None: DEFAULT_MATERIAL}
    textures: dict[int, NDArray[np.uint8]] = {}  # by image: materials sharing one share its pixels

    def material(index: int | None) -> Material:
        if index not in materials:
            assert index is not None
            fields = material_fields(header, index, mapped)
            source = fields.pop("image")
            if source is not None and source not in textures:
                textures[source] = texture_pixels(image(header, source, mapped), max_bytes)
            materials[index] = Material(**fields, texture=None if source is None else textures[source])
        return materials[index]

    packed = [
        tuple(PackedBatch(material(m), vertices, indices, colored) for m, vertices, indices, colored in level)
        for level in chain
    ]
    if not triangles:
        raise ModelError("EmptyModel", "the model's scene has no triangles or points to render")
    positions = [b.vertices["p"] for b in packed[0] if len(b.vertices)]
    bounds = np.array([np.min([p.min(0) for p in positions], 0), np.max([p.max(0) for p in positions], 0)], np.float64)
    scene = Scene(
        batches=packed[0],
        bounds=bounds,
        textures=len(textures),
        coarser=tuple(packed[1:]),
    )
    _limits(triangles, 0, scene.gpu_bytes, max_primitives, max_bytes)
    return scene


def _load(path: Path, max_primitives: int | None, max_bytes: int) -> Scene:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ModelError("ModelTooLarge", f"the file is {size:,} bytes; the limit is {max_bytes:,}")
        data = path.read_bytes()
    except OSError:
        raise ModelError("ModelNotFound", "the file does not exist or cannot be read") from None
    header, binary = read_header(path, data)
    estimate = check_header(header, binary, path.parent)
    if size + estimate.data_bytes > max_bytes:
        raise ModelError("ModelTooLarge", f"the model's data totals {size + estimate.data_bytes:,} bytes")
    _limits(estimate.triangles, estimate.points, drawn_bytes(estimate), max_primitives, max_bytes)
    glb = data[:4] == b"glTF"
    meshes = estimate.triangles > 0 or not estimate.points  # points alone never need trimesh
    unlit = _unlit(header) if meshes else set()
    rewrite = without_specular_glossiness(header) or bool(unlit)
    # trimesh reads a rewritten file from memory: one copy more at the peak of the load.
    check_load(header, binary, path.parent, estimate, size * (2 if rewrite and meshes else 1), max_bytes)
    if estimate.points:
        from renderhub.render.point_clouds import load_clouds

        clouds = load_clouds(header, binary, path.parent)
    else:
        clouds = []
    if unlit:
        _tag_materials(header)
    # Unchanged, the file is read again by trimesh rather than kept here: a copy less at the peak of a load.
    rewritten = encode(header, binary, glb) if rewrite and meshes else None
    del data, binary
    batches: list[Batch] = []
    if meshes:
        import trimesh  # here, not at import: the render server starts without paying for it

        # trimesh warns (NaN math, decompression-bomb checks) where we check ourselves and refuse below.
        with warnings.catch_warnings(), io.BytesIO(rewritten) if rewritten else path.open("rb") as source:
            warnings.simplefilter("ignore")
            resolver = trimesh.resolvers.FilePathResolver(str(path))
            loaded = trimesh.load(source, file_type="glb" if glb else "gltf", force="scene", resolver=resolver)
            del rewritten
            batches = _batches(loaded, max_bytes, unlit)
            del loaded
    if not batches and not clouds:
        if estimate.skipped:
            modes = ", ".join(sorted(estimate.skipped_modes))
            message = f"the model holds only {modes}; only triangles and points are rendered"
            raise ModelError("UnsupportedPrimitive", message)
        raise ModelError("EmptyModel", "the model's scene has no triangles or points to render")
    boxes = [np.array([b.positions.min(0), b.positions.max(0)], np.float64) for b in batches]
    boxes += [c.bounds for c in clouds]
    scene = Scene(
        batches=tuple(batches),
        bounds=np.array([np.min([b[0] for b in boxes], 0), np.max([b[1] for b in boxes], 0)]),
        skipped_primitives=estimate.skipped,
        textures=len({id(b.material.texture) for b in batches if b.material.texture is not None}),
        clouds=tuple(clouds),
    )
    _limits(scene.triangles, scene.points, scene.gpu_bytes, max_primitives, max_bytes)
    return scene
