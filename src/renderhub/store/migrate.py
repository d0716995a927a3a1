"""Bring a database to the newest schema with Alembic, on the hub's own async engine."""

from __future__ import annotations

from importlib import resources

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncEngine

# Any constant works: it only has to be the same for every hub replica sharing a PostgreSQL database.
MIGRATION_LOCK = 0x52454E44


def _alembic_config(connection: sa.Connection) -> Config:
    ini = resources.files("renderhub").joinpath("store/alembic.ini")
    config = Config(str(ini))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Replicas starting together would otherwise race to create the same tables.
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), "head")


async def upgrade(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
