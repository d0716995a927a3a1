"""Coordination: an unreachable database is StoreUnavailable, as for the repository; leaders and replicas per region."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from renderhub.config import Settings
from renderhub.errors import StoreUnavailable
from renderhub.store import open_store
from renderhub.store.coordination import Coordination, Replica
from tests.hubs import free_port


async def test_an_unreachable_database_is_store_unavailable() -> None:
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/gone")
    coordination = Coordination(engine)
    now = datetime.now(UTC)
    try:
        with pytest.raises(StoreUnavailable):
            await coordination.heartbeat(Replica("r1", "host", "local", now, now))
        with pytest.raises(StoreUnavailable):
            await coordination.replicas(now)
        with pytest.raises(StoreUnavailable):
            await coordination.lead()
    finally:
        await engine.dispose()


async def test_each_region_has_a_leader_and_sees_only_its_own_replicas(postgres_url: str) -> None:
    url = Settings(database_url=postgres_url).async_database_url
    now = datetime.now(UTC)
    async with open_store(url, "west") as west, open_store(url, "east") as east, open_store(url, "west") as other:
        assert await west.coordination.lead() and await east.coordination.lead(), "a leader in each region"
        assert not await other.coordination.lead(), "one leader per region"
        await west.coordination.heartbeat(Replica("w1", "host-a", "local", now, now, "west"))
        await east.coordination.heartbeat(Replica("e1", "host-b", "local", now, now, "east"))
        assert [r.id for r in await west.coordination.replicas(now)] == ["w1"]
        assert [r.id for r in await east.coordination.replicas(now)] == ["e1"]
        await west.coordination.resign()
        assert await other.coordination.lead(), "west's lead passes to west's other replica"
