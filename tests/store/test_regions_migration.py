"""The regions migration on SQLite and PostgreSQL: a database from before regions keeps its sessions, in the
region a hub without --region serves; sessions of other regions are apart."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command
from sqlalchemy.ext.asyncio import create_async_engine

from renderhub.config import Settings
from renderhub.models import DEFAULT_REGION, ServerSize, Session, SessionStatus
from renderhub.store import open_store
from renderhub.store.migrate import _alembic_config

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


async def _migrate_to(url: str, revision: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda c: command.upgrade(_alembic_config(c), revision))
    finally:
        await engine.dispose()


async def test_sessions_from_before_regions_are_the_default_regions(database_url: str) -> None:
    url = Settings(database_url=database_url).async_database_url
    await _migrate_to(url, "0004")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as c:
            await c.execute(
                sa.text(
                    "INSERT INTO sessions (account_id, id, size, max_lease_minutes, status, created_at, backend) "
                    "VALUES ('acct-1', 'old', 'Standard', 30, 'Ready', :t, 'local')"
                ),
                {"t": T0.replace(tzinfo=None)},
            )
    finally:
        await engine.dispose()
    async with open_store(url) as repo:  # migrates to the newest schema
        old = await repo.get_session("acct-1", "old")
        assert old is not None and old.region == DEFAULT_REGION and old.status is SessionStatus.READY
        assert [s.id for s in await repo.list_live_sessions("acct-1", 0, 10)] == ["old"]
    async with open_store(url, region="west") as west:
        assert await west.get_session("acct-1", "old") is None
        assert await west.list_live_sessions("acct-1", 0, 10) == []
        # The same id in west is a session of its own.
        fresh = Session("acct-1", "old", ServerSize.STANDARD, 10, SessionStatus.STARTING, T0, region="west")
        await west.insert_session(fresh)
        found = await west.get_session("acct-1", "old")
        assert found is not None and found.max_lease_minutes == 10 and found.region == "west"
    async with open_store(url) as repo:
        still = await repo.get_session("acct-1", "old")
        assert still is not None and still.max_lease_minutes == 30
