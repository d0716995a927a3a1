"""Two hub replicas on one PostgreSQL database with render servers on a real Ray cluster: any replica answers
any request, the rate limit holds across them, one reaper runs at a time, and a replica killed while
starting sessions loses none of them."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from azure.mixedreality.remoterendering import RenderingSessionSize, RenderingSessionStatus

from renderhub.client import ApiError, ArrConfig, HubClient
from tests.hubs import RunningHub, wait_for
from tests.ray_cluster import RayCluster
from tests.test_ray import render_server_on

pytestmark = [pytest.mark.ray, pytest.mark.postgres]


@pytest.fixture
def replicas(
    hub_factory: Callable[..., RunningHub], ray_cluster: RayCluster, postgres_url: str, tmp_path: Path
) -> Callable[..., tuple[RunningHub, RunningHub]]:
    """Start two replicas (own data dirs, one database, one CA, one Ray namespace)."""
    namespace = f"test-{tmp_path.name}"

    def start(*args: str) -> tuple[RunningHub, RunningHub]:
        common = ("--database-url", postgres_url, "--backend", "ray", "--ray-address", ray_cluster.address,
                  "--ray-namespace", namespace, *args)  # fmt: skip
        first = hub_factory(*common, name="first")
        second = hub_factory(*common, name="second")
        second.config = first.config  # the account the first replica created, used through the second
        return first, second

    yield start  # type: ignore[misc]
    ray_cluster.kill_actors(namespace)


def client_for(hub: RunningHub, config: ArrConfig) -> HubClient:
    at = ArrConfig(**{**config.__dict__, "account_domain": hub.endpoint, "rendering_domain": hub.endpoint})
    return HubClient(at, verify=str(hub.ca))


def test_the_sdk_uses_both_replicas_alternately(replicas: Callable[..., tuple[RunningHub, RunningHub]]) -> None:
    first, second = replicas("--rate-limit", "0")
    a, b = first.sdk(polling_interval=0.1), second.sdk(polling_interval=0.1)
    try:
        poller = a.begin_rendering_session("alternate", RenderingSessionSize.STANDARD, 20)
        created = b.get_rendering_session("alternate")  # the second replica sees the first one's session
        assert created.status in (RenderingSessionStatus.STARTING, RenderingSessionStatus.READY)
        ready = poller.result(timeout=30)
        assert ready.status == RenderingSessionStatus.READY and ready.hostname in ("127.0.0.2", "127.0.0.3")
        assert b.update_rendering_session("alternate", lease_time_minutes=30).lease_time_minutes == 30
        assert [s.id for s in a.list_rendering_sessions()] == ["alternate"]
        b.stop_rendering_session("alternate")
        assert a.get_rendering_session("alternate").status == RenderingSessionStatus.STOPPED
    finally:
        a.close()
        b.close()


def test_the_rate_limit_holds_across_replicas(replicas: Callable[..., tuple[RunningHub, RunningHub]]) -> None:
    first, second = replicas("--rate-limit", "1")  # 1 request/s sustained, a burst of 100 in all
    for hub in (first, second):  # each replica has seen the other's heartbeat
        trust = ssl.create_default_context(cafile=str(hub.ca))
        wait_for(lambda h=hub, t=trust: httpx.get(f"{h.endpoint}/health", verify=t).json()["replicas"] == 2, 5)
    with client_for(first, first.config) as a, client_for(second, first.config) as b:
        ok = 0
        started = time.monotonic()
        for n in range(200):
            try:
                (a, b)[n % 2].get("none")
            except ApiError as exc:
                ok += exc.status != 429
        elapsed = time.monotonic() - started
    # Each replica holds half the burst: the account got about 100 requests through, not 200.
    assert 90 <= ok <= 100 + 2 * elapsed, ok


def test_one_replica_reaps_and_the_other_takes_over_when_it_dies(
    replicas: Callable[..., tuple[RunningHub, RunningHub]],
) -> None:
    first, second = replicas("--rate-limit", "0")
    wait_for(lambda: "leads the reaper" in first.log + second.log, timeout=5)
    leader, other = (first, second) if "leads the reaper" in first.log else (second, first)
    assert "leads the reaper" not in other.log
    leader.stop(signal.SIGKILL)
    wait_for(lambda: "leads the reaper" in other.log, timeout=5)
    with client_for(other, first.config) as client:  # the survivor expires leases
        client.create("short", "Standard", 0)
        # Its start (a Ray actor, slow on a loaded machine), then its expiry.
        wait_for(lambda: client.get("short")["status"] == "Expired", timeout=60)


def test_a_replica_killed_while_starting_sessions_loses_none(
    replicas: Callable[..., tuple[RunningHub, RunningHub]], postgres_url: str, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    namespace = f"test-{tmp_path.name}"
    first, second = replicas("--rate-limit", "0")
    first.set_quota("Standard", 8, "--database-url", postgres_url)  # the cluster's four, not the default two
    ids = [f"s{n}" for n in range(4)]
    with client_for(first, first.config) as client:
        for session_id in ids:
            client.create(session_id, "Standard", 30)
    first.stop(signal.SIGKILL)  # mid-start: the actors are being placed or their servers are booting
    with client_for(second, first.config) as client:
        ended = [wait_for(lambda i=i: (s := client.get(i))["status"] != "Starting" and s, timeout=30) for i in ids]
        for session in ended:
            assert session["status"] == "Ready" or session["error"]["message"], session
        ready = [s for s in ended if s["status"] == "Ready"]
        assert ready, "another replica finishes the starts"
        assert "adopting starting session" in second.log, "the first replica died before its starts were done"
        servers = [render_server_on(s) for s in ready]
        assert len(set(servers)) == len(ready), "one render server per session"
        for session_id in ids:
            client.stop(session_id)
    # Stop returns once the server is gone; Ray forgets the actor's name a moment later.
    wait_for(lambda: ray_cluster.actors(namespace) == [], timeout=1.0)
    records = asyncio.run(_usage_sessions(postgres_url))
    assert Counter(records) == Counter(s["id"] for s in ready), "exactly one usage record per session that was Ready"


def test_a_local_backend_hub_refuses_a_database_shared_with_another_host(
    hub_factory: Callable[..., RunningHub], postgres_url: str
) -> None:
    hub_factory("--rate-limit", "0", "--database-url", postgres_url, name="here").stop()
    with _replica_elsewhere(postgres_url), pytest.raises(RuntimeError, match="Hubs of one region must all use"):
        hub_factory("--rate-limit", "0", "--database-url", postgres_url, name="second")
    # The rule is per region: the machine elsewhere serves another region, and this one is a region's only host.
    with _replica_elsewhere(postgres_url, region="elsewhere"):
        third = hub_factory("--rate-limit", "0", "--database-url", postgres_url, "--region", "here", name="third")
        assert third.process is not None and third.process.poll() is None


async def _usage_sessions(url: str) -> list[str]:
    connection = await asyncpg.connect(url)
    try:
        return [row["session_id"] for row in await connection.fetch("SELECT session_id FROM usage_records")]
    finally:
        await connection.close()


@contextlib.contextmanager
def _replica_elsewhere(url: str, region: str = "local") -> Iterator[None]:
    """A failure mode: a live hub of `region` on another machine with the local backend, heartbeating as replicas
    do (a single row "seen a moment ago" goes stale while a slow machine starts the next hub)."""
    done = threading.Event()

    async def heartbeat() -> None:
        connection = await asyncpg.connect(url)
        try:
            while True:
                now = datetime.now(UTC).replace(tzinfo=None)
                await connection.execute(
                    "INSERT INTO replicas (id, host, backend, started_at, seen_at, region) "
                    "VALUES ($1, $2, $3, $4, $4, $5) ON CONFLICT (id) DO UPDATE SET seen_at = $4",
                    "elsewhere", "render-box-2.example", "local", now, region,
                )  # fmt: skip
                if done.wait(0.5):
                    return
        finally:
            await connection.close()

    beating = threading.Thread(target=asyncio.run, args=(heartbeat(),))
    beating.start()
    try:
        yield
    finally:
        done.set()
        beating.join()
