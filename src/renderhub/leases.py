"""Pure lease arithmetic: expiry, elapsed minutes, extension rules."""

from __future__ import annotations

from datetime import datetime, timedelta

from renderhub.errors import BadRequest, Conflict, RenderHubError, UnprocessableEntity
from renderhub.models import Session

MAX_LEASE_MINUTES = 1440


def check_not_negative(minutes: int) -> None:
    """Any lease a client sends, on create or update: a negative one is malformed (400)."""
    if minutes < 0:
        raise BadRequest("The maxLeaseTimeMinutes value cannot be negative.", target="maxLeaseTimeMinutes")


def _check_at_most_max(minutes: int, error: type[RenderHubError]) -> None:
    if minutes > MAX_LEASE_MINUTES:
        raise error(
            f"The maxLeaseTimeMinutes value cannot be larger than {MAX_LEASE_MINUTES}.", target="maxLeaseTimeMinutes"
        )


def check_new_lease(minutes: int) -> None:
    """A create's lease: 0 to 1440 minutes."""
    check_not_negative(minutes)
    _check_at_most_max(minutes, BadRequest)


def check_extension(session: Session, minutes: int) -> None:
    """An update sets a new total lease, larger than the current one and at most 1440 minutes."""
    if not session.status.live:
        raise Conflict(f"The session is {session.status} and can no longer be updated.")
    if minutes <= session.max_lease_minutes:
        raise UnprocessableEntity(
            f"The new maxLeaseTimeMinutes ({minutes}) must be larger than the current one "
            f"({session.max_lease_minutes}).",
            target="maxLeaseTimeMinutes",
        )
    _check_at_most_max(minutes, UnprocessableEntity)


def expires_at(session: Session) -> datetime | None:
    """When a Ready session's lease runs out; None before it is Ready."""
    if session.ready_at is None:
        return None
    return session.ready_at + timedelta(minutes=session.max_lease_minutes)


def is_expired(session: Session, now: datetime) -> bool:
    end = expires_at(session)
    return session.status == "Ready" and end is not None and now >= end


def elapsed_minutes(session: Session, now: datetime) -> int:
    """Whole minutes spent Ready, rounded down, frozen once the session ends."""
    if session.ready_at is None:
        return 0
    until = session.ended_at or now
    seconds = max(0.0, (until - session.ready_at).total_seconds())
    return int(seconds // 60)
