"""The session manager with real render servers: leases, health, capacity, start failures, stop races."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from renderhub.auth import TokenService, new_signing_key
from renderhub.backends.base import Backend, ServerState
from renderhub.backends.local import LocalBackend
from renderhub.clock import Clock, FakeClock
from renderhub.config import Settings
from renderhub.errors import Conflict, NotFound
from renderhub.manager import SessionManager
from renderhub.models import ServerSize, Session, SessionStatus, SizeProfile
from renderhub.store import open_store
from tests.fakes import FailingBackend, SilentBackend, SlowBackend
from tests.hubs import kill_render_servers, pid_alive, wait_for

ACCOUNT = "8d3c2f4e-0000-4000-8000-000000000001"
PUBLIC_KEY = TokenService(new_signing_key(), timedelta(hours=1)).public_pem
Factory = Callable[..., SessionManager]


@pytest.fixture
async def managers(tmp_path: Path) -> AsyncIterator[Factory]:
    """Build managers on one SQLite store: manager(backend_class=..., clock=..., capacity=..., **settings)."""
    settings = Settings(data_dir=tmp_path, stop_grace_seconds=2)
    built: list[SessionManager] = []
    async with open_store(settings.async_database_url) as repo:

        def build(
            backend_class: type[Backend] = LocalBackend,
            clock: Clock | None = None,
            capacity: int = 4,
            **changes: object,
        ) -> SessionManager:
            hub_settings = settings.model_copy(update=changes)
            sizes = {size: SizeProfile(size, 8.1, Decimal("0.05"), capacity, {}) for size in ServerSize}
            backend = backend_class(hub_settings)  # type: ignore[call-arg]
            manager = SessionManager(hub_settings, repo, backend, sizes, clock or Clock(), PUBLIC_KEY)
            built.append(manager)
            return manager

        yield build
        for manager in built:
            await manager.close()
    kill_render_servers(tmp_path)


async def until(manager: SessionManager, session_id: str, *statuses: SessionStatus, timeout: float = 10) -> Session:
    """Run reaper passes until the session reaches one of the statuses."""
    deadline = time.monotonic() + timeout
    while True:
        session = await manager.get(ACCOUNT, session_id)
        if session.status in statuses:
            return session
        assert time.monotonic() < deadline, f"{session_id} stayed {session.status}: {session.error}"
        await manager.reap()
        await asyncio.sleep(0.02)


async def test_create_becomes_ready_with_ports_in_arr_range(managers: Factory) -> None:
    manager = managers()
    session, created = await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    assert created and session.status is SessionStatus.STARTING
    ready = await until(manager, "s1", SessionStatus.READY)
    assert ready.handshake_port and 49152 <= ready.handshake_port <= 65534
    assert ready.inspector_port and 49152 <= ready.inspector_port <= 65534
    assert ready.teraflops == 8.1 and ready.ready_at is not None
    assert pid_alive(ready.backend_state["pid"])  # type: ignore[index]


async def test_retried_create_returns_the_session_and_other_settings_conflict(managers: Factory) -> None:
    manager = managers()
    first, _ = await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    again, created = await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    assert not created and again.id == first.id
    with pytest.raises(Conflict):
        await manager.create(ACCOUNT, "s1", ServerSize.PREMIUM, 10)
    await manager.stop(ACCOUNT, "s1")
    ended, created = await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    assert not created and ended.status is SessionStatus.STOPPED  # never restarted


async def test_lease_expiry_with_a_fake_clock(managers: Factory) -> None:
    clock = FakeClock()
    manager = managers(clock=clock)
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 2)
    ready = await until(manager, "s1", SessionStatus.READY)
    pid = ready.backend_state["pid"]  # type: ignore[index]
    clock.advance(minutes=1, seconds=59)
    await manager.reap()
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.READY
    await manager.update(ACCOUNT, "s1", 3)  # a new total: 3 minutes from Ready
    clock.advance(minutes=1)
    await manager.reap()
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.READY
    clock.advance(minutes=5)  # the reaper comes late: billing still ends at the lease
    await manager.reap()
    expired = await manager.get(ACCOUNT, "s1")
    assert expired.status is SessionStatus.EXPIRED
    assert expired.ended_at == ready.ready_at + timedelta(minutes=3)  # type: ignore[operator]
    assert not pid_alive(pid)
    [record] = await manager.repo.usage(ACCOUNT)
    assert record.billable_minutes == 3 and record.cost == Decimal("0.1500")


async def test_zero_lease_expires_within_two_seconds_of_ready(managers: Factory) -> None:
    manager = managers(reaper_interval_seconds=0.25)
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 0)
    while (session := await manager.get(ACCOUNT, "s1")).status is SessionStatus.STARTING:
        await asyncio.sleep(0.01)
    from renderhub.reaper import running_reaper

    async with running_reaper(manager, manager.settings.reaper_interval_seconds):
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


async def test_a_dead_render_server_fails_its_session_within_5_seconds(managers: Factory) -> None:
    manager = managers()
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    ready = await until(manager, "s1", SessionStatus.READY)
    os.kill(ready.backend_state["pid"], signal.SIGKILL)  # type: ignore[index]
    killed = time.monotonic()
    failed = await until(manager, "s1", SessionStatus.ERROR, timeout=5)
    assert time.monotonic() - killed < 5
    assert failed.error is not None and failed.error.code == "RenderServerLost"
    [record] = await manager.repo.usage(ACCOUNT)
    assert record.billable_minutes == 1  # Ready until it died: a started minute


async def test_capacity_per_size_ends_extra_sessions_in_error(managers: Factory) -> None:
    manager = managers(capacity=1)
    await manager.create(ACCOUNT, "first", ServerSize.STANDARD, 10)
    await manager.create(ACCOUNT, "second", ServerSize.STANDARD, 10)
    await manager.create(ACCOUNT, "premium", ServerSize.PREMIUM, 10)
    await until(manager, "first", SessionStatus.READY)
    await until(manager, "premium", SessionStatus.READY)
    refused = await until(manager, "second", SessionStatus.ERROR)
    assert refused.error is not None and refused.error.code == "CapacityExceeded"
    assert "Standard" in refused.error.message
    await manager.stop(ACCOUNT, "first")
    await manager.create(ACCOUNT, "third", ServerSize.STANDARD, 10)
    await until(manager, "third", SessionStatus.READY)


async def test_a_launch_failure_is_the_sessions_error(managers: Factory) -> None:
    manager = managers(FailingBackend)
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    failed = await until(manager, "s1", SessionStatus.ERROR)
    assert failed.error is not None and failed.error.code == "RenderServerLaunchFailed"
    [record] = await manager.repo.usage(ACCOUNT)
    assert record.billable_minutes == 0


async def test_a_server_that_never_answers_times_out(managers: Factory, tmp_path: Path) -> None:
    manager = managers(SilentBackend, start_timeout_seconds=1.0)
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    failed = await until(manager, "s1", SessionStatus.ERROR, timeout=5)
    assert failed.error is not None and failed.error.code == "StartTimeout"
    # The status changes first, then the server is stopped: give the stop its moment.
    wait_for(lambda: not pid_alive(failed.backend_state["pid"]), timeout=3)  # type: ignore[index]


async def test_stop_while_starting_stops_the_server_it_was_launching(managers: Factory, tmp_path: Path) -> None:
    manager = managers(SlowBackend)
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    await manager.stop(ACCOUNT, "s1")
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.STOPPED
    await asyncio.sleep(SlowBackend.delay + 1.0)  # the launch completes after the stop
    from tests.hubs import render_server_pids

    assert render_server_pids(tmp_path) == []
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.STOPPED


async def test_stop_is_idempotent_and_unknown_ids_are_not_found(managers: Factory) -> None:
    manager = managers()
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    await until(manager, "s1", SessionStatus.READY)
    await manager.stop(ACCOUNT, "s1")
    await manager.stop(ACCOUNT, "s1")
    assert len(await manager.repo.usage(ACCOUNT)) == 1
    with pytest.raises(NotFound):
        await manager.stop(ACCOUNT, "nope")
    with pytest.raises(Conflict):
        await manager.update(ACCOUNT, "s1", 100)


async def test_reconcile_stops_orphans_and_keeps_live_servers(managers: Factory) -> None:
    manager = managers()
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    ready = await until(manager, "s1", SessionStatus.READY)
    from renderhub.backends.base import ServerSpec
    from tests.hubs import free_port

    _, orphan = await manager.backend.start(
        ServerSpec(ACCOUNT, "ghost", 99, "Standard", free_port(), free_port(), PUBLIC_KEY)
    )
    while await manager.backend.poll(orphan) is not ServerState.RUNNING:  # planted long before a restart
        await asyncio.sleep(0.02)
    stopped = await managers().reconcile()
    assert [s["pid"] for s in stopped] == [orphan["pid"]]
    assert not pid_alive(orphan["pid"]) and pid_alive(ready.backend_state["pid"])  # type: ignore[index]


async def test_a_late_second_watcher_leaves_a_ready_server_alone(managers: Factory) -> None:
    """A reaper pass that read the session while Starting adopts it just as the start task marks it Ready:
    losing that race must not stop the server the session now runs on."""
    from dataclasses import replace

    manager = managers()
    await manager.create(ACCOUNT, "s1", ServerSize.STANDARD, 10)
    ready = await until(manager, "s1", SessionStatus.READY)
    stale = replace(ready, status=SessionStatus.STARTING, ready_at=None)
    await managers()._await_ready(stale, ready.backend_state)  # type: ignore[arg-type]
    assert pid_alive(ready.backend_state["pid"])  # type: ignore[index]
    assert (await manager.get(ACCOUNT, "s1")).status is SessionStatus.READY
