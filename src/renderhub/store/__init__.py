"""Persistence: tables, migrations and the repository (the only SQL), on SQLite or PostgreSQL."""

from renderhub.store.repository import Repository, open_store

__all__ = ["Repository", "open_store"]
