"""The stream's H.264 encoder: NVENC where it opens, else aiortc's libx264 with x264's ultrafast preset."""

from __future__ import annotations

import fractions
from pathlib import Path

import av
import numpy as np
import pytest

from renderhub.render.encoder import NVENC, X264, PresetH264Encoder, choose_h264_encoder, open_h264, probe


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
