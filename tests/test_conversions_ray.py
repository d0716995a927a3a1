"""Conversions with the Ray backend run as Ray tasks on the cluster's nodes, reaching the hub's own storage over
HTTPS with a token for the account; the result loads in a session on a node; a conversion whose hub is SIGKILLed
mid-run ends with the hub's task and is run again, once, by the restarted hub."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageStat

from renderhub.backends.local import command_lines
from tests.hubs import RENDERHUB, RunningHub, wait_for
from tests.test_conversion_durability import settings, write_cloud
from tests.test_ray import ready

pytestmark = pytest.mark.ray

MODELS = Path("/usr/share/assimp/models")


def node_conversions() -> list[int]:
    """Conversion processes run by a Ray worker (its process title names the task), not by a hub."""
    titles = dict(command_lines())
    found = []
    for pid, args in titles.items():
        if "renderhub.conversion.job" not in args:
            continue
        try:
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if " ".join(titles.get(parent, [])).startswith("ray::renderhub-conversion-"):
            found.append(pid)
    return found


def renderhub(hub: RunningHub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RENDERHUB, *args, "--data-dir", str(hub.data_dir)],
                          capture_output=True, text=True, timeout=240)  # fmt: skip


def test_a_conversion_runs_on_a_node_and_its_result_renders_there(
    ray_hubs: Callable[..., RunningHub], tmp_path: Path
) -> None:
    hub = ray_hubs()
    seen: list[int] = []
    watcher = subprocess.Popen(  # the CLI waits for the conversion; meanwhile, look where its process runs
        [RENDERHUB, "convert", str(MODELS / "glTF2" / "BoxTextured-glTF"), "--id", "on-ray", "--wait", "--json",
         "--data-dir", str(hub.data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while watcher.poll() is None and not seen:
        seen = node_conversions()
    stdout, stderr = watcher.communicate(timeout=240)
    assert watcher.returncode == 0, stderr
    conversion = json.loads(stdout)
    assert conversion["status"] == "Succeeded", conversion["error"]
    assert seen, "the conversion process ran under a Ray worker"
    assert not (hub.data_dir / "conversions").exists() or not list((hub.data_dir / "conversions").iterdir())
    with hub.client() as client:
        names = sorted(blob["name"] for blob in client.blobs("converted"))
        assert "BoxTextured-glTF/BoxTextured.arrAsset" in names and "BoxTextured-glTF/BoxTextured.result.json" in names
        client.create("viewer", "Standard", 10)
        assert ready(client, "viewer")["status"] == "Ready"
    out = tmp_path / "frame.png"
    model = "converted/BoxTextured-glTF/BoxTextured.arrAsset"
    connected = renderhub(hub, "connect", "viewer", "--model", model, "--frames", "5", "--width", "320",
                          "--height", "240", "--out", str(out), "--json")  # fmt: skip
    assert connected.returncode == 0, connected.stderr
    with Image.open(out) as frame:
        assert ImageStat.Stat(frame.convert("L").crop((0, 0, 320, 200))).stddev[0] > 10, "the model, not a blank frame"


@pytest.mark.slow
def test_a_ray_conversion_survives_a_hub_sigkill_and_completes_once(
    ray_hubs: Callable[..., RunningHub], tmp_path: Path
) -> None:
    hub = ray_hubs()
    cloud = write_cloud(tmp_path / "cloud.xyz", 1_000_000)
    with hub.client() as client:
        client.upload("models", "cloud/cloud.xyz", cloud)
        client.create_conversion("survivor", settings(client))
    wait_for(node_conversions, 60)
    hub.stop(signal.SIGKILL)
    # Ray ends the tasks of a driver that died, and the conversion process with its worker.
    wait_for(lambda: not node_conversions(), 30)
    hub.start()
    with hub.client() as client:
        wait_for(lambda: client.get_conversion("survivor")["status"] in ("Succeeded", "Failed"), 180)
        conversion = client.get_conversion("survivor")
        assert conversion["status"] == "Succeeded", conversion["error"]
        names = sorted(blob["name"] for blob in client.blobs("converted"))
        assert names == ["cloud/cloud.arrAsset", "cloud/cloud.info.json", "cloud/cloud.result.json"]
        assert len(client.list_conversions()) == 1
    assert "is gone; running it again" in hub.log
