"""Pure metering: billable time times the size's rate.

The rounding rule: time is billed from Ready to the session's end (stop, expiry or failure), in whole
minutes rounded up, so a started minute is billed. One usage record per session that reached Ready: a
session that never became Ready bills nothing and leaves no record (a loop of failing creates would
otherwise leave a record each).
Cost is billable minutes times the size's price per minute, rounded half-up to 4 decimal places.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from renderhub.models import Session, SizeProfile, UsageRecord

COST_QUANTUM = Decimal("0.0001")


def billable_minutes(ready_at: datetime | None, ended_at: datetime) -> int:
    if ready_at is None:
        return 0
    seconds = max(0.0, (ended_at - ready_at).total_seconds())
    return math.ceil(seconds / 60)


def cost(minutes: int, price_per_minute: Decimal) -> Decimal:
    return (price_per_minute * minutes).quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


def bills(session: Session) -> bool:
    """Whether a session leaves a usage record when it ends: only once it has been Ready."""
    return session.ready_at is not None


def usage_record(session: Session, ended_at: datetime, size: SizeProfile) -> UsageRecord:
    """The one usage record a session leaves when it ends at `ended_at`."""
    minutes = billable_minutes(session.ready_at, ended_at)
    return UsageRecord(
        account_id=session.account_id,
        session_id=session.id,
        size=session.size,
        ready_at=session.ready_at,
        ended_at=ended_at,
        billable_minutes=minutes,
        cost=cost(minutes, size.price_per_minute),
        region=session.region,
    )
