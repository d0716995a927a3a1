"""Hubs on a real two-node Ray cluster: placement, certificates for node addresses, capacity, queueing,
re-adoption after a restart, and sessions whose render server or node dies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from renderhub.backends.local import command_lines
from renderhub.client import HubClient
from tests.hubs import RENDERHUB, RunningHub, pid_alive, wait_for
from tests.ray_cluster import RayCluster
from tests.render.test_revocation import offer_status, rotate_key

pytestmark = pytest.mark.ray


def ready(client: HubClient, session_id: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (s := client.get(session_id))["status"] != "Starting" and s, timeout=timeout)  # type: ignore[no-any-return]


def render_server_on(session: dict[str, Any]) -> int:
    """The pid of the render server of a session, on the session's node (its command line names both)."""
    wanted = ["--host", session["hostname"], "--session-id", session["id"]]
    for pid, args in command_lines():
        if "renderhub.render" in args and all(w in args for w in wanted):
            return pid
    raise AssertionError(f"no render server for {session['id']}")


def test_a_session_runs_on_a_cluster_node_and_streams(ray_hubs: Callable[..., RunningHub]) -> None:
    hub = ray_hubs()
    with hub.client() as client:
        client.create("on-ray", "Standard", 30)
        session = ready(client, "on-ray")
        assert session["status"] == "Ready", session
        assert session["hostname"] in ("127.0.0.2", "127.0.0.3")
        # The client reaches the node directly over TLS with the hub's CA (the certificate names the node's address).
        out = subprocess.run(
            [RENDERHUB, "connect", "on-ray", "--frames", "10", "--width", "320", "--height", "180", "--json",
             "--direct", "--data-dir", str(hub.data_dir)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["fps"] > 0
        pid = render_server_on(session)
        # The server on the node asks the hub whether its clients' keys still hold.
        old = client.token()
        assert offer_status(hub, session, old) in (400, 409)  # past the token: a bad SDP, or the last client lingers
        new_key = rotate_key(hub)
        wait_for(lambda: offer_status(hub, session, old) == 401, timeout=10)
    with HubClient(replace(hub.config, account_key=new_key), verify=str(hub.ca)) as renewed:
        renewed.stop("on-ray")
        wait_for(lambda: not pid_alive(pid), timeout=10)


def test_a_full_cluster_fails_a_session_with_a_capacity_error(ray_hubs: Callable[..., RunningHub]) -> None:
    hub = ray_hubs()
    hub.set_quota("Standard", 8)  # the cluster, not the account's quota, must be what runs out
    with hub.client() as client:
        for n in range(4):  # two Standard servers on each of the two nodes
            client.create(f"s{n}", "Standard", 30)
        placed = [ready(client, f"s{n}") for n in range(4)]
        assert {s["status"] for s in placed} == {"Ready"}
        assert {s["hostname"] for s in placed} == {"127.0.0.2", "127.0.0.3"}, "Ray spreads them over both nodes"
        client.create("one-too-many", "Standard", 30)
        failed = ready(client, "one-too-many")
        assert failed["status"] == "Error" and failed["error"]["code"] == "CapacityExceeded", failed
        client.create("premium", "Premium", 30)  # no node offers renderhub_premium
        failed = ready(client, "premium")
        assert failed["error"]["code"] == "CapacityExceeded" and "renderhub_premium" in failed["error"]["message"]


def test_a_queue_timeout_lets_a_session_wait_for_room(ray_hubs: Callable[..., RunningHub]) -> None:
    hub = ray_hubs("--queue-timeout", "30")
    hub.set_quota("Standard", 8)
    with hub.client() as client:
        for n in range(4):
            client.create(f"s{n}", "Standard", 30)
        [ready(client, f"s{n}") for n in range(4)]
        client.create("queued", "Standard", 30)
        wait_for(lambda: client.get("s0")["status"] == "Ready", timeout=1)
        assert client.get("queued")["status"] == "Starting"
        client.stop("s0")
        assert ready(client, "queued", timeout=30)["status"] == "Ready"


def test_a_restarted_hub_readopts_actors_and_stop_kills_them(ray_hubs: Callable[..., RunningHub]) -> None:
    hub = ray_hubs()
    with hub.client() as client:
        client.create("kept", "Standard", 30)
        session = ready(client, "kept")
    pid = render_server_on(session)
    hub.stop(signal.SIGKILL)
    hub.start()
    with hub.client() as client:
        assert client.get("kept")["status"] == "Ready"
        assert pid_alive(pid)
        client.stop("kept")
        wait_for(lambda: not pid_alive(pid), timeout=10)


def test_a_killed_render_server_turns_its_session_to_error(ray_hubs: Callable[..., RunningHub]) -> None:
    hub = ray_hubs()
    with hub.client() as client:
        client.create("doomed", "Standard", 30)
        session = ready(client, "doomed")
        os.kill(render_server_on(session), signal.SIGKILL)
        failed = wait_for(lambda: (s := client.get("doomed"))["status"] == "Error" and s, timeout=5)
        assert failed["error"]["code"] == "RenderServerLost"


def test_a_dead_node_turns_its_sessions_to_error_within_5_seconds(
    ray_hubs: Callable[..., RunningHub], ray_cluster: RayCluster
) -> None:
    ray_cluster.add_node("127.0.0.4", {"renderhub_premium": 1})  # the only node for Premium sessions
    hub = ray_hubs()
    with hub.client() as client:
        client.create("on-doomed-node", "Premium", 30)
        session = ready(client, "on-doomed-node")
        assert session["hostname"] == "127.0.0.4", session
        ray_cluster.kill_node("127.0.0.4")
        failed = wait_for(lambda: (s := client.get("on-doomed-node"))["status"] == "Error" and s, timeout=5)
        assert failed["error"]["code"] == "RenderServerLost"


def test_a_named_model_reaches_a_render_server_on_another_node(
    ray_hubs: Callable[..., RunningHub], tmp_path: Path
) -> None:
    hub = ray_hubs()
    # The hub's asset directory; the render server on the node fetches from the hub, not from this path.
    shutil.copytree("/usr/share/assimp/models/glTF2/BoxTextured-glTF", hub.data_dir / "assets" / "box")
    with hub.client() as client:
        client.create("named", "Standard", 30)
        assert ready(client, "named")["status"] == "Ready"
    connect = [RENDERHUB, "connect", "named", "--frames", "5", "--width", "320", "--height", "180", "--json",
               "--data-dir", str(hub.data_dir)]  # fmt: skip
    loaded = subprocess.run([*connect, "--model", "box/BoxTextured"], capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr

    def refused_model() -> subprocess.CompletedProcess[str] | None:
        """The next client's run, once the server has noticed that the last one left (409 until then)."""
        run = subprocess.run([*connect, "--model", "no-such-model"], capture_output=True, text=True, timeout=60)
        return None if "ClientAlreadyConnected" in run.stderr else run

    missing = wait_for(refused_model, timeout=20)
    assert missing.returncode != 0 and "ModelNotFound" in missing.stderr


def test_a_killed_actor_turns_its_session_to_error_within_5_seconds(
    ray_hubs: Callable[..., RunningHub], ray_cluster: RayCluster, tmp_path: Path
) -> None:
    hub = ray_hubs()
    with hub.client() as client:
        client.create("orphaned", "Standard", 30)
        session = ready(client, "orphaned")
        pid = render_server_on(session)
        ray_cluster.actors(f"test-{tmp_path.name}", kill=True)  # the supervisor dies; its server goes with it
        failed = wait_for(lambda: (s := client.get("orphaned"))["status"] == "Error" and s, timeout=5)
        assert failed["error"]["code"] == "RenderServerLost"
        wait_for(lambda: not pid_alive(pid), timeout=5)
