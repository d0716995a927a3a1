"""The repository on SQLite and on a real PostgreSQL: the same behaviour from both."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from renderhub import metering
from renderhub.auth import hash_key, new_account, new_signing_key
from renderhub.config import Settings
from renderhub.models import ArrError, ServerSize, Session, SessionStatus, SizeProfile
from renderhub.store import Repository, open_store
from renderhub.store.repository import DuplicateSession

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
STANDARD = SizeProfile(ServerSize.STANDARD, 8.1, Decimal("0.05"), 4)


@pytest.fixture
async def repo(database_url: str) -> AsyncIterator[Repository]:
    async with open_store(Settings(database_url=database_url).async_database_url) as repository:
        yield repository


def starting(session_id: str, account_id: str = "acct-1", size: ServerSize = ServerSize.STANDARD) -> Session:
    return Session(account_id, session_id, size, 30, SessionStatus.STARTING, T0, backend="local")


async def test_migrations_run_once_and_reopen_cleanly(database_url: str) -> None:
    url = Settings(database_url=database_url).async_database_url
    async with open_store(url) as first:
        account, _, _ = new_account("a", T0)
        await first.insert_account(account)
    async with open_store(url) as second:
        assert [a.id for a in await second.list_accounts()] == [account.id]


async def test_accounts_and_key_rotation(repo: Repository) -> None:
    account, _, _ = new_account("team", T0)
    await repo.insert_account(account)
    assert await repo.get_account(account.id) == account
    assert await repo.replace_key(account.id, 2, hash_key("new"))
    rotated = await repo.get_account(account.id)
    assert rotated is not None
    assert rotated.secondary_key_hash == hash_key("new") and rotated.secondary_serial == 2
    assert rotated.primary_serial == 1 and rotated.primary_key_hash == account.primary_key_hash
    assert await repo.delete_account(account.id)
    assert await repo.get_account(account.id) is None
    assert not await repo.delete_account(account.id)


async def test_every_hub_on_a_database_gets_the_same_signing_key(repo: Repository) -> None:
    keys = await asyncio.gather(*(repo.signing_key(new_signing_key, T0) for _ in range(4)))
    assert len(set(keys)) == 1
    assert await repo.signing_key(new_signing_key, T0) == keys[0]


async def test_session_round_trip_keeps_utc(repo: Repository) -> None:
    stored = await repo.insert_session(starting("s1"))
    assert stored.seq > 0
    loaded = await repo.get_session("acct-1", "s1")
    assert loaded == stored
    assert loaded.created_at.tzinfo is not None and loaded.created_at == T0
    assert await repo.get_session("acct-1", "S1") is None  # ids are case-sensitive
    assert await repo.get_session("acct-2", "s1") is None


async def test_duplicate_id_is_refused_per_account(repo: Repository) -> None:
    await repo.insert_session(starting("s1"))
    with pytest.raises(DuplicateSession):
        await repo.insert_session(starting("s1"))
    await repo.insert_session(starting("s1", account_id="acct-2"))


async def test_listing_pages_live_sessions_in_creation_order(repo: Repository) -> None:
    stored = [await repo.insert_session(starting(f"s{i}")) for i in range(5)]
    usage = metering.usage_record(stored[1], T0, STANDARD)
    assert await repo.end_session(stored[1], SessionStatus.STOPPED, T0, usage)
    await repo.insert_session(starting("other", account_id="acct-2"))
    first = await repo.list_live_sessions("acct-1", 0, 2)
    assert [s.id for s in first] == ["s0", "s2"]
    rest = await repo.list_live_sessions("acct-1", first[-1].seq, 10)
    assert [s.id for s in rest] == ["s3", "s4"]


async def test_state_changes_are_conditional(repo: Repository) -> None:
    session = await repo.insert_session(starting("s1"))
    assert await repo.set_backend_state(session, {"pid": 1, "handshake_port": 50000, "inspector_port": 50001}, "host-a")
    assert await repo.mark_ready(session, T0, 8.1)
    assert not await repo.mark_ready(session, T0, 8.1)  # no longer Starting
    ready = await repo.get_session("acct-1", "s1")
    assert ready is not None and ready.status is SessionStatus.READY and ready.hostname == "host-a"
    assert await repo.extend_lease(ready, 60)
    assert not await repo.extend_lease(ready, 45)  # not larger than the current lease


async def test_a_session_ends_and_is_billed_exactly_once(repo: Repository) -> None:
    session = await repo.insert_session(starting("s1"))
    await repo.mark_ready(session, T0, 8.1)
    ready = await repo.get_session("acct-1", "s1")
    assert ready is not None
    end = T0 + timedelta(minutes=3)
    usage = metering.usage_record(ready, end, STANDARD)
    error = ArrError("RenderServerLost", "gone")
    results = await asyncio.gather(
        repo.end_session(ready, SessionStatus.ERROR, end, usage, error, from_statuses=(ready.status,)),
        repo.end_session(ready, SessionStatus.STOPPED, end, usage, from_statuses=(ready.status,)),
    )
    assert sorted(results) == [False, True]
    records = await repo.usage()
    assert len(records) == 1 and records[0].billable_minutes == 3 and records[0].cost == Decimal("0.1500")
    ended = await repo.get_session("acct-1", "s1")
    assert ended is not None and ended.ended_at == end and not ended.status.live


async def test_capacity_counts_live_sessions_created_earlier(repo: Repository) -> None:
    a = await repo.insert_session(starting("a"))
    await repo.insert_session(starting("p", size=ServerSize.PREMIUM))
    b = await repo.insert_session(starting("b"))
    c = await repo.insert_session(starting("c"))
    assert await repo.live_sessions_before(ServerSize.STANDARD, a.seq, "local") == 0
    assert await repo.live_sessions_before(ServerSize.STANDARD, c.seq, "local") == 2
    await repo.end_session(b, SessionStatus.STOPPED, T0, metering.usage_record(b, T0, STANDARD))
    assert await repo.live_sessions_before(ServerSize.STANDARD, c.seq, "local") == 1


async def test_purge_forgets_old_ended_sessions_but_keeps_usage(repo: Repository) -> None:
    old = await repo.insert_session(starting("old"))
    await repo.end_session(old, SessionStatus.STOPPED, T0, metering.usage_record(old, T0, STANDARD))
    recent = await repo.insert_session(replace(starting("recent")))
    end = T0 + timedelta(days=20)
    await repo.end_session(recent, SessionStatus.STOPPED, end, metering.usage_record(recent, end, STANDARD))
    await repo.insert_session(starting("live"))
    assert await repo.purge_ended(T0 + timedelta(days=10)) == 1
    assert await repo.get_session("acct-1", "old") is None
    assert await repo.get_session("acct-1", "recent") is not None
    assert len(await repo.usage()) == 2


async def test_usage_filters_by_account_and_time(repo: Repository) -> None:
    for i, account in enumerate(["acct-1", "acct-2", "acct-1"]):
        session = await repo.insert_session(starting(f"s{i}", account_id=account))
        end = T0 + timedelta(days=i)
        await repo.end_session(session, SessionStatus.STOPPED, end, metering.usage_record(session, end, STANDARD))
    assert [r.session_id for r in await repo.usage("acct-1")] == ["s0", "s2"]
    window = await repo.usage(start=T0 + timedelta(hours=1), end=T0 + timedelta(days=2))
    assert [r.session_id for r in window] == ["s1"]


async def test_a_starting_sessions_server_is_recorded_with_the_ports_it_bound(repo: Repository) -> None:
    session = await repo.insert_session(starting("s1"))
    state = {"pid": 7, "handshake_port": 50000, "inspector_port": 50001}
    assert await repo.set_backend_state(session, state, "render-1.example")
    stored = await repo.get_session("acct-1", "s1")
    assert stored is not None and stored.backend_state == state and stored.hostname == "render-1.example"
    assert (stored.handshake_port, stored.inspector_port) == (50000, 50001)
    await repo.end_session(stored, SessionStatus.STOPPED, T0, metering.usage_record(stored, T0, STANDARD))
    assert not await repo.set_backend_state(stored, {**state, "handshake_port": 50002}, "elsewhere")  # ended


async def test_a_reap_pass_reads_starting_expiring_and_this_turns_sessions(repo: Repository) -> None:
    starting_one = await repo.insert_session(starting("starting"))
    ready = []
    for n in range(4):
        session = await repo.insert_session(starting(f"ready-{n}"))
        await repo.mark_ready(session, T0, 8.1)  # leases of 30 minutes from T0
        ready.append(session)
    slices = 1000  # no Ready session's health-check turn comes up in these reads but the one asked for

    def ids(found: list[Session]) -> set[str]:
        return {s.id for s in found}

    quiet_turn = max(s.seq for s in ready) + 1
    before_end = T0 + timedelta(minutes=29, seconds=58)
    assert ids(await repo.sessions_to_reap(before_end, slices, quiet_turn)) == {starting_one.id}
    at_end = T0 + timedelta(minutes=30)
    assert ids(await repo.sessions_to_reap(at_end, slices, quiet_turn)) == {starting_one.id} | ids(ready)
    turn = ready[2].seq % slices
    assert ids(await repo.sessions_to_reap(before_end, slices, turn)) == {starting_one.id, ready[2].id}
    assert await repo.live_seqs() == {starting_one.seq} | {s.seq for s in ready}
