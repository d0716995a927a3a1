"""Canaries for renderhub.render.compat: each private-API patch exercised once, at the pinned library versions."""

from __future__ import annotations

import asyncio
import base64
import fractions
import json
import time
import tomllib
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aioice
import aioice.ice
import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender, rtcrtpsender
from aiortc.codecs import Vp8Encoder
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtp import RtpPacket

from renderhub.render import compat
from renderhub.render.bitrate import encoder_of
from renderhub.render.encoder import X264, PresetH264Encoder, use_h264_preset
from renderhub.render.rtc import ice_configuration, preferred_video_codecs
from renderhub.render.scene import load_scene

PYPROJECT = Path(__file__).parents[1] / "pyproject.toml"
VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)
TIMEOUT = 20.0


def broken(package: str, what: str) -> str:
    """The failure message: which patch, and the versions to compare."""
    return (
        f"{what}. renderhub/render/compat.py was written against {package} {compat.WRITTEN_AGAINST[package]} and "
        f"{version(package)} is installed: read that patch against the new version's source and fix or drop it."
    )


def test_the_patches_were_written_against_the_pinned_versions() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = dict(d.split("==", 1) for d in dependencies if d.split("==", 1)[0] in compat.WRITTEN_AGAINST)
    assert set(pins) == set(compat.WRITTEN_AGAINST)  # every patched package is pinned, aiortc's aioice too
    for package, pinned in pins.items():
        assert pinned == compat.WRITTEN_AGAINST[package] == version(package), broken(
            package, f"pyproject.toml pins {package} {pinned}"
        )


# ------------------------------------------------------------------------------------------------ aiortc: sending


def video_frame(pts: int, size: tuple[int, int] = (256, 144), shade: int = 60) -> av.VideoFrame:
    width, height = size
    frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), shade, np.uint8), format="rgb24")
    frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
    return frame


def test_h264_senders_get_our_encoder_and_other_codecs_aiortcs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rtcrtpsender, "get_encoder", rtcrtpsender.get_encoder)  # restored afterwards
    use_h264_preset()
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90_000, payloadType=102)
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90_000, payloadType=96)
    what = "aiortc's RTCRtpSender no longer picks its encoder through aiortc.rtcrtpsender.get_encoder"
    assert isinstance(rtcrtpsender.get_encoder(h264), PresetH264Encoder), broken("aiortc", what)
    assert isinstance(rtcrtpsender.get_encoder(vp8), Vp8Encoder)


def test_our_codec_replaces_the_one_aiortc_would_open() -> None:
    encoder = PresetH264Encoder()
    what = "aiortc's H264Encoder no longer keeps the codec installed before its _encode_frame"
    # Through aiortc's public encode: x264 writes its settings into the stream, and ultrafast is subme=0.
    payloads, _ = encoder.encode(video_frame(0), force_keyframe=True)
    first = encoder.codec
    assert first is not None and b"subme=0" in b"".join(payloads), broken("aiortc", what)
    encoder.encode(video_frame(3000))
    assert encoder.codec is first, broken("aiortc", "aiortc's H264Encoder replaced a codec that was current")
    # A new target bitrate: aiortc would open its own libx264 (x264's medium preset) on a 10% move; we reopen ours.
    assert encoder.policy is not None
    encoder.policy.target = first.bit_rate * 2
    payloads, _ = encoder.encode(video_frame(6000))
    second = encoder.codec
    assert second is not first and second.bit_rate == encoder.target_bitrate
    assert b"subme=0" in b"".join(payloads), broken("aiortc", what + " after a bitrate change")


class QueuedFrames(MediaStreamTrack):
    """A video track that sends exactly the frames the test puts in, when it puts them."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[av.VideoFrame] = asyncio.Queue()

    async def recv(self) -> av.VideoFrame:
        return await self.queue.get()


class Stream:
    """An aiortc sender and receiver on this machine, connected as the render server and connect client are."""

    def __init__(self, sender: RTCRtpSender, receiver: RTCRtpReceiver, frames: QueuedFrames) -> None:
        self.sender, self.receiver, self.frames = sender, receiver, frames
        self.remote: MediaStreamTrack | None = None

    async def send(self, pts: int) -> av.VideoFrame:
        """Send one frame and return it decoded; nothing is sent after it."""
        await self.frames.queue.put(video_frame(pts, shade=60 + pts % 100))
        assert self.remote is not None
        decoded = await asyncio.wait_for(self.remote.recv(), TIMEOUT)
        assert isinstance(decoded, av.VideoFrame)
        return decoded

    async def last_sent_rtp_timestamp(self, expected: int) -> int | None:
        """The sender's last RTP timestamp once it is `expected` (it is set just after the packet left), or as is."""
        deadline = time.monotonic() + 2.0
        while (sent := compat.last_sent_rtp_timestamp(self.sender)) != expected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return sent


@pytest.fixture
async def stream(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stream]:
    monkeypatch.setattr(rtcrtpsender, "get_encoder", rtcrtpsender.get_encoder)
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    use_h264_preset()
    compat.enable_loopback_candidates()
    client, server = RTCPeerConnection(ice_configuration([])), RTCPeerConnection(ice_configuration([]))
    try:
        transceiver = client.addTransceiver("video", direction="recvonly")
        swapped = compat.use_marker_jitter_buffer(transceiver.receiver)
        assert swapped, broken("aiortc", "RTCRtpReceiver has no private __jitter_buffer to swap")
        remote: asyncio.Future[MediaStreamTrack] = asyncio.get_running_loop().create_future()
        client.on("track", remote.set_result)
        frames = QueuedFrames()
        sender = server.addTrack(frames)
        next(t for t in server.getTransceivers() if t.sender is sender).setCodecPreferences(preferred_video_codecs())
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        await client.setRemoteDescription(server.localDescription)
        running = Stream(sender, transceiver.receiver, frames)
        running.remote = await asyncio.wait_for(remote, TIMEOUT)
        yield running
    finally:
        await client.close()
        await server.close()


async def test_a_stream_encodes_with_ours_and_decodes_at_the_marker_bit_with_rtp_timestamps(stream: Stream) -> None:
    # One frame and nothing after it: aiortc's own jitter buffer would hold it until the next frame's first packet.
    try:
        first = await stream.send(3000)
    except TimeoutError:
        pytest.fail(broken("aiortc", "a lone frame never decoded: the marker-bit jitter buffer no longer works"))

    encoder = compat.sender_encoder(stream.sender)
    what = "RTCRtpSender's private __encoder is not the one get_encoder gave it"
    assert isinstance(encoder, PresetH264Encoder), broken("aiortc", what)
    assert encoder_of(stream.sender) == (X264, encoder.target_bitrate)

    # The sender's on-wire timestamp is a fixed random origin plus pts, and the receiver reads the same one.
    received = compat.received_rtp_timestamp(stream.receiver, first)
    assert received is not None, broken("aiortc", "RTCRtpReceiver no longer keeps its TimestampMapper's origin")
    sent = await stream.last_sent_rtp_timestamp(received)
    assert sent is not None, broken("aiortc", "RTCRtpSender no longer keeps its last RTP timestamp")
    assert sent == received, broken("aiortc", f"a decoded frame's RTP timestamp reads {received}, {sent} was sent")
    origin = (sent - 3000) % compat.RTP_TIMESTAMP_MODULUS

    second = await stream.send(6000)
    expected = (origin + 6000) % compat.RTP_TIMESTAMP_MODULUS
    sent = await stream.last_sent_rtp_timestamp(expected)
    assert sent == expected, broken("aiortc", "the sender's RTP timestamps are no longer origin + pts")
    assert compat.received_rtp_timestamp(stream.receiver, second) == expected, broken(
        "aiortc", "the receiver's decoded frames no longer carry pts from the first frame's RTP timestamp"
    )
    # The bytes of both frames, as encoded (the first a key frame of a 256x144 picture: hundreds of bytes).
    received_bytes = compat.received_video_bytes(stream.receiver)
    assert received_bytes is not None and received_bytes > 200, broken("aiortc", "no count of the bytes received")


# ---------------------------------------------------------------------------------------------- aiortc: receiving


def rtp(sequence_number: int, timestamp: int, marker: bool, data: bytes) -> RtpPacket:
    packet = RtpPacket(payload_type=102, marker=int(marker), sequence_number=sequence_number, timestamp=timestamp)
    packet._data = data  # type: ignore[attr-defined]  # the depayloaded bytes, as RTCRtpReceiver sets them
    return packet


def test_the_marker_jitter_buffer_completes_a_frame_at_its_marker_bit() -> None:
    ours, aiortcs = compat.marker_jitter_buffer(), JitterBuffer(capacity=512, is_video=True)
    frame = [rtp(7, 9000, False, b"ab"), rtp(8, 9000, True, b"cd")]
    assert [ours.add(p)[1] for p in frame[:1]] == [None]
    _, complete = ours.add(frame[1])
    what = "MarkerJitterBuffer did not complete a frame at its marker bit"
    assert complete is not None and (complete.data, complete.timestamp) == (b"abcd", 9000), broken("aiortc", what)
    # Why the patch exists: aiortc's own buffer waits for the next frame's first packet.
    assert [aiortcs.add(p)[1] for p in frame] == [None, None], broken(
        "aiortc", "aiortc's jitter buffer now completes frames at the marker bit itself: the patch can go"
    )
    # The next frame goes on from there, packets out of order included.
    assert ours.add(rtp(10, 12000, True, b"gh"))[1] is None
    _, complete = ours.add(rtp(9, 12000, False, b"ef"))
    assert complete is not None and (complete.data, complete.timestamp) == (b"efgh", 12000)


# ------------------------------------------------------------------------------------------------------ aioice


async def test_loopback_is_gathered_as_a_host_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    compat.enable_loopback_candidates()
    compat.enable_loopback_candidates()  # idempotent: wrapped once
    connection = aioice.Connection(ice_controlling=True, components=1)
    try:
        await connection.gather_candidates()
        hosts = [c.host for c in connection.local_candidates]
    finally:
        await connection.close()
    what = f"aioice's Connection gathered {hosts}: it no longer asks aioice.ice.get_host_addresses"
    assert hosts.count("127.0.0.1") == 1, broken("aioice", what)


# ----------------------------------------------------------------------------------------------------- trimesh


def triangle(path: Path, normals: list[float] | None) -> Path:
    """One triangle in the z = 0 plane, with the given normal at each vertex or none."""
    data = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32).tobytes()
    attributes = {"POSITION": 0}
    accessors: list[dict[str, Any]] = [{"bufferView": 0, "componentType": 5126, "count": 3, "type": "VEC3"}]
    views = [{"buffer": 0, "byteLength": 36}]
    if normals is not None:
        data += np.array([normals] * 3, np.float32).tobytes()
        attributes["NORMAL"] = 1
        accessors.append({"bufferView": 1, "componentType": 5126, "count": 3, "type": "VEC3"})
        views.append({"buffer": 0, "byteOffset": 36, "byteLength": 36})
    uri = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
    header = {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": attributes}]}], "accessors": accessors, "bufferViews": views,
        "buffers": [{"byteLength": len(data), "uri": uri}],
    }  # fmt: skip
    path.write_text(json.dumps(header))
    return path


def test_trimesh_gives_the_files_normals_and_computes_none(tmp_path: Path) -> None:
    import trimesh

    tilted = [0.0, 0.6, 0.8]  # not the face's normal (+z): only the file can have said so
    given = trimesh.load(triangle(tmp_path / "given.gltf", tilted), force="scene")
    (mesh,) = given.geometry.values()
    normals = compat.loaded_vertex_normals(mesh)
    assert normals is not None, broken("trimesh", "the normals a glTF file gave are no longer in the mesh's _cache")
    np.testing.assert_allclose(normals, [tilted] * 3, atol=1e-6)
    (bare,) = trimesh.load(triangle(tmp_path / "bare.gltf", None), force="scene").geometry.values()
    assert compat.loaded_vertex_normals(bare) is None, broken("trimesh", "trimesh now fills in normals at load")

    # What the scene code makes of them: the file's normals where given, its own face normals where not.
    for name, expected in (("given", tilted), ("bare", [0.0, 0.0, 1.0])):
        (batch,) = load_scene(tmp_path / f"{name}.gltf", max_primitives=None, max_bytes=1 << 20).batches
        np.testing.assert_allclose(batch.normals, [expected] * 3, atol=1e-6)
