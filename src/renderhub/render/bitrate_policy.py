"""The video's bitrate: a start from the stream's size, lowered on the client's congestion, raised slowly.

The client's REMB (receiver estimated maximum bitrate) is the only feedback aiortc reads. A browser's estimate is
capped near 1.5x the rate it receives, so it reads tens of kbit/s after a still camera sent nothing for a while:
an estimate says "congested" only when it falls below what the stream actually sends. Changes are rare and large
on purpose: each one reopens the encoder, which costs a key frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

MIN_BITRATE = 300_000
MAX_BITRATE = 8_000_000
BITS_PER_PIXEL = 0.05  # the start, per pixel and frame at 30 fps: 720p 1.4 Mbit/s, 1080p 3.1
CONGESTED = 0.7  # an estimate under this share of the rate sent lowers the target (to the estimate)
ROOM = 1.3  # an estimate over this multiple of the target, held for RAISE_AFTER seconds, raises it ...
LIMITED = 0.85  # ... while the encoder sends at least this share of it (constant quality under the cap often sends
# less: raising a cap the picture does not reach would cost a key frame for nothing)
RAISE_AFTER = 4.0
LOWER_AFTER = 2.0  # seconds between two lowerings: the sent rate must show the last one first
SENT_WINDOW = 1.0  # seconds of encoded output the sent rate is measured over (for congestion; RAISE_AFTER for room,
# so that the key frame of the last change, a large one, does not make the next look needed)


REFERENCE_FPS = 30  # the start does not grow with the frame rate: frames closer in time differ less


def start_bitrate(width: int, height: int) -> int:
    """The bitrate a stream of this size starts at, before the client says anything."""
    return clamp(round(width * height * REFERENCE_FPS * BITS_PER_PIXEL))


def clamp(bitrate: float) -> int:
    return int(max(MIN_BITRATE, min(bitrate, MAX_BITRATE)))


class BitratePolicy:
    """The encoder's target bitrate: down to the client's estimate when it means congestion, up once it held room."""

    def __init__(self, target: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.target = clamp(target)
        self._monotonic = monotonic
        self._sent: deque[tuple[float, int]] = deque()  # (when, bytes) of each encoded frame in the window
        self._lock = threading.Lock()  # aiortc encodes in a thread; estimates come on the event loop
        self._room_since: float | None = None
        self._lowered_at = -LOWER_AFTER

    def frame_encoded(self, size: int) -> None:
        with self._lock:
            self._sent.append((self._monotonic(), size))

    def sent_bitrate(self, window: float = SENT_WINDOW) -> float:
        """Bits a second the encoder put out over the last `window` seconds (at most RAISE_AFTER)."""
        now = self._monotonic()
        with self._lock:
            while self._sent and self._sent[0][0] < now - RAISE_AFTER:
                self._sent.popleft()
            return sum(size for when, size in self._sent if when >= now - window) * 8 / window

    def estimate(self, bitrate: int) -> None:
        """The client's REMB: lower the target when it is under what is sent, raise it once it held room.

        Each change reopens the encoder: a lowering waits LOWER_AFTER seconds after the last, a raise RAISE_AFTER.
        """
        now = self._monotonic()
        if bitrate < self.sent_bitrate() * CONGESTED:
            self._room_since = None
            if bitrate < self.target and now - self._lowered_at >= LOWER_AFTER:
                log.info("client estimate %d kbit/s under 70%% of the %d sent: congestion", bitrate // 1000,
                         self.sent_bitrate() // 1000)  # fmt: skip
                self.target, self._lowered_at = clamp(bitrate), now
        elif bitrate > self.target * ROOM and self.sent_bitrate(RAISE_AFTER) >= self.target * LIMITED:
            if self._room_since is None:
                self._room_since = now
            elif now - self._room_since >= RAISE_AFTER:
                self.target = clamp(self.target * ROOM)
                self._room_since = now
        else:
            self._room_since = None
