"""Connection setup: the async engine for SQLite or PostgreSQL, SQLite's settings and fast reader, open_store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from renderhub.datadir import secret_file, tighten
from renderhub.errors import StoreUnavailable
from renderhub.models import DEFAULT_REGION
from renderhub.store import migrate
from renderhub.store.repository import Repository


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; NORMAL sync is safe with WAL.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _private_database(path: Path) -> None:
    """The database file 0600 before SQLite opens it: it holds the signing key and the CA's key. SQLite gives its
    -wal and -shm files the database's mode; ones an earlier, looser hub left are tightened."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret_file(path)
        for companion in ("-wal", "-shm", "-journal"):
            tighten(path.with_name(path.name + companion))
    except OSError as exc:
        raise StoreUnavailable(f"Cannot open the database: {type(exc).__name__}") from exc


def _engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        database = sa.engine.make_url(url).database
        if database and database != ":memory:":
            _private_database(Path(database))
        engine = create_async_engine(url, connect_args={"timeout": 30})
        sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it doubles the round trips of every transaction. A connection the server dropped fails
    # once (StoreUnavailable, a 503 the client retries) and SQLAlchemy then renews the whole pool.
    return create_async_engine(url, pool_size=10, max_overflow=10)


def _sqlite_reader(url: str) -> tuple[sa.Engine, sa.Connection]:
    """A synchronous autocommit connection for key lookups (see Repository._first)."""
    sync_url = sa.engine.make_url(url).set(drivername="sqlite")
    # A short busy timeout: this runs in the event loop, which must never wait long.
    engine = sa.create_engine(sync_url, connect_args={"timeout": 1}, poolclass=sa.pool.StaticPool)
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine, engine.connect().execution_options(isolation_level="AUTOCOMMIT")


@contextlib.asynccontextmanager
async def open_store(url: str, region: str = DEFAULT_REGION) -> AsyncIterator[Repository]:
    """Connect, bring the schema up to date, and close the pool on the way out; sessions and conversions are
    `region`'s."""
    engine = _engine(url)
    reader_engine: sa.Engine | None = None
    try:
        try:
            await migrate.upgrade(engine)
        except (DBAPIError, OSError) as exc:
            raise StoreUnavailable(f"Cannot open the database: {type(exc).__name__}") from exc
        reader = None
        if url.startswith("sqlite") and ":memory:" not in url:
            reader_engine, reader = _sqlite_reader(url)
        repo = Repository(engine, reader, region)
        try:
            yield repo
        finally:
            await repo.coordination.resign()
    finally:
        if reader_engine is not None:
            reader_engine.dispose()
        await engine.dispose()
