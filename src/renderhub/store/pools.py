"""The warm pool's SQL: its rows (one per pooled render server), a claim, and what the pool's step reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from renderhub.models import ServerSize, Session, SessionStatus
from renderhub.store.starting import SET_BACKEND_STATE, backend_state_params
from renderhub.store.tables import LIVE, pooled_servers, sessions
from renderhub.store.transaction import transaction

STARTING, READY = SessionStatus.STARTING.value, SessionStatus.READY.value
CLAIM_TRIES = 5  # candidates a claim tries when other creates take the first ones under it


@dataclass(frozen=True)
class PooledServer:
    """One row of the pool: a render server started ahead of demand, and where it stands."""

    pool_id: str
    size: ServerSize
    status: str  # Starting or Ready
    created_at: datetime
    starter: str
    ready_at: datetime | None = None
    hostname: str | None = None
    backend_state: dict[str, Any] | None = None  # None until the server has bound its ports

    @property
    def ready(self) -> bool:
        return self.status == READY


@dataclass(frozen=True)
class Demand:
    """A size's live sessions in the region, and how many of them wait for a server (none found yet)."""

    live: int = 0
    waiting: int = 0


class _Taken(Exception):
    """The session a claim was for is no longer Starting: the claim's transaction rolls back."""


def _pooled(row: sa.Row[Any]) -> PooledServer:
    return PooledServer(
        pool_id=row.pool_id,
        size=ServerSize(row.size),
        status=row.status,
        created_at=row.created_at,
        starter=row.starter,
        ready_at=row.ready_at,
        hostname=row.hostname,
        backend_state=row.backend_state,
    )


class PoolStore:
    """Every statement about the region's warm pool."""

    def __init__(self, engine: AsyncEngine, region: str) -> None:
        self.engine = engine
        self.region = region

    def _row(self, pool_id: str) -> Any:
        return sa.and_(pooled_servers.c.region == self.region, pooled_servers.c.pool_id == pool_id)

    async def add(self, pool_id: str, size: ServerSize, backend: str, starter: str, now: datetime) -> None:
        """A row for a server about to be launched (before the launch: a server is never without its row)."""
        async with transaction(self.engine) as c:
            await c.execute(
                pooled_servers.insert().values(
                    region=self.region, pool_id=pool_id, size=size.value, backend=backend, status=STARTING,
                    created_at=now, starter=starter,
                )
            )  # fmt: skip

    async def launched(self, pool_id: str, state: dict[str, Any], hostname: str) -> bool:
        """Record where a launched server runs; False when its row is gone (trimmed: its launcher stops it)."""
        async with transaction(self.engine) as c:
            result = await c.execute(
                pooled_servers.update()
                .where(self._row(pool_id), pooled_servers.c.hostname.is_(None))
                .values(backend_state=state, hostname=hostname)
            )
        return bool(result.rowcount == 1)

    async def ready(self, pool_id: str, now: datetime) -> bool:
        """The server answers: Ready to be claimed. False when a session claimed it while it booted."""
        async with transaction(self.engine) as c:
            result = await c.execute(
                pooled_servers.update()
                .where(self._row(pool_id), pooled_servers.c.status == STARTING)
                .values(status=READY, ready_at=now)
            )
        return bool(result.rowcount == 1)

    async def remove(self, pool_id: str) -> bool:
        """Delete a row; True when this call deleted it, and so owns its server (to stop it)."""
        async with transaction(self.engine) as c:
            result = await c.execute(pooled_servers.delete().where(self._row(pool_id)))
        return bool(result.rowcount == 1)

    async def rows(self, backend: str) -> list[PooledServer]:
        query = (
            pooled_servers.select()
            .where(pooled_servers.c.region == self.region, pooled_servers.c.backend == backend)
            .order_by(pooled_servers.c.created_at)
        )
        async with transaction(self.engine) as c:
            return [_pooled(row) for row in (await c.execute(query)).all()]

    async def everywhere(self) -> list[tuple[str, PooledServer]]:
        """Every region's pooled servers, with their region (for operators)."""
        query = pooled_servers.select().order_by(
            pooled_servers.c.region, pooled_servers.c.size, pooled_servers.c.created_at
        )
        async with transaction(self.engine) as c:
            return [(row.region, _pooled(row)) for row in (await c.execute(query)).all()]

    async def claim(self, session: Session, backend: str) -> PooledServer | None:
        """Take a launched pooled server of the session's size for it (a Ready one first, then the oldest booting
        one): its row is deleted and its state, the session's seq in it, recorded on the Starting session, in one
        transaction. None when the pool has none, or the session is no longer Starting."""
        candidates = (
            sa.select(pooled_servers.c.pool_id)
            .where(
                pooled_servers.c.region == self.region,
                pooled_servers.c.backend == backend,
                pooled_servers.c.size == session.size.value,
                pooled_servers.c.hostname.is_not(None),  # launched
            )
            .order_by((pooled_servers.c.status == READY).desc(), pooled_servers.c.created_at)
            .limit(CLAIM_TRIES)
        )
        try:
            async with transaction(self.engine) as c:
                for pool_id in (await c.execute(candidates)).scalars().all():
                    row = (await c.execute(pooled_servers.delete().where(self._row(pool_id)).returning(
                        *pooled_servers.c))).first()  # fmt: skip
                    if row is None:
                        continue  # another create took it
                    taken = _pooled(row)
                    assert taken.backend_state is not None and taken.hostname is not None  # launched
                    state = {**taken.backend_state, "session_seq": session.seq}
                    params = backend_state_params(session, state, taken.hostname)
                    recorded = await c.execute(SET_BACKEND_STATE, params)
                    if recorded.rowcount != 1:
                        raise _Taken
                    return PooledServer(**{**taken.__dict__, "backend_state": state})
        except _Taken:
            return None
        return None

    async def demand(self, backend: str) -> dict[ServerSize, Demand]:
        """Per size, the region's live sessions on this backend and those of them still without a server."""
        # No hostname yet: no server found for it (a session's backend_state may hold JSON null, not SQL NULL).
        waiting = sa.case((sa.and_(sessions.c.status == STARTING, sessions.c.hostname.is_(None)), 1), else_=0)
        query = (
            sa.select(sessions.c.size, sa.func.count(), sa.func.coalesce(sa.func.sum(waiting), 0))
            .where(sessions.c.region == self.region, sessions.c.backend == backend, sessions.c.status.in_(LIVE))
            .group_by(sessions.c.size)
        )
        async with transaction(self.engine) as c:
            rows = (await c.execute(query)).all()
        return {ServerSize(size): Demand(int(live), int(waiting)) for size, live, waiting in rows}

    async def claimed_pool_ids(self, backend: str) -> set[str]:
        """The pool ids of servers live sessions hold (claimed from the pool, assigned or about to be)."""
        query = sa.select(sessions.c.backend_state).where(
            sessions.c.region == self.region,
            sessions.c.backend == backend,
            sessions.c.status.in_(LIVE),
            sessions.c.hostname.is_not(None),
        )
        async with transaction(self.engine) as c:
            states = (await c.execute(query)).scalars().all()
        return {state["pool_id"] for state in states if state and state.get("pool_id")}
