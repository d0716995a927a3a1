"""The in-memory backend: render servers that are records in this process, for logic tests and benchmarks."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

from renderhub.backends.base import Backend, ServerSpec, ServerState, State
from renderhub.config import Settings
from renderhub.errors import BackendError
from renderhub.render.assignment import Assignment
from renderhub.render.ports import PORT_RANGE


@dataclass
class _Host:
    """The servers one hub runs, by key (`session-SEQ`, `pool-ID`), and the keys of its assigned pooled ones."""

    servers: dict[str, State] = field(default_factory=dict)
    assigned: dict[int, str] = field(default_factory=dict)  # session seq -> pooled server's key


class MemoryBackend(Backend):
    """Servers that answer the moment they are started and render nothing: what is left of a session's life is
    the hub's own work (leases, capacity, races, adoption). It passes the same contract suite as the real
    backends, so logic tests on it hold for them; it never proves that a real server starts or streams."""

    name = "memory"
    # Every server this process runs, per hub data dir, shared by all instances: a new instance for the same
    # hub finds the servers of an old one, as a restarted hub finds its processes.
    _machine: ClassVar[dict[str, _Host]] = {}
    _ports: ClassVar[set[int]] = set()  # the ports those servers hold, as a host's bound ports

    def __init__(self, settings: Settings) -> None:
        self.hostname = settings.advertised_host
        # Its own generator: tests fuzz the hub in this process, and Hypothesis forbids touching the global one.
        self._random = random.Random()
        self._host = self._machine.setdefault(str(settings.data_dir.resolve()), _Host())
        self._servers = self._host.servers

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        key = self._host.assigned.get(spec.session.session_seq, spec.key) if spec.session else spec.key
        existing = self._servers.get(key)
        if existing is None:
            handshake_port, inspector_port = self._free_ports()
            existing = {
                "id": uuid.uuid4().hex,
                "key": spec.key,
                "session_seq": spec.session.session_seq if spec.session else None,
                "pool_id": spec.pool_id,
                "handshake_port": handshake_port,
                "inspector_port": inspector_port,
            }
            self._servers[spec.key] = existing
            self._ports.update((handshake_port, inspector_port))
        return self.hostname, dict(existing)

    async def assign(self, state: State, session: Assignment) -> State:
        server = self._server(state)
        if server is None:
            raise BackendError("RenderServerExited", "The pooled render server is gone.")
        if server["session_seq"] not in (None, session.session_seq):
            raise BackendError("RenderServerAssigned", "The render server serves another session.")
        server["session_seq"] = session.session_seq
        self._host.assigned[session.session_seq] = server["key"]
        return dict(server)

    async def poll(self, state: State) -> ServerState:
        return ServerState.RUNNING if self._server(state) else ServerState.GONE

    async def stop(self, state: State) -> None:
        self._forget(state)

    async def servers(self) -> list[State]:
        # The states themselves, not copies (no caller changes one): a reconcile pass over 1,000 servers
        # copying them made enough garbage for a collection to stall a reaper tick (its p99 25 -> 62 ms).
        return list(self._servers.values())

    def identity(self, state: State) -> str:
        return str(state["id"])

    def crash(self, state: State) -> None:
        """The server dies unannounced (a failure mode for tests: a killed process, a lost node)."""
        self._forget(state)

    def _forget(self, state: State) -> None:
        server = self._server(state)
        if server is not None:
            del self._servers[server["key"]]
            if server["pool_id"] and server["session_seq"] is not None:
                del self._host.assigned[server["session_seq"]]
            self._ports.difference_update((server["handshake_port"], server["inspector_port"]))

    def _free_ports(self) -> tuple[int, int]:
        """Two ports in ARR's range no server of this process holds, as a real server's bind finds them."""
        chosen: list[int] = []
        while len(chosen) < 2:
            port = self._random.randint(*PORT_RANGE)
            if port not in self._ports and port not in chosen:
                chosen.append(port)
        return chosen[0], chosen[1]

    def _server(self, state: State) -> State | None:
        server = self._servers.get(state.get("key", ""))
        return server if server is not None and server["id"] == state.get("id") else None
