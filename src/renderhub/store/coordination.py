"""What hub replicas share besides sessions: heartbeats, the reaper's leadership, claims on starting sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from renderhub.models import Session, SessionStatus
from renderhub.store.tables import replicas, sessions

# Any constant works, as long as every replica uses the same one (the migration lock uses another).
LEADER_LOCK = 0x52454150


@dataclass(frozen=True)
class Replica:
    """A hub process sharing the database, as its last heartbeat described it."""

    id: str
    host: str
    backend: str
    started_at: datetime
    seen_at: datetime


class Coordination:
    """Replicas agree through the database alone: no messages pass between them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._leader: AsyncConnection | None = None

    async def heartbeat(self, replica: Replica) -> None:
        """Say this replica is alive (insert it the first time)."""
        async with self.engine.begin() as c:
            result = await c.execute(
                replicas.update().where(replicas.c.id == replica.id).values(seen_at=replica.seen_at)
            )
            if result.rowcount == 0:
                await c.execute(replicas.insert().values(**replica.__dict__))

    async def replicas(self, seen_since: datetime) -> list[Replica]:
        """The replicas that gave a heartbeat since `seen_since`."""
        async with self.engine.begin() as c:
            rows = (await c.execute(replicas.select().where(replicas.c.seen_at >= seen_since))).all()
        return [Replica(r.id, r.host, r.backend, r.started_at, r.seen_at) for r in rows]

    async def leave(self, replica_id: str) -> None:
        async with self.engine.begin() as c:
            await c.execute(replicas.delete().where(replicas.c.id == replica_id))

    async def claim(self, session: Session, watcher: str) -> bool:
        """Take over watching a starting session from the replica that watched it (conditional: one claimer wins)."""
        async with self.engine.begin() as c:
            result = await c.execute(
                sessions.update()
                .where(
                    sessions.c.account_id == session.account_id,
                    sessions.c.id == session.id,
                    sessions.c.status == SessionStatus.STARTING.value,
                    sessions.c.watcher.is_not_distinct_from(session.watcher),
                )
                .values(watcher=watcher)
            )
        return result.rowcount == 1

    async def lead(self) -> bool:
        """Whether this replica runs the reaper: on PostgreSQL, the one holding an advisory lock, which the
        server releases when the holder's connection ends (a killed replica hands over by dying)."""
        if self.engine.dialect.name != "postgresql":
            return True  # SQLite: one hub per database
        if self._leader is not None:
            try:
                await self._leader.execute(sa.text("SELECT 1"))
                return True
            except (DBAPIError, OSError):
                await self.resign()
        connection = await self.engine.connect()
        try:
            # Autocommit: the lock belongs to the connection, and an open transaction would sit idle for hours.
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            query = sa.text("SELECT pg_try_advisory_lock(:key)")
            if (await connection.execute(query, {"key": LEADER_LOCK})).scalar_one():
                self._leader, connection = connection, None  # type: ignore[assignment]
                return True
            return False
        finally:
            if connection is not None:
                await connection.close()

    async def resign(self) -> None:
        """Give up the reaper's lock (ending the connection's database session releases it)."""
        leader, self._leader = self._leader, None
        if leader is not None:
            try:
                # Invalidate, not just close: a closed connection goes back to the pool, lock and all.
                await leader.invalidate()
            except (DBAPIError, OSError):
                pass
