"""Private-API patches of pinned aiortc, aioice and trimesh versions, in one place; tests/test_compat.py checks them."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import av
    from aiortc import RTCRtpReceiver, RTCRtpSender
    from aiortc.codecs.base import Encoder
    from aiortc.codecs.h264 import H264Encoder
    from aiortc.jitterbuffer import JitterBuffer

# The versions each patch was written against: pyproject.toml pins aiortc and trimesh; aioice comes with aiortc.
# Third-party modules are imported inside the patches, never here: the render worker reads trimesh's cache through
# this module and must not pay aiortc's import (about 0.2 s and 55 MB) for it.
WRITTEN_AGAINST = {"aiortc": "1.16.0", "aioice": "0.13.0", "trimesh": "5.2.0"}
RTP_TIMESTAMP_MODULUS = 1 << 32


# ------------------------------------------------------------------------------------------------ aiortc: sending


def use_h264_encoder(make: Callable[[], Encoder]) -> None:
    """Make this process's aiortc senders encode H.264 with `make()`; every other codec keeps aiortc's encoder.

    aiortc 1.16.0: RTCRtpSender picks its encoder through the name `get_encoder` in aiortc.rtcrtpsender (bound
    there at import) when it sends its first frame, and offers no other hook.
    """
    from aiortc import rtcrtpsender
    from aiortc.codecs import get_encoder

    def encoder_for(codec: Any) -> Encoder:
        return make() if codec.mimeType.lower() == "video/h264" else get_encoder(codec)

    setattr(rtcrtpsender, "get_encoder", encoder_for)  # noqa: B010  (a name aiortc does not export, for mypy)


def encode_h264(
    encoder: H264Encoder, codec: Any, frame: av.VideoFrame, force_keyframe: bool
) -> tuple[int, list[bytes]]:
    """Encode `frame` with `codec` as aiortc's H264Encoder does with its own: the encoded size and the NAL units.

    For an override of `_encode_frame`, which aiortc 1.16.0's `encode` calls (in an executor thread) and which opens
    libx264 with aiortc's settings whenever the target bitrate moves 10%. As aiortc's, it sets the picture type
    (NONE lets the codec choose), encodes, and splits the bitstream with the private `_split_bitstream`.
    """
    from av.video.frame import PictureType

    frame.pict_type = PictureType.I if force_keyframe else PictureType.NONE
    data = b"".join(bytes(packet) for packet in codec.encode(frame))
    return len(data), list(encoder._split_bitstream(data)) if data else []


def sender_encoder(sender: RTCRtpSender) -> Any | None:
    """The encoder `sender` encodes with now (aiortc's or ours); None before its first frame and after it stopped.

    aiortc 1.16.0 keeps it private (`RTCRtpSender.__encoder`); its target bitrate follows the receiver's REMB.
    """
    return getattr(sender, "_RTCRtpSender__encoder", None)


def last_sent_rtp_timestamp(sender: RTCRtpSender) -> int | None:
    """The RTP timestamp, as on the wire, of the last packet `sender` sent; None before its first.

    aiortc 1.16.0 puts `origin + pts` (pts in the 90 kHz video clock) on each frame's packets, the origin drawn at
    random inside RTCRtpSender._run_rtp and kept nowhere else; only the last packet's timestamp is kept (for RTCP
    sender reports). aiortc sends all of a frame's packets before it asks the track for the next frame, so read in
    the track's `recv` this is the previous frame's, and `(timestamp - pts) % 2**32` is the stream's origin: what a
    browser's requestVideoFrameCallback reports as `rtpTimestamp` is then known for every frame sent.
    """
    if not getattr(sender, "_RTCRtpSender__packet_count", 0):
        return None
    timestamp = getattr(sender, "_RTCRtpSender__rtp_timestamp", None)
    return timestamp if isinstance(timestamp, int) else None


# ---------------------------------------------------------------------------------------------- aiortc: receiving


@functools.cache
def _marker_jitter_buffer_class() -> type[JitterBuffer]:
    from aiortc.jitterbuffer import JitterBuffer, JitterFrame
    from aiortc.rtp import RtpPacket

    class MarkerJitterBuffer(JitterBuffer):
        """aiortc's video jitter buffer, but a frame is complete at its RTP marker bit, as in browsers.

        aiortc 1.16.0 only releases a frame once the first packet of the next one arrives, which adds a whole frame
        interval to every latency a client measures; a browser decodes at the marker. Reads the buffer's `_origin`
        and `_packets`, and the depayloaded `_data` the receiver puts on each packet.
        """

        frame_bytes = 0  # the encoded bytes of every frame released, which a client's bitrate counts

        def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
            frame = self._marked_frame(sequence_number)
            if frame is not None:
                self.frame_bytes += len(frame.data)
            return frame

        def _marked_frame(self, sequence_number: int) -> JitterFrame | None:
            frame = super()._remove_frame(sequence_number)
            if frame is not None or self._origin is None:
                return frame
            packets: list[RtpPacket] = []
            for count in range(self.capacity):
                packet = self._packets[(self._origin + count) % self.capacity]
                if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                    return None
                packets.append(packet)
                if packet.marker:
                    self.remove(count + 1)
                    return JitterFrame(data=b"".join(p._data for p in packets), timestamp=packet.timestamp)  # type: ignore[attr-defined]
            return None

    return MarkerJitterBuffer


def marker_jitter_buffer(capacity: int = 512) -> JitterBuffer:
    """A video jitter buffer that completes a frame at its RTP marker bit (aiortc's own waits for the next frame)."""
    return _marker_jitter_buffer_class()(capacity=capacity, is_video=True)


def use_marker_jitter_buffer(receiver: RTCRtpReceiver) -> bool:
    """Make a video receiver decode each frame at its marker bit; False where this aiortc has no buffer to swap.

    aiortc 1.16.0 creates the buffer in RTCRtpReceiver.__init__ (`__jitter_buffer`, capacity 512 for video) and
    offers no way to choose it; swap it before any packet arrives.
    """
    if not hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
        return False
    receiver._RTCRtpReceiver__jitter_buffer = marker_jitter_buffer()
    return True


def received_video_bytes(receiver: RTCRtpReceiver) -> int | None:
    """Encoded video bytes `receiver` has released to its decoder (with use_marker_jitter_buffer), else None."""
    buffer = getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None)
    count = getattr(buffer, "frame_bytes", None)
    return count if isinstance(count, int) else None


def received_rtp_timestamp(receiver: RTCRtpReceiver, frame: av.VideoFrame) -> int | None:
    """The RTP timestamp, as on the wire, of a video frame `receiver` decoded; None when it cannot tell.

    aiortc 1.16.0 gives decoded frames pts counted from the first frame's RTP timestamp (unwrapped past 2**32) by
    the receiver's private TimestampMapper; that mapper's `_origin` plus pts is the timestamp the sender put on it.
    """
    origin = getattr(getattr(receiver, "_RTCRtpReceiver__timestamp_mapper", None), "_origin", None)
    if not isinstance(origin, int) or frame.pts is None:
        return None
    return (origin + frame.pts) % RTP_TIMESTAMP_MODULUS


# ------------------------------------------------------------------------------------------------------ aioice


def enable_loopback_candidates() -> None:
    """Make aioice offer 127.0.0.1 as a host candidate too, so peers on this machine connect without a network.

    aioice 0.13.0 leaves loopback out of `aioice.ice.get_host_addresses`, which its Connection calls by that module
    name when gathering; a process-wide wrapper is the only hook it has. Harmless for remote peers: their checks
    against 127.0.0.1 hit themselves, fail ICE authentication and are dropped.
    """
    import aioice.ice

    current = aioice.ice.get_host_addresses
    if getattr(current, "renderhub_loopback", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = current(use_ipv4=use_ipv4, use_ipv6=use_ipv6)
        if use_ipv4 and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    get_host_addresses.renderhub_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


# ----------------------------------------------------------------------------------------------------- trimesh


def loaded_vertex_normals(mesh: Any) -> Any | None:
    """The vertex normals the model file gave a trimesh mesh, or None where it gave none.

    trimesh 5.2.0 keeps loaded normals only in the mesh's private cache (`_cache.cache`, a dict); its public
    `vertex_normals` computes normals where the file has none, which wants scipy (not shipped). Reading the dict
    directly gets exactly what the loader stored and computes nothing.
    """
    return mesh._cache.cache.get("vertex_normals")
