"""The backend contract, run against every backend: start, poll, stop, find again, reconcile, pooled servers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from renderhub.auth import TokenService, new_account, new_signing_key
from renderhub.backends import Backend, ServerSpec, ServerState
from renderhub.backends.base import Assignment, State, pooled
from renderhub.backends.local import LocalBackend
from renderhub.backends.memory import MemoryBackend
from renderhub.clock import Clock
from renderhub.config import Settings
from renderhub.errors import BackendError
from renderhub.models import Account
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


TOKENS = TokenService(new_signing_key(), timedelta(hours=1))
PUBLIC_KEY = TOKENS.public_pem
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
    return ServerSpec("Standard", PUBLIC_KEY, session=Assignment("acct", f"session-{seq}", seq))


def pool_spec(pool_id: str = "p1") -> ServerSpec:
    return ServerSpec("Standard", PUBLIC_KEY, pool_id=pool_id)


# Generous: a loaded two-core CI machine starts Ray actors slowly; this checks that the server answers.
async def running(backend: Backend, state: State, timeout: float = 30) -> None:
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


async def offer_status(data_dir: Path, hostname: str, state: State, account: Account) -> int:
    """The status a real server answers an offer with a valid token of this account: 401 while it does not
    serve the account, 400 (a bad SDP, checked after the token) once it does."""
    token = TOKENS.issue(account, 1, Clock().now())
    trust = ssl.create_default_context(cafile=str(Settings(data_dir=data_dir).tls_dir / "ca.pem"))
    async with httpx.AsyncClient(verify=trust) as client:
        answer = await client.post(
            f"https://{hostname}:{state['handshake_port']}/offer",
            json={"type": "offer", "sdp": "v=0"},
            headers={"Authorization": f"Bearer {token}"},
        )
    return answer.status_code


async def test_a_pooled_server_serves_nobody_until_assigned_then_its_session_only(
    backend: Callable[..., Backend], tmp_path: Path
) -> None:
    b = backend()
    hostname, state = await b.start(pool_spec())
    assert pooled(state) and state["session_seq"] is None
    await running(b, state)
    [listed] = await backend().servers()  # as a restarted hub finds it
    assert pooled(listed) and b.identity(listed) == b.identity(state)
    real = not isinstance(b, MemoryBackend)  # memory servers have no endpoint to ask
    account, _, _ = new_account("acct", Clock().now())
    if real:
        assert await offer_status(tmp_path / "hub", hostname, state, account) == 401

    session = Assignment(account.id, "session-7", 7)
    assigned = await b.assign(state, session)
    assert assigned["session_seq"] == 7 and not pooled(assigned)
    assert b.identity(assigned) == b.identity(state)
    if real:
        assert await offer_status(tmp_path / "hub", hostname, assigned, account) == 400
        other, _, _ = new_account("other", Clock().now())
        assert await offer_status(tmp_path / "hub", hostname, assigned, other) == 401

    restarted = backend()
    assert [(s["session_seq"], pooled(s)) for s in await restarted.servers()] == [(7, False)]
    _, again = await restarted.start(ServerSpec("Standard", PUBLIC_KEY, session=session))
    assert restarted.identity(again) == b.identity(state), "the session's server is the pooled one it was given"
    assert len(await restarted.servers()) == 1
    assert (await restarted.assign(again, session))["session_seq"] == 7  # idempotent
    with pytest.raises(BackendError) as refused:
        await restarted.assign(again, Assignment(account.id, "session-8", 8))
    assert refused.value.code == "RenderServerAssigned"


async def test_start_is_idempotent_per_pool_id(backend: Callable[..., Backend]) -> None:
    b = backend()
    _, first = await b.start(pool_spec("p1"))
    _, again = await backend().start(pool_spec("p1"))
    _, other = await b.start(pool_spec("p2"))
    assert b.identity(again) == b.identity(first) != b.identity(other)
    assert sorted(s["pool_id"] for s in await b.servers()) == ["p1", "p2"]


async def test_a_gone_pooled_server_cannot_be_assigned(backend: Callable[..., Backend]) -> None:
    b = backend()
    _, state = await b.start(pool_spec())
    await running(b, state)
    await b.stop(state)
    with pytest.raises(BackendError) as refused:
        await b.assign(state, Assignment("acct", "session-1", 1))
    assert refused.value.code == "RenderServerExited"
    assert await b.servers() == []


def test_a_spec_names_a_session_or_a_pool_id() -> None:
    for wrong in ({}, {"session": Assignment("a", "s", 1), "pool_id": "p1"}, {"pool_id": "Not OK"}):
        with pytest.raises(ValueError):
            ServerSpec("Standard", PUBLIC_KEY, **wrong)  # type: ignore[arg-type]
