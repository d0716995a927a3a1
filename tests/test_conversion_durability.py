"""Conversions outlive their hub: a conversion whose hub is SIGKILLed mid-run is claimed again by the restarted hub
and completes once, its process having died with the old hub; its outputs are whole, with nothing half-written."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from renderhub.client import HubClient
from tests.hubs import RunningHub, wait_for


def write_cloud(path: Path, points: int) -> Path:
    """An XYZ point cloud (`x y z r g b` per line) big enough to take a conversion process a few seconds."""
    rng = np.random.default_rng(7)
    rows = np.hstack([rng.random((points, 3)) * 10, rng.integers(0, 256, (points, 3))])
    np.savetxt(path, rows, fmt="%.3f %.3f %.3f %d %d %d")
    return path


def conversion_processes(data_dir: Path) -> list[int]:
    """Conversion processes working in this hub's data dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"renderhub.conversion.job" in command and cwd.startswith(str(data_dir.resolve())):
            found.append(int(entry.name))
    return found


def settings(client: HubClient) -> dict[str, object]:
    return {
        "inputLocation": {"storageContainerUri": client.storage_uri("models"), "blobPrefix": "cloud",
                          "relativeInputAssetPath": "cloud.xyz"},
        "outputLocation": {"storageContainerUri": client.storage_uri("converted"), "blobPrefix": "cloud"},
    }  # fmt: skip


@pytest.mark.slow
def test_a_conversion_survives_a_hub_sigkill_and_completes_once(hub: RunningHub, tmp_path: Path) -> None:
    cloud = write_cloud(tmp_path / "cloud.xyz", 1_000_000)
    with hub.client() as client:
        client.upload("models", "cloud/cloud.xyz", cloud)
        assert client.create_conversion("survivor", settings(client))["status"] == "NotStarted"
        wait_for(lambda: client.get_conversion("survivor")["status"] == "Running", 60)
    wait_for(lambda: conversion_processes(hub.data_dir), 10)
    hub.stop(signal.SIGKILL)
    # Its process dies with the hub: nothing writes on behind the restarted hub's back.
    wait_for(lambda: not conversion_processes(hub.data_dir), 10)
    hub.start()
    with hub.client() as client:
        wait_for(lambda: client.get_conversion("survivor")["status"] in ("Succeeded", "Failed"), 120)
        conversion = client.get_conversion("survivor")
        assert conversion["status"] == "Succeeded", conversion["error"]
        assert conversion["output"]["outputAssetUri"] == f"{client.storage_uri('converted')}/cloud/cloud.arrAsset"
        names = sorted(blob["name"] for blob in client.blobs("converted"))
        assert names == ["cloud/cloud.arrAsset", "cloud/cloud.info.json", "cloud/cloud.result.json"]
        assert len(client.list_conversions()) == 1
    assert "is gone; running it again" in hub.log
    assert not list((hub.data_dir / "conversions").iterdir())  # the killed run's work folder is gone too


@pytest.mark.slow
@pytest.mark.parametrize(
    ("limit", "words"),
    [
        (("--conversion-timeout", "0.02"), "time limit of 0.02 minutes"),
        (("--conversion-memory", "300"), "more memory than a conversion may use"),
    ],
)
def test_a_conversion_past_its_limits_fails_saying_which_and_the_hub_goes_on(
    hub_factory: Callable[..., RunningHub], tmp_path: Path, limit: tuple[str, str], words: str
) -> None:
    hub = hub_factory("--rate-limit", "0", *limit)
    cloud = write_cloud(tmp_path / "cloud.xyz", 1_000_000)  # about 3 s of conversion and 1 GB at its peak
    with hub.client() as client:
        client.upload("models", "cloud/cloud.xyz", cloud)
        client.create_conversion("bounded", settings(client))
        wait_for(lambda: client.get_conversion("bounded")["status"] in ("Succeeded", "Failed"), 120)
        conversion = client.get_conversion("bounded")
        assert conversion["status"] == "Failed" and conversion["error"]["code"] == "ConversionProcessFailed"
        assert words in conversion["error"]["message"], conversion["error"]
        assert client.list_conversions()[0]["id"] == "bounded"  # the hub answers on
    assert not conversion_processes(hub.data_dir)
