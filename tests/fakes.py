"""Backends that fail in one named way; the in-memory backend does the rest of the work."""

from __future__ import annotations

import asyncio

from renderhub.backends.base import ServerSpec, ServerState, State
from renderhub.backends.memory import MemoryBackend
from renderhub.config import Settings
from renderhub.errors import BackendError


class FailingBackend(MemoryBackend):
    """Cannot launch anything."""

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        raise BackendError("RenderServerLaunchFailed", "no render server could be launched (test)")


class SilentBackend(MemoryBackend):
    """Launches servers that never seem to answer on their handshake port."""

    async def poll(self, state: State) -> ServerState:
        server = await super().poll(state)
        return ServerState.STARTING if server is ServerState.RUNNING else server


class SlowStopBackend(MemoryBackend):
    """Stops a server only once `release` is set (a server that takes its grace to exit); `stopping` is set once a
    stop has begun."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.stopping = asyncio.Event()
        self.release = asyncio.Event()

    async def stop(self, state: State) -> None:
        self.stopping.set()
        await self.release.wait()
        await super().stop(state)


class SlowBackend(MemoryBackend):
    """Takes a while to launch each server (a busy cluster); `launched` is set once a launch has returned."""

    delay = 0.5

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.launched = asyncio.Event()

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        await asyncio.sleep(self.delay)
        try:
            return await super().start(spec)
        finally:
            self.launched.set()
