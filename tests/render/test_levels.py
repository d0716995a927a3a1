"""Levels of detail in the render worker: the coarsest first for a new model, the finest that fits the frame budget
while the camera moves, and once it stops the last pose once more in full detail, then nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from renderhub.render.camera import orbit_pose
from renderhub.render.render_loop import STILL_SECONDS, LevelChooser
from renderhub.render.worker import RenderWorker
from tests.conversion.test_draw_levels import glb_with_levels


def test_the_chooser_starts_coarse_and_moves_finer_as_times_are_measured() -> None:
    chooser = LevelChooser(budget_ms=20.0)
    chooser.reset([400_000, 100_000, 25_000])
    assert chooser.choose() == 2  # nothing measured: the coarsest, so a new model shows at once
    chooser.measured(0, 6.0)  # the empty scene: what clearing and reading back cost
    chooser.measured(25_000, 8.0)
    assert chooser.estimate(100_000) == 14.0  # along the line through the two measured counts
    assert chooser.choose() == 1
    chooser.measured(100_000, 30.0)  # slower than estimated: back to what fits
    assert chooser.choose() == 2
    chooser.reset([10, 5], resized=True)
    assert chooser.ms == {}


async def test_moving_draws_coarse_and_the_still_frame_is_full_detail(tmp_path: Path) -> None:
    model = glb_with_levels(tmp_path)
    # At 1000 fps the budget is under a millisecond: every moving frame is drawn at the coarsest level.
    worker = await RenderWorker.start(320, 240, fps=1000)
    try:
        info = await worker.load_model(model, max_primitives=None, max_bytes=1 << 28)
        coarsest = len(info.levels) - 1
        assert info.levels[0] == 24_200 and coarsest >= 1
        frames = []
        for pose_id in range(1, 6):
            worker.send_pose(pose_id, orbit_pose([5, 0, 5], 12, 20 * pose_id, 30))
            frames.append(await asyncio.wait_for(worker.next_frame(), 20))
            await asyncio.sleep(0.02)  # moving: well inside the stillness threshold
        assert all(meta.level == coarsest and not meta.still for _, meta in frames)
        moving, _ = frames[-1]
        still, meta = await asyncio.wait_for(worker.next_frame(), STILL_SECONDS + 5)
        assert (meta.pose_id, meta.level, meta.still) == (5, 0, True)
        # The same view in more detail: close to the coarse picture, and not the empty background.
        difference = np.abs(still.astype(int) - moving.astype(int))[:200].mean()
        assert 0 < difference < 10
        assert still[:200].std() > 10
        try:
            extra = await asyncio.wait_for(worker.next_frame(), 0.6)
            raise AssertionError(f"a frame after the still one: {extra[1]}")
        except TimeoutError:
            pass
    finally:
        await worker.close()


def test_a_full_detail_frame_gives_way_to_a_moving_camera() -> None:
    from renderhub.render.renderer import SLICE_TRIANGLES, Renderer
    from renderhub.render.scene import DEFAULT_MATERIAL, PackedBatch, Scene
    from tests.conversion.test_draw_levels import terrain

    grid = terrain(550)  # 605 000 triangles: two slices
    assert grid.triangles > SLICE_TRIANGLES
    batch = PackedBatch(DEFAULT_MATERIAL, grid.vertices, grid.indices, colored=False)
    scene = Scene(batches=(batch,), bounds=np.array([[0, -1, 0], [10, 1, 10]], np.float64))
    asked: list[int] = []
    with Renderer(64, 64) as renderer:
        renderer.upload(scene)
        pose = orbit_pose([5, 0, 5], 12, 30, 30)
        assert renderer.render(pose, 0, lambda: asked.append(1) is None and len(asked) > 1) is None
        assert len(asked) == 2  # asked before each slice: the second said stop
        assert renderer.pick(0.5, 0.5) is None  # no answers from half a frame
        whole = renderer.render(pose, 0, lambda: False)
        assert whole is not None and whole.std() > 10 and renderer.pick(0.5, 0.5) is not None
