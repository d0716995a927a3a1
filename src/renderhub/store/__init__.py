"""Persistence: tables, migrations and the repository (the only SQL), on SQLite or PostgreSQL."""

from renderhub.store.connection import open_store
from renderhub.store.repository import Repository

__all__ = ["Repository", "open_store"]
