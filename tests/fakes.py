"""Backends that fail in one named way; the real local backend does the rest of the work."""

from __future__ import annotations

import asyncio

from renderhub.backends.base import ServerSpec, ServerState, State
from renderhub.backends.local import LocalBackend
from renderhub.errors import BackendError


class FailingBackend(LocalBackend):
    """Cannot launch anything."""

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        raise BackendError("RenderServerLaunchFailed", "no render server could be launched (test)")


class SilentBackend(LocalBackend):
    """Launches real servers that never seem to answer on their handshake port."""

    async def poll(self, state: State) -> ServerState:
        server = await super().poll(state)
        return ServerState.STARTING if server is ServerState.RUNNING else server


class SlowBackend(LocalBackend):
    """Takes a while to launch each server (a busy cluster)."""

    delay = 1.0

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        await asyncio.sleep(self.delay)
        return await super().start(spec)
