"""Pointer presses answered with picks: one in flight per client, presses meanwhile coalesced to the latest."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from renderhub.render import protocol
from renderhub.render.camera import Hit
from renderhub.render.protocol import PointerMessage
from renderhub.render.worker import PickFailed, WorkerError

log = logging.getLogger(__name__)

# (x, y) -> (the pose id of the frame picked from, or None before any frame; the hit, or None for background)
PickFunction = Callable[[float, float], Awaitable[tuple[int | None, Hit | None]]]
ErrorFunction = Callable[[str, str, str | None], None]  # (code, message, ref) -> an "error" to the client


class Picker:
    """Sends a "pick" for each pointer "down", never queueing more than the latest one behind the pick in flight."""

    def __init__(self, pick: PickFunction, send: Callable[[str], None], error: ErrorFunction) -> None:
        self._pick, self._send, self._error = pick, send, error
        self._pending: PointerMessage | None = None
        self._task: asyncio.Task[None] | None = None
        self.answered = self.superseded = 0

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def request(self, message: PointerMessage) -> None:
        """Answer `message` once the pick in flight (if any) is done; a press still waiting then goes unanswered."""
        if self._pending is not None:
            self.superseded += 1
        self._pending = message
        if not self.busy:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self._pending is not None:
            message, self._pending = self._pending, None
            try:
                pose_id, hit = await self._pick(message.x, message.y)
            except (PickFailed, WorkerError) as exc:
                # WorkerError: the worker is being replaced (a load timed out) or is gone; the stream handles that.
                log.warning("a pick could not be answered: %s", exc)
                self._error(protocol.INTERNAL, "the pick could not be answered", message.ref)
                continue
            except Exception:  # a bug here must not leave later presses unanswered
                log.exception("a pick failed")
                self._error(protocol.INTERNAL, "the pick could not be answered", message.ref)
                continue
            self.answered += 1
            self._send(protocol.pick(message.x, message.y, pose_id, hit, message.ref))

    async def close(self) -> None:
        """Drop the pending press and stop waiting for the one in flight."""
        self._pending = None
        if self._task is not None and not self._task.done() and self._task is not asyncio.current_task():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
