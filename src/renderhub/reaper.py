"""The lease and health loop: the manager's tick (heartbeat, and the reap pass when leading) on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from renderhub.errors import StoreUnavailable
from renderhub.manager import SessionManager

log = logging.getLogger("renderhub.reaper")


async def _loop(manager: SessionManager, interval: float) -> None:
    while True:
        try:
            await manager.tick()
        except StoreUnavailable:
            log.warning("reaper: the store is unavailable; retrying")
        except Exception:
            log.exception("reaper pass failed")  # keep reaping: one bad pass must not end all leases
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def running_reaper(manager: SessionManager, interval: float) -> AsyncIterator[None]:
    task = asyncio.create_task(_loop(manager, interval), name="reaper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
