"""Levels of detail, built once at conversion: the model's triangles merged per material in world space, in the
render server's vertex layout (one draw call each), then simplified to about a quarter per level with
fast-simplification's quadric decimation, down to a few tens of thousands of triangles."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from renderhub.conversion.model import TRIANGLES, Matrix, Model, Primitive
from renderhub.render.draw_levels import COLORED, LAYOUT
from renderhub.render.vertices import VERTEX, unit_vectors, vertex_normals

REDUCTION = 4  # each level has about a quarter of the triangles of the one above it
COARSEST_TRIANGLES = 20_000  # no level is made below this
KEPT_WHOLE = 2_000  # a batch this small is drawn whole at every level: simplifying it saves nothing
MAX_LEVELS = 8
SLAB_TRIANGLES = 1_000_000  # a batch larger than this is decimated a slab of about this many triangles at a time


@dataclass
class DrawBatch:
    """The triangles of one material (None: the default one) in world space: vertices in the VERTEX layout."""

    material: int | None
    vertices: NDArray[np.void]
    indices: NDArray[np.uint32]  # (m, 3), counter-clockwise front faces

    @property
    def triangles(self) -> int:
        return len(self.indices)


def merged(model: Model) -> list[DrawBatch]:
    """Every triangle of the scene, per material, transforms baked (a mirroring one reverses the winding)."""
    groups: dict[int | None, list[tuple[Matrix, Primitive]]] = {}
    for world, mesh in model.instances():
        for primitive in mesh.primitives:
            if primitive.mode == TRIANGLES and primitive.faces:
                groups.setdefault(primitive.material, []).append((world, primitive))
    batches = []
    for material, parts in groups.items():
        vertices = np.empty(sum(p.vertices for _, p in parts), VERTEX)
        indices = np.empty((sum(p.faces for _, p in parts), 3), np.uint32)
        vertex_at = face_at = 0
        for world, primitive in parts:
            part, faces = _baked(world, primitive)
            vertices[vertex_at : vertex_at + len(part)] = part
            indices[face_at : face_at + len(faces)] = faces + vertex_at
            vertex_at, face_at = vertex_at + len(part), face_at + len(faces)
        batches.append(DrawBatch(material, vertices, indices))
    return batches


def _baked(world: Matrix, primitive: Primitive) -> tuple[NDArray[np.void], NDArray[np.uint32]]:
    attributes = primitive.attributes
    local = attributes["POSITION"]
    corners = primitive.indices if primitive.indices is not None else np.arange(len(local), dtype=np.uint32)
    faces = corners.reshape(-1, 3).astype(np.uint32)
    linear = world[:3, :3]
    vertices = np.empty(len(local), VERTEX)
    vertices["p"] = local @ linear.T + world[:3, 3]
    given = attributes.get("NORMAL")
    normals = given if given is not None else vertex_normals(local.astype(np.float32), faces.astype(np.int64))
    if abs(np.linalg.det(linear)) > 1e-30:
        normals = normals @ np.linalg.inv(linear)  # the inverse transpose, on rows
    vertices["n"] = unit_vectors(np.asarray(normals, np.float32))
    texcoords = attributes.get("TEXCOORD_0")
    vertices["t"] = (0.0, 1.0) if texcoords is None else texcoords  # without them every vertex samples (0, 1)
    colors = attributes.get("COLOR_0")
    if colors is None:
        vertices["c"] = 255
    else:  # linear floats, as the raw glTF path keeps them: 0-1 to 0-255
        vertices["c"] = np.clip(np.asarray(colors, np.float32)[:, :4] * 255 + 0.5, 0, 255).astype(np.uint8)
    if np.linalg.det(linear) < 0:
        faces = np.ascontiguousarray(faces[:, ::-1])
    return vertices, faces


def levels(full: list[DrawBatch]) -> list[list[DrawBatch]]:
    """Full detail first, then each level about a quarter of the one before, until COARSEST_TRIANGLES."""
    chain = [full]
    while len(chain) < MAX_LEVELS and (above := sum(b.triangles for b in chain[-1])) > COARSEST_TRIANGLES:
        below = [b if b.triangles <= KEPT_WHOLE else simplified(b, b.triangles // REDUCTION) for b in chain[-1]]
        if sum(b.triangles for b in below) > above * 0.8:
            break  # the decimation cannot take this model much further: another level would draw as slowly
        chain.append(below)
    return chain


def simplified(batch: DrawBatch, target: int) -> DrawBatch:
    """The batch decimated to about `target` triangles; each remaining vertex keeps its normal, texture coordinate
    and colour (the decimation moves positions only). A large batch is decimated in slabs, their shared borders
    kept where they are, so the pieces still meet: the decimation's memory grows with what it holds at once
    (about 200 bytes a triangle), and a 20 M-triangle batch whole would not fit a conversion's limit."""
    if batch.triangles <= SLAB_TRIANGLES:
        return _decimated(batch, target, keep_border=False)
    pieces = [
        _decimated(slab, max(round(target * slab.triangles / batch.triangles), 1), keep_border=True)
        for slab in _slabs(batch)
    ]
    vertices = np.concatenate([piece.vertices for piece in pieces])
    offsets = np.cumsum([0] + [len(piece.vertices) for piece in pieces[:-1]]).astype(np.uint32)
    indices = np.concatenate([piece.indices + offset for piece, offset in zip(pieces, offsets, strict=True)])
    return DrawBatch(batch.material, vertices, indices)


def _slabs(batch: DrawBatch) -> Iterator[DrawBatch]:
    """The batch cut across its longest side into slabs of about SLAB_TRIANGLES triangles each (by where each
    triangle's centre lies), each with its own copy of the vertices it uses."""
    positions = batch.vertices["p"]
    axis = int(np.argmax(positions.max(0) - positions.min(0)))
    along = positions[:, axis]
    centres = (along[batch.indices[:, 0]] + along[batch.indices[:, 1]] + along[batch.indices[:, 2]]) / 3
    count = -(-batch.triangles // SLAB_TRIANGLES)
    cuts = np.quantile(centres, np.linspace(0, 1, count + 1)[1:-1])
    slab_of = np.searchsorted(cuts, centres)
    del centres
    for slab in range(count):
        faces = batch.indices[slab_of == slab]
        used = np.zeros(len(batch.vertices), bool)
        used[faces] = True
        local = (np.cumsum(used, dtype=np.int64) - 1).astype(np.uint32)
        yield DrawBatch(batch.material, batch.vertices[used], local[faces])


def _decimated(batch: DrawBatch, target: int, *, keep_border: bool) -> DrawBatch:
    import fast_simplification

    points, triangles, collapses = fast_simplification.simplify(
        batch.vertices["p"].astype(np.float64), batch.indices.astype(np.int32), target_count=target,
        return_collapses=True, preserve_border=keep_border,
    )  # fmt: skip
    kept = _survivors(len(batch.vertices), batch.indices, collapses, triangles)
    vertices = batch.vertices[kept] if kept is not None else _bare(points, triangles)
    vertices["p"] = points
    return DrawBatch(batch.material, vertices, np.ascontiguousarray(triangles, np.uint32))


def _survivors(
    count: int, indices: NDArray[np.uint32], collapses: NDArray[np.int64], triangles: NDArray[np.int64]
) -> NDArray[np.int64] | None:
    """The original vertex each output vertex stands for: fast-simplification numbers its output vertices in the
    order of the survivors of its collapses. (Its own replay takes 18 s on 5 M triangles; this, one.) None when its
    output is not what the collapses say, which would make every attribute wrong."""
    root = np.arange(count, dtype=np.int32)
    root[collapses[:, 1]] = collapses[:, 0]
    while not np.array_equal(deeper := root[root], root):  # each pass halves the longest chain of collapses
        root = deeper
    mapped = root[indices]
    whole = (mapped[:, 0] != mapped[:, 1]) & (mapped[:, 1] != mapped[:, 2]) & (mapped[:, 0] != mapped[:, 2])
    mapped = mapped[whole]
    used = np.zeros(count, bool)
    used[mapped] = True
    rank = np.cumsum(used, dtype=np.int32) - 1
    if len(mapped) != len(triangles) or not np.array_equal(rank[mapped], triangles):
        return None
    return np.flatnonzero(used)


def _bare(points: NDArray[np.float64], triangles: NDArray[np.int64]) -> NDArray[np.void]:
    """Vertices with computed normals, untextured and white: the fallback when attributes cannot be carried over."""
    vertices = np.empty(len(points), VERTEX)
    vertices["n"] = unit_vectors(vertex_normals(points.astype(np.float32), triangles))
    vertices["t"], vertices["c"] = (0.0, 1.0), 255
    return vertices


def extension(chain: list[list[DrawBatch]], view: Any) -> dict[str, Any]:
    """The document's RENDERHUB_draw_levels object; `view(bytes)` stores a bufferView and returns its index."""

    def entry(batch: DrawBatch) -> dict[str, Any]:
        item: dict[str, Any] = {
            "vertices": view(batch.vertices.data.cast("B")),
            "indices": view(np.ascontiguousarray(batch.indices, "<u4").data.cast("B")),
        }
        if batch.material is not None:
            item["material"] = batch.material
        if (batch.vertices["c"] != 255).any():
            item[COLORED] = True
        return item

    return {
        "layout": LAYOUT,
        "levels": [
            {"triangles": sum(b.triangles for b in level), "batches": [entry(b) for b in level]} for level in chain
        ],
    }
