"""The backend contract: start, poll and stop render servers; the manager owns timeouts and retries."""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from typing import Any

State = dict[str, Any]


class ServerState(enum.Enum):
    """What a poll found."""

    STARTING = "starting"  # exists but does not answer on its handshake port yet
    RUNNING = "running"  # answers on its handshake port
    GONE = "gone"  # not there (never was, exited, or unknown to this backend)


@dataclass(frozen=True)
class ServerSpec:
    """What to start: one render server for one session."""

    account_id: str
    session_id: str
    session_seq: int
    size: str
    token_public_key: str  # PEM: render servers check client tokens themselves
    profile: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """Runs render servers. It keeps no authoritative state: what it needs to find a server again goes
    into the JSON `state` it returns, which the manager stores with the session."""

    name: str
    # Whether the backend decides where servers go and how many fit (a cluster scheduler does); if not, the
    # manager enforces each size's `capacity` from sizes.yaml.
    places_servers: bool = False

    @abc.abstractmethod
    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        """Launch a server and return (hostname clients connect to, state); wait only until it has bound its two
        ports (the server chooses them in ARR's range, on its own host), not until it answers. The state carries
        them as `handshake_port` and `inspector_port`. Idempotent per session: for a session whose server exists
        already, return that server (a replica finishing a dead replica's start may launch again). Raises
        BackendError when it cannot be launched."""

    @abc.abstractmethod
    async def poll(self, state: State) -> ServerState:
        """Cheap and idempotent; answers GONE for state it does not know."""

    @abc.abstractmethod
    async def stop(self, state: State) -> None:
        """Idempotent; returns once the server is gone."""

    @abc.abstractmethod
    async def servers(self) -> list[State]:
        """The state of every server this backend runs for this hub, live session or not (reconciliation);
        each state carries the `session_seq` it was started for."""

    @abc.abstractmethod
    def identity(self, state: State) -> str:
        """A stable name for the server a state points at, to match servers against sessions."""

    async def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release the backend's own resources; render servers keep running."""
