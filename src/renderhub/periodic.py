"""A background loop that stops between passes, so that its last pass ends before the store closes under it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

STOP_WAIT_SECONDS = 5.0  # how long a stopping loop's last pass may take before it is cancelled


@contextlib.asynccontextmanager
async def every(interval: float, one_pass: Callable[[], Awaitable[None]], name: str) -> AsyncIterator[None]:
    """Run `one_pass` (which handles its own errors) every `interval` seconds in a task, for the block's duration.
    On exit the loop is asked to stop and its pass may end: a pass cancelled in the middle of a query leaves the
    database driver's thread answering an event loop that may be closed by then. Only a pass past
    STOP_WAIT_SECONDS is cancelled."""
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            await one_pass()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    task = asyncio.create_task(loop(), name=name)
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), STOP_WAIT_SECONDS)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
