"""Asset conversions: their settings, status and outcome, and which replica runs each."""

import sqlalchemy as sa
from alembic import op

from renderhub.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_table(
        "conversions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("id", sa.String(256), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("input_sas", sa.Text),
        sa.Column("output_sas", sa.Text),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("output_uri", sa.Text),
        sa.Column("runner", sa.String(36)),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("started_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
        sa.UniqueConstraint("account_id", "id", name="uq_conversions_account_id"),
    )
    op.create_index("ix_conversions_status", "conversions", ["status"])


def downgrade() -> None:
    op.drop_index("ix_conversions_status", table_name="conversions")
    op.drop_table("conversions")
