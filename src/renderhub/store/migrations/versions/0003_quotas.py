"""Per-account quotas: the quota table, and the index the quota check counts live sessions with."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "account_quotas",
        sa.Column("account_id", sa.String(36), primary_key=True),
        sa.Column("size", sa.String(16), primary_key=True),
        sa.Column("max_sessions", sa.Integer, nullable=False),
    )
    op.create_index("ix_sessions_account_size_status", "sessions", ["account_id", "size", "status"])


def downgrade() -> None:
    op.drop_index("ix_sessions_account_size_status", table_name="sessions")
    op.drop_table("account_quotas")
