"""The warm pool's logic on the in-memory backend: a create takes a Ready pooled server and answers Ready; the pool
refills, gives way to sessions on a full host and to waiting ones, replaces dead servers, stops surplus and unknown
ones, survives its leader, and never hands one server to two sessions. tests/test_warm_pool_servers.py runs it with
real render servers and the official SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import pytest

from renderhub.backends.base import ServerSpec, pooled
from renderhub.backends.memory import MemoryBackend
from renderhub.clock import FakeClock
from renderhub.models import ServerSize, Session, SessionStatus
from renderhub.pools import CHECK_EVERY, WarmPool
from renderhub.reaper import Reaper
from renderhub.store.pools import PooledServer
from tests.test_manager import ACCOUNT, OTHER_ACCOUNT, PUBLIC_KEY, Factory, hubs, until  # noqa: F401 (hubs: a fixture)

STANDARD = ServerSize.STANDARD
PoolFactory = Callable[..., tuple[Reaper, WarmPool]]


@pytest.fixture
async def pooled_hubs(hubs: Factory) -> AsyncIterator[PoolFactory]:  # noqa: F811
    """hubs(...) with a warm pool step of `targets` ({"Standard": 2} unless told) in its reaper."""
    made: list[WarmPool] = []

    def build(targets: dict[str, int] | None = None, **changes: object) -> tuple[Reaper, WarmPool]:
        targets = {"Standard": 2} if targets is None else targets
        reaper = hubs(warm_pool=targets, **changes)
        pool = WarmPool(
            reaper.manager, reaper.replicas.alive, {ServerSize(k): v for k, v in targets.items()}, reaper.clock.now()
        )
        reaper.steps.append(pool)
        made.append(pool)
        return reaper, pool

    yield build
    for pool in made:
        await pool.close()


async def rows(reaper: Reaper) -> list[PooledServer]:
    return await reaper.manager.repo.pools.rows(reaper.manager.backend.name)


async def fill(reaper: Reaper, ready: int, size: ServerSize = STANDARD, timeout: float = 10) -> list[PooledServer]:
    """Run reaper passes until the pool holds exactly `ready` Ready servers of the size and none booting."""
    deadline = time.monotonic() + timeout
    while True:
        await reaper.reap()
        mine = [row for row in await rows(reaper) if row.size is size]
        if len(mine) == ready and all(row.ready for row in mine):
            return mine
        assert time.monotonic() < deadline, f"the pool holds {mine}, not {ready} Ready"
        await asyncio.sleep(0.02)


async def passes(reaper: Reaper, count: int = 5) -> None:
    for _ in range(count):
        await reaper.reap()
        await asyncio.sleep(0.02)


def server_count(reaper: Reaper) -> int:
    backend = reaper.manager.backend
    assert isinstance(backend, MemoryBackend)
    return len(backend._servers)


async def test_a_create_takes_a_ready_pooled_server_and_answers_ready_then_the_pool_refills(
    pooled_hubs: PoolFactory,
) -> None:
    reaper, _ = pooled_hubs()
    manager = reaper.manager
    before = {row.pool_id: row for row in await fill(reaper, 2)}
    session, created = await manager.create(ACCOUNT, "warm", STANDARD, 10)
    assert created and session.status is SessionStatus.READY, "the create's own answer is Ready"
    assert session.hostname and session.handshake_port and session.teraflops == 8.1
    stored = await manager.get(ACCOUNT, "warm")
    assert stored.status is SessionStatus.READY and stored.handshake_port == session.handshake_port
    assert stored.backend_state and stored.backend_state["pool_id"] in before
    taken = before[stored.backend_state["pool_id"]]
    assert taken.ready_at and stored.ready_at and stored.ready_at > taken.ready_at, "billed from its assignment"
    served = [s for s in await manager.backend.servers() if s["session_seq"] == session.seq]
    assert len(served) == 1 and not pooled(served[0]), "the server serves the session now"
    assert len(await rows(reaper)) == 1
    refilled = await fill(reaper, 2)
    assert stored.backend_state["pool_id"] not in {row.pool_id for row in refilled}
    await manager.stop(ACCOUNT, "warm")
    assert server_count(reaper) == 2, "the session's server stopped with it; the pool's two wait"


async def test_a_size_without_a_pool_starts_as_before(pooled_hubs: PoolFactory) -> None:
    reaper, _ = pooled_hubs({"Standard": 1})
    await fill(reaper, 1)
    session, _ = await reaper.manager.create(ACCOUNT, "premium", ServerSize.PREMIUM, 10)
    assert session.status is SessionStatus.STARTING
    await until(reaper, "premium", SessionStatus.READY)
    assert len(await rows(reaper)) == 1, "the Standard pool's server is still there"


async def test_the_pool_gives_way_to_sessions_on_a_full_host(pooled_hubs: PoolFactory) -> None:
    reaper, _ = pooled_hubs(capacity=2)
    manager = reaper.manager
    await fill(reaper, 2)
    for account in (ACCOUNT, OTHER_ACCOUNT):  # the default quota is half the capacity: one each
        session, _ = await manager.create(account, "s", STANDARD, 10)
        assert session.status is SessionStatus.READY
    await passes(reaper)
    assert await rows(reaper) == [] and server_count(reaper) == 2, "two sessions fill the host: no pool"
    await manager.stop(ACCOUNT, "s")
    assert len(await fill(reaper, 1)) == 1 and server_count(reaper) == 2, "room for one: the pool takes it"


async def test_the_pool_trims_servers_past_the_hosts_capacity(pooled_hubs: PoolFactory, hubs: Factory) -> None:  # noqa: F811
    reaper, _ = pooled_hubs(capacity=3)
    await fill(reaper, 2)
    # A replica that keeps no pool launches servers of its own beside the pool's: the host would run four.
    cold = hubs(capacity=3)
    for account in (ACCOUNT, OTHER_ACCOUNT):  # one each: the default quota
        session, _ = await cold.manager.create(account, "s", STANDARD, 10)
        assert session.status is SessionStatus.STARTING
        await until(cold, "s", SessionStatus.READY, account=account)
    await passes(reaper)
    assert server_count(reaper) == 3 and len(await rows(reaper)) == 1, "the pool stopped one of its two"


async def test_no_refill_while_a_session_waits_and_a_waiting_session_takes_a_pooled_server(
    pooled_hubs: PoolFactory,
) -> None:
    reaper, _ = pooled_hubs({"Standard": 1}, capacity=1, queue_timeout_seconds=30)
    manager = reaper.manager
    await fill(reaper, 1)
    first, _ = await manager.create(ACCOUNT, "first", STANDARD, 10)
    assert first.status is SessionStatus.READY
    second, _ = await manager.create(OTHER_ACCOUNT, "second", STANDARD, 10)
    assert second.status is SessionStatus.STARTING
    await passes(reaper, 10)
    assert (await manager.get(OTHER_ACCOUNT, "second")).queue_position == 1
    assert await rows(reaper) == [], "the host is full and a session waits: the pool starts nothing"
    # A pooled server appears while it waits (the pool had it booting a moment too long, say): it takes it.
    store = manager.repo.pools
    await store.add("late1", STANDARD, manager.backend.name, manager.replica_id, manager.clock.now())
    hostname, state = await manager.backend.start(ServerSpec("Standard", PUBLIC_KEY, pool_id="late1"))
    assert await store.launched("late1", state, hostname) and await store.ready("late1", manager.clock.now())
    ready = await until(reaper, "second", SessionStatus.READY, account=OTHER_ACCOUNT)
    assert ready.backend_state and ready.backend_state["pool_id"] == "late1"
    await manager.stop(ACCOUNT, "first")
    await manager.stop(OTHER_ACCOUNT, "second")
    assert len(await fill(reaper, 1)) == 1, "the host is free again: the pool refills"


async def test_a_dead_pooled_server_is_replaced(pooled_hubs: PoolFactory) -> None:
    clock = FakeClock()
    reaper, _ = pooled_hubs({"Standard": 1}, clock=clock)
    (dead,) = await fill(reaper, 1)
    backend = reaper.manager.backend
    assert isinstance(backend, MemoryBackend) and dead.backend_state
    backend.crash(dead.backend_state)
    clock.advance(seconds=CHECK_EVERY.total_seconds())
    (replacement,) = await fill(reaper, 1)
    assert replacement.pool_id != dead.pool_id and server_count(reaper) == 1


async def test_surplus_and_unknown_pooled_servers_are_stopped_claimed_ones_kept_and_adopted(
    pooled_hubs: PoolFactory,
) -> None:
    clock = FakeClock()
    reaper, _ = pooled_hubs({"Standard": 2}, clock=clock)
    manager = reaper.manager
    await fill(reaper, 2)
    # A hub that died between claiming a pooled server for a session and handing it over: the session is
    # Starting, its watcher gone, the server pooled still, only the session's state knows it.
    orphan = await manager.repo.insert_session(
        Session(ACCOUNT, "orphan", STANDARD, 10, SessionStatus.STARTING, clock.now(), backend="memory",
                watcher="dead-replica", region=manager.repo.region)
    )  # fmt: skip
    claimed = await manager.repo.pools.claim(orphan, manager.backend.name)
    assert claimed is not None and claimed.backend_state
    _, stray = await manager.backend.start(ServerSpec("Standard", PUBLIC_KEY, pool_id="stray1"))
    # Fewer wanted now (the hub restarted with --warm-pool Standard=0, say).
    shrunk, _ = pooled_hubs({"Standard": 0}, clock=clock)
    reaper.steps.pop()  # the first pool step goes; the second hub's runs in this reaper's place
    reaper.steps.append(shrunk.steps[-1])
    clock.advance(seconds=CHECK_EVERY.total_seconds())
    ready = await until(reaper, "orphan", SessionStatus.READY)
    assert ready.backend_state and ready.backend_state["pool_id"] == claimed.pool_id, "adopted with its server"
    await passes(reaper)
    assert await rows(reaper) == []
    left = await manager.backend.servers()
    assert [s["pool_id"] for s in left] == [claimed.pool_id] and left[0]["session_seq"] == orphan.seq
    assert manager.backend.identity(stray) not in {manager.backend.identity(s) for s in left}


async def test_a_launch_whose_leader_died_is_forgotten_and_relaunched(pooled_hubs: PoolFactory) -> None:
    reaper, _ = pooled_hubs({"Standard": 1})
    manager = reaper.manager
    await manager.repo.pools.add("leftover", STANDARD, manager.backend.name, "dead-leader", manager.clock.now())
    (row,) = await fill(reaper, 1)
    assert row.pool_id != "leftover"


async def test_two_replicas_never_hand_one_pooled_server_to_two_sessions(pooled_hubs: PoolFactory) -> None:
    leader, _ = pooled_hubs({"Standard": 1})
    other, _ = pooled_hubs({"Standard": 1})
    await fill(leader, 1)
    (a, _), (b, _) = await asyncio.gather(
        leader.manager.create(ACCOUNT, "one", STANDARD, 10), other.manager.create(ACCOUNT, "two", STANDARD, 10)
    )
    assert sorted([a.status, b.status]) == sorted([SessionStatus.READY, SessionStatus.STARTING])
    one = await until(leader, "one", SessionStatus.READY)
    two = await until(other, "two", SessionStatus.READY)
    assert one.backend_state and two.backend_state
    assert leader.manager.backend.identity(one.backend_state) != leader.manager.backend.identity(two.backend_state)


async def test_pooled_servers_bill_nobody_until_assigned(pooled_hubs: PoolFactory) -> None:
    clock = FakeClock()
    reaper, _ = pooled_hubs({"Standard": 1}, clock=clock)
    manager = reaper.manager
    await fill(reaper, 1)
    clock.advance(minutes=30)  # the server waited half an hour in the pool
    session, _ = await manager.create(OTHER_ACCOUNT, "billed", STANDARD, 10)
    assert session.ready_at == clock.now()
    clock.advance(minutes=2, seconds=30)
    await manager.stop(OTHER_ACCOUNT, "billed")
    (record,) = await manager.repo.usage(OTHER_ACCOUNT)
    assert record.billable_minutes == 3 and record.ready_at == session.ready_at
    assert clock.now() - timedelta(minutes=2, seconds=30) == record.ready_at


class QueueingCluster(MemoryBackend):
    """A cluster scheduler's backend whose nodes are full: a launch waits to be placed until `room` is set."""

    places_servers = True
    room = asyncio.Event()

    async def start(self, spec: ServerSpec) -> tuple[str, dict[str, object]]:
        await self.room.wait()
        return await super().start(spec)


async def test_on_a_queueing_cluster_a_waiting_session_calls_off_unplaced_pool_launches(
    pooled_hubs: PoolFactory,
) -> None:
    QueueingCluster.room = asyncio.Event()
    reaper, pool = pooled_hubs({"Standard": 1}, backend_class=QueueingCluster, queue_timeout_seconds=30)
    manager = reaper.manager
    await passes(reaper, 2)
    (launch,) = await rows(reaper)
    assert launch.hostname is None, "its launch waits to be placed"
    session, _ = await manager.create(ACCOUNT, "queued", STANDARD, 10)
    assert session.status is SessionStatus.STARTING
    await passes(reaper, 2)
    assert await rows(reaper) == [] and not pool._launching, "the session comes first in the cluster's queue"
    QueueingCluster.room.set()
    await until(reaper, "queued", SessionStatus.READY)
    assert len(await fill(reaper, 1)) == 1, "no session waits now: the pool refills"
