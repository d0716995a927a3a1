"""The video's sent bitrate, from the RTP sender's byte count, and the encoder's target, for the inspector."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpSender

from renderhub.render import compat

SAMPLE_INTERVAL = 0.5


class BitrateMeter:
    """Bits a second over the last `window` seconds, from samples of a running byte count."""

    def __init__(self, window: float = 2.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._monotonic = monotonic
        self._samples: deque[tuple[float, int]] = deque()

    def sample(self, total_bytes: int) -> None:
        now = self._monotonic()
        self._samples.append((now, total_bytes))
        # Keep one sample at or before the window's start, so the rate spans the whole window.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def kbps(self) -> float | None:
        """None until two samples span some time; 0 while nothing is sent (a still camera sends no frames)."""
        if len(self._samples) < 2:
            return None
        (start, first), (end, last) = self._samples[0], self._samples[-1]
        return round((last - first) * 8 / (end - start) / 1000, 1) if end > start else None


def encoder_of(sender: RTCRtpSender) -> tuple[str | None, int | None]:
    """The codec name (libx264, h264_nvenc, libvpx) and target bitrate (bit/s) of the sender's current encoder.

    The target follows the client's REMB feedback; None before the first frame.
    """
    encoder = compat.sender_encoder(sender)
    target = getattr(encoder, "target_bitrate", None)
    name = getattr(getattr(encoder, "codec", None), "name", None)
    return (str(name) if name else None), (int(target) if isinstance(target, int) else None)


class SenderFigures:
    """Samples an RTP sender's bytesSent (RTP payload, as its getStats reports) while the stream lives."""

    def __init__(self, sender: RTCRtpSender, window: float = 2.0) -> None:
        self.sender = sender
        self.meter = BitrateMeter(window)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def sample(self) -> None:
        """Take a sample now (the inspector does before it reports, so the last frames are in)."""
        with contextlib.suppress(Exception):  # a transport closing under us: the next sample will tell
            report = await self.sender.getStats()
            sent = [s.bytesSent for s in report.values() if getattr(s, "type", "") == "outbound-rtp"]
            if sent:
                self.meter.sample(int(sent[0]))

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL)

    def figures(self) -> dict[str, Any]:
        name, target = encoder_of(self.sender)
        return {
            "encoder": name,
            "bitrateKbps": self.meter.kbps(),
            "targetBitrateKbps": None if target is None else round(target / 1000),
        }
