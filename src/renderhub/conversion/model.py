"""The scene a conversion works on: glTF's structure (nodes, meshes, materials) with decoded numpy arrays."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

POINTS, LINES, TRIANGLES = 0, 1, 4
VERTICES_PER_FACE = {POINTS: 1, LINES: 2, TRIANGLES: 3}

Matrix = NDArray[np.float64]


@dataclass
class Primitive:
    """One part of a mesh with one material. Attributes use glTF's names and hold what glb.py writes:
    POSITION, NORMAL float32 (n, 3); TANGENT float32 (n, 4); TEXCOORD_n float32 (n, 2); COLOR_n float32 (n, 4)
    linear, or uint8 (n, 3|4) for point clouds (a quarter of the size)."""

    mode: int
    attributes: dict[str, np.ndarray]
    indices: NDArray[np.uint32] | None = None  # flat; None: the vertices in order
    material: int | None = None

    @property
    def vertices(self) -> int:
        return len(self.attributes["POSITION"])

    @property
    def faces(self) -> int:
        corners = self.vertices if self.indices is None else len(self.indices)
        return corners // VERTICES_PER_FACE[self.mode]


@dataclass
class Mesh:
    name: str | None
    primitives: list[Primitive]


@dataclass
class Node:
    name: str | None = None
    matrix: Matrix = field(default_factory=lambda: np.eye(4))  # local transform, column vectors
    mesh: int | None = None
    children: list[int] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Image:
    data: bytes  # PNG or JPEG, ready to embed
    mime: str
    name: str | None = None


@dataclass
class Model:
    """A scene graph (a forest under `roots`) with materials, textures, samplers and images as glTF JSON."""

    nodes: list[Node]
    roots: list[int]
    meshes: list[Mesh]
    materials: list[dict[str, Any]] = field(default_factory=list)
    textures: list[dict[str, Any]] = field(default_factory=list)
    samplers: list[dict[str, Any]] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)

    def walk(self) -> Iterator[tuple[int, Matrix, int]]:
        """(node, world matrix, depth from 1) for every node under the roots, parents first."""
        stack = [(root, self.nodes[root].matrix, 1) for root in reversed(self.roots)]
        while stack:
            index, world, depth = stack.pop()
            yield index, world, depth
            node = self.nodes[index]
            stack.extend((child, world @ self.nodes[child].matrix, depth + 1) for child in reversed(node.children))

    def instances(self) -> Iterator[tuple[Matrix, Mesh]]:
        """Each use of a mesh in the scene with its world matrix."""
        for index, world, _depth in self.walk():
            mesh = self.nodes[index].mesh
            if mesh is not None:
                yield world, self.meshes[mesh]

    def bounds(self) -> NDArray[np.float64] | None:
        """[[min x, y, z], [max x, y, z]] of every drawn position in world space, or None for an empty scene."""
        lows, highs = [], []
        for world, mesh in self.instances():
            for primitive in mesh.primitives:
                low, high = _world_bounds(primitive.attributes["POSITION"], world)
                if low is not None and high is not None:
                    lows.append(low)
                    highs.append(high)
        if not lows:
            return None
        return np.array([np.min(lows, 0), np.max(highs, 0)], np.float64)


def _world_bounds(positions: np.ndarray, world: Matrix) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not len(positions):
        return None, None
    linear, offset = world[:3, :3], world[:3, 3]
    if (np.count_nonzero(linear, axis=1) <= 1).all():
        # Axes stay axes (the usual case, and every point cloud): the box's corners move exactly as its points do.
        corners = np.array([positions.min(0), positions.max(0)], np.float64) @ linear.T + offset
        return corners.min(0), corners.max(0)
    lows, highs = [], []
    for start in range(0, len(positions), _SLICE):  # in slices: float64 copies of a whole point cloud cost gigabytes
        moved = positions[start : start + _SLICE] @ linear.T + offset
        lows.append(moved.min(0))
        highs.append(moved.max(0))
    return np.min(lows, 0), np.max(highs, 0)


_SLICE = 1 << 20


def trs_matrix(translation: Any, rotation: Any, scale: Any) -> Matrix:
    """glTF's TRS (rotation a unit quaternion x, y, z, w) as one 4x4 matrix."""
    x, y, z, w = (float(v) for v in rotation)
    rotate = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    matrix = np.eye(4)
    matrix[:3, :3] = rotate * np.asarray(scale, np.float64)
    matrix[:3, 3] = np.asarray(translation, np.float64)
    return matrix
