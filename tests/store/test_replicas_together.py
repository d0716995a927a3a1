"""Replicas starting at the same moment on one fresh PostgreSQL database: one schema, one first account,
one certificate authority, one reaper leader."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import pytest

from renderhub.auth import new_account
from renderhub.config import Settings
from renderhub.store import Repository, open_store

pytestmark = pytest.mark.postgres
REPLICAS = 4


async def replicas_together(url: str, stack: AsyncExitStack) -> list[Repository]:
    """Open the store from several replicas at once: each runs the migrations on its own connection."""
    async_url = Settings(database_url=url).async_database_url
    return list(await asyncio.gather(*(stack.enter_async_context(open_store(async_url)) for _ in range(REPLICAS))))


async def test_replicas_migrate_and_bootstrap_one_database_together(postgres_url: str) -> None:
    now = datetime.now(UTC)
    async with AsyncExitStack() as stack:
        repos = await replicas_together(postgres_url, stack)
        firsts = await asyncio.gather(*(repo.insert_first_account(new_account("default", now)[0]) for repo in repos))
        assert sorted(firsts) == [False] * (REPLICAS - 1) + [True], "exactly one replica creates the first account"
        assert await repos[0].count_accounts() == 1
        cas = await asyncio.gather(
            *(repo.certificate_authority((f"cert {n}", f"key {n}"), now) for n, repo in enumerate(repos))
        )
        assert len(set(cas)) == 1, "every replica ends up with the same CA"
        leaders = await asyncio.gather(*(repo.coordination.lead() for repo in repos))
        assert sorted(leaders) == [False] * (REPLICAS - 1) + [True], "one reaper leader"
        await repos[leaders.index(True)].coordination.resign()
        assert await repos[leaders.index(False)].coordination.lead(), "another replica leads once it resigns"


async def test_each_region_has_a_reaper_leader_of_its_own(postgres_url: str) -> None:
    async with AsyncExitStack() as stack:
        first, second, *_ = await replicas_together(postgres_url, stack)
        assert await first.coordination.lead("eu")
        assert not await second.coordination.lead("eu")
        assert await second.coordination.lead("us"), "another region's lead is free"
        assert await first.coordination.lead("eu") and await second.coordination.lead("us")  # held, not taken anew
        await first.coordination.resign("eu")
        assert await second.coordination.lead("eu"), "a resigned region's lead passes on"
        assert not await first.coordination.lead("us")
