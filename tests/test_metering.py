"""Metering: billable minutes rounded up from Ready to end, times the size's price."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from renderhub import metering
from renderhub.models import ServerSize, Session, SessionStatus, SizeProfile

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
STANDARD = SizeProfile(ServerSize.STANDARD, 8.1, Decimal("0.05"), 4)


def test_a_started_minute_is_billed() -> None:
    assert metering.billable_minutes(T0, T0) == 0
    assert metering.billable_minutes(T0, T0 + timedelta(seconds=1)) == 1
    assert metering.billable_minutes(T0, T0 + timedelta(minutes=1)) == 1
    assert metering.billable_minutes(T0, T0 + timedelta(minutes=1, seconds=1)) == 2


def test_never_ready_bills_nothing() -> None:
    assert metering.billable_minutes(None, T0) == 0


def test_cost_is_minutes_times_price_rounded_half_up() -> None:
    assert metering.cost(30, Decimal("0.05")) == Decimal("1.5000")
    assert metering.cost(3, Decimal("0.00005")) == Decimal("0.0002")  # 0.00015 rounds up


def test_usage_record_for_a_stopped_session() -> None:
    session = Session("acct", "s1", ServerSize.STANDARD, 30, SessionStatus.READY, T0, ready_at=T0)
    record = metering.usage_record(session, T0 + timedelta(minutes=10, seconds=5), STANDARD)
    assert (record.account_id, record.session_id, record.size) == ("acct", "s1", ServerSize.STANDARD)
    assert record.billable_minutes == 11
    assert record.cost == Decimal("0.5500")
