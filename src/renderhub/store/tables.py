"""The table definitions the repository queries (the migrations create them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from renderhub.models import DEFAULT_REGION, LIVE_STATUSES


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC in and out, also on SQLite, which keeps no zone."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = sa.MetaData()
LIVE = [s.value for s in LIVE_STATUSES]  # a live session's status column: Starting or Ready

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("primary_key_hash", sa.String(128), nullable=False),
    sa.Column("secondary_key_hash", sa.String(128), nullable=False),
    sa.Column("primary_serial", sa.Integer, nullable=False),
    sa.Column("secondary_serial", sa.Integer, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("idle_timeout_seconds", sa.Integer),  # the default of its sessions' idle stop (None: off)
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(36), nullable=False),
    sa.Column("region", sa.String(64), nullable=False, server_default=DEFAULT_REGION),
    sa.Column("id", sa.String(256), nullable=False),
    sa.Column("size", sa.String(16), nullable=False),
    sa.Column("max_lease_minutes", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
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
    sa.Column("watcher", sa.String(36)),  # the replica whose task brings this session up while it starts
    sa.Column("queue_position", sa.Integer),  # while it waits for a free server on its host: 1 is next
    sa.Column("idle_timeout_seconds", sa.Integer),  # stopped after this long without a client (None: never)
    # A session is its account's, in the region where it was created: the same id in two regions is two sessions.
    sa.UniqueConstraint("account_id", "region", "id", name="uq_sessions_account_region_id"),
    # The quota check counts an account's live sessions of one size in its region on every create.
    sa.Index("ix_sessions_account_region_size_status", "account_id", "region", "size", "status"),
)

# An account's quota for a size, where it differs from the default (half the size's capacity): how many live
# sessions of that size it may hold. No row: the default.
account_quotas = sa.Table(
    "account_quotas",
    metadata,
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("size", sa.String(16), primary_key=True),
    sa.Column("max_sessions", sa.Integer, nullable=False),
)

# An account's monthly budget (budgets.py): no row, or both NULL, is no budget.
account_budgets = sa.Table(
    "account_budgets",
    metadata,
    sa.Column("account_id", sa.String(36), primary_key=True),
    sa.Column("monthly_cost", sa.Numeric(18, 4)),
    sa.Column("monthly_minutes", sa.Integer),
)

usage_records = sa.Table(
    "usage_records",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(36), nullable=False, index=True),
    sa.Column("session_id", sa.String(256), nullable=False),
    sa.Column("region", sa.String(64), nullable=False, server_default=DEFAULT_REGION),
    sa.Column("size", sa.String(16), nullable=False),
    sa.Column("ready_at", UTCDateTime),
    sa.Column("ended_at", UTCDateTime, nullable=False),
    sa.Column("billable_minutes", sa.Integer, nullable=False),
    sa.Column("cost", sa.Numeric(18, 4), nullable=False),
    sa.Index("ix_usage_records_account_ended", "account_id", "ended_at"),
)

# Asset conversions: their settings (without SAS), the SAS kept apart and dropped once a conversion ends, and
# which replica runs one while it is Running (`attempts` counts its claims: a claim is conditional on it).
conversions = sa.Table(
    "conversions",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(36), nullable=False),
    sa.Column("region", sa.String(64), nullable=False, server_default=DEFAULT_REGION),
    sa.Column("id", sa.String(256), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
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
    sa.UniqueConstraint("account_id", "region", "id", name="uq_conversions_account_region_id"),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("private_pem", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

replicas = sa.Table(
    "replicas",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("region", sa.String(64), nullable=False, server_default=DEFAULT_REGION),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),
)

# One row: the CA every replica's certificates come from, so clients trust one ca.pem whichever replica
# (or render node) they reach.
certificate_authority = sa.Table(
    "certificate_authority",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("cert_pem", sa.Text, nullable=False),
    sa.Column("key_pem", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

# The region directory: each hub writes its own region's row as it starts (the last one started wins, so every
# replica of a region should be told the same endpoint); every hub serves the whole table.
regions = sa.Table(
    "regions",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("endpoint", sa.Text, nullable=False),
    sa.Column("probe_url", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)

# The warm pool (pools.py): render servers started ahead of demand, one row each, per region and backend. The
# leading replica inserts a row (Starting, no state) before it launches the server, records the state once the
# server has bound its ports, and marks it Ready once it answers; a create claims a launched row by deleting it
# in the transaction that records its state on the session. Whoever deletes a row owns its server.
pooled_servers = sa.Table(
    "pooled_servers",
    metadata,
    sa.Column("region", sa.String(64), primary_key=True),
    sa.Column("pool_id", sa.String(32), primary_key=True),
    sa.Column("size", sa.String(16), nullable=False),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # Starting or Ready, as a session's
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("ready_at", UTCDateTime),
    sa.Column("hostname", sa.String(255)),
    sa.Column("backend_state", sa.JSON),  # None until the server has bound its ports
    sa.Column("starter", sa.String(36), nullable=False),  # the replica launching it
)
