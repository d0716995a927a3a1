"""Queues on one machine: with --queue-timeout, a session that finds every server of its size taken waits for one,
in arrival order, its place shown as queuePosition (the official SDK reads the session as before); past the
timeout it fails with CapacityExceeded. Real render servers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from azure.mixedreality.remoterendering import RemoteRenderingClient

from renderhub.client import HubClient
from tests.hubs import RENDERHUB, RunningHub, wait_for
from tests.test_sdk import open_sdk, sizes_file  # noqa: F401  (open_sdk: a fixture)


def _status(client: HubClient, session_id: str) -> tuple[str, int | None]:
    body = client.get(session_id)
    return body["status"], body.get("queuePosition")


def test_sessions_wait_for_a_free_server_in_arrival_order(
    hub_factory: Callable[..., RunningHub],
    tmp_path: Path,
    open_sdk: Callable[..., RemoteRenderingClient],  # noqa: F811
) -> None:
    hub = hub_factory("--rate-limit", "0", "--sizes", str(sizes_file(tmp_path, 1)), "--queue-timeout", "120")
    hub.set_quota("Standard", 3)  # one server on this host; the account may hold three sessions
    with hub.client() as client:
        client.create("first", "Standard", 10)
        wait_for(lambda: _status(client, "first") == ("Ready", None), timeout=60)
        client.create("second", "Standard", 10)
        client.create("third", "Standard", 10)
        wait_for(lambda: _status(client, "second") == ("Starting", 1), timeout=10)
        wait_for(lambda: _status(client, "third") == ("Starting", 2), timeout=10)
        assert open_sdk(hub).get_rendering_session("third").status == "Starting", "the SDK reads it as before"
        shown = subprocess.run([RENDERHUB, "session", "get", "third", "--data-dir", str(hub.data_dir)],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
        assert "queuePosition" in shown.stdout and " 2" in shown.stdout, shown.stdout
        client.stop("first")
        wait_for(lambda: _status(client, "second") == ("Ready", None), timeout=60)
        assert _status(client, "third") == ("Starting", 1)
        client.stop("second")
        wait_for(lambda: _status(client, "third") == ("Ready", None), timeout=60)
        client.stop("third")


def test_a_session_waits_no_longer_than_the_queue_timeout(
    hub_factory: Callable[..., RunningHub], tmp_path: Path
) -> None:
    hub = hub_factory("--rate-limit", "0", "--sizes", str(sizes_file(tmp_path, 1)), "--queue-timeout", "2")
    hub.set_quota("Standard", 2)
    with hub.client() as client:
        client.create("first", "Standard", 10)
        wait_for(lambda: _status(client, "first") == ("Ready", None), timeout=60)
        client.create("late", "Standard", 10)
        wait_for(lambda: _status(client, "late") == ("Starting", 1), timeout=10)
        failed: dict[str, Any] = wait_for(lambda: (b := client.get("late"))["status"] == "Error" and b, timeout=15)
        assert failed["error"]["code"] == "CapacityExceeded"
        assert "waited 2 s in the queue" in failed["error"]["message"]
        assert "queuePosition" not in failed
        command = [RENDERHUB, "session", "list", "--json", "--data-dir", str(hub.data_dir)]
        listed = json.loads(subprocess.run(command, capture_output=True, text=True, timeout=60).stdout)
        assert [s["id"] for s in listed["sessions"]] == ["first"]
        client.stop("first")
