"""Point clouds (glTF POINTS, as the conversion engine writes them) and unlit materials, loaded and drawn in-process."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from renderhub.conversion.engine import convert
from renderhub.render.camera import Pose, frame_bounds, orbit_pose, projection_matrix, view_matrix
from renderhub.render.renderer import BACKGROUND_RGB, MAX_POINT_PIXELS, Renderer
from renderhub.render.scene import Batch, Material, ModelError, Scene, load_scene

WIDTH, HEIGHT = 320, 240
ROOMY = 256 * 1024 * 1024
FRONT = Pose((0.0, 0.0, 3.0), (0.0, 0.0, 0.0, 1.0))


@pytest.fixture(scope="module")
def renderer() -> Iterator[Renderer]:
    with Renderer(WIDTH, HEIGHT) as r:
        yield r


def converted_cloud(folder: Path, positions: np.ndarray, colors: np.ndarray) -> Path:
    """An .arrAsset written by the conversion engine from an XYZ file of `positions` and 8-bit `colors`."""
    (folder / "out").mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "scan.xyz", np.column_stack([positions, colors]), fmt="%.4f")
    outcome = convert(folder, "scan.xyz", folder / "out", "cloud.arrAsset", "points")
    assert outcome.error is None, outcome.error
    return folder / "out" / "cloud.arrAsset"


def points_gltf(path: Path, positions: np.ndarray, **primitive: Any) -> Path:
    """A glTF whose one mesh is a POINTS primitive of `positions` (no colours), with `primitive`'s extra keys."""
    data = positions.astype(np.float32).tobytes()
    header: dict[str, Any] = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}, "mode": 0, **primitive}]}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": len(positions), "type": "VEC3"}],
        "bufferViews": [{"buffer": 0, "byteLength": len(data)}],
        "buffers": [{"byteLength": len(data), "uri": "data:;base64," + base64.b64encode(data).decode()}],
    }
    path.write_text(json.dumps(header))
    return path


def projected_box(scene: Scene, pose: Pose) -> tuple[int, int, int, int]:
    """(first column, last column, first row, last row) of the pixels the scene's bounds cover, row 0 at the top."""
    lo, hi = scene.bounds
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    clip = corners @ (projection_matrix(pose, WIDTH / HEIGHT, scene.bounds) @ view_matrix(pose)).T
    ndc = clip[:, :2] / clip[:, 3:]
    columns, rows = (ndc[:, 0] + 1) / 2 * WIDTH, (1 - ndc[:, 1]) / 2 * HEIGHT
    return int(columns.min()), int(columns.max()), int(rows.min()), int(rows.max())


def drawn(frame: np.ndarray) -> np.ndarray:
    return np.asarray((frame != np.array(BACKGROUND_RGB, np.uint8)).any(axis=2))


@pytest.fixture(scope="module")
def red_and_blue(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    """A scanned slab at survey coordinates: its west half red, its east half blue."""
    rng = np.random.default_rng(3)
    local = np.column_stack([rng.uniform(0, 40, 20_000), rng.uniform(0, 30, 20_000), rng.uniform(0, 2, 20_000)])
    colors = np.where(local[:, :1] < 20, [[255, 0, 0]], [[0, 0, 255]])
    path = converted_cloud(tmp_path_factory.mktemp("cloud"), local + np.array([500_000, 4_100_000, 0]), colors)
    return load_scene(path, max_primitives=20_000_000, max_bytes=ROOMY)


def test_a_converted_cloud_loads_as_points(red_and_blue: Scene) -> None:
    (cloud,) = red_and_blue.clouds
    assert (red_and_blue.points, red_and_blue.triangles, red_and_blue.draw_calls) == (20_000, 0, 1)
    assert red_and_blue.skipped_primitives == 0 and cloud.colors is not None
    # Relative to their centre, float32 positions keep the file's tenths of a millimetre at 4,100 km from the origin.
    placed = cloud.positions.astype(np.float64) + cloud.origin
    assert placed[:, 0].min() >= 500_000 - 1e-4 and placed[:, 1].max() <= 4_100_030 + 1e-4
    np.testing.assert_allclose(placed.min(0), red_and_blue.bounds[0], atol=1e-6)
    assert 0.1 < cloud.spacing < 0.5  # sqrt(40 m x 30 m / 20,000 points) = 0.24 m on a flat slab
    assert red_and_blue.gpu_bytes == 20_000 * 16


def test_points_appear_inside_their_projected_bounds_in_their_own_colours(
    renderer: Renderer, red_and_blue: Scene
) -> None:
    renderer.upload(red_and_blue)
    pose = frame_bounds(red_and_blue.bounds, yaw=0, pitch=60)
    frame = renderer.render(pose)
    x0, x1, y0, y1 = projected_box(red_and_blue, pose)
    model = drawn(frame)
    inside = model[y0 : y1 + 1, x0 : x1 + 1]
    assert inside.mean() > 0.5, "the cloud must fill most of its box"
    margin = int(MAX_POINT_PIXELS // 2) + 1  # a point's square may reach past the box by half its width
    outside = model.copy()
    outside[max(y0 - margin, 0) : y1 + margin + 1, max(x0 - margin, 0) : x1 + margin + 1] = False
    assert not outside.any(), "no points far outside the bounds"
    pixels = frame[model].astype(int)
    red = (pixels[:, 0] > 200) & (pixels[:, 1] < 40) & (pixels[:, 2] < 40)
    blue = (pixels[:, 2] > 200) & (pixels[:, 0] < 40) & (pixels[:, 1] < 40)
    assert (red | blue).mean() > 0.95, "COLOR_0 drawn as it is: no lighting, no other colour"
    columns = np.nonzero(model)[1]
    middle = (x0 + x1) / 2
    assert (columns[red] < middle).mean() > 0.95 and (columns[blue] > middle).mean() > 0.95, "west red, east blue"
    figures = renderer.figures()
    assert (figures["points"], figures["triangles"], figures["drawCalls"]) == (20_000, 0, 1)


def test_a_pick_on_a_point_answers_where_the_cloud_is(renderer: Renderer, red_and_blue: Scene) -> None:
    renderer.upload(red_and_blue)
    renderer.render(frame_bounds(red_and_blue.bounds, yaw=0, pitch=60))
    hit = renderer.pick(0.5, 0.5)
    assert hit is not None
    lo, hi = red_and_blue.bounds
    slack = red_and_blue.clouds[0].spacing * 4  # the point's square stands at its centre's depth
    assert (np.asarray(hit.position) > lo - slack).all() and (np.asarray(hit.position) < hi + slack).all(), hit
    assert renderer.pick(0.01, 0.01) is None  # background in a corner


def test_points_without_colours_take_their_materials_base_colour(renderer: Renderer, tmp_path: Path) -> None:
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 40), np.linspace(-1, 1, 40), [0.0]), -1).reshape(-1, 3)
    path = points_gltf(tmp_path / "p.gltf", grid, material=0)
    header = json.loads(path.read_text())
    header["materials"] = [{"pbrMetallicRoughness": {"baseColorFactor": [0, 1, 0, 1]}}]
    path.write_text(json.dumps(header))
    scene = load_scene(path, max_primitives=None, max_bytes=ROOMY)
    assert scene.clouds[0].colors is None and scene.clouds[0].material.base_color == (0, 1, 0, 1)
    renderer.upload(scene)
    frame = renderer.render(FRONT)
    pixels = frame[drawn(frame)].astype(int)
    assert len(pixels) > 500 and (pixels == [0, 255, 0]).all(axis=1).mean() > 0.95
    header.pop("materials")
    header["meshes"][0]["primitives"][0].pop("material")
    path.write_text(json.dumps(header))
    renderer.upload(load_scene(path, max_primitives=None, max_bytes=ROOMY))
    frame = renderer.render(FRONT)
    assert (frame[drawn(frame)] == 255).all(axis=1).mean() > 0.95, "no material: glTF's default, white"


def test_indexed_points_under_a_transformed_node(tmp_path: Path) -> None:
    positions = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [5, 5, 5]], np.float32)
    path = points_gltf(tmp_path / "p.gltf", positions, indices=1)
    header = json.loads(path.read_text())
    data = base64.b64decode(header["buffers"][0]["uri"].partition(",")[2]) + np.uint16([0, 1, 2, 1]).tobytes()
    header["buffers"][0] = {"byteLength": len(data), "uri": "data:;base64," + base64.b64encode(data).decode()}
    header["bufferViews"].append({"buffer": 0, "byteOffset": 48, "byteLength": 8})
    header["accessors"].append({"bufferView": 1, "componentType": 5123, "count": 4, "type": "SCALAR"})
    header["nodes"] = [{"translation": [10, 0, 0], "children": [1]}, {"mesh": 0, "scale": [2, 2, 2]}]
    path.write_text(json.dumps(header))
    scene = load_scene(path, max_primitives=None, max_bytes=ROOMY)
    assert scene.points == 4  # the indexed vertex 1 twice, the unindexed (5, 5, 5) not at all
    np.testing.assert_allclose(scene.bounds, [[10, 0, 0], [12, 2, 0]])


def test_interleaved_normalized_and_sparse_accessors(tmp_path: Path) -> None:
    """Positions and byte colours interleaved in one strided view, one position replaced by a sparse accessor."""
    interleaved = np.zeros(4, [("p", "<f4", 3), ("c", "u1", 4)])
    interleaved["p"] = [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    interleaved["c"] = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255], [255, 255, 255, 255]]
    data = interleaved.tobytes() + np.uint8([2, 0, 0, 0]).tobytes() + np.float32([9, 9, 9]).tobytes()
    path = points_gltf(tmp_path / "p.gltf", np.zeros((1, 3)))
    header = json.loads(path.read_text())
    header["meshes"][0]["primitives"][0]["attributes"]["COLOR_0"] = 1
    header["buffers"] = [{"byteLength": len(data), "uri": "data:;base64," + base64.b64encode(data).decode()}]
    header["bufferViews"] = [
        {"buffer": 0, "byteLength": 64, "byteStride": 16},
        {"buffer": 0, "byteOffset": 64, "byteLength": 1},
        {"buffer": 0, "byteOffset": 68, "byteLength": 12},
    ]
    sparse = {"count": 1, "indices": {"bufferView": 1, "componentType": 5121}, "values": {"bufferView": 2}}
    header["accessors"] = [
        {"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3", "sparse": sparse},
        {"bufferView": 0, "byteOffset": 12, "componentType": 5121, "normalized": True, "count": 4, "type": "VEC4"},
    ]
    path.write_text(json.dumps(header))
    (cloud,) = load_scene(path, max_primitives=None, max_bytes=ROOMY).clouds
    assert cloud.colors is not None
    placed = {tuple((p + cloud.origin).round(6)): tuple(c) for p, c in zip(cloud.positions, cloud.colors, strict=True)}
    assert placed == {
        (0, 0, 0): (255, 0, 0, 255),
        (1, 0, 0): (0, 255, 0, 255),
        (9, 9, 9): (0, 0, 255, 255),
        (0, 0, 1): (255, 255, 255, 255),
    }


def test_points_count_against_the_primitive_limit_beside_triangles(tmp_path: Path) -> None:
    path = points_gltf(tmp_path / "p.gltf", np.eye(3))
    header = json.loads(path.read_text())
    header["meshes"][0]["primitives"].append({"attributes": {"POSITION": 0}})  # a triangle on the same corners
    path.write_text(json.dumps(header))
    scene = load_scene(path, max_primitives=4, max_bytes=ROOMY)
    assert (scene.triangles, scene.points) == (1, 3)
    with pytest.raises(ModelError) as caught:
        load_scene(path, max_primitives=3, max_bytes=ROOMY)
    assert caught.value.code == "TooManyPrimitives"
    assert "1 triangles and 3 points" in caught.value.message and "a point counts as one" in caught.value.message


def test_a_few_bytes_promising_many_points_are_refused_before_anything_is_decoded(tmp_path: Path) -> None:
    path = points_gltf(tmp_path / "p.gltf", np.eye(3), indices=1)
    header = json.loads(path.read_text())
    header["accessors"].append({"componentType": 5121, "count": 100_000_000, "type": "SCALAR"})  # zeros, no data
    path.write_text(json.dumps(header))
    started = time.perf_counter()
    for limit, code in ((20_000_000, "TooManyPrimitives"), (None, "ModelTooLarge")):
        with pytest.raises(ModelError) as caught:
            load_scene(path, max_primitives=limit, max_bytes=ROOMY)
        assert caught.value.code == code, caught.value
    assert time.perf_counter() - started < 1.0


def test_lines_are_still_refused_clearly(tmp_path: Path) -> None:
    path = points_gltf(tmp_path / "p.gltf", np.eye(3))
    header = json.loads(path.read_text())
    header["meshes"][0]["primitives"][0]["mode"] = 1
    path.write_text(json.dumps(header))
    with pytest.raises(ModelError) as caught:
        load_scene(path, max_primitives=None, max_bytes=ROOMY)
    assert caught.value.code == "UnsupportedPrimitive"
    assert caught.value.message == "the model holds only lines; only triangles and points are rendered"


def quad(material: Material, colors: tuple[int, int, int, int] = (255, 255, 255, 255)) -> Scene:
    positions = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
    batch = Batch(
        material=material,
        positions=positions,
        normals=np.tile(np.float32([0, 0, 1]), (4, 1)),
        texcoords=np.float32([[0, 1], [1, 1], [1, 0], [0, 0]]),
        colors=np.tile(np.uint8(colors), (4, 1)),
        indices=np.uint32([[0, 1, 2], [0, 2, 3]]),
    )
    return Scene(batches=(batch,), bounds=np.array([positions.min(0), positions.max(0)], np.float64))


POSES = [FRONT, orbit_pose((0, 0, 0), 3, 70, 0), orbit_pose((0, 0, 0), 3, -50, 60), orbit_pose((0, 0, 0), 3, 180, 0)]


def centre_colours(renderer: Renderer, scene: Scene) -> list[list[int]]:
    renderer.upload(scene)
    return [renderer.render(pose)[HEIGHT // 2, WIDTH // 2].astype(int).tolist() for pose in POSES]


def test_unlit_draws_its_base_colour_whatever_the_light(renderer: Renderer) -> None:
    base = (0.25, 0.5, 1.0, 1.0)  # linear; shown with gamma 2: sqrt(0.25) = 0.5, sqrt(0.5) = 0.71, 1
    unlit = centre_colours(renderer, quad(Material("flat", base, double_sided=True, unlit=True)))
    for colour in unlit:
        assert np.abs(np.array(colour) - [128, 180, 255]).max() <= 2, unlit
    lit = centre_colours(renderer, quad(Material("shaded", base, double_sided=True)))
    assert len({tuple(c) for c in lit}) > 1, "lit, the same quad changes with the light"


def test_unlit_multiplies_texture_factor_and_vertex_colour(renderer: Renderer) -> None:
    texture = np.zeros((2, 2, 4), np.uint8)
    texture[..., 1] = texture[..., 3] = 255  # green; sRGB, squared in the shader
    material = Material("textured", (1.0, 0.25, 1.0, 1.0), texture=texture, double_sided=True, unlit=True)
    for colour in centre_colours(renderer, quad(material, colors=(255, 255, 0, 255))):
        assert np.abs(np.array(colour) - [0, 128, 0]).max() <= 2, colour


def test_unlit_materials_are_read_from_the_file_beside_lit_ones(tmp_path: Path) -> None:
    from tests.render.test_scene import triangle_gltf

    path = triangle_gltf(
        tmp_path / "t.gltf",
        nodes=[{}, {"mesh": 1}],
        materials=[
            {"name": "flat", "extensions": {"KHR_materials_unlit": {}}},
            {"name": "shaded", "pbrMetallicRoughness": {"baseColorFactor": [1, 0, 0, 1]}},
        ],
        extensionsUsed=["KHR_materials_unlit"],
    )
    header = json.loads(path.read_text())
    header["meshes"] = [{"primitives": [{"attributes": {"POSITION": 0}, "material": m}]} for m in (0, 1)]
    path.write_text(json.dumps(header))
    scene = load_scene(path, max_primitives=None, max_bytes=ROOMY)
    materials = {b.material.name: b.material for b in scene.batches}
    assert materials["flat"].unlit and not materials["shaded"].unlit
    assert materials["shaded"].base_color == (1, 0, 0, 1)
