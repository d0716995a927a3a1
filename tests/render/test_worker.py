"""The render worker process: latest-pose coalescing, no repeats, idle at rest, resize, load errors, no orphans."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from renderhub.render.camera import orbit_pose
from renderhub.render.render_loop import STILL_SECONDS
from renderhub.render.sample import write_sample
from renderhub.render.scene import ModelError
from renderhub.render.worker import RenderWorker, WorkerError

# Render workers or servers run as real processes here.
pytestmark = pytest.mark.integration

POSE = orbit_pose([0, 1, 0], 9.0, yaw=30.0, pitch=20.0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def shm_exists(name: str) -> bool:
    return Path("/dev/shm", name.lstrip("/")).exists()


async def test_latest_pose_wins_frames_never_repeat_and_idle_costs_nothing() -> None:
    worker = await RenderWorker.start(320, 240, fps=1000)
    try:
        for pose_id in range(1, 51):
            worker.send_pose(pose_id, POSE)
        ids = []
        while not ids or ids[-1] < 50:
            image, meta = await asyncio.wait_for(worker.next_frame(), 20)
            assert image.shape == (240, 320, 3)
            ids.append(meta.pose_id)
        assert ids == sorted(set(ids)) and len(ids) < 50, "stale poses were rendered"
        assert not meta.still
        # The camera stopped: the last pose once more, drawn in full as the still frame, then nothing.
        image, meta = await asyncio.wait_for(worker.next_frame(), STILL_SECONDS + 2)
        assert (meta.pose_id, meta.still, meta.level) == (50, True, 0)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(worker.next_frame(), 0.5)  # no new pose: no frame, and never the old one again
        assert worker.pid is not None
        before, process_before = cpu_seconds(worker.pid), time.process_time()
        await asyncio.sleep(1.0)
        assert cpu_seconds(worker.pid) - before < 0.05
        assert time.process_time() - process_before < 0.05
    finally:
        await worker.close()


async def test_fps_cap_and_resize() -> None:
    worker = await RenderWorker.start(320, 240, fps=10)
    try:
        frames, started, pose_id = 0, time.monotonic(), 0
        while time.monotonic() - started < 1.0:
            pose_id += 1
            worker.send_pose(pose_id, POSE)
            try:
                await asyncio.wait_for(worker.next_frame(), 0.01)
                frames += 1
            except TimeoutError:
                pass
        assert 5 <= frames <= 13  # 10 a second, plus a burst of two for a pose that comes late
        await worker.resize(160, 96)
        worker.send_pose(pose_id + 1, POSE)
        image, meta = await asyncio.wait_for(worker.next_frame(), 10)
        while meta.pose_id != pose_id + 1:  # the last pose re-rendered at the new size may come first
            image, meta = await asyncio.wait_for(worker.next_frame(), 10)
        assert image.shape == (96, 160, 3) and (meta.width, meta.height) == (160, 96)
    finally:
        await worker.close()


async def test_model_errors_then_a_model_that_loads(tmp_path: Path) -> None:
    worker = await RenderWorker.start(320, 240, fps=30)
    shm = worker._shm.name
    try:
        with pytest.raises(ModelError) as refused:
            await worker.load_model(tmp_path / "missing.glb", max_primitives=None, max_bytes=1 << 30)
        assert refused.value.code == "ModelNotFound"
        worker.send_pose(1, POSE)
        empty, _ = await asyncio.wait_for(worker.next_frame(), 10)
        stages: list[str] = []
        sample = write_sample(tmp_path)
        with pytest.raises(ModelError) as too_big:
            await worker.load_model(sample, max_primitives=1000, max_bytes=1 << 30)
        assert too_big.value.code == "TooManyPrimitives"
        info = await worker.load_model(
            sample, max_primitives=None, max_bytes=1 << 30, on_progress=lambda s, f: stages.append(s)
        )
        assert info.triangles > 90_000 and info.bounds is not None and stages == ["parse", "upload"]
        # The scene changed, so the last pose is rendered again without being asked.
        shown, meta = await asyncio.wait_for(worker.next_frame(), 10)
        assert meta.pose_id == 1 and (shown != empty).any()
        await worker.clear()
        cleared, _ = await asyncio.wait_for(worker.next_frame(), 10)
        assert (cleared == empty).all()
    finally:
        await worker.close()
    assert not worker.alive and not shm_exists(shm)


async def test_a_dead_worker_is_an_error_not_a_hang() -> None:
    worker = await RenderWorker.start(160, 96)
    shm = worker._shm.name
    assert worker.pid is not None
    os.kill(worker.pid, signal.SIGKILL)
    with pytest.raises(WorkerError):
        await asyncio.wait_for(worker.next_frame(), 10)
    with pytest.raises(WorkerError):
        worker.send_pose(1, POSE)
    await worker.close()
    await worker.close()
    assert not shm_exists(shm)


async def test_a_worker_stuck_in_a_load_is_killed_at_once(tmp_path: Path) -> None:
    worker = await RenderWorker.start(160, 96)
    shm, pid = worker._shm.name, worker.pid
    stuck = tmp_path / "stuck.glb"
    os.mkfifo(stuck)  # no writer: the worker's read blocks in the kernel, where "stop" never reaches it
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(worker.load_model(stuck, max_primitives=None, max_bytes=1 << 20), 1.0)
    worker.send_pose(1, POSE)
    waiting = asyncio.create_task(worker.next_frame())
    started = time.monotonic()
    await worker.kill()
    assert time.monotonic() - started < 2.0, "no polite stop to wait out"
    with pytest.raises(WorkerError):
        await asyncio.wait_for(waiting, 5)
    assert not worker.alive and not shm_exists(shm)
    assert pid not in [p.pid for p in multiprocessing.active_children()]


def test_the_worker_dies_with_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, os, signal
        from renderhub.render.worker import RenderWorker

        async def main():
            worker = await RenderWorker.start(160, 96)
            print(worker.pid, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        if __name__ == "__main__":
            asyncio.run(main())
        """
    )
    (tmp_path / "parent.py").write_text(script)
    result = subprocess.run(
        [sys.executable, str(tmp_path / "parent.py")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    pid = int(result.stdout.split()[0])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]:
        assert time.monotonic() < deadline, "the render worker outlived its parent"
        time.sleep(0.05)


async def test_a_renderer_that_cannot_start_is_reported() -> None:
    with pytest.raises(WorkerError, match="renderer could not start"):
        await RenderWorker.start(160, 96, device_index=99)
    assert not multiprocessing.active_children()
