"""The render server's vertex: the layout its GL buffers hold (converted models store it as it is), and normals."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

# Interleaved, 36 bytes: position, normal (unit), texture coordinate (glTF's: (0, 0) is the image's top-left) and
# vertex colour (RGBA, 255 = white). Conversions write their levels of detail in this layout, so a render server
# maps them into GL buffers without touching a vertex.
VERTEX = np.dtype([("p", "<f4", 3), ("n", "<f4", 3), ("t", "<f4", 2), ("c", "u1", 4)])
NORMALS_SLICE = 1 << 21  # faces per slice when computing normals: about 100 MB of temporaries


def vertex_normals(vertices: NDArray[np.float32], faces: NDArray[np.int64]) -> NDArray[np.float32]:
    """Area-weighted vertex normals with plain numpy (trimesh wants scipy for this, which we do not ship).

    In slices of faces: gathering every corner at once took 72 bytes a triangle, the largest single cost of a load.
    """
    sums = np.zeros((len(vertices), 3), np.float32)
    for start in range(0, len(faces), NORMALS_SLICE):
        part = faces[start : start + NORMALS_SLICE]
        first = vertices[part[:, 0]]
        face_normals = np.cross(vertices[part[:, 1]] - first, vertices[part[:, 2]] - first)
        del first
        for k in range(3):
            sums[:, k] += np.bincount(part.ravel(), np.repeat(face_normals[:, k], 3), minlength=len(vertices))
    return sums


def unit_vectors(
    vectors: NDArray[np.float32], fallback: Callable[[], NDArray[np.float32]] | None = None
) -> NDArray[np.float32]:
    """Unit vectors; zero or non-finite ones (bad normals in a file, degenerate faces) come from `fallback`, else +Y."""
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    bad = ~np.isfinite(length) | (length < 1e-12)
    if bad.any():
        vectors = np.where(bad, fallback(), vectors) if fallback else vectors
        length = np.linalg.norm(vectors, axis=1, keepdims=True)
        bad = ~np.isfinite(length) | (length < 1e-12)
        vectors, length = np.where(bad, [0.0, 1.0, 0.0], vectors), np.where(bad, 1.0, length)
    unit: NDArray[np.float32] = (vectors / length).astype(np.float32, copy=False)  # numpy types the quotient as Any
    return unit
