"""The budgets' SQL: an account's monthly budget, its spend since a moment, its live sessions' leases."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from renderhub.budgets import Budget, Spend
from renderhub.metering import COST_QUANTUM
from renderhub.models import ServerSize
from renderhub.store.tables import LIVE, account_budgets, accounts, sessions, usage_records
from renderhub.store.transaction import autocommit, transaction


class BudgetStore:
    """Every statement about budgets (and the account policy a create reads with them); an account's budget and
    spend are the same in every region."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def set(self, account_id: str, budget: Budget) -> bool:
        """Set (or with both limits None, remove) an account's budget; False: no such account."""
        async with transaction(self.engine) as c:
            if (await c.execute(sa.select(accounts.c.id).where(accounts.c.id == account_id))).first() is None:
                return False
            await c.execute(account_budgets.delete().where(account_budgets.c.account_id == account_id))
            if budget.cost is not None or budget.minutes is not None:
                values = {"account_id": account_id, "monthly_cost": budget.cost, "monthly_minutes": budget.minutes}
                await c.execute(account_budgets.insert().values(**values))
        return True

    async def get(self, account_id: str) -> Budget | None:
        return (await self.policy(account_id))[1]

    async def policy(self, account_id: str) -> tuple[int | None, Budget | None]:
        """What a create asks of an account, in one read: its default idle timeout and its budget."""
        query = (
            sa.select(
                accounts.c.idle_timeout_seconds, account_budgets.c.monthly_cost, account_budgets.c.monthly_minutes
            )
            .select_from(accounts.outerjoin(account_budgets, account_budgets.c.account_id == accounts.c.id))
            .where(accounts.c.id == account_id)
        )
        async with autocommit(self.engine) as c:
            row = (await c.execute(query)).first()
        if row is None:
            return None, None
        if row.monthly_cost is None and row.monthly_minutes is None:
            return row.idle_timeout_seconds, None
        cost = None if row.monthly_cost is None else Decimal(row.monthly_cost).quantize(COST_QUANTUM)
        return row.idle_timeout_seconds, Budget(cost, row.monthly_minutes)

    async def spent(self, account_id: str, since: datetime) -> Spend:
        """The usage records of the account's sessions that ended since `since`, in every region."""
        query = sa.select(
            sa.func.coalesce(sa.func.sum(usage_records.c.billable_minutes), 0),
            sa.func.coalesce(sa.func.sum(usage_records.c.cost), 0),
        ).where(usage_records.c.account_id == account_id, usage_records.c.ended_at >= since)
        async with transaction(self.engine) as c:
            minutes, cost = (await c.execute(query)).one()
        return Spend(int(minutes), Decimal(cost).quantize(COST_QUANTUM))

    async def live_leases(self, account_id: str) -> list[tuple[ServerSize, int]]:
        """(size, lease minutes) of the account's live sessions in every region: what they may still bill."""
        query = sa.select(sessions.c.size, sessions.c.max_lease_minutes).where(
            sessions.c.account_id == account_id, sessions.c.status.in_(LIVE)
        )
        async with transaction(self.engine) as c:
            return [(ServerSize(size), minutes) for size, minutes in (await c.execute(query)).all()]
