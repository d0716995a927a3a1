"""SessionManager: the five session operations and the start pipeline (the reaper drives the rest)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any

from renderhub import budgets, leases, metering
from renderhub.backends.base import Assignment, Backend, ServerSpec, ServerState, State
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.errors import BackendError, BudgetExceeded, Conflict, NotFound, QuotaExceeded, StoreUnavailable
from renderhub.models import ArrError, ServerSize, Session, SessionStatus, SizeProfile
from renderhub.paging import split_page
from renderhub.store.pools import PooledServer
from renderhub.store.repository import DuplicateSession, OverQuota, Repository

log = logging.getLogger("renderhub.manager")

POLL_INTERVAL = 0.02
QUEUE_POLL_SECONDS = 0.25  # how soon a waiting session sees a server freed
BACKGROUND_TRANSACTIONS = 1
STORE_RETRY_SECONDS = 1.0  # a failed start's Error waits for a store that cannot be written


class SessionManager:
    """Creates, updates and stops sessions and starts their servers; owns the timeouts the backends do not."""

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
        # This hub's replica id: the `watcher` of the sessions it starts (the reaper heartbeats under it).
        self.replica_id = replica_id or uuid.uuid4().hex
        self._starting: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.stopping: set[str] = set()  # backend identities of the servers this hub is stopping now
        # Starts are background work: one of their transactions at a time, so that a burst of creates leaves
        # the connection pool and the CPU to the requests (bench/scale.py, 500 creates with 32 in flight: a
        # few at a time, p99 fell from about 450 ms to 130-200 ms against unbounded; one at a time rather than
        # four, once the port reservation no longer serialized starts, creates/s 1240 against 1170 with one
        # replica, 1060 against 850 with two, while the burst's starts all end Ready 0.9-1.7 s after it).
        self._background = asyncio.Semaphore(BACKGROUND_TRANSACTIONS)

    # The five session operations

    async def create(
        self, account_id: str, session_id: str, size: ServerSize, lease: int, idle_seconds: int | None = None
    ) -> tuple[Session, bool]:
        """A new Starting session, or the existing one for a retried create with the same settings; QuotaExceeded,
        before anything starts, when the account already holds its quota of live sessions of the size.
        `idle_seconds`: how long it may go without a client (None: the account's default; 0: no idle stop)."""
        leases.check_new_lease(lease)
        default_idle, budget = await self.repo.budgets.policy(account_id)
        idle = (default_idle if idle_seconds is None else idle_seconds) or None
        try:
            asked = budgets.lease_spend(lease, self.sizes[size].price_per_minute)
            await self._check_budget(account_id, budget, asked)
        except BudgetExceeded:
            # A retried create of a session that exists is answered as one, budget or not.
            existing = await self.repo.get_session(account_id, session_id)
            if existing is None:
                raise
            return self._retried(existing, size, lease, idle), False
        # Insert first, look second: a new session (the usual case) costs one statement, its quota check included.
        fresh = Session(
            account_id=account_id,
            id=session_id,
            size=size,
            max_lease_minutes=lease,
            status=SessionStatus.STARTING,
            created_at=self.clock.now(),
            backend=self.backend.name,
            watcher=self.replica_id,
            region=self.repo.region,
            idle_timeout_seconds=idle,
        )
        try:
            session = await self.repo.insert_session(fresh, self.sizes[size].default_quota)
        except DuplicateSession:
            existing = await self.repo.get_session(account_id, session_id)
        except OverQuota:
            # A retried create of a session that exists is answered as one, quota or not.
            existing = await self.repo.get_session(account_id, session_id)
            if existing is None:
                raise await self._over_quota(account_id, size) from None
        else:
            # A warm pool's server makes the session Ready before the answer; else it answers Starting at once.
            answer: asyncio.Future[Session | None] = asyncio.get_running_loop().create_future()
            self._watch(session, self._start(session, answer=answer), "start")
            return await asyncio.shield(answer) or session, True
        if existing is None:  # it was there a moment ago, and purged since: as good as new
            return await self.create(account_id, session_id, size, lease, idle or 0)
        return self._retried(existing, size, lease, idle), False

    @staticmethod
    def _retried(existing: Session, size: ServerSize, lease: int, idle: int | None) -> Session:
        """The session a retried create asks for, if it asks with the same settings; else Conflict."""
        if (existing.size, existing.max_lease_minutes, existing.idle_timeout_seconds) != (size, lease, idle):
            idle_text = "none" if existing.idle_timeout_seconds is None else f"{existing.idle_timeout_seconds} s"
            raise Conflict(
                f"A session with the id '{existing.id}' already exists with other settings "
                f"(size {existing.size}, maxLeaseTimeMinutes {existing.max_lease_minutes}, idle timeout {idle_text})."
            )
        return existing

    async def _over_quota(self, account_id: str, size: ServerSize) -> QuotaExceeded:
        quota = (await self.repo.quotas(account_id)).get(account_id, {}).get(size, self.sizes[size].default_quota)
        return QuotaExceeded(
            f"The account already has {quota} live {size} session(s), its quota; nothing was started. Stop one of "
            "them, or ask the hub's administrator to raise the quota (renderhub account set-quota)."
        )

    async def _check_budget(self, account_id: str, budget: budgets.Budget | None, asked: budgets.Spend) -> None:
        """BudgetExceeded when the account has a monthly budget and `asked` would pass what is left of it."""
        if budget is None:
            return
        spent = await self.repo.budgets.spent(account_id, budgets.month_start(self.clock.now()))
        committed = budgets.Spend()
        for size, minutes in await self.repo.budgets.live_leases(account_id):
            committed += budgets.lease_spend(minutes, self.sizes[size].price_per_minute)
        budgets.check(budget, spent, committed, asked)

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
            price = self.sizes[session.size].price_per_minute
            budget = await self.repo.budgets.get(account_id)
            await self._check_budget(account_id, budget, budgets.lease_spend(lease - session.max_lease_minutes, price))
            if await self.repo.extend_lease(session, lease):
                return await self.get(account_id, session_id)
            # The session changed under us (stopped, extended by another client): judge it again.

    async def stop(self, account_id: str, session_id: str) -> None:
        """End a live session and its render server; stopping an ended session changes nothing."""
        while True:
            session = await self.get(account_id, session_id)
            if not session.status.live:
                return
            if await self.end(session, SessionStatus.STOPPED):
                return

    async def list_page(self, account_id: str, after_seq: int) -> tuple[list[Session], int | None]:
        """One page of live sessions and the cursor of the next page, if there is one."""
        limit = self.settings.page_size
        return split_page(await self.repo.list_live_sessions(account_id, after_seq, limit + 1), limit)

    # Starting a render server

    def watching(self, session: Session) -> bool:
        """Whether a start task of this hub watches the session (the reaper leaves it alone)."""
        return (session.account_id, session.id) in self._starting

    def adopt(self, session: Session) -> None:
        """Finish a dead replica's start: with the server it launched, or by launching again (a backend's start is
        idempotent per session). The caller has claimed the session."""
        if session.backend_state is not None:
            self._watch(session, self._start(session, session.backend_state), "adopt")
        else:
            self._watch(session, self._start(session), "relaunch")

    def _watch(self, session: Session, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run a session's start in a task of its own; the reaper leaves sessions with one alone."""
        key = (session.account_id, session.id)
        task = asyncio.create_task(work, name=f"{what} {session.id}")
        self._starting[key] = task

        def done(task: asyncio.Task[None]) -> None:
            self._starting.pop(key, None)
            # _start handles its failures; anything past it is a bug, logged here rather than at garbage collection
            if not task.cancelled() and (exc := task.exception()) is not None:
                log.error("%s ended with an error", task.get_name(), exc_info=exc)

        task.add_done_callback(done)

    async def _start(
        self, session: Session, launched: State | None = None, answer: asyncio.Future[Session | None] | None = None
    ) -> None:
        """Give the session a server (a pooled one from the warm pool, else one of its own, once there is room;
        `launched`: the one it has) and wait until it is Ready. Whatever fails on the way (the store, the backend),
        the server is stopped and the session ends in Error. `answer`: the create's, given the Ready session when
        a pooled server made it Ready at once, else None as soon as the session is to start."""
        state, taken = launched, None
        try:
            if state is None:
                taken = await self._claim(session)
                if taken is None or not taken.ready:
                    _settle(answer, None)  # none ready for it: it starts
                if taken is None and not self.backend.places_servers:
                    room = await self._wait_for_room(session)
                    if room is False:
                        await self._fail(session, self._no_room(session))
                        return
                    taken = room if isinstance(room, PooledServer) else None
                state = taken.backend_state if taken else None
            assigned = False
            if state is not None and state.get("pool_id"):  # a pooled server (also one a dead replica claimed)
                state = await self._take_pooled(session, state)
                assigned = state is not None
            if state is None:
                state = await self._launch(session)
                if state is None:
                    return  # failed, or another watcher's: handled
            ready_at = await self._await_ready(session, state, running=assigned)
            if ready_at is not None and taken is not None and assigned:
                _settle(answer, _ready(session, state, taken.hostname, ready_at, self.sizes))
        except asyncio.CancelledError:
            raise  # the hub is closing: the next hub adopts the start (see close)
        except Exception:
            log.exception("starting session %s failed", session.id)
            if state is not None:
                try:
                    await self.backend.stop(state)  # no server runs for a session that will not be Ready
                except Exception:
                    log.exception("stopping the render server of session %s failed", session.id)
            await self._fail(session, ArrError("InternalServerError", "The render server could not be started."))
        finally:
            _settle(answer, None)

    async def _claim(self, session: Session) -> PooledServer | None:
        """A launched server of the warm pool for the session, recorded on it; None when this hub keeps no pool of
        the size or the pool has none launched."""
        if not self.settings.warm_pool.get(session.size.value):
            return None
        taken = await self.repo.pools.claim(session, self.backend.name)
        if taken is not None:
            log.info("session %s takes pooled server %s", session.id, taken.pool_id)
        return taken

    async def _take_pooled(self, session: Session, state: State) -> State | None:
        """Give a claimed pooled server its session once it answers (at once if it was Ready); None when it cannot
        take it (it died, or never came up): it is stopped, and the session gets a server of its own."""
        assignment = Assignment(session.account_id, session.id, session.seq)
        try:
            if await self._until_running(session, state) is not ServerState.RUNNING:
                raise BackendError("RenderServerExited", "The pooled render server did not come up.")
            return await self.backend.assign(state, assignment)
        except BackendError as exc:
            log.warning("session %s: its pooled server failed (%s); launching one", session.id, exc.message)
            await self.backend.stop(state)
            return None

    async def _launch(self, session: Session) -> State | None:
        """Launch the session's server and record it on the session; None when the start ended here."""
        spec = ServerSpec(
            size=session.size.value,
            token_public_key=self.token_public_key,
            profile=self.sizes[session.size].profile,
            session=Assignment(session.account_id, session.id, session.seq),
        )
        try:
            hostname, state = await self.backend.start(spec)
        except BackendError as exc:
            await self._fail(session, ArrError(exc.code, exc.message))
            return None
        try:
            async with self._background:
                recorded = await self.repo.set_backend_state(session, state, hostname)
        except Exception:
            await self.backend.stop(state)  # the store does not know of this server: nothing else could stop it
            raise
        if not recorded:
            await self._release_unless_live(session, state)
            return None
        return state

    async def _wait_for_room(self, session: Session) -> bool | PooledServer:
        """True once a server of the session's size may be launched for it on this host; a pooled server when the
        warm pool has one for it first; False when neither came within the queue timeout (or it was stopped).
        The live sessions created before it (running, starting or waiting themselves) come first, so the queue
        keeps arrival order across replicas without a queue of its own; a waiting session's place is recorded
        (queuePosition) whenever it changes."""
        capacity = self.sizes[session.size].capacity
        # From its create: a start adopted from a replica that died does not wait the whole timeout again.
        deadline = session.created_at + timedelta(seconds=self.settings.queue_timeout_seconds)
        recorded = session.queue_position
        while True:
            async with self._background:
                ahead = await self.repo.live_sessions_before(session.size, session.seq, self.backend.name)
            if ahead < capacity:
                return True
            if recorded is not None and (taken := await self._claim(session)) is not None:
                return taken
            if self.clock.now() >= deadline:
                return False
            position = ahead - capacity + 1
            if position != recorded:
                async with self._background:
                    if not await self.repo.set_queue_position(session, position):
                        return False  # stopped while it waited: _fail finds it ended and leaves it
                recorded = position
            await asyncio.sleep(QUEUE_POLL_SECONDS)

    def _no_room(self, session: Session) -> ArrError:
        waited = self.settings.queue_timeout_seconds
        return ArrError(
            "CapacityExceeded",
            f"No {session.size} render server is free: all {self.sizes[session.size].capacity} on this host are in "
            "use" + (f" (waited {waited:g} s in the queue)" if waited > 0 else "") + ". Stop a session or retry later.",
        )

    async def _until_running(self, session: Session, state: State) -> ServerState:
        """Poll the server until it answers (RUNNING), exits (GONE), or the session's start runs out of time
        (STARTING)."""
        # A queued session's wait for room on a cluster does not count against its start.
        wait = self.settings.start_timeout_seconds + self.settings.queue_timeout_seconds
        deadline = session.created_at + timedelta(seconds=wait)
        while (server := await self.backend.poll(state)) is ServerState.STARTING:
            if self.clock.now() >= deadline:
                break
            await asyncio.sleep(POLL_INTERVAL)
        return server

    async def _await_ready(self, session: Session, state: State, running: bool = False) -> datetime | None:
        """Ready once the server answers on its handshake port (`running`: known to, a pooled server that took
        its session): returns when; Error if it dies or takes too long."""
        server = ServerState.RUNNING if running else await self._until_running(session, state)
        if server is ServerState.GONE:
            await self._fail(session, ArrError("RenderServerExited", "The render server exited while starting."))
            return None
        if server is ServerState.STARTING:
            timeout = self.settings.start_timeout_seconds
            await self._fail(
                session, ArrError("StartTimeout", f"The render server did not answer within {timeout:g} seconds.")
            )
            return None
        teraflops = self.sizes[session.size].teraflops
        now = self.clock.now()
        if running:  # a warm start: its create waits for this, not for a background slot
            ready = await self.repo.mark_ready(session, now, teraflops)
        else:
            async with self._background:
                ready = await self.repo.mark_ready(session, now, teraflops)
        if not ready:
            await self._release_unless_live(session, state)
            return None
        return now

    async def _release_unless_live(self, session: Session, state: State) -> None:
        """After losing a race on a session's status: stop this server unless a live session still owns it
        (a second watcher may have marked it Ready first; a stop may have ended it while it booted)."""
        current = await self.repo.get_session(session.account_id, session.id)
        if current is not None and current.status.live and current.backend_state is not None:
            if self.backend.identity(current.backend_state) == self.backend.identity(state):
                return
        await self.backend.stop(state)

    # Ending sessions

    async def end(
        self,
        session: Session,
        status: SessionStatus,
        error: ArrError | None = None,
        at: datetime | None = None,
    ) -> bool:
        """Move the session from the status we read to a terminal one, bill it, stop its server."""
        ended_at = at or self.clock.now()
        # Conditional on the status we read: a session read as Starting is billed nothing only if it still is.
        usage = metering.usage_record(session, ended_at, self.sizes[session.size]) if metering.bills(session) else None
        ended = await self.repo.end_session(session, status, ended_at, usage, error, from_statuses=(session.status,))
        if ended and session.backend_state:
            identity = self.backend.identity(session.backend_state)
            self.stopping.add(identity)  # the reaper's reconciliation leaves this server to this stop
            try:
                await self.backend.stop(session.backend_state)
            finally:
                self.stopping.discard(identity)
        return ended

    async def _fail(self, session: Session, error: ArrError) -> None:
        """End the session in Error, whatever live status it is in now; a store that cannot be written (or
        reached) is waited out, so that the session does not stay Starting once it is back."""
        waiting = False
        while True:
            try:
                current = await self.repo.get_session(session.account_id, session.id)
                if current is None or not current.status.live:
                    return
                if await self.end(current, SessionStatus.ERROR, error):
                    log.warning("session %s failed: %s", session.id, error.message)
                    return
            except StoreUnavailable:
                if not waiting:
                    log.warning("session %s failed; the store is unavailable: retrying to record it", session.id)
                    waiting = True
                await asyncio.sleep(STORE_RETRY_SECONDS)

    async def close(self) -> None:
        """Cancel start tasks; their sessions are adopted by the next hub or failed by its reaper."""
        tasks = list(self._starting.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _settle(answer: asyncio.Future[Session | None] | None, session: Session | None) -> None:
    """Give a create its answer, once (a later call changes nothing)."""
    if answer is not None and not answer.done():
        answer.set_result(session)


def _ready(
    session: Session, state: State, hostname: str | None, at: datetime, sizes: dict[ServerSize, SizeProfile]
) -> Session:
    """The session as marked Ready at `at` on the server `state` points at."""
    return dataclasses.replace(
        session,
        status=SessionStatus.READY,
        ready_at=at,
        teraflops=sizes[session.size].teraflops,
        backend_state=state,
        hostname=hostname,
        handshake_port=int(state["handshake_port"]),
        inspector_port=int(state["inspector_port"]),
        queue_position=None,
    )
