"""The region directory's SQL: each hub writes its own region's row, every hub reads them all."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from renderhub.store.tables import LIVE, regions, sessions
from renderhub.store.transaction import transaction


@dataclass(frozen=True)
class Region:
    """A region as the directory lists it: where clients reach its hubs, and where they measure the way there."""

    name: str
    endpoint: str
    probe_url: str


class RegionStore:
    """Every statement about the directory."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def register(self, region: Region, now: datetime) -> Region | None:
        """Write this region's row; returns what it said before, when that differed (replicas that disagree)."""
        async with transaction(self.engine) as c:
            row = (await c.execute(regions.select().where(regions.c.name == region.name))).first()
            values = {"endpoint": region.endpoint, "probe_url": region.probe_url, "updated_at": now}
            if row is None:
                await c.execute(regions.insert().values(name=region.name, **values))
                return None
            await c.execute(regions.update().where(regions.c.name == region.name).values(**values))
        before = Region(row.name, row.endpoint, row.probe_url)
        return None if before == region else before

    async def all(self) -> list[Region]:
        async with transaction(self.engine) as c:
            rows = (await c.execute(regions.select().order_by(regions.c.name))).all()
        return [Region(r.name, r.endpoint, r.probe_url) for r in rows]

    async def remove(self, name: str) -> bool:
        """Take a region out of the directory (its hubs put it back when they start)."""
        async with transaction(self.engine) as c:
            result = await c.execute(regions.delete().where(regions.c.name == name))
        return bool(result.rowcount == 1)

    async def live_sessions(self, name: str) -> int:
        """How many Starting or Ready sessions a region holds: a region with some is not removed."""
        query = sa.select(sa.func.count()).where(sessions.c.region == name, sessions.c.status.in_(LIVE))
        async with transaction(self.engine) as c:
            return int((await c.execute(query)).scalar_one())
