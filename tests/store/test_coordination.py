"""Coordination's failures are the store's: an unreachable database is StoreUnavailable, as for the repository."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from renderhub.errors import StoreUnavailable
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
