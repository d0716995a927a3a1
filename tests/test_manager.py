"""The session manager: leases, health, capacity, start failures, races and adoption on the in-memory backend;
the start and stop of real render servers on the local backend."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from renderhub.auth import TokenService, new_signing_key
from renderhub.backends.base import Assignment, Backend, ServerSpec, ServerState, State
from renderhub.backends.local import LocalBackend
from renderhub.backends.memory import MemoryBackend
from renderhub.clock import Clock, FakeClock
from renderhub.config import Settings
from renderhub.errors import Conflict, NotFound
from renderhub.manager import SessionManager
from renderhub.models import ServerSize, Session, SessionStatus, SizeProfile
from renderhub.reaper import Reaper, Step, reconcile
from renderhub.store import open_store
from tests.fakes import FailingBackend, SilentBackend, SlowBackend, SlowStopBackend
from tests.hubs import kill_render_servers, pid_alive

ACCOUNT = "8d3c2f4e-0000-4000-8000-000000000001"
OTHER_ACCOUNT = "8d3c2f4e-0000-4000-8000-000000000002"
PUBLIC_KEY = TokenService(new_signing_key(), timedelta(hours=1)).public_pem
Factory = Callable[..., Reaper]


@pytest.fixture
async def hubs(tmp_path: Path) -> AsyncIterator[Factory]:
    """Build hubs (a manager and its reaper) on one SQLite store: hubs(backend_class=..., clock=..., capacity=...,
    steps=..., **settings). Each is a replica of its own; backends of one kind share their servers, as on one
    machine."""
    settings = Settings(data_dir=tmp_path, stop_grace_seconds=2)
    built: list[SessionManager] = []
    async with open_store(settings.async_database_url) as repo:

        def build(
            backend_class: type[Backend] = MemoryBackend,
            clock: Clock | None = None,
            capacity: int = 4,
            steps: Sequence[Step] = (),
            **changes: object,
        ) -> Reaper:
            hub_settings = settings.model_copy(update=changes)
            sizes = {size: SizeProfile(size, 8.1, Decimal("0.05"), capacity, {}) for size in ServerSize}
            backend = backend_class(hub_settings)  # type: ignore[call-arg]
            manager = SessionManager(hub_settings, repo, backend, sizes, clock or Clock(), PUBLIC_KEY)
            built.append(manager)
            return Reaper(manager, hub_settings, manager.clock, steps)

        yield build
        for manager in built:
            await manager.close()
    kill_render_servers(tmp_path)


async def until(
    reaper: Reaper, session_id: str, *statuses: SessionStatus, timeout: float = 10, account: str = ACCOUNT
) -> Session:
    """Run reaper passes until the session reaches one of the statuses."""
    deadline = time.monotonic() + timeout
    while True:
        session = await reaper.manager.get(account, session_id)
        if session.status in statuses:
            return session
        assert time.monotonic() < deadline, f"{session_id} stayed {session.status}: {session.error}"
        await reaper.reap()
        await asyncio.sleep(0.02)


@pytest.mark.integration
async def test_a_real_render_server_starts_in_arr_ports_and_stops_with_its_session(hubs: Factory) -> None:
    reaper = hubs(LocalBackend)
    manager = reaper.manager
    session, created = await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    assert created and session.status is SessionStatus.STARTING
    ready = await until(reaper, "s1", SessionStatus.READY)
    assert ready.handshake_port and 49152 <= ready.handshake_port <= 65534
    assert ready.inspector_port and 49152 <= ready.inspector_port <= 65534
    assert ready.teraflops == 8.1 and ready.ready_at is not None
    pid = ready.backend_state["pid"]  # type: ignore[index]
    assert pid_alive(pid)
    await manager.stop(ACCOUNT, "s1")
    assert not pid_alive(pid)  # stop returns once the server is gone


async def test_retried_create_returns_the_session_and_other_settings_conflict(hubs: Factory) -> None:
    reaper = hubs()
    manager = reaper.manager
    first, _ = await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    again, created = await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    assert not created and again.id == first.id
    with pytest.raises(Conflict):
        await manager.create(ACCOUNT, "s1", ServerSize.PREMIUM, 10)
    await manager.stop(ACCOUNT, "s1")
    ended, created = await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    assert not created and ended.status is SessionStatus.STOPPED  # never restarted


async def test_lease_expiry_with_a_fake_clock(hubs: Factory) -> None:
    clock = FakeClock()
    reaper = hubs(clock=clock)
    manager = reaper.manager
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 2)
    ready = await until(reaper, "s1", SessionStatus.READY)
    clock.advance(minutes=1, seconds=59)
    await reaper.reap()
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.READY
    await manager.update(ACCOUNT, "s1", 3)  # a new total: 3 minutes from Ready
    clock.advance(minutes=1)
    await reaper.reap()
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.READY
    clock.advance(minutes=5)  # the reaper comes late: billing still ends at the lease
    await reaper.reap()
    expired = await manager.get(ACCOUNT, "s1")
    assert expired.status is SessionStatus.EXPIRED
    assert expired.ended_at == ready.ready_at + timedelta(minutes=3)  # type: ignore[operator]
    assert await manager.backend.servers() == []  # its server was stopped
    [record] = await manager.repo.usage(ACCOUNT)
    assert record.billable_minutes == 3 and record.cost == Decimal("0.1500")


async def test_zero_lease_expires_within_two_seconds_of_ready(hubs: Factory) -> None:
    reaper = hubs(reaper_interval_seconds=0.25)
    manager = reaper.manager
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 0)
    while (session := await manager.get(ACCOUNT, "s1")).status is SessionStatus.STARTING:
        await asyncio.sleep(0.01)
    async with reaper.running():
        ended = await until_quiet(manager, "s1")
    assert ended.status is SessionStatus.EXPIRED
    lag = (Clock().now() - session.ready_at).total_seconds()  # type: ignore[operator]
    assert lag < 2.0 or ended.ended_at == session.ready_at


async def until_quiet(manager: SessionManager, session_id: str, timeout: float = 2.0) -> Session:
    """Wait without reaping ourselves: only the reaper task may end the session."""
    deadline = time.monotonic() + timeout
    while (session := await manager.get(ACCOUNT, session_id)).status.live:
        assert time.monotonic() < deadline, "the reaper did not end the session in time"
        await asyncio.sleep(0.02)
    return session


@pytest.mark.integration
async def test_a_dead_render_server_fails_its_session_within_5_seconds(hubs: Factory) -> None:
    reaper = hubs(LocalBackend)
    manager = reaper.manager
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    ready = await until(reaper, "s1", SessionStatus.READY)
    os.kill(ready.backend_state["pid"], signal.SIGKILL)  # type: ignore[index]
    killed = time.monotonic()
    failed = await until(reaper, "s1", SessionStatus.ERROR, timeout=5)
    assert time.monotonic() - killed < 5
    assert failed.error is not None and failed.error.code == "RenderServerLost"
    [record] = await manager.repo.usage(ACCOUNT)
    assert record.billable_minutes == 1  # Ready until it died: a started minute


async def test_capacity_per_size_ends_extra_sessions_in_error(hubs: Factory) -> None:
    reaper = hubs(capacity=1)
    manager = reaper.manager
    # Another account holds the one Standard server (one account alone may hold only its quota, half of it).
    await manager.create(OTHER_ACCOUNT, "first", ServerSize.STANDARD, 10)
    await manager.create(ACCOUNT, "second", ServerSize.STANDARD, 10)
    await manager.create(ACCOUNT, "premium", ServerSize.PREMIUM, 10)
    await until(reaper, "first", SessionStatus.READY, account=OTHER_ACCOUNT)
    await until(reaper, "premium", SessionStatus.READY)
    refused = await until(reaper, "second", SessionStatus.ERROR)
    assert refused.error is not None and refused.error.code == "CapacityExceeded"
    assert "Standard" in refused.error.message
    await manager.stop(OTHER_ACCOUNT, "first")
    await manager.create(ACCOUNT, "third", ServerSize.STANDARD, 10)
    await until(reaper, "third", SessionStatus.READY)


async def test_a_launch_failure_is_the_sessions_error(hubs: Factory) -> None:
    reaper = hubs(FailingBackend)
    manager = reaper.manager
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    failed = await until(reaper, "s1", SessionStatus.ERROR)
    assert failed.error is not None and failed.error.code == "RenderServerLaunchFailed"
    assert await manager.repo.usage(ACCOUNT) == []  # never Ready: no usage record


async def test_a_server_that_never_answers_times_out(hubs: Factory) -> None:
    reaper = hubs(SilentBackend, start_timeout_seconds=0.5)
    manager = reaper.manager
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    failed = await until(reaper, "s1", SessionStatus.ERROR, timeout=5)
    assert failed.error is not None and failed.error.code == "StartTimeout"
    assert failed.error.message == "The render server did not answer within 0.5 seconds."
    assert await manager.backend.servers() == []  # the server it launched is stopped


async def servers_left(backend: Backend, timeout: float = 5) -> list[State]:
    """The backend's servers once none is left, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (servers := await backend.servers()) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return servers


async def test_stop_while_starting_stops_the_server_it_was_launching(hubs: Factory) -> None:
    reaper = hubs(SlowBackend)
    manager = reaper.manager
    backend = manager.backend
    assert isinstance(backend, SlowBackend)
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    await manager.stop(ACCOUNT, "s1")
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.STOPPED
    await asyncio.wait_for(backend.launched.wait(), 5)  # the launch completes after the stop
    assert await servers_left(backend) == []
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.STOPPED


async def test_stop_is_idempotent_and_unknown_ids_are_not_found(hubs: Factory) -> None:
    reaper = hubs()
    manager = reaper.manager
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    await until(reaper, "s1", SessionStatus.READY)
    await manager.stop(ACCOUNT, "s1")
    await manager.stop(ACCOUNT, "s1")
    assert len(await manager.repo.usage(ACCOUNT)) == 1
    with pytest.raises(NotFound):
        await manager.stop(ACCOUNT, "nope")
    with pytest.raises(Conflict):
        await manager.update(ACCOUNT, "s1", 100)


async def test_reconcile_stops_orphans_and_keeps_live_and_pooled_servers(hubs: Factory) -> None:
    reaper = hubs()
    manager = reaper.manager
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    ready = await until(reaper, "s1", SessionStatus.READY)
    # Planted long before a restart: a server whose session the store does not know, a pooled server waiting
    # for a session, and a pooled server that was given a session the store does not know.
    _, orphan = await manager.backend.start(
        ServerSpec("Standard", PUBLIC_KEY, session=Assignment(ACCOUNT, "ghost", 99))
    )
    _, waiting = await manager.backend.start(ServerSpec("Standard", PUBLIC_KEY, pool_id="warm1"))
    _, given = await manager.backend.start(ServerSpec("Standard", PUBLIC_KEY, pool_id="warm2"))
    given = await manager.backend.assign(given, Assignment(ACCOUNT, "ghost2", 98))
    restarted = hubs().manager
    stopped = await reconcile(restarted)
    identity = restarted.backend.identity
    assert sorted(identity(s) for s in stopped) == sorted([identity(orphan), identity(given)])
    assert sorted(identity(s) for s in await restarted.backend.servers()) == sorted(
        [identity(ready.backend_state), identity(waiting)]  # type: ignore[arg-type]
    )


async def test_a_server_stopping_with_its_session_is_left_to_that_stop(
    hubs: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    """A reaper pass while a stopped session's server takes its time to exit: not an orphan, no warning."""
    reaper = hubs(backend_class=SlowStopBackend)
    manager = reaper.manager
    backend = manager.backend
    assert isinstance(backend, SlowStopBackend)
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    await until(reaper, "s1", SessionStatus.READY)
    stopping = asyncio.create_task(manager.stop(ACCOUNT, "s1"))
    await asyncio.wait_for(backend.stopping.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="renderhub"):
        assert await asyncio.wait_for(reconcile(manager), 5) == []
    assert "belongs to no live session" not in caplog.text
    backend.release.set()
    await stopping
    assert await backend.servers() == []


async def test_a_late_second_watcher_leaves_a_ready_server_alone(hubs: Factory) -> None:
    """A reaper pass that read the session while Starting adopts it just as the start task marks it Ready:
    losing that race must not stop the server the session now runs on."""
    from dataclasses import replace

    reaper = hubs()
    manager = reaper.manager
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    ready = await until(reaper, "s1", SessionStatus.READY)
    stale = replace(ready, status=SessionStatus.STARTING, ready_at=None)
    await hubs().manager._await_ready(stale, ready.backend_state)  # type: ignore[arg-type]
    assert await manager.backend.poll(ready.backend_state) is ServerState.RUNNING  # type: ignore[arg-type]
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.READY


async def died(reaper: Reaper) -> None:
    """The replica is killed: its start tasks end and its heartbeat stops (its row goes, as if it timed out)."""
    await reaper.manager.close()
    await reaper.replicas.leave()


async def test_a_start_whose_replica_died_before_launching_is_adopted_and_launched(hubs: Factory) -> None:
    dead = hubs(SlowBackend)
    await dead.join()
    await dead.manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    await died(dead)  # in the middle of its launch
    assert (await dead.manager.get(ACCOUNT, "s1")).status is SessionStatus.STARTING
    survivor = hubs()
    await survivor.join()
    ready = await until(survivor, "s1", SessionStatus.READY)
    assert ready.watcher == survivor.manager.replica_id
    assert [s["session_seq"] for s in await survivor.manager.backend.servers()] == [ready.seq]


async def test_a_start_whose_replica_died_after_launching_keeps_its_server(hubs: Factory) -> None:
    dead = hubs(SilentBackend)  # the server it launches does not answer before its replica dies
    await dead.join()
    await dead.manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    launched = await until_launched(dead.manager, "s1")
    await died(dead)
    survivor = hubs()
    await survivor.join()
    ready = await until(survivor, "s1", SessionStatus.READY)
    backend = survivor.manager.backend
    assert backend.identity(ready.backend_state) == backend.identity(launched)  # type: ignore[arg-type]
    assert len(await backend.servers()) == 1  # not launched twice


async def test_a_live_replicas_start_is_left_to_it(hubs: Factory) -> None:
    starting = hubs(SilentBackend, start_timeout_seconds=30)
    await starting.join()
    await starting.manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    launched = await until_launched(starting.manager, "s1")
    other = hubs()
    await other.join()
    await other.reap()
    session = await other.manager.get(ACCOUNT, "s1")
    assert session.status is SessionStatus.STARTING and session.watcher == starting.manager.replica_id
    assert await other.manager.backend.servers() == [launched]


async def until_launched(manager: SessionManager, session_id: str, timeout: float = 5) -> State:
    """The backend state stored for a starting session, once its server has been launched."""
    deadline = time.monotonic() + timeout
    while (session := await manager.get(ACCOUNT, session_id)).backend_state is None:
        assert time.monotonic() < deadline, f"{session_id} was never launched"
        await asyncio.sleep(0.01)
    return session.backend_state


class BrokenJob:
    """A leader's step that fails every pass (a job added later with a bug, its database table missing)."""

    name = "broken"

    async def run(self, now: datetime) -> None:
        raise RuntimeError("this step is broken")


async def test_a_failing_step_leaves_the_other_steps_running(hubs: Factory, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    reaper = hubs(clock=clock, steps=[BrokenJob()])
    await reaper.manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 1)
    await until(reaper, "s1", SessionStatus.READY)
    clock.advance(minutes=2)
    await reaper.reap()
    assert (await reaper.manager.get(ACCOUNT, "s1")).status is SessionStatus.EXPIRED
    assert "reaper step broken failed" in caplog.text
