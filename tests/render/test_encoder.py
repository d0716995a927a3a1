"""The stream's H.264 encoder: aiortc's, opened with x264's ultrafast preset."""

from __future__ import annotations

import fractions

import av
import numpy as np

from renderhub.render.encoder import PresetH264Encoder


def frame(i: int) -> av.VideoFrame:
    video = av.VideoFrame.from_ndarray(np.full((360, 640, 3), 40 * i, np.uint8), format="rgb24")
    video.pts, video.time_base = i * 3000, fractions.Fraction(1, 90_000)
    return video


def test_the_stream_is_encoded_with_the_ultrafast_preset() -> None:
    encoder = PresetH264Encoder()
    first = b"".join(encoder._encode_frame(frame(0), True))  # NAL units, before RTP packetization
    # x264 writes its settings into the stream: ultrafast is subme=0 (x264's default, medium, is subme=7).
    assert b"x264" in first and b"subme=0" in first
    payloads, _timestamp = encoder.encode(frame(1))  # aiortc's own path on from there: RTP payloads
    assert payloads and all(len(p) <= 1300 for p in payloads)
