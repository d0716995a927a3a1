"""`renderhub connect` as a user runs it: a Ready session, the sample model, figures and the last frame."""

from __future__ import annotations

import json
import ssl
import subprocess
from pathlib import Path

import httpx
from PIL import Image, ImageStat

from tests.hubs import RENDERHUB, RunningHub, wait_for


def test_connect_prints_figures_and_saves_the_last_frame(hub: RunningHub, tmp_path: Path) -> None:
    with hub.client() as client:
        client.create("cli", "Standard", 10)
        wait_for(lambda: client.get("cli")["status"] == "Ready", timeout=20)
    out = tmp_path / "frame.png"
    command = [RENDERHUB, "connect", "cli", "--data-dir", str(hub.data_dir), "--frames", "30",
               "--width", "640", "--height", "360", "--out", str(out), "--json"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["fps"] > 5 and figures["codec"] == "H264"
    assert 0 < figures["pose_to_frame_ms_p50"] <= figures["pose_to_frame_ms_p95"]
    # Picture quality against the server's lossless frames (fetched through the hub), and the bitrate it took.
    assert figures["psnr_db_moving"] > 30 and figures["psnr_db_still"] > 30, figures  # the targets: bench/stream.py
    assert figures["frames_after_still"] == 0, "a still camera costs one frame, then nothing"
    assert figures["bitrate_kbps"] > 10, figures
    with Image.open(out) as frame:
        assert frame.size == (640, 360)
        assert ImageStat.Stat(frame.convert("L")).stddev[0] > 10, "the model, not a blank frame"

    # The reference itself: the session's token, one numeric poseId, and only while a client streams.
    with hub.client() as client:
        url = f"{client.base}/render/{client.config.account_id}/cli/reference"
        auth = {"Authorization": f"Bearer {client.token()}"}
        trust = ssl.create_default_context(cafile=str(hub.ca))
        assert httpx.get(url, params={"poseId": "3"}, verify=trust).status_code == 401
        bad = httpx.get(url, params={"poseId": "x"}, headers=auth, verify=trust)
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadRequest"
        gone = wait_for(lambda: (r := httpx.get(url, params={"poseId": "3"}, headers=auth, verify=trust))
                        .status_code == 404 and r, timeout=10)  # fmt: skip
        assert "while a client streams" in gone.json()["error"]["message"]

    refused = subprocess.run([RENDERHUB, "connect", "nope", "--data-dir", str(hub.data_dir)],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode != 0 and "error:" in refused.stderr and "Traceback" not in refused.stderr
