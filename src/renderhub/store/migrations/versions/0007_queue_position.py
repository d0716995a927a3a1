"""Queues on one machine: a waiting session's place in its size's queue."""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("queue_position", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("queue_position")
