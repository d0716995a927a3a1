"""The backend contract, run against every backend: start, poll, stop, find again, reconcile."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from renderhub.auth import TokenService, new_signing_key
from renderhub.backends import Backend, ServerSpec, ServerState
from renderhub.backends.base import State
from renderhub.backends.local import LocalBackend
from renderhub.backends.memory import MemoryBackend
from renderhub.config import Settings
from renderhub.render.ports import PORT_RANGE
from tests.hubs import kill_render_servers
from tests.ray_cluster import RayCluster


def local_backend(request: pytest.FixtureRequest, data_dir: Path) -> Backend:
    return LocalBackend(Settings(data_dir=data_dir, stop_grace_seconds=2))


def ray_backend(request: pytest.FixtureRequest, data_dir: Path) -> Backend:
    from renderhub.backends.ray import RayBackend

    cluster: RayCluster = request.getfixturevalue("ray_cluster")
    # One namespace per hub: a stranger hub on the same cluster must not see this hub's servers.
    namespace = f"contract-{data_dir.parent.name}-{data_dir.name}"
    return RayBackend(
        Settings(data_dir=data_dir, stop_grace_seconds=2, ray_address=cluster.address, ray_namespace=namespace)
    )


def memory_backend(request: pytest.FixtureRequest, data_dir: Path) -> Backend:
    return MemoryBackend(Settings(data_dir=data_dir))


def kill(backend: Backend, state: State) -> None:
    """The server dies unannounced: its process is killed (a memory server crashes)."""
    if isinstance(backend, MemoryBackend):
        backend.crash(state)
    else:
        os.kill(int(state["pid"]), signal.SIGKILL)


PUBLIC_KEY = TokenService(new_signing_key(), timedelta(hours=1)).public_pem
BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Backend]] = {
    "local": local_backend,
    "memory": memory_backend,
    "ray": ray_backend,
}


@pytest.fixture(params=["local", "memory", pytest.param("ray", marks=pytest.mark.ray)])
def backend_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def backend(
    backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[..., Backend]]:
    """A factory: each call is a fresh backend instance on the same hub, as after a hub restart
    (`hub="other"` gives a backend of another hub)."""
    instances: list[Backend] = []

    def make(hub: str = "hub") -> Backend:
        instances.append(BACKENDS[backend_kind](request, tmp_path / hub))
        return instances[-1]

    yield make
    for instance in instances:
        for state in await instance.servers():
            await instance.stop(state)
        await instance.close()
    kill_render_servers(tmp_path / "hub")


def spec(seq: int = 1) -> ServerSpec:
    return ServerSpec("acct", f"session-{seq}", seq, "Standard", PUBLIC_KEY)


async def running(backend: Backend, state: State, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (server := await backend.poll(state)) is not ServerState.RUNNING:
        assert server is ServerState.STARTING, f"server went {server} while starting"
        assert time.monotonic() < deadline, "server never answered"
        await asyncio.sleep(0.02)


async def test_start_poll_stop(backend: Callable[..., Backend]) -> None:
    b = backend()
    hostname, state = await b.start(spec())
    assert hostname
    await running(b, state)
    await b.stop(state)
    assert await b.poll(state) is ServerState.GONE
    await b.stop(state)  # idempotent


async def test_state_is_json_and_finds_the_server_from_a_new_backend(backend: Callable[..., Backend]) -> None:
    _, state = await backend().start(spec())
    restored = json.loads(json.dumps(state))
    other = backend()
    await running(other, restored)
    assert other.identity(restored) in {other.identity(s) for s in await other.servers()}
    await other.stop(restored)
    assert other.identity(restored) not in {other.identity(s) for s in await other.servers()}


async def test_unknown_state_polls_gone(backend: Callable[..., Backend]) -> None:
    b = backend()
    _, state = await b.start(spec())
    await b.stop(state)
    assert await b.poll(state) is ServerState.GONE
    other_session = spec(2)
    _, another = await b.start(other_session)
    await b.stop(another)
    assert await b.poll(another) is ServerState.GONE


async def test_a_server_that_dies_polls_gone(backend: Callable[..., Backend]) -> None:
    b = backend()
    _, state = await b.start(spec())
    await running(b, state)
    kill(b, state)
    deadline = time.monotonic() + 5
    while await b.poll(state) is not ServerState.GONE:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)


async def test_servers_lists_only_this_hubs_servers(backend: Callable[..., Backend]) -> None:
    b = backend()
    _, mine = await b.start(spec(1))
    stranger = backend(hub="another-hub")
    _, theirs = await stranger.start(spec(2))
    try:
        ids = {b.identity(s) for s in await b.servers()}
        assert b.identity(mine) in ids and b.identity(theirs) not in ids
        assert [s["session_seq"] for s in await b.servers()] == [1]
    finally:
        await stranger.stop(theirs)


async def test_start_is_idempotent_per_session(backend: Callable[..., Backend]) -> None:
    b = backend()
    session = spec()
    _, first = await b.start(session)
    _, again = await backend().start(session)  # a replica finishing a dead replica's start
    assert b.identity(again) == b.identity(first)
    await running(b, again)
    assert len(await b.servers()) == 1


async def test_each_server_binds_two_ports_of_its_own_in_arr_range(backend: Callable[..., Backend]) -> None:
    b = backend()
    states = [(await b.start(spec(seq)))[1] for seq in (1, 2)]
    ports = [state[key] for state in states for key in ("handshake_port", "inspector_port")]
    assert all(PORT_RANGE[0] <= port <= PORT_RANGE[1] for port in ports), ports
    assert len(set(ports)) == 4, ports
    for state in states:
        await running(b, state)  # and answers on the handshake port it reported
