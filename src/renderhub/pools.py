"""The warm pool: render servers started ahead of demand, so that a create finds one Ready (a leader's step)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from renderhub.backends.base import ServerSpec, ServerState, State, pooled
from renderhub.errors import BackendError
from renderhub.manager import POLL_INTERVAL, SessionManager
from renderhub.models import ServerSize
from renderhub.store.pools import Demand, PooledServer

log = logging.getLogger("renderhub.pools")

# How often the pool's Ready servers are health-checked and servers no row knows are looked for: each look asks
# the backend for its every server (a scan of /proc, or of the cluster's named actors).
CHECK_EVERY = timedelta(seconds=2)
# After a launch fails (no room on the cluster, a broken install), the size's next launch waits this long,
# doubling up to the most.
RETRY_FIRST = 1.0
RETRY_MOST = 30.0


class WarmPool:
    """Keeps `targets[size]` render servers of each size started and unassigned in this region: never past the
    host's capacity beside its live sessions, never refilled while a session of the size waits for a server;
    dead ones replaced, surplus ones and ones no row knows stopped. A create claims them (SessionManager)."""

    name = "pool"

    def __init__(
        self,
        manager: SessionManager,
        alive: Callable[[str | None], bool],
        targets: dict[ServerSize, int],
        now: datetime,
    ) -> None:
        self.manager = manager
        self.store = manager.repo.pools
        self.alive = alive  # whether a replica is alive (its launches go on while it is)
        self.targets = {size: n for size, n in targets.items() if n > 0}
        self._launching: dict[str, asyncio.Task[None]] = {}  # pool id -> this hub's launch
        self._retry: dict[ServerSize, tuple[datetime, float]] = {}  # size -> (no launch before, the next delay)
        self._last_check = now - CHECK_EVERY

    async def run(self, now: datetime) -> None:
        backend = self.manager.backend
        rows = await self._without_orphans(await self.store.rows(backend.name))
        demand = await self.store.demand(backend.name)
        for size in {*self.targets, *(row.size for row in rows)}:
            mine = [row for row in rows if row.size is size]
            want = self._target(size, demand.get(size, Demand()), mine)
            if len(mine) > want:
                await self._trim(mine, len(mine) - want, demand.get(size, Demand()).waiting > 0)
            elif len(mine) < want and now >= self._retry.get(size, (now, 0.0))[0]:
                for _ in range(want - len(mine)):
                    await self._launch(size, now)
        if now - self._last_check >= CHECK_EVERY:
            self._last_check = now
            await self._check(rows)

    def _target(self, size: ServerSize, demand: Demand, rows: list[PooledServer]) -> int:
        """How many pooled servers of a size to keep now."""
        target = self.targets.get(size, 0)
        # On a cluster with a queue, launches Ray has not placed yet wait in its queue beside the sessions.
        queued = self.manager.backend.places_servers and self.manager.settings.queue_timeout_seconds > 0
        if not self.manager.backend.places_servers:
            target = min(target, self.manager.sizes[size].capacity - demand.live)  # sessions come first
        if demand.waiting:
            # A session waits for a server: the pool takes no room it may get (nor a place in Ray's queue).
            target = min(target, sum(1 for row in rows if row.hostname is not None) if queued else len(rows))
        return max(target, 0)

    async def _without_orphans(self, rows: list[PooledServer]) -> list[PooledServer]:
        """Forget the rows of launches nobody carries on (their replica died or closed; a launch of ours that
        failed without a word): a server they may have left is stopped as one no row knows (see _check)."""
        me = self.manager.replica_id
        kept = []
        for row in rows:
            carried = row.pool_id in self._launching or (row.starter != me and self.alive(row.starter))
            if row.ready or carried:
                kept.append(row)
            elif await self.store.remove(row.pool_id):
                log.info("pooled server %s: its launch ended with its replica; forgotten", row.pool_id)
        return kept

    async def _trim(self, rows: list[PooledServer], surplus: int, sessions_wait: bool) -> None:
        """Stop `surplus` pooled servers: launches first, newest first, then booting ones, then Ready ones (not
        while a session of the size waits: it takes one). On a cluster a launch still waiting to be placed stands
        in the same queue as that session, so it is called off."""
        order = sorted(rows, key=lambda row: (row.ready, row.hostname is not None, -row.created_at.timestamp()))
        for row in order[:surplus]:
            if row.ready and sessions_wait:
                continue
            if not await self.store.remove(row.pool_id):
                continue  # claimed meanwhile
            log.info("stopping pooled server %s (%s): the pool needs fewer now", row.pool_id, row.size)
            launch = self._launching.get(row.pool_id)
            if row.backend_state is not None:
                await self.manager.backend.stop(row.backend_state)
            elif launch is not None and self.manager.backend.places_servers:  # see _target
                launch.cancel()  # the server the cluster may still place is stopped as one no row knows

    async def _launch(self, size: ServerSize, now: datetime) -> None:
        pool_id = uuid.uuid4().hex
        await self.store.add(pool_id, size, self.manager.backend.name, self.manager.replica_id, now)
        task = asyncio.create_task(self._start(pool_id, size), name=f"pool {size} {pool_id}")
        self._launching[pool_id] = task

        def done(task: asyncio.Task[None]) -> None:
            self._launching.pop(pool_id, None)
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("launching pooled server %s failed", pool_id, exc_info=exc)

        task.add_done_callback(done)

    async def _start(self, pool_id: str, size: ServerSize) -> None:
        """Launch a pooled server, record where it runs, and mark it Ready once it answers."""
        manager, backend = self.manager, self.manager.backend
        profile = manager.sizes[size].profile
        spec = ServerSpec(size=size.value, token_public_key=manager.token_public_key, profile=profile, pool_id=pool_id)
        try:
            hostname, state = await backend.start(spec)
        except BackendError as exc:
            log.warning("could not start a pooled %s render server: %s", size, exc.message)
            await self.store.remove(pool_id)
            self._back_off(size)
            return
        try:
            recorded = await self.store.launched(pool_id, state, hostname)
        except BaseException:
            await backend.stop(state)  # no row knows it yet: nothing else would stop it
            raise
        if not recorded:
            await backend.stop(state)  # trimmed while it launched
            return
        if not await self._until_running(state):
            log.warning("pooled %s render server %s did not come up; replacing it", size, pool_id)
            if await self.store.remove(pool_id):
                await backend.stop(state)
            self._back_off(size)
            return
        await self.store.ready(pool_id, manager.clock.now())  # False: a create claimed it while it booted
        self._retry.pop(size, None)

    async def _until_running(self, state: State) -> bool:
        deadline = asyncio.get_running_loop().time() + self.manager.settings.start_timeout_seconds
        while (server := await self.manager.backend.poll(state)) is ServerState.STARTING:
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(POLL_INTERVAL)
        return server is ServerState.RUNNING

    def _back_off(self, size: ServerSize) -> None:
        now = self.manager.clock.now()
        delay = self._retry.get(size, (now, RETRY_FIRST))[1]
        self._retry[size] = (now + timedelta(seconds=delay), min(delay * 2, RETRY_MOST))

    async def _check(self, rows: list[PooledServer]) -> None:
        """Replace Ready pooled servers that died; stop pooled servers no row and no session knows."""
        backend = self.manager.backend
        ready = [row for row in rows if row.ready and row.backend_state is not None]
        polls = await asyncio.gather(*(backend.poll(row.backend_state) for row in ready if row.backend_state))
        for row, found in zip(ready, polls, strict=True):
            if found is ServerState.GONE and await self.store.remove(row.pool_id):
                log.warning("pooled server %s (%s) is gone; replacing it", row.pool_id, row.size)
        # Servers first, then rows and sessions: a server listed here had its row before it was launched, and a
        # claim moves a row's server onto its session in one transaction.
        strays = [server for server in await backend.servers() if pooled(server)]
        if strays:
            known = {row.pool_id for row in await self.store.rows(backend.name)} | set(self._launching)
            strays = [server for server in strays if server["pool_id"] not in known]
        if strays:
            claimed = await self.store.claimed_pool_ids(backend.name)
            strays = [server for server in strays if server["pool_id"] not in claimed]
        for server in strays:
            log.warning("stopping pooled server %s: no pool row and no session knows it", server["pool_id"])
        await asyncio.gather(*(backend.stop(server) for server in strays))

    async def close(self) -> None:
        """Call off this hub's launches; their rows are forgotten by the next leader, their servers stopped."""
        tasks = list(self._launching.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
