"""Idle stop: an account's default idle timeout, and each session's own."""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("idle_timeout_seconds", sa.Integer))
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("idle_timeout_seconds", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("idle_timeout_seconds")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("idle_timeout_seconds")
