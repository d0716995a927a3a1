"""A client's model loads, one at a time, and the render worker they run in, replaced when a load hangs it."""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from renderhub.render import protocol
from renderhub.render.camera import Pose
from renderhub.render.gltf import ModelError
from renderhub.render.model_limits import LOAD_OVERHEAD_BYTES
from renderhub.render.protocol import LoadModelMessage
from renderhub.render.stream_options import StreamOptions
from renderhub.render.track import RenderTrack
from renderhub.render.worker import RenderWorker, WorkerError

log = logging.getLogger(__name__)

ErrorSender = Callable[[str, str, "str | None"], None]  # (code, message, ref)


class ModelLoader:
    """Holds a stream's current render worker: poses and loads go to it, and a load past its time limit replaces it.

    `send` and `error` reach the client; `lost` is called when rendering cannot go on (the stream then closes).
    """

    def __init__(
        self,
        worker: RenderWorker,
        track: RenderTrack,
        options: StreamOptions,
        *,
        fps: int,
        send: Callable[[str], None],
        error: ErrorSender,
        lost: Callable[[], None],
    ) -> None:
        self.worker, self.track, self.options, self.fps = worker, track, options, fps
        self._send, self._error, self._lost = send, error, lost
        self.model: dict[str, Any] | None = None
        self.restarts = 0
        self._last_pose: tuple[int, Pose] | None = None  # sent again to a restarted worker
        self._restarting = False
        self._task: asyncio.Task[None] | None = None

    @property
    def last_pose(self) -> Pose | None:
        """The camera the client last sent."""
        return None if self._last_pose is None else self._last_pose[1]

    @property
    def loading(self) -> bool:
        return self._task is not None and not self._task.done()

    def send_pose(self, pose_id: int, pose: Pose) -> None:
        self._last_pose = (pose_id, pose)
        if not self._restarting:  # else the new worker gets the latest pose once it is up
            self.worker.send_pose(pose_id, pose)

    def request(self, message: LoadModelMessage) -> None:
        """Start loading a model, or refuse as Busy while one is loading; the client hears the outcome."""
        if self.loading:
            self._error(protocol.BUSY, "a model is loading already; wait for modelLoaded or error", message.ref)
        else:
            self._task = asyncio.create_task(self._load(message))

    async def close(self) -> None:
        """Cancel a load in progress and wait for it: one cancelled mid-restart closes the worker it was starting."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            if task is not asyncio.current_task():
                await asyncio.wait([task])

    async def _load(self, message: LoadModelMessage) -> None:
        resolver = self.options.model_resolver
        if resolver is None:
            self._error("ModelNotFound", "this server loads no models", message.ref)
            return

        def progress(stage: str, fraction: float) -> None:
            self._send(protocol.progress(stage, fraction))

        in_worker = False
        try:
            # One wall-clock limit for the whole load: a hung download or a model that never finishes parsing.
            async with asyncio.timeout(self.options.load_timeout):
                result = resolver(message, progress)
                path = await result if inspect.isawaitable(result) else result
                in_worker = True
                info = await self.worker.load_model(
                    Path(path),
                    max_primitives=self.options.max_primitives,
                    max_bytes=self.options.max_bytes,
                    on_progress=progress,
                )
        except TimeoutError:
            await self._timed_out(message, in_worker)
            return
        except ModelError as exc:
            # The worker reads a local copy: its errors say "the model", so name the user's own file or URL.
            self._error(exc.code, f"{message.label}: {exc.message}" if in_worker else exc.message, message.ref)
            return
        except WorkerError:
            if in_worker:
                await self._died_loading(message)
                return
            self._error(protocol.INTERNAL, "rendering stopped while loading; reconnect", message.ref)
            self._lost()
            return
        except Exception:
            log.exception("loading a model failed")
            self._error("LoadFailed", "the model could not be loaded", message.ref)
            return
        self.model = {
            "triangles": info.triangles,
            "points": info.points,
            "drawCalls": info.draw_calls,
            "levels": info.levels,
            "loadMs": info.load_ms,
            "bounds": {"min": list(info.bounds[0]), "max": list(info.bounds[1])} if info.bounds else None,
        }
        self._send(protocol.model_loaded(info.triangles, info.draw_calls, info.load_ms, info.bounds, info.points,
                                         info.levels))  # fmt: skip

    async def _timed_out(self, message: LoadModelMessage, in_worker: bool) -> None:
        """The error goes out once the server is ready for the next load, so that one is not refused as Busy."""
        timeout = self.options.load_timeout
        log.warning("session %s: a model load exceeded %s s", self.options.session_id, timeout)
        text = f"the model did not load within {timeout:g} s"
        if in_worker:
            # The worker may be stuck in native code (a parser, a driver) where no request reaches it: replace it.
            if not await self._replace_worker(message):
                return
            text += "; the renderer was restarted and the scene is empty"
            self.model = None
        else:
            text += " (still downloading); the scene is unchanged"
        self._error(protocol.LOAD_TIMEOUT, text, message.ref)

    async def _replace_worker(self, message: LoadModelMessage) -> bool:
        """A fresh render worker in place of one a load hung or killed; False (the client told, the stream lost)
        when none starts."""
        try:
            await self._restart_worker()
        except WorkerError:
            self._error(protocol.INTERNAL, "rendering stopped while loading; reconnect", message.ref)
            self._lost()
            return False
        return True

    async def _died_loading(self, message: LoadModelMessage) -> None:
        """The worker died in a load: past its memory limit, the kernel's OOM killer or the allocator ended it.

        The model is refused, not the session: a new worker takes over, as after a hung load.
        """
        deadline = asyncio.get_running_loop().time() + 2.0
        while (code := self.worker.exitcode) is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)  # its pipe closes a moment before it can be reaped
        log.warning("session %s: the render worker died loading a model (exit %s)", self.options.session_id, code)
        if not await self._replace_worker(message):
            return
        self.model = None
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
        # The signals a process gets for memory: SIGKILL from the OOM killer, the others from a failed allocation.
        memory = code is not None and -code in (signal.SIGKILL, signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS)
        cause = (
            f", most likely out of memory (its limit is this session's {self.options.max_bytes:,} bytes for models"
            f" plus {LOAD_OVERHEAD_BYTES:,} for loading them)"
            if memory
            else ""
        )
        text = f"the render worker {how} while loading the model{cause}; the renderer was restarted, the scene is empty"
        self._error("ModelTooLarge" if memory else "LoadFailed", text, message.ref)

    async def _restart_worker(self) -> None:
        """Kill the worker and start a new one of the same size; the video track carries on with it."""
        old, self._restarting = self.worker, True
        self.track.replacing_worker()
        try:
            await old.kill()  # first: a stuck worker may be burning the CPU the new one needs to start
            try:
                self.worker = await RenderWorker.start(
                    old.width, old.height, fps=self.fps, device_index=self.options.device_index
                )
            except BaseException:
                self.track.replaced(None)
                raise
        finally:
            self._restarting = False
        self.restarts += 1
        self.track.replaced(self.worker)
        if self._last_pose is not None:
            self.worker.send_pose(*self._last_pose)  # the client sees the (empty) scene without moving
        log.info("session %s: render worker restarted (pid %s)", self.options.session_id, self.worker.pid)
