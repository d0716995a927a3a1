"""Idle sessions stop themselves: a Ready session whose render server has had no client for its idle timeout
ends Stopped with the error IdleTimeout (what an SDK user reads), billed to that moment; a connected client
holds it; the timeout comes from the create or the account's default. Real render servers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from azure.mixedreality.remoterendering import RemoteRenderingClient, RenderingSessionSize

from renderhub.client import ApiError
from tests.hubs import RENDERHUB, RunningHub, wait_for
from tests.test_sdk import open_sdk  # noqa: F401  (a fixture)

IDLE_MINUTES = 0.05  # 3 s


@pytest.fixture
def idle_hub(hub_factory: Callable[..., RunningHub]) -> RunningHub:
    """A hub whose render servers keep a departed client's scene 1 s (the idle timeout is never shorter)."""
    return hub_factory("--rate-limit", "0", "--scene-grace", "1")


def _cli(hub: RunningHub, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RENDERHUB, *args, "--data-dir", str(hub.data_dir)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_a_session_without_a_client_stops_itself_billed_to_then(idle_hub: RunningHub) -> None:
    with idle_hub.client() as client:
        created = client.create("idle", "Standard", 30, idle_timeout_minutes=IDLE_MINUTES)
        assert created["idleTimeoutMinutes"] == IDLE_MINUTES
        wait_for(lambda: client.get("idle")["status"] == "Ready", timeout=60)
        stopped: dict[str, Any] = wait_for(lambda: (b := client.get("idle"))["status"] == "Stopped" and b, timeout=30)
        assert stopped["error"]["code"] == "IdleTimeout"
        assert "No client was connected for 0.05 minute(s)" in stopped["error"]["message"]
    usage = json.loads(_cli(idle_hub, "usage", "--json").stdout)
    [record] = [r for r in usage["records"] if r["sessionId"] == "idle"]
    ran = datetime.fromisoformat(record["endedAt"]) - datetime.fromisoformat(record["readyAt"])
    assert 3 <= ran.total_seconds() < 15, f"billed to the idle stop, not the 30-minute lease: {ran}"
    assert record["billableMinutes"] == 1


def test_a_connected_client_holds_it_and_the_clock_runs_from_its_departure(idle_hub: RunningHub) -> None:
    with idle_hub.client() as client:
        client.create("watched", "Standard", 30, idle_timeout_minutes=IDLE_MINUTES)
        wait_for(lambda: client.get("watched")["status"] == "Ready", timeout=60)
        # About 8 s of streaming: well past the 3 s timeout, which counts only while nobody is connected.
        connected = _cli(idle_hub, "connect", "watched", "--frames", "240", "--width", "320", "--height", "180",
                         "--json")  # fmt: skip
        assert connected.returncode == 0, connected.stderr
        assert client.get("watched")["status"] == "Ready"
        stopped = wait_for(lambda: (b := client.get("watched"))["status"] == "Stopped" and b, timeout=30)
        assert stopped["error"]["code"] == "IdleTimeout"


def test_the_accounts_default_and_the_sdk(
    idle_hub: RunningHub,
    open_sdk: Callable[..., RemoteRenderingClient],  # noqa: F811
) -> None:
    said = _cli(idle_hub, "account", "set-idle-timeout", idle_hub.config.account_id, "--minutes", str(IDLE_MINUTES))
    assert said.returncode == 0 and "idle timeout 0.05 min" in said.stdout, said.stderr
    sdk = open_sdk(idle_hub)
    session = sdk.begin_rendering_session("from-sdk", RenderingSessionSize.STANDARD, 30).result(timeout=60)
    assert session.status == "Ready"
    stopped = wait_for(lambda: (s := sdk.get_rendering_session("from-sdk")).status == "Stopped" and s, timeout=30)
    assert stopped.error is not None and stopped.error.code == "IdleTimeout", "the field an SDK user can read"
    with idle_hub.client() as client:
        # A create's own value wins: 0 is no idle stop; a retry with another value is another session's settings.
        assert "idleTimeoutMinutes" not in client.create("kept", "Standard", 30, idle_timeout_minutes=0)
        with pytest.raises(ApiError) as conflict:
            client.create("kept", "Standard", 30, idle_timeout_minutes=5)
        assert conflict.value.status == 409
        with pytest.raises(ApiError) as bad:
            client.create("bad", "Standard", 30, idle_timeout_minutes=-1)
        assert (bad.value.status, bad.value.code) == (400, "BadRequest")
        client.stop("kept")
