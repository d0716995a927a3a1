"""The hub's own storage keeps files for the retention period only (renderhub serve --storage-retention-days)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from renderhub.clock import Clock
from renderhub.storage_retention import StorageRetention
from tests.conftest import InProcessHub, hub_settings, in_process_hub

V = {"api-version": "2021-01-01"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    settings = hub_settings(tmp_path, storage_retention_days=1, conversion_concurrency=0)
    async for running in in_process_hub(settings, Clock()):
        yield running


async def test_files_not_written_for_the_retention_period_go(api: InProcessHub, tmp_path: Path) -> None:
    auth = await api.auth()
    base = f"/accounts/{api.account.id}/storage/models"
    for name in ("old/model.glb", "old/texture.png", "new/model.glb"):
        assert (await api.http.put(f"{base}/{name}", params=V, content=b"glTF", headers=auth)).status_code == 201
    folder = api.hub.storage_root / api.account.id / "models"
    two_days_ago = time.time() - 2 * 86400
    for name in ("old/model.glb", "old/texture.png"):
        os.utime(folder / name, (two_days_ago, two_days_ago))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.glb").write_bytes(b"glTF")
    os.utime(outside / "keep.glb", (two_days_ago, two_days_ago))
    (folder / "link").symlink_to(outside)  # a link out of the storage is never followed

    retention = next(step for step in api.reaper.steps if isinstance(step, StorageRetention))
    await retention.run(api.clock.now())

    listed = (await api.http.get(base, params=V, headers=auth)).json()["blobs"]
    assert [blob["name"] for blob in listed] == ["new/model.glb"]
    assert not (folder / "old").exists()  # the emptied folder went too
    assert (outside / "keep.glb").exists()
    assert (await api.http.get(f"{base}/old/model.glb", params=V, headers=auth)).status_code == 404
    assert (await api.http.get(f"{base}/link/keep.glb", params=V, headers=auth)).status_code == 404  # not served
