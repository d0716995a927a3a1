"""The data-channel protocol: JSON text messages between a render server and its client, parsed and built purely."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from renderhub.render.camera import Hit, Pose
from renderhub.render.errors import RenderError

MAX_MESSAGE_BYTES = 64 * 1024
MAX_POSE_ID = (1 << 24) - 1
MAX_REF_CHARS = 128
MAX_KEY_CHARS = 32
MAX_URL_CHARS = 2048
MAX_NAME_CHARS = 256
BLOB_FIELDS = ("storageAccountName", "blobContainerName", "assetPath")  # ARR's three-field form, as it named them
POINTER_KINDS = frozenset({"down", "up", "move", "wheel", "cancel"})
CHANNEL_LABEL = "renderhub"

# Error codes the server sends; model errors carry the codes of the scene loader as well.
BAD_MESSAGE = "BadMessage"
MESSAGE_TOO_LARGE = "MessageTooLarge"
UNKNOWN_TYPE = "UnknownType"
INVALID_POSE = "InvalidPose"
BUSY = "Busy"
LOAD_TIMEOUT = "LoadTimeout"
INTERNAL = "InternalError"


class ProtocolError(RenderError, ValueError):
    """A client message the server cannot accept; becomes an "error" message, never a dropped connection."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message, code=code)
        self.ref = ref

    def to_message(self) -> str:
        return error(self.code, self.message, self.ref)


@dataclass(frozen=True)
class PoseMessage:
    id: int
    pose: Pose
    ref: str | None = None


@dataclass(frozen=True)
class LoadModelMessage:
    url: str | None
    name: str | None
    ref: str | None = None
    # ARR's LoadModelOptions.CreateForBlobStorage: (storageAccountName, blobContainerName, assetPath)
    blob: tuple[str, str, str] | None = None

    @property
    def label(self) -> str:
        """The model as its user named it, for messages: a URL without its query (a SAS stays out of them)."""
        if self.url is not None:
            return public_url(self.url)
        if self.blob is not None:
            return "/".join(self.blob)
        return self.name or ""


def public_url(url: str) -> str:
    """A URL without query, fragment or user info: what a message may show of it."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:300]


@dataclass(frozen=True)
class PointerMessage:
    x: float
    y: float
    buttons: int
    kind: str
    ref: str | None = None


@dataclass(frozen=True)
class KeyMessage:
    key: str
    down: bool
    ref: str | None = None


@dataclass(frozen=True)
class PingMessage:
    t: float
    ref: str | None = None


ClientMessage = PoseMessage | LoadModelMessage | PointerMessage | KeyMessage | PingMessage


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _number(obj: dict[str, Any], field: str, ref: str | None, code: str = BAD_MESSAGE) -> float:
    value = obj.get(field)
    # bool is an int in Python; true/false are not numbers on the wire.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError(code, f'"{field}" must be a number', ref)
    if not math.isfinite(value):
        raise ProtocolError(code, f'"{field}" must be finite', ref)
    return float(value)


def _string(obj: dict[str, Any], field: str, limit: int, ref: str | None) -> str:
    value = obj.get(field)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ProtocolError(BAD_MESSAGE, f'"{field}" must be a non-empty string of at most {limit} characters', ref)
    return value


def _parse_pose(obj: dict[str, Any], ref: str | None) -> PoseMessage:
    pose_id = obj.get("id")
    if isinstance(pose_id, bool) or not isinstance(pose_id, int) or not 0 <= pose_id <= MAX_POSE_ID:
        raise ProtocolError(INVALID_POSE, f'"id" must be an integer from 0 to {MAX_POSE_ID}', ref)
    try:
        pose = Pose.from_json({k: obj[k] for k in ("position", "orientation", "fov") if k in obj})
    except ValueError as exc:
        raise ProtocolError(INVALID_POSE, str(exc), ref) from None
    return PoseMessage(pose_id, pose, ref)


def _parse_load_model(obj: dict[str, Any], ref: str | None) -> LoadModelMessage:
    blob_fields = [field for field in BLOB_FIELDS if field in obj]
    forms = ("url" in obj) + ("name" in obj) + bool(blob_fields)
    if forms != 1 or blob_fields not in ([], list(BLOB_FIELDS)):
        raise ProtocolError(
            BAD_MESSAGE, 'loadModel takes exactly one of "url", "name", or all of ' + ", ".join(BLOB_FIELDS), ref
        )
    if "url" in obj:
        return LoadModelMessage(_string(obj, "url", MAX_URL_CHARS, ref), None, ref)
    if "name" in obj:
        return LoadModelMessage(None, _string(obj, "name", MAX_NAME_CHARS, ref), ref)
    account, container, path = (_string(obj, field, MAX_NAME_CHARS, ref) for field in BLOB_FIELDS)
    return LoadModelMessage(None, None, ref, (account, container, path))


def _parse_pointer(obj: dict[str, Any], ref: str | None) -> PointerMessage:
    x, y = _number(obj, "x", ref), _number(obj, "y", ref)
    if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
        raise ProtocolError(BAD_MESSAGE, '"x" and "y" are fractions of the frame, from 0 to 1', ref)
    buttons = obj.get("buttons", 0)
    if isinstance(buttons, bool) or not isinstance(buttons, int) or not 0 <= buttons < 256:
        raise ProtocolError(BAD_MESSAGE, '"buttons" must be a bit mask from 0 to 255', ref)
    kind = obj.get("kind")
    if kind not in POINTER_KINDS:
        raise ProtocolError(BAD_MESSAGE, f'"kind" must be one of {", ".join(sorted(POINTER_KINDS))}', ref)
    return PointerMessage(x, y, buttons, kind, ref)


def _parse_key(obj: dict[str, Any], ref: str | None) -> KeyMessage:
    key = _string(obj, "key", MAX_KEY_CHARS, ref)
    down = obj.get("down")
    if not isinstance(down, bool):
        raise ProtocolError(BAD_MESSAGE, '"down" must be true or false', ref)
    return KeyMessage(key, down, ref)


_PARSERS: dict[str, Callable[[dict[str, Any], str | None], ClientMessage]] = {
    "pose": _parse_pose,
    "loadModel": _parse_load_model,
    "pointer": _parse_pointer,
    "key": _parse_key,
    "ping": lambda obj, ref: PingMessage(_number(obj, "t", ref), ref),
}


def parse_client_message(data: str | bytes) -> ClientMessage:
    """Parse one data-channel message from the client; every failure is a ProtocolError."""
    if isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(BAD_MESSAGE, "messages are JSON text; binary messages are not accepted")
    if len(data) > MAX_MESSAGE_BYTES or len(data.encode("utf-8", "surrogatepass")) > MAX_MESSAGE_BYTES:
        raise ProtocolError(MESSAGE_TOO_LARGE, f"a message may be at most {MAX_MESSAGE_BYTES} bytes")
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, NaN/Infinity literals and integers too long to convert.
        raise ProtocolError(BAD_MESSAGE, f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_MESSAGE, 'a message must be a JSON object with a "type"')
    ref = obj.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_CHARS):
        raise ProtocolError(BAD_MESSAGE, f'"ref" must be a string of at most {MAX_REF_CHARS} characters')
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(BAD_MESSAGE, 'a message must have a string "type"', ref)
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ProtocolError(UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}", ref)
    return parser(obj, ref)


def _dump(obj: dict[str, Any]) -> str:
    # allow_nan=False: a NaN that slipped in must fail here rather than reach a client as invalid JSON.
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _ms(value: float) -> float:
    return round(float(value), 2)


def hello(
    session_id: str,
    width: int,
    height: int,
    fps: int,
    codec: str,
    renderer: str,
    model: dict[str, Any] | None = None,
    pose: Pose | None = None,
) -> str:
    """The channel opened; `model` (as modelLoaded gave it) and `pose` are a kept scene's, from a client before."""
    camera = None if pose is None else {"position": list(pose.position), "orientation": list(pose.orientation),
                                        "fov": pose.fov}  # fmt: skip
    return _dump(
        {
            "type": "hello",
            "sessionId": session_id,
            "width": width,
            "height": height,
            "fps": fps,
            "codec": codec,
            "renderer": renderer,
            "model": model,
            "pose": camera,
        }
    )


def progress(stage: str, fraction: float) -> str:
    return _dump({"type": "progress", "stage": stage, "fraction": round(min(max(fraction, 0.0), 1.0), 3)})


def model_loaded(
    triangles: int,
    draw_calls: int,
    load_ms: float,
    bounds: tuple[list[float], list[float]] | None,
    points: int = 0,
    levels: list[int] | None = None,
) -> str:
    body: dict[str, Any] = {"type": "modelLoaded", "triangles": triangles, "points": points, "drawCalls": draw_calls}
    body["levels"] = levels or [triangles]
    body["loadMs"] = _ms(load_ms)
    body["bounds"] = {"min": list(bounds[0]), "max": list(bounds[1])} if bounds else None
    return _dump(body)


def error(code: str, message: str, ref: str | None = None) -> str:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if ref is not None:
        body["ref"] = ref
    return _dump(body)


def frame(
    pose_id: int,
    frame_number: int,
    render_ms: float,
    encode_ms: float | None = None,
    level: int = 0,
    still: bool = False,
    rtp_timestamp: int | None = None,
) -> str:
    body: dict[str, Any] = {"type": "frame", "poseId": pose_id, "frameNumber": frame_number}
    body["level"], body["still"] = level, still
    if rtp_timestamp is not None:  # the video frame's, as on the wire: how a client ties what it shows to a pose
        body["rtpTimestamp"] = rtp_timestamp
    body["renderMs"] = _ms(render_ms)
    if encode_ms is not None:
        body["encodeMs"] = _ms(encode_ms)
    return _dump(body)


def pong(t: float) -> str:
    return _dump({"type": "pong", "t": t})


def pick(x: float, y: float, pose_id: int | None, hit: Hit | None, ref: str | None = None) -> str:
    """The answer to a pointer "down": what the frame of `pose_id` shows at (x, y); position and distance in metres."""
    body: dict[str, Any] = {"type": "pick", "x": x, "y": y, "poseId": pose_id, "hit": hit is not None}
    if hit is not None:
        # Micrometres: finer than a 24-bit depth buffer resolves, and it keeps the message short.
        body["position"] = [round(c, 6) for c in hit.position]
        body["distance"] = round(hit.distance, 6)
    if ref is not None:
        body["ref"] = ref
    return _dump(body)


def pointer(x: float, y: float, kind: str, *, buttons: int = 0, ref: str | None = None) -> str:
    """Client side: a pointer event at (x, y), fractions of the frame from its top-left."""
    body: dict[str, Any] = {"type": "pointer", "x": x, "y": y, "buttons": buttons, "kind": kind}
    if ref is not None:
        body["ref"] = ref
    return _dump(body)


def pose(
    pose_id: int, position: list[float] | tuple[float, ...], orientation: list[float] | tuple[float, ...], fov: float
) -> str:
    """Client side: a camera pose message."""
    return _dump(
        {"type": "pose", "id": pose_id, "position": list(position), "orientation": list(orientation), "fov": fov}
    )


def ping(t: float) -> str:
    """Client side: answered by a pong with the same `t`; it also tells the server this client is alive."""
    return _dump({"type": "ping", "t": t})


def load_model(
    *, url: str | None = None, name: str | None = None, blob: tuple[str, str, str] | None = None, ref: str | None = None
) -> str:
    """Client side: ask the server to load a model by URL, by name, or by (storage account, container, path)."""
    body: dict[str, Any] = {"type": "loadModel"}
    if url is not None:
        body["url"] = url
    if name is not None:
        body["name"] = name
    if blob is not None:
        body.update(zip(BLOB_FIELDS, blob, strict=True))
    if ref is not None:
        body["ref"] = ref
    return _dump(body)


def parse_server_message(data: str | bytes) -> dict[str, Any]:
    """Client side: decode a server message into a dict with a "type"; raises ValueError on garbage."""
    obj = json.loads(data)
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
        raise ValueError("server message without a type")
    return obj
