"""The render worker process, seen from the server: start it, send poses, await frames, close it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import TypeVar

import numpy as np

from renderhub.render.camera import Hit, Pose
from renderhub.render.errors import RenderError
from renderhub.render.gltf import ModelError
from renderhub.render.render_loop import FIRST_GENERATION, SLOTS, slot_bytes, slot_views, worker_main
from renderhub.render.worker_messages import (
    READY_ID,
    Clear,
    Cleared,
    Fatal,
    Frame,
    FrameMeta,
    FromWorker,
    Load,
    Loaded,
    ModelInfo,
    Pick,
    Picked,
    Progress,
    Ready,
    Release,
    Reply,
    Request,
    Resize,
    Resized,
    SetPose,
    Stop,
    Stopped,
    ToWorker,
)

__all__ = ["FrameMeta", "Hit", "ModelInfo", "PickFailed", "RenderWorker", "WorkerError"]

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R", bound=Reply)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 3.0


class WorkerError(RenderError, RuntimeError):
    """The render worker could not start, or died."""

    code = "RenderingUnavailable"


class PickFailed(RenderError, RuntimeError):
    """The worker could not read its framebuffer back for a pick; it renders on."""

    code = "PickFailed"


def _cleanup(process: multiprocessing.process.BaseProcess, blocks: list[SharedMemory]) -> None:
    """Last resort when a worker is dropped without close(): no orphan process, no leaked shared memory."""
    if process.is_alive():
        process.kill()
        process.join(1)
    for block in blocks:
        with contextlib.suppress(Exception):
            block.close()
        with contextlib.suppress(FileNotFoundError):
            block.unlink()
    blocks.clear()


class RenderWorker:
    """The parent's handle on one render worker process; every method is safe to call from the event loop."""

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection, shm: SharedMemory) -> None:
        self._process, self._conn, self._shm = process, conn, shm
        self._blocks = [shm]
        self._loop = asyncio.get_running_loop()
        self._generation = FIRST_GENERATION - 1
        self.width = self.height = 0
        self._views: list[tuple[np.ndarray, np.ndarray]] = []
        self._ready_slot: int | None = None
        self._frame_ready = asyncio.Event()
        # Each request's id finds its reply: concurrent requests of one kind never get each other's answers.
        self._ids = itertools.count(READY_ID + 1)
        self._replies: dict[int, asyncio.Future[Reply]] = {}
        self._on_progress: dict[int, Callable[[str, float], None]] = {}
        self.renderer_name = ""
        self.dropped_frames = 0
        self.error: str | None = None
        self._closed = False
        self._forced = False
        self._teardown: asyncio.Future[None] | None = None
        self._finalizer = weakref.finalize(self, _cleanup, process, self._blocks)
        self._loop.add_reader(conn.fileno(), self._on_readable)

    @classmethod
    async def start(
        cls,
        width: int,
        height: int,
        *,
        fps: float = 30,
        device_index: int | None = None,
        timeout: float = START_TIMEOUT,
    ) -> RenderWorker:
        """Spawn the worker and wait until its renderer is up (the GL context is created in the child)."""
        context = multiprocessing.get_context("spawn")
        parent_conn, child_conn = context.Pipe(duplex=True)
        shm = SharedMemory(create=True, size=slot_bytes(width, height) * SLOTS)
        process = context.Process(
            target=worker_main,
            args=(child_conn, os.getpid(), shm.name, width, height, fps, device_index),
            name="renderhub-render-worker",
            daemon=True,
        )
        # Started from the event loop's thread: the child's death signal is tied to the thread that made it.
        process.start()
        child_conn.close()
        worker = cls(process, parent_conn, shm)
        worker._set_size(width, height, shm)
        try:
            ready = await worker._reply(READY_ID, Ready, timeout)
        except BaseException:
            await worker.close()
            raise
        worker.renderer_name = ready.renderer
        return worker

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def exitcode(self) -> int | None:
        """The worker's exit status once it has ended (minus the signal that ended it), else None."""
        return self._process.exitcode

    @property
    def alive(self) -> bool:
        return not self._closed and self.error is None and self._process.is_alive()

    def send_pose(self, pose_id: int, pose: Pose) -> None:
        """Ask for a frame of `pose`; poses the worker has not started on yet are replaced, never queued."""
        self._send(SetPose(pose_id, pose))

    async def load_model(
        self,
        path: Path,
        *,
        max_primitives: int | None,
        max_bytes: int,
        on_progress: Callable[[str, float], None] | None = None,
    ) -> ModelInfo:
        """Load and upload a model in the worker; raises ModelError when the model is refused."""
        request = Load(next(self._ids), str(path), max_primitives, max_bytes)
        if on_progress is not None:
            self._on_progress[request.id] = on_progress
        try:
            loaded = await self._call(request, Loaded, None)
        finally:
            self._on_progress.pop(request.id, None)
        if loaded.refused is not None:
            raise ModelError(*loaded.refused)
        assert loaded.info is not None
        return loaded.info

    async def pick(self, x: float, y: float) -> tuple[int | None, Hit | None]:
        """What the last rendered frame shows at (x, y), fractions from its top-left: (its pose id, the hit or None).

        The pose id is None before the first frame (and after a resize, until the next); raises PickFailed.
        """
        picked = await self._call(Pick(next(self._ids), x, y), Picked, None)
        if picked.failure is not None:
            raise PickFailed(f"the depth read-back failed ({picked.failure})")
        return picked.pose_id, picked.hit

    async def clear(self) -> None:
        """Drop the model; the next frames show the empty scene."""
        await self._call(Clear(next(self._ids)), Cleared, STOP_TIMEOUT * 10)

    async def resize(self, width: int, height: int, *, fps: float | None = None, redraw: bool = True) -> None:
        """Render at a new size (and frame-rate cap) from the next frame on; frames queued before are dropped.

        `redraw` draws the latest pose again at the new size; False forgets it (a new client taking over the scene
        sends its own, in ids of its own).
        """
        shm = SharedMemory(create=True, size=slot_bytes(width, height) * SLOTS)
        self._blocks.append(shm)
        old = self._shm
        self._set_size(width, height, shm)
        resize = Resize(next(self._ids), width, height, shm.name, self._generation, fps, redraw)
        await self._call(resize, Resized, STOP_TIMEOUT * 10)
        old.close()
        old.unlink()
        self._blocks.remove(old)

    async def next_frame(self) -> tuple[np.ndarray, FrameMeta]:
        """The newest frame not returned before (a copy; older unclaimed frames are skipped); waits while idle."""
        return await self.next_frame_with(np.copy)

    async def next_frame_with(self, convert: Callable[[np.ndarray], T]) -> tuple[T, FrameMeta]:
        """Like next_frame, but `convert` gets the shared-memory view itself and must copy what it keeps."""
        while self._ready_slot is None or self._closed:  # a closed worker's memory is gone, ready slot or not
            if self.error is not None or self._closed:
                raise WorkerError(self.error or "the render worker is closed")
            self._frame_ready.clear()
            await self._frame_ready.wait()
        slot, self._ready_slot = self._ready_slot, None
        header, image = self._views[slot]
        pose_id, number, render_ns, width, height, ready_ns, level, still = (int(v) for v in header)
        meta = FrameMeta(pose_id, number, render_ns / 1e6, width, height, ready_ns / 1e9, level, bool(still))
        try:
            converted = convert(image)
        finally:
            self._send(Release(self._generation, slot))
        return converted, meta

    async def close(self) -> None:
        """Stop the worker (politely, then by force) and free the shared memory; idempotent."""
        if self._teardown is None:
            self._closed = True
            self._frame_ready.set()
            self._teardown = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._teardown)

    async def kill(self) -> None:
        """Stop the worker at once, without asking: it may be stuck in native code, deaf to "stop"; idempotent."""
        self._forced = True
        await self.close()

    async def _stop(self) -> None:
        if self._forced:
            with contextlib.suppress(Exception):
                self._process.kill()
        with contextlib.suppress(WorkerError, TimeoutError):
            if not self._forced and self.error is None and self._process.is_alive():
                await self._call(Stop(next(self._ids)), Stopped, STOP_TIMEOUT)
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._conn.fileno())
        deadline = time.monotonic() + STOP_TIMEOUT
        while self._process.is_alive() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._views.clear()
        self._finalizer()  # kills a worker that did not stop, unlinks every block
        self._process.join(1)
        self._conn.close()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(WorkerError("the render worker is closed"))

    # ------------------------------------------------------------------------------------------- internals

    def _set_size(self, width: int, height: int, shm: SharedMemory) -> None:
        self._shm, self.width, self.height = shm, width, height
        self._generation += 1
        self._ready_slot = None
        self._views = slot_views(shm.buf, width, height, SLOTS)

    def _send(self, message: ToWorker) -> None:
        if self.error is not None:
            raise WorkerError(self.error)
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:
            self._fail(f"the render worker is gone ({type(exc).__name__})")
            raise WorkerError(self.error or "the render worker is gone") from None

    async def _call(self, request: Request, reply_type: type[R], timeout: float | None) -> R:
        """Send a request and wait for the reply that carries its id back."""
        self._send(request)  # its reply is read on this loop: _reply registers for it before anything can read it
        return await self._reply(request.id, reply_type, timeout)

    async def _reply(self, request_id: int, reply_type: type[R], timeout: float | None) -> R:
        if self.error is not None:
            raise WorkerError(self.error)
        future = self._replies[request_id] = self._loop.create_future()
        name = reply_type.__name__
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"the render worker did not send {name} #{request_id} within {timeout} s") from None
        finally:
            self._replies.pop(request_id, None)
        if not isinstance(reply, reply_type):
            raise WorkerError(f"the render worker answered #{request_id} with {type(reply).__name__}, not {name}")
        return reply

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                self._handle(self._conn.recv())
        except (EOFError, OSError):
            code = self._process.exitcode
            self._fail("the render worker exited" + ("" if code is None else f" with code {code}"))

    def _handle(self, message: FromWorker) -> None:
        if isinstance(message, Frame):
            if message.generation != self._generation:
                return  # a frame of the size before a resize: its memory is gone
            if self._ready_slot is not None:
                # The consumer has not taken the previous frame: it is stale now, give it back unseen.
                self.dropped_frames += 1
                with contextlib.suppress(WorkerError):
                    self._send(Release(self._generation, self._ready_slot))
            self._ready_slot = message.slot
            self._frame_ready.set()
        elif isinstance(message, Progress):
            on_progress = self._on_progress.get(message.id)
            if on_progress is not None:
                on_progress(message.stage, message.fraction)
        elif isinstance(message, Fatal):
            self._fail(message.reason)
        else:
            future = self._replies.get(message.id)  # none when its caller gave up (a timeout, a cancellation)
            if future is not None and not future.done():
                future.set_result(message)

    def _fail(self, reason: str) -> None:
        if self.error is not None:
            return
        self.error = reason
        log.warning("render worker: %s", reason)
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._conn.fileno())
        self._frame_ready.set()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(WorkerError(reason))
