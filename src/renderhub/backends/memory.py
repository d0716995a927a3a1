"""The in-memory backend: render servers that are records in this process, for logic tests and benchmarks."""

from __future__ import annotations

import random
import uuid
from typing import ClassVar

from renderhub.backends.base import Backend, ServerSpec, ServerState, State
from renderhub.config import Settings
from renderhub.render.ports import PORT_RANGE


class MemoryBackend(Backend):
    """Servers that answer the moment they are started and render nothing: what is left of a session's life is
    the hub's own work (leases, capacity, races, adoption). It passes the same contract suite as the real
    backends, so logic tests on it hold for them; it never proves that a real server starts or streams."""

    name = "memory"
    # Every server this process runs, per hub data dir, shared by all instances: a new instance for the same
    # hub finds the servers of an old one, as a restarted hub finds its processes.
    _machine: ClassVar[dict[str, dict[int, State]]] = {}
    _ports: ClassVar[set[int]] = set()  # the ports those servers hold, as a host's bound ports

    def __init__(self, settings: Settings) -> None:
        self.hostname = settings.advertised_host
        # Its own generator: tests fuzz the hub in this process, and Hypothesis forbids touching the global one.
        self._random = random.Random()
        self._servers = self._machine.setdefault(str(settings.data_dir.resolve()), {})

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        existing = self._servers.get(spec.session_seq)
        if existing is None:
            handshake_port, inspector_port = self._free_ports()
            existing = {
                "id": uuid.uuid4().hex,
                "session_seq": spec.session_seq,
                "handshake_port": handshake_port,
                "inspector_port": inspector_port,
            }
            self._servers[spec.session_seq] = existing
            self._ports.update((handshake_port, inspector_port))
        return self.hostname, dict(existing)

    async def poll(self, state: State) -> ServerState:
        return ServerState.RUNNING if self._running(state) else ServerState.GONE

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
        if self._running(state):
            server = self._servers.pop(state["session_seq"])
            self._ports.difference_update((server["handshake_port"], server["inspector_port"]))

    def _free_ports(self) -> tuple[int, int]:
        """Two ports in ARR's range no server of this process holds, as a real server's bind finds them."""
        chosen: list[int] = []
        while len(chosen) < 2:
            port = self._random.randint(*PORT_RANGE)
            if port not in self._ports and port not in chosen:
                chosen.append(port)
        return chosen[0], chosen[1]

    def _running(self, state: State) -> bool:
        server = self._servers.get(state.get("session_seq", -1))
        return server is not None and server["id"] == state.get("id")
