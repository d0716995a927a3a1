"""Warm pools: the render servers started ahead of demand."""

import sqlalchemy as sa
from alembic import op

from renderhub.store.tables import UTCDateTime

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "pooled_servers",
        sa.Column("region", sa.String(64), primary_key=True),
        sa.Column("pool_id", sa.String(32), primary_key=True),
        sa.Column("size", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("ready_at", UTCDateTime),
        sa.Column("hostname", sa.String(255)),
        sa.Column("backend_state", sa.JSON),
        sa.Column("starter", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("pooled_servers")
