"""The project's sample model: a torus knot and a few coloured primitives on a textured base, about 100k triangles."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

SAMPLE_NAME = "renderhub-sample.glb"
# 1000 x 48 tube segments: 96,000 triangles, the size the frame-rate figures are quoted for.
KNOT_SEGMENTS, KNOT_SIDES = 1000, 48


def _knot_curve(t: NDArray[np.float64], p: int = 2, q: int = 3) -> NDArray[np.float64]:
    r = 2 + np.cos(q * t)
    return np.stack([r * np.cos(p * t), np.sin(q * t), r * np.sin(p * t)], axis=-1)


def _torus_knot(tube: float = 0.42) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Vertices, unit normals and counter-clockwise faces of a (2,3) torus-knot tube, radius 3 overall."""
    t = np.linspace(0, 2 * np.pi, KNOT_SEGMENTS, endpoint=False)
    centre, ahead = _knot_curve(t), _knot_curve(t + 1e-3)
    tangent = ahead - centre
    binormal = np.cross(tangent, ahead + centre)
    normal = np.cross(binormal, tangent)
    binormal /= np.linalg.norm(binormal, axis=1, keepdims=True)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    angle = np.linspace(0, 2 * np.pi, KNOT_SIDES, endpoint=False)
    offsets = -np.cos(angle)[None, :, None] * normal[:, None] + np.sin(angle)[None, :, None] * binormal[:, None]
    vertices = (centre[:, None] + tube * offsets).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(KNOT_SEGMENTS), np.arange(KNOT_SIDES), indexing="ij")
    a = i * KNOT_SIDES + j
    b = ((i + 1) % KNOT_SEGMENTS) * KNOT_SIDES + j
    c = ((i + 1) % KNOT_SEGMENTS) * KNOT_SIDES + (j + 1) % KNOT_SIDES
    d = i * KNOT_SIDES + (j + 1) % KNOT_SIDES
    faces = np.concatenate([np.stack([a, b, d], -1), np.stack([b, c, d], -1)]).reshape(-1, 3)
    normals = offsets.reshape(-1, 3)
    corners = vertices[faces]
    facing = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    if np.einsum("ij,ij->i", facing, normals[faces[:, 0]]).mean() < 0:
        faces = faces[:, ::-1]  # whichever way the frame turned, faces must point out of the tube
    return vertices, normals, faces


def _base_texture() -> Any:
    """A 256x256 checkerboard with a warm-to-cool gradient, so orientation and texture sampling are visible."""
    from PIL import Image

    y, x = np.mgrid[0:256, 0:256]
    checker = ((x // 32 + y // 32) % 2).astype(np.float64)
    shade = 0.75 + 0.25 * checker[..., None]
    rgb = np.stack([200 - 80 * y / 255, 150 + 20 * checker, 90 + 120 * y / 255], -1) * shade
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _build() -> Any:
    import trimesh
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    def material(name: str, rgba: tuple[int, int, int, int], **extra: Any) -> TextureVisuals:
        return TextureVisuals(material=PBRMaterial(name=name, baseColorFactor=rgba, metallicFactor=0.0, **extra))

    scene = trimesh.Scene()
    vertices, normals, faces = _torus_knot()
    knot = trimesh.Trimesh(vertices, faces, vertex_normals=normals, process=False)
    knot.visual = material("knot", (230, 140, 40, 255))
    scene.add_geometry(knot, geom_name="knot", node_name="knot", transform=_placed((0, 1.9, 0), 0.5))

    base = _flat(trimesh.creation.box(extents=(6, 0.2, 6)))
    uv = (base.vertices[:, [0, 2]] / 6 + 0.5) * 2  # the checker repeats twice across the top
    base.visual = TextureVisuals(
        uv=uv, material=PBRMaterial(name="base", baseColorTexture=_base_texture(), metallicFactor=0.0)
    )
    scene.add_geometry(base, geom_name="base", node_name="base", transform=_placed((0, -0.1, 0)))

    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.45)
    sphere = trimesh.Trimesh(sphere.vertices, sphere.faces, vertex_normals=sphere.vertices / 0.45, process=False)
    sphere.visual = material("sphere", (50, 110, 220, 255))
    scene.add_geometry(sphere, geom_name="sphere", node_name="sphere", transform=_placed((2.1, 0.45, 2.1)))
    box = _flat(trimesh.creation.box(extents=(0.8, 0.8, 0.8)))
    box.visual = material("box", (60, 170, 80, 255))
    scene.add_geometry(box, geom_name="box", node_name="box", transform=_placed((-2.1, 0.4, 2.1)))
    cylinder = _flat(trimesh.creation.cylinder(radius=0.35, height=1.0, sections=48))
    cylinder.visual = material("cylinder", (200, 50, 60, 255))
    upright = _placed((2.1, 0.5, -2.1)) @ trimesh.transformations.rotation_matrix(np.pi / 2, (1, 0, 0))
    scene.add_geometry(cylinder, geom_name="cylinder", node_name="cylinder", transform=upright)
    cone = _flat(trimesh.creation.cone(radius=0.45, height=1.1, sections=48))
    cone.visual = material("cone", (190, 190, 200, 255))
    pointing_up = _placed((-2.1, 0, -2.1)) @ trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0))
    scene.add_geometry(cone, geom_name="cone", node_name="cone", transform=pointing_up)
    return scene


def _flat(mesh: Any) -> Any:
    """The mesh with a vertex per face corner and face normals: crisp edges, and no normals left to trimesh,
    whose smoothing wants scipy."""
    import trimesh

    corners = np.asarray(mesh.vertices)[np.asarray(mesh.faces)]
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    faces = np.arange(len(corners) * 3).reshape(-1, 3)
    return trimesh.Trimesh(corners.reshape(-1, 3), faces, vertex_normals=np.repeat(normals, 3, 0), process=False)


def _placed(offset: tuple[float, float, float], scale: float = 1.0) -> NDArray[np.float64]:
    matrix = np.diag([scale, scale, scale, 1.0])
    matrix[:3, 3] = offset
    return matrix


def write_sample(path: Path) -> Path:
    """Write the sample model as GLB to `path` (a file, or a folder to hold renderhub-sample.glb); returns the file."""
    if path.is_dir():
        path = path / SAMPLE_NAME
    from trimesh.exchange.gltf import export_glb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # trimesh's exporter warns about nothing we can act on
        data = export_glb(_build(), include_normals=True)
    # Write then rename, so a hub serving the folder never hands out half a file.
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
    return path
