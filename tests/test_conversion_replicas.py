"""Conversions across hub replicas on one PostgreSQL: every replica runs conversions (not only the leader), and
each conversion is claimed and run by exactly one of them, whichever replica it was created through."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from renderhub.client import ArrConfig, HubClient
from tests.hubs import RunningHub, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
BOX = Path("/usr/share/assimp/models/FBX/box.fbx")
COUNT = 8


def client_for(hub: RunningHub, config: ArrConfig) -> HubClient:
    at = ArrConfig(**{**config.__dict__, "account_domain": hub.endpoint, "rendering_domain": hub.endpoint})
    return HubClient(at, verify=str(hub.ca))


async def attempts(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(url)
    try:
        return {row["id"]: row["attempts"] for row in await connection.fetch("SELECT id, attempts FROM conversions")}
    finally:
        await connection.close()


def test_each_conversion_runs_once_on_one_of_the_replicas(
    hub_factory: Callable[..., RunningHub], postgres_url: str, tmp_path: Path
) -> None:
    # One storage for both (a shared file system in production): a conversion may run on either replica.
    common = ("--rate-limit", "0", "--database-url", postgres_url, "--storage-dir", str(tmp_path / "storage"))
    first = hub_factory(*common, name="first")
    second = hub_factory(*common, name="second")
    with client_for(first, first.config) as one, client_for(second, first.config) as other:
        for n in range(COUNT):
            one.upload("models", f"box-{n}/box.fbx", BOX)
        for n in range(COUNT):
            through = (one, other)[n % 2]  # created through both replicas
            through.create_conversion(f"box-{n}", {
                "inputLocation": {"storageContainerUri": through.storage_uri("models"), "blobPrefix": f"box-{n}",
                                  "relativeInputAssetPath": "box.fbx"},
                "outputLocation": {"storageContainerUri": through.storage_uri("converted"), "blobPrefix": f"box-{n}"},
            })  # fmt: skip
        try:
            wait_for(lambda: all(c["status"] in ("Succeeded", "Failed") for c in one.list_conversions()), timeout=180)
        finally:
            statuses = {c["id"]: (c["status"], c["error"]) for c in one.list_conversions()}
        assert all(status == "Succeeded" for status, _ in statuses.values()), (statuses, first.log[-3000:])
        assert len(one.list_conversions()) == COUNT
        assert {b["name"] for b in other.blobs("converted")} >= {f"box-{n}/box.arrAsset" for n in range(COUNT)}
    # One claim each, unless a replica was taken for dead (silent past the 3 s heartbeat timeout on a loaded
    # machine): then each extra claim is a logged takeover, never a second claim of a live replica's conversion.
    claims = asyncio.run(attempts(postgres_url))
    takeovers = sum(hub.log.count("is gone; running it again") for hub in (first, second))
    assert set(claims) == {f"box-{n}" for n in range(COUNT)} and sum(claims.values()) == COUNT + takeovers, claims
    ran = Counter(name for hub in (first, second) for name in re.findall(r"conversion (box-\d+) succeeded", hub.log))
    assert ran == Counter({f"box-{n}": 1 for n in range(COUNT)})  # each outcome recorded by one replica only
    assert all(re.search(r"conversion box-\d+ succeeded", hub.log) for hub in (first, second)), "both ran some"
