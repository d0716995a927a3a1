"""aiortc's H.264 encoder with an x264 preset: aiortc sets none, and x264's default ("medium") costs about three
times the CPU of "ultrafast" per frame (measured here at 720p: 13.4 ms against 3.8 ms)."""

from __future__ import annotations

import fractions
from collections.abc import Iterator
from typing import Any

import av
from aiortc import rtcrtpsender
from aiortc.codecs import get_encoder
from aiortc.codecs.h264 import MAX_FRAME_RATE, H264Encoder

DEFAULT_PRESET = "ultrafast"


class PresetH264Encoder(H264Encoder):
    """Opens libx264 exactly as aiortc does (Baseline, level 3.1, zero latency, its bitrate) plus a preset."""

    preset = DEFAULT_PRESET

    def _encode_frame(self, frame: av.VideoFrame, force_keyframe: bool) -> Iterator[bytes]:
        codec = self.codec
        rate = codec.bit_rate if codec is not None else None
        if (
            codec is None or not rate or frame.width != codec.width or frame.height != codec.height
            or abs(self.target_bitrate - rate) / rate > 0.1
        ):  # fmt: skip
            # aiortc would open a new codec here; open it ourselves, and the parent finds it current.
            self.buffer_data, self.buffer_pts = b"", None
            codec = av.CodecContext.create("libx264", "w")
            codec.width, codec.height, codec.pix_fmt = frame.width, frame.height, "yuv420p"
            codec.bit_rate = self.target_bitrate
            codec.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
            codec.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
            codec.options = {"level": "31", "tune": "zerolatency", "preset": self.preset}
            codec.profile = "Baseline"
            self.codec = codec
        return super()._encode_frame(frame, force_keyframe)


def use_h264_preset(preset: str = DEFAULT_PRESET) -> None:
    """Make this process's aiortc senders encode H.264 with `preset` (VP8 and the rest stay aiortc's)."""
    PresetH264Encoder.preset = preset

    def encoder_for(codec: Any) -> Any:
        return PresetH264Encoder() if codec.mimeType.lower() == "video/h264" else get_encoder(codec)

    # aiortc picks encoders through this module-level name and offers no other hook.
    rtcrtpsender.get_encoder = encoder_for
