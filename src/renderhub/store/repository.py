"""The repository: every SQL statement RenderHub runs, on SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from renderhub.errors import StoreUnavailable
from renderhub.metering import COST_QUANTUM
from renderhub.models import (
    DEFAULT_REGION,
    LIVE_STATUSES,
    Account,
    ArrError,
    ServerSize,
    Session,
    SessionStatus,
    UsageRecord,
)
from renderhub.store.budgets import BudgetStore
from renderhub.store.conversions import ConversionStore
from renderhub.store.coordination import Coordination
from renderhub.store.pools import PoolStore
from renderhub.store.regions import RegionStore
from renderhub.store.starting import MARK_READY, SET_BACKEND_STATE, SET_QUEUE_POSITION, backend_state_params, key
from renderhub.store.tables import (
    LIVE,
    UTCDateTime,
    account_budgets,
    account_quotas,
    accounts,
    certificate_authority,
    sessions,
    signing_keys,
    usage_records,
)
from renderhub.store.transaction import UNAVAILABLE, autocommit, transaction

FIRST_ACCOUNT_LOCK = 0x52454E41  # any constants every replica shares (see migrate.MIGRATION_LOCK)
QUOTA_LOCK = 0x51554F54  # with an (account, size) key: PostgreSQL's two-int4 advisory keyspace, as the leader lock
# PostgreSQL: an account's creates of one size take its quota lock, shared while the account is far below its quota,
# exclusive near it. Shared holders run side by side, and each one's count misses at most the creates in flight
# at that moment (fewer than max_connections), so it inserts only with that many slots to spare. An exclusive
# holder waits until no shared one is in flight, so its count misses nothing: the last slots go one create at a
# time, and a burst far below the quota is not serialized (measured: 4-6 times fewer creates/s when every create
# took the exclusive lock).
SHARED_QUOTA_LOCK = sa.text("SELECT pg_advisory_xact_lock_shared(:key, :slot)")
EXCLUSIVE_QUOTA_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key, :slot)")
TIGHT_REMEMBERED = 10_000  # (account, size) pairs found near their quota, remembered to go exclusive at once
# The two lookups every request makes, built once: building a statement costs more than running it.
ACCOUNT_BY_ID = accounts.select().where(accounts.c.id == sa.bindparam("account_id"))
SESSION_INSERT = sessions.insert()  # its values come as parameters: the statement compiles once
# The columns a new session row is inserted with (the rest start NULL).
NEW_SESSION_COLUMNS = (
    "account_id", "region", "id", "size", "max_lease_minutes", "status", "created_at", "ready_at", "ended_at",
    "hostname", "handshake_port", "inspector_port", "teraflops", "backend", "backend_state", "watcher",
    "idle_timeout_seconds",
)  # fmt: skip


def _quota_insert() -> sa.Insert:
    """INSERT a session only while its account holds fewer live sessions of its size in its region than its quota
    (a quota holds in each region, as capacity does: its own row in
    account_quotas, else the parameter `default_quota`), less `spare` slots: the count and the insert are one
    statement, RETURNING the new seq (no row: over quota, or the id is taken)."""
    params = {name: sa.bindparam(name, type_=sessions.c[name].type) for name in NEW_SESSION_COLUMNS}
    live = (
        sa.select(sa.func.count())
        .select_from(sessions)
        .where(
            sessions.c.account_id == params["account_id"],
            sessions.c.region == params["region"],
            sessions.c.size == params["size"],
            sessions.c.status.in_(LIVE),
        )
        .scalar_subquery()
    )
    explicit = (
        sa.select(account_quotas.c.max_sessions)
        .where(account_quotas.c.account_id == params["account_id"], account_quotas.c.size == params["size"])
        .scalar_subquery()
    )
    quota = sa.func.coalesce(explicit, sa.bindparam("default_quota", type_=sa.Integer))
    row = sa.select(*params.values()).where(live + sa.bindparam("spare", type_=sa.Integer) < quota)
    return sessions.insert().from_select(list(NEW_SESSION_COLUMNS), row).returning(sessions.c.seq)


SESSION_INSERT_WITHIN_QUOTA = _quota_insert()


SESSION_BY_ID = sessions.select().where(
    sessions.c.account_id == sa.bindparam("account_id"),
    sessions.c.region == sa.bindparam("region"),
    sessions.c.id == sa.bindparam("session_id"),
)


class DuplicateSession(Exception):
    """A session with this account and id already exists."""


class OverQuota(Exception):
    """The account holds its quota of live sessions of this size already (or the id is taken: the caller looks)."""


def _quota_key(account_id: str, region: str, size: str) -> int:
    """The second half of an (account, region, size) quota lock's key: a signed 32-bit number (PostgreSQL's int4)."""
    return (zlib.crc32(f"{account_id}/{region}/{size}".encode()) ^ 0x80000000) - 0x80000000


def _session(row: sa.Row[Any]) -> Session:
    error = ArrError(row.error_code, row.error_message or "") if row.error_code else None
    return Session(
        account_id=row.account_id,
        id=row.id,
        size=ServerSize(row.size),
        max_lease_minutes=row.max_lease_minutes,
        status=SessionStatus(row.status),
        created_at=row.created_at,
        seq=row.seq,
        ready_at=row.ready_at,
        ended_at=row.ended_at,
        hostname=row.hostname,
        handshake_port=row.handshake_port,
        inspector_port=row.inspector_port,
        teraflops=row.teraflops,
        error=error,
        backend=row.backend,
        backend_state=row.backend_state,
        watcher=row.watcher,
        region=row.region,
        queue_position=row.queue_position,
        idle_timeout_seconds=row.idle_timeout_seconds,
    )


def _account(row: sa.Row[Any]) -> Account:
    return Account(
        id=row.id,
        name=row.name,
        primary_key_hash=row.primary_key_hash,
        secondary_key_hash=row.secondary_key_hash,
        primary_serial=row.primary_serial,
        secondary_serial=row.secondary_serial,
        created_at=row.created_at,
        idle_timeout_seconds=row.idle_timeout_seconds,
    )


def _usage(row: sa.Row[Any]) -> UsageRecord:
    return UsageRecord(
        account_id=row.account_id,
        session_id=row.session_id,
        size=ServerSize(row.size),
        ready_at=row.ready_at,
        ended_at=row.ended_at,
        billable_minutes=row.billable_minutes,
        cost=Decimal(row.cost).quantize(COST_QUANTUM),
        region=row.region,
    )


class Repository:
    """Async access to the store; state changes are conditional updates, safe across hub replicas. Sessions and
    conversions are those of one region, the hub's own; accounts, quotas, usage and keys are every region's."""

    def __init__(self, engine: AsyncEngine, reader: sa.Connection | None = None, region: str = DEFAULT_REGION) -> None:
        self.engine = engine
        self.region = region
        self._reader = reader
        self.coordination = Coordination(engine, region)
        self.conversions = ConversionStore(engine, region)
        self.regions = RegionStore(engine)
        self.budgets = BudgetStore(engine)
        self.pools = PoolStore(engine, region)
        self._in_flight_bound: int | None = None  # PostgreSQL's max_connections, read once
        self._tight: set[tuple[str, str, str]] = set()  # a hint only: which lock to try first (see SHARED_QUOTA_LOCK)

    async def _first(self, query: sa.Select[Any], **params: str) -> sa.Row[Any] | None:
        """One row by key: the hot path of every request (token check, GET session)."""
        if self._reader is not None:
            # SQLite: a held-open autocommit connection read in the event loop thread takes ~50 us, where
            # aiosqlite's six thread hand-offs per query take ~700 us; WAL readers never wait for a writer.
            try:
                row: sa.Row[Any] | None = self._reader.execute(query, params).first()
                return row
            except DBAPIError as exc:
                raise StoreUnavailable(UNAVAILABLE) from exc
        async with autocommit(self.engine) as c:
            first: sa.Row[Any] | None = (await c.execute(query, params)).first()
            return first

    def _begin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return transaction(self.engine)

    # Accounts

    async def insert_account(self, account: Account) -> None:
        async with self._begin() as c:
            await c.execute(accounts.insert().values(**account.__dict__))

    async def insert_first_account(self, account: Account) -> bool:
        """Insert `account` only if there is no account yet; False when another hub got there first."""
        async with self._begin() as c:
            if c.dialect.name == "postgresql":
                # Replicas starting together on an empty database: one at a time past this point.
                await c.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": FIRST_ACCOUNT_LOCK})
            # SQLite: a second writer whose read went stale fails to write here rather than insert twice.
            if (await c.execute(sa.select(sa.func.count()).select_from(accounts))).scalar_one():
                return False
            await c.execute(accounts.insert().values(**account.__dict__))
        return True

    async def get_account(self, account_id: str) -> Account | None:
        row = await self._first(ACCOUNT_BY_ID, account_id=account_id)
        return _account(row) if row else None

    async def list_accounts(self) -> list[Account]:
        async with self._begin() as c:
            rows = (await c.execute(accounts.select().order_by(accounts.c.created_at))).all()
        return [_account(r) for r in rows]

    async def count_accounts(self) -> int:
        async with self._begin() as c:
            return int((await c.execute(sa.select(sa.func.count()).select_from(accounts))).scalar_one())

    async def replace_key(self, account_id: str, slot: int, key_hash: str) -> bool:
        """Store a new key hash in slot 1 or 2 and bump its serial, revoking that key's tokens."""
        hash_col, serial_col = (
            ("primary_key_hash", "primary_serial") if slot == 1 else ("secondary_key_hash", "secondary_serial")
        )
        async with self._begin() as c:
            result = await c.execute(
                accounts.update()
                .where(accounts.c.id == account_id)
                .values({hash_col: key_hash, serial_col: accounts.c[serial_col] + 1})
            )
        return result.rowcount == 1

    async def delete_account(self, account_id: str) -> bool:
        """Delete an account that has no live session (nobody could stop those once its keys are gone)."""
        live = sa.exists().where(sessions.c.account_id == accounts.c.id, sessions.c.status.in_(LIVE))
        async with self._begin() as c:
            result = await c.execute(accounts.delete().where(accounts.c.id == account_id, ~live))
            if result.rowcount == 1:
                await c.execute(account_quotas.delete().where(account_quotas.c.account_id == account_id))
                await c.execute(account_budgets.delete().where(account_budgets.c.account_id == account_id))
        return result.rowcount == 1

    async def set_idle_timeout(self, account_id: str, seconds: int | None) -> bool:
        """An account's default idle timeout for the sessions it creates from now on (None: off)."""
        async with self._begin() as c:
            result = await c.execute(
                accounts.update().where(accounts.c.id == account_id).values(idle_timeout_seconds=seconds)
            )
        return result.rowcount == 1

    # Quotas

    async def set_quota(self, account_id: str, size: ServerSize, max_sessions: int | None) -> bool:
        """Set an account's quota of live sessions of a size; None: back to the default. False: no such account.
        Sessions already live stay, whatever the new quota."""
        async with self._begin() as c:
            if (await c.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id))).first() is None:
                return False
            key = (account_quotas.c.account_id == account_id, account_quotas.c.size == size.value)
            await c.execute(account_quotas.delete().where(*key))
            if max_sessions is not None:
                values = {"account_id": account_id, "size": size.value, "max_sessions": max_sessions}
                await c.execute(account_quotas.insert().values(**values))
        return True

    async def quotas(self, account_id: str | None = None) -> dict[str, dict[ServerSize, int]]:
        """The quotas set per account (account id -> size -> live sessions): sizes left out have the default."""
        query = account_quotas.select()
        if account_id is not None:
            query = query.where(account_quotas.c.account_id == account_id)
        found: dict[str, dict[ServerSize, int]] = {}
        async with self._begin() as c:
            for row in (await c.execute(query)).all():
                found.setdefault(row.account_id, {})[ServerSize(row.size)] = row.max_sessions
        return found

    # The certificate authority

    async def certificate_authority(self, local: tuple[str, str], now: datetime) -> tuple[str, str]:
        """(cert PEM, key PEM) of the database's CA; the first hub stores its local one, later ones get it."""
        query = sa.select(certificate_authority.c.cert_pem, certificate_authority.c.key_pem)
        async with self._begin() as c:
            row = (await c.execute(query)).first()
        if row is None:
            try:
                async with self._begin() as c:
                    values = {"id": 1, "cert_pem": local[0], "key_pem": local[1], "created_at": now}
                    await c.execute(certificate_authority.insert().values(**values))
            except IntegrityError:
                pass  # another replica stored its CA first; use that one
            async with self._begin() as c:
                row = (await c.execute(query)).first()
        assert row is not None
        return str(row.cert_pem), str(row.key_pem)

    # The token-signing key

    async def signing_key(self, create: Callable[[], str], now: datetime) -> str:
        """The hub's private key PEM; the first hub on a database creates it, every later one reads it."""
        async with self._begin() as c:
            pem = (await c.execute(sa.select(signing_keys.c.private_pem).where(signing_keys.c.id == 1))).scalar()
        if pem is not None:
            return str(pem)
        try:
            async with self._begin() as c:
                await c.execute(signing_keys.insert().values(id=1, private_pem=create(), created_at=now))
        except IntegrityError:
            pass  # another replica won the race; use its key
        async with self._begin() as c:
            return str((await c.execute(sa.select(signing_keys.c.private_pem))).scalar_one())

    # Sessions

    async def insert_session(self, session: Session, default_quota: int | None = None) -> Session:
        """Store a new session; with `default_quota`, only while its account is within its quota of live sessions
        of the size (OverQuota otherwise): the quota's count is in the insert's statement, and on PostgreSQL an
        (account, size) lock serializes the replicas' creates, so two racing for the last slot never both pass."""
        values: dict[str, Any] = {k: v for k, v in session.__dict__.items() if k not in ("seq", "error")}
        values["size"] = session.size.value
        values["status"] = session.status.value
        try:
            if default_quota is None:
                async with self._begin() as c:
                    seq = (await c.execute(SESSION_INSERT, values)).inserted_primary_key[0]  # type: ignore[index]
            elif self.engine.dialect.name != "postgresql":
                # SQLite: the insert takes the database's one write lock before it counts.
                seq = await self._insert_within_quota(values, default_quota, None)
            else:
                key = (session.account_id, session.region, session.size.value)
                seq = None
                if key not in self._tight:
                    seq = await self._insert_within_quota(values, default_quota, SHARED_QUOTA_LOCK)
                    if seq is None:
                        if len(self._tight) >= TIGHT_REMEMBERED:
                            self._tight.clear()
                        self._tight.add(key)
                if seq is None:
                    seq = await self._insert_within_quota(values, default_quota, EXCLUSIVE_QUOTA_LOCK)
        except IntegrityError as exc:
            raise DuplicateSession(session.id) from exc
        if seq is None:
            raise OverQuota(session.id)
        return Session(**{**session.__dict__, "seq": seq})

    async def _insert_within_quota(
        self, values: dict[str, Any], default_quota: int, lock: sa.TextClause | None
    ) -> int | None:
        """One try at the quota's insert: the new seq, or None when it left no row (see SHARED_QUOTA_LOCK)."""
        spare = 0
        async with self._begin() as c:
            if lock is not None:
                # Before the insert's statement, whose snapshot then holds every create the lock waited for.
                slot = _quota_key(values["account_id"], values["region"], values["size"])
                await c.execute(lock, {"key": QUOTA_LOCK, "slot": slot})
                if lock is SHARED_QUOTA_LOCK:
                    spare = await self._in_flight(c)
            params = {**values, "default_quota": default_quota, "spare": spare}
            seq: int | None = (await c.execute(SESSION_INSERT_WITHIN_QUOTA, params)).scalar()
        return seq

    async def _in_flight(self, c: AsyncConnection) -> int:
        """The most transactions PostgreSQL runs at once: how many creates a count may miss."""
        if self._in_flight_bound is None:
            self._in_flight_bound = int((await c.execute(sa.text("SHOW max_connections"))).scalar_one())
        return self._in_flight_bound

    async def get_session(self, account_id: str, session_id: str) -> Session | None:
        row = await self._first(SESSION_BY_ID, account_id=account_id, region=self.region, session_id=session_id)
        return _session(row) if row else None

    async def list_live_sessions(self, account_id: str, after_seq: int, limit: int) -> list[Session]:
        """One page of an account's Starting and Ready sessions, oldest first."""
        query = (
            sessions.select()
            .where(
                sessions.c.account_id == account_id,
                sessions.c.region == self.region,
                sessions.c.status.in_(LIVE),
                sessions.c.seq > after_seq,
            )
            .order_by(sessions.c.seq)
            .limit(limit)
        )
        async with autocommit(self.engine) as c:
            return [_session(r) for r in (await c.execute(query)).all()]

    async def live_sessions_in_every_region(self, account_id: str) -> list[tuple[str, str]]:
        """(region, id) of an account's Starting and Ready sessions wherever they are: what holds its deletion."""
        query = (
            sa.select(sessions.c.region, sessions.c.id)
            .where(sessions.c.account_id == account_id, sessions.c.status.in_(LIVE))
            .order_by(sessions.c.seq)
        )
        async with self._begin() as c:
            return [(row.region, row.id) for row in (await c.execute(query)).all()]

    async def live_seqs(self) -> set[int]:
        async with self._begin() as c:
            query = sa.select(sessions.c.seq).where(sessions.c.region == self.region, sessions.c.status.in_(LIVE))
            return set((await c.execute(query)).scalars())

    async def sessions_to_reap(self, now: datetime, slices: int, turn: int) -> list[Session]:
        """The live sessions a reaper pass looks at: every Starting one, Ready ones whose lease may be over,
        and the Ready ones whose turn it is for a health check (seq modulo `slices`). Reading all of them
        each pass would cost most of the pass once a thousand are live."""
        ready = sessions.c.status == SessionStatus.READY.value
        due = sa.or_(
            sessions.c.status == SessionStatus.STARTING.value,
            sa.and_(ready, sa.or_(self._lease_end(now), sessions.c.seq % slices == turn)),
        )
        async with self._begin() as c:
            rows = (await c.execute(sessions.select().where(sessions.c.region == self.region, due))).all()
        return [_session(r) for r in rows]

    def _lease_end(self, now: datetime) -> Any:
        """SQL for 'the lease may be over by now': a superset (SQLite's datetime() drops the fraction of a
        second, so it may name a session up to a second early); leases.is_expired has the final word."""
        if self.engine.dialect.name == "postgresql":
            lease = sa.func.make_interval(0, 0, 0, 0, 0, sessions.c.max_lease_minutes)
            return sessions.c.ready_at + lease <= sa.bindparam("now", now, type_=UTCDateTime)
        naive = now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
        ends = sa.func.datetime(
            sessions.c.ready_at, "+" + sa.cast(sessions.c.max_lease_minutes, sa.String) + " minutes"
        )
        return ends <= naive

    async def live_sessions_before(self, size: ServerSize, seq: int, backend: str) -> int:
        """How many live sessions of a size were created before this one: the capacity check."""
        query = (
            sa.select(sa.func.count())
            .select_from(sessions)
            .where(
                sessions.c.size == size.value,
                sessions.c.status.in_(LIVE),
                sessions.c.seq < seq,
                sessions.c.region == self.region,
                sessions.c.backend == backend,
            )
        )
        async with self._begin() as c:
            return int((await c.execute(query)).scalar_one())

    def _where_live(self, session: Session, *statuses: SessionStatus) -> Any:
        wanted = [s.value for s in statuses] or LIVE
        return sa.and_(
            sessions.c.account_id == session.account_id,
            sessions.c.region == session.region,
            sessions.c.id == session.id,
            sessions.c.status.in_(wanted),
        )

    async def set_backend_state(self, session: Session, state: dict[str, Any], hostname: str) -> bool:
        """Record where a starting session's server runs (its host and the ports it bound, in `state`), so any
        hub can find it again."""
        async with self._begin() as c:
            result = await c.execute(SET_BACKEND_STATE, backend_state_params(session, state, hostname))
        return result.rowcount == 1

    async def set_queue_position(self, session: Session, position: int) -> bool:
        """Where a Starting session waits for a free server of its size (1: next)."""
        async with self._begin() as c:
            result = await c.execute(SET_QUEUE_POSITION, {**key(session), "new_queue_position": position})
        return result.rowcount == 1

    async def mark_ready(self, session: Session, ready_at: datetime, teraflops: float) -> bool:
        async with self._begin() as c:
            values = {"new_status": SessionStatus.READY.value, "new_ready_at": ready_at, "new_teraflops": teraflops}
            result = await c.execute(MARK_READY, {**key(session), **values})
        return result.rowcount == 1

    async def extend_lease(self, session: Session, minutes: int) -> bool:
        async with self._begin() as c:
            result = await c.execute(
                sessions.update()
                .where(self._where_live(session), sessions.c.max_lease_minutes < minutes)
                .values(max_lease_minutes=minutes)
            )
        return result.rowcount == 1

    async def end_session(
        self,
        session: Session,
        status: SessionStatus,
        ended_at: datetime,
        usage: UsageRecord | None,
        error: ArrError | None = None,
        from_statuses: tuple[SessionStatus, ...] = LIVE_STATUSES,
    ) -> bool:
        """Move a live session to a terminal status and bill it (unless `usage` is None: it never became Ready), in
        one transaction: exactly once."""
        async with self._begin() as c:
            result = await c.execute(
                sessions.update()
                .where(self._where_live(session, *from_statuses))
                .values(
                    status=status.value,
                    ended_at=ended_at,
                    error_code=error.code if error else None,
                    error_message=error.message if error else None,
                )
            )
            if result.rowcount != 1:
                return False
            if usage is not None:
                await c.execute(usage_records.insert().values(**{**usage.__dict__, "size": usage.size.value}))
        return True

    async def purge_ended(self, before: datetime) -> int:
        """Forget sessions that ended before `before` (their usage records stay)."""
        async with self._begin() as c:
            result = await c.execute(
                sessions.delete().where(sessions.c.status.not_in(LIVE), sessions.c.ended_at < before)
            )
        return result.rowcount

    async def purge_failed_starts(self, before: datetime, keep: int) -> int:
        """Forget sessions that failed before they were ever Ready (Error, no ready_at): those that ended before
        `before`, and beyond each account's newest `keep` of them. They bill nothing, so nothing else remembers
        them; a loop of failing creates would otherwise leave a row each for the whole retention."""
        never_ready = sa.and_(sessions.c.status == SessionStatus.ERROR.value, sessions.c.ready_at.is_(None))
        newest_first = (
            sa.func.row_number().over(partition_by=sessions.c.account_id, order_by=sessions.c.seq.desc()).label("n")
        )
        ranked = sa.select(sessions.c.seq, newest_first).where(never_ready).subquery()
        beyond_cap = sa.select(ranked.c.seq).where(ranked.c.n > keep)
        async with self._begin() as c:
            result = await c.execute(
                sessions.delete().where(
                    never_ready, sa.or_(sessions.c.ended_at < before, sessions.c.seq.in_(beyond_cap))
                )
            )
        return result.rowcount

    # Usage

    async def usage(
        self, account_id: str | None = None, start: datetime | None = None, end: datetime | None = None
    ) -> list[UsageRecord]:
        """Usage records whose session ended in [start, end), oldest first."""
        query = usage_records.select().order_by(usage_records.c.ended_at, usage_records.c.seq)
        if account_id:
            query = query.where(usage_records.c.account_id == account_id)
        if start:
            query = query.where(usage_records.c.ended_at >= start)
        if end:
            query = query.where(usage_records.c.ended_at < end)
        async with self._begin() as c:
            return [_usage(r) for r in (await c.execute(query)).all()]
