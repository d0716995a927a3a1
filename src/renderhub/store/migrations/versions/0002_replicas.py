"""Hub replicas: a heartbeat table, which replica watches a starting session, the shared certificate authority."""

import sqlalchemy as sa
from alembic import op

from renderhub.store.tables import UTCDateTime

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
    )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("watcher", sa.String(36)))
    op.create_table(
        "certificate_authority",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("cert_pem", sa.Text, nullable=False),
        sa.Column("key_pem", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("certificate_authority")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("watcher")
    op.drop_table("replicas")
