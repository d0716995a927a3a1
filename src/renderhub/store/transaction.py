"""One transaction, with the driver's failures translated where they enter: StoreUnavailable, never a raw 500."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from renderhub.errors import StoreUnavailable

UNAVAILABLE = "The session store is unavailable; retry shortly."


@contextlib.asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a transaction, committed at the end; an integrity error (a duplicate) stays itself, for the
    caller to judge."""
    try:
        async with engine.begin() as connection:
            yield connection
    except IntegrityError:
        raise
    except (DBAPIError, OSError) as exc:
        raise StoreUnavailable(UNAVAILABLE) from exc


@contextlib.asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection without a transaction, for a read of one statement: no BEGIN and COMMIT around it, two round
    trips fewer to a database far away (bench/regions.py)."""
    try:
        async with engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection
    except (DBAPIError, OSError) as exc:
        raise StoreUnavailable(UNAVAILABLE) from exc
