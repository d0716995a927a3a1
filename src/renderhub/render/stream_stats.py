"""The stream's recent figures for the inspector: frame rate, render and encode times, pose-to-send latency."""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import Any


class StreamStats:
    """Figures over the last `window` seconds. Pose-to-send runs from a pose's arrival to the moment its frame
    left the encoder: the server's share of pose-to-frame latency (the network and the client's decode add to it)."""

    def __init__(self, window: float = 5.0, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._monotonic = monotonic
        self._arrived: dict[int, float] = {}
        self._frames: deque[tuple[float, float, float, float | None]] = deque()  # (at, render, send, pose-to-send)

    def pose_received(self, pose_id: int) -> None:
        self._arrived[pose_id] = self._monotonic()
        if len(self._arrived) > 1000:  # poses coalesced away are never sent: forget the oldest
            for old in sorted(self._arrived)[:500]:
                del self._arrived[old]

    def frame_sent(self, pose_id: int, render_ms: float, send_ms: float) -> None:
        now = self._monotonic()
        arrived = self._arrived.pop(pose_id, None)
        for older in [p for p in self._arrived if p < pose_id]:
            del self._arrived[older]
        latency = (now - arrived) * 1000 if arrived is not None else None
        self._frames.append((now, render_ms, send_ms, latency))
        while self._frames and self._frames[0][0] < now - self.window:
            self._frames.popleft()

    def figures(self) -> dict[str, Any]:
        now = self._monotonic()
        recent = [f for f in self._frames if f[0] >= now - self.window]
        latencies = sorted(f[3] for f in recent if f[3] is not None)

        def median(values: list[float]) -> float | None:
            return round(statistics.median(values), 1) if values else None

        return {
            "fps": round(len(recent) / self.window, 1),
            "renderMsP50": median([f[1] for f in recent]),
            "encodeMsP50": median([f[2] for f in recent]),
            "poseToSendMsP50": median(latencies),
            "poseToSendMsP95": round(latencies[int(0.95 * (len(latencies) - 1))], 1) if latencies else None,
        }
