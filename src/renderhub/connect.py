"""The headless streaming client behind `renderhub connect`: offer, data channel, orbiting poses, latency figures."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
import time
import urllib.error
import urllib.request
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from renderhub.picture_quality import fetch_reference, luma_psnr
from renderhub.render import protocol
from renderhub.render.camera import orbit_pose
from renderhub.render.compat import (
    enable_loopback_candidates,
    received_rtp_timestamp,
    received_video_bytes,
    use_marker_jitter_buffer,
)
from renderhub.render.rtc import IceServer, ice_configuration, negotiated_codec

DEGREES_PER_SECOND = 40.0  # orbit speed: every frame differs, slowly enough to look at
FULL_DETAIL_TIMEOUT = 20.0  # seconds to wait, once the camera stops, for the full-detail frame
PSNR_SAMPLES = 10  # frames measured against the server's reference while orbiting
STILL_VIEW_SECONDS = 0.5  # the frame on screen this long after the camera stopped is the still picture measured
T = TypeVar("T")
KEEPALIVE_SECONDS = 1.0  # a ping this often: the server replaces a client it heard nothing from for 3 s
AFTER_STILL_SECONDS = 2.0  # frames the server sends this long after its still frame are counted: there are none
HTTP_TIMEOUT = 60.0


class ConnectError(Exception):
    """The stream could not be set up or broke; the message is for people."""


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 1)


def _bound(entries: OrderedDict[int, Any], keep: int = 512) -> None:
    """Forget the oldest entries beyond `keep` (frames whose message or picture never came)."""
    while len(entries) > keep:
        entries.popitem(last=False)


class LatencyMeter:
    """Pose-to-frame latency: from sending a pose to the first decoded frame carrying its id or a later one."""

    def __init__(self) -> None:
        self._waiting: deque[tuple[int, float]] = deque()
        self.latencies_ms: list[float] = []
        self.new_frames: list[float] = []  # decode times of frames that each show a pose newer than any before
        self.newest = -1
        self.measuring = False

    def pose_sent(self, pose_id: int, at: float) -> None:
        self._waiting.append((pose_id, at))

    def frame_decoded(self, pose_id: int | None, at: float) -> bool:
        """Account for a decoded frame; True when it shows a new pose."""
        if pose_id is None or pose_id <= self.newest:
            return False
        self.newest = pose_id
        while self._waiting and self._waiting[0][0] <= pose_id:
            _, sent = self._waiting.popleft()
            if self.measuring:
                self.latencies_ms.append((at - sent) * 1000)
        if self.measuring:
            self.new_frames.append(at)
        return True

    def figures(self) -> dict[str, Any]:
        span = self.new_frames[-1] - self.new_frames[0] if len(self.new_frames) > 1 else 0.0
        return {
            "fps": round((len(self.new_frames) - 1) / span, 1) if span > 0 else 0.0,
            "pose_to_frame_ms_p50": _percentile(self.latencies_ms, 0.5),
            "pose_to_frame_ms_p95": _percentile(self.latencies_ms, 0.95),
            "frames": len(self.new_frames),
        }


def _post_json(url: str, token: str, body: dict[str, Any], ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT, context=ssl_context) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            error = json.loads(exc.read())["error"]
            detail = f"{error['code']}: {error['message']}"
        except Exception:
            detail = exc.reason
        raise ConnectError(f"the render server refused the offer ({exc.code} {detail})") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConnectError(f"could not reach the render server at {url}: {exc}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("sdp"), str) or answer.get("type") != "answer":
        raise ConnectError("the render server's answer is not an SDP answer")
    return answer


class RenderClient:
    """One stream from a render server: frames with their pose ids, and the server's data-channel messages."""

    def __init__(
        self,
        *,
        ice_servers: Sequence[IceServer] = (),
        loopback: bool = True,
        marker_frames: bool = True,
        video_codecs: Sequence[str] = (),
    ) -> None:
        if loopback:
            enable_loopback_candidates()
        self.pc = RTCPeerConnection(ice_configuration(ice_servers))
        self.channel = self.pc.createDataChannel(protocol.CHANNEL_LABEL)
        transceiver = self.pc.addTransceiver("video", direction="recvonly")
        self.receiver = transceiver.receiver
        self._reference: tuple[str, str, ssl.SSLContext | None] | None = None
        if video_codecs:
            # Offer only these (e.g. ["video/VP8"]), in this order; retransmission (RTX) stays available.
            available = RTCRtpSender.getCapabilities("video").codecs
            wanted = [c for mime in video_codecs for c in available if c.mimeType.lower() == mime.lower()]
            transceiver.setCodecPreferences(wanted + [c for c in available if c.mimeType == "video/rtx"])
        if marker_frames:
            # Decode at each frame's marker bit, as browsers do: else the figures are one frame interval worse.
            use_marker_jitter_buffer(transceiver.receiver)
        self.messages: list[dict[str, Any]] = []
        self.frame_reports: list[dict[str, Any]] = []  # each with "receivedAt" (time.monotonic()) added
        self.arrived_at: dict[str, float] = {}  # when the last message of each type arrived
        self.codec = ""
        # Latency by the RTP timestamp each frame message names.
        self.meter = LatencyMeter()
        self._rtp_poses: OrderedDict[int, int] = OrderedDict()  # RTP timestamp -> pose id, from frame messages
        self._unmatched: OrderedDict[int, float] = OrderedDict()  # RTP timestamp -> decoded at, awaiting its message
        self._cursor = 0
        self._arrived = asyncio.Event()
        self._track: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        self._next_pose_id = 0
        self._keepalive: asyncio.Task[None] | None = None
        self.channel.on("message", self._on_message)
        self.pc.on("track", self._on_track)

    def _on_track(self, track: MediaStreamTrack) -> None:
        if not self._track.done():
            self._track.set_result(track)

    def _on_message(self, data: str | bytes) -> None:
        try:
            message = protocol.parse_server_message(data)
        except ValueError:
            return
        self.arrived_at[message["type"]] = time.monotonic()
        if message["type"] == "frame":
            message["receivedAt"] = self.arrived_at["frame"]
            self.frame_reports.append(message)
            if isinstance(rtp := message.get("rtpTimestamp"), int):
                self._rtp_poses[rtp] = message["poseId"]
                _bound(self._rtp_poses)
                if (decoded_at := self._unmatched.pop(rtp, None)) is not None:
                    self.meter.frame_decoded(message["poseId"], decoded_at)  # the frame came before its message
            self._arrived.set()
            return
        self.messages.append(message)
        self._arrived.set()

    async def connect(
        self,
        offer_url: str,
        token: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        width: int = 1280,
        height: int = 720,
        fps: int = 30,
        timeout: float = 30.0,
        instance_id: str | None = None,
        keepalive: bool = True,
    ) -> dict[str, Any]:
        """Offer, answer, and wait for the server's hello (which it returns); then ping every second, so the
        server knows this connection lives (one silent for 3 s may be replaced by a new client).

        `instance_id`: this client's id across its own reconnects; an offer with it replaces this connection.
        `keepalive` False sends no pings (tests play a client whose connection died without closing).
        """
        # The server's lossless frames, beside its offer endpoint (on the render server, or relayed by the hub).
        self._reference = (offer_url.rsplit("/offer", 1)[0] + "/reference", token, ssl_context)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        body: dict[str, Any] = {"sdp": self.pc.localDescription.sdp, "type": "offer", "width": width,
                                "height": height, "fps": fps}  # fmt: skip
        if instance_id is not None:
            body["clientInstanceId"] = instance_id
        answer = await asyncio.to_thread(_post_json, offer_url, token, body, ssl_context)
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        self.codec = negotiated_codec(answer["sdp"])
        hello = await self.expect("hello", timeout=timeout)
        if keepalive:
            self._keepalive = asyncio.create_task(self._ping_every(KEEPALIVE_SECONDS))
        return hello

    async def _ping_every(self, seconds: float) -> None:
        while self.channel.readyState == "open":
            self.send(protocol.ping(time.time()))
            await asyncio.sleep(seconds)

    def send(self, text: str) -> None:
        self.channel.send(text)

    async def expect(self, *types: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next server message of one of `types` (skipping others); raises ConnectError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            while self._cursor < len(self.messages):
                message = self.messages[self._cursor]
                self._cursor += 1
                if message["type"] in types:
                    return message
            self._arrived.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.pc.connectionState in ("failed", "closed"):
                raise ConnectError(f"no {' or '.join(types)} message from the render server")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def load_model(self, model: str, *, timeout: float = 300.0) -> dict[str, Any]:
        """Load a model by URL (anything with "://") or by name; returns modelLoaded, raises ConnectError."""
        self.send(protocol.load_model(url=model) if "://" in model else protocol.load_model(name=model))
        reply = await self.expect("modelLoaded", "error", timeout=timeout)
        if reply["type"] == "error":
            raise ConnectError(f"the model was refused ({reply['code']}: {reply['message']})")
        return reply

    async def psnr(self, frame: av.VideoFrame, pose_id: int) -> float | None:
        """The decoded frame's luma PSNR against the server's reference of its pose; None without a reference."""
        if self._reference is None:
            return None
        url, token, context = self._reference
        reference = await asyncio.to_thread(fetch_reference, url, token, pose_id, context)
        return None if reference is None else await asyncio.to_thread(luma_psnr, frame, reference)

    def received_bytes(self) -> int:
        """Encoded video bytes decoded so far (0 where this aiortc cannot count them)."""
        return received_video_bytes(self.receiver) or 0

    async def shown_at(self, moment: float) -> tuple[av.VideoFrame, int | None] | None:
        """The frame on screen at `moment` (time.monotonic()): the last decoded by then; None if none came."""
        shown = None
        async for frame in self._frames_until(moment):
            shown = frame
        return None if shown is None else (shown, self.pose_shown(shown))

    def pose_shown(self, frame: av.VideoFrame) -> int | None:
        """The pose a decoded frame shows, by its RTP timestamp; None before its frame message came."""
        rtp = received_rtp_timestamp(self.receiver, frame)
        return None if rtp is None else self._rtp_poses.get(rtp)

    async def frames_until(self, moment: float) -> int:
        """How many frames were decoded from now until `moment` (time.monotonic())."""
        return len([frame async for frame in self._frames_until(moment)])

    async def _frames_until(self, moment: float) -> AsyncIterator[av.VideoFrame]:
        track = await asyncio.wait_for(asyncio.shield(self._track), 5)
        while (remaining := moment - time.monotonic()) > 0:
            try:
                frame = await asyncio.wait_for(track.recv(), remaining)
            except (MediaStreamError, TimeoutError):
                return
            assert isinstance(frame, av.VideoFrame)
            yield frame

    async def full_detail(self, pose_id: int, timeout: float) -> float | None:
        """When (time.monotonic()) the server reported the full-detail frame of `pose_id` sent; None if it did not
        within `timeout` seconds."""
        report = await self._report(lambda r: r["poseId"] == pose_id and r.get("level", 0) == 0, timeout)
        return None if report is None else float(report["receivedAt"])

    async def frames_after_still(self, pose_id: int, seconds: float, timeout: float) -> int | None:
        """How many frames the server sent in the `seconds` after the still frame of `pose_id` (a still camera
        costs that one frame: 0); None when no still frame came within `timeout` seconds."""
        still = await self._report(lambda r: r["poseId"] == pose_id and bool(r.get("still")), timeout)
        if still is None:
            return None
        since = float(still["receivedAt"])
        await asyncio.sleep(max(0.0, since + seconds - time.monotonic()))
        return sum(1 for r in self.frame_reports if since < r["receivedAt"] <= since + seconds)

    async def _report(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any] | None:
        """The first frame message that is `wanted`, waiting up to `timeout` seconds for it."""
        return await self._arrival(lambda: next((r for r in self.frame_reports if wanted(r)), None), timeout)

    async def _arrival(self, find: Callable[[], T | None], timeout: float) -> T | None:
        """`find()` once it finds something, asked again at each server message for up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (found := find()) is None and (remaining := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return found

    @property
    def poses_sent(self) -> int:
        return self._next_pose_id

    def send_pose(self, position: tuple[float, ...], orientation: tuple[float, ...], fov: float) -> int:
        """Send a camera pose with the next id; returns the id."""
        pose_id = self._next_pose_id
        self._next_pose_id += 1
        self.send(protocol.pose(pose_id, position, orientation, fov))
        self.meter.pose_sent(pose_id, time.monotonic())
        return pose_id

    async def next_frame(self, *, timeout: float = 30.0) -> tuple[av.VideoFrame, int | None]:
        """The next decoded frame and the pose it shows (None until its frame message has come)."""
        track = await asyncio.wait_for(asyncio.shield(self._track), timeout)
        try:
            frame = await asyncio.wait_for(track.recv(), timeout)
        except (MediaStreamError, TimeoutError):
            raise ConnectError("the video stream ended or stalled") from None
        assert isinstance(frame, av.VideoFrame)
        decoded_at = time.monotonic()
        rtp = received_rtp_timestamp(self.receiver, frame)
        pose_id = None if rtp is None else self._rtp_poses.get(rtp)
        if pose_id is not None:
            self.meter.frame_decoded(pose_id, decoded_at)
        elif rtp is not None:
            self._unmatched[rtp] = decoded_at
            _bound(self._unmatched)
        return frame, pose_id

    async def frame_showing(self, pose_id: int, *, timeout: float = 20.0) -> av.VideoFrame:
        """Decoded frames until one shows `pose_id` or a later pose (told by its frame message); that frame."""
        async with asyncio.timeout(timeout):
            while True:
                frame, shown = await self.next_frame(timeout=timeout)
                if shown is None:
                    shown = await self._pose_reported(frame)
                if shown is not None and shown >= pose_id:
                    return frame

    async def _pose_reported(self, frame: av.VideoFrame, timeout: float = 1.0) -> int | None:
        """The pose `frame` shows, waiting up to `timeout` seconds for its frame message; None if it did not come."""
        return await self._arrival(lambda: self.pose_shown(frame), timeout)

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        await self.pc.close()


def _triangles(loaded: dict[str, Any] | None, level: int) -> float:
    """Triangles drawn at a level of detail of the loaded model (its `levels`, full detail first)."""
    levels = (loaded or {}).get("levels") or [(loaded or {}).get("triangles", 0)]
    return float(levels[min(level, len(levels) - 1)])


async def orbit(client: RenderClient, fps: int, target: list[float], distance: float) -> None:
    started = time.monotonic()
    tick = 0
    while True:
        yaw = (time.monotonic() - started) * DEGREES_PER_SECOND
        pose = orbit_pose(target, distance, yaw, 20.0)
        client.send_pose(pose.position, pose.orientation, pose.fov)
        tick += 1
        # Absolute deadlines: sleeping 1/fps after each send would drift slower than fps.
        await asyncio.sleep(max(0.0, started + tick / fps - time.monotonic()))


async def run_client(
    offer_url: str,
    token: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    model: str | None = None,
    frames: int = 150,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    out: Path | None = None,
    ice_servers: Sequence[IceServer] = (),
    loopback: bool = True,
    warmup_s: float = 1.0,
    marker_frames: bool = True,
) -> dict[str, Any]:
    """Connect, load `model`, orbit it until `frames` new frames were measured; return the stream's figures."""
    client = RenderClient(ice_servers=ice_servers, loopback=loopback, marker_frames=marker_frames)
    orbiting: asyncio.Task[None] | None = None
    try:
        hello = await client.connect(offer_url, token, ssl_context=ssl_context, width=width, height=height, fps=fps)
        loaded = await client.load_model(model) if model else None
        target, distance = [0.0, 0.0, 0.0], 3.0
        if loaded and loaded.get("bounds"):
            low, high = np.array(loaded["bounds"]["min"]), np.array(loaded["bounds"]["max"])
            target = ((low + high) / 2).tolist()
            distance = max(float(np.linalg.norm(high - low)) / 2, 1e-3) / math.sin(math.radians(30)) * 1.1
        orbiting = asyncio.create_task(orbit(client, fps, target, distance))
        # The first second holds the key frame and the encoder's start: measured from then on.
        warmup_until = time.monotonic() + warmup_s
        last: av.VideoFrame | None = None
        deadline = time.monotonic() + 60 + frames * 4 / fps
        measured_from, measured_bytes = None, (0, 0.0)
        sample_every = max(frames // PSNR_SAMPLES, 1)
        moving_psnr: list[asyncio.Task[float | None]] = []
        while len(client.meter.new_frames) < frames:
            if time.monotonic() > deadline:
                raise ConnectError(f"only {len(client.meter.new_frames)} of {frames} frames arrived in time")
            client.meter.measuring = time.monotonic() >= warmup_until
            if client.meter.measuring and measured_from is None:
                measured_from, measured_bytes = len(client.frame_reports), (client.received_bytes(), time.monotonic())
            counted = len(client.meter.new_frames)
            last, pose_id = await client.next_frame()
            new = len(client.meter.new_frames) > counted
            if client.meter.measuring and new and pose_id is not None and counted % sample_every == 0:
                moving_psnr.append(asyncio.create_task(client.psnr(last, pose_id)))
        figures = client.meter.figures()
        moving = client.frame_reports[measured_from or 0 :]
        received, since = measured_bytes
        bitrate = (client.received_bytes() - received) * 8 / max(time.monotonic() - since, 1e-3) / 1000
        # The camera stops: the picture on screen half a second later, and when the last pose showed in full detail.
        orbiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await orbiting
        stopped_at = time.monotonic()
        still = await client.shown_at(stopped_at + STILL_VIEW_SECONDS)
        still_psnr = None
        if still is not None and still[1] is not None:
            still_psnr = await client.psnr(still[0], still[1])
        # A still camera costs one frame: none may follow while nothing changes.
        last_pose = client.poses_sent - 1
        frames_after_still = await client.frames_after_still(last_pose, AFTER_STILL_SECONDS, FULL_DETAIL_TIMEOUT)
        shown = await client.full_detail(client.poses_sent - 1, FULL_DETAIL_TIMEOUT)
        measured_psnr = [p for p in await asyncio.gather(*moving_psnr) if p is not None]
        figures.update(codec=client.codec, width=last.width if last else 0, height=last.height if last else 0)
        renders = [r["renderMs"] for r in client.frame_reports]
        sends = [r["encodeMs"] for r in client.frame_reports if "encodeMs" in r]
        levels = [int(r.get("level", 0)) for r in moving]
        figures.update(
            poses_sent=client.poses_sent,
            level_moving_p50=_percentile(levels, 0.5),
            triangles_moving_p50=_percentile([_triangles(loaded, level) for level in levels], 0.5),
            # 0 when the last pose was shown in full detail already (a model with one level of detail).
            full_detail_ms_after_stop=None if shown is None else round(max(shown - stopped_at, 0.0) * 1000, 1),
            psnr_db_moving=_percentile(measured_psnr, 0.5),
            psnr_db_still=still_psnr,
            frames_after_still=frames_after_still,
            bitrate_kbps=round(bitrate, 1),
            server_render_ms_p50=_percentile(renders, 0.5),
            server_send_ms_p50=_percentile(sends, 0.5),
            renderer=hello.get("renderer"),
            model=loaded,
        )
        if out is not None and last is not None:
            from PIL import Image

            Image.fromarray(last.to_ndarray(format="rgb24")).save(out)
        return figures
    finally:
        if orbiting is not None:
            orbiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await orbiting
        await client.close()
