"""WebRTC helpers shared by the render server and the connect client: ICE servers and codecs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aiortc import RTCConfiguration, RTCIceServer, RTCRtpSender
from aiortc import sdp as aiortc_sdp

CODEC_ORDER = ("video/H264", "video/VP8")  # browsers decode H.264 in hardware; VP8 when a client lacks it
IceServer = RTCIceServer | Mapping[str, Any]


def ice_configuration(ice_servers: Sequence[IceServer]) -> RTCConfiguration:
    """STUN/TURN servers as {"urls": ..., "username": ..., "credential": ...} dicts (the browser's shape)."""
    servers = []
    for server in ice_servers:
        if isinstance(server, RTCIceServer):
            servers.append(server)
        else:
            servers.append(RTCIceServer(server["urls"], server.get("username"), server.get("credential")))
    return RTCConfiguration(iceServers=servers)


def host_addresses() -> list[str]:
    """The addresses this process's ICE agent offers as host candidates: aioice's own list, which has 127.0.0.1
    once compat.enable_loopback_candidates ran (aioice leaves out ::1 and scoped IPv6 link-local addresses)."""
    import aioice.ice

    return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)


def negotiated_codec(sdp_text: str) -> str:
    """The video codec an SDP answer settled on ("H264", "VP8"), or "" when it has no video."""
    for media in aiortc_sdp.SessionDescription.parse(sdp_text).media:
        if media.kind == "video" and media.rtp.codecs:
            return media.rtp.codecs[0].mimeType.split("/", 1)[1]
    return ""


def preferred_video_codecs() -> list[Any]:
    """aiortc's video codecs in our order of preference, retransmission (RTX) kept."""
    codecs = RTCRtpSender.getCapabilities("video").codecs
    ordered = [c for mime in CODEC_ORDER for c in codecs if c.mimeType == mime]
    return ordered + [c for c in codecs if c.mimeType == "video/rtx"]
