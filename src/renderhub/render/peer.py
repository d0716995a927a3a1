"""One connected client: its WebRTC peer connection, video track, data channel and render worker."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.rtcdatachannel import RTCDataChannel

from renderhub.render import protocol
from renderhub.render.bitrate import SenderFigures
from renderhub.render.camera import Pose
from renderhub.render.encoder import X264, use_h264_preset
from renderhub.render.picking import Picker
from renderhub.render.protocol import LoadModelMessage, PingMessage, PointerMessage, PoseMessage, ProtocolError
from renderhub.render.rtc import (
    IceServer,
    enable_loopback_candidates,
    ice_configuration,
    negotiated_codec,
    preferred_video_codecs,
)
from renderhub.render.scene import ModelError
from renderhub.render.stream_stats import StreamStats
from renderhub.render.track import RenderTrack
from renderhub.render.worker import FrameMeta, RenderWorker, WorkerError

__all__ = ["IceServer", "OfferError", "RenderSession", "enable_loopback_candidates", "ice_configuration",
           "negotiated_codec"]  # fmt: skip
log = logging.getLogger(__name__)

MAX_BUFFERED_BYTES = 1 << 20  # a client that stops reading its data channel stops getting frame messages
DEFAULT_MAX_BYTES = 2 << 30
CONNECT_TIMEOUT = 30.0
DEFAULT_LOAD_TIMEOUT = 60.0  # seconds; the server passes its config's model_load_timeout_seconds

Progress = Callable[[str, float], None]
# (request, progress) -> a local model file, or ModelError; progress(stage, fraction) reaches the client.
ModelResolver = Callable[[LoadModelMessage, Progress], "Awaitable[Path] | Path"]
InputHandler = Callable[[protocol.ClientMessage], None]
ClosedHandler = Callable[[], "Awaitable[None] | None"]


class OfferError(ValueError):
    """The client's offer cannot be answered (not an offer, no video, no codec in common)."""


class RenderSession:
    """One client's stream; `accept` answers its offer, `close` frees everything (the worker included)."""

    def __init__(
        self,
        worker: RenderWorker,
        pc: RTCPeerConnection,
        *,
        session_id: str,
        fps: int,
        model_resolver: ModelResolver | None,
        max_primitives: int | None,
        max_bytes: int,
        on_closed: ClosedHandler | None,
        on_input: InputHandler | None,
        load_timeout: float | None = DEFAULT_LOAD_TIMEOUT,
        device_index: int | None = None,
    ) -> None:
        self.worker, self.pc = worker, pc
        self.session_id, self.fps = session_id, fps
        self._resolver, self._on_closed, self._on_input = model_resolver, on_closed, on_input
        self._max_primitives, self._max_bytes = max_primitives, max_bytes
        self.load_timeout, self._device_index = load_timeout, device_index
        self.track = RenderTrack(worker, on_frame=self._frame_sent)
        self.figures = StreamStats()
        self.sent: SenderFigures | None = None
        self.channel: RTCDataChannel | None = None
        self.codec = ""
        self.answer_sdp = self.answer_type = ""
        self.last_pose_id = -1
        self._last_pose: tuple[int, Pose] | None = None  # sent again to a restarted worker
        self._restarting = False
        self.worker_restarts = 0
        self.model: dict[str, Any] | None = None
        self.errors_sent = 0
        # Through self.worker at each pick, so picks reach the new worker after a restart.
        self.picker = Picker(lambda x, y: self.worker.pick(x, y), self.send, self._error)
        self._loading: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._teardown: asyncio.Future[None] | None = None
        self.closed = asyncio.Event()
        self.started = time.monotonic()

    @classmethod
    async def accept(
        cls,
        offer_sdp: str,
        offer_type: str,
        *,
        width: int,
        height: int,
        fps: int,
        ice_servers: Sequence[IceServer] = (),
        model_resolver: ModelResolver | None = None,
        session_id: str = "",
        max_primitives: int | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        on_closed: ClosedHandler | None = None,
        on_input: InputHandler | None = None,
        device_index: int | None = None,
        loopback: bool = True,
        connect_timeout: float = CONNECT_TIMEOUT,
        load_timeout: float | None = DEFAULT_LOAD_TIMEOUT,
        h264_encoder: str = X264,
    ) -> RenderSession:
        """Start a worker, answer the offer; the answer is in `.answer_sdp` / `.answer_type`.

        Raises OfferError for an offer we cannot answer, WorkerError when rendering cannot start.
        """
        if offer_type != "offer":
            raise OfferError(f"expected an SDP offer, got {offer_type!r}")
        try:
            offer = aiortc_sdp.SessionDescription.parse(offer_sdp)
        except Exception:
            raise OfferError("the offer is not a valid SDP description") from None
        if not any(m.kind == "video" for m in offer.media):
            raise OfferError("the offer has no video section: add a recvonly video transceiver")
        if not any(m.kind == "application" for m in offer.media):
            raise OfferError(f"the offer has no data channel: create one labelled {protocol.CHANNEL_LABEL!r} first")
        if loopback:
            enable_loopback_candidates()
        use_h264_preset(encoder=h264_encoder)
        worker = await RenderWorker.start(width, height, fps=fps, device_index=device_index)
        pc = RTCPeerConnection(ice_configuration(ice_servers))
        session = cls(
            worker,
            pc,
            session_id=session_id,
            fps=fps,
            model_resolver=model_resolver,
            max_primitives=max_primitives,
            max_bytes=max_bytes,
            on_closed=on_closed,
            on_input=on_input,
            load_timeout=load_timeout,
            device_index=device_index,
        )
        try:
            await session._answer(offer_sdp)
        except BaseException:
            await session.close()
            raise
        session._watchdog = asyncio.create_task(session._connect_watchdog(connect_timeout))
        if session.sent is not None:
            session.sent.start()
        return session

    async def _answer(self, offer_sdp: str) -> None:
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        # Track and codec preferences before the remote description, or aiortc answers VP8 while sending H.264.
        sender = pc.addTrack(self.track)
        self.sent = SenderFigures(sender)
        transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        transceiver.setCodecPreferences(preferred_video_codecs())
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
        except (ValueError, InternalError, InvalidAccessError, InvalidStateError, OperationError) as exc:
            raise OfferError(f"the offer cannot be answered: {exc}") from None
        self.answer_sdp, self.answer_type = pc.localDescription.sdp, pc.localDescription.type
        self.codec = negotiated_codec(self.answer_sdp)

    # --------------------------------------------------------------------------------------- the data channel

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if channel.label != protocol.CHANNEL_LABEL or self.channel is not None:
            channel.close()
            return
        self.channel = channel
        channel.on("message", self._on_message)
        channel.on("close", self._client_left)
        self.send(
            protocol.hello(
                self.session_id, self.worker.width, self.worker.height, self.fps, self.codec, self.worker.renderer_name
            )
        )

    def send(self, text: str) -> None:
        """Send a server message if the channel is open; never raises (a closing channel just loses it)."""
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        with contextlib.suppress(Exception):
            channel.send(text)

    def _error(self, code: str, message: str, ref: str | None = None) -> None:
        self.errors_sent += 1
        self.send(protocol.error(code, message, ref))

    def _on_message(self, data: str | bytes) -> None:
        try:
            message = protocol.parse_client_message(data)
        except ProtocolError as exc:
            self._error(exc.code, exc.message, exc.ref)
            return
        try:
            self._dispatch(message)
        except WorkerError:
            self._error(protocol.INTERNAL, "rendering stopped; reconnect to start a new stream")
            self._client_left()
        except Exception:
            log.exception("handling a %s message failed", type(message).__name__)
            self._error(protocol.INTERNAL, "the server could not handle this message", message.ref)

    def _dispatch(self, message: protocol.ClientMessage) -> None:
        if isinstance(message, PoseMessage):
            # Out-of-order poses (an unordered channel) are older than what we render already: drop them quietly.
            if message.id > self.last_pose_id:
                self.last_pose_id = message.id
                self._last_pose = (message.id, message.pose)
                self.figures.pose_received(message.id)
                if not self._restarting:  # else the new worker gets the latest pose once it is up
                    self.worker.send_pose(message.id, message.pose)
        elif isinstance(message, LoadModelMessage):
            if self._loading is not None and not self._loading.done():
                self._error(protocol.BUSY, "a model is loading already; wait for modelLoaded or error", message.ref)
            else:
                self._loading = asyncio.create_task(self._load(message))
        elif isinstance(message, PingMessage):
            self.send(protocol.pong(message.t))
        else:
            if isinstance(message, PointerMessage) and message.kind == "down":
                self.picker.request(message)  # answered by a "pick" message
            if self._on_input is not None:
                self._on_input(message)

    async def _load(self, message: LoadModelMessage) -> None:
        if self._resolver is None:
            self._error("ModelNotFound", "this server loads no models", message.ref)
            return

        def progress(stage: str, fraction: float) -> None:
            self.send(protocol.progress(stage, fraction))

        in_worker = False
        try:
            # One wall-clock limit for the whole load: a hung download or a model that never finishes parsing.
            async with asyncio.timeout(self.load_timeout):
                result = self._resolver(message, progress)
                path = await result if inspect.isawaitable(result) else result
                in_worker = True
                info = await self.worker.load_model(
                    Path(path), max_primitives=self._max_primitives, max_bytes=self._max_bytes, on_progress=progress
                )
        except TimeoutError:
            await self._load_timed_out(message, in_worker)
            return
        except ModelError as exc:
            self._error(exc.code, exc.message, message.ref)
            return
        except WorkerError:
            self._error(protocol.INTERNAL, "rendering stopped while loading; reconnect", message.ref)
            self._client_left()
            return
        except Exception:
            log.exception("loading a model failed")
            self._error("LoadFailed", "the model could not be loaded", message.ref)
            return
        self.model = {"triangles": info.triangles, "drawCalls": info.draw_calls, "loadMs": info.load_ms}
        self.send(protocol.model_loaded(info.triangles, info.draw_calls, info.load_ms, info.bounds))

    async def _load_timed_out(self, message: LoadModelMessage, in_worker: bool) -> None:
        """The error goes out once the server is ready for the next load, so that one is not refused as Busy."""
        log.warning("session %s: a model load exceeded %s s", self.session_id, self.load_timeout)
        text = f"the model did not load within {self.load_timeout:g} s"
        if in_worker:
            # The worker may be stuck in native code (a parser, a driver) where no request reaches it: replace it.
            try:
                await self._restart_worker()
            except WorkerError:
                self._error(protocol.INTERNAL, "rendering stopped while loading; reconnect", message.ref)
                self._client_left()
                return
            text += "; the renderer was restarted and the scene is empty"
            self.model = None
        else:
            text += " (still downloading); the scene is unchanged"
        self._error(protocol.LOAD_TIMEOUT, text, message.ref)

    async def _restart_worker(self) -> None:
        """Kill the worker and start a new one of the same size; the video track carries on with it."""
        old, self._restarting = self.worker, True
        self.track.replacing_worker()
        try:
            await old.kill()  # first: a stuck worker may be burning the CPU the new one needs to start
            try:
                self.worker = await RenderWorker.start(
                    old.width, old.height, fps=self.fps, device_index=self._device_index
                )
            except BaseException:
                self.track.replaced(None)
                raise
        finally:
            self._restarting = False
        self.worker_restarts += 1
        self.track.replaced(self.worker)
        if self._last_pose is not None:
            self.worker.send_pose(*self._last_pose)  # the client sees the (empty) scene without moving
        log.info("session %s: render worker restarted (pid %s)", self.session_id, self.worker.pid)

    def _frame_sent(self, meta: FrameMeta, send_ms: float) -> None:
        self.figures.frame_sent(meta.pose_id, meta.render_ms, send_ms)
        channel = self.channel
        if channel is not None and channel.bufferedAmount < MAX_BUFFERED_BYTES:
            self.send(protocol.frame(meta.pose_id, meta.frame_number, meta.render_ms, send_ms))

    # ------------------------------------------------------------------------------------------- lifecycle

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._client_left()

    async def _connect_watchdog(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        if self.pc.connectionState != "connected":
            log.info("session %s: the client did not connect within %s s", self.session_id, timeout)
            self._client_left()

    def _client_left(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close_and_report())

    async def _close_and_report(self) -> None:
        await self.close()
        if self._on_closed is not None:
            try:
                result = self._on_closed()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("the on_closed callback failed")

    async def close(self) -> None:
        """Tear down the connection and the worker; idempotent, and every caller returns once it is done."""
        if self._teardown is None:
            self.closed.set()
            self._teardown = asyncio.ensure_future(self._teardown_all())
        # Shielded: a caller cancelled mid-way must not leave sockets or the worker half closed.
        await asyncio.shield(self._teardown)

    async def _teardown_all(self) -> None:
        for task in (self._loading, self._watchdog):
            if task is not None and not task.done():
                task.cancel()
                if task is not asyncio.current_task():
                    # A load cancelled mid-restart closes the worker it was starting; wait for that.
                    await asyncio.wait([task])
        await self.picker.close()
        self.track.replaced(None)
        if self.sent is not None:
            self.sent.stop()
        self.track.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        await self.worker.close()

    def stats(self) -> dict[str, Any]:
        """What the inspector shows about this stream."""
        sent = self.sent.figures() if self.sent is not None else {}
        return {
            "connectionState": self.pc.connectionState,
            "codec": self.codec,
            "encoder": sent.pop("encoder", None),
            "width": self.worker.width,
            "height": self.worker.height,
            "fps": self.fps,
            "framesSent": self.track.frames_sent,
            "framesDropped": self.worker.dropped_frames,
            "lastPoseId": self.last_pose_id,
            "model": self.model,
            "renderer": self.worker.renderer_name,
            "workerPid": self.worker.pid,
            "workerRestarts": self.worker_restarts,
            "errorsSent": self.errors_sent,
            "picks": self.picker.answered,
            "seconds": round(time.monotonic() - self.started, 1),
            "recent": {**self.figures.figures(), **sent},  # bitrateKbps, targetBitrateKbps
        }
