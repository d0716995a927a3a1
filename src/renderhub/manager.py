"""SessionManager, the one orchestrator: the only caller of the store and the backends."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import socket
import uuid
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

from renderhub import leases, metering
from renderhub.backends.base import Backend, ServerSpec, ServerState, State
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.errors import BackendError, ConfigurationError, Conflict, NotFound
from renderhub.models import ServerSize, Session, SessionError, SessionStatus, SizeProfile
from renderhub.store.coordination import Replica
from renderhub.store.repository import DuplicateSession, Repository

log = logging.getLogger("renderhub.manager")

PORT_RANGE = (49152, 65534)  # the range the swagger gives for handshakePort and arrInspectorPort
POLL_INTERVAL = 0.02
PURGE_EVERY = timedelta(minutes=1)
HEARTBEAT_EVERY = timedelta(seconds=1)
# Each Ready session's server is health-checked this often (seconds), a slice of them each reaper pass.
HEALTH_CHECK_EVERY = 1.0
BACKGROUND_TRANSACTIONS = 4
# A replica silent for this long is taken for dead: others adopt the sessions it was starting.
REPLICA_TIMEOUT = timedelta(seconds=3)


class SessionManager:
    """Creates, updates, stops and reaps sessions; owns the timeouts the backends do not."""

    def __init__(
        self,
        settings: Settings,
        repo: Repository,
        backend: Backend,
        sizes: dict[ServerSize, SizeProfile],
        clock: Clock,
        token_public_key: str,
        replica_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.token_public_key = token_public_key
        self.repo = repo
        self.backend = backend
        self.sizes = sizes
        self.clock = clock
        self._starting: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._last_purge = clock.now() - PURGE_EVERY
        self.replica = Replica(
            replica_id or uuid.uuid4().hex, socket.gethostname(), backend.name, clock.now(), clock.now()
        )
        self.peers: list[Replica] = []  # the live replicas at the last heartbeat, this one included
        self._last_heartbeat = clock.now() - HEARTBEAT_EVERY
        self.leading = False  # whether this replica ran the last reap pass
        self._turn = 0  # reap passes so far: which slice of the Ready sessions gets its health check
        # Starts are background work: a few of their transactions at a time, so that a burst of creates
        # leaves the connection pool to the requests (bench/scale.py, 500 creates with 32 in flight:
        # p99 fell from about 450 ms to 130-200 ms, creates/s rose from about 350 to 550-700).
        self._background = asyncio.Semaphore(BACKGROUND_TRANSACTIONS)

    # The five session operations

    async def create(self, account_id: str, session_id: str, size: ServerSize, lease: int) -> tuple[Session, bool]:
        """A new Starting session, or the existing one for a retried create with the same settings."""
        leases.check_new_lease(lease)
        # Insert first, look second: a new session (the usual case) costs one statement.
        fresh = Session(
            account_id=account_id,
            id=session_id,
            size=size,
            max_lease_minutes=lease,
            status=SessionStatus.STARTING,
            created_at=self.clock.now(),
            backend=self.backend.name,
            watcher=self.replica.id,
        )
        try:
            session = await self.repo.insert_session(fresh)
        except DuplicateSession:
            existing = await self.repo.get_session(account_id, session_id)
        else:
            self._watch(session, self._start(session), "start")
            return session, True
        if existing is None:  # it was there a moment ago, and purged since: as good as new
            return await self.create(account_id, session_id, size, lease)
        if existing.size != size or existing.max_lease_minutes != lease:
            raise Conflict(
                f"A session with the id '{session_id}' already exists with other settings "
                f"(size {existing.size}, maxLeaseTimeMinutes {existing.max_lease_minutes})."
            )
        return existing, False

    async def get(self, account_id: str, session_id: str) -> Session:
        session = await self.repo.get_session(account_id, session_id)
        if session is None:
            raise NotFound(f"No session with the id '{session_id}' exists.", target="session_id")
        return session

    async def update(self, account_id: str, session_id: str, lease: int) -> Session:
        """Set a new total lease (ARR's PATCH does not add)."""
        while True:
            session = await self.get(account_id, session_id)
            leases.check_extension(session, lease)
            if await self.repo.extend_lease(session, lease):
                return await self.get(account_id, session_id)
            # The session changed under us (stopped, extended by another client): judge it again.

    async def stop(self, account_id: str, session_id: str) -> None:
        """End a live session and its render server; stopping an ended session changes nothing."""
        while True:
            session = await self.get(account_id, session_id)
            if not session.status.live:
                return
            if await self._end(session, SessionStatus.STOPPED):
                return

    async def list_page(self, account_id: str, after_seq: int) -> tuple[list[Session], int | None]:
        """One page of live sessions and the cursor of the next page, if there is one."""
        limit = self.settings.page_size
        page = await self.repo.list_live_sessions(account_id, after_seq, limit + 1)
        if len(page) > limit:
            return page[:limit], page[limit - 1].seq
        return page, None

    # Starting a render server

    def _watch(self, session: Session, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run a session's start in a task of its own; the reaper leaves sessions with one alone."""
        key = (session.account_id, session.id)
        task = asyncio.create_task(work, name=f"{what} {session.id}")
        self._starting[key] = task
        task.add_done_callback(lambda _: self._starting.pop(key, None))

    async def _start(self, session: Session) -> None:
        try:
            await self._bring_up(session)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("starting session %s failed", session.id)
            await self._fail(session, SessionError("InternalServerError", "The render server could not be started."))

    async def _bring_up(self, session: Session) -> None:
        profile = self.sizes[session.size]
        async with self._background:
            ahead = (
                0
                if self.backend.places_servers
                else await self.repo.live_sessions_before(session.size, session.seq, self.backend.name)
            )
            ports = None if ahead >= profile.capacity else await self._allocate_ports(session)
        if ports is None:
            await self._fail(
                session,
                SessionError(
                    "CapacityExceeded",
                    f"No {session.size} render server is free: all {profile.capacity} on this host are in use. "
                    "Stop a session or retry later.",
                ),
            )
            return
        handshake_port, inspector_port = ports
        spec = ServerSpec(
            account_id=session.account_id,
            session_id=session.id,
            session_seq=session.seq,
            size=session.size.value,
            handshake_port=handshake_port,
            inspector_port=inspector_port,
            token_public_key=self.token_public_key,
            profile=profile.profile,
        )
        try:
            hostname, state = await self.backend.start(spec)
        except BackendError as exc:
            await self._fail(session, SessionError(exc.code, exc.message))
            return
        async with self._background:
            recorded = await self.repo.set_backend_state(session, state, hostname)
        if not recorded:
            await self._release_unless_live(session, state)
            return
        await self._await_ready(session, state)

    async def _await_ready(self, session: Session, state: State) -> None:
        """Ready once the server answers on its handshake port; Error if it dies or takes too long."""
        # A queued session's wait for room on a cluster does not count against its start.
        wait = self.settings.start_timeout_seconds + self.settings.queue_timeout_seconds
        deadline = session.created_at + timedelta(seconds=wait)
        while True:
            server = await self.backend.poll(state)
            if server is ServerState.RUNNING:
                break
            if server is ServerState.GONE:
                await self._fail(
                    session, SessionError("RenderServerExited", "The render server exited while starting.")
                )
                return
            if self.clock.now() >= deadline:
                await self._fail(
                    session,
                    SessionError(
                        "StartTimeout",
                        f"The render server did not answer within {self.settings.start_timeout_seconds:g} seconds.",
                    ),
                )
                return
            await asyncio.sleep(POLL_INTERVAL)
        teraflops = self.sizes[session.size].teraflops
        async with self._background:
            ready = await self.repo.mark_ready(session, self.clock.now(), teraflops)
        if not ready:
            await self._release_unless_live(session, state)

    async def _release_unless_live(self, session: Session, state: State) -> None:
        """After losing a race on a session's status: stop this server unless a live session still owns it
        (a second watcher may have marked it Ready first; a stop may have ended it while it booted)."""
        current = await self.repo.get_session(session.account_id, session.id)
        if current is not None and current.status.live and current.backend_state is not None:
            if self.backend.identity(current.backend_state) == self.backend.identity(state):
                return
        await self.backend.stop(state)

    async def _allocate_ports(self, session: Session) -> tuple[int, int]:
        """Two free ports in ARR's range: not held by a live session, and bindable on this host now.
        A session adopted from a dead replica keeps the ports it had, which its server may already use."""
        if session.handshake_port is not None and session.inspector_port is not None:
            return session.handshake_port, session.inspector_port
        host = self.settings.host

        def choose(taken: set[int]) -> tuple[int, int]:
            chosen: list[int] = []
            while len(chosen) < 2:
                port = random.randint(*PORT_RANGE)
                if port not in taken and port not in chosen and _bindable(host, port):
                    chosen.append(port)
            return chosen[0], chosen[1]

        return await self.repo.reserve_ports(session, choose)

    # Ending sessions

    async def _end(
        self,
        session: Session,
        status: SessionStatus,
        error: SessionError | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Move the session from the status we read to a terminal one, bill it, stop its server."""
        ended_at = at or self.clock.now()
        usage = metering.usage_record(session, ended_at, self.sizes[session.size])
        ended = await self.repo.end_session(session, status, ended_at, usage, error, from_statuses=(session.status,))
        if ended and session.backend_state:
            await self.backend.stop(session.backend_state)
        return ended

    async def _fail(self, session: Session, error: SessionError) -> None:
        """End the session in Error, whatever live status it is in now."""
        while True:
            current = await self.repo.get_session(session.account_id, session.id)
            if current is None or not current.status.live:
                return
            if await self._end(current, SessionStatus.ERROR, error):
                log.warning("session %s failed: %s", session.id, error.message)
                return

    # Replicas and the lease and health loop

    @property
    def replica_count(self) -> int:
        return max(1, len(self.peers))

    async def join(self) -> None:
        """Announce this replica; refuse to share the database with a hub on another host when either runs
        render servers as local processes (neither could find, health-check or stop the other's)."""
        await self._heartbeat(self.clock.now())
        for peer in self.peers:
            if peer.host != self.replica.host and "local" in (peer.backend, self.backend.name):
                raise ConfigurationError(
                    f"Another hub on {peer.host} (backend {peer.backend}) uses this database. Hubs sharing a "
                    "database must all use a backend every one of them can reach: --backend ray."
                )

    async def _heartbeat(self, now: datetime) -> None:
        self._last_heartbeat = now
        self.replica = dataclasses.replace(self.replica, seen_at=now)
        await self.repo.coordination.heartbeat(self.replica)
        self.peers = await self.repo.coordination.replicas(now - REPLICA_TIMEOUT)

    async def tick(self) -> None:
        """One reaper period: a heartbeat now and then, and the reap pass if this replica leads."""
        now = self.clock.now()
        if now - self._last_heartbeat >= HEARTBEAT_EVERY:
            await self._heartbeat(now)
        leading = await self.repo.coordination.lead()
        if leading != self.leading:
            self.leading = leading
            log.info("replica %s %s the reaper", self.replica.id, "leads" if leading else "no longer leads")
        if leading:
            await self.reap()

    async def reap(self) -> None:
        """One pass: expire leases, health-check a slice of the Ready sessions, adopt orphaned starts, stop
        servers whose session ended, purge old sessions. One replica at a time runs it (see tick)."""
        now = self.clock.now()
        self._turn += 1
        slices = max(1, round(HEALTH_CHECK_EVERY / self.settings.reaper_interval_seconds))
        due = await self.repo.sessions_to_reap(now, slices, self._turn % slices)
        await asyncio.gather(*(self._check(session, now) for session in due), self.reconcile())
        if now - self._last_purge >= PURGE_EVERY:
            self._last_purge = now
            await self.repo.purge_ended(now - timedelta(days=self.settings.retention_days))

    async def _check(self, session: Session, now: datetime) -> None:
        if session.status is SessionStatus.READY and leases.is_expired(session, now):
            # Bill exactly the lease, however late the reaper came round.
            await self._end(session, SessionStatus.EXPIRED, at=leases.expires_at(session))
            return
        if (session.account_id, session.id) in self._starting:
            return  # our own start task watches it
        state = session.backend_state
        if session.status is SessionStatus.READY:
            if state is None or await self.backend.poll(state) is ServerState.GONE:
                await self._end(
                    session,
                    SessionStatus.ERROR,
                    SessionError("RenderServerLost", "The render server stopped unexpectedly."),
                )
            return
        if session.watcher != self.replica.id and session.watcher in {peer.id for peer in self.peers}:
            return  # a live replica's start task watches it
        # A Starting session nobody watches: the hub starting it died. Claim it, then finish its start: with
        # the server it launched, or by launching again (a backend's start is idempotent per session).
        if not await self.repo.coordination.claim(session, self.replica.id):
            return  # another replica claimed it first
        log.info("adopting starting session %s (its watcher %s is gone)", session.id, session.watcher)
        adopted = dataclasses.replace(session, watcher=self.replica.id)
        if state is not None:
            self._watch(adopted, self._await_ready(adopted, state), "adopt")
        else:
            self._watch(adopted, self._start(adopted), "relaunch")

    async def reconcile(self) -> list[State]:
        """Stop render servers whose session is not live (at start, and in every reap pass); returns them.
        Never by identity alone: between fork and exec, a render server's child shows the server's own
        command line."""
        # Servers first, sessions second: a server listed here was launched for a session already stored.
        servers = await self.backend.servers()
        live = await self.repo.live_seqs()
        orphans = [server for server in servers if server.get("session_seq") not in live]
        for state in orphans:
            log.warning("stopping render server %s: it belongs to no live session", self.backend.identity(state))
        await asyncio.gather(*(self.backend.stop(state) for state in orphans))
        return orphans

    async def close(self) -> None:
        """Cancel start tasks; their sessions are adopted by the next hub or failed by its reaper."""
        tasks = list(self._starting.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await self.repo.coordination.leave(self.replica.id)
        except Exception:  # a hub shutting down with its database gone still shuts down
            log.warning("could not remove this replica's heartbeat row")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True
