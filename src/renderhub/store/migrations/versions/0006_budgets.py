"""Budgets: an account's monthly limit on cost or billable minutes."""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "account_budgets",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("monthly_cost", sa.Numeric(18, 4)),
        sa.Column("monthly_minutes", sa.Integer),
    )
    # The budget check sums an account's usage records of the month.
    op.create_index("ix_usage_records_account_ended", "usage_records", ["account_id", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_records_account_ended", table_name="usage_records")
    op.drop_table("account_budgets")
