"""The renderer on EGL (llvmpipe here) and the camera poses it takes."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from renderhub.render.camera import Pose, frame_bounds, orbit_pose, view_matrix
from renderhub.render.renderer import BACKGROUND_RGB, Renderer
from renderhub.render.sample import write_sample
from renderhub.render.scene import Batch, Material, Scene, load_scene

WIDTH, HEIGHT = 160, 120
BOX_TEXTURED = Path("/usr/share/assimp/models/glTF2/BoxTextured-glTF-Binary/BoxTextured.glb")
FRONT = Pose((0.0, 0.0, 3.0), (0.0, 0.0, 0.0, 1.0))  # on +Z, looking down -Z at the origin
BEHIND = orbit_pose((0, 0, 0), 3, 180, 0)


@pytest.fixture(scope="module")
def renderer() -> Iterator[Renderer]:
    with Renderer(WIDTH, HEIGHT) as r:
        yield r


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    path = write_sample(tmp_path_factory.mktemp("sample"))
    return load_scene(path, max_primitives=None, max_bytes=256 * 1024 * 1024)


def quad(centre: tuple[float, float, float], size: float, material: Material) -> Batch:
    """A square facing +Z (counter-clockwise from the front), white vertices, texcoords over the whole texture."""
    x, y, z = centre
    h = size / 2
    positions = np.array([[x - h, y - h, z], [x + h, y - h, z], [x + h, y + h, z], [x - h, y + h, z]], np.float32)
    return Batch(
        material=material,
        positions=positions,
        normals=np.tile(np.float32([0, 0, 1]), (4, 1)),
        texcoords=np.float32([[0, 1], [1, 1], [1, 0], [0, 0]]),
        colors=np.full((4, 4), 255, np.uint8),
        indices=np.uint32([[0, 1, 2], [0, 2, 3]]),
    )


def scene_of(*batches: Batch) -> Scene:
    points = np.concatenate([b.positions for b in batches])
    return Scene(batches=batches, bounds=np.array([points.min(0), points.max(0)], np.float64))


def is_background(pixel: np.ndarray) -> bool:
    return bool((pixel == BACKGROUND_RGB).all())


def test_empty_renderer_draws_the_background(renderer: Renderer) -> None:
    renderer.clear()
    frame = renderer.render(FRONT)
    assert frame.shape == (HEIGHT, WIDTH, 3) and frame.dtype == np.uint8 and frame.flags.writeable
    assert (frame == BACKGROUND_RGB).all()


def test_row_zero_is_the_top_of_the_picture(renderer: Renderer) -> None:
    red, blue = Material("red", (1, 0, 0, 1)), Material("blue", (0, 0, 1, 1))
    renderer.upload(scene_of(quad((0, 0.6, 0), 1, red), quad((0, -0.6, 0), 1, blue)))
    frame = renderer.render(FRONT).astype(int)
    top, bottom = frame[HEIGHT // 4, WIDTH // 2], frame[3 * HEIGHT // 4, WIDTH // 2]
    assert top[0] > 100 and top[2] < 30, top
    assert bottom[2] > 100 and bottom[0] < 30, bottom


def test_back_faces_are_culled_unless_double_sided(renderer: Renderer) -> None:
    one_sided, two_sided = Material("one", (1, 1, 1, 1)), Material("two", (1, 1, 1, 1), double_sided=True)
    renderer.upload(scene_of(quad((0, 0, 0), 1, one_sided)))
    assert not is_background(renderer.render(FRONT)[HEIGHT // 2, WIDTH // 2])
    assert is_background(renderer.render(BEHIND)[HEIGHT // 2, WIDTH // 2])
    renderer.upload(scene_of(quad((0, 0, 0), 1, two_sided)))
    assert not is_background(renderer.render(BEHIND)[HEIGHT // 2, WIDTH // 2])


def test_texture_colour_times_base_colour(renderer: Renderer) -> None:
    green = np.zeros((4, 4, 4), np.uint8)
    green[..., 1] = green[..., 3] = 255
    renderer.upload(scene_of(quad((0, 0, 0), 1, Material("textured", (1, 1, 1, 1), texture=green))))
    r, g, b = renderer.render(FRONT)[HEIGHT // 2, WIDTH // 2].astype(int)
    assert g > 100 and r < 20 and b < 20


def test_alpha_mask_cuts_out_transparent_texels(renderer: Renderer) -> None:
    texture = np.full((2, 2, 4), 255, np.uint8)
    texture[:, :, 3] = 0  # fully transparent
    renderer.upload(scene_of(quad((0, 0, 0), 1, Material("cut", texture=texture, alpha_mode="MASK"))))
    assert is_background(renderer.render(FRONT)[HEIGHT // 2, WIDTH // 2])


def test_blended_material_lets_the_background_through(renderer: Renderer) -> None:
    renderer.upload(scene_of(quad((0, 0, 0), 1, Material("glass", (1, 1, 1, 0.5), alpha_mode="BLEND"))))
    grey = renderer.render(FRONT)[HEIGHT // 2, WIDTH // 2].astype(int)
    renderer.upload(scene_of(quad((0, 0, 0), 1, Material("solid", (1, 1, 1, 1)))))
    white = renderer.render(FRONT)[HEIGHT // 2, WIDTH // 2].astype(int)
    assert (BACKGROUND_RGB < grey).all() and (grey < white).all(), (grey, white)


@pytest.mark.skipif(not BOX_TEXTURED.exists(), reason="install Debian's assimp-testmodels")
def test_box_textured_shows_its_texture(renderer: Renderer) -> None:
    scene = load_scene(BOX_TEXTURED, max_primitives=None, max_bytes=64 * 1024 * 1024)
    renderer.upload(scene)
    frame = renderer.render(orbit_pose((0, 0, 0), 2.2, 0, 0)).astype(int)
    face = frame[HEIGHT // 4 : 3 * HEIGHT // 4, WIDTH // 3 : 2 * WIDTH // 3].reshape(-1, 3)
    # The Cesium logo: blue sky and green hills on white, none of which a plain grey box would give.
    blue = (face[:, 2] > face[:, 0] + 40).sum()
    green = (face[:, 1] > face[:, 0] + 30).sum()
    assert blue > 0.05 * len(face) and green > 0.05 * len(face), (blue, green)


def test_sample_frame_changes_with_the_pose_and_figures_are_reported(renderer: Renderer, sample: Scene) -> None:
    renderer.upload(sample)
    first = renderer.render(frame_bounds(sample.bounds, yaw=0))
    second = renderer.render(frame_bounds(sample.bounds, yaw=90))
    changed = (first != second).any(axis=2).mean()
    assert changed > 0.05
    assert (first != BACKGROUND_RGB).any(axis=2).mean() > 0.05
    figures = renderer.figures()
    assert figures["triangles"] == sample.triangles == renderer.triangles
    assert figures["drawCalls"] == sample.draw_calls == renderer.draw_calls
    assert figures["lastRenderMs"] > 0 and renderer.last_render_ms > 0
    assert figures["glRenderer"] and figures["glRenderer"] == renderer.gl_renderer
    assert (figures["width"], figures["height"]) == (WIDTH, HEIGHT)


def test_resize_and_clear(sample: Scene) -> None:
    with Renderer(64, 48) as renderer:
        renderer.upload(sample)
        renderer.resize(96, 40)
        frame = renderer.render(frame_bounds(sample.bounds))
        assert frame.shape == (40, 96, 3) and not (frame == BACKGROUND_RGB).all()
        renderer.clear()
        assert renderer.triangles == 0 and renderer.draw_calls == 0
        assert (renderer.render(frame_bounds(sample.bounds)) == BACKGROUND_RGB).all()
        with pytest.raises(ValueError):
            renderer.resize(0, 10)


def test_pose_json_round_trip_and_normalisation() -> None:
    pose = Pose.from_json({"position": [1, 2, 3], "orientation": [0, 0, 0, 1.05], "fov": 45})
    assert pose.orientation == (0, 0, 0, 1) and pose.fov == 45
    assert Pose.from_json(pose.to_json()) == pose
    assert Pose.from_json({"position": [0, 0, 0], "orientation": [0, 0, 0, 1]}).fov == 60


@pytest.mark.parametrize(
    "bad",
    [
        {"position": [math.nan] * 3, "orientation": [math.nan] * 4, "fov": math.nan},
        {"position": [0, 0, math.inf], "orientation": [0, 0, 0, 1]},
        {"position": [0, 0, 0], "orientation": [0, 0, 0, 0]},
        {"position": [0, 0, 0], "orientation": [0, 0, 0, 2]},
        {"position": [0, 0, 0], "orientation": [0, 0, 0, 1], "fov": 170},
        {"position": [0, 0, 0], "orientation": [0, 0, 0, 1], "fov": 1},
        {"position": [0, 0], "orientation": [0, 0, 0, 1]},
        {"position": ["0", 0, 0], "orientation": [0, 0, 0, 1]},
        {"position": [True, 0, 0], "orientation": [0, 0, 0, 1]},
        {"position": [1e300, 0, 0], "orientation": [0, 0, 0, 1]},
        {"orientation": [0, 0, 0, 1]},
        [0, 0, 0],
        None,
    ],
)
def test_bad_poses_are_refused_with_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        Pose.from_json(bad)


def test_orbit_pose_looks_at_its_target() -> None:
    target = (1.0, 2.0, 3.0)
    for yaw, pitch in [(0, 0), (90, 30), (-135, -60), (10, 89)]:
        pose = orbit_pose(target, 5, yaw, pitch)
        in_camera = view_matrix(pose) @ np.array([*target, 1.0])
        np.testing.assert_allclose(in_camera[:3], [0, 0, -5], atol=1e-9)  # straight ahead, 5 m along -Z
    assert orbit_pose(target, 5, 0, 30).position[1] > target[1]  # positive pitch looks down from above
