"""Warm pools with real render servers: through the official SDK a create from the pool is Ready in its own answer
(the poller never polls), the render server serves that session's client, the pool refills, billing starts at the
assignment; pooled servers outlive a killed hub and a dead one is replaced; on a Ray cluster with two replicas on
PostgreSQL, the pool outlives its leader."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.mixedreality.remoterendering import RemoteRenderingClient, RenderingSessionSize, RenderingSessionStatus

from renderhub.backends.health import health
from tests.hubs import RENDERHUB, RunningHub, pid_alive, render_server_pids, wait_for
from tests.test_replicas import client_for, replicas  # noqa: F401  (replicas: a fixture)
from tests.test_sdk import open_sdk  # noqa: F401  (a fixture)


def pool_list(hub: RunningHub, *extra: str) -> list[dict[str, Any]]:
    """`renderhub pool list --json` on the hub's database."""
    listed = subprocess.run([RENDERHUB, "pool", "list", "--json", "--data-dir", str(hub.data_dir), *extra],
                            capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    found: list[dict[str, Any]] = json.loads(listed.stdout)
    return found


def ready_pool(hub: RunningHub, count: int, *extra: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Wait until the hub's pool holds `count` servers, all Ready; returns them."""
    found: list[dict[str, Any]] = wait_for(
        lambda: len(rows := pool_list(hub, *extra)) == count and all(r["status"] == "Ready" for r in rows) and rows,
        timeout=timeout,
        interval=0.2,
    )
    return found


def leads(hub: RunningHub) -> bool:
    """Whether the hub's last word on leadership is that it leads the reaper."""
    said = [line for line in hub.log.splitlines() if line.endswith("the reaper")]
    return bool(said) and "no longer" not in said[-1]


def served_session(hostname: str, port: int, hub: RunningHub) -> str | None:
    """The session a render server says it serves (its health answer)."""
    answer = asyncio.run(health(hostname, port, ssl.create_default_context(cafile=str(hub.ca))))
    return answer.get("sessionId") if answer else None


def test_the_sdk_gets_a_ready_session_from_the_pool_in_the_creates_answer(
    hub_factory: Callable[..., RunningHub],
    open_sdk: Callable[..., RemoteRenderingClient],  # noqa: F811
) -> None:
    hub = hub_factory("--rate-limit", "0", "--access-log", "--warm-pool", "Standard=1")
    (pooled,) = ready_pool(hub, 1)
    sdk = open_sdk(hub)
    before = datetime.now(UTC)
    session = sdk.begin_rendering_session("warm", RenderingSessionSize.STANDARD, 10).result(timeout=10)
    assert session.status == RenderingSessionStatus.READY and session.hostname and session.handshake_port
    session_path = f"/accounts/{hub.config.account_id}/sessions/warm"
    assert f'"PUT {session_path}' in hub.log
    assert f'"GET {session_path}' not in hub.log, "the poller finished on the create's answer, without a GET"
    assert served_session(session.hostname, session.handshake_port, hub) == "warm"

    # The account's client uses it: a model loads and frames stream.
    command = [RENDERHUB, "connect", "warm", "--frames", "5", "--width", "320", "--height", "240", "--data-dir",
               str(hub.data_dir)]  # fmt: skip
    connected = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert connected.returncode == 0, connected.stderr

    (refilled,) = ready_pool(hub, 1)
    assert refilled["poolId"] != pooled["poolId"], "the pool started another"
    sdk.stop_rendering_session("warm")
    usage = subprocess.run([RENDERHUB, "usage", "--json", "--data-dir", str(hub.data_dir)],
                           capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    (record,) = json.loads(usage.stdout)["records"]
    ready_at = datetime.fromisoformat(record["readyAt"])
    assert ready_at >= before > datetime.fromisoformat(pooled["readyAt"]), "billed from the assignment"


def test_pooled_servers_outlive_a_killed_hub_and_a_dead_one_is_replaced(
    hub_factory: Callable[..., RunningHub],
) -> None:
    hub = hub_factory("--rate-limit", "0", "--warm-pool", "Standard=1")
    (pooled,) = ready_pool(hub, 1)
    (pid,) = render_server_pids(hub.data_dir)
    hub.stop(signal.SIGKILL)
    hub.start()
    wait_for(lambda: hub.log.count("leads the reaper") == 2, timeout=30)
    time.sleep(1)  # a few passes of the restarted hub's pool, its first look at the servers among them
    assert ready_pool(hub, 1)[0]["poolId"] == pooled["poolId"] and pid_alive(pid), "the restarted hub kept it"
    with hub.client() as client:
        created = client.create("after-restart", "Standard", 10)
        assert created["status"] == "Ready", created
        assert served_session(created["hostname"], created["handshakePort"], hub) == "after-restart"
        (refilled,) = ready_pool(hub, 1)
        refill_pid = next(p for p in render_server_pids(hub.data_dir) if p != pid)
        os.kill(refill_pid, signal.SIGKILL)  # the pooled server dies unannounced
        replaced = wait_for(lambda: [r["poolId"] for r in ready_pool(hub, 1)] != [refilled["poolId"]], timeout=60)
        assert replaced
        assert len(render_server_pids(hub.data_dir)) == 2, "the session's server and the replacement"
        client.stop("after-restart")


@pytest.mark.ray
@pytest.mark.postgres
def test_a_pool_on_a_ray_cluster_serves_every_replica_and_outlives_its_leader(
    replicas: Callable[..., tuple[RunningHub, RunningHub]],  # noqa: F811
    postgres_url: str,
) -> None:
    first, second = replicas("--rate-limit", "0", "--warm-pool", "Standard=1")
    database = ("--database-url", postgres_url)
    (pooled,) = ready_pool(first, 1, *database)
    leader, other = (first, second) if leads(first) else (second, first)
    leader.stop(signal.SIGKILL)  # the replica that launched the pooled server is gone; its actor is not
    with client_for(other, first.config) as client:
        created = client.create("warm-on-ray", "Standard", 10)
        assert created["status"] == "Ready", created
        assert created["hostname"] in ("127.0.0.2", "127.0.0.3")
        assert served_session(created["hostname"], created["handshakePort"], other) == "warm-on-ray"
        (refilled,) = ready_pool(other, 1, *database, timeout=90)  # the other replica leads now, and refills it
        assert refilled["poolId"] != pooled["poolId"]
        client.stop("warm-on-ray")
