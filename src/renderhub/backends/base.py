"""The backend contract: start, poll and stop render servers; the manager owns timeouts and retries."""

from __future__ import annotations

import abc
import enum
import re
from dataclasses import dataclass, field
from typing import Any

from renderhub.render.assignment import Assignment

__all__ = ["Assignment", "Backend", "ServerSpec", "ServerState", "State", "pooled"]

State = dict[str, Any]
POOL_ID = re.compile(r"[a-z0-9]{1,32}")


class ServerState(enum.Enum):
    """What a poll found."""

    STARTING = "starting"  # exists but does not answer on its handshake port yet
    RUNNING = "running"  # answers on its handshake port
    GONE = "gone"  # not there (never was, exited, or unknown to this backend)


@dataclass(frozen=True)
class ServerSpec:
    """What to start: a render server of a size, for a session, or for the warm pool (no session yet: it is
    named by its `pool_id` and serves nobody until `Backend.assign` gives it a session)."""

    size: str
    token_public_key: str  # PEM: render servers check client tokens themselves
    profile: dict[str, Any] = field(default_factory=dict)
    session: Assignment | None = None
    pool_id: str = ""

    def __post_init__(self) -> None:
        if (self.session is None) == (not self.pool_id):
            raise ValueError("a server spec names either a session or a pool id")
        if self.pool_id and not POOL_ID.fullmatch(self.pool_id):
            raise ValueError(f"a pool id is 1-32 lowercase letters and digits, not {self.pool_id!r}")

    @property
    def key(self) -> str:
        """The server's name on its backend: `session-SEQ`, or `pool-ID` for a pooled server."""
        return f"session-{self.session.session_seq}" if self.session else f"pool-{self.pool_id}"


def pooled(state: State) -> bool:
    """Whether a server waits in the warm pool: started ahead of demand, not yet assigned a session."""
    return state.get("session_seq") is None and bool(state.get("pool_id"))


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
        them as `handshake_port` and `inspector_port`, and `session_seq` (None for a pooled server, which
        carries its `pool_id`). Idempotent per session and per pool id: for a session whose server exists
        already (started for it, or a pooled server assigned to it), return that server (a replica finishing a
        dead replica's start may launch again). Raises BackendError when it cannot be launched."""

    @abc.abstractmethod
    async def assign(self, state: State, session: Assignment) -> State:
        """Give a pooled server its session and return its new state (with the session's `session_seq`), once
        the server serves that session: it accepts that account's tokens and no other. Idempotent for the same
        session; BackendError when the server is gone or serves another session."""

    @abc.abstractmethod
    async def poll(self, state: State) -> ServerState:
        """Cheap and idempotent; answers GONE for state it does not know."""

    @abc.abstractmethod
    async def stop(self, state: State) -> None:
        """Idempotent; returns once the server is gone."""

    @abc.abstractmethod
    async def servers(self) -> list[State]:
        """The state of every server this backend runs for this hub, live session or not (reconciliation);
        each state carries the `session_seq` it serves, or None and its `pool_id` while it is pooled."""

    @abc.abstractmethod
    def identity(self, state: State) -> str:
        """A stable name for the server a state points at, to match servers against sessions."""

    async def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release the backend's own resources; render servers keep running."""
