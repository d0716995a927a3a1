"""`renderhub convert` as a person runs it: a model file or folder uploaded to the hub's storage and converted, its
name printed; `renderhub conversion get|list`; and `renderhub connect --model NAME` rendering the result, which
another account cannot load."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageStat

from tests.hubs import RENDERHUB, RunningHub, wait_for

MODELS = Path("/usr/share/assimp/models")


def renderhub(hub: RunningHub, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--config", str(config)] if config else []
    return subprocess.run([RENDERHUB, *args, "--data-dir", str(hub.data_dir), *extra],
                          capture_output=True, text=True, timeout=240)  # fmt: skip


def connect_new_session(hub: RunningHub, session_id: str, model: str, out: Path) -> subprocess.CompletedProcess[str]:
    """`renderhub connect` loading `model` in a new Ready session, 10 frames at 320x240, the last saved to `out`."""
    with hub.client() as client:
        client.create(session_id, "Standard", 10)
        wait_for(lambda: client.get(session_id)["status"] == "Ready", timeout=30)
    connected = renderhub(hub, "connect", session_id, "--model", model, "--frames", "10", "--width", "320",
                          "--height", "240", "--out", str(out), "--json")  # fmt: skip
    assert connected.returncode == 0, connected.stderr
    return connected


def test_convert_then_connect_renders_the_converted_model(hub: RunningHub, tmp_path: Path) -> None:
    done = renderhub(hub, "convert", str(MODELS / "FBX" / "box.fbx"), "--id", "box-1", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    conversion = json.loads(done.stdout)
    assert conversion["status"] == "Succeeded" and conversion["id"] == "box-1"
    assert conversion["output"]["outputAssetUri"].endswith("/storage/converted/box/box.arrAsset")

    # A folder (a .gltf with its .bin and texture) goes up whole; the table names the model to load.
    folder = renderhub(hub, "convert", str(MODELS / "glTF2" / "BoxTextured-glTF"), "--id", "textured", "--wait")
    assert folder.returncode == 0, folder.stderr
    assert "converted/BoxTextured-glTF/BoxTextured.arrAsset" in folder.stdout
    listed = renderhub(hub, "conversion", "list")
    assert listed.returncode == 0 and "box-1" in listed.stdout and "textured" in listed.stdout
    shown = renderhub(hub, "conversion", "get", "box-1", "--json")
    assert json.loads(shown.stdout)["status"] == "Succeeded"

    out = tmp_path / "frame.png"
    connected = connect_new_session(hub, "viewer", "converted/box/box.arrAsset", out)
    with Image.open(out) as frame:
        assert ImageStat.Stat(frame.convert("L").crop((0, 0, 320, 200))).stddev[0] > 10, "the model, not a blank frame"
    figures = json.loads(connected.stdout)
    assert figures["model"]["levels"] == [12]  # too small for coarser levels of detail
    assert figures["level_moving_p50"] == 0 and figures["full_detail_ms_after_stop"] < 5000  # the still frame came

    # Converted models are the account's own: another account's session cannot load this one by its name.
    other = hub.new_account("other")
    other_config = hub.data_dir / "other.arrconfig.json"
    with hub.client() as client:
        client.stop("viewer")
    from renderhub.client import HubClient

    with HubClient(other, verify=str(hub.ca)) as theirs:
        theirs.create("theirs", "Standard", 10)
        wait_for(lambda: theirs.get("theirs")["status"] == "Ready", timeout=30)
    refused = renderhub(hub, "connect", "theirs", "--model", "converted/box/box.arrAsset", "--frames", "5",
                        config=other_config)  # fmt: skip
    assert refused.returncode != 0 and "ModelNotFound" in refused.stderr, refused.stderr


def test_a_failed_conversion_says_why_and_exits_nonzero(hub: RunningHub, tmp_path: Path) -> None:
    broken = tmp_path / "broken.fbx"
    broken.write_bytes(b"Kaydara FBX Binary  \x00\x1a\x00" + b"\xff" * 64)
    failed = renderhub(hub, "convert", str(broken), "--wait")
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "Failed" in failed.stdout and "ConversionProcessFailed" in failed.stdout
    assert "Traceback" not in failed.stdout + failed.stderr


def test_a_converted_point_cloud_renders_as_points(hub: RunningHub, tmp_path: Path) -> None:
    cloud = tmp_path / "scan.xyz"
    grid = [(x * 0.02, y * 0.02, 0.0) for x in range(100) for y in range(100)]  # a red 2 m square of 10,000 points
    cloud.write_text("".join(f"{x:.3f} {y:.3f} {z:.3f} 255 0 0\n" for x, y, z in grid))
    done = renderhub(hub, "convert", str(cloud), "--id", "scan", "--wait", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "Succeeded", done.stdout + done.stderr
    out = tmp_path / "frame.png"
    connect_new_session(hub, "points", "converted/scan/scan.arrAsset", out)
    with Image.open(out) as frame:
        pixels = np.asarray(frame.convert("RGB"))[:200].astype(int)
    reddish = int(((pixels[..., 0] > 120) & (pixels[..., 1] < 80)).sum())
    assert reddish > 500, f"the cloud's red points, drawn ({reddish} red pixels)"
