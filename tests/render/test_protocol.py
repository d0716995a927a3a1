"""The data-channel protocol: every bad message becomes a clear ProtocolError, every built message is valid JSON."""

from __future__ import annotations

import json
import math

import pytest

from renderhub.render import protocol
from renderhub.render.camera import Pose
from renderhub.render.protocol import (
    KeyMessage,
    LoadModelMessage,
    PingMessage,
    PointerMessage,
    PoseMessage,
    ProtocolError,
    parse_client_message,
)

POSE = {"type": "pose", "id": 7, "position": [0, 1.5, 4], "orientation": [0, 0, 0, 1], "fov": 60}


def expect(code: str, message: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(message)
    assert caught.value.code == code
    reply = json.loads(caught.value.to_message())
    assert reply["type"] == "error" and reply["code"] == code and reply["message"]
    return caught.value


def test_parses_each_client_message() -> None:
    pose = parse_client_message(json.dumps(POSE))
    assert pose == PoseMessage(7, Pose((0.0, 1.5, 4.0), (0.0, 0.0, 0.0, 1.0), 60.0))
    assert parse_client_message('{"type":"loadModel","url":"https://x/a.glb","ref":"m1"}') == LoadModelMessage(
        "https://x/a.glb", None, "m1"
    )
    assert parse_client_message('{"type":"loadModel","name":"engine"}') == LoadModelMessage(None, "engine")
    arr = json.dumps({"type": "loadModel", "storageAccountName": "acct.blob.core.windows.net",
                      "blobContainerName": "c", "assetPath": "a/m.arrAsset"})  # fmt: skip
    assert parse_client_message(arr) == LoadModelMessage(
        None, None, None, ("acct.blob.core.windows.net", "c", "a/m.arrAsset")
    )
    assert parse_client_message('{"type":"pointer","x":0.5,"y":1,"buttons":1,"kind":"down"}') == PointerMessage(
        0.5, 1.0, 1, "down"
    )
    assert parse_client_message('{"type":"key","key":"w","down":true}') == KeyMessage("w", True)
    assert parse_client_message('{"type":"ping","t":12.5}') == PingMessage(12.5)


def test_client_builders_round_trip() -> None:
    text = protocol.pose(5, [1, 2, 3], [0, 0, 0, 1], 45)
    assert parse_client_message(text) == PoseMessage(5, Pose((1.0, 2.0, 3.0), (0.0, 0.0, 0.0, 1.0), 45.0))
    assert parse_client_message(protocol.load_model(name="x", ref="r")) == LoadModelMessage(None, "x", "r")


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "not json",
        "",
        "[1, 2]",
        '"pose"',
        "null",
        '{"id": 3}',
        '{"type": 3}',
        "[" * 100_00 + "]" * 100_00,
        '{"type":"ping","t":' + "9" * 5000 + "}",
        '{"type":"ping","t":1,"ref":5}',
    ],
)
def test_garbled_messages_are_bad_messages(text: str) -> None:
    expect(protocol.BAD_MESSAGE, text)


def test_size_type_and_binary_limits() -> None:
    expect(protocol.MESSAGE_TOO_LARGE, json.dumps({"type": "ping", "t": 1, "pad": "x" * 70_000}))
    expect(protocol.MESSAGE_TOO_LARGE, json.dumps({"type": "ping", "pad": "\u00e9" * 40_000}, ensure_ascii=False))
    error = expect(protocol.UNKNOWN_TYPE, '{"type":"teleport","ref":"abc"}')
    assert error.ref == "abc" and json.loads(error.to_message())["ref"] == "abc"
    expect(protocol.BAD_MESSAGE, b'{"type":"ping","t":1}')


@pytest.mark.parametrize(
    "change",
    [
        {"position": [0, "NaN", 1]},
        {"position": [0, 1]},
        {"position": [0, 1, True]},
        {"orientation": [0, 0, 0, 0]},
        {"orientation": [0, 0, 0, 3]},
        {"position": [1e300, 0, 0]},
        {"orientation": [0, 0, 1]},
        {"fov": 0},
        {"fov": 200},
        {"fov": "wide"},
        {"id": -1},
        {"id": 1 << 24},
        {"id": 1.5},
        {"id": True},
        {"id": None},
    ],
)
def test_invalid_poses(change: dict[str, object]) -> None:
    expect(protocol.INVALID_POSE, json.dumps({**POSE, **change}))


def test_nan_and_infinity_literals_are_refused() -> None:
    for literal in ("NaN", "Infinity", "-Infinity", "1e999"):
        text = json.dumps(POSE).replace('"fov": 60', f'"fov": {literal}')
        with pytest.raises(ProtocolError):
            parse_client_message(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"type":"loadModel"}',
        '{"type":"loadModel","url":"a","name":"b"}',
        '{"type":"loadModel","storageAccountName":"a","blobContainerName":"c"}',
        '{"type":"loadModel","name":"b","storageAccountName":"a","blobContainerName":"c","assetPath":"p"}',
        '{"type":"loadModel","url":""}',
        '{"type":"loadModel","name":7}',
        '{"type":"pointer","x":2,"y":0,"buttons":0,"kind":"move"}',
        '{"type":"pointer","x":0,"y":0,"buttons":-1,"kind":"move"}',
        '{"type":"pointer","x":0,"y":0,"buttons":0,"kind":"hover"}',
        '{"type":"key","key":"","down":true}',
        '{"type":"key","key":"a","down":1}',
        '{"type":"ping"}',
    ],
)
def test_invalid_fields(text: str) -> None:
    expect(protocol.BAD_MESSAGE, text)


def test_server_messages_are_compact_valid_json() -> None:
    messages = [
        protocol.hello("s1", 1280, 720, 30, "H264", "llvmpipe"),
        protocol.progress("parse", 1.7),
        protocol.model_loaded(100, 2, 12.345, ([0, 0, 0], [1, 1, 1]), 7),
        protocol.model_loaded(0, 0, 1, None),
        protocol.error("InvalidPose", "bad"),
        protocol.frame(3, 9, 21.234, 6.5, level=2),
        protocol.frame(3, 9, 21.234, still=True),
        protocol.pong(4.5),
    ]
    decoded = [protocol.parse_server_message(m) for m in messages]
    assert [d["type"] for d in decoded] == [
        "hello",
        "progress",
        "modelLoaded",
        "modelLoaded",
        "error",
        "frame",
        "frame",
        "pong",
    ]
    assert decoded[1]["fraction"] == 1.0
    assert decoded[2] == {
        "type": "modelLoaded",
        "triangles": 100,
        "points": 7,
        "drawCalls": 2,
        "levels": [100],  # triangles per level of detail: one level, full detail
        "loadMs": 12.35,
        "bounds": {"min": [0, 0, 0], "max": [1, 1, 1]},
    }
    assert "ref" not in decoded[4] and "encodeMs" not in decoded[6]
    assert decoded[5] == {"type": "frame", "poseId": 3, "frameNumber": 9, "level": 2, "still": False,
                          "renderMs": 21.23, "encodeMs": 6.5}  # fmt: skip
    assert decoded[6]["level"] == 0 and decoded[6]["still"] is True
    with pytest.raises(ValueError):
        protocol.frame(1, 1, math.nan)
    with pytest.raises(ValueError):
        protocol.parse_server_message("[]")
