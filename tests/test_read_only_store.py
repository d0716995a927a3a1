"""A database that cannot be written in the middle of a start: the real PostgreSQL turned read-only (as a failover to
a standby, or a full disk's `default_transaction_read_only`, leaves it) while a real render server starts. The
server is stopped at once, the session ends in Error once the database takes writes again, and nothing is left
running unrecorded or failing unseen."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from renderhub.backends.base import ServerSpec, ServerState, State
from renderhub.backends.local import LocalBackend
from renderhub.clock import Clock
from tests.conftest import POSTGRES_ADMIN, InProcessHub, hub_settings, in_process_hub

V = {"api-version": "2021-01-01"}
STANDARD = {"maxLeaseTimeMinutes": 30, "size": "Standard"}


async def set_read_only(database_url: str, read_only: bool) -> None:
    """Make the database refuse writes (or take them again) for every connection, the hub's pooled ones included."""
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        mode = "on" if read_only else "off"
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = {mode}')
        # The setting holds for new connections: end the hub's, so that its pool opens new ones.
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()


class ReadOnlyMidStart(LocalBackend):
    """Real render servers; the database turns read-only right after one is launched (`at="launch"`: before the
    hub records it on the session) or once it first answers (`at="ready"`: before the session is marked Ready)."""

    def __init__(self, settings: object, database_url: str, at: str) -> None:
        super().__init__(settings)  # type: ignore[arg-type]
        self.database_url = database_url
        self.at = at
        self.launched: list[State] = []
        self.turned = asyncio.Event()

    async def _turn(self) -> None:
        if not self.turned.is_set():
            await set_read_only(self.database_url, True)
            self.turned.set()

    async def start(self, spec: ServerSpec) -> tuple[str, State]:
        hostname, state = await super().start(spec)
        self.launched.append(state)
        if self.at == "launch":
            await self._turn()
        return hostname, state

    async def poll(self, state: State) -> ServerState:
        server = await super().poll(state)
        if server is ServerState.RUNNING and self.at == "ready":
            await self._turn()
        return server


@pytest.fixture(params=["launch", "ready"])
async def hub(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str) -> AsyncIterator[InProcessHub]:
    settings = hub_settings(tmp_path, database_url=postgres_url)
    backend = ReadOnlyMidStart(settings, postgres_url, request.param)
    async for running in in_process_hub(settings, Clock(), backend):
        yield running
    await set_read_only(postgres_url, False)  # so that the database can be dropped as usual


async def wait_until(predicate: object, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


async def test_a_start_meeting_a_read_only_database_stops_its_server_and_ends_in_error(
    hub: InProcessHub, caplog: pytest.LogCaptureFixture
) -> None:
    backend = hub.hub.manager.backend
    assert isinstance(backend, ReadOnlyMidStart)
    auth = await hub.auth()
    assert (await hub.http.put(hub.url("/s1"), params=V, json=STANDARD, headers=auth)).status_code == 201
    await asyncio.wait_for(backend.turned.wait(), 60)

    # The server it launched is stopped though the database cannot record anything: none runs unrecorded.
    async def no_server_runs() -> bool:
        return await backend.servers() == []

    await wait_until(no_server_runs, 20)
    assert len(backend.launched) == 1
    # Meanwhile the session reads as it stands, and a new one is refused with a 503 the SDK retries.
    got = await hub.http.get(hub.url("/s1"), params=V, headers=auth)
    assert got.status_code == 200 and got.json()["status"] == "Starting"
    refused = await hub.http.put(hub.url("/s2"), params=V, json=STANDARD, headers=auth)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "ServiceUnavailable", refused.text

    await set_read_only(backend.database_url, False)

    async def ended() -> bool:
        response = await hub.http.get(hub.url("/s1"), params=V, headers=auth)
        if response.status_code == 503:  # the first use of a connection the database ended: a client retries
            return False
        assert response.status_code == 200, response.text
        return bool(response.json()["status"] != "Starting")

    await wait_until(ended, 20)
    session = (await hub.http.get(hub.url("/s1"), params=V, headers=auth)).json()
    assert session["status"] == "Error" and session["error"]["code"] == "InternalServerError", session
    assert await hub.repo.usage(hub.account.id) == [], "a session that never became Ready is not billed"
    assert len(backend.launched) == 1 and await backend.servers() == []  # the reaper did not launch it again
    gc.collect()  # an unretrieved task exception is reported when its task is collected
    await asyncio.sleep(0)
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "ended with an error" in r.getMessage()]
