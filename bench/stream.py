"""Benchmark streaming: a real hub's render server beside a one-process render-then-encode aiortc loop, same client."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from playwright.sync_api import Error as PlaywrightError

import chromium_client
from processes import create_ready, free_port, kill_render_servers, stop_after, stop_process, wait_until
from renderhub.backends.local import render_servers
from renderhub.client import ArrConfig, HubClient
from renderhub.connect import AFTER_STILL_SECONDS, DEGREES_PER_SECOND, STILL_VIEW_SECONDS, ConnectError, RenderClient
from renderhub.render.camera import orbit_pose

RENDERHUB = str(Path(sys.executable).parent / "renderhub")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RESOLUTIONS = {"720p": (1280, 720), "1080p": (1920, 1080)}
SESSION_ID = "bench-stream"
BASELINE_TOKEN = "bench-baseline"
# The targets for this CPU-only machine (720p), and "near 0%" for an idle render server.
TARGET_FPS = 30.0
TARGET_P50_MS = 60.0
TARGET_IDLE = 0.02
TARGET_FPS_60 = 55.0  # the picture-quality issue's, for the CLI client: 720p60, and 1080p30 at the same latency
TARGET_P50_CLI_MS = 35.0
TARGET_P50_CHROMIUM_MS = 50.0  # to the presented frame, 720p30
TARGET_PSNR_STILL = 40.0  # luma dB, 720p30, the sample
TARGET_PSNR_MOVING = 32.0
TARGET_KBPS = 8000
PSNR_SAMPLES = 10  # frames measured against the render server's lossless reference per stream


class OutOfTime(Exception):
    """The whole run's time limit passed (apart from a stream's own timeouts, which fail only that stream)."""


# /proc: CPU time of process trees, this process and the whole machine


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads), from /proc; 0 once it is gone."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS if fields else 0.0


def process_tree(root: int) -> list[int]:
    """`root` and its live descendants (the render server, its render worker, multiprocessing's resource tracker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree: list[int] = []
    queue = [root]
    while queue:
        pid = queue.pop()
        if pid not in tree and _stat_fields(pid) is not None:
            tree.append(pid)
            queue.extend(children.get(pid, []))
    return tree


def role(pid: int, root: int) -> str:
    if pid == root:
        return "server"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return "other"
    if "resource_tracker" in command:
        return "tracker"
    return "worker" if "spawn_main" in command else "other"


def machine_busy_seconds() -> float:
    """CPU seconds all processes on this machine have spent busy (not idle or waiting on I/O), from /proc/stat."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


@dataclass
class CpuWindow:
    """CPU used over a wall-clock window by a server's process tree, by this (client) process, by the hub, and
    by everything else on the machine; in cores (1.0 = one core busy all the time)."""

    server_root: int
    hub_pid: int | None = None
    client_pids: Callable[[], list[int]] | None = None  # the client's processes (a browser); else this process
    seconds: float = 0.0
    server: float = 0.0
    client: float = 0.0
    hub: float = 0.0
    other: float = 0.0
    split: dict[str, float] = field(default_factory=dict)
    _start: tuple[float, dict[int, float], dict[int, float], float, float] | None = None

    def _client(self) -> dict[int, float]:
        if self.client_pids is None:
            return {0: time.process_time()}
        return {pid: cpu_seconds(pid) for pid in self.client_pids()}

    def begin(self) -> None:
        tree = {pid: cpu_seconds(pid) for pid in process_tree(self.server_root)}
        hub = cpu_seconds(self.hub_pid) if self.hub_pid else 0.0
        self._start = (time.monotonic(), tree, self._client(), hub, machine_busy_seconds())

    def end(self) -> CpuWindow:
        assert self._start is not None
        started, tree, client, hub, machine = self._start
        self.seconds = time.monotonic() - started
        used: dict[str, float] = {}
        # A process that appeared within the window counts from zero; one that ended within it is lost (rare:
        # render workers start before the window, at connect, and end after it, at disconnect).
        for pid in process_tree(self.server_root):
            name = role(pid, self.server_root)
            used[name] = used.get(name, 0.0) + cpu_seconds(pid) - tree.get(pid, 0.0)
        self.split = {name: seconds / self.seconds for name, seconds in used.items()}
        self.server = sum(used.values()) / self.seconds
        self.client = sum(now - client.get(pid, 0.0) for pid, now in self._client().items()) / self.seconds
        self.hub = ((cpu_seconds(self.hub_pid) if self.hub_pid else 0.0) - hub) / self.seconds
        busy = (machine_busy_seconds() - machine) / self.seconds
        self.other = max(0.0, busy - self.server - self.client - self.hub)
        return self


def percentile(values: list[float], fraction: float) -> float | None:
    """As renderhub.connect computes its percentiles, so figures compare with `renderhub connect`'s."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# The client: renderhub.connect's RenderClient and LatencyMeter, orbiting for a fixed time rather than frame count


@dataclass
class Figures:
    system: str
    resolution: str
    fps: float = 0.0
    p50: float | None = None
    p95: float | None = None
    render_ms: float | None = None
    encode_ms: float | None = None
    cpu: CpuWindow | None = None
    decoded: int = 0  # frames the client decoded in the window
    new: int = 0  # of which each showed a newer pose than any before
    unmatched: int = 0  # of which the pose was not known when decoded (its frame message came later)
    key_frames: int = 0  # of which were key frames (a reopened encoder sends one)
    reported: int = 0  # frames the server said it sent in the window
    poses: int = 0  # poses the client sent in the window
    codec: str = ""
    renderer: str = ""
    error: str = ""
    psnr_moving: float | None = None  # luma dB against the server's reference frames, median while orbiting
    psnr_still: float | None = None  # of the frame on screen 0.5 s after the last pose
    frames_after_still: int | None = None  # frames in the 2 s after that: a still camera sends none
    bitrate_kbps: float | None = None  # encoded video received in the window
    encoder_log: list[str] = field(default_factory=list)  # the render server's lines on key frames and congestion


async def _orbit(client: RenderClient, fps: int, target: list[float], distance: float, sent: list[int]) -> None:
    """renderhub.connect's orbit: a new pose every 1/fps s on absolute deadlines; counts what it sends."""
    started = time.monotonic()
    tick = 0
    while True:
        pose = orbit_pose(target, distance, (time.monotonic() - started) * DEGREES_PER_SECOND, 20.0)
        client.send_pose(pose.position, pose.orientation, pose.fov)
        sent[0] += 1
        tick += 1
        await asyncio.sleep(max(0.0, started + tick / fps - time.monotonic()))


async def _connect(
    offer_url: str, token: str, ssl_context: ssl.SSLContext | None, width: int, height: int, fps: int
) -> tuple[RenderClient, dict[str, Any]]:
    """A connected client; retries while the server still holds the previous client (409) after it left."""
    deadline = time.monotonic() + 20
    while True:
        client = RenderClient()
        try:
            hello = await client.connect(offer_url, token, ssl_context=ssl_context, width=width, height=height, fps=fps)
            return client, hello
        except ConnectError as exc:
            await client.close()
            if "409" not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def measure_stream(
    figures: Figures, offer_url: str, token: str, ssl_context: ssl.SSLContext | None, size: tuple[int, int],
    cpu: CpuWindow, args: argparse.Namespace,
) -> Figures:  # fmt: skip
    """Connect, load the sample, orbit for warm-up plus duration; fill `figures` from the measured window."""
    client, hello = await _connect(offer_url, token, ssl_context, *size, args.fps)
    orbit: asyncio.Task[None] | None = None
    try:
        loaded = await client.load_model("sample", timeout=120)
        low, high = np.array(loaded["bounds"]["min"]), np.array(loaded["bounds"]["max"])
        distance = max(float(np.linalg.norm(high - low)) / 2, 1e-3) / np.sin(np.radians(30)) * 1.1
        sent = [0]
        orbit = asyncio.create_task(_orbit(client, args.fps, ((low + high) / 2).tolist(), distance, sent))
        # The warm-up holds the key frame, the encoder's start and the bitrate ramp: measured from then on.
        meter = client.meter
        warm_until = time.monotonic() + args.warmup
        while time.monotonic() < warm_until:
            await client.next_frame(timeout=10)
        reports_before, poses_before = len(client.frame_reports), sent[0]
        cpu.begin()
        meter.measuring = True
        received, measure_from = client.received_bytes(), time.monotonic()
        measure_until = measure_from + args.duration
        sample_every = max(int(args.duration * args.fps) // PSNR_SAMPLES, 1)
        psnr: list[asyncio.Task[float | None]] = []
        while time.monotonic() < measure_until:
            frame, pose_id = await client.next_frame(timeout=10)
            figures.decoded += 1
            figures.key_frames += frame.key_frame
            figures.unmatched += pose_id is None
            if pose_id is not None and figures.decoded % sample_every == 0:
                psnr.append(asyncio.create_task(client.psnr(frame, pose_id)))
        meter.measuring = False
        figures.cpu = cpu.end()
        figures.bitrate_kbps = (client.received_bytes() - received) * 8 / (time.monotonic() - measure_from) / 1000
        reports = client.frame_reports[reports_before:]
        figures.poses = sent[0] - poses_before
        # Outside the CPU window: the reference fetches cost the server a PNG each.
        figures.psnr_moving = percentile([p for p in await asyncio.gather(*psnr) if p is not None], 0.5)
        orbit.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await orbit
        still = await client.shown_at(time.monotonic() + STILL_VIEW_SECONDS)
        if still is not None and still[1] is not None:
            figures.psnr_still = await client.psnr(still[0], still[1])
        figures.frames_after_still = await client.frames_after_still(client.poses_sent - 1, AFTER_STILL_SECONDS, 10.0)
    finally:
        if orbit is not None:
            orbit.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await orbit
        await client.close()
    measured = meter.figures()
    figures.fps, figures.new = measured["fps"], measured["frames"]
    figures.p50, figures.p95 = percentile(meter.latencies_ms, 0.5), percentile(meter.latencies_ms, 0.95)
    figures.render_ms = percentile([r["renderMs"] for r in reports], 0.5)
    figures.encode_ms = percentile([r["encodeMs"] for r in reports if "encodeMs" in r], 0.5)
    figures.reported = len(reports)
    figures.codec, figures.renderer = client.codec, str(hello.get("renderer", ""))
    return figures


# The baseline server: render and hand over in one process, the render in the event loop's thread


def serve_baseline(port: int, width: int, height: int, fps: int, model: str, preset: str) -> None:
    """What a straightforward aiortc render server does: a VideoStreamTrack whose recv() renders the newest pose
    with RenderHub's Renderer in the event loop's thread and returns it; aiortc's own H.264 encoder
    (PyAV libx264) encodes it with aiortc's bitrate control, profile and level, plus `preset` (ultrafast)."""
    import av
    from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack
    from aiortc.mediastreams import MediaStreamError

    from renderhub.render import protocol
    from renderhub.render.compat import enable_loopback_candidates, last_sent_rtp_timestamp
    from renderhub.render.encoder import use_h264_preset
    from renderhub.render.http import Request, Response, serve
    from renderhub.render.renderer import Renderer
    from renderhub.render.rtc import negotiated_codec
    from renderhub.render.scene import load_scene

    if preset != "aiortc":
        use_h264_preset(preset)  # this process only: the benchmark's own and the hub's are untouched

    enable_loopback_candidates()
    renderer = Renderer(width, height)

    @dataclass
    class Client:
        pc: RTCPeerConnection
        channel: Any = None
        sender: Any = None
        pose: tuple[int, Any] | None = None
        changed: asyncio.Event = field(default_factory=asyncio.Event)

    state: dict[str, Client | None] = {"client": None}
    loading: set[asyncio.Future[None]] = set()  # held, or the loop may drop a running load

    class NaiveTrack(VideoStreamTrack):
        """Renders when a pose newer than the last frame's is in (never the same pose twice, nothing while idle),
        at most `fps` a second like RenderHub's worker (a token bucket, so a late pose may catch up)."""

        def __init__(self, client: Client) -> None:
            super().__init__()
            self.client = client
            self.last_id = -1
            self.number = 0
            self.started = time.monotonic()
            self.last_pts = -1
            self.tokens, self.stamp = 2.0, time.monotonic()
            self.pending: tuple[int, int, float, float] | None = None

        async def recv(self) -> av.VideoFrame:
            if self.readyState != "live":
                raise MediaStreamError
            channel = self.client.channel
            if self.pending is not None:
                # As RenderHub reports it: encodeMs is from handing the frame over until aiortc asks for the next.
                pose_id, number, render_ms, handed = self.pending
                self.pending = None
                if channel is not None and channel.readyState == "open" and channel.bufferedAmount < 1 << 20:
                    send_ms = (time.monotonic() - handed) * 1000
                    rtp = last_sent_rtp_timestamp(self.client.sender)
                    channel.send(protocol.frame(pose_id, number, render_ms, send_ms, rtp_timestamp=rtp))
            while self.client.pose is None or self.client.pose[0] <= self.last_id:
                self.client.changed.clear()
                await self.client.changed.wait()
                if self.readyState != "live":
                    raise MediaStreamError
            now = time.monotonic()
            self.tokens = min(2.0, self.tokens + (now - self.stamp) * fps)
            self.stamp = now
            if self.tokens < 1.0:
                await asyncio.sleep((1.0 - self.tokens) / fps)
            self.tokens -= 1.0
            pose_id, pose = self.client.pose
            started = time.perf_counter()
            image = renderer.render(pose)  # blocks the event loop: ICE, DTLS, SCTP and RTP wait meanwhile
            render_ms = (time.perf_counter() - started) * 1000
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            now = time.monotonic()
            frame.pts = self.last_pts = max(int((now - self.started) * 90_000), self.last_pts + 1)
            frame.time_base = fractions.Fraction(1, 90_000)
            self.last_id = pose_id
            self.number += 1
            self.pending = (pose_id, self.number, render_ms, now)
            return frame

    async def load(client: Client, name: str) -> None:
        if name != "sample":
            client.channel.send(protocol.error("ModelNotFound", f"no model named {name!r}"))
            return
        started = time.perf_counter()
        scene = await asyncio.to_thread(load_scene, Path(model), max_primitives=None, max_bytes=2 << 30)
        renderer.upload(scene)  # GL calls stay in the thread that made the context
        bounds = (scene.bounds[0].tolist(), scene.bounds[1].tolist())
        load_ms = (time.perf_counter() - started) * 1000
        client.channel.send(protocol.model_loaded(scene.triangles, scene.draw_calls, load_ms, bounds))

    async def offer(body: dict[str, Any]) -> Response:
        if state["client"] is not None:
            return Response.error(409, "ClientAlreadyConnected", "one client at a time")
        if (body["width"], body["height"]) != (renderer.width, renderer.height):
            renderer.resize(body["width"], body["height"])
        pc = RTCPeerConnection()
        client = state["client"] = Client(pc)
        track = NaiveTrack(client)
        codec_name = ""

        def on_message(data: str | bytes) -> None:
            try:
                message = protocol.parse_client_message(data)
            except protocol.ProtocolError:
                return
            if isinstance(message, protocol.PoseMessage):
                if client.pose is None or message.id > client.pose[0]:
                    client.pose = (message.id, message.pose)
                    client.changed.set()
            elif isinstance(message, protocol.LoadModelMessage):
                loading.add(asyncio.ensure_future(load(client, message.name or "")))
            elif isinstance(message, protocol.PingMessage):
                client.channel.send(protocol.pong(message.t))

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            client.channel = channel
            channel.on("message", on_message)
            channel.send(protocol.hello("baseline", renderer.width, renderer.height, fps, codec_name,
                                        renderer.gl_renderer))  # fmt: skip

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and state["client"] is client:
                state["client"] = None
                track.stop()
                client.changed.set()
                await pc.close()

        sender = client.sender = pc.addTrack(track)
        transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
        codecs = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences([c for c in codecs if c.mimeType in ("video/H264", "video/rtx")])
        await pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        codec_name = negotiated_codec(pc.localDescription.sdp)
        return Response.json(200, {"type": "answer", "sdp": pc.localDescription.sdp})

    async def handle(request: Request) -> Response:
        if request.path == "/health":
            return Response.json(200, {"status": "ok"})
        if request.path == "/offer" and request.method == "POST":
            return await offer(json.loads(request.body))
        return Response.error(404, "NotFound", request.path)

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        async with await asyncio.start_server(serve(handle), "127.0.0.1", port):
            await stopping.wait()
        if state["client"] is not None:
            await state["client"].pc.close()

    asyncio.run(main())
    renderer.release()


# Processes this benchmark starts, each stopped whatever happens


@contextmanager
def started(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        stop_process(process)


@dataclass
class Hub:
    process: subprocess.Popen[bytes]
    client: HubClient
    server_pid: int
    offer_url: str
    ca: Path


@contextmanager
def renderhub(tmp: Path) -> Iterator[Hub]:
    """`renderhub serve` on a temporary data dir and one Ready Standard session; everything stopped afterwards."""
    data_dir = tmp / "hub"
    data_dir.mkdir()
    port = free_port()
    command = [RENDERHUB, "serve", "--data-dir", str(data_dir), "--port", str(port), "--rate-limit", "0"]
    ca = data_dir / "tls" / "ca.pem"
    client: HubClient | None = None

    def trust() -> ssl.SSLContext | bool:
        # The hub writes its CA on its first start: trust it once it exists.
        return ssl.create_default_context(cafile=str(ca)) if ca.exists() else True

    try:
        with started(command, tmp / "hub.log") as process:
            wait_until(process, f"https://127.0.0.1:{port}/health", tmp / "hub.log", trust, 60)
            client = HubClient(ArrConfig.load(data_dir / "arrconfig.json"), verify=str(ca))
            try:
                if (status := create_ready(client, SESSION_ID)) is not None:
                    raise RuntimeError(f"the session is {status}:\n{(tmp / 'hub.log').read_text()[-3000:]}")
                pids = list(render_servers(str(data_dir.resolve())))
                if len(pids) != 1:
                    raise RuntimeError(f"expected one render server, found {pids}")
                # Through the hub's relay, as `renderhub connect` does by default.
                offer = f"{client.base}/render/{client.config.account_id}/{SESSION_ID}/offer"
                yield Hub(process, client, pids[0], offer, ca)
            finally:
                with contextlib.suppress(Exception):
                    client.stop(SESSION_ID)  # politely first: the server frees its worker and shared memory
                    deadline = time.monotonic() + 10
                    while render_servers(str(data_dir.resolve())) and time.monotonic() < deadline:
                        time.sleep(0.1)
                client.close()
    finally:
        kill_render_servers(data_dir)  # whatever did not stop: render servers outlive the hub by design


# The run


def idle_cpu(pid: int, seconds: float, baseline_tree: list[int] | None = None) -> float:
    """The render server tree's CPU with no client, once any render worker from a client before is gone."""
    deadline = time.monotonic() + 15
    while baseline_tree is not None and set(process_tree(pid)) - set(baseline_tree) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # let a just-closed connection's last timers run out
    window = CpuWindow(pid)
    window.begin()
    time.sleep(seconds)
    return window.end().server


def encoder_log(hub: Hub) -> list[str]:
    """The render server's recent log lines on encoder reopens (key frames) and congestion, from its inspector."""
    session = hub.client.get(SESSION_ID)
    url = f"https://{session['hostname']}:{session['arrInspectorPort']}/status"
    headers = {"Authorization": f"Bearer {hub.client.token()}"}
    lines = httpx.get(url, headers=headers, verify=str(hub.ca), timeout=10).json()["log"]
    return [line for line in lines if "encoder reopened" in line or "congestion" in line]


@contextmanager
def logging_encoder(hub: Hub, figures: Figures) -> Iterator[None]:
    """Collect the encoder's new log lines over a stream into `figures`."""
    before = set(encoder_log(hub))
    try:
        yield
    finally:
        figures.encoder_log = [line for line in encoder_log(hub) if line not in before]


def run_renderhub(hub: Hub, name: str, args: argparse.Namespace) -> Figures:
    print(f"RenderHub {name}: connecting through the hub's relay ...", flush=True)
    figures = Figures("RenderHub", name)
    cpu = CpuWindow(hub.server_pid, hub.process.pid)
    trust = hub.client.trust if isinstance(hub.client.trust, ssl.SSLContext) else None
    coroutine = measure_stream(figures, hub.offer_url, hub.client.token(), trust, RESOLUTIONS[name], cpu, args)
    with logging_encoder(hub, figures):
        return asyncio.run(asyncio.wait_for(coroutine, args.duration + args.warmup + 120))


def run_chromium(hub: Hub, tmp: Path, name: str, args: argparse.Namespace) -> Figures:
    """The viewer's stream code in headless Chromium through the hub's relay; latency to the presentation time."""
    print(f"Chromium {name}: the viewer's stream code, headless ...", flush=True)
    figures = Figures("Chromium", name)
    width, height = RESOLUTIONS[name]
    settings = {
        "accountId": hub.client.config.account_id, "accountKey": hub.client.config.account_key,
        "sessionId": SESSION_ID, "width": width, "height": height, "fps": args.fps,
        "degreesPerSecond": DEGREES_PER_SECOND, "warmupMs": args.warmup * 1000, "durationMs": args.duration * 1000,
        "psnrSamples": PSNR_SAMPLES, "stillViewMs": STILL_VIEW_SECONDS * 1000,
        "afterStillMs": AFTER_STILL_SECONDS * 1000,
    }  # fmt: skip

    with chromium_client.chromium_page(tmp, hub.ca, name) as (page, profile):
        cpu = CpuWindow(hub.server_pid, hub.process.pid, lambda: chromium_client.browser_processes(profile))

        def measuring(window: Callable[[], None]) -> None:
            cpu.begin()
            window()
            figures.cpu = cpu.end()

        with logging_encoder(hub, figures):
            result = chromium_client.stream_in_chromium(page, f"{hub.client.base}/viewer/", settings, measuring)
    seconds = result["seconds"]
    figures.fps = round((result["newFrames"] - 1) / seconds, 1) if result["newFrames"] > 1 else 0.0
    figures.p50, figures.p95 = percentile(result["latencies"], 0.5), percentile(result["latencies"], 0.95)
    figures.decoded, figures.new = result["framesDecoded"] or 0, result["newFrames"]
    figures.key_frames, figures.poses = result["keyFrames"] or 0, result["posesSent"]
    figures.reported = result["presented"]
    figures.render_ms, figures.encode_ms = result["renderMs"], result["encodeMs"]
    figures.psnr_moving, figures.psnr_still = percentile(result["psnrMoving"], 0.5), result["psnrStill"]
    figures.frames_after_still, figures.bitrate_kbps = result["framesAfterStill"], result["bitrateKbps"]
    figures.codec, figures.renderer = str(result["codec"] or ""), str(result["renderer"] or "")
    return figures


def run_baseline(tmp: Path, model: Path, name: str, args: argparse.Namespace, hub_pid: int) -> Figures:
    print(f"baseline {name}: one process, render in the event loop, libx264 {args.baseline_preset} ...", flush=True)
    port = free_port()
    width, height = RESOLUTIONS[name]
    command = [
        sys.executable, str(Path(__file__).resolve()), "--serve-baseline", str(port), str(width), str(height),
        str(args.fps), str(model), args.baseline_preset,
    ]  # fmt: skip
    log = tmp / f"baseline-{name}.log"
    with started(command, log) as process:
        wait_until(process, f"http://127.0.0.1:{port}/health", log, lambda: False, 60)
        figures = Figures("baseline", name)
        cpu = CpuWindow(process.pid, hub_pid)
        coroutine = measure_stream(
            figures, f"http://127.0.0.1:{port}/offer", BASELINE_TOKEN, None, (width, height), cpu, args
        )
        return asyncio.run(asyncio.wait_for(coroutine, args.duration + args.warmup + 120))


def fmt(value: float | None, pattern: str = "{:.1f}") -> str:
    return "-" if value is None else pattern.format(value)


def targets(r: Figures, fps: int) -> list[tuple[str, str, str, bool]]:
    """The issues' targets that apply to a stream: (what, measured, target, met)."""
    rows: list[tuple[str, str, str, bool]] = []

    def latency(limit: float) -> None:
        met = r.p50 is not None and r.p50 <= limit
        rows.append((f"{fps} fps pose-to-frame p50", f"{fmt(r.p50, '{:.0f}')} ms", f"<= {limit:g} ms", met))

    if r.system in ("RenderHub", "baseline") and r.resolution == "720p" and fps == 30:
        rows.append(("delivered fps", f"{r.fps:.1f}", f">= {TARGET_FPS:g}", r.fps >= TARGET_FPS))
        latency(TARGET_P50_MS)
    if r.system == "RenderHub" and (fps, r.resolution) in ((60, "720p"), (30, "1080p")):
        if fps == 60:
            rows.append(("delivered fps", f"{r.fps:.1f}", f">= {TARGET_FPS_60:g}", r.fps >= TARGET_FPS_60))
        latency(TARGET_P50_CLI_MS)
    if r.system == "Chromium" and r.resolution == "720p" and fps == 30:
        latency(TARGET_P50_CHROMIUM_MS)
    if r.system in ("RenderHub", "Chromium") and r.resolution == "720p" and fps == 30:
        still = r.psnr_still is not None and r.psnr_still >= TARGET_PSNR_STILL
        rows.append(("luma PSNR still", f"{fmt(r.psnr_still)} dB", f">= {TARGET_PSNR_STILL:g} dB", still))
        moving = r.psnr_moving is not None and r.psnr_moving >= TARGET_PSNR_MOVING
        rows.append(("luma PSNR moving", f"{fmt(r.psnr_moving)} dB", f">= {TARGET_PSNR_MOVING:g} dB", moving))
        within = r.bitrate_kbps is not None and r.bitrate_kbps <= TARGET_KBPS
        rows.append(("bitrate moving", f"{fmt(r.bitrate_kbps, '{:.0f}')} kbit/s", f"<= {TARGET_KBPS}", within))
        none = r.frames_after_still == 0
        rows.append(("frames after the still one", fmt(r.frames_after_still, "{}"), "0", none))
    return rows


def report(results: list[Figures], idle: list[tuple[str, float]], args: argparse.Namespace) -> None:
    window = f"{args.duration:g} s measured after {args.warmup:g} s warm-up, poses at {args.fps} /s"
    print(f"\nSample model, orbiting; {window}; CPU in % of one core (this machine has {os.cpu_count()})")
    print(f"{'':18}{'render ms':>10}{'encode ms':>10}{'fps':>7}{'p2f p50':>9}{'p2f p95':>9}"
          f"{'server CPU':>11}{'client CPU':>11}{'other CPU':>10}")  # fmt: skip
    for r in results:
        name = f"{r.system} {r.resolution}"
        if r.error:
            print(f"{name:18}FAILED: {r.error}")
            continue
        assert r.cpu is not None
        print(f"{name:18}{fmt(r.render_ms):>10}{fmt(r.encode_ms):>10}{r.fps:>7.1f}{fmt(r.p50, '{:.0f}'):>9}"
              f"{fmt(r.p95, '{:.0f}'):>9}{r.cpu.server:>10.0%}{r.cpu.client:>10.0%} {r.cpu.other:>9.0%}")  # fmt: skip
    print("(render and encode: p50 of the server's frame messages; encode is aiortc's encode-and-send time;")
    print(" fps: distinct decoded frames each showing a newer pose, at most the poses sent per second;")
    print(" p2f: ms from sending a pose to the first decoded frame showing it or a later one;")
    print(" other CPU: every other process on this machine but the hub, whose own is shown per stream)")
    print("\nper stream:")
    for r in results:
        if r.error or r.cpu is None:
            continue
        split = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r.cpu.split.items(), key=lambda kv: -kv[1]))
        seconds = r.cpu.seconds
        shown = "presented" if r.system == "Chromium" else "sent"
        print(f"  {r.system} {r.resolution}: {r.poses / seconds:.1f} poses/s sent, {r.reported / seconds:.1f} frames/s "
              f"{shown}, {r.decoded / seconds:.1f} decoded, {r.new / seconds:.1f} new; {r.unmatched} unmatched, "
              f"{r.key_frames} key frames; "
              f"{r.codec}; server CPU: {split}; hub {r.cpu.hub:.0%}")  # fmt: skip
        per_frame = {**r.cpu.split, "hub": r.cpu.hub, "client": r.cpu.client}
        for line in r.encoder_log:
            print(f"    render server: {line}")
        print("    CPU ms per new frame: " + ", ".join(
            f"{k} {v * seconds * 1000 / max(r.new, 1):.1f}" for k, v in per_frame.items() if v > 0.001))  # fmt: skip
        print(f"    picture: luma PSNR {fmt(r.psnr_moving)} dB moving, {fmt(r.psnr_still)} dB still "
              f"(- : no reference to compare with), {fmt(r.bitrate_kbps, '{:.0f}')} kbit/s; "
              f"{fmt(r.frames_after_still, '{}')} frames in the {AFTER_STILL_SECONDS:g} s after the still")  # fmt: skip
    print(f"  renderer: {next((r.renderer for r in results if r.renderer), '-')}")
    print("  (Chromium: latency to the presentation time of requestVideoFrameCallback; PSNR of the picture as")
    print("   Chromium converts it to RGB for a canvas, against the same reference: a little under the decoder's)")
    print(f"\n{'target (CPU only)':54}{'measured':>10}{'target':>10}   verdict")
    for r in results:
        if r.error:
            continue
        for label, measured, target, met in targets(r, args.fps):
            print(f"{r.system + ' ' + r.resolution + ' ' + label:54}{measured:>10}{target:>10}   "
                  f"{'met' if met else 'MISSED'}")  # fmt: skip
    for label, used in idle:
        verdict = "met" if used <= TARGET_IDLE else "MISSED"
        print(f"{'RenderHub render server idle CPU, ' + label:54}{used:>10.1%}{'~0%':>10}   {verdict}")
    busy = max((r.cpu.other for r in results if r.cpu is not None), default=0.0)
    if busy > 0.1:
        print(f"\nWARNING: other processes used up to {busy:.0%} of a core while measuring: the figures are disturbed")


def run(args: argparse.Namespace, tmp: Path) -> None:
    from renderhub.render.sample import write_sample

    model = write_sample(tmp / "sample.glb")  # the baseline's copy; the render server generates its own
    results: list[Figures] = []
    idle: list[tuple[str, float]] = []
    with renderhub(tmp) as hub:
        quiet_tree = process_tree(hub.server_pid)
        print(f"render server {hub.server_pid} Ready; idle CPU for {args.idle:g} s ...", flush=True)
        idle.append(("before any client", idle_cpu(hub.server_pid, args.idle)))
        for i, name in enumerate(args.resolutions):
            # Alternate which goes first, so a drifting load on this shared machine disturbs both alike.
            order = ["RenderHub", "baseline"] if i % 2 == 0 else ["baseline", "RenderHub"]
            for system in [s for s in [*order, "Chromium"] if s in args.clients]:
                try:
                    if system == "RenderHub":
                        results.append(run_renderhub(hub, name, args))
                    elif system == "Chromium":
                        results.append(run_chromium(hub, tmp, name, args))
                    else:
                        results.append(run_baseline(tmp, model, name, args, hub.process.pid))
                except (ConnectError, TimeoutError, RuntimeError, PlaywrightError) as exc:
                    results.append(Figures(system, name, error=f"{type(exc).__name__}: {exc}"))
                    print(f"  failed: {exc}", flush=True)
        print(f"all clients gone; render server idle CPU for {args.idle:g} s ...", flush=True)
        idle.append(("after clients left", idle_cpu(hub.server_pid, args.idle, quiet_tree)))
    order_key = {name: i for i, name in enumerate(args.resolutions)}
    systems = {"RenderHub": 0, "Chromium": 1, "baseline": 2}
    results.sort(key=lambda r: (order_key[r.resolution], systems[r.system]))
    report(results, idle, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds measured per stream")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds streamed before measuring")
    parser.add_argument("--fps", type=int, default=30, help="poses sent per second, and the stream's fps cap")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of idle render server measured")
    parser.add_argument("--resolutions", default="720p,1080p", help="comma-separated: 720p, 1080p")
    parser.add_argument(
        "--baseline-preset", default="ultrafast", help="x264 preset of the baseline; 'aiortc': aiortc's (none set)"
    )
    parser.add_argument(
        "--clients", default="RenderHub,baseline,Chromium", help="comma-separated: RenderHub (the CLI client on "
        "RenderHub), baseline (the CLI client on the one-process baseline), Chromium (the viewer's code on RenderHub)"
    )  # fmt: skip
    parser.add_argument("--limit", type=float, default=0, help="give up after this many seconds (0: from duration)")
    parser.add_argument("--serve-baseline", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        port, width, height, fps, model, preset = args.serve_baseline
        serve_baseline(int(port), int(width), int(height), int(fps), model, preset)
        return
    args.resolutions = [r.strip() for r in args.resolutions.split(",") if r.strip()]
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if unknown := [c for c in args.clients if c not in ("RenderHub", "baseline", "Chromium")]:
        parser.error(f"unknown client {unknown}; choose from RenderHub, baseline, Chromium")
    if "Chromium" in args.clients and (why := chromium_client.available()):
        print(f"Chromium left out: {why}")
        args.clients.remove("Chromium")
    if unknown := [r for r in args.resolutions if r not in RESOLUTIONS]:
        parser.error(f"unknown resolution {unknown}; choose from {', '.join(RESOLUTIONS)}")
    streams = len(args.clients) * len(args.resolutions)
    limit = args.limit or 90 + streams * (args.duration + args.warmup + 30) + 4 * args.idle

    stop_after(limit, OutOfTime)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="renderhub-stream-bench-") as tmp:
        run(args, Path(tmp))
    print(f"total {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
