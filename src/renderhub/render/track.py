"""The video track: each new frame of the render worker, once, as an av.VideoFrame for aiortc to encode."""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import OrderedDict
from collections.abc import Callable

import av
import numpy as np
from aiortc import VideoStreamTrack
from aiortc.mediastreams import MediaStreamError

from renderhub.render.encoder import STILL
from renderhub.render.worker import FrameMeta, RenderWorker, WorkerError

REFERENCES_KEPT = 16  # the latest frames kept for /reference, one per pose: a second at 16 fps, 44 MB at 720p
VIDEO_CLOCK = 90_000  # RTP's video clock rate: pts in these units need no rescaling in aiortc
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)

FrameCallback = Callable[[FrameMeta, float], None]


def _to_video_frame(image: np.ndarray) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(image, format="rgb24")  # copies out of shared memory


class RenderTrack(VideoStreamTrack):
    """Waits for the worker's next new frame (never repeats one, costs nothing while idle); pts follow wall time.

    `on_frame(meta, send_ms)` is called for each frame once aiortc has encoded and sent it (on the next
    recv), `send_ms` being the time from handing the frame over until aiortc asked for the next one.
    """

    def __init__(self, worker: RenderWorker, *, on_frame: FrameCallback | None = None) -> None:
        super().__init__()
        self._worker = worker
        self._on_frame = on_frame
        self._started: float | None = None
        self._last_pts = -1
        self._pending: tuple[FrameMeta, float] | None = None
        self._replacing: asyncio.Future[RenderWorker | None] | None = None
        self.frames_sent = 0
        # The frames as they went to the encoder, by pose (a still camera's full-detail frame replaces the moving
        # one of its pose): the lossless reference a client measures picture quality against.
        self._references: OrderedDict[int, av.VideoFrame] = OrderedDict()

    def reference(self, pose_id: int) -> av.VideoFrame | None:
        """The latest frame sent of `pose_id`, as the encoder was given it; None once it is no longer kept."""
        return self._references.get(pose_id)

    def replacing_worker(self) -> None:
        """The worker is about to be killed and replaced: wait for `replaced` instead of ending the stream."""
        self._replacing = asyncio.get_running_loop().create_future()

    def replaced(self, worker: RenderWorker | None) -> None:
        """Go on with `worker`'s frames, or end the stream (None: no new worker could start)."""
        if worker is not None:
            self._worker = worker
        if self._replacing is not None and not self._replacing.done():
            self._replacing.set_result(worker)
        self._replacing = None

    async def _next_frame(self) -> tuple[av.VideoFrame, FrameMeta]:
        while True:
            worker = self._worker
            try:
                return await worker.next_frame_with(_to_video_frame)
            except WorkerError:
                if self._worker is not worker:
                    continue
                if self._replacing is None or await self._replacing is None:
                    raise

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pending is not None:
            meta, handed_at = self._pending
            self._pending = None
            self.frames_sent += 1
            if self._on_frame is not None:
                self._on_frame(meta, (time.monotonic() - handed_at) * 1000)
        try:
            frame, meta = await self._next_frame()
        except WorkerError:
            self.stop()
            raise MediaStreamError from None
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._started is None:
            self._started = now
        # Timestamps from the wall clock: frames come when poses do, so a fixed-rate counter would lie to the jitter
        # buffer; strictly increasing, as RTP receivers expect.
        pts = max(int((now - self._started) * VIDEO_CLOCK), self._last_pts + 1)
        self._last_pts = pts
        frame.pts = pts
        frame.time_base = TIME_BASE
        frame.opaque = STILL if meta.still else None  # the encoder gives the still camera's frame full quality
        self._pending = (meta, now)
        self._references[meta.pose_id] = frame  # the encoder reads it, never writes it: no copy needed
        self._references.move_to_end(meta.pose_id)
        while len(self._references) > REFERENCES_KEPT:
            self._references.popitem(last=False)
        return frame
