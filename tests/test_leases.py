"""Lease arithmetic: expiry, elapsed minutes and the extension rules ARR enforced."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from renderhub import leases
from renderhub.errors import BadRequest, Conflict, UnprocessableEntity
from renderhub.models import ServerSize, Session, SessionStatus

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def ready(lease: int = 30, **changes: object) -> Session:
    session = Session("acct", "s", ServerSize.STANDARD, lease, SessionStatus.READY, T0, ready_at=T0)
    return replace(session, **changes)  # type: ignore[arg-type]


def test_new_lease_bounds() -> None:
    leases.check_new_lease(0)
    leases.check_new_lease(1440)
    with pytest.raises(BadRequest, match="cannot be negative"):
        leases.check_new_lease(-1)
    with pytest.raises(BadRequest):
        leases.check_new_lease(1441)


def test_expiry_is_ready_plus_lease() -> None:
    session = ready(30)
    assert leases.expires_at(session) == T0 + timedelta(minutes=30)
    assert not leases.is_expired(session, T0 + timedelta(minutes=29, seconds=59))
    assert leases.is_expired(session, T0 + timedelta(minutes=30))


def test_zero_lease_expires_as_soon_as_ready() -> None:
    assert leases.is_expired(ready(0), T0)


def test_starting_session_never_expires() -> None:
    starting = ready(0, status=SessionStatus.STARTING, ready_at=None)
    assert leases.expires_at(starting) is None
    assert not leases.is_expired(starting, T0 + timedelta(days=3))


def test_elapsed_minutes_round_down_and_freeze_at_end() -> None:
    session = ready(30)
    assert leases.elapsed_minutes(session, T0 + timedelta(seconds=59)) == 0
    assert leases.elapsed_minutes(session, T0 + timedelta(minutes=12, seconds=59)) == 12
    ended = replace(session, status=SessionStatus.STOPPED, ended_at=T0 + timedelta(minutes=5, seconds=30))
    assert leases.elapsed_minutes(ended, T0 + timedelta(hours=5)) == 5
    assert leases.elapsed_minutes(ready(30, ready_at=None, status=SessionStatus.STARTING), T0) == 0


def test_extension_sets_a_larger_total_up_to_1440() -> None:
    leases.check_extension(ready(30), 31)
    leases.check_extension(ready(30), 1440)
    leases.check_extension(ready(30, status=SessionStatus.STARTING, ready_at=None), 60)
    for not_larger in (30, 10, -5):
        with pytest.raises(UnprocessableEntity):
            leases.check_extension(ready(30), not_larger)
    with pytest.raises(UnprocessableEntity):
        leases.check_extension(ready(30), 1441)


@pytest.mark.parametrize("status", [SessionStatus.STOPPED, SessionStatus.EXPIRED, SessionStatus.ERROR])
def test_ended_sessions_cannot_be_extended(status: SessionStatus) -> None:
    with pytest.raises(Conflict):
        leases.check_extension(ready(30, status=status), 60)
