"""The stream's H.264 encoder: NVENC where it opens, else aiortc's libx264 with x264's ultrafast preset."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.codecs.h264 import h264_depayload

from renderhub.picture_quality import luma_psnr
from renderhub.render.bitrate_policy import MIN_BITRATE, BitratePolicy
from renderhub.render.camera import bounding_sphere, orbit_pose
from renderhub.render.encoder import NVENC, STILL, X264, PresetH264Encoder, choose_h264_encoder, open_h264, probe
from renderhub.render.renderer import Renderer
from renderhub.render.sample import write_sample
from renderhub.render.scene import load_scene


def frame(i: int) -> av.VideoFrame:
    video = av.VideoFrame.from_ndarray(np.full((360, 640, 3), 40 * i, np.uint8), format="rgb24")
    video.pts, video.time_base = i * 3000, fractions.Fraction(1, 90_000)
    return video


def test_the_stream_is_encoded_with_the_ultrafast_preset() -> None:
    encoder = PresetH264Encoder()
    first = b"".join(encoder._encode_frame(frame(0), True))  # NAL units, before RTP packetization
    # x264 writes its settings into the stream: ultrafast is subme=0 (x264's default, medium, is subme=7).
    assert b"x264" in first and b"subme=0" in first
    assert encoder.codec is not None and encoder.codec.name == X264
    payloads, _timestamp = encoder.encode(frame(1))  # aiortc's own path on from there: RTP payloads
    assert payloads and all(len(p) <= 1300 for p in payloads)


def test_nvenc_is_chosen_when_it_works_and_x264_otherwise() -> None:
    assert choose_h264_encoder({NVENC: True, X264: True}) == NVENC
    assert choose_h264_encoder({NVENC: False, X264: True}) == X264
    assert choose_h264_encoder({X264: True}) == X264
    assert choose_h264_encoder({NVENC: True, X264: False}) == NVENC
    assert choose_h264_encoder({NVENC: False, X264: False}) is None
    assert choose_h264_encoder({}) is None


def test_the_probe_opens_and_encodes_for_real() -> None:
    assert probe(X264) is None
    assert probe("no_such_encoder") is not None
    if not Path("/dev/nvidia0").exists():  # no NVIDIA device: NVENC cannot open, and the probe says why
        failure = probe(NVENC)
        assert failure is not None and len(failure) <= 200


def test_a_stream_falls_back_to_x264_when_nvenc_will_not_open() -> None:
    if probe(NVENC) is None:
        pytest.skip("NVENC opens on this machine")
    encoder = PresetH264Encoder()
    encoder.encoder = NVENC  # as if the probe had found it at start, and it was gone by the first frame
    payloads, _timestamp = encoder.encode(frame(0), force_keyframe=True)
    assert payloads and encoder.codec is not None and encoder.codec.name == X264 and encoder.encoder == X264


def test_nvenc_is_configured_for_low_latency_baseline() -> None:
    codec = open_h264(NVENC, 1280, 720, 1_000_000)  # configured only: opening it needs an NVIDIA GPU
    options = codec.options
    assert (options["preset"], options["tune"], options["delay"], options["bf"]) == ("p1", "ull", "0", "0")
    assert options["profile"] == "baseline" and options["zerolatency"] == "1"
    assert (codec.width, codec.height, codec.bit_rate, codec.pix_fmt) == (1280, 720, 1_000_000, "yuv420p")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def orbit_frames(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    """The sample model, 1.3 s of a 40 degrees a second orbit at 30 fps, 640x360."""
    scene = load_scene(write_sample(tmp_path_factory.mktemp("sample")), max_primitives=None, max_bytes=1 << 28)
    centre, radius = bounding_sphere(scene.bounds)
    with Renderer(640, 360) as renderer:
        renderer.upload(scene)
        return [
            renderer.render(orbit_pose(centre.tolist(), radius * 2.1, 30 + i * 40 / 30, 20)).copy() for i in range(40)
        ]


def sent(
    encoder: PresetH264Encoder, decoder: av.CodecContext, image: np.ndarray, number: int, *, still: bool = False
) -> tuple[bool, float]:
    """Encode `image` as the stream's frame `number` through aiortc's encode; whether it is a key frame, its PSNR."""
    video = av.VideoFrame.from_ndarray(image, format="rgb24")
    video.pts, video.time_base = number * 3000, fractions.Fraction(1, 90_000)
    video.opaque = STILL if still else None
    payloads, _ = encoder.encode(video)
    data = b"".join(h264_depayload(p) for p in payloads)
    decoded = decoder.decode(av.Packet(data))
    psnr = luma_psnr(decoded[-1], image)
    assert psnr is not None
    return b"\x00\x00\x00\x01\x65" in data or b"\x00\x00\x01\x65" in data, psnr  # an IDR slice


def test_a_wandering_estimate_keeps_the_encoder_and_a_still_camera_gets_a_sharp_key_frame(
    orbit_frames: list[np.ndarray],
) -> None:
    clock = Clock()
    encoder, decoder = PresetH264Encoder(), av.CodecContext.create("h264", "r")
    encoder.policy = BitratePolicy(MIN_BITRATE, clock)  # a client on a slow link: moving frames get little
    moving = []
    for number, image in enumerate(orbit_frames[:-1]):
        clock.now += 1 / 30
        if number % 5 == 4:  # REMB every 1/6 s, wandering 25% either way about 1.5x the rate (aiortc's threshold: 10%)
            encoder.target_bitrate = int(MIN_BITRATE * 1.5 * (1.25 if number % 10 else 0.75))
        key, psnr = sent(encoder, decoder, image, number)
        assert key == (number == 0)
        moving.append(psnr)
    assert encoder.opened == 1 and encoder.target_bitrate == MIN_BITRATE
    clock.now += 0.15
    key, still = sent(encoder, decoder, orbit_frames[-1], len(orbit_frames), still=True)
    assert key and encoder.opened == 2
    assert still >= 45 and still > float(np.median(moving)) + 5
