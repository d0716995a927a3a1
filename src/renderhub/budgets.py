"""Pure budgets: an account's monthly (UTC calendar month) cost or minutes, and what a create or a lease
extension may still take of it.

What counts against a month: the usage records of sessions that ended in it, and the whole lease of every
live session (Starting or Ready, in any region), which is what each may still bill. A create asks for its lease
times its size's price, an extension for the added minutes: refused when that would pass what is left. Running
sessions are never ended for a budget; a budget lowered below the month's spend refuses the next create.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from renderhub.errors import BudgetExceeded
from renderhub.metering import cost


@dataclass(frozen=True)
class Budget:
    """An account's limit for a calendar month: on cost, on billable minutes, or both (None: no limit)."""

    cost: Decimal | None = None
    minutes: int | None = None


@dataclass(frozen=True)
class Spend:
    """Minutes and their cost."""

    minutes: int = 0
    cost: Decimal = Decimal(0)

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.minutes + other.minutes, self.cost + other.cost)


def lease_spend(minutes: int, price_per_minute: Decimal) -> Spend:
    """What a lease of `minutes` may bill at most."""
    return Spend(minutes, cost(minutes, price_per_minute))


def month_start(now: datetime) -> datetime:
    """The first moment of `now`'s calendar month, in UTC."""
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def check(budget: Budget, spent: Spend, committed: Spend, asked: Spend) -> None:
    """BudgetExceeded when `asked` on top of this month's spend and the live sessions' leases passes the budget."""
    used = spent + committed
    if budget.cost is not None and used.cost + asked.cost > budget.cost:
        left = max(Decimal(0), budget.cost - used.cost)
        raise BudgetExceeded(
            f"This would cost up to {asked.cost} where {left} of the account's monthly budget of {budget.cost} is "
            f"left (spent this month {spent.cost}, live sessions' leases {committed.cost}); nothing was changed. "
            "Ask for a shorter lease, stop a session, or ask the hub's administrator (renderhub account set-budget)."
        )
    if budget.minutes is not None and used.minutes + asked.minutes > budget.minutes:
        left_minutes = max(0, budget.minutes - used.minutes)
        raise BudgetExceeded(
            f"This would take up to {asked.minutes} minutes where {left_minutes} of the account's monthly budget of "
            f"{budget.minutes} minutes are left (spent this month {spent.minutes}, live sessions' leases "
            f"{committed.minutes}); nothing was changed. Ask for a shorter lease, stop a session, or ask the hub's "
            "administrator (renderhub account set-budget)."
        )
