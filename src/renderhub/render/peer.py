"""One connected client: its WebRTC peer connection, video track, data channel and render worker."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.rtcdatachannel import RTCDataChannel

from renderhub.render import protocol
from renderhub.render.bitrate import SenderFigures
from renderhub.render.candidates import MAX_REMOTE_CANDIDATES, filter_candidates
from renderhub.render.compat import enable_loopback_candidates, last_sent_rtp_timestamp
from renderhub.render.encoder import use_h264_preset
from renderhub.render.errors import RenderError
from renderhub.render.kept_scene import LAPSE_SECONDS, KeptScene
from renderhub.render.model_loader import ModelLoader
from renderhub.render.picking import Picker
from renderhub.render.protocol import LoadModelMessage, PingMessage, PointerMessage, PoseMessage, ProtocolError
from renderhub.render.rtc import host_addresses, ice_configuration, negotiated_codec, preferred_video_codecs
from renderhub.render.stream_options import StreamOptions
from renderhub.render.stream_stats import StreamStats
from renderhub.render.track import RenderTrack
from renderhub.render.worker import FrameMeta, RenderWorker, WorkerError

log = logging.getLogger(__name__)

MAX_BUFFERED_BYTES = 1 << 20  # a client that stops reading its data channel stops getting frame messages


class OfferError(RenderError, ValueError):
    """The client's offer cannot be answered (not an offer, no video, no codec in common)."""

    code = "BadRequest"


class ClientStream:
    """One client's stream; `accept` answers its offer, `close` frees everything (the worker included)."""

    def __init__(
        self,
        worker: RenderWorker,
        pc: RTCPeerConnection,
        options: StreamOptions,
        *,
        fps: int,
        kept: KeptScene | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.pc, self.options, self.fps = pc, options, fps
        self.kept = kept  # the scene a client before left, which this one takes over
        self.instance_id = instance_id  # the client's own id for itself (a browser tab's), if it gave one
        self.track = RenderTrack(worker, on_frame=self._frame_sent)
        self.loader = ModelLoader(
            worker, self.track, options, fps=fps, send=self.send, error=self._error, lost=self._client_left
        )
        self.figures = StreamStats()
        self.sent: SenderFigures | None = None
        self.channel: RTCDataChannel | None = None
        self.codec = ""
        self.answer_sdp = self.answer_type = ""
        self.last_pose_id = -1
        self.last_level: int | None = None
        self.errors_sent = 0
        # Through the loader at each pick, so picks reach the new worker after a restart.
        self.picker = Picker(lambda x, y: self.loader.worker.pick(x, y), self.send, self._error)
        self._closing: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._teardown: asyncio.Future[None] | None = None
        self.closed = asyncio.Event()
        self.started = time.monotonic()
        self.last_heard = self.started  # the last data-channel message from the client (or the offer)
        if kept is not None:
            self.loader.model = kept.model

    @classmethod
    async def accept(
        cls,
        offer_sdp: str,
        offer_type: str,
        options: StreamOptions,
        *,
        width: int,
        height: int,
        fps: int,
        kept: KeptScene | None = None,
        instance_id: str | None = None,
    ) -> ClientStream:
        """Start a worker (or take over `kept`'s), answer the offer; the answer is in `.answer_sdp` / `.answer_type`.

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
        if options.loopback:
            enable_loopback_candidates()
        use_h264_preset(encoder=options.h264_encoder)
        worker = await _kept_worker(kept, width, height, fps)
        if worker is None:
            kept = None
            worker = await RenderWorker.start(width, height, fps=fps, device_index=options.device_index)
        pc = RTCPeerConnection(ice_configuration(options.ice_servers))
        stream = cls(worker, pc, options, fps=fps, kept=kept, instance_id=instance_id)
        try:
            await stream._answer(offer_sdp)
        except BaseException:
            await stream.close()
            raise
        stream._watchdog = asyncio.create_task(stream._connect_watchdog(options.connect_timeout))
        if stream.sent is not None:
            stream.sent.start()
        return stream

    async def _answer(self, offer_sdp: str) -> None:
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("connectionstatechange", self._on_connection_state)
        # Track and codec preferences before the remote description, or aiortc answers VP8 while sending H.264.
        sender = pc.addTrack(self.track)
        self.sent = SenderFigures(sender)
        transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        transceiver.setCodecPreferences(preferred_video_codecs())
        # Candidates arrive in the offer only (no trickle ICE): filtering its lines is the one place to keep the
        # server from sending STUN wherever a client names.
        offer = filter_candidates(offer_sdp, host_addresses())
        if offer.dropped:
            log.info(
                "dropped %d of the offer's %d ICE candidates (not UDP, in a private, loopback or link-local range "
                "this server has no address in, or past the first %d addresses)",
                offer.dropped, offer.offered, MAX_REMOTE_CANDIDATES,
            )  # fmt: skip
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
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
        worker, kept = self.worker, self.kept
        model, pose = (kept.model, kept.pose) if kept else (None, None)
        name, fps, codec = self.options.session_id, self.fps, self.codec
        self.send(protocol.hello(name, worker.width, worker.height, fps, codec, worker.renderer_name, model, pose))

    @property
    def worker(self) -> RenderWorker:
        """The render worker now: a load that hangs one has it replaced."""
        return self.loader.worker

    def send(self, text: str) -> None:
        """Send a server message if the channel is open; never raises (a closing channel just loses it)."""
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        with contextlib.suppress(Exception):
            channel.send(text)

    async def end(self, code: str, message: str) -> None:
        """Close the stream, telling the client why first (an `error` message it can show)."""
        self._error(code, message)
        await self.close()

    def _error(self, code: str, message: str, ref: str | None = None) -> None:
        self.errors_sent += 1
        self.send(protocol.error(code, message, ref))

    def replaceable(self, instance_id: str | None) -> str | None:
        """Why a new client's offer may take this one's place, or None: it is the same client instance (a
        reloaded tab), or this one's connection lapsed (nothing heard for LAPSE_SECONDS)."""
        if instance_id is not None and instance_id == self.instance_id:
            return "the same client instance connected again"
        quiet = time.monotonic() - self.last_heard
        return f"nothing heard from it for {quiet:.1f} s" if quiet >= LAPSE_SECONDS else None

    def _on_message(self, data: str | bytes) -> None:
        self.last_heard = time.monotonic()
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
                self.figures.pose_received(message.id)
                self.loader.send_pose(message.id, message.pose)
        elif isinstance(message, LoadModelMessage):
            self.loader.request(message)
        elif isinstance(message, PingMessage):
            self.send(protocol.pong(message.t))
        else:
            if isinstance(message, PointerMessage) and message.kind == "down":
                self.picker.request(message)  # answered by a "pick" message
            if self.options.on_input is not None:
                self.options.on_input(message)

    def _frame_sent(self, meta: FrameMeta, send_ms: float) -> None:
        self.figures.frame_sent(meta.pose_id, meta.render_ms, send_ms)
        self.last_level = meta.level
        channel = self.channel
        if channel is not None and channel.bufferedAmount < MAX_BUFFERED_BYTES:
            # Called as aiortc asks for the next frame: every packet of this one is out, the last with its timestamp.
            rtp = last_sent_rtp_timestamp(self.sent.sender) if self.sent is not None else None
            self.send(
                protocol.frame(meta.pose_id, meta.frame_number, meta.render_ms, send_ms, meta.level, meta.still, rtp)
            )

    # ------------------------------------------------------------------------------------------- lifecycle

    def _on_connection_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._client_left()

    async def _connect_watchdog(self, timeout: float) -> None:
        await asyncio.sleep(timeout)
        if self.pc.connectionState != "connected":
            log.info("session %s: the client did not connect within %s s", self.options.session_id, timeout)
            self._client_left()

    def _client_left(self) -> None:
        if self._closing is None:
            self._closing = asyncio.create_task(self._close_and_report())

    async def _close_and_report(self) -> None:
        await self.close()
        on_closed = self.options.on_closed
        if on_closed is not None:
            try:
                result = on_closed()
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
        loading = self.loader.loading
        await self.loader.close()
        watchdog = self._watchdog
        if watchdog is not None and not watchdog.done():
            watchdog.cancel()
            if watchdog is not asyncio.current_task():
                await asyncio.wait([watchdog])
        await self.picker.close()
        self.track.replaced(None)
        if self.sent is not None:
            self.sent.stop()
        self.track.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        worker, keep = self.worker, self.options.keep_scene
        if keep is not None and worker.alive and not loading:  # a load cut short leaves the scene in doubt
            keep(KeptScene(worker, self.loader.model, self.loader.last_pose))
        else:
            await worker.close()

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
            "lastLevel": self.last_level,  # the level of detail of the last frame sent (0: full detail)
            "model": self.loader.model,
            "renderer": self.worker.renderer_name,
            "workerPid": self.worker.pid,
            "workerRestarts": self.loader.restarts,
            "errorsSent": self.errors_sent,
            "picks": self.picker.answered,
            "seconds": round(time.monotonic() - self.started, 1),
            "recent": {**self.figures.figures(), **sent},  # bitrateKbps, targetBitrateKbps
        }


async def _kept_worker(kept: KeptScene | None, width: int, height: int, fps: int) -> RenderWorker | None:
    """The kept scene's worker at this client's size and frame rate, no frame of the client before queued; None
    without one or when it died meanwhile (it is closed then)."""
    if kept is None:
        return None
    try:
        await kept.worker.resize(width, height, fps=fps, redraw=False)
    except WorkerError as exc:
        log.warning("the kept scene's render worker is gone (%s): starting a new one", exc)
        await kept.worker.close()
        return None
    return kept.worker
