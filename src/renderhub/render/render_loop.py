"""The render loop inside the worker process: renders the latest pose into shared memory, one frame ahead at most."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from renderhub.render.camera import Pose
from renderhub.render.gltf import ModelError
from renderhub.render.lifetime import die_with_parent
from renderhub.render.model_limits import HardLimit, out_of_memory
from renderhub.render.worker_messages import (
    Clear,
    Cleared,
    Fatal,
    Frame,
    Load,
    Loaded,
    ModelInfo,
    Pick,
    Picked,
    Progress,
    Ready,
    Release,
    Request,
    Resize,
    Resized,
    SetPose,
    Stop,
    Stopped,
    ToWorker,
)

if TYPE_CHECKING:
    from renderhub.render.renderer import Renderer

log = logging.getLogger(__name__)

SLOTS = 2  # one ready or being copied out by the parent, one being written by the worker
# Frames rendered but not yet taken by the encoder. One: the next pose renders while the previous frame encodes,
# and never further ahead, since a frame nobody takes is CPU stolen from the encoder on a small machine.
MAX_UNCLAIMED = 1
HEADER_FIELDS = 8  # int64s per slot: pose id, frame number, render ns, width, height, ready-at ns, level, still
# Once no pose has come for this long, the camera is taken to be still: the server draws the view once more at full
# detail (the one frame a person looks at longest), then nothing until the next pose. One threshold for every step
# that waits for stillness.
STILL_SECONDS = 0.15
# While the camera moves, the level of detail drawn is the finest expected to render within this share of a frame's
# interval: the encoder needs the rest of the machine meanwhile.
FRAME_BUDGET_SHARE = 0.75
HEADER_BYTES = HEADER_FIELDS * 8
FIRST_GENERATION = 1  # bumped by each resize; frames and releases of another generation are ignored


def slot_bytes(width: int, height: int) -> int:
    return HEADER_BYTES + (width * height * 3 + 63) // 64 * 64


def slot_views(buf: memoryview | None, width: int, height: int, slots: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(header, image) numpy views of each slot of a shared-memory block."""
    size = slot_bytes(width, height)
    views = []
    for i in range(slots):
        header = np.ndarray((HEADER_FIELDS,), np.int64, buffer=buf, offset=i * size)
        image = np.ndarray((height, width, 3), np.uint8, buffer=buf, offset=i * size + HEADER_BYTES)
        views.append((header, image))
    return views


class _Inbox:
    """Drains the command pipe on a thread, so the parent never blocks on a full pipe while we render or load."""

    def __init__(self, conn: Connection) -> None:
        self.cond = threading.Condition()
        self.requests: deque[Request] = deque()
        self.pose: tuple[int, Pose] | None = None
        self.pose_changed = False
        self.released: list[tuple[int, int]] = []
        self._conn = conn
        threading.Thread(target=self._run, name="renderhub-inbox", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                message: ToWorker = self._conn.recv()
            except (EOFError, OSError):
                # The parent is gone without saying stop: leave at once, whatever the render thread is doing.
                os._exit(0)
            with self.cond:
                if isinstance(message, SetPose):
                    self.pose = (message.pose_id, message.pose)  # only the latest pose matters: stale ones drop here
                    self.pose_changed = True
                elif isinstance(message, Release):
                    self.released.append((message.generation, message.slot))
                else:
                    self.requests.append(message)
                self.cond.notify()


class _Bucket:
    """A token bucket for the fps cap: the long-run rate never exceeds it, and a late pose may catch up at once."""

    def __init__(self, fps: float) -> None:
        self.rate, self.tokens, self.stamp = float(fps), 2.0, time.monotonic()

    def wait_time(self) -> float:
        now = time.monotonic()
        self.tokens = min(2.0, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1.0


def worker_main(
    conn: Connection, parent_pid: int, shm_name: str, width: int, height: int, fps: float, device_index: int | None
) -> None:
    """The worker process's entry point: start the renderer, say Ready, then serve the server's messages."""
    if not die_with_parent(signal.SIGKILL, parent_pid):  # elsewhere than Linux, the pipe's EOF alone ends us
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group; the parent stops us itself
    from renderhub.render.renderer import Renderer

    try:
        renderer = Renderer(width, height, device_index=device_index)
    except Exception as exc:
        conn.send(Fatal(f"the renderer could not start: {type(exc).__name__}: {exc}"))
        return
    loop = RenderLoop(conn, renderer, SharedMemory(shm_name), width, height, fps)
    conn.send(Ready(str(getattr(renderer, "gl_renderer", "unknown"))))
    loop.run()


class LevelChooser:
    """The level of detail to draw while the camera moves: the finest whose render time fits the frame budget. Times
    are measured per primitive count (the empty scene's too: what a frame costs without a model) and estimated for
    levels not drawn yet along the line through the measured ones; the coarsest until any is measured, so a new
    model shows at once."""

    def __init__(self, budget_ms: float) -> None:
        self.budget_ms = budget_ms
        self.primitives = [0]  # per level, full detail first
        self.ms: dict[int, float] = {}  # render time by primitives drawn

    def reset(self, primitives: list[int], *, resized: bool = False) -> None:
        """A new model (its levels' primitives), or a new frame size (every time measured is void)."""
        self.primitives = primitives
        self.ms = {} if resized else {count: ms for count, ms in self.ms.items() if count == 0}

    def choose(self) -> int:
        for level, count in enumerate(self.primitives):
            estimate = self.estimate(count)
            if estimate is not None and estimate <= self.budget_ms:
                return level
        return len(self.primitives) - 1

    def estimate(self, count: int) -> float | None:
        if count in self.ms:
            return self.ms[count]
        below = [c for c in self.ms if c < count]
        if not below:
            return None
        near = max(below)
        above = [c for c in self.ms if c > count]
        if above:  # between two measured counts
            far = min(above)
        elif len(below) > 1:  # past the finest measured: along the line through the two finest
            far, near = near, max(c for c in below if c != near)
        else:  # one measurement: in proportion to primitives, pessimistic (clearing and filling do not grow)
            return self.ms[near] * count / max(near, 1)
        slope = (self.ms[far] - self.ms[near]) / (far - near)
        return self.ms[near] + slope * (count - near)

    def measured(self, count: int, ms: float) -> None:
        self.ms[count] = ms if count not in self.ms else 0.7 * self.ms[count] + 0.3 * ms


class RenderLoop:
    """Renders the latest pose when a slot is free, and answers each request in its handler, one at a time. While the
    camera moves it draws the level of detail that fits the frame budget; once still, full detail once."""

    def __init__(
        self, conn: Connection, renderer: Renderer, shm: SharedMemory, width: int, height: int, fps: float
    ) -> None:
        self.conn, self.renderer, self.shm = conn, renderer, shm
        self.width, self.height = width, height
        self.views = slot_views(shm.buf, width, height, SLOTS)
        self.generation, self.free = FIRST_GENERATION, list(range(SLOTS))
        self.bucket = _Bucket(fps)
        self.frame_number, self.dirty = 0, False
        self.latest: tuple[int, Pose] | None = None
        self.shown: int | None = None  # the pose id of the frame in the framebuffer, which picks answer for
        self.levels = LevelChooser(1000 / fps * FRAME_BUDGET_SHARE)
        self.moved_at = time.monotonic()  # when the latest pose arrived
        self.still_drawn = True  # whether the frame last drawn is the still one (no pose since it)
        self.drawing_still = False
        self.running = True
        self.memory = HardLimit()  # measured now: the renderer is up, no model is loaded
        self.handlers: dict[type[Any], Callable[[Any], None]] = {
            Load: self.load,
            Pick: self.pick,
            Clear: self.clear,
            Resize: self.resize,
            Stop: self.stop,
        }

    def run(self) -> None:
        inbox = self.inbox = _Inbox(self.conn)
        while self.running:
            request = self.next_request(inbox)
            if request is None:
                self.render()
            else:
                self.handlers[type(request)](request)

    def next_request(self, inbox: _Inbox) -> Request | None:
        """Waits for a request (returned first), or for a frame to be due (None)."""
        with inbox.cond:
            while True:
                for gen, slot in inbox.released:
                    if gen == self.generation and slot not in self.free:
                        self.free.append(slot)
                inbox.released.clear()
                if inbox.requests:
                    return inbox.requests.popleft()
                if inbox.pose_changed:
                    self.latest, self.dirty, inbox.pose_changed = inbox.pose, True, False
                    self.moved_at, self.still_drawn, self.drawing_still = time.monotonic(), False, False
                unclaimed = SLOTS - len(self.free)
                if not self.dirty and not self.still_drawn and self.latest is not None:
                    still_in = self.moved_at + STILL_SECONDS - time.monotonic()
                    if still_in > 0:
                        inbox.cond.wait(still_in)
                        continue
                    self.dirty = self.drawing_still = True  # the camera stopped: the full-detail frame is due
                delay = self.bucket.wait_time() if self.dirty and self.latest and unclaimed < MAX_UNCLAIMED else None
                if delay == 0.0:
                    return None
                # Idle (no new pose, or the last frame not taken) waits without a timeout: no CPU while nothing changes.
                inbox.cond.wait(delay)

    def render(self) -> None:
        assert self.latest is not None
        self.bucket.take()
        slot = self.free.pop(0)
        pose_id, pose = self.latest
        still = self.drawing_still
        level = 0 if still else self.levels.choose()
        started = time.perf_counter_ns()
        inbox = self.inbox
        try:
            # The full-detail frame of a still camera gives way to a camera that moves again.
            image = self.renderer.render(pose, level, (lambda: inbox.pose_changed) if still else None)
        except Exception as exc:
            self.conn.send(Fatal(f"rendering failed: {type(exc).__name__}: {exc}"))
            self.running = False
            return
        render_ns = time.perf_counter_ns() - started
        if image is None:  # abandoned: the slot is free again, and the next pose is drawn as a moving one
            self.free.insert(0, slot)
            self.drawing_still = False
            return
        level = self.renderer.last_level
        self.levels.measured(self.renderer.level_primitives[level], render_ns / 1e6)
        self.shown = pose_id
        self.still_drawn, self.drawing_still = still, False
        header, target = self.views[slot]
        np.copyto(target, image)
        self.frame_number += 1
        header[:] = (pose_id, self.frame_number, render_ns, self.width, self.height, time.monotonic_ns(), level, still)
        self.dirty = False
        self.conn.send(Frame(self.generation, slot))

    def pick(self, request: Pick) -> None:
        # Before any render that is waiting: a pick costs one pixel of depth, a frame tens of milliseconds.
        try:
            hit, failure = self.renderer.pick(request.x, request.y), None
        except Exception as exc:  # a driver that refuses the read-back must not end the stream
            log.warning("a pick failed: %s: %s", type(exc).__name__, exc)
            hit, failure = None, type(exc).__name__
        self.conn.send(Picked(request.id, self.shown, hit, failure))

    def load(self, request: Load) -> None:
        from renderhub.render.scene import load_scene

        load_started = time.perf_counter()
        self.memory.apply(request.max_bytes)  # the size's limit comes with the first load: set it before any
        try:
            self.conn.send(Progress(request.id, "parse", 0.0))
            scene = load_scene(Path(request.path), max_primitives=request.max_primitives, max_bytes=request.max_bytes)
            self.conn.send(Progress(request.id, "upload", 0.7))
            self.renderer.upload(scene)
        except MemoryError:  # the hard limit during the upload (load_scene turns its own into ModelTooLarge)
            self.renderer.clear()  # a half-uploaded model is no model: free it all (the scene goes on return)
            gc.collect()
            refusal = out_of_memory()
            self.conn.send(Loaded(request.id, (refusal.code, refusal.message), None))
            return
        except ModelError as exc:
            self.conn.send(Loaded(request.id, (exc.code, exc.message), None))
            return
        except Exception as exc:  # a loader or GL failure on one model must not end the session
            log.exception("loading %s failed", request.path)
            refused = ("LoadFailed", f"the model could not be loaded ({type(exc).__name__})")
            self.conn.send(Loaded(request.id, refused, None))
            return
        bounds = (scene.bounds[0].tolist(), scene.bounds[1].tolist())
        load_ms = (time.perf_counter() - load_started) * 1000
        info = ModelInfo(
            scene.triangles, scene.draw_calls, load_ms, bounds, points=scene.points, levels=scene.level_primitives
        )
        self.conn.send(Loaded(request.id, None, info))
        self.levels.reset(scene.level_primitives)
        # The client sees the new model without having to move: at once at a level that draws fast, then in full.
        self.dirty, self.still_drawn, self.moved_at = self.latest is not None, False, time.monotonic()

    def clear(self, request: Clear) -> None:
        self.renderer.clear()
        self.levels.reset([0])
        self.dirty = self.latest is not None
        self.conn.send(Cleared(request.id))

    def resize(self, request: Resize) -> None:
        self.width, self.height, self.generation = request.width, request.height, request.generation
        self.renderer.resize(self.width, self.height)
        self.views = []
        self.shm.close()
        self.shm = SharedMemory(request.shm_name)
        self.views = slot_views(self.shm.buf, self.width, self.height, SLOTS)
        if not request.redraw:
            self.latest = None  # a new client takes over: the last pose is in the ids of the client before
        self.free, self.dirty, self.shown = list(range(SLOTS)), self.latest is not None, None
        if request.fps is not None:
            self.bucket = _Bucket(request.fps)
            self.levels.budget_ms = 1000 / request.fps * FRAME_BUDGET_SHARE
        self.levels.reset(self.levels.primitives, resized=True)  # another size renders at another speed
        self.conn.send(Resized(request.id))

    def stop(self, request: Stop) -> None:
        self.views = []
        self.shm.close()
        self.renderer.release()
        self.conn.send(Stopped(request.id))
        self.running = False
