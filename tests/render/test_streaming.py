"""End to end on loopback: the connect client <-> ClientStream with the real worker, renderer and sample model."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from renderhub.connect import ConnectError, LatencyMeter, RenderClient, run_client
from renderhub.render import protocol
from renderhub.render.camera import frame_bounds, orbit_pose
from renderhub.render.peer import ClientStream, OfferError
from renderhub.render.protocol import LoadModelMessage
from renderhub.render.sample import write_sample
from renderhub.render.scene import ModelError
from renderhub.render.stream_options import StreamOptions

# Render workers or servers run as real processes here.
pytestmark = pytest.mark.integration

TOKEN = "test-token"

SIZE = (640, 360)  # small frames keep the suite quick on two cores; the pipeline is the same


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    broken = folder / "broken.glb"
    broken.write_bytes(b"glTF\x02\x00\x00\x00" + bytes(100))  # a GLB 2.0 header, then nothing valid
    stuck = folder / "stuck.glb"
    os.mkfifo(stuck)  # no writer ever comes: the worker's read blocks in the kernel, deaf to everything but a kill
    return {"sample": write_sample(folder), "broken": broken, "stuck": stuck}


@dataclass
class Harness:
    url: str
    streams: list[ClientStream] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, accept: object) -> None:
    """A one-request HTTP/1.1 responder: enough for the client's POST of its offer."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    status, payload = await accept(headers.get("authorization", ""), json.loads(body))  # type: ignore[operator]
    data = json.dumps(payload).encode()
    writer.write(
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        f"Connection: close\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    writer.close()


@asynccontextmanager
async def render_server(models: dict[str, Path], **options: Any) -> AsyncIterator[Harness]:
    harness = Harness("")

    def resolve(message: LoadModelMessage, progress: object) -> Path:
        if message.name not in models:
            raise ModelError("ModelNotFound", f"no model named {message.name!r}")
        return models[message.name]

    async def accept(authorization: str, body: dict[str, object]) -> tuple[int, object]:
        if authorization != f"Bearer {TOKEN}":
            return 401, {"error": {"code": "Unauthorized", "message": "bad token"}}
        stream = await ClientStream.accept(
            str(body["sdp"]),
            str(body["type"]),
            StreamOptions(model_resolver=resolve, session_id="s-test", on_closed=harness.closed.set, **options),
            width=int(body["width"]),  # type: ignore[call-overload]
            height=int(body["height"]),  # type: ignore[call-overload]
            fps=int(body["fps"]),  # type: ignore[call-overload]
        )
        harness.streams.append(stream)
        return 200, {"sdp": stream.answer_sdp, "type": stream.answer_type}

    server = await asyncio.start_server(lambda r, w: _handle(r, w, accept), "127.0.0.1", 0)
    harness.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/offer"
    try:
        yield harness
    finally:
        for stream in harness.streams:
            await stream.close()
        server.close()
        await server.wait_closed()


async def connected(harness: Harness) -> RenderClient:
    client = RenderClient()
    hello = await client.connect(harness.url, TOKEN, width=SIZE[0], height=SIZE[1], fps=30)
    assert hello["width"] == SIZE[0] and hello["height"] == SIZE[1] and hello["codec"] == "H264"
    assert hello["sessionId"] == "s-test" and hello["renderer"]
    return client


async def frame_for(client: RenderClient, pose_id: int) -> np.ndarray:
    """The first decoded frame that shows `pose_id` (or later), as RGB."""
    frame = await client.frame_showing(pose_id)
    assert client.pose_shown(frame) == pose_id, "a later pose than any sent"
    return frame.to_ndarray(format="rgb24")


async def sent_bitrate(stream: ClientStream, encoder: str) -> None:
    """The stream's figures name the encoder aiortc runs and what it sent over the last seconds."""
    assert stream.sent is not None
    await stream.sent.sample()
    stats = stream.stats()
    assert stats["encoder"] == encoder
    assert stats["recent"]["bitrateKbps"] > 0 and stats["recent"]["targetBitrateKbps"] > 0


async def test_stream_shows_each_pose_and_names_its_frames_by_rtp_timestamp(models: dict[str, Path]) -> None:
    async with render_server(models) as harness:
        client = await connected(harness)
        loaded = await client.load_model("sample")
        assert loaded["triangles"] > 90_000 and loaded["drawCalls"] >= 1
        assert client.codec == "H264" and harness.streams[0].codec == "H264"
        sent, seen, pictures = [], [], {}
        for step in range(24):
            pose = orbit_pose([0, 1, 0], 9.0, yaw=step * 15.0, pitch=20.0)
            sent.append(client.send_pose(pose.position, pose.orientation, pose.fov))
            picture = await frame_for(client, sent[-1])
            seen.append(sent[-1])
            if step in (0, 6):
                pictures[step] = picture
        assert seen == sent == sorted(set(sent))
        assert pictures[0].shape == (SIZE[1], SIZE[0], 3)
        # A quarter turn around the model: most of the picture must differ.
        changed = np.abs(pictures[0][:300].astype(int) - pictures[6][:300].astype(int)).max(axis=2) > 24
        assert changed.mean() > 0.05
        reports = [r["poseId"] for r in client.frame_reports]
        assert reports and reports == sorted(reports) and set(reports) <= set(sent)
        assert all(r["renderMs"] > 0 and "encodeMs" in r for r in client.frame_reports)
        # Each frame message names its video frame by RTP timestamp (frame_for found every pose by it), 32 bits.
        stamps = [r["rtpTimestamp"] for r in client.frame_reports]
        assert len(set(stamps)) == len(stamps) and all(0 <= t < 2**32 for t in stamps)
        await sent_bitrate(harness.streams[0], "libx264")
        await client.close()


async def test_bad_messages_get_errors_and_frames_keep_flowing(models: dict[str, Path]) -> None:
    async with render_server(models) as harness:
        client = await connected(harness)
        bad = {
            "{not json": protocol.BAD_MESSAGE,
            '{"type":"teleport"}': protocol.UNKNOWN_TYPE,
            '{"type":"pose","id":1,"position":[0,NaN,0],"orientation":[0,0,0,1],"fov":60}': protocol.BAD_MESSAGE,
            '{"type":"pose","id":1,"position":[0,1e999,0],"orientation":[0,0,0,1],"fov":60}': protocol.INVALID_POSE,
            json.dumps({"type": "ping", "t": 1, "pad": "x" * 70_000}): protocol.MESSAGE_TOO_LARGE,
        }
        for text, code in bad.items():
            client.send(text)
            reply = await client.expect("error")
            assert reply["code"] == code, text[:60]
            pose = orbit_pose([0, 0, 0], 5.0, yaw=len(text) % 90, pitch=10.0)
            await frame_for(client, client.send_pose(pose.position, pose.orientation, pose.fov))
        client.channel.send(b"binary")
        assert (await client.expect("error"))["code"] == protocol.BAD_MESSAGE
        client.send(protocol.load_model(name="sample", ref="m1"))
        client.send(protocol.load_model(name="sample", ref="m2"))
        busy = await client.expect("error", "modelLoaded")
        assert busy["type"] == "error" and busy["code"] == protocol.BUSY and busy["ref"] == "m2"
        await client.expect("modelLoaded")
        client.send('{"type":"ping","t":42.5}')
        assert (await client.expect("pong"))["t"] == 42.5
        assert harness.streams[0].stats()["errorsSent"] == len(bad) + 2
        await client.close()


async def test_pointer_presses_are_answered_with_picks(models: dict[str, Path]) -> None:
    async with render_server(models) as harness:
        client = await connected(harness)
        loaded = await client.load_model("sample")
        low, high = np.array(loaded["bounds"]["min"]), np.array(loaded["bounds"]["max"])
        pose = frame_bounds(np.array([low, high]))
        shown = client.send_pose(pose.position, pose.orientation, pose.fov)
        await frame_for(client, shown)
        client.send(protocol.pointer(0.5, 0.5, "move"))  # only presses are picked
        client.send(protocol.pointer(0.5, 0.5, "down", buttons=1, ref="centre"))
        hit = await client.expect("pick")
        assert hit["ref"] == "centre" and hit["poseId"] == shown and hit["hit"] is True
        position = np.array(hit["position"])
        assert (position >= low - 1e-3).all() and (position <= high + 1e-3).all()
        forward = np.asarray(pose.forward)  # the centre's ray is the camera's forward axis
        offset = position - np.asarray(pose.position)
        assert np.linalg.norm(offset - (offset @ forward) * forward) < 0.02 and offset @ forward > 0
        assert hit["distance"] == pytest.approx(float(np.linalg.norm(offset)), abs=1e-4)
        client.send(protocol.pointer(0.0, 0.0, "down", ref="corner"))
        assert (await client.expect("pick")) == {"type": "pick", "x": 0, "y": 0, "poseId": shown, "hit": False,
                                                 "ref": "corner"}  # fmt: skip
        for garbled in ('{"type":"pointer","x":1.5,"y":0.5,"kind":"down","ref":"g"}',
                        '{"type":"pointer","x":"left","y":0.5,"kind":"down","ref":"g"}',
                        '{"type":"pointer","x":0.5,"y":-0.1,"kind":"down","ref":"g"}',
                        '{"type":"pointer","x":0.5,"y":NaN,"kind":"down"}'):  # fmt: skip
            client.send(garbled)
            error = await client.expect("error", "pick")
            assert error["type"] == "error" and error["code"] == protocol.BAD_MESSAGE, garbled
        # A flood of presses while the camera moves: frames keep coming, the last press is answered.
        for step in range(1, 6):
            moved = orbit_pose([0, 1, 0], 9.0, yaw=30 + step * 5, pitch=20)
            shown = client.send_pose(moved.position, moved.orientation, moved.fov)
            for i in range(40):
                client.send(protocol.pointer(0.5, 0.5, "down", ref=f"f{step}.{i}"))
            await frame_for(client, shown)
        last = await client.expect("pick")
        while last["ref"] != "f5.39":
            last = await client.expect("pick")
        assert last["poseId"] in (shown - 1, shown)
        assert harness.streams[0].stats()["picks"] < 2 + 5 * 40
        await client.close()


async def test_failed_model_load_leaves_the_stream_usable(models: dict[str, Path]) -> None:
    async with render_server(models) as harness:
        client = await connected(harness)
        # The error names the model as the client asked for it, never the server's local copy.
        with pytest.raises(ConnectError, match=r"InvalidModel: broken: (?!.*model\.glb)"):
            await client.load_model("broken")
        with pytest.raises(ConnectError, match="ModelNotFound"):
            await client.load_model("missing")
        pose = orbit_pose([0, 1, 0], 9.0, yaw=30, pitch=20)
        empty = await frame_for(client, client.send_pose(pose.position, pose.orientation, pose.fov))
        loaded = await client.load_model("sample")
        assert loaded["bounds"]["max"][1] > loaded["bounds"]["min"][1]
        # The model appears without a new pose: the worker re-renders the last one.
        frame = await client.frame_showing(client.poses_sent - 1)
        assert np.abs(frame.to_ndarray(format="rgb24")[:300].astype(int) - empty[:300]).max() > 60
        await client.close()


async def test_a_load_stuck_in_the_worker_times_out_and_a_new_worker_takes_over(models: dict[str, Path]) -> None:
    async with render_server(models, load_timeout=3.0) as harness:
        client = await connected(harness)
        pose = orbit_pose([0, 1, 0], 9.0, yaw=30, pitch=20)
        await frame_for(client, client.send_pose(pose.position, pose.orientation, pose.fov))
        stream = harness.streams[0]
        stuck_pid = stream.worker.pid
        assert stuck_pid is not None
        client.send(protocol.load_model(name="stuck", ref="m1"))

        async def keep_moving() -> None:  # poses while the worker is replaced are held for the new one, not refused
            for step in range(1000):
                moved = orbit_pose([0, 1, 0], 9.0, yaw=30 + step, pitch=20)
                client.send_pose(moved.position, moved.orientation, moved.fov)
                await asyncio.sleep(0.1)

        mover = asyncio.create_task(keep_moving())
        try:
            error = await client.expect("error", "modelLoaded", timeout=30)
        finally:
            mover.cancel()
        assert error["type"] == "error" and error["code"] == protocol.LOAD_TIMEOUT and error["ref"] == "m1"
        assert "restarted" in error["message"]
        assert stream.worker.pid != stuck_pid and stream.stats()["workerRestarts"] == 1
        assert stuck_pid not in [p.pid for p in multiprocessing.active_children()]
        # The same stream goes on with the new worker: the next pose renders, the next load works.
        empty = await frame_for(client, client.send_pose(pose.position, pose.orientation, pose.fov))
        assert empty[:300].std() < 5, "the restarted worker starts with an empty scene"
        assert (await client.load_model("sample"))["triangles"] > 90_000
        shown = await frame_for(client, client.send_pose(pose.position, pose.orientation, pose.fov))
        assert shown[:300].std() > 20
        assert stream.stats()["framesSent"] > 2 and stream.codec == "H264"
        await client.close()


async def test_client_leaving_closes_the_stream_and_its_worker(models: dict[str, Path]) -> None:
    async with render_server(models) as harness:
        client = await connected(harness)
        pose = orbit_pose([0, 0, 0], 5.0, yaw=0, pitch=0)
        await frame_for(client, client.send_pose(pose.position, pose.orientation, pose.fov))
        stream = harness.streams[0]
        worker_pid = stream.worker.pid
        assert worker_pid in [p.pid for p in multiprocessing.active_children()]
        await client.close()
        await asyncio.wait_for(harness.closed.wait(), 15)
        assert stream.closed.is_set() and not stream.worker.alive
        assert worker_pid not in [p.pid for p in multiprocessing.active_children()]
        assert not Path(f"/proc/{worker_pid}").exists() or "Z" in Path(f"/proc/{worker_pid}/stat").read_text()
        assert not list(Path("/dev/shm").glob(stream.worker._shm.name.lstrip("/")))


async def test_run_client_reports_figures_and_saves_the_last_frame(models: dict[str, Path], tmp_path: Path) -> None:
    async with render_server(models) as harness:
        out = tmp_path / "last.png"
        figures = await run_client(
            harness.url, TOKEN, model="sample", frames=20, width=SIZE[0], height=SIZE[1], fps=30, out=out, warmup_s=0.3
        )
        assert figures["codec"] == "H264" and figures["frames"] == 20
        assert (figures["width"], figures["height"]) == SIZE
        assert figures["fps"] > 0 and figures["pose_to_frame_ms_p50"] > 0
        assert figures["pose_to_frame_ms_p95"] >= figures["pose_to_frame_ms_p50"]
        with Image.open(out) as saved:
            assert saved.size == SIZE
        with pytest.raises(ConnectError, match="401"):
            await run_client(harness.url, "wrong", frames=1, width=SIZE[0], height=SIZE[1])


async def test_vp8_when_the_client_has_no_h264(models: dict[str, Path]) -> None:
    async with render_server(models) as harness:
        client = RenderClient(video_codecs=["video/VP8"])
        hello = await client.connect(harness.url, TOKEN, width=SIZE[0], height=SIZE[1], fps=30)
        assert hello["codec"] == client.codec == "VP8"
        for step in range(3):
            pose = orbit_pose([0, 0, 0], 5.0, yaw=step * 20.0, pitch=0)
            await frame_for(client, client.send_pose(pose.position, pose.orientation, pose.fov))
        await sent_bitrate(harness.streams[0], "libvpx")
        await client.close()


async def test_offers_that_cannot_be_answered() -> None:
    with pytest.raises(OfferError):
        await ClientStream.accept("v=0", "answer", StreamOptions(), width=640, height=360, fps=30)
    audio_only = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
    with pytest.raises(OfferError, match="no video"):
        await ClientStream.accept(audio_only, "offer", StreamOptions(), width=640, height=360, fps=30)
    video_only = audio_only.replace("m=audio 9 UDP/TLS/RTP/SAVPF 0", "m=video 9 UDP/TLS/RTP/SAVPF 96")
    with pytest.raises(OfferError, match="no data channel"):
        await ClientStream.accept(video_only, "offer", StreamOptions(), width=640, height=360, fps=30)
    assert not multiprocessing.active_children()


def test_latency_meter_counts_coalesced_poses_until_a_later_frame() -> None:
    meter = LatencyMeter()
    meter.measuring = True
    for pose_id, at in ((0, 0.0), (1, 0.010), (2, 0.020)):
        meter.pose_sent(pose_id, at)
    assert meter.frame_decoded(0, 0.050)
    assert not meter.frame_decoded(0, 0.055)  # the same pose again is not a new frame
    assert not meter.frame_decoded(None, 0.06)
    assert meter.frame_decoded(2, 0.100)  # pose 1 was coalesced into 2: it waited for this frame
    assert [round(v) for v in meter.latencies_ms] == [50, 90, 80]
    figures = meter.figures()
    assert figures["frames"] == 2 and figures["fps"] == 20.0 and figures["pose_to_frame_ms_p50"] == 80.0


def test_no_worker_outlives_the_tests() -> None:
    assert not multiprocessing.active_children(), os.getpid()
