"""Shared fixtures: real hub processes over TLS, an in-process hub, SQLite and PostgreSQL databases."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from renderhub.api import create_app
from renderhub.api.access import Hub
from renderhub.auth import new_account
from renderhub.backends import Backend
from renderhub.backends.local import LocalBackend
from renderhub.backends.memory import MemoryBackend
from renderhub.clock import Clock, FakeClock
from renderhub.config import Settings
from renderhub.models import Account
from renderhub.reaper import Reaper
from renderhub.store.repository import Repository
from renderhub.tls import ensure_certificates
from tests.hubs import RunningHub, ServedHub, free_port, hub_dir, kill_render_servers, new_hub
from tests.ray_cluster import RayCluster
from tests.storage.azurite import Azurite, start

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _postgres(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database of our own on the local server, dropped afterwards."""
    name = f"renderhub_test_{os.getpid()}_{secrets.token_hex(4)}"
    asyncio.run(_postgres(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# Fixtures that start real processes (hubs, render servers, a browser) or network namespaces.
INTEGRATION_FIXTURES = {"hub_factory", "rendering_api", "browser", "network", "azurite", "azurite_https"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns xdist_group marks into the groups it deals out
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the PostgreSQL server or the Ray cluster carry its marker, so `-m "not postgres"` and
    `-m "not ray"` really leave them out (parameters that reach them dynamically are marked where defined);
    those and every test on real processes are `integration` (`make test-fast` leaves them out)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if "postgres_url" in fixtures:
            item.add_marker(pytest.mark.postgres)
        if "ray_cluster" in fixtures:
            item.add_marker(pytest.mark.ray)
        if fixtures & INTEGRATION_FIXTURES or item.get_closest_marker("postgres") or item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.integration)
        # With xdist, one worker runs every test of the one Ray cluster (and the one set of network namespaces).
        if item.get_closest_marker("ray"):
            item.add_marker(pytest.mark.xdist_group("ray"))
        elif "network" in fixtures:  # tests/render/test_lan.py
            item.add_marker(pytest.mark.xdist_group("netns"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="session")
def shared_tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for every hub in the test run, trusted by the Azure SDK through REQUESTS_CA_BUNDLE."""
    tls = tmp_path_factory.mktemp("tls")
    ca, _, _ = ensure_certificates(tls, ["localhost", "127.0.0.1"], Clock().now())
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
    return tls


@pytest.fixture
def hub_factory(tmp_path: Path, shared_tls: Path) -> Iterator[Callable[..., RunningHub]]:
    """Start real `renderhub serve` processes; all are stopped, and their render servers killed, afterwards."""
    started: list[RunningHub] = []

    def start(*args: str, name: str = "hub") -> RunningHub:
        hub = new_hub(tmp_path / name, shared_tls, *args)
        started.append(hub)
        return hub.start()

    yield start
    for hub in started:
        hub.stop()
        kill_render_servers(hub.data_dir)


@pytest.fixture
def hub(hub_factory: Callable[..., RunningHub]) -> RunningHub:
    """A real hub over TLS, with its first account in arrconfig.json; no rate limit."""
    return hub_factory("--rate-limit", "0")


@pytest.fixture
def served_hub_factory(tmp_path: Path, shared_tls: Path) -> Iterator[Callable[..., ServedHub]]:
    """Serve hub apps in threads over TLS, render servers in memory: served_hub_factory(**settings)."""
    started: list[ServedHub] = []

    def start(name: str = "served", **settings: object) -> ServedHub:
        hub = ServedHub(hub_dir(tmp_path / name, shared_tls), free_port())
        started.append(hub)
        return hub.start(**settings)

    yield start
    for hub in started:
        hub.stop()


@pytest.fixture
def served_hub(served_hub_factory: Callable[..., ServedHub]) -> ServedHub:
    """The hub app served over TLS in a thread, with its first account in arrconfig.json; no rate limit."""
    return served_hub_factory()


@dataclass
class InProcessHub:
    """A hub app running in the test's event loop: its parts, an HTTP client and an account with a token."""

    app: FastAPI
    hub: Hub
    http: httpx.AsyncClient
    account: Account
    primary_key: str
    secondary_key: str
    clock: Clock
    data_dir: Path

    @property
    def repo(self) -> Repository:
        return self.hub.manager.repo

    @property
    def reaper(self) -> Reaper:
        return self.app.state.reaper  # type: ignore[no-any-return]

    async def token(self, key: str | None = None) -> str:
        response = await self.http.get(
            f"/Accounts/{self.account.id}/token",
            headers={"Authorization": f"Bearer {self.account.id}:{key or self.primary_key}"},
        )
        assert response.status_code == 200, response.text
        return str(response.json()["AccessToken"])

    async def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}

    def url(self, path: str = "", account_id: str | None = None) -> str:
        return f"/accounts/{account_id or self.account.id}/sessions{path}"


async def in_process_hub(
    settings: Settings, clock: Clock, backend: Backend | None = None
) -> AsyncIterator[InProcessHub]:
    """An in-process hub; with no backend given, render servers are in-memory records (the API's logic alone)."""
    app = create_app(settings, clock=clock, backend=backend or MemoryBackend(settings))
    async with app.router.lifespan_context(app):
        hub: Hub = app.state.hub
        account, primary, secondary = new_account("test", clock.now())
        await hub.manager.repo.insert_account(account)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://hub.test") as http:
            yield InProcessHub(app, hub, http, account, primary, secondary, clock, settings.data_dir)
    kill_render_servers(settings.data_dir)


def hub_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"data_dir": tmp_path / "data", "rate_limit_per_second": 0, "page_size": 3}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    """An in-process hub on SQLite with the in-memory backend and the wall clock."""
    async for running in in_process_hub(hub_settings(tmp_path), Clock()):
        yield running


@pytest.fixture
async def rendering_api(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    """An in-process hub on SQLite whose sessions run real render servers (the local backend)."""
    settings = hub_settings(tmp_path)
    async for running in in_process_hub(settings, Clock(), LocalBackend(settings)):
        yield running


@pytest.fixture
async def fake_clock_api(tmp_path: Path) -> AsyncIterator[InProcessHub]:
    """An in-process hub whose clock moves only when the test says so (its reaper runs on that clock)."""
    async for running in in_process_hub(hub_settings(tmp_path), FakeClock()):
        yield running


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A two-node Ray cluster (127.0.0.2 and 127.0.0.3), each node with room for two Standard servers."""
    # A short temp dir of its own: Ray's socket paths below it must stay under AF_UNIX's 107 bytes, and pytest's
    # (longer under xdist) leave too little room.
    cluster = RayCluster(Path(tempfile.mkdtemp(prefix="rh-ray-")))
    try:
        cluster.start_head("127.0.0.2", {"renderhub_standard": 2})
        cluster.add_node("127.0.0.3", {"renderhub_standard": 2})
        yield cluster
    finally:
        import ray

        ray.shutdown()  # the test process may have joined as a driver (the backend contract tests)
        cluster.stop()
        shutil.rmtree(cluster.temp_dir, ignore_errors=True)


@pytest.fixture
def ray_hubs(
    hub_factory: Callable[..., RunningHub], ray_cluster: RayCluster, tmp_path: Path
) -> Iterator[Callable[..., RunningHub]]:
    """Start hubs with the Ray backend, in a namespace of this test's own; its actors are killed afterwards."""
    namespace = f"test-{tmp_path.name}"

    def start(*args: str, name: str = "hub") -> RunningHub:
        ray_args = ("--backend", "ray", "--ray-address", ray_cluster.address, "--ray-namespace", namespace)
        return hub_factory("--rate-limit", "0", *ray_args, *args, name=name)

    yield start
    ray_cluster.kill_actors(namespace)


# Azure Blob storage for conversions: one Azurite per test worker (tests use containers of their own).


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """Azurite's blob service over HTTP on 127.0.0.1 (tests use containers of their own)."""
    service = start(tmp_path_factory.mktemp("azurite"))
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def azurite_https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """The same over HTTPS, with a certificate from a local CA (`ca_file`)."""
    service = start(tmp_path_factory.mktemp("azurite-https"), https=True)
    try:
        yield service
    finally:
        service.stop()
