"""aiortc's H.264 encoder with our settings: NVENC where the GPU has one, else x264 with a preset.

aiortc sets no x264 preset, and x264's default ("medium") costs about three times the CPU of "ultrafast" per frame
(measured here at 720p: 13.4 ms against 3.8 ms). NVENC takes the encoding off the CPU altogether.
"""

from __future__ import annotations

import fractions
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import av
import numpy as np
from aiortc.codecs.h264 import DEFAULT_BITRATE, MAX_FRAME_RATE, H264Encoder

from renderhub.render import compat

log = logging.getLogger(__name__)
DEFAULT_PRESET = "ultrafast"
X264 = "libx264"
NVENC = "h264_nvenc"
PREFERENCE = (NVENC, X264)  # the GPU's encoder first: it leaves the CPU cores to the render server
PROBE_SIZE = (256, 144)  # above NVENC's minimum frame size


def configure(codec: Any, name: str, preset: str = DEFAULT_PRESET) -> None:
    """Low-latency settings browsers decode: Baseline profile, no B-frames, nothing held back between frames."""
    codec.pix_fmt = "yuv420p"
    codec.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
    codec.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
    if name == NVENC:
        # p1 + ull: NVENC's fastest preset, ultra-low-latency tuning; delay 0 returns each frame's packet at once
        # (the default queues frames, and ours come only when the camera moves); forced-idr makes PLI key frames IDR.
        codec.options = {"preset": "p1", "tune": "ull", "zerolatency": "1", "delay": "0", "rc": "cbr",
                         "bf": "0", "profile": "baseline", "forced-idr": "1"}  # fmt: skip
    else:
        # As aiortc opens libx264 (level 3.1, zero latency, Baseline), plus the preset.
        codec.options = {"level": "31", "tune": "zerolatency", "preset": preset}
        codec.profile = "Baseline"


def open_h264(name: str, width: int, height: int, bit_rate: int, preset: str = DEFAULT_PRESET) -> Any:
    """A configured H.264 encoder context of `name` (it opens at its first frame)."""
    codec: Any = av.CodecContext.create(name, "w")
    codec.width, codec.height, codec.bit_rate = width, height, bit_rate
    configure(codec, name, preset)
    return codec


def probe(name: str) -> str | None:
    """None when encoder `name` opens and encodes a frame here; else why not (NVENC: no NVIDIA GPU or driver)."""
    try:
        codec = open_h264(name, *PROBE_SIZE, DEFAULT_BITRATE)
        codec.open()
        frame = av.VideoFrame.from_ndarray(np.zeros((PROBE_SIZE[1], PROBE_SIZE[0], 3), np.uint8), format="rgb24")
        codec.encode(frame.reformat(format="yuv420p"))
    except Exception as exc:  # PyAV raises its own error classes, OSErrors among them, for a missing device
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def choose_h264_encoder(works: Mapping[str, bool]) -> str | None:
    """The first encoder in order of preference that works, from probe results; None when none does."""
    return next((name for name in PREFERENCE if works.get(name)), None)


class PresetH264Encoder(H264Encoder):
    """Opens `encoder` (libx264 or h264_nvenc) with our settings where aiortc would open libx264 with its own."""

    preset = DEFAULT_PRESET
    encoder = X264

    def _encode_frame(self, frame: av.VideoFrame, force_keyframe: bool) -> Iterator[bytes]:
        # aiortc's encode calls this private method, where it would open libx264 with its own settings: open ours
        # first (compat.install_h264_codec holds the details), and the parent finds it current.
        compat.install_h264_codec(self, frame, self._open)
        return super()._encode_frame(frame, force_keyframe)

    def _open(self, width: int, height: int) -> Any:
        codec = open_h264(self.encoder, width, height, self.target_bitrate, self.preset)
        if self.encoder == X264:
            return codec
        try:
            codec.open()  # now, not at the first encode: NVENC can fail later than the probe (its sessions run out)
        except Exception as exc:
            log.warning("%s would not open (%s); this stream encodes with %s", self.encoder, exc, X264)
            self.encoder = X264
            return open_h264(X264, width, height, self.target_bitrate, self.preset)
        return codec


def use_h264_preset(preset: str = DEFAULT_PRESET, encoder: str = X264) -> None:
    """Make this process's aiortc senders encode H.264 with `encoder` (and x264's `preset`); VP8 stays aiortc's."""
    PresetH264Encoder.preset = preset
    PresetH264Encoder.encoder = encoder
    compat.use_h264_encoder(PresetH264Encoder)
