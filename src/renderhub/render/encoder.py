"""aiortc's H.264 encoder with our settings: NVENC where the GPU has one, else x264 with a preset.

aiortc sets no x264 preset, and x264's default ("medium") costs about three times the CPU of "ultrafast" per frame
(measured here at 720p: 13.4 ms against 3.8 ms). NVENC takes the encoding off the CPU altogether.

Rate control is constant quality capped by the bitrate (x264's CRF with a VBV maximum rate): a moving camera gets
what the bitrate allows, and the still camera's frame, encoded as a key frame with a full buffer, gets the constant
quality (offline on the sample model at 720p: 56 dB luma PSNR in 36 kB, where the moving frames at 300 kbit/s read 38
dB). aiortc reopens its encoder whenever the client's estimate moves 10%; here the bitrate policy decides, and the
encoder reopens only when the policy's target changes or the camera stops (PyAV cannot change x264's maximum rate
on an open encoder, and x264 ignores a new average rate in this mode).
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
from renderhub.render.bitrate_policy import BitratePolicy, start_bitrate

log = logging.getLogger(__name__)
DEFAULT_PRESET = "ultrafast"
X264 = "libx264"
NVENC = "h264_nvenc"
PREFERENCE = (NVENC, X264)  # the GPU's encoder first: it leaves the CPU cores to the render server
PROBE_SIZE = (256, 144)  # above NVENC's minimum frame size
QUALITY = 20  # x264's CRF (NVENC's CQ): the quality a frame gets when the bitrate leaves room, as a still frame does
BURST_SECONDS = 0.5  # the VBV buffer: how far one frame (a still camera's key frame) may run over the rate
MIN_BURST_BITS = 1_000_000  # at low rates, still room for a sharp still frame (125 kB: 0.5 s at 2 Mbit/s)
STILL = "still"  # a video frame's `opaque` when it is the full-detail frame of a still camera


def configure(codec: Any, name: str, preset: str = DEFAULT_PRESET) -> None:
    """Low-latency settings browsers decode: Baseline profile, no B-frames, nothing held back between frames.

    The rate: constant quality under a maximum of the codec's bit_rate, with a burst buffer (see the module).
    """
    codec.pix_fmt = "yuv420p"
    codec.framerate = fractions.Fraction(MAX_FRAME_RATE, 1)
    codec.time_base = fractions.Fraction(1, MAX_FRAME_RATE)
    rate = {"maxrate": str(codec.bit_rate), "bufsize": str(max(int(codec.bit_rate * BURST_SECONDS), MIN_BURST_BITS))}
    if name == NVENC:
        # p1 + ull: NVENC's fastest preset, ultra-low-latency tuning; delay 0 returns each frame's packet at once
        # (the default queues frames, and ours come only when the camera moves); forced-idr makes PLI key frames IDR.
        codec.options = {"preset": "p1", "tune": "ull", "zerolatency": "1", "delay": "0", "rc": "vbr",
                         "cq": str(QUALITY), "bf": "0", "profile": "baseline", "forced-idr": "1", **rate}  # fmt: skip
    else:
        # As aiortc opens libx264 (level 3.1, zero latency, Baseline), plus the preset and the rate control.
        codec.options = {"level": "31", "tune": "zerolatency", "preset": preset, "crf": str(QUALITY), **rate}
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
    """Encodes with `encoder` (libx264 or h264_nvenc) and our settings where aiortc would open libx264 with its own.

    The target bitrate is the policy's (bitrate_policy.py): aiortc sets `target_bitrate` from each REMB, which here
    is an estimate the policy weighs. The codec is reopened (a key frame) at a new size, a new target, and for the
    still camera's frame, which thereby becomes a key frame of full quality.
    """

    preset = DEFAULT_PRESET
    encoder = X264

    def __init__(self) -> None:
        super().__init__()
        self.policy: BitratePolicy | None = None  # made at the first frame, whose size sets the start
        self.codec_bitrate = 0  # the maximum rate the open codec runs at
        self.opened = 0  # codecs opened, for the inspector and tests

    @property
    def target_bitrate(self) -> int:
        return self.policy.target if self.policy is not None else self.codec_bitrate

    @target_bitrate.setter
    def target_bitrate(self, bitrate: int) -> None:
        if self.policy is not None:  # an estimate before the first frame has nothing to weigh against
            self.policy.estimate(bitrate)

    def _encode_frame(self, frame: av.VideoFrame, force_keyframe: bool) -> Iterator[bytes]:
        # aiortc's encode calls this private method (compat.encode_h264 holds the details).
        if self.policy is None:
            self.policy = BitratePolicy(start_bitrate(frame.width, frame.height))
        if (reason := self._reopen_reason(frame)) is not None:
            if self.codec is not None:  # each reopen is a key frame: the inspector's log says why
                log.info("encoder reopened (a key frame): %s", reason)
            self.codec_bitrate = self.policy.target
            self.codec = self._open(frame.width, frame.height)
            self.opened += 1
        size, units = compat.encode_h264(self, self.codec, frame, force_keyframe)
        self.policy.frame_encoded(size)
        return iter(units)

    def _reopen_reason(self, frame: av.VideoFrame) -> str | None:
        """Why the codec must be (re)opened for this frame, or None."""
        assert self.policy is not None
        codec, target = self.codec, self.policy.target
        if codec is None or (frame.width, frame.height) != (codec.width, codec.height):
            return f"{frame.width}x{frame.height} frames"
        if target != self.codec_bitrate:
            return f"bitrate {self.codec_bitrate // 1000} -> {target // 1000} kbit/s"
        return "the still camera's frame" if frame.opaque == STILL else None

    def _open(self, width: int, height: int) -> Any:
        codec = open_h264(self.encoder, width, height, self.codec_bitrate, self.preset)
        if self.encoder == X264:
            return codec
        try:
            codec.open()  # now, not at the first encode: NVENC can fail later than the probe (its sessions run out)
        except Exception as exc:
            log.warning("%s would not open (%s); this stream encodes with %s", self.encoder, exc, X264)
            self.encoder = X264
            return open_h264(X264, width, height, self.codec_bitrate, self.preset)
        return codec


def use_h264_preset(preset: str = DEFAULT_PRESET, encoder: str = X264) -> None:
    """Make this process's aiortc senders encode H.264 with `encoder` (and x264's `preset`); VP8 stays aiortc's."""
    PresetH264Encoder.preset = preset
    PresetH264Encoder.encoder = encoder
    compat.use_h264_encoder(PresetH264Encoder)
