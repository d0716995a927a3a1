"""Regions: sessions, conversions and replicas belong to one; the directory of regions and their endpoints."""

import sqlalchemy as sa
from alembic import op

from renderhub.store.tables import UTCDateTime

revision = "0005"
down_revision = "0004"

# Rows from before regions belong to the region a hub without --region serves.
DEFAULT = "local"


def _region() -> sa.Column[str]:
    return sa.Column("region", sa.String(64), nullable=False, server_default=DEFAULT)


def upgrade() -> None:
    op.create_table(
        "regions",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("probe_url", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.drop_index("ix_sessions_account_size_status", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(_region())
        batch.drop_constraint("uq_sessions_account_id", type_="unique")
        batch.create_unique_constraint("uq_sessions_account_region_id", ["account_id", "region", "id"])
    op.create_index("ix_sessions_account_region_size_status", "sessions", ["account_id", "region", "size", "status"])
    with op.batch_alter_table("conversions") as batch:
        batch.add_column(_region())
        batch.drop_constraint("uq_conversions_account_id", type_="unique")
        batch.create_unique_constraint("uq_conversions_account_region_id", ["account_id", "region", "id"])
    with op.batch_alter_table("replicas") as batch:
        batch.add_column(_region())
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(_region())


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("region")
    with op.batch_alter_table("replicas") as batch:
        batch.drop_column("region")
    with op.batch_alter_table("conversions") as batch:
        batch.drop_constraint("uq_conversions_account_region_id", type_="unique")
        batch.create_unique_constraint("uq_conversions_account_id", ["account_id", "id"])
        batch.drop_column("region")
    op.drop_index("ix_sessions_account_region_size_status", table_name="sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("uq_sessions_account_region_id", type_="unique")
        batch.create_unique_constraint("uq_sessions_account_id", ["account_id", "id"])
        batch.drop_column("region")
    op.create_index("ix_sessions_account_size_status", "sessions", ["account_id", "size", "status"])
    op.drop_table("regions")
