"""What hub replicas share besides sessions: heartbeats, the reaper's leadership, claims on starting sessions."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from renderhub.errors import StoreUnavailable
from renderhub.models import DEFAULT_REGION, Session, SessionStatus
from renderhub.store.tables import replicas, sessions
from renderhub.store.transaction import UNAVAILABLE, transaction

# Any constant works, as long as every replica uses the same one (the migration lock uses another); with the
# region's key it makes one lock per region (PostgreSQL's two-int4 advisory locks: a keyspace of their own).
LEADER_LOCK = 0x52454150


@dataclass(frozen=True)
class Replica:
    """A hub process sharing the database, as its last heartbeat described it."""

    id: str
    host: str
    backend: str
    started_at: datetime
    seen_at: datetime
    region: str = DEFAULT_REGION


class Coordination:
    """Replicas agree through the database alone: no messages pass between them."""

    def __init__(self, engine: AsyncEngine, region: str = DEFAULT_REGION) -> None:
        self.engine = engine
        self.region = region  # whose sessions this replica claims, and whose leader it competes to be
        self._leading: dict[str, AsyncConnection] = {}  # region -> the connection holding its lock

    async def heartbeat(self, replica: Replica) -> None:
        """Say this replica is alive (insert it the first time)."""
        async with transaction(self.engine) as c:
            result = await c.execute(
                replicas.update().where(replicas.c.id == replica.id).values(seen_at=replica.seen_at)
            )
            if result.rowcount == 0:
                await c.execute(replicas.insert().values(**replica.__dict__))

    async def replicas(self, seen_since: datetime) -> list[Replica]:
        """This region's replicas that gave a heartbeat since `seen_since`."""
        query = replicas.select().where(replicas.c.region == self.region, replicas.c.seen_at >= seen_since)
        async with transaction(self.engine) as c:
            rows = (await c.execute(query)).all()
        return [Replica(r.id, r.host, r.backend, r.started_at, r.seen_at, r.region) for r in rows]

    async def leave(self, replica_id: str) -> None:
        async with transaction(self.engine) as c:
            await c.execute(replicas.delete().where(replicas.c.id == replica_id))

    async def claim(self, session: Session, watcher: str) -> bool:
        """Take over watching a starting session from the replica that watched it (conditional: one claimer wins)."""
        async with transaction(self.engine) as c:
            result = await c.execute(
                sessions.update()
                .where(
                    sessions.c.account_id == session.account_id,
                    sessions.c.region == session.region,
                    sessions.c.id == session.id,
                    sessions.c.status == SessionStatus.STARTING.value,
                    sessions.c.watcher.is_not_distinct_from(session.watcher),
                )
                .values(watcher=watcher)
            )
        return result.rowcount == 1

    async def lead(self, region: str | None = None) -> bool:
        """Whether this replica runs the reaper of `region` (default: its own): on PostgreSQL, the one holding
        that region's advisory lock, which the server releases when the holder's connection ends (a killed
        replica hands over by dying). Each region has a leader of its own; one replica may lead several."""
        region = self.region if region is None else region
        if self.engine.dialect.name != "postgresql":
            return True  # SQLite: one hub per database
        held = self._leading.get(region)
        if held is not None:
            try:
                await held.execute(sa.text("SELECT 1"))
                return True
            except (DBAPIError, OSError):
                await self.resign(region)
        try:
            connection = await self.engine.connect()
        except (DBAPIError, OSError) as exc:
            raise StoreUnavailable(UNAVAILABLE) from exc
        try:
            # Autocommit: the lock belongs to the connection, and an open transaction would sit idle for hours.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            query = sa.text("SELECT pg_try_advisory_lock(:key, :region)")
            if (await connection.execute(query, {"key": LEADER_LOCK, "region": _region_key(region)})).scalar_one():
                self._leading[region], connection = connection, None  # type: ignore[assignment]
                return True
            return False
        finally:
            if connection is not None:
                await connection.close()

    async def resign(self, region: str | None = None) -> None:
        """Give up the lead of a region, or of every region this replica leads (ending the connection's
        database session releases its lock)."""
        for name in list(self._leading) if region is None else [region]:
            leader = self._leading.pop(name, None)
            if leader is None:
                continue
            try:
                # Invalidate, not just close: a closed connection goes back to the pool, lock and all.
                await leader.invalidate()
            except (DBAPIError, OSError):
                pass


def _region_key(region: str) -> int:
    """A region's half of its lock's key: a signed 32-bit number (PostgreSQL's int4) from its name."""
    return (zlib.crc32(region.encode()) ^ 0x80000000) - 0x80000000
