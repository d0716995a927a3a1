"""Initial schema: accounts, sessions, usage records, the token-signing key."""

import sqlalchemy as sa
from alembic import op

from renderhub.store.tables import UTCDateTime

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("primary_key_hash", sa.String(128), nullable=False),
        sa.Column("secondary_key_hash", sa.String(128), nullable=False),
        sa.Column("primary_serial", sa.Integer, nullable=False),
        sa.Column("secondary_serial", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "sessions",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("id", sa.String(256), nullable=False),
        sa.Column("size", sa.String(16), nullable=False),
        sa.Column("max_lease_minutes", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("ready_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("hostname", sa.String(255)),
        sa.Column("handshake_port", sa.Integer),
        sa.Column("inspector_port", sa.Integer),
        sa.Column("teraflops", sa.Float),
        sa.Column("error_code", sa.String(64)),
        sa.Column("error_message", sa.Text),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("backend_state", sa.JSON),
        sa.UniqueConstraint("account_id", "id", name="uq_sessions_account_id"),
    )
    op.create_index("ix_sessions_status", "sessions", ["status"])
    op.create_table(
        "usage_records",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("session_id", sa.String(256), nullable=False),
        sa.Column("size", sa.String(16), nullable=False),
        sa.Column("ready_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime, nullable=False),
        sa.Column("billable_minutes", sa.Integer, nullable=False),
        sa.Column("cost", sa.Numeric(18, 4), nullable=False),
    )
    op.create_index("ix_usage_records_account_id", "usage_records", ["account_id"])
    op.create_table(
        "signing_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("private_pem", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("signing_keys", "usage_records", "sessions", "accounts"):
        op.drop_table(table)
