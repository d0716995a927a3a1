"""The render loop inside the worker process: renders the latest pose into shared memory, one frame ahead at most."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any

import numpy as np

from renderhub.render import pose_tag
from renderhub.render.camera import Pose
from renderhub.render.scene import ModelError

log = logging.getLogger(__name__)

SLOTS = 2  # one ready or being copied out by the parent, one being written by the worker
# Frames rendered but not yet taken by the encoder. One: the next pose renders while the previous frame encodes,
# and never further ahead, since a frame nobody takes is CPU stolen from the encoder on a small machine.
MAX_UNCLAIMED = 1
HEADER_FIELDS = 8  # int64s per slot: pose id, frame number, render ns, width, height, ready-at ns, spare, spare
HEADER_BYTES = HEADER_FIELDS * 8
FIRST_GENERATION = 1  # bumped by each resize; frames and releases of another generation are ignored
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class FrameMeta:
    pose_id: int
    frame_number: int
    render_ms: float
    width: int
    height: int
    ready_at: float  # time.monotonic() when the frame was complete; CLOCK_MONOTONIC is shared by processes


@dataclass(frozen=True)
class ModelInfo:
    triangles: int
    draw_calls: int
    load_ms: float
    bounds: tuple[list[float], list[float]] | None


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
        self.commands: deque[tuple[Any, ...]] = deque()
        self.pose: tuple[int, Pose] | None = None
        self.pose_changed = False
        self.released: list[tuple[int, int]] = []
        self._conn = conn
        threading.Thread(target=self._run, name="renderhub-inbox", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                # The parent is gone without saying stop: leave at once, whatever the render thread is doing.
                os._exit(0)
            with self.cond:
                if message[0] == "pose":
                    self.pose = (message[1], message[2])  # only the latest pose matters: stale ones are dropped here
                    self.pose_changed = True
                elif message[0] == "release":
                    self.released.append((message[1], message[2]))
                else:
                    self.commands.append(message)
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


def _die_with_parent(parent_pid: int) -> None:
    with contextlib.suppress(Exception):  # Linux only; elsewhere the pipe's EOF alone ends us
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(0)


def worker_main(
    conn: Connection, parent_pid: int, shm_name: str, width: int, height: int, fps: float, device_index: int | None
) -> None:
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the whole group; the parent stops us itself
    from renderhub.render.renderer import Renderer
    from renderhub.render.scene import load_scene

    try:
        renderer = Renderer(width, height, device_index=device_index)
    except Exception as exc:
        conn.send(("fatal", f"the renderer could not start: {type(exc).__name__}: {exc}"))
        return
    shm = SharedMemory(shm_name)
    views = slot_views(shm.buf, width, height, SLOTS)
    generation, free = FIRST_GENERATION, list(range(SLOTS))
    conn.send(("ready", str(getattr(renderer, "gl_renderer", "unknown"))))
    inbox = _Inbox(conn)
    bucket = _Bucket(fps)
    frame_number, dirty = 0, False
    latest: tuple[int, Pose] | None = None
    shown: int | None = None  # the pose id of the frame in the framebuffer, which picks answer for
    while True:
        with inbox.cond:
            while True:
                for gen, slot in inbox.released:
                    if gen == generation and slot not in free:
                        free.append(slot)
                inbox.released.clear()
                if inbox.commands:
                    command = inbox.commands.popleft()
                    break
                if inbox.pose_changed:
                    latest, dirty, inbox.pose_changed = inbox.pose, True, False
                delay = bucket.wait_time() if dirty and latest and SLOTS - len(free) < MAX_UNCLAIMED else None
                if delay == 0.0:
                    command = ("render",)
                    break
                # Idle (no new pose, or the last frame not taken) waits without a timeout: no CPU while nothing changes.
                inbox.cond.wait(delay)
        kind = command[0]
        if kind == "render" and latest is not None:
            bucket.take()
            slot = free.pop(0)
            pose_id, pose = latest
            started = time.perf_counter_ns()
            try:
                image = renderer.render(pose)
            except Exception as exc:
                conn.send(("fatal", f"rendering failed: {type(exc).__name__}: {exc}"))
                return
            render_ns = time.perf_counter_ns() - started
            shown = pose_id
            header, target = views[slot]
            np.copyto(target, image)
            pose_tag.draw(target, pose_id)
            frame_number += 1
            header[:6] = (pose_id, frame_number, render_ns, width, height, time.monotonic_ns())
            dirty = False
            conn.send(("frame", generation, slot))
        elif kind == "pick":
            # Before any render that is waiting: a pick costs one pixel of depth, a frame tens of milliseconds.
            try:
                hit, failure = renderer.pick(command[1], command[2]), None
            except Exception as exc:  # a driver that refuses the read-back must not end the stream
                log.warning("a pick failed: %s: %s", type(exc).__name__, exc)
                hit, failure = None, type(exc).__name__
            conn.send(("picked", shown, hit, failure))
        elif kind == "load":
            _, path, max_primitives, max_bytes = command
            load_started = time.perf_counter()
            try:
                conn.send(("progress", "parse", 0.0))
                scene = load_scene(Path(path), max_primitives=max_primitives, max_bytes=max_bytes)
                conn.send(("progress", "upload", 0.7))
                renderer.upload(scene)
            except ModelError as exc:
                conn.send(("loaded", (exc.code, exc.message), None))
                continue
            except Exception as exc:  # a loader or GL failure on one model must not end the session
                log.exception("loading %s failed", path)
                conn.send(("loaded", ("LoadFailed", f"the model could not be loaded ({type(exc).__name__})"), None))
                continue
            bounds = (scene.bounds[0].tolist(), scene.bounds[1].tolist())
            load_ms = (time.perf_counter() - load_started) * 1000
            conn.send(("loaded", None, ModelInfo(scene.triangles, scene.draw_calls, load_ms, bounds)))
            dirty = latest is not None  # the client sees the new model without having to move
        elif kind == "clear":
            renderer.clear()
            dirty = latest is not None
            conn.send(("cleared",))
        elif kind == "resize":
            _, width, height, new_name, generation = command
            renderer.resize(width, height)
            del views
            shm.close()
            shm = SharedMemory(new_name)
            views = slot_views(shm.buf, width, height, SLOTS)
            free, dirty, shown = list(range(SLOTS)), latest is not None, None
            conn.send(("resized", generation))
        elif kind == "stop":
            del views
            shm.close()
            renderer.release()
            conn.send(("stopped",))
            return
