"""Picks: what lies under a pointer, read from the last frame's depth and unprojected with that frame's camera."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import numpy as np
import pytest

from renderhub.render import protocol
from renderhub.render.camera import Hit, Pose, frame_bounds, perspective, unproject, view_matrix
from renderhub.render.picking import Picker
from renderhub.render.protocol import PointerMessage
from renderhub.render.renderer import Renderer
from renderhub.render.sample import write_sample
from renderhub.render.scene import Batch, Material, Scene, load_scene
from renderhub.render.worker import RenderWorker, WorkerError

# Render workers or servers run as real processes here.
pytestmark = pytest.mark.integration

FRONT = Pose((0.0, 0.0, 3.0), (0.0, 0.0, 0.0, 1.0))  # on +Z, looking down -Z at the origin


def pixel_centre(column: int, row: int, width: int, height: int) -> tuple[float, float]:
    return (column + 0.5) / width, (row + 0.5) / height


def camera_ray(pose: Pose, x: float, y: float, aspect: float) -> np.ndarray:
    """The unit world direction through (x, y) of the frame, from the pose's fov alone (not the renderer's matrices)."""
    half = math.tan(math.radians(pose.fov) / 2)
    local = np.array([(2 * x - 1) * half * aspect, (1 - 2 * y) * half, -1.0])
    direction = pose.rotation() @ local
    return np.asarray(direction / np.linalg.norm(direction))


def assert_on_ray(hit: Hit, pose: Pose, x: float, y: float, aspect: float, tolerance: float = 1e-3) -> None:
    eye, direction = np.asarray(pose.position), camera_ray(pose, x, y, aspect)
    offset = np.asarray(hit.position) - eye
    along = float(offset @ direction)
    assert along > 0, "the hit is behind the camera"
    assert np.linalg.norm(offset - along * direction) < tolerance * max(along, 1.0), "the hit is off the ray"
    assert hit.distance == pytest.approx(float(np.linalg.norm(offset)), rel=1e-5)


def nearest_triangle(scene: Scene, eye: np.ndarray, direction: np.ndarray) -> float | None:
    """Distance along the ray to the nearest triangle (Moller-Trumbore over every triangle), or None."""
    best = math.inf
    for batch in scene.batches:
        a, b, c = (batch.positions[batch.indices[:, k]].astype(np.float64) for k in range(3))
        e1, e2 = b - a, c - a
        p = np.cross(direction, e2)
        det = np.einsum("ij,ij->i", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        s = eye - a
        u = np.einsum("ij,ij->i", s, p) * inv
        q = np.cross(s, e1)
        v = (q @ direction) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        inside = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
        if inside.any():
            best = min(best, float(t[inside].min()))
    return None if best == math.inf else best


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Scene]:
    path = write_sample(tmp_path_factory.mktemp("sample"))
    return path, load_scene(path, max_primitives=None, max_bytes=256 * 1024 * 1024)


def test_unproject_inverts_the_projection() -> None:
    matrix = perspective(50, 16 / 9, 0.5, 40) @ view_matrix(FRONT)
    for point in ([0.0, 0.0, 0.0], [0.3, -0.2, -4.0], [-1.0, 1.5, 1.0]):
        clip = matrix @ np.array([*point, 1.0])
        np.testing.assert_allclose(unproject(matrix, clip[:3] / clip[3]), point, atol=1e-9)


def test_pick_messages() -> None:
    hit = protocol.parse_server_message(protocol.pick(0.5, 0.25, 7, Hit((1.0, 2.0, 3.1234567891), 4.5), "p1"))
    assert hit == {"type": "pick", "x": 0.5, "y": 0.25, "poseId": 7, "hit": True, "position": [1.0, 2.0, 3.123457],
                   "distance": 4.5, "ref": "p1"}  # fmt: skip
    miss = protocol.parse_server_message(protocol.pick(0, 1, None, None))
    assert miss == {"type": "pick", "x": 0, "y": 1, "poseId": None, "hit": False}
    text = protocol.pointer(0.5, 0.5, "down", buttons=1, ref="p2")
    assert protocol.parse_client_message(text) == PointerMessage(0.5, 0.5, 1, "down", "p2")


def test_renderer_picks_a_quad_where_the_pointer_is() -> None:
    width, height = 160, 120
    positions = np.float32([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]])  # 2 m square in the z = 0 plane
    quad = Batch(Material("quad"), positions, np.tile(np.float32([0, 0, 1]), (4, 1)), np.zeros((4, 2), np.float32),
                 np.full((4, 4), 255, np.uint8), np.uint32([[0, 1, 2], [0, 2, 3]]))  # fmt: skip
    with Renderer(width, height) as renderer:
        renderer.upload(Scene((quad,), np.array([[-1, -1, 0], [1, 1, 0]], np.float64)))
        assert renderer.pick(0.5, 0.5) is None, "no frame rendered yet"
        renderer.render(FRONT)
        # Up and to the right in the picture is +Y and +X in the world: the pick is not mirrored.
        x, y = pixel_centre(100, 40, width, height)
        hit = renderer.pick(x, y)
        assert hit is not None
        assert_on_ray(hit, FRONT, x, y, width / height)
        assert hit.position[0] > 0.1 and hit.position[1] > 0.1 and abs(hit.position[2]) < 1e-3
        centre = renderer.pick(0.5, 0.5)
        assert centre is not None and np.allclose(centre.position, (0, 0, 0), atol=1e-3)
        assert centre.distance == pytest.approx(3.0, abs=1e-3)
        assert renderer.pick(0.0, 0.0) is None and renderer.pick(1.0, 1.0) is None  # background corners
        renderer.resize(80, 60)
        assert renderer.pick(0.5, 0.5) is None, "new buffers: no frame to pick from"


async def test_the_worker_picks_from_the_last_rendered_frame(sample: tuple[Path, Scene]) -> None:
    path, scene = sample
    width, height = 320, 180
    worker = await RenderWorker.start(width, height, fps=30)
    try:
        assert await worker.pick(0.5, 0.5) == (None, None), "nothing rendered yet"
        info = await worker.load_model(path, max_primitives=None, max_bytes=1 << 30)
        assert info.bounds is not None
        pose = frame_bounds(np.array(info.bounds))
        worker.send_pose(5, pose)
        _, meta = await asyncio.wait_for(worker.next_frame(), 20)
        x, y = pixel_centre(width // 2, height // 2, width, height)
        pose_id, hit = await worker.pick(x, y)
        assert pose_id == meta.pose_id == 5 and hit is not None
        assert_on_ray(hit, pose, x, y, width / height)
        low, high = np.array(info.bounds)
        assert (np.asarray(hit.position) >= low - 1e-3).all() and (np.asarray(hit.position) <= high + 1e-3).all()
        # The depth buffer agrees with the geometry: the nearest triangle on each ray is where the pick landed.
        for column, row in [(width // 2, height // 2), *((c, r) for c in (40, 130, 200, 290) for r in (30, 100, 160))]:
            x, y = pixel_centre(column, row, width, height)
            exact = nearest_triangle(scene, np.asarray(pose.position), camera_ray(pose, x, y, width / height))
            pose_id, hit = await worker.pick(x, y)
            assert pose_id == 5 and (hit is None) == (exact is None), (column, row)
            assert hit is None or hit.distance == pytest.approx(exact, abs=0.01), (column, row)
        assert await worker.pick(0.0, 0.0) == (5, None), "the model does not reach the corner"
        # Picks in flight together each get the answer to their own point, never another's.
        points = [pixel_centre(c, r, width, height) for c in (40, 130, 200, 290) for r in (30, 100, 160)]
        together = await asyncio.gather(*(worker.pick(x, y) for x, y in points))
        assert together == [await worker.pick(x, y) for x, y in points]
        assert len({repr(hit) for _, hit in together}) > 1, "the points must not all show the same thing"
    finally:
        await worker.close()


async def idle(picker: Picker) -> None:
    async with asyncio.timeout(20):
        while picker.busy:
            await asyncio.sleep(0.01)


async def test_a_flood_of_presses_is_coalesced_and_frames_go_on(sample: tuple[Path, Scene]) -> None:
    worker = await RenderWorker.start(160, 96, fps=1000)
    sent: list[str] = []
    errors: list[tuple[str, str, str | None]] = []
    picker = Picker(worker.pick, sent.append, lambda *error: errors.append(error))
    try:
        await worker.load_model(sample[0], max_primitives=None, max_bytes=1 << 30)
        worker.send_pose(1, frame_bounds(sample[1].bounds))
        await asyncio.wait_for(worker.next_frame(), 20)
        for i in range(200):  # all before the picker runs: each replaces the one waiting
            picker.request(PointerMessage(0.5, 0.5, 1, "down", f"r{i}"))
        await idle(picker)
        assert [json.loads(text)["ref"] for text in sent] == ["r199"] and picker.superseded == 199
        for pose_id in range(2, 6):  # frames keep coming while presses pour in
            worker.send_pose(pose_id, frame_bounds(sample[1].bounds, yaw=pose_id * 10.0))
            for i in range(50):
                picker.request(PointerMessage(0.0, 0.0, 1, "down", f"s{pose_id}.{i}"))
            _, meta = await asyncio.wait_for(worker.next_frame(), 20)
            assert meta.pose_id == pose_id
        await idle(picker)
        answers = [json.loads(text) for text in sent]
        refs = [a["ref"] for a in answers]
        assert refs[-1] == "s5.49" and len(refs) <= 1 + 2 * 4, "one in flight and one waiting, at most"
        assert refs == sorted(refs, key=lambda r: (r[0], *map(int, r[1:].split(".")))), "answered in order"
        assert answers[0]["hit"] and not answers[-1]["hit"] and answers[-1]["poseId"] in (4, 5)
        assert picker.answered == len(refs) and picker.superseded == 200 + 4 * 50 - len(refs) and not errors
    finally:
        await picker.close()
        await worker.close()


async def test_a_pick_on_a_dead_worker_is_an_error_not_a_hang() -> None:
    worker = await RenderWorker.start(160, 96)
    errors: list[tuple[str, str, str | None]] = []
    picker = Picker(worker.pick, lambda text: None, lambda *error: errors.append(error))
    await worker.kill()
    picker.request(PointerMessage(0.5, 0.5, 1, "down", "late"))
    await idle(picker)
    assert errors == [(protocol.INTERNAL, "the pick could not be answered", "late")]
    with pytest.raises(WorkerError):
        await worker.pick(0.5, 0.5)
