"""The leader's loop: heartbeats, leadership, and the steps the leading replica runs each pass."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import ssl
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from renderhub import leases
from renderhub.backends.base import ServerState, State, pooled
from renderhub.backends.health import health
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.errors import ConfigurationError, StoreUnavailable
from renderhub.manager import SessionManager
from renderhub.models import ArrError, Session, SessionStatus
from renderhub.periodic import every
from renderhub.store.coordination import Coordination, Replica

log = logging.getLogger("renderhub.reaper")

HEARTBEAT_EVERY = timedelta(seconds=1)
# A replica silent for this long is taken for dead: others adopt the sessions it was starting.
REPLICA_TIMEOUT = timedelta(seconds=3)
# Each Ready session's server is health-checked this often (seconds), a slice of them each pass.
HEALTH_CHECK_EVERY = 1.0
PURGE_EVERY = timedelta(minutes=1)


class Replicas:
    """This hub among its region's replicas (those sharing its database and its region): its heartbeat, and the
    live ones it last saw. Other regions' hubs share the database but nothing of this: not the start of a
    session, not a conversion, not the rate limit."""

    def __init__(self, coordination: Coordination, replica: Replica) -> None:
        self.coordination = coordination
        self.replica = replica
        self.peers: list[Replica] = []  # the live replicas at the last heartbeat, this one included
        self.last_heartbeat = replica.seen_at - HEARTBEAT_EVERY

    @property
    def count(self) -> int:
        return max(1, len(self.peers))

    def alive(self, replica_id: str | None) -> bool:
        return replica_id in {peer.id for peer in self.peers}

    async def join(self, now: datetime) -> None:
        """Announce this replica; refuse to share a region with a hub on another host when either runs render
        servers as local processes (neither could find, health-check or stop the other's)."""
        await self.heartbeat(now)
        for peer in self.peers:
            if peer.host != self.replica.host and "local" in (peer.backend, self.replica.backend):
                raise ConfigurationError(
                    f"Another hub on {peer.host} (backend {peer.backend}) serves region '{peer.region}' on this "
                    "database. Hubs of one region must all use a backend every one of them can reach: --backend "
                    "ray (or give each machine a region of its own: --region)."
                )

    async def heartbeat(self, now: datetime) -> None:
        self.last_heartbeat = now
        self.replica = dataclasses.replace(self.replica, seen_at=now)
        await self.coordination.heartbeat(self.replica)
        self.peers = await self.coordination.replicas(now - REPLICA_TIMEOUT)

    async def leave(self) -> None:
        try:
            await self.coordination.leave(self.replica.id)
        except Exception:  # a hub shutting down with its database gone still shuts down
            log.warning("could not remove this replica's heartbeat row")


class Step(Protocol):
    """One job of the leader's pass; the webhook outbox and warm pools each add one (conversions run on every
    replica instead: conversion_runs.py)."""

    name: str

    async def run(self, now: datetime) -> None: ...


class Sessions:
    """Leases, health and orphaned starts: expire leases, health-check a slice of the Ready sessions' servers,
    and adopt the starts of replicas that died."""

    name = "sessions"

    def __init__(
        self, manager: SessionManager, replicas: Replicas, interval: float, trust: ssl.SSLContext | None = None
    ) -> None:
        self.manager = manager
        self.replicas = replicas
        self.trust = trust  # the hub's CA, for asking render servers how long they have been without a client
        self.slices = max(1, round(HEALTH_CHECK_EVERY / interval))
        self._turn = 0  # passes so far: which slice of the Ready sessions gets its health check

    async def run(self, now: datetime) -> None:
        self._turn += 1
        due = await self.manager.repo.sessions_to_reap(now, self.slices, self._turn % self.slices)
        await asyncio.gather(*(self._check(session, now) for session in due))

    async def _check(self, session: Session, now: datetime) -> None:
        manager = self.manager
        if session.status is SessionStatus.READY and leases.is_expired(session, now):
            # Bill exactly the lease, however late the reaper came round.
            await manager.end(session, SessionStatus.EXPIRED, at=leases.expires_at(session))
            return
        if manager.watching(session):
            return  # our own start task watches it
        state = session.backend_state
        if session.status is SessionStatus.READY:
            if state is None or await manager.backend.poll(state) is ServerState.GONE:
                await manager.end(
                    session,
                    SessionStatus.ERROR,
                    ArrError("RenderServerLost", "The render server stopped unexpectedly."),
                )
            elif session.idle_timeout_seconds is not None:
                await self._stop_if_idle(session, session.idle_timeout_seconds, now)
            return
        if session.watcher != manager.replica_id and self.replicas.alive(session.watcher):
            return  # a live replica's start task watches it
        # A Starting session nobody watches: the hub starting it died. Claim it, then finish its start.
        if not await manager.repo.coordination.claim(session, manager.replica_id):
            return  # another replica claimed it first
        log.info("adopting starting session %s (its watcher %s is gone)", session.id, session.watcher)
        manager.adopt(dataclasses.replace(session, watcher=manager.replica_id))

    async def _stop_if_idle(self, session: Session, timeout: int, now: datetime) -> None:
        """Stop a session whose render server has had no client for its idle timeout, counted from Ready or the
        last client's departure (never sooner than the scene grace, in which a client that dropped comes back to
        its scene), billed to this moment."""
        if self.trust is None or not (session.hostname and session.handshake_port and session.ready_at):
            return
        answer = await health(session.hostname, session.handshake_port, self.trust)
        idle = answer.get("idleSeconds") if answer is not None else None
        if not isinstance(idle, int | float):
            return  # a client is connected, or the server did not answer (its health check sees to that)
        idle = min(idle, (now - session.ready_at).total_seconds())  # the server started before it was Ready
        if idle >= max(timeout, self.manager.settings.scene_grace_seconds):
            minutes = f"{timeout / 60:g}"
            log.info("session %s: no client for %s s; stopping it (idle timeout)", session.id, idle)
            await self.manager.end(
                session,
                SessionStatus.STOPPED,
                ArrError(
                    "IdleTimeout", f"No client was connected for {minutes} minute(s): the session stopped itself."
                ),
            )


class Reconcile:
    """Stop render servers whose session is not live (a session ended while its hub was down, a planted one)."""

    name = "reconcile"

    def __init__(self, manager: SessionManager) -> None:
        self.manager = manager

    async def run(self, now: datetime) -> None:
        await reconcile(self.manager)


class Purge:
    """Forget ended sessions older than the retention period, once a minute (their usage records stay), and
    sessions that failed before they were Ready after a short retention, beyond each account's newest few."""

    name = "purge"

    def __init__(self, manager: SessionManager, retention: timedelta, now: datetime) -> None:
        self.manager = manager
        self.retention = retention
        settings = manager.settings
        self.failed_retention = timedelta(minutes=settings.failed_start_retention_minutes)
        self.failed_kept = settings.failed_starts_kept
        self._last = now - PURGE_EVERY

    async def run(self, now: datetime) -> None:
        if now - self._last >= PURGE_EVERY:
            self._last = now
            repo = self.manager.repo
            await repo.purge_ended(now - self.retention)
            await repo.purge_failed_starts(now - self.failed_retention, self.failed_kept)


async def reconcile(manager: SessionManager) -> list[State]:
    """Stop render servers whose session is not live (at start, and in every pass); returns them. Pooled servers
    (no session yet) are spared: the pool's own step decides how many it keeps. Never by identity alone:
    between fork and exec, a render server's child shows the server's own command line."""
    # Servers first, sessions second: a server listed here was launched for (or assigned) a session already stored.
    servers = await manager.backend.servers()
    live = await manager.repo.live_seqs()
    orphans = [
        server
        for server in servers
        if not pooled(server)
        and server.get("session_seq") not in live
        and manager.backend.identity(server) not in manager.stopping  # an ended session's server, being stopped
    ]
    for state in orphans:
        log.warning("stopping render server %s: it belongs to no live session", manager.backend.identity(state))
    await asyncio.gather(*(manager.backend.stop(state) for state in orphans))
    return orphans


class Reaper:
    """One per hub: a heartbeat every second, and while this replica leads, every step once a pass."""

    def __init__(
        self,
        manager: SessionManager,
        settings: Settings,
        clock: Clock,
        steps: Sequence[Step] = (),
        trust: ssl.SSLContext | None = None,
    ) -> None:
        self.manager = manager
        self.clock = clock
        self.interval = settings.reaper_interval_seconds
        now = clock.now()
        self.replicas = Replicas(
            manager.repo.coordination,
            Replica(manager.replica_id, socket.gethostname(), manager.backend.name, now, now, manager.repo.region),
        )
        self.steps: list[Step] = [
            Sessions(manager, self.replicas, self.interval, trust),
            Reconcile(manager),
            Purge(manager, timedelta(days=settings.retention_days), now),
            *steps,
        ]
        self.leading = False  # whether this replica ran the last pass

    async def join(self) -> None:
        """Before serving: announce this replica (see Replicas.join), and stop servers no live session owns."""
        await self.replicas.join(self.clock.now())
        await reconcile(self.manager)

    async def tick(self) -> None:
        """One period: a heartbeat now and then, and the pass if this replica leads."""
        now = self.clock.now()
        if now - self.replicas.last_heartbeat >= HEARTBEAT_EVERY:
            await self.replicas.heartbeat(now)
        leading = await self.manager.repo.coordination.lead()
        if leading != self.leading:
            self.leading = leading
            log.info("replica %s %s the reaper", self.replicas.replica.id, "leads" if leading else "no longer leads")
        if leading:
            await self.reap()

    async def reap(self) -> None:
        """One pass: every step, side by side; one replica at a time runs it (see tick)."""
        now = self.clock.now()
        await asyncio.gather(*(self._run(step, now) for step in self.steps))

    async def _run(self, step: Step, now: datetime) -> None:
        try:
            await step.run(now)
        except StoreUnavailable:
            log.warning("reaper step %s: the store is unavailable; retrying", step.name)
        except Exception:
            log.exception("reaper step %s failed", step.name)  # the other steps, and the next pass, go on

    async def _pass(self) -> None:
        try:
            await self.tick()
        except StoreUnavailable:
            log.warning("reaper: the store is unavailable; retrying")
        except Exception:
            log.exception("reaper pass failed")  # keep reaping: one bad pass must not end all leases

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The loop as a background task for the block's duration; its last pass ends before the block does."""
        return every(self.interval, self._pass, "reaper")
